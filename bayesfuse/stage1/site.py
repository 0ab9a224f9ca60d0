"""``bayesfuse site``: stage 1 on one site's own rows, written as a summary file.

A site that cannot share its records runs :func:`site_summary` (or ``bayesfuse site``) and
sends the resulting JSON file (format: :mod:`bayesfuse.data.summary`, ``docs/summary-format.md``)
to the coordinator, who merges the files with :func:`bayesfuse.read_estimates`.

Privacy guards:

* small-cell protection: the run is refused when a task has fewer than ``min_n`` rows or,
  for a binary treatment, fewer than ``min_n`` treated or controls;
* nothing row-level is written: only θ̂, Vₖ, counts, the task covariates given, and
  provenance (learners, folds, seed, versions, time);
* optional differential privacy for θ̂ (:mod:`bayesfuse.stage1.dp`).

Reproducibility: the same rows, options and seed give a byte-identical file when
``created_at`` is fixed (argument, or the ``SOURCE_DATE_EPOCH`` environment variable) and,
with differential privacy, ``dp_seed`` is given.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import zlib
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd

from bayesfuse.data.estimates import task_label
from bayesfuse.errors import DataError

__all__ = ["site_summary", "SiteError", "resolve_created_at"]

_TASK_COLUMN = "__bayesfuse_task__"


class SiteError(DataError):
    """A site summary that must not be released (small cells, a task that failed)."""


def resolve_created_at(created_at: str | _dt.datetime | None = None) -> str:
    """The ``created_at`` text of a summary (UTC, ISO 8601, seconds).

    Parameters
    ----------
    created_at : str or datetime, optional
        Used as given (a datetime is converted to UTC). When None, the
        ``SOURCE_DATE_EPOCH`` environment variable (seconds since 1970, the
        reproducible-builds convention) is used if set, else the current time.

    Returns
    -------
    str
        E.g. ``"2024-05-01T12:00:00Z"``.
    """
    if isinstance(created_at, _dt.datetime):
        if created_at.tzinfo is None:
            created_at = created_at.replace(tzinfo=_dt.UTC)
        return created_at.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if created_at is not None:
        text = str(created_at).strip()
        if not text or len(text) > 64 or not text.isprintable():
            raise DataError(f"created_at must be a short timestamp text; got {created_at!r}.")
        return text
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is not None:
        try:
            seconds = int(epoch)
            moment = _dt.datetime.fromtimestamp(seconds, tz=_dt.UTC)
        except (ValueError, OverflowError, OSError):
            raise DataError(f"SOURCE_DATE_EPOCH must be an integer number of seconds since "
                            f"1970-01-01; got {epoch!r}.") from None
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("bayesfuse", "doubleml", "scikit-learn", "numpy", "pandas"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def _frame_with_task(df: Any, task: str | None, task_id: Any) -> tuple[pd.DataFrame, str]:
    """The rows with a task column: ``task`` itself, or a constant ``task_id`` column."""
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"site_summary needs a pandas DataFrame; got {type(df).__name__}.")
    if (task is None) == (task_id is None):
        raise DataError("Give either task= (the column holding the task id, when the site "
                        "holds several tasks) or task_id= (one label for all the rows); "
                        f"got task={task!r}, task_id={task_id!r}.")
    if task is not None:
        return df, task
    label = str(task_id).strip()
    if not label or len(label) > 200 or not label.isprintable():
        raise DataError(f"task_id must be a short printable label; got {task_id!r}.")
    if _TASK_COLUMN in df.columns:
        raise DataError(f"Column name {_TASK_COLUMN!r} is reserved; rename it.")
    return df.assign(**{_TASK_COLUMN: label}), _TASK_COLUMN


def _check_cells(df: pd.DataFrame, task: str, treatment: str, binary: bool,
                 min_n: int) -> None:
    """Refuse a release with a task below ``min_n`` rows, or an arm below ``min_n``."""
    labels = df[task].map(task_label)
    for label, rows in labels.groupby(labels, sort=False).indices.items():
        n = len(rows)
        if n < min_n:
            raise SiteError(f"Task '{label}' has n = {n} rows, below min_n = {min_n}: "
                            "small-cell protection refuses to release its summary. Pool it "
                            "with another task, or lower min_n if your rules allow.")
        if binary:
            n_treated = int(df[treatment].iloc[rows].astype(float).sum())
            for arm, count in (("treated", n_treated), ("control", n - n_treated)):
                if count < min_n:
                    raise SiteError(
                        f"Task '{label}' has {count} {arm} unit(s), below min_n = {min_n}: "
                        "small-cell protection refuses to release its summary. Lower min_n "
                        "only if your disclosure rules allow.")


def _task_covariates(df: pd.DataFrame, task: str, labels: list[str],
                     spec: Mapping[str, Any] | Sequence[str] | None) -> dict[str, dict]:
    """Task covariates per task: a mapping (one task) or columns constant within a task."""
    if spec is None:
        return {}
    out: dict[str, dict[str, float]] = {}
    if isinstance(spec, Mapping):
        if len(labels) != 1:
            raise DataError("task_covariates as a name -> value mapping needs a site with one "
                            f"task; this one has {len(labels)}. Give column names instead.")
        values = {}
        for name, value in spec.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise DataError(f"Task covariate '{name}' must be a number; got "
                                f"{value!r}.") from None
            if not np.isfinite(number):
                raise DataError(f"Task covariate '{name}' must be finite; got {value!r}.")
            values[str(name)] = number
        return {labels[0]: values}
    columns = [spec] if isinstance(spec, str) else list(spec)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"Task covariate column(s) {missing} not in the data.")
    keys = df[task].map(task_label)
    for column in columns:
        values = pd.to_numeric(df[column], errors="coerce")
        if values.isna().any() or not np.isfinite(values.to_numpy(dtype=float)).all():
            raise DataError(f"Task covariate column '{column}' must be numeric and finite.")
        spread = values.groupby(keys).nunique()
        if (spread > 1).any():
            raise DataError(f"Task covariate '{column}' varies within task "
                            f"'{spread.index[spread > 1][0]}'; a task covariate must be "
                            "constant within a task (row-level values are never released).")
        first = values.groupby(keys).first()
        for label in labels:
            out.setdefault(label, {})[str(column)] = float(first.loc[label])
    return out


def _dp_rng(dp_seed: int | None) -> np.random.Generator:
    if dp_seed is None:
        return np.random.default_rng()
    if isinstance(dp_seed, bool) or not isinstance(dp_seed, int | np.integer) or dp_seed < 0:
        raise DataError(f"dp_seed must be a non-negative integer; got {dp_seed!r}.")
    return np.random.default_rng(np.random.SeedSequence([int(dp_seed), zlib.crc32(b"dp")]))


def site_summary(
    df: pd.DataFrame,
    *,
    outcome: str | Sequence[str],
    treatment: str,
    covariates: Sequence[str] | None = None,
    task: str | None = None,
    task_id: Any = None,
    estimand: str = "ate",
    modifiers: Mapping[str, float] | None = None,
    learner: Any = "gbm",
    folds: int = 5,
    seed: int = 0,
    min_n: int = 20,
    n_jobs: int = -1,
    task_covariates: Mapping[str, Any] | Sequence[str] | None = None,
    dp_epsilon: float | None = None,
    dp_delta: float | None = None,
    dp_sensitivity: float | None = None,
    dp_seed: int | None = None,
    created_at: str | _dt.datetime | None = None,
    output: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Stage 1 on one site's rows, as a summary document (and file) that holds no row.

    Parameters
    ----------
    df : DataFrame
        The site's individual-level rows.
    outcome, treatment, covariates, estimand, learner, folds, seed, n_jobs
        As in :func:`bayesfuse.estimate_tasks`. Each task's fit is seeded from
        (``seed``, task id), so a site's summary equals the same task's row of a pooled
        ``estimate_tasks`` run.
    modifiers : mapping str -> float, optional
        For ``estimand="blp"``: ``{column: centre}``, the effect modifiers and the point the
        intercept refers to (see :mod:`bayesfuse.stage1.blp`). Sites must agree on the
        centres (a site cannot see the pooled mean that a list would use in
        :func:`bayesfuse.estimate_tasks`); with the same mapping, a site's summary equals the
        task's row of ``estimate_tasks``.
    task : str, optional
        Column with the task id, for a site holding several tasks.
    task_id : str, optional
        The task id of all rows, for a site that is one task (give ``task`` or ``task_id``).
    min_n : int, default 20
        Small-cell protection: refuse (:class:`SiteError`) when a task has fewer rows, or,
        for ``ate``/``atte``, fewer treated or fewer controls.
    task_covariates : mapping or sequence of str, optional
        Task-level covariates zₖ: ``{"name": value}`` (a one-task site), or column names
        that are constant within each task.
    dp_epsilon, dp_delta, dp_sensitivity : float, optional
        Differential privacy for θ̂ (give all three): the analytic Gaussian mechanism with
        budget (ε, δ) for L2 sensitivity ``dp_sensitivity`` of θ̂ — a bound that *you*
        state and are responsible for (see :mod:`bayesfuse.stage1.dp`). The noise variance is
        written to the file and added to Vₖ when the file is read.
    dp_seed : int, optional
        Seed of the privacy noise, for a reproducible file. Keep it secret (it is not
        written to the file): whoever knows it can remove the noise. Default: fresh
        entropy from the operating system.
    created_at : str or datetime, optional
        Time stamp written to the file; default ``SOURCE_DATE_EPOCH`` if set, else now.
    output : path, optional
        Write the summary there (atomically).
    force : bool, default False
        Overwrite an existing ``output``.

    Returns
    -------
    dict
        The summary document (schema ``bayesfuse.summary`` version 1): a single task object
        at the top level for a one-task site, else a ``tasks`` list.

    Raises
    ------
    SiteError
        Small cells, or a task that stage 1 could not estimate (nothing is written).
    DataError
        Bad input (columns, options, differential-privacy settings).

    Examples
    --------
    >>> doc = site_summary(rows, task_id="hospital-3", outcome="y", treatment="d",
    ...                    covariates=["age", "sex"], learner="lasso",
    ...                    output="hospital-3.json")  # doctest: +SKIP
    """
    from bayesfuse.data.summary import SCHEMA, VERSION, validate_summary, write_summary
    from bayesfuse.stage1 import dml as stage1
    from bayesfuse.stage1 import dp as dp_module

    if output is not None:
        from bayesfuse._io import check_overwrite

        check_overwrite(output, force)
    frame, task_col = _frame_with_task(df, task, task_id)
    binary = stage1.check_options(estimand, folds, n_jobs, min_n, 1, (0.01, 0.99), 0.01,
                                   "joblib", None)
    outcomes = [outcome] if isinstance(outcome, str) else list(outcome)
    columns = stage1.check_columns(frame, task_col, outcomes, treatment, covariates)
    if binary:
        stage1.check_binary(frame[treatment], treatment, estimand)
    use_dp = any(v is not None for v in (dp_epsilon, dp_delta, dp_sensitivity))
    if use_dp:
        epsilon, delta, sensitivity = dp_module.check_dp(dp_epsilon, dp_delta, dp_sensitivity)
    if modifiers is not None and not isinstance(modifiers, Mapping):
        raise DataError("site_summary needs modifiers as {column: centre} with centres agreed "
                        "by all sites (e.g. {'age': 50.0}): a site cannot see the pooled mean "
                        f"that a list of names is centred at; got {modifiers!r}.")
    _check_cells(frame, task_col, treatment, binary, min_n)
    labels = list(dict.fromkeys(frame[task_col].map(task_label)))
    zs = _task_covariates(frame, task_col, labels, task_covariates)
    stamp = resolve_created_at(created_at)

    results, flags, meta, outcomes = stage1.stage1_results(
        frame, task_col, outcome, treatment, columns, estimand, learner, folds,
        1 if len(labels) == 1 else n_jobs, seed,  # one task: no worker processes
        min_n, 1, (0.01, 0.99), 0.01, "joblib", None, None, modifiers=modifiers)
    failed = [r for r in results if "excluded" in r]
    if failed:
        raise SiteError(f"Task '{failed[0]['task']}' could not be estimated "
                        f"({failed[0]['excluded']}); nothing was written.")

    rng = _dp_rng(dp_seed) if use_dp else None
    entries = []
    for r in results:
        estimate = np.asarray(r["estimate"], dtype=float)
        entry: dict[str, Any] = {
            "task": r["task"], "estimand": estimand,
            "params": stage1._params(outcomes, meta),
            "n": int(r["n"]),
        }
        if binary:
            entry["n_treated"], entry["n_control"] = (int(a) for a in r["arms"])
        if rng is not None:
            estimate, noise = dp_module.gaussian_mechanism(estimate, epsilon, delta,
                                                           sensitivity, rng)
            entry["dp_noise_variance"] = [float(noise)] * estimate.size
        entry["estimate"] = [float(v) for v in estimate]
        entry["covariance"] = [[float(v) for v in row] for row in np.asarray(r["covariance"])]
        if r["task"] in zs:
            entry["covariates"] = zs[r["task"]]
        if "warning" in r:
            entry["warnings"] = [r["warning"]]
        entries.append(entry)

    provenance: dict[str, Any] = {
        "learner": meta["learner"], "learners": meta["learners"], "folds": int(folds),
        "seed": int(seed), "min_n": int(min_n), "versions": _versions(), "created_at": stamp,
    }
    if meta.get("blp_center"):
        provenance["blp_center"] = {k: float(v) for k, v in meta["blp_center"].items()}
    if use_dp:
        provenance["dp"] = {"mechanism": dp_module.MECHANISM, "epsilon": epsilon,
                            "delta": delta, "sensitivity": sensitivity}
    head = {"schema": SCHEMA, "version": VERSION}
    if len(entries) == 1:
        document = {**head, **entries[0], **provenance}
    else:
        document = {**head, "tasks": entries, **provenance}
    if output is not None:
        write_summary(document, output, force=force)
    else:
        validate_summary(document, "summary")
    return document

