"""Estimates CSV files: how one file becomes a :class:`~bayesfuse.data.estimates.TaskEstimates`.

Two layouts, told apart by a ``param`` column (the one :meth:`TaskEstimates.to_csv` writes):

* scalar: ``task, estimate, se`` (or ``variance``) ``[, n, covariate columns...]``, one row
  per task;
* vector (long): ``task, param, estimate, se, cov[<param>]..., [n, covariates...]``, one row
  per (task, param), the ``cov[...]`` columns holding the row of Vₖ.

Every column that is not one of these is a task covariate. The reader refuses files above
``MAX_FILE_BYTES``, rows longer than the header and more than ``MAX_COVARIATE_COLUMNS``
covariates, and names the file in every message.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import pandas as pd

from bayesfuse.data.estimates import TaskEstimates
from bayesfuse.errors import EstimatesError

__all__ = ["read_estimates_csv", "MAX_FILE_BYTES", "MAX_COVARIATE_COLUMNS"]

_COV_COL = re.compile(r"^cov\[(.+)\]$")
_RESERVED = {"task", "param", "estimate", "se", "variance", "n"}
MAX_FILE_BYTES = 200 * 1024 * 1024  # refuse estimates files above 200 MB
MAX_COVARIATE_COLUMNS = 200  # task covariates in an estimates CSV


def read_estimates_csv(path: str | os.PathLike[str]) -> TaskEstimates:
    """Read one estimates CSV file.

    Parameters
    ----------
    path : path
        A scalar or long-format estimates CSV (see the module docstring).

    Returns
    -------
    TaskEstimates

    Raises
    ------
    EstimatesError
        With the file name and the problem in the message.
    """
    path = Path(path)
    if not path.exists():
        raise EstimatesError(f"Estimates file not found: {path}")
    if not path.is_file():
        raise EstimatesError(f"Not a file: {path}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise EstimatesError(f"{path}: file is {size / 1e6:.0f} MB, above the 200 MB limit.")
    if size == 0:
        raise EstimatesError(f"{path}: file is empty.")
    try:
        with warnings.catch_warnings():
            # rows longer than the header would silently become an index: refuse them
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(path, index_col=False)
    except pd.errors.ParserWarning:
        raise EstimatesError(f"{path}: some rows have more fields than the header; check the "
                             "commas (quote text that contains commas).") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EstimatesError(f"{path}: not a readable CSV file ({first}).") from None
    try:
        return _frame_to_estimates(df)
    except EstimatesError as exc:
        raise EstimatesError(f"{path}: {exc}") from None


def _frame_to_estimates(df: pd.DataFrame) -> TaskEstimates:
    """The columns of a CSV table mapped onto :meth:`TaskEstimates.from_frame`."""
    columns = list(df.columns)
    if "task" not in columns or "estimate" not in columns:
        raise EstimatesError(
            f"an estimates CSV needs columns 'task', 'estimate' and 'se' (or 'variance'); "
            f"found {columns}."
        )
    if "se" in columns:
        se, variance = "se", None
    elif "variance" in columns:
        se, variance = None, "variance"
    else:
        raise EstimatesError(
            f"an estimates CSV needs an 'se' or 'variance' column; found {columns}."
        )
    covariates = [c for c in columns if c not in _RESERVED and not _COV_COL.match(str(c))]
    if len(covariates) > MAX_COVARIATE_COLUMNS:
        raise EstimatesError(
            f"an estimates CSV may hold at most {MAX_COVARIATE_COLUMNS} task-covariate "
            f"columns; found {len(covariates)} ({', '.join(map(str, covariates[:5]))}, ...). "
            "Drop the columns that are not task covariates."
        )
    return TaskEstimates.from_frame(
        df,
        task="task",
        estimate="estimate",
        se=se,
        variance=variance,
        n="n" if "n" in columns else None,
        covariates=covariates or None,
        param="param" if "param" in columns else None,
    )
