"""Stage 1: per-task double/debiased ML estimates with DoubleML.

One DoubleML fit per task on that task's rows (cross-fitting with scikit-learn learners):
``ate`` / ``atte`` by the IRM (AIPW) score, ``plr`` by the partially linear model. θ̂ₖ is
DoubleML's coefficient and Vₖ its variance, computed by DoubleML from the score values ψ.
Tasks that cannot be estimated reliably are excluded or flagged, and listed in
``TaskEstimates.flags`` — never dropped silently, never NaN.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd

from bayesfuse.errors import DataError, TaskWarning
from bayesfuse.estimates import TaskEstimates, _task_label
from bayesfuse.learners import describe_learner, resolve_learner

__all__ = ["estimate_tasks", "ESTIMANDS"]

ESTIMANDS = ("ate", "atte", "plr")
_PLANNED = {"blp": "the CATE best-linear-projection estimand ('blp') is not available yet"}


def _check_columns(df: pd.DataFrame, task: str, outcomes: list[str], treatment: str,
                   covariates: Sequence[str] | None) -> list[str]:
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"estimate_tasks needs a pandas DataFrame; got {type(df).__name__}.")
    if len(df) == 0:
        raise DataError("The data table is empty.")
    named = [("task", task), *(("outcome", o) for o in outcomes), ("treatment", treatment)]
    missing = [f"{role} column '{col}'" for role, col in named if col not in df.columns]
    if covariates is not None:
        missing += [f"covariate '{c}'" for c in covariates if c not in df.columns]
    if missing:
        raise DataError(f"Missing {', '.join(missing)}; the table has {list(df.columns)}.")
    if covariates is None:
        covariates = [c for c in df.columns if c not in (task, *outcomes, treatment)]
    covariates = list(covariates)
    if not covariates:
        raise DataError("No covariates: give covariates=[...] (DoubleML needs at least one).")
    for column in [*outcomes, treatment, *covariates]:
        values = df[column]
        if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
            raise DataError(
                f"Column '{column}' must be numeric; it holds {values.dtype} values such as "
                f"{values.dropna().iloc[0]!r}. One-hot encode categories first "
                "(pandas.get_dummies)."
            )
        n_missing = int(values.isna().sum())
        if n_missing:
            raise DataError(
                f"Column '{column}' has {n_missing} missing value(s); drop or impute those rows "
                "first (e.g. df.dropna(subset=[...]))."
            )
        if not np.isfinite(values.to_numpy(dtype=float)).all():
            raise DataError(f"Column '{column}' has infinite values.")
    if df[task].isna().any():
        raise DataError(f"Task column '{task}' has {int(df[task].isna().sum())} missing ids.")
    return covariates


def _task_seed(seed: int, task: str) -> int:
    """A seed per task from (seed, task id): results do not depend on order or n_jobs."""
    sequence = np.random.SeedSequence([seed, zlib.crc32(task.encode("utf-8"))])
    return int(sequence.generate_state(1)[0] % (2**31 - 1))


def _fit_one_task(payload: dict[str, Any]) -> dict[str, Any]:
    """Fit one task; returns estimates and covariance, or the reason it was excluded."""
    task, rows = payload["task"], payload["rows"]
    treatment = payload["treatment"]
    estimand, folds = payload["estimand"], payload["folds"]
    n = len(rows)
    result: dict[str, Any] = {"task": task, "n": n}
    d = rows[treatment].to_numpy(dtype=float)
    binary = estimand in ("ate", "atte")
    if binary:
        n_treated, n_control = int(d.sum()), int(n - d.sum())
        result["arms"] = [n_treated, n_control]
    reasons = []
    if n < payload["min_n"]:
        reasons.append(f"n = {n} < min_n = {payload['min_n']}")
    if binary:
        low = max(payload["min_arm"], folds)
        if n_treated < low or n_control < low:
            reasons.append(f"{n_treated} treated and {n_control} controls; each arm needs at "
                           f"least {low} (min_arm = {payload['min_arm']}, folds = {folds})")
    elif np.ptp(d) == 0:
        reasons.append("the treatment does not vary within the task")
    if reasons:
        result["excluded"] = "; ".join(reasons)
        return result
    seed = payload["seed"]
    outcomes = payload["outcomes"]
    coefficients, influence = [], []
    propensity = None
    for name in outcomes:
        model = _fit_doubleml(rows, name, treatment, payload, binary, seed)
        if isinstance(model, str):
            result["excluded"] = model if len(outcomes) == 1 else f"outcome '{name}': {model}"
            return result
        coefficients.append(float(model.coef[0]))
        psi = np.asarray(model.psi)[:, 0, 0]
        jacobian = float(np.mean(np.asarray(model.psi_deriv)[:, 0, 0]))
        # influence of unit i on θ̂ (DoubleML's linear score): -ψᵢ / J
        influence.append(-psi / jacobian)
        if binary and propensity is None:
            propensity = np.asarray(model.predictions["ml_m"]).reshape(-1)
    # Cov(θ̂_a, θ̂_b) = Σᵢ IFₐᵢ IF_bᵢ / n²; its diagonal is DoubleML's se² (mean ψ²/J²/n)
    influence = np.stack(influence, axis=1)  # (n, p)
    covariance = influence.T @ influence / n**2
    if len(outcomes) > 1 and np.linalg.eigvalsh(covariance)[0] <= 0:
        result["excluded"] = ("the joint covariance of the outcomes is singular "
                              f"(n = {n} for {len(outcomes)} outcomes)")
        return result
    result["estimate"] = coefficients
    result["covariance"] = covariance
    if binary:
        low, high = payload["propensity_bounds"]
        share = float(np.mean((propensity < low) | (propensity > high)))
        if share > 0.05:
            result["warning"] = (f"{share:.0%} of fitted propensities outside [{low}, {high}] "
                                 "(overlap is poor; the estimate leans on trimming)")
    return result


def _fit_doubleml(rows: pd.DataFrame, outcome: str, treatment: str, payload: dict[str, Any],
                  binary: bool, seed: int):
    """One DoubleML fit; the same seed gives the same sample splits for every outcome."""
    import doubleml as dml

    np.random.seed(seed)  # noqa: NPY002 - DoubleML splits samples with the global generator
    data = dml.DoubleMLData(rows, y_col=outcome, d_cols=treatment,
                            x_cols=payload["covariates"])
    learner, folds = payload["learner"], payload["folds"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if binary:
                model = dml.DoubleMLIRM(
                    data, ml_g=resolve_learner(learner, "regressor", seed),
                    ml_m=resolve_learner(learner, "classifier", seed), n_folds=folds,
                    score=payload["estimand"].upper(),
                    trimming_threshold=payload["trimming_threshold"])
            else:
                model = dml.DoubleMLPLR(
                    data, ml_l=resolve_learner(learner, "regressor", seed),
                    ml_m=resolve_learner(learner, "regressor", seed), n_folds=folds)
            model.fit()
        except Exception as exc:  # noqa: BLE001 - a failing task is reported, not fatal
            return f"DoubleML fit failed: {type(exc).__name__}: {exc}"
    coef, se = float(model.coef[0]), float(model.se[0])
    if not np.isfinite(coef) or not np.isfinite(se) or se <= 0:
        return f"DoubleML returned estimate {coef} with se {se}"
    return model


def estimate_tasks(
    df: pd.DataFrame,
    task: str,
    outcome: str | Sequence[str],
    treatment: str,
    covariates: Sequence[str] | None = None,
    estimand: str = "ate",
    learner: Any = "gbm",
    folds: int = 5,
    n_jobs: int = -1,
    seed: int = 0,
    min_n: int = 20,
    min_arm: int = 5,
    propensity_bounds: tuple[float, float] = (0.05, 0.95),
    trimming_threshold: float = 0.01,
    backend: str = "joblib",
    client: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> TaskEstimates:
    """Per-task double/debiased ML estimates.

    Parameters
    ----------
    df : DataFrame
        Individual-level rows of all tasks.
    task, treatment : str
        Column names. The treatment is 0/1 for ``ate``/``atte``; any numeric for ``plr``.
    outcome : str or sequence of str
        Outcome column, or several: then θ is a vector (one effect per outcome, p =
        number of outcomes, named after them), all fitted on the same rows and sample
        splits, and Vₖ is their joint covariance from DoubleML's score values (the
        influence functions -ψ/J of the outcomes, Σᵢ IFₐᵢ IF_bᵢ / n²).
    covariates : sequence of str, optional
        Adjustment covariates (numeric). Default: every other column.
    estimand : {"ate", "atte", "plr"}
        Average treatment effect (IRM/AIPW score), on the treated, or the partially linear
        coefficient.
    learner : str, estimator or mapping
        ``"gbm"``, ``"rf"``, ``"lasso"``, ``"linear"``, any scikit-learn estimator, or
        ``{"outcome": ..., "propensity": ...}``.
    folds : int
        Cross-fitting folds.
    n_jobs : int
        Tasks fitted in parallel (joblib; -1 = all cores).
    seed : int
        Each task's fit is seeded from (seed, task id).
    min_n, min_arm : int
        Tasks with fewer rows, or fewer treated or controls (also fewer than ``folds``), are
        excluded and listed in ``flags``.
    propensity_bounds : (float, float)
        A task with more than 5% of fitted propensities outside is flagged ("warning").
    trimming_threshold : float
        DoubleML's propensity trimming.
    backend : {"joblib", "dask"}
        Where the per-task fits run: local processes (joblib), or a ``dask.distributed``
        cluster — the ``client`` given, or else a ``LocalCluster`` started for the call
        (one worker process per core). Results are identical either way (same per-task
        seeds).
    client : dask.distributed.Client, optional
        The cluster to use with ``backend="dask"``.
    progress : callable, optional
        ``progress(done, total)`` after each finished task.

    Returns
    -------
    TaskEstimates
        θ̂ (K, p) and covariances (K, p, p) of the tasks that could be estimated; ``flags``
        lists excluded and warned tasks with the reason.
    """
    if estimand in _PLANNED:
        raise DataError(_PLANNED[estimand] + "; use 'ate', 'atte' or 'plr'.")
    if estimand not in ESTIMANDS:
        raise DataError(f"Unknown estimand '{estimand}'. Valid estimands: "
                        f"{', '.join(ESTIMANDS)}.")
    if not isinstance(folds, int) or folds < 2:
        raise DataError(f"folds must be an integer >= 2; got {folds!r}.")
    if backend not in ("joblib", "dask"):
        raise DataError(f"Unknown backend '{backend}'. Valid backends: joblib, dask.")
    if client is not None and backend != "dask":
        raise DataError("client= is used with backend='dask' only.")
    outcomes = [outcome] if isinstance(outcome, str) else list(outcome)
    if not outcomes or len(set(outcomes)) != len(outcomes):
        raise DataError(f"outcome must be a column name or a list of distinct names; got "
                        f"{outcome!r}.")
    covariates = _check_columns(df, task, outcomes, treatment, covariates)
    if estimand in ("ate", "atte"):
        values = set(np.unique(df[treatment].to_numpy(dtype=float)))
        if not values <= {0.0, 1.0}:
            raise DataError(
                f"Treatment column '{treatment}' must be 0/1 for estimand '{estimand}'; found "
                f"values {sorted(values)[:5]}. Use estimand='plr' for a continuous treatment."
            )
    resolve_learner(learner, "regressor")  # fail early on an unknown learner
    labels = df[task].map(_task_label)
    order = list(dict.fromkeys(labels))
    payloads = [
        {
            "task": t, "rows": df.loc[labels == t, [*outcomes, treatment, *covariates]]
            .reset_index(drop=True).astype(float),
            "outcomes": outcomes, "treatment": treatment, "covariates": covariates,
            "estimand": estimand, "folds": folds, "learner": learner,
            "seed": _task_seed(seed, t), "min_n": min_n, "min_arm": min_arm,
            "propensity_bounds": propensity_bounds, "trimming_threshold": trimming_threshold,
        }
        for t in order
    ]
    if backend == "dask":
        results = _run_dask(payloads, client, progress)
    else:
        results = _run_joblib(payloads, n_jobs, progress)
    params = ["theta"] if len(outcomes) == 1 else outcomes
    return _collect(results, estimand, learner, folds, seed, params)


def _run_joblib(payloads: list[dict[str, Any]], n_jobs: int,
                progress: Callable[[int, int], None] | None) -> list[dict[str, Any]]:
    from joblib import Parallel, delayed

    total = len(payloads)
    if progress is not None:
        progress(0, total)
    results = []
    runner = Parallel(n_jobs=n_jobs, return_as="generator")
    for done, result in enumerate(runner(delayed(_fit_one_task)(p) for p in payloads), 1):
        results.append(result)
        if progress is not None:
            progress(done, total)
    return results


def _run_dask(payloads: list[dict[str, Any]], client: Any,
              progress: Callable[[int, int], None] | None) -> list[dict[str, Any]]:
    """Map the per-task fits over a dask.distributed cluster, in task order."""
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise DataError("backend='dask' needs dask.distributed: pip install "
                        "'dask[distributed]'.") from None
    own_cluster = None
    if client is None:
        own_cluster = LocalCluster(processes=True, threads_per_worker=1,
                                   dashboard_address=None)
        client = Client(own_cluster)
    elif not isinstance(client, Client):
        raise DataError(f"client must be a dask.distributed.Client; got "
                        f"{type(client).__name__}.")
    try:
        total = len(payloads)
        if progress is not None:
            progress(0, total)
        futures = client.map(_fit_one_task, payloads, pure=False)
        position = {future.key: i for i, future in enumerate(futures)}
        results: list[dict[str, Any] | None] = [None] * total
        for done, future in enumerate(as_completed(futures), 1):
            results[position[future.key]] = future.result()
            if progress is not None:
                progress(done, total)
        return [r for r in results if r is not None]
    finally:
        if own_cluster is not None:
            client.close()
            own_cluster.close()


def _collect(results: list[dict[str, Any]], estimand: str, learner: Any, folds: int,
             seed: int, params: list[str]) -> TaskEstimates:
    kept = [r for r in results if "excluded" not in r]
    flags = [{"task": r["task"], "status": "excluded", "reason": r["excluded"]}
             for r in results if "excluded" in r]
    flags += [{"task": r["task"], "status": "warning", "reason": r["warning"]}
              for r in kept if "warning" in r]
    if flags:
        warnings.warn(
            f"{sum(f['status'] == 'excluded' for f in flags)} task(s) excluded and "
            f"{sum(f['status'] == 'warning' for f in flags)} flagged in stage 1: "
            + "; ".join(f"{f['task']}: {f['reason']}" for f in flags[:5])
            + (" ..." if len(flags) > 5 else "") + " (see .flags)",
            TaskWarning, stacklevel=3,
        )
    if len(kept) < 2:
        reasons = "; ".join(f"{f['task']}: {f['reason']}" for f in flags[:5])
        raise DataError(f"Only {len(kept)} task(s) could be estimated; fusion needs 2. "
                        f"Reasons: {reasons}")
    versions = {}
    for package in ("doubleml", "scikit-learn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    meta = {
        "estimand": estimand, "learner": describe_learner(learner), "folds": folds,
        "seed": seed, "versions": versions,
        "arms": {r["task"]: r["arms"] for r in kept if "arms" in r},
    }
    return TaskEstimates(
        [r["task"] for r in kept],
        np.array([r["estimate"] for r in kept]),
        np.array([r["covariance"] for r in kept]),
        n=np.array([r["n"] for r in kept], dtype=float),
        params=params,
        estimand=estimand,
        flags=pd.DataFrame(flags, columns=["task", "status", "reason"]),
        meta=meta,
    )
