"""The notebooks in ``notebooks/``: stored without outputs, and each one runs without error.

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


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stripped(name):
    """Notebooks are committed without outputs (nbstripout-like check)."""
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == KERNEL
    for index, cell in enumerate(nb.cells):
        where = f"{name}, cell {index}"
        if cell.cell_type == "code":
            assert cell.get("outputs") == [], f"{where}: outputs are stored"
            assert cell.get("execution_count") is None, f"{where}: execution count is stored"
            assert "execution" not in cell.get("metadata", {}), f"{where}: timing metadata"
        assert "attachments" not in cell or not cell["attachments"], f"{where}: attachments"
    assert "widgets" not in nb.metadata, f"{name}: widget state is stored"


def test_kernel_is_this_interpreter(tmp_path):
    """The python3 kernel runs the interpreter of the test run (the project's venv)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import sys, bayesfuse; print(sys.executable)")]
    _execute(nb, tmp_path)
    printed = "".join(o.get("text", "") for o in nb.cells[0].outputs).strip()
    assert Path(printed).resolve() == Path(sys.executable).resolve()


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, tmp_path):
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    before = sorted(p.name for p in NOTEBOOK_DIR.iterdir())
    _execute(nb, tmp_path)
    errors = [o for cell in nb.cells if cell.cell_type == "code"
              for o in cell.outputs if o.output_type == "error"]
    assert not errors, f"{name}: {errors[0]['ename']}: {errors[0]['evalue']}"
    # nothing is written next to the notebooks; files go to the temporary working directory
    assert sorted(p.name for p in NOTEBOOK_DIR.iterdir()) == before
