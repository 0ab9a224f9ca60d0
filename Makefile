# bayesfuse developer commands. `make demo` and `make test` create or refresh .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_WORKERS ?= 2

.PHONY: venv demo test test-all lint format clean notebooks docs

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

venv: $(STAMP)

# The documentation site: installs the `docs` extra once (its own stamp, so `make test`
# stays as it was), then builds warning-free into docs/_build/html.
DOCS_STAMP := $(VENV)/.docs-stamp

$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	@touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

demo: venv
	$(BIN)/bayesfuse demo

lint: venv
	$(BIN)/ruff check .

# pytest exits 5 when it collected no tests: a broken suite, reported as a failure.
test: venv lint
	@$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$status

test-all: venv lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -q -m "slow or not slow"

# Execute the notebooks and store them with their outputs (figures, tables).
notebooks: venv
	$(BIN)/python scripts/run_notebooks.py

format: venv
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist
