"""The notebooks in ``notebooks/``: stored with their outputs, and each one runs without error.

The stored outputs (figures, tables) let the notebooks be read on the web and rendered by the
docs without executing them; ``make notebooks`` (``scripts/run_notebooks.py``) refreshes them.
The tests execute a copy of each notebook (the stored file is never rewritten) and check that
the stored outputs are complete and not stale: every code cell ran, in order, without error,
and each cell shows the same kinds of rich output (figures, tables) as a fresh run.

Each notebook is executed with nbclient in a fresh temporary working directory, on the
``python3`` kernel of ipykernel. jupyter_client starts that kernel with the interpreter that
runs the tests (``sys.executable``), so the notebooks see the same environment; the first
test checks that.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = [
    "01_quickstart_star.ipynb",
    "02_posterior_diagnostics.ipynb",
    "03_sensitivity_analysis.ipynb",
    "04_reporting_credible_intervals.ipynb",
    "05_similarity_structure.ipynb",
]
TIMEOUT_S = int(os.environ.get("BAYESFUSE_NOTEBOOK_TIMEOUT", "600"))  # per cell
KERNEL = "python3"


def _execute(nb, workdir: Path) -> None:
    env_note = {"metadata": {"path": str(workdir)}}
    client = nbclient.NotebookClient(nb, timeout=TIMEOUT_S, kernel_name=KERNEL,
                                     resources=env_note, allow_errors=False)
    client.execute(cwd=str(workdir))


def test_all_notebooks_present():
    found = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))
    assert found == sorted(NOTEBOOKS)


def _rich_kinds(cell) -> list[str]:
    """The MIME types of a code cell's displayed results (figures, tables), in order.

    Streams (printed text, warnings) are left out: their content depends on the machine.
    """
    kinds = []
    for output in cell.get("outputs", []):
        if output.output_type in ("display_data", "execute_result"):
            kinds.extend(sorted(k for k in output.get("data", {}) if k != "text/plain"))
    return kinds


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_with_outputs(name):
    """Every code cell ran once, in order, without error; figures are stored; no timings."""
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == KERNEL
    code = [cell for cell in nb.cells if cell.cell_type == "code" and cell.source.strip()]
    counts = [cell.get("execution_count") for cell in code]
    assert counts == list(range(1, len(code) + 1)), (
        f"{name}: stored execution counts {counts}; run `make notebooks` to refresh outputs")
    for index, cell in enumerate(nb.cells):
        where = f"{name}, cell {index}"
        if cell.cell_type == "code":
            assert not [o for o in cell.get("outputs", []) if o.output_type == "error"], (
                f"{where}: an error is stored")
            assert "execution" not in cell.get("metadata", {}), f"{where}: timing metadata"
        assert "attachments" not in cell or not cell["attachments"], f"{where}: attachments"
    assert "widgets" not in nb.metadata, f"{name}: widget state is stored"
    assert any("image/png" in _rich_kinds(cell) for cell in code), f"{name}: no stored figure"


def test_kernel_is_this_interpreter(tmp_path):
    """The python3 kernel runs the interpreter of the test run (the project's venv)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import sys, bayesfuse; print(sys.executable)")]
    _execute(nb, tmp_path)
    printed = "".join(o.get("text", "") for o in nb.cells[0].outputs).strip()
    assert Path(printed).resolve() == Path(sys.executable).resolve()


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, tmp_path):
    """The notebook runs without error, and its stored outputs match a fresh run in kind."""
    stored = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    before = sorted(p.name for p in NOTEBOOK_DIR.iterdir())
    _execute(nb, tmp_path)
    errors = [o for cell in nb.cells if cell.cell_type == "code"
              for o in cell.outputs if o.output_type == "error"]
    assert not errors, f"{name}: {errors[0]['ename']}: {errors[0]['evalue']}"
    for index, (old, new) in enumerate(zip(stored.cells, nb.cells, strict=True)):
        if new.cell_type == "code":
            assert _rich_kinds(old) == _rich_kinds(new), (
                f"{name}, cell {index}: stored outputs are stale; run `make notebooks`")
    # nothing is written next to the notebooks; files go to the temporary working directory
    assert sorted(p.name for p in NOTEBOOK_DIR.iterdir()) == before
