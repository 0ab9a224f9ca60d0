"""`TaskEstimates`: the one contract between stage 1 and stage 2.

A ``TaskEstimates`` holds, for K tasks, the debiased estimates θ̂ₖ (K×p), their covariances
Vₖ (K×p×p), optional sample sizes nₖ and task covariates zₖ, and the parameter names. It is
validated once, when built (from arrays, or from a table with :meth:`TaskEstimates.from_frame`),
and is immutable afterwards.

Files: :meth:`TaskEstimates.to_csv` writes the CSV that :mod:`bayesfuse.data.csv` reads;
:func:`bayesfuse.data.read.read_estimates` reads CSV or summary JSON
(:mod:`bayesfuse.data.summary`) files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayesfuse._io import atomic_write_text
from bayesfuse._validation import check_probability
from bayesfuse.data.columns import numeric, record_se_from, row_variances, task_label
from bayesfuse.errors import EstimatesError

__all__ = ["TaskEstimates", "task_label"]


def _as_float_array(values: Any, what: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise EstimatesError(
            f"{what} must be numeric; could not convert it to numbers ({exc})."
        ) from None
    return array


class TaskEstimates:
    """Per-task estimates θ̂ₖ with covariances Vₖ: the input of :func:`bayesfuse.fuse`.

    Parameters
    ----------
    tasks : sequence of length K
        Task ids (hospitals, schools, trials...). Stored as strings; must be unique and
        free of control characters (the rule of :func:`~bayesfuse.data.columns.task_label`).
    estimates : array_like of shape (K,) or (K, p)
        Stage-1 estimates θ̂ₖ.
    covariances : array_like of shape (K,), (K, p) or (K, p, p)
        Covariance matrices Vₖ of θ̂ₖ. A 1-D or 2-D array is read as the variances (the
        diagonal of Vₖ). Each Vₖ must be symmetric positive definite.
    n : array_like of shape (K,), optional
        Number of observations behind each estimate.
    covariates : DataFrame or array_like of shape (K, q), optional
        Task-level covariates zₖ. A DataFrame indexed by the task ids is aligned to
        ``tasks``; otherwise rows are taken in the order of ``tasks``.
    params : sequence of str of length p, optional
        Parameter names (default ``["theta"]`` for p = 1, ``theta0, theta1...`` otherwise).
    estimand : str, optional
        What θ is (``"ate"``, ``"atte"``, ``"plr"``, ``"blp"``...), carried into results.
    flags : DataFrame, optional
        Stage-1 notes per task (columns ``task, status, reason``; status ``"warning"`` or
        ``"excluded"``), so that nothing is dropped silently.
    meta : mapping, optional
        Free-form provenance (learners, folds, seed, versions).

    Examples
    --------
    >>> est = TaskEstimates(["a", "b", "c"], [0.1, 0.3, -0.2], [0.01, 0.04, 0.02])
    >>> est.n_tasks, est.n_params
    (3, 1)
    """

    def __init__(
        self,
        tasks: Sequence[Any],
        estimates: Any,
        covariances: Any,
        n: Any = None,
        covariates: Any = None,
        params: Sequence[str] | None = None,
        *,
        estimand: str | None = None,
        flags: pd.DataFrame | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        task_ids = [task_label(t) for t in np.asarray(list(tasks), dtype=object)]
        n_tasks = len(task_ids)
        if n_tasks < 2:
            raise EstimatesError(
                f"Fusion needs at least 2 tasks; got {n_tasks}. Add tasks or check the task column."
            )
        seen: dict[str, int] = {}
        duplicates = sorted({t for t in task_ids if t in seen or seen.setdefault(t, 0)})
        if duplicates:
            raise EstimatesError(
                f"Task ids must be unique; duplicated: {', '.join(duplicates[:10])}. "
                "Give each task one row (one row per task and parameter for vector estimates)."
            )

        theta_hat = _as_float_array(estimates, "estimates")
        if theta_hat.ndim == 1:
            theta_hat = theta_hat[:, None]
        if theta_hat.ndim != 2 or theta_hat.shape[0] != n_tasks:
            raise EstimatesError(
                f"estimates must have shape (K,) or (K, p) with K = {n_tasks} tasks; "
                f"got shape {np.shape(estimates)}."
            )
        n_params = theta_hat.shape[1]
        if n_params < 1:
            raise EstimatesError("estimates must hold at least one parameter per task.")
        for k in np.flatnonzero(~np.isfinite(theta_hat).all(axis=1)):
            raise EstimatesError(
                f"Task '{task_ids[k]}': estimate is not finite ({theta_hat[k].tolist()}). "
                "Remove the task or fix its stage-1 fit."
            )

        cov = _as_float_array(covariances, "covariances")
        if cov.ndim == 1 and n_params == 1:
            cov = cov[:, None]
        if cov.ndim == 2:
            if cov.shape != (n_tasks, n_params):
                raise EstimatesError(
                    f"covariances given as variances must have shape ({n_tasks}, {n_params}); "
                    f"got {cov.shape}."
                )
            variances = cov
            for k in np.flatnonzero(~np.isfinite(variances).all(axis=1)):
                raise EstimatesError(f"Task '{task_ids[k]}': variance is not finite.")
            for k in np.flatnonzero((variances <= 0).any(axis=1)):
                raise EstimatesError(
                    f"Task '{task_ids[k]}': standard error / variance must be > 0; got "
                    f"{variances[k].tolist()}. A zero SE means the stage-1 fit is degenerate."
                )
            cov = np.einsum("kp,pq->kpq", variances, np.eye(n_params))
        if cov.shape != (n_tasks, n_params, n_params):
            raise EstimatesError(
                f"covariances must have shape (K, p, p) = ({n_tasks}, {n_params}, {n_params}); "
                f"got {cov.shape}."
            )
        for k in np.flatnonzero(~np.isfinite(cov).all(axis=(1, 2))):
            raise EstimatesError(f"Task '{task_ids[k]}': covariance has non-finite entries.")
        scale = np.maximum(np.abs(cov).max(axis=(1, 2)), np.finfo(float).tiny)
        asym = np.abs(cov - np.swapaxes(cov, 1, 2)).max(axis=(1, 2)) / scale
        for k in np.flatnonzero(asym > 1e-8):
            raise EstimatesError(
                f"Task '{task_ids[k]}': covariance is not symmetric "
                f"(max relative asymmetry {asym[k]:.2g})."
            )
        cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
        diag = np.diagonal(cov, axis1=1, axis2=2)
        for k in np.flatnonzero((diag <= 0).any(axis=1)):
            raise EstimatesError(
                f"Task '{task_ids[k]}': standard error / variance must be > 0; got "
                f"{diag[k].tolist()}."
            )
        min_eig = np.linalg.eigvalsh(cov)[:, 0]
        for k in np.flatnonzero(min_eig <= 1e-12 * diag.max(axis=1)):
            raise EstimatesError(
                f"Task '{task_ids[k]}': covariance is not positive definite (smallest "
                f"eigenvalue {min_eig[k]:.3g}). Check the stage-1 fit of this task."
            )

        if params is None:
            names = ["theta"] if n_params == 1 else [f"theta{j}" for j in range(n_params)]
        else:
            names = [str(p) for p in params]
        if len(names) != n_params:
            raise EstimatesError(
                f"params must name each of the {n_params} parameters; got {len(names)} names."
            )
        if len(set(names)) != n_params:
            raise EstimatesError(f"Parameter names must be unique; got {names}.")

        n_obs = None
        if n is not None:
            n_obs = _as_float_array(n, "n").reshape(-1)
            if n_obs.shape != (n_tasks,):
                raise EstimatesError(
                    f"n must have one entry per task ({n_tasks}); got {n_obs.size}."
                )
            for k in np.flatnonzero(~np.isfinite(n_obs) | (n_obs <= 0)):
                raise EstimatesError(f"Task '{task_ids[k]}': n must be a positive number.")

        self._tasks = task_ids
        self._estimates = theta_hat
        self._covariances = cov
        self._n = n_obs
        self._params = names
        self._covariates = _validate_covariates(covariates, task_ids)
        self.estimand = estimand
        self.flags = (
            flags.reset_index(drop=True)
            if flags is not None
            else pd.DataFrame(columns=["task", "status", "reason"])
        )
        self.meta = dict(meta or {})
        for array in (self._estimates, self._covariances):
            array.setflags(write=False)

    # ------------------------------------------------------------------ accessors
    @property
    def tasks(self) -> list[str]:
        """Task ids, length K."""
        return list(self._tasks)

    @property
    def params(self) -> list[str]:
        """Parameter names, length p."""
        return list(self._params)

    @property
    def estimates(self) -> np.ndarray:
        """θ̂, ndarray of shape (K, p)."""
        return self._estimates

    @property
    def covariances(self) -> np.ndarray:
        """V, ndarray of shape (K, p, p)."""
        return self._covariances

    @property
    def se(self) -> np.ndarray:
        """Standard errors, ndarray of shape (K, p)."""
        return np.sqrt(np.diagonal(self._covariances, axis1=1, axis2=2))

    @property
    def n(self) -> np.ndarray | None:
        """Sample sizes, ndarray of shape (K,), or None."""
        return None if self._n is None else self._n.copy()

    @property
    def covariates(self) -> pd.DataFrame | None:
        """Task covariates, DataFrame indexed by task (K rows), or None."""
        return None if self._covariates is None else self._covariates.copy()

    @property
    def n_tasks(self) -> int:
        """Number of tasks K."""
        return len(self._tasks)

    @property
    def n_params(self) -> int:
        """Number of parameters p per task (1 for a scalar θ)."""
        return self._estimates.shape[1]

    def __len__(self) -> int:
        return self.n_tasks

    def __repr__(self) -> str:
        extra = []
        if self._n is not None:
            extra.append("n")
        if self._covariates is not None:
            extra.append(f"covariates={list(self._covariates.columns)}")
        estimand = f", estimand={self.estimand!r}" if self.estimand else ""
        return (
            f"TaskEstimates(K={self.n_tasks}, params={self._params}{estimand}"
            + (", " + ", ".join(extra) if extra else "")
            + ")"
        )

    # ------------------------------------------------------------------ transforms
    def select(self, tasks: Sequence[Any]) -> TaskEstimates:
        """A new ``TaskEstimates`` holding only ``tasks`` (in that order).

        Examples
        --------
        >>> import bayesfuse as bf
        >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
        >>> two = est.select(["A", "C"])
        >>> two.tasks
        ['A', 'C']
        """
        labels = [task_label(t) for t in tasks]
        index = {t: i for i, t in enumerate(self._tasks)}
        missing = [t for t in labels if t not in index]
        if missing:
            raise EstimatesError(f"Unknown task ids: {', '.join(missing[:10])}.")
        rows = np.array([index[t] for t in labels], dtype=int)
        return self._replace(rows=rows)

    def drop(self, tasks: Sequence[Any]) -> TaskEstimates:
        """A new ``TaskEstimates`` without ``tasks``.

        Examples
        --------
        >>> import bayesfuse as bf
        >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
        >>> est.drop(["A"]).n_tasks
        7
        """
        labels = {task_label(t) for t in tasks}
        return self.select([t for t in self._tasks if t not in labels])

    def inflate(self, factor: float) -> TaskEstimates:
        """A copy with every covariance multiplied by ``factor`` (> 0).

        Examples
        --------
        >>> import bayesfuse as bf
        >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
        >>> doubled = est.inflate(2.0)                      # every Vₖ × 2: SEs × √2
        >>> bool((doubled.se > est.se).all())
        True
        """
        if not np.isfinite(factor) or factor <= 0:
            raise EstimatesError(f"inflation factor must be a positive number; got {factor}.")
        return self._replace(covariances=self._covariances * float(factor))

    def _replace(self, rows: np.ndarray | None = None, covariances: Any = None) -> TaskEstimates:
        rows = np.arange(self.n_tasks) if rows is None else rows
        cov = self._covariances if covariances is None else np.asarray(covariances)
        covariates = None if self._covariates is None else self._covariates.iloc[rows]
        kept = {self._tasks[i] for i in rows}
        flags = self.flags[self.flags["task"].astype(str).isin(kept)] if len(self.flags) else None
        return TaskEstimates(
            [self._tasks[i] for i in rows],
            self._estimates[rows],
            cov[rows],
            n=None if self._n is None else self._n[rows],
            covariates=covariates,
            params=self._params,
            estimand=self.estimand,
            flags=flags,
            meta=self.meta,
        )

    # ------------------------------------------------------------------ frames and files
    def to_frame(self) -> pd.DataFrame:
        """Tidy table of the estimates.

        Returns
        -------
        DataFrame
            For p = 1: columns ``task, estimate, se[, se_from, n, covariates...]``, one row
            per task. For p > 1: columns ``task, param, estimate, se, cov[<param>]...[,
            se_from, n, ...]``, one row per (task, param) (the long format that
            :func:`read_estimates` reads back). ``se_from`` (present when some standard error
            was converted, see :meth:`from_frame`) says from what: ``"95% CI"``, ``"p-value"``
            or ``""`` where it was given.

        Examples
        --------
        >>> import bayesfuse as bf
        >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
        >>> est.to_frame().columns[:3].tolist()
        ['task', 'estimate', 'se']
        """
        if self.n_params == 1:
            frame = pd.DataFrame(
                {"task": self._tasks, "estimate": self._estimates[:, 0], "se": self.se[:, 0]}
            )
            repeat = 1
        else:
            repeat = self.n_params
            frame = pd.DataFrame(
                {
                    "task": np.repeat(self._tasks, repeat),
                    "param": np.tile(self._params, self.n_tasks),
                    "estimate": self._estimates.reshape(-1),
                    "se": self.se.reshape(-1),
                }
            )
            for j, name in enumerate(self._params):
                frame[f"cov[{name}]"] = self._covariances[:, :, j].reshape(-1)
        se_from = self.meta.get("se_from") or {}
        if any(t in se_from for t in self._tasks):  # the provenance of converted se
            frame["se_from"] = [se_from.get(t, {}).get(p, "")
                                for t in self._tasks for p in self._params]
        if self._n is not None:
            frame["n"] = np.repeat(self._n, repeat)
        if self._covariates is not None:
            for column in self._covariates.columns:
                frame[column] = np.repeat(self._covariates[column].to_numpy(), repeat)
        return frame

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_frame` to CSV atomically (full float precision). Returns the path.

        Examples
        --------
        >>> import bayesfuse as bf
        >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
        >>> path = est.to_csv("estimates.csv")              # doctest: +SKIP
        >>> bf.read_estimates(path).n_tasks                 # doctest: +SKIP
        8
        """
        text = self.to_frame().to_csv(index=False, float_format="%.17g")
        return atomic_write_text(path, text)

    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        task: str = "task",
        estimate: str = "estimate",
        se: str | None = "se",
        *,
        variance: str | None = None,
        ci_low: str | None = None,
        ci_high: str | None = None,
        level: float | str = 0.95,
        p_value: str | None = None,
        n: str | None = None,
        covariates: Sequence[str] | None = None,
        param: str | None = None,
        estimand: str | None = None,
    ) -> TaskEstimates:
        """Build from a table; columns not named here are ignored.

        Parameters
        ----------
        df : DataFrame
            One row per task (scalar θ), or one row per (task, param) with ``param`` given.
        task, estimate : str
            Column names of the task id and of θ̂.
        se, variance : str, optional
            Column of the standard error, or of the variance (``variance`` replaces ``se``).
            With an interval or p-value column, a missing ``"se"`` column is not needed.
        ci_low, ci_high : str, optional
            Columns of a symmetric normal confidence interval, for rows without a standard
            error: se = (ci_high − ci_low) / (2 z₍₁₊ₗₑᵥₑₗ₎/₂). Refused when the estimate lies
            outside or the interval is asymmetric (half-widths more than 10 % apart: give
            ratios on the log scale).
        level : float or str, default 0.95
            The intervals' level, or the column holding it.
        p_value : str, optional
            Column of two-sided p-values (z test of θ = 0), for rows with neither a standard
            error nor an interval: se = abs(θ̂) / z₁₋ₚ/₂.
        n : str, optional
            Column of the sample size.
        covariates : sequence of str, optional
            Columns of task-level covariates (numeric, constant within a task).
        param : str, optional
            Column naming the parameter, for vector θ in long format. The covariance then
            comes from columns ``cov[<param name>]`` when present (else diagonal from se).
        estimand : str, optional
            Label of what θ is.

        Notes
        -----
        Each row takes its standard error from the first of ``se`` (or ``variance``), the
        interval, the p-value that it holds. Converted ones are recorded in
        ``meta["se_from"]`` (task → parameter → ``"95% CI"`` or ``"p-value"``), shown by
        :meth:`to_frame` as a column ``se_from``; ``meta["notes"]`` says it in words.

        Examples
        --------
        >>> df = pd.DataFrame({"task": ["a", "b"], "estimate": [0.5, 1.0],
        ...                    "ci_low": [0.1, 0.2], "ci_high": [0.9, 1.8]})
        >>> TaskEstimates.from_frame(df, ci_low="ci_low", ci_high="ci_high").meta["se_from"]
        {'a': {'theta': '95% CI'}, 'b': {'theta': '95% CI'}}
        """
        if not isinstance(df, pd.DataFrame):
            raise EstimatesError(f"from_frame needs a pandas DataFrame; got {type(df).__name__}.")
        if (ci_low is None) != (ci_high is None):
            raise EstimatesError("Give both ci_low= and ci_high= (the two bounds' columns).")
        others = [c for c in (ci_low, p_value) if c is not None]
        value_col = variance if variance is not None else se
        if value_col == "se" and others and "se" not in df.columns:
            value_col = None  # the default se column is optional next to an interval or p
        if value_col is None and not others:
            raise EstimatesError("Give the standard-error column (se=...), variance=..., "
                                 "ci_low= and ci_high=, or p_value=.")
        level_col = level if isinstance(level, str) and ci_low is not None else None
        if not isinstance(level, str):
            level = check_probability(level, "level")
        source_cols = [c for c in (value_col, ci_low, ci_high, level_col, p_value) if c]
        needed = [task, estimate, *source_cols] + ([param] if param else [])
        needed += [n] if n else []
        needed += list(covariates or [])
        missing = [c for c in needed if c not in df.columns]
        if missing:
            raise EstimatesError(
                f"Missing column(s) {missing}; the table has {list(df.columns)}. "
                "Name them with task=, estimate=, se= (or variance=, ci_low= and ci_high=, "
                "p_value=), n=, covariates=."
            )
        if covariates is not None and len(set(covariates)) != len(list(covariates)):
            raise EstimatesError(f"covariates must be distinct column names; got "
                                 f"{list(covariates)}.")
        if not df.columns.is_unique:
            duplicated = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
            raise EstimatesError(f"Column names must be unique; duplicated: "
                                 f"{', '.join(duplicated[:10])}. Rename or drop them.")
        if len(df) == 0:
            raise EstimatesError("The estimates table is empty.")
        if df[task].isna().any():
            raise EstimatesError(f"Column '{task}' has missing task ids.")
        labels = [task_label(t) for t in df[task]]
        required = [estimate] + ([n] if n else []) + list(covariates or [])
        for column in dict.fromkeys(required + source_cols):
            values = numeric(df[column])
            bad = values.isna() & df[column].notna()
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise EstimatesError(f"Column '{column}' must be numeric; task '{labels[row]}' "
                                     f"has {df[column].iloc[row]!r}.")
            if column in required and values.isna().any():
                row = int(np.flatnonzero(values.isna().to_numpy())[0])
                raise EstimatesError(f"Column '{column}' has a missing value for task "
                                     f"'{labels[row]}'.")
        theta = numeric(df[estimate]).to_numpy(dtype=float)
        keys = {"se": se if variance is None else None, "variance": variance,
                "ci_low": ci_low, "ci_high": ci_high, "p_value": p_value}
        names = {k: v for k, v in keys.items() if v is not None and v in source_cols}
        sources = {k: numeric(df[v]).to_numpy(dtype=float) for k, v in names.items()}
        if ci_low is not None:
            names["level"] = level_col or "level"
            sources["level"] = (numeric(df[level_col]).to_numpy(dtype=float) if level_col
                                else np.full(len(df), level))
        variances, se_from = row_variances(theta, labels, sources, names)
        if param is None:
            cov_frame = (df.set_index(pd.Index(labels))[list(covariates)]
                         if covariates else None)
            est = cls(
                labels,
                theta,
                variances,
                n=None if n is None else numeric(df[n]).to_numpy(dtype=float),
                covariates=_task_level(cov_frame, covariates) if covariates else None,
                estimand=estimand,
            )
            record_se_from(est.meta, labels, [est.params[0]] * len(labels), se_from)
            return est
        frame = df.assign(_task=labels, _param=df[param].astype(str), _variance=variances,
                          _se_from=se_from)
        return _from_long_frame(frame, task, estimate, param, n, covariates, estimand, cls)


def _task_level(frame: pd.DataFrame | None, columns: Sequence[str] | None) -> pd.DataFrame | None:
    if frame is None or not columns:
        return None
    return frame.apply(numeric)


def _from_long_frame(frame, task, estimate, param, n, covariates, estimand, cls):
    labels = frame["_task"]
    param_names = list(dict.fromkeys(frame["_param"]))
    tasks = list(dict.fromkeys(labels))
    counts = labels.value_counts()
    bad = counts[counts != len(param_names)]
    if len(bad):
        raise EstimatesError(
            f"Task '{bad.index[0]}' has {int(bad.iloc[0])} rows; each task needs one row per "
            f"parameter ({len(param_names)}: {param_names})."
        )
    if frame.duplicated(["_task", "_param"]).any():
        dup = frame[frame.duplicated(["_task", "_param"])].iloc[0]
        raise EstimatesError(f"Task '{dup['_task']}' has parameter '{dup['_param']}' twice.")
    order = pd.MultiIndex.from_product([tasks, param_names])
    frame = frame.set_index(["_task", "_param"]).loc[order]
    n_tasks, n_params = len(tasks), len(param_names)
    theta_hat = numeric(frame[estimate]).to_numpy(dtype=float).reshape(n_tasks, n_params)
    cov_cols = [f"cov[{name}]" for name in param_names]
    se_from = list(frame["_se_from"])
    if all(c in frame.columns for c in cov_cols):
        cov = np.stack([numeric(frame[c]).to_numpy(dtype=float)
                        for c in cov_cols], axis=-1).reshape(n_tasks, n_params, n_params)
        if np.isnan(cov).any():
            k = int(np.flatnonzero(np.isnan(cov).any(axis=(1, 2)))[0])
            raise EstimatesError(f"Task '{tasks[k]}': covariance columns must be numeric.")
        se_from = [""] * len(se_from)  # the covariance columns, not the se, are used
    else:
        cov = frame["_variance"].to_numpy(dtype=float).reshape(n_tasks, n_params)
    per_task = frame.groupby(level=0, sort=False)
    n_values = None
    if n:
        _check_constant(per_task, n)
        n_values = per_task[n].first().loc[tasks].to_numpy(dtype=float)
    cov_frame = None
    if covariates:
        for column in covariates:
            _check_constant(per_task, column)
        cov_frame = per_task[list(covariates)].first().loc[tasks].apply(numeric)
    est = cls(tasks, theta_hat, cov, n=n_values, covariates=cov_frame, params=param_names,
              estimand=estimand)
    record_se_from(est.meta, [t for t, _ in order], [p for _, p in order], se_from)
    return est


def _check_constant(groups, column: str) -> None:
    spread = groups[column].nunique()
    if (spread > 1).any():
        raise EstimatesError(
            f"Column '{column}' must be constant within a task; task "
            f"'{spread.index[spread > 1][0]}'"
            " has several values."
        )


def _validate_covariates(covariates: Any, tasks: list[str]) -> pd.DataFrame | None:
    if covariates is None:
        return None
    if isinstance(covariates, Mapping) and not isinstance(covariates, pd.DataFrame):
        covariates = pd.DataFrame(dict(covariates))
    if isinstance(covariates, pd.DataFrame):
        frame = covariates.copy()
        index = [task_label(t) for t in frame.index]
        if set(index) >= set(tasks) and len(frame) >= len(tasks) and frame.index.is_unique:
            frame.index = index
            frame = frame.loc[tasks]
        elif len(frame) != len(tasks):
            raise EstimatesError(
                f"covariates must have one row per task ({len(tasks)}); got {len(frame)} rows."
            )
    else:
        array = _as_float_array(covariates, "covariates")
        if array.ndim == 1:
            array = array[:, None]
        if array.ndim != 2 or array.shape[0] != len(tasks):
            raise EstimatesError(
                f"covariates must have shape (K, q) with K = {len(tasks)}; got {array.shape}."
            )
        frame = pd.DataFrame(array, columns=[f"z{j}" for j in range(array.shape[1])])
    frame.index = pd.Index(tasks, name="task")
    frame.columns = [str(c) for c in frame.columns]
    for column in frame.columns:
        values = numeric(frame[column])
        if values.isna().any():
            k = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise EstimatesError(
                f"Task '{tasks[k]}': covariate '{column}' is missing or not numeric "
                f"({frame[column].iloc[k]!r})."
            )
        if not np.isfinite(values.to_numpy(dtype=float)).all():
            k = int(np.flatnonzero(~np.isfinite(values.to_numpy(dtype=float)))[0])
            raise EstimatesError(f"Task '{tasks[k]}': covariate '{column}' is not finite.")
        frame[column] = values.astype(float)
    return frame
