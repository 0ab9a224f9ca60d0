"""Stage 1 with shared nuisance learning: one cross-fitted nuisance fit for all tasks.

The multi-task nuisance step of late fusion, for data whose rows are all in one place: the
outcome regression(s) and the propensity (or treatment regression, ``plr``) are fitted once
on the rows of *all* tasks, with the task identity as features, and every task's orthogonal
score uses out-of-fold predictions. The target parameter stays per task: θ̂ₖ solves the
mean of task k's scores, with DoubleML's estimator and variance formula.

Design matrix (``n_rows × (p + K + p·K)``): the p covariates, a one-hot task indicator per
task and the task × covariate interactions — a shared part plus task-specific parts. A
linear learner then fits βₖ = β + Δₖ; a penalised one (``"lasso"``) shrinks the task-specific
Δₖ towards zero (the data-shared lasso of Gross & Tibshirani, 2016: standardising the
interaction columns weighs Δₖ's penalty by √(nₖ/N)); trees may split on either part.

Cross-fitting: each task's rows are split at random (seeded by the task's seed) into
``folds`` folds of near-equal size; fold f of all tasks is held out together, so no row's
prediction comes from a model that saw that row.

Scores (DoubleML's, with its propensity clipping ``trimming_threshold``):

* ``ate``: ψ_b = ĝ₁ − ĝ₀ + d(y − ĝ₁)/m̂ − (1 − d)(y − ĝ₀)/(1 − m̂), ψ_a = −1;
* ``atte``: ψ_b = [d(ĝ₁ − ĝ₀) + m̂(d(y − ĝ₁)/m̂ − (1 − d)(y − ĝ₀)/(1 − m̂))]/p̄ₖ,
  ψ_a = −d/p̄ₖ with p̄ₖ the task's treated share;
* ``plr`` (partialling out): ψ_b = (d − m̂)(y − l̂), ψ_a = −(d − m̂)².

θ̂ₖ = −Σψ_b / Σψ_a over task k's rows; Vₖ = mean(ψ²) / (nₖ J²) with ψ = ψ_a θ̂ₖ + ψ_b and
J = mean(ψ_a) — what ``DoubleML.fit(external_predictions=...)`` gives for the same
predictions. Vector outcomes get the off-diagonal entries as in the per-task path.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from bayesfuse.errors import DataError
from bayesfuse.stage1.learners import resolve_learner

__all__ = ["fit_shared", "fold_ids", "shared_design", "cross_fit", "task_scores"]

MAX_DESIGN_CELLS = 200_000_000  # 1.6 GB of float64: beyond it, say so instead of swapping


# ---------------------------------------------------------------------- building blocks
def fold_ids(codes: np.ndarray, seeds: np.ndarray, folds: int) -> np.ndarray:
    """Fold of each row, stratified within task.

    Parameters
    ----------
    codes : ndarray of shape (N,)
        Task index 0..K-1 of each row.
    seeds : ndarray of shape (K,)
        Each task's seed (its permutation of rows).
    folds : int
        Number of folds.

    Returns
    -------
    ndarray of shape (N,)
        Fold 0..folds-1 of each row; task k's nₖ rows are spread over the folds as evenly as
        possible (sizes differ by at most one).

    Examples
    --------
    >>> fold = fold_ids(np.array([0, 0, 0, 1, 1, 1]), np.array([1, 2]), 3)
    >>> np.sort(fold.reshape(2, 3), axis=1)
    array([[0, 1, 2],
           [0, 1, 2]])
    """
    out = np.empty(codes.shape[0], dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(len(seeds) + 1))
    for k, seed in enumerate(seeds):  # one permutation per task (set-up, not a hot path)
        rows = order[starts[k]:starts[k + 1]]
        perm = np.random.default_rng(int(seed)).permutation(rows.size)
        out[rows[perm]] = np.arange(rows.size) % folds
    return out


def shared_design(x: np.ndarray, codes: np.ndarray, n_tasks: int) -> np.ndarray:
    """Shared plus task-specific features: ``[x, onehot(task), x ⊙ onehot(task)]``.

    Parameters
    ----------
    x : ndarray of shape (N, p)
    codes : ndarray of shape (N,)
        Task index 0..K-1 of each row.
    n_tasks : int
        K.

    Returns
    -------
    ndarray of shape (N, p + K + p·K)

    Examples
    --------
    >>> shared_design(np.ones((2, 1)), np.array([0, 1]), 2)
    array([[1., 1., 0., 1., 0.],
           [1., 0., 1., 0., 1.]])
    """
    n, p = x.shape
    cells = n * (p + n_tasks + p * n_tasks)
    if cells > MAX_DESIGN_CELLS:
        raise DataError(
            f"nuisance='shared' would build a {n} x {p + n_tasks + p * n_tasks} design "
            f"({cells:.2g} cells, limit {MAX_DESIGN_CELLS:.0e}); use nuisance='task', or fewer "
            "covariates or tasks.")
    onehot = np.zeros((n, n_tasks))
    onehot[np.arange(n), codes] = 1.0
    inter = (x[:, :, None] * onehot[:, None, :]).reshape(n, p * n_tasks)
    return np.hstack([x, onehot, inter])


def _fit_predict(model: Any, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                 proba: bool) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # learners' convergence chatter
        model.fit(x_train, y_train)
        if proba:
            return model.predict_proba(x_test)[:, 1]
        return model.predict(x_test)


def cross_fit(design: np.ndarray, y: np.ndarray, d: np.ndarray, fold: np.ndarray,
              estimand: str, learner: Any, seed: int, n_jobs: int = 1) -> dict[str, np.ndarray]:
    """Out-of-fold nuisance predictions from models fitted on all tasks' training folds.

    Parameters
    ----------
    design : ndarray of shape (N, q)
        Features, e.g. from :func:`shared_design`.
    y : ndarray of shape (N, n_outcomes)
    d : ndarray of shape (N,)
        Treatment (0/1 for ``ate``/``atte``).
    fold : ndarray of shape (N,)
        Fold of each row (:func:`fold_ids`).
    estimand : {"ate", "atte", "plr"}
    learner : str, estimator or mapping
        As in :func:`bayesfuse.stage1.learners.resolve_learner`.
    seed : int
        ``random_state`` of every learner.
    n_jobs : int, default 1
        Fits run in parallel by joblib (-1 = all cores). Results do not depend on it.

    Returns
    -------
    dict
        ``"ml_m"``: (N,) propensity (unclipped) or treatment regression; ``"ml_g0"``,
        ``"ml_g1"`` (``ate``/``atte``) or ``"ml_l"`` (``plr``): (N, n_outcomes). Row i's
        predictions come from models fitted on the rows with ``fold != fold[i]`` only.

    Examples
    --------
    >>> preds = cross_fit(design, y, d, fold, "ate", "lasso", seed=0)  # doctest: +SKIP
    """
    from joblib import Parallel, delayed

    binary = estimand in ("ate", "atte")
    jobs = []  # (role, outcome column, fold, train mask)
    for f in np.unique(fold):
        train = fold != f
        jobs.append(("ml_m", -1, f, train))
        for j in range(y.shape[1]):
            if binary:
                jobs.append(("ml_g0", j, f, train & (d == 0)))
                jobs.append(("ml_g1", j, f, train & (d == 1)))
            else:
                jobs.append(("ml_l", j, f, train))

    def one(role: str, j: int, f: int, train: np.ndarray) -> np.ndarray:
        kind = "classifier" if role == "ml_m" and binary else "regressor"
        target = d if role == "ml_m" else y[:, j]
        if role == "ml_m" and binary and np.unique(d[train]).size < 2:
            raise DataError(f"Fold {f}: the training rows of all tasks hold one treatment "
                            "arm only; use fewer folds.")
        # training rows in random order: a learner's own inner cross-validation (LassoCV's
        # unshuffled KFold) must not hold out whole tasks, as it would on task-sorted rows
        rows = np.random.default_rng([seed, f]).permutation(np.flatnonzero(train))
        return _fit_predict(resolve_learner(learner, kind, seed), design[rows], target[rows],
                            design[fold == f], role == "ml_m" and binary)

    n_jobs = min(n_jobs, len(jobs)) if n_jobs > 0 else n_jobs
    try:
        found = Parallel(n_jobs=n_jobs)(delayed(one)(*job) for job in jobs)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - a learner's failure becomes one clear line
        text = " ".join(str(exc).split()) or "no message"
        raise DataError(f"The shared nuisance fit failed: {type(exc).__name__}: "
                        f"{text[:300]}") from None
    n, n_out = y.shape
    preds = {"ml_m": np.empty(n)}
    for role in ("ml_g0", "ml_g1") if binary else ("ml_l",):
        preds[role] = np.empty((n, n_out))
    for (role, j, f, _), values in zip(jobs, found, strict=True):
        held = fold == f
        if role == "ml_m":
            preds[role][held] = values
        else:
            preds[role][held, j] = values
    return preds


def task_scores(y: np.ndarray, d: np.ndarray, codes: np.ndarray, n_tasks: int,
                preds: dict[str, np.ndarray], estimand: str,
                trimming_threshold: float) -> dict[str, np.ndarray]:
    """Per-task θ̂, standard errors and influence values from the orthogonal scores.

    Parameters
    ----------
    y : ndarray of shape (N, n_outcomes)
    d : ndarray of shape (N,)
    codes : ndarray of shape (N,)
        Task index 0..K-1 of each row; every task has at least one row.
    n_tasks : int
        K.
    preds : dict
        Out-of-fold predictions as returned by :func:`cross_fit`.
    estimand : {"ate", "atte", "plr"}
    trimming_threshold : float
        Propensities are clipped to [t, 1 − t] (``ate``/``atte``), as DoubleML does.

    Returns
    -------
    dict
        ``estimate``: (K, n_outcomes); ``se``: (K, n_outcomes); ``influence``:
        (N, n_outcomes), ψ / J of each row (J of its task); ``propensity``: (N,) clipped
        propensities (``ate``/``atte``) or None.

    Examples
    --------
    >>> out = task_scores(y, d, codes, 2, preds, "ate", 0.01)  # doctest: +SKIP
    >>> out["estimate"].shape  # doctest: +SKIP
    (2, 1)
    """
    counts = np.bincount(codes, minlength=n_tasks).astype(float)

    def task_sum(values: np.ndarray) -> np.ndarray:  # (N, q) -> (K, q)
        return np.stack([np.bincount(codes, weights=col, minlength=n_tasks)
                         for col in values.T], axis=1)

    d2 = d[:, None]
    propensity = None
    if estimand in ("ate", "atte"):
        m = np.clip(preds["ml_m"], trimming_threshold, 1 - trimming_threshold)
        propensity = m
        g0, g1, mm = preds["ml_g0"], preds["ml_g1"], m[:, None]
        ipw = d2 * (y - g1) / mm - (1 - d2) * (y - g0) / (1 - mm)
        if estimand == "ate":
            psi_b = g1 - g0 + ipw
            psi_a = -np.ones_like(psi_b)
        else:
            share = (np.bincount(codes, weights=d, minlength=n_tasks) / counts)[codes][:, None]
            psi_b = (d2 * (g1 - g0) + mm * ipw) / share
            psi_a = np.broadcast_to(-d2 / share, psi_b.shape)
    else:
        v = d2 - preds["ml_m"][:, None]
        psi_b = v * (y - preds["ml_l"])
        psi_a = np.broadcast_to(-v * v, psi_b.shape)
    sum_a = task_sum(psi_a)
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = -task_sum(psi_b) / sum_a
        psi = psi_a * theta[codes] + psi_b
        jac = sum_a / counts[:, None]
        variance = task_sum(psi**2) / counts[:, None] / (counts[:, None] * jac**2)
        influence = psi / jac[codes]
    return {"estimate": theta, "se": np.sqrt(variance), "influence": influence,
            "propensity": propensity}


# ---------------------------------------------------------------------- stage-1 entry
def fit_shared(payloads: list[dict[str, Any]], seed: int, n_jobs: int = 1,
               progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Stage-1 results of all tasks with shared nuisance learning.

    Parameters
    ----------
    payloads : list of dict
        One per task, from ``bayesfuse.stage1.dml._payloads`` (task rows, options, the
        task's seed).
    seed : int
        The run's seed: ``random_state`` of the shared learners.
    n_jobs : int, default 1
        Learner fits run in parallel by joblib. Results do not depend on it.
    progress : callable, optional
        ``progress(done, total)``, called once at the end with the number of tasks.

    Returns
    -------
    list of dict
        In task order, the same records as the per-task path: ``task``, ``n``, ``arms``
        (binary treatment) and ``estimate`` (p,) / ``covariance`` (p, p) (plus ``warning``),
        or ``excluded``. Tasks excluded by the guards do not enter the shared fit.

    Raises
    ------
    DataError
        A learner fails on the pooled rows, or the design would be too large.

    Examples
    --------
    >>> results = fit_shared(_payloads(...), seed=0)  # doctest: +SKIP
    """
    from bayesfuse.stage1.dml import _BINARY, EXTREME_SHARE, _guard_reasons, _joint_covariance

    results: list[dict[str, Any]] = []
    kept: list[int] = []
    for i, payload in enumerate(payloads):
        rows = payload["rows"]
        record: dict[str, Any] = {"task": payload["task"], "n": len(rows)}
        d = rows[payload["treatment"]].to_numpy(dtype=float)
        if payload["estimand"] in _BINARY:
            record["arms"] = [int(d.sum()), len(rows) - int(d.sum())]
        reasons = _guard_reasons(len(rows), d, payload)
        if reasons:
            record["excluded"] = "; ".join(reasons)
        else:
            kept.append(i)
        results.append(record)
    if not kept:
        return results

    first = payloads[kept[0]]
    estimand, outcomes = first["estimand"], first["outcomes"]
    frames = [payloads[i]["rows"] for i in kept]
    codes = np.repeat(np.arange(len(kept)), [len(f) for f in frames])
    x = np.vstack([f[first["covariates"]].to_numpy(dtype=float) for f in frames])
    y = np.vstack([f[outcomes].to_numpy(dtype=float) for f in frames])
    d = np.concatenate([f[first["treatment"]].to_numpy(dtype=float) for f in frames])
    fold = fold_ids(codes, np.array([payloads[i]["seed"] for i in kept]), first["folds"])
    design = shared_design(x, codes, len(kept))
    preds = cross_fit(design, y, d, fold, estimand, first["learner"], seed, n_jobs)
    scores = task_scores(y, d, codes, len(kept), preds, estimand,
                         first["trimming_threshold"])

    low, high = first["propensity_bounds"]
    for k, i in enumerate(kept):
        record = results[i]
        theta, se = scores["estimate"][k], scores["se"][k]
        if not (np.all(np.isfinite(theta)) and np.all(np.isfinite(se)) and np.all(se > 0)):
            record["excluded"] = f"the shared-nuisance score gave estimate {theta} with se {se}"
            continue
        if len(outcomes) == 1:
            covariance = se[:, None] ** 2
        else:
            covariance = _joint_covariance(se, scores["influence"][codes == k])
            if np.linalg.eigvalsh(covariance)[0] <= 1e-10 * covariance.diagonal().max():
                record["excluded"] = (f"the joint covariance of the {len(outcomes)} outcomes "
                                      f"is singular (n = {record['n']}); the outcomes are "
                                      "collinear")
                continue
        record["estimate"], record["covariance"] = theta, covariance
        if scores["propensity"] is not None:
            m = scores["propensity"][codes == k]
            share = float(np.mean((m <= low) | (m >= high)))
            if share > EXTREME_SHARE:
                record["warning"] = (
                    f"{share:.0%} of fitted propensities at or beyond [{low:g}, {high:g}] "
                    f"(more than {EXTREME_SHARE:.0%}): poor overlap, the estimate leans on "
                    "trimming")
    if progress is not None:
        progress(len(payloads), len(payloads))
    return results
