"""Estimates CSV files: how one file becomes a :class:`~bayesfuse.data.estimates.TaskEstimates`.

Two layouts, told apart by a ``param`` column (the one :meth:`TaskEstimates.to_csv` writes):

* scalar: ``task, estimate, se`` (or ``variance``) ``[, n, covariate columns...]``, one row
  per task;
* vector (long): ``task, param, estimate, se, cov[<param>]..., [n, covariates...]``, one row
  per (task, param), the ``cov[...]`` columns holding the row of Vₖ.

A row without a standard error may give a confidence interval (``ci_low, ci_high``, at the
level in a ``level`` column, else 0.95) or a two-sided ``p_value`` instead (see
:mod:`bayesfuse.data.columns`); a ``se_from`` column (written by :meth:`TaskEstimates.to_csv`
after such a conversion) is read back as provenance.

Every other column holding numbers is a task covariate; a column holding no number at all
(text, such as a region name, or empty) is ignored, with a note in ``meta["notes"]``. A column
mixing numbers and text is refused. The reader refuses files above ``MAX_FILE_BYTES``, rows
longer than the header and more than ``MAX_COVARIATE_COLUMNS`` covariates, and names the file
in every message.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import pandas as pd

from bayesfuse.data.columns import has_control_characters, numeric, record_se_from, task_label
from bayesfuse.data.estimates import TaskEstimates
from bayesfuse.errors import EstimatesError

__all__ = ["read_estimates_csv", "MAX_FILE_BYTES", "MAX_COVARIATE_COLUMNS"]

_COV_COL = re.compile(r"^cov\[(.+)\]$")
_RESERVED = {"task", "param", "estimate", "se", "variance", "n", "ci_low", "ci_high", "p_value",
             "se_from"}
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
    has_ci = "ci_low" in columns or "ci_high" in columns
    if not ({"se", "variance", "p_value"} & set(columns) or has_ci):
        raise EstimatesError(
            f"an estimates CSV needs an 'se' or 'variance' column (or 'ci_low' and 'ci_high', "
            f"or 'p_value'); found {columns}."
        )
    if has_ci and not {"ci_low", "ci_high"} <= set(columns):
        raise EstimatesError("an estimates CSV with a confidence interval needs both columns "
                             f"'ci_low' and 'ci_high'; found {columns}.")
    reserved = _RESERVED | ({"level"} if has_ci else set())
    extra = [c for c in columns if c not in reserved and not _COV_COL.match(str(c))]
    ignored = [c for c in extra if numeric(df[c]).isna().all()]  # text or empty: not numbers
    covariates = [c for c in extra if c not in ignored]
    if len(covariates) > MAX_COVARIATE_COLUMNS:
        raise EstimatesError(
            f"an estimates CSV may hold at most {MAX_COVARIATE_COLUMNS} task-covariate "
            f"columns; found {len(covariates)} ({', '.join(map(str, covariates[:5]))}, ...). "
            "Drop the columns that are not task covariates."
        )
    est = TaskEstimates.from_frame(
        df,
        task="task",
        estimate="estimate",
        se="se" if "se" in columns else None,
        variance="variance" if "variance" in columns and "se" not in columns else None,
        ci_low="ci_low" if has_ci else None,
        ci_high="ci_high" if has_ci else None,
        level="level" if has_ci and "level" in columns else 0.95,
        p_value="p_value" if "p_value" in columns else None,
        n="n" if "n" in columns else None,
        covariates=covariates or None,
        param="param" if "param" in columns else None,
    )
    if "se_from" in columns:
        _carry_se_from(est, df)
    if ignored:
        names = ", ".join(f"'{c}'" for c in ignored[:10]) + (", ..." if len(ignored) > 10 else "")
        est.meta.setdefault("notes", []).append(
            f"ignored column(s) {names}: they hold no numbers, so they are not task covariates")
    return est


def _carry_se_from(est: TaskEstimates, df: pd.DataFrame) -> None:
    """Provenance written by :meth:`TaskEstimates.to_csv` (``se_from``), back into ``meta``."""
    params = df["param"].astype(str) if "param" in df.columns else [est.params[0]] * len(df)
    known = est.meta.get("se_from", {})
    rows = [(t, p, source.strip()[:40])
            for t, p, source in zip(df["task"].map(task_label), params, df["se_from"],
                                    strict=True)
            if isinstance(source, str) and source.strip() and p not in known.get(t, {})
            and not has_control_characters(source)]
    if not rows:
        return
    carried: dict = {}
    tasks, names, sources = zip(*rows, strict=True)
    record_se_from(carried, tasks, names, sources)
    for t, by_param in carried["se_from"].items():
        est.meta.setdefault("se_from", {}).setdefault(t, {}).update(by_param)
    est.meta.setdefault("notes", []).extend(carried["notes"])
