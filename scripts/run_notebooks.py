"""Execute the notebooks in ``notebooks/`` and store them with their outputs.

Each notebook runs on the ``python3`` kernel (the interpreter that runs this script) in a
fresh temporary working directory, so files it writes do not land next to the notebooks.
Outputs are stored so that the notebooks read on the web with their figures and tables;
volatile metadata (per-cell execution timestamps) is dropped to keep diffs small.

Usage: ``python scripts/run_notebooks.py [NAME.ipynb ...]`` (default: all notebooks);
``make notebooks`` runs it in the project's ``.venv``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import nbclient
import nbformat

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
TIMEOUT_S = 1200  # per cell


def execute(nb: nbformat.NotebookNode, workdir: Path) -> None:
    """Run ``nb`` in place in ``workdir``; raise on the first cell that errors."""
    client = nbclient.NotebookClient(nb, timeout=TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}},
                                     allow_errors=False)
    client.execute(cwd=str(workdir))


def drop_volatile(nb: nbformat.NotebookNode) -> None:
    """Remove per-cell timing metadata and widget state (they change on every run)."""
    for cell in nb.cells:
        cell.get("metadata", {}).pop("execution", None)
    nb.metadata.pop("widgets", None)


def main(names: list[str]) -> int:
    paths = [NOTEBOOK_DIR / n for n in names] if names else sorted(NOTEBOOK_DIR.glob("*.ipynb"))
    for path in paths:
        if not path.is_file():
            print(f"run_notebooks: no notebook {path}", file=sys.stderr)
            return 1
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as workdir:
            try:
                execute(nb, Path(workdir))
            except nbclient.exceptions.CellExecutionError as error:
                print(f"run_notebooks: {path.name} failed:\n{error}", file=sys.stderr)
                return 1
        drop_volatile(nb)
        nbformat.validate(nb)
        nbformat.write(nb, path)
        size_kb = path.stat().st_size / 1024
        print(f"{path.name}: {time.perf_counter() - start:.0f} s, {size_kb:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
