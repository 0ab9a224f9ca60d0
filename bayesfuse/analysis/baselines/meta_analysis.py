"""Frequentist meta-analysis of the task estimates: the comparators the fusion models are
checked against.

Every function takes a :class:`~bayesfuse.data.estimates.TaskEstimates` (θ̂ₖ of shape (K, p)
with covariances Vₖ of shape (K, p, p)) and returns a :class:`~.frame.BaselineFrame`:

* :func:`no_pooling` -- each task on its own (normal intervals from Vₖ);
* :func:`fixed_effect` -- inverse-variance (multivariate GLS) common effect, Cochran's Q, I²;
* :func:`random_effects` -- DerSimonian–Laird or REML random effects per parameter, optional
  Knapp–Hartung intervals; ``.per_task`` holds the BLUPs of the task effects;
* :func:`meta_regression` -- mixed-effects meta-regression on the task covariates (REML or DL).

The random-effects code is a port of metafor's ``rma.uni`` (Viechtbauer 2010): the same DL
and REML estimators (REML by Fisher scoring), the same I² definition, the same standard error
of τ², the same Knapp–Hartung adjustment and the same BLUP standard errors, so numbers can be
checked against metafor one to one.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from bayesfuse._validation import check_choice
from bayesfuse.analysis.baselines.frame import (
    BaselineFrame,
    baseline_frame,
    check_estimates,
    critical_value,
    long_index,
)
from bayesfuse.data.estimates import TaskEstimates
from bayesfuse.errors import ConvergenceWarning, EstimatesError

__all__ = ["no_pooling", "fixed_effect", "random_effects", "meta_regression"]

#: estimators of the between-task variance τ²
METHODS = ("reml", "dl")


def _check_method(method: str) -> str:
    """``method`` in lower case if it is one of :data:`METHODS` (any case), else OptionError."""
    return check_choice(method.lower() if isinstance(method, str) else method, "method",
                        METHODS)


# ---------------------------------------------------------------------------- no pooling
def no_pooling(est: TaskEstimates, ci_prob: float = 0.95) -> BaselineFrame:
    """Each task on its own: θ̂ₖ with normal intervals θ̂ₖⱼ ± z·seₖⱼ.

    Parameters
    ----------
    est : TaskEstimates
        K tasks, p parameters.
    ci_prob : float, default 0.95
        Coverage of the intervals.

    Returns
    -------
    BaselineFrame
        K·p rows (task-major), columns ``task, param, estimate, se, ci_low, ci_high``.

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> table = bf.baselines.no_pooling(est)          # 8 rows: one per (task, param)
    >>> table[["task", "estimate", "ci_low", "ci_high"]]   # doctest: +SKIP
    """
    est = check_estimates(est)
    crit = critical_value(ci_prob)
    tasks, params = long_index(est)
    theta = est.estimates.reshape(-1)
    se = est.se.reshape(-1)
    return baseline_frame(
        {
            "task": tasks,
            "param": params,
            "estimate": theta,
            "se": se,
            "ci_low": theta - crit * se,
            "ci_high": theta + crit * se,
        },
        {"baseline": "no_pooling", "ci_prob": float(ci_prob)},
    )


# ---------------------------------------------------------------------------- fixed effect
def _cochran_q(y: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cochran's Q per column of ``y`` (K, p) around the inverse-variance mean; and that mean."""
    w = 1.0 / v
    mean = (w * y).sum(axis=0) / w.sum(axis=0)
    return (w * (y - mean) ** 2).sum(axis=0), mean


def _i2_from_q(q: np.ndarray, df: int) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(q > 0, np.maximum(0.0, (q - df) / q), 0.0)


def fixed_effect(est: TaskEstimates, ci_prob: float = 0.95) -> BaselineFrame:
    """Inverse-variance common-effect estimate (multivariate GLS for p > 1).

    θ̂ = (Σₖ Vₖ⁻¹)⁻¹ Σₖ Vₖ⁻¹ θ̂ₖ with covariance (Σₖ Vₖ⁻¹)⁻¹, using the full Vₖ (so a
    parameter borrows from the others through the within-task correlations).

    Parameters
    ----------
    est : TaskEstimates
        K tasks, p parameters.
    ci_prob : float, default 0.95
        Coverage of the normal intervals.

    Returns
    -------
    BaselineFrame
        p rows, columns ``param, estimate, se, ci_low, ci_high, pvalue`` (two-sided z test of
        zero) and the heterogeneity of each parameter taken alone: ``q`` (Cochran's
        Q = Σₖ wₖ(θ̂ₖⱼ − θ̄ⱼ)², wₖ = 1/Vₖ,ⱼⱼ, around the univariate inverse-variance mean θ̄ⱼ),
        ``q_df`` (K − 1), ``q_pvalue`` and ``i2`` (max(0, (Q − df)/Q), a proportion in
        [0, 1], not a percentage).
        ``attrs`` holds ``cov`` (the p×p covariance of the estimate, nested lists) and the
        multivariate heterogeneity statistic ``q_total`` = Σₖ (θ̂ₖ − θ̂)ᵀVₖ⁻¹(θ̂ₖ − θ̂) with
        ``q_total_df`` = (K − 1)·p.

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> pooled = bf.baselines.fixed_effect(est)       # one row per parameter
    >>> pooled[["param", "estimate", "se"]]           # doctest: +SKIP
    """
    est = check_estimates(est)
    crit = critical_value(ci_prob)
    y = est.estimates
    cov = est.covariances
    n_tasks, n_params = y.shape
    precision = np.linalg.inv(cov)  # (K, p, p)
    info = precision.sum(axis=0)  # (p, p)
    score = np.einsum("kij,kj->i", precision, y)
    pooled_cov = np.linalg.inv(info)
    pooled_cov = 0.5 * (pooled_cov + pooled_cov.T)
    theta = pooled_cov @ score
    se = np.sqrt(np.diag(pooled_cov))
    resid = y - theta
    q_total = float(np.einsum("ki,kij,kj->", resid, precision, resid))

    variances = np.diagonal(cov, axis1=1, axis2=2)
    q, _ = _cochran_q(y, variances)
    q_df = n_tasks - 1
    with np.errstate(divide="ignore"):
        pvalue = 2.0 * stats.norm.sf(np.abs(theta / se))
    return baseline_frame(
        {
            "param": list(est.params),
            "estimate": theta,
            "se": se,
            "ci_low": theta - crit * se,
            "ci_high": theta + crit * se,
            "pvalue": pvalue,
            "q": q,
            "q_df": np.full(n_params, q_df),
            "q_pvalue": stats.chi2.sf(q, q_df),
            "i2": _i2_from_q(q, q_df),
        },
        {
            "baseline": "fixed_effect",
            "ci_prob": float(ci_prob),
            "cov": pooled_cov.tolist(),
            "q_total": q_total,
            "q_total_df": q_df * n_params,
        },
    )


# ---------------------------------------------------------------------------- random effects
def _wls(y: np.ndarray, w: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares for each column: y[:, j] on X with weights w[:, j].

    Parameters
    ----------
    y, w : ndarray of shape (K, p)
    X : ndarray of shape (K, q)

    Returns
    -------
    beta : ndarray of shape (p, q)
    xtwx_inv : ndarray of shape (p, q, q)
        (XᵀWⱼX)⁻¹ per column.
    """
    xtwx = np.einsum("kj,ka,kb->jab", w, X, X)
    xtwy = np.einsum("kj,ka,kj->ja", w, X, y)
    xtwx_inv = np.linalg.inv(xtwx)
    return np.einsum("jab,jb->ja", xtwx_inv, xtwy), xtwx_inv


def _p_traces(w: np.ndarray, X: np.ndarray, xtwx_inv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """tr(P) and tr(PP) per column for P = W − WX(XᵀWX)⁻¹XᵀW, without forming K×K matrices."""
    xw2x = np.einsum("kj,ka,kb->jab", w**2, X, X)
    xw3x = np.einsum("kj,ka,kb->jab", w**3, X, X)
    a_b = np.einsum("jab,jbc->jac", xtwx_inv, xw2x)
    tr_p = w.sum(axis=0) - np.einsum("jaa->j", a_b)
    tr_pp = (
        (w**2).sum(axis=0)
        - 2.0 * np.einsum("jab,jba->j", xtwx_inv, xw3x)
        + np.einsum("jab,jba->j", a_b, a_b)
    )
    return tr_p, tr_pp


def _reml_loglik(y: np.ndarray, v: np.ndarray, X: np.ndarray, tau2: np.ndarray) -> np.ndarray:
    """Restricted log-likelihood per column (up to a constant)."""
    w = 1.0 / (v + tau2)
    beta, xtwx_inv = _wls(y, w, X)
    resid = y - X @ beta.T
    _, logdet_inv = np.linalg.slogdet(xtwx_inv)
    return -0.5 * (np.log(v + tau2).sum(axis=0) - logdet_inv + (w * resid**2).sum(axis=0))


def _tau2_dl(y: np.ndarray, v: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DerSimonian–Laird (method of moments) τ² per column and its standard error."""
    n_tasks, n_coef = X.shape
    w = 1.0 / v
    beta, xtwx_inv = _wls(y, w, X)
    rss = (w * (y - X @ beta.T) ** 2).sum(axis=0)
    tr_p, tr_pp = _p_traces(w, X, xtwx_inv)
    dof = n_tasks - n_coef
    tau2 = np.maximum(0.0, (rss - dof) / tr_p)
    # exact variance of the moment estimator under normality (as metafor reports it)
    se = np.sqrt((2.0 * dof + 4.0 * tau2 * tr_p + 2.0 * tau2**2 * tr_pp) / tr_p**2)
    return tau2, se


def _tau2_reml(
    y: np.ndarray, v: np.ndarray, X: np.ndarray, tol: float = 1e-10, max_iter: int = 1000
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """REML τ² per column by Fisher scoring (as metafor), τ² ≥ 0.

    Starts from the Hedges (HE) estimate, updates τ² ← τ² + (yᵀPPy − tr P)/tr(PP), projects
    onto τ² ≥ 0 and halves a step that lowers the restricted likelihood. Stops when every
    abs(Δτ²) ≤ tol·median(vₖ).

    Returns
    -------
    tau2, tau2_se : ndarray of shape (p,)
    n_iter : int
    converged : ndarray of bool, shape (p,)
    """
    n_tasks, n_coef = X.shape
    # Hedges / Hunter–Schmidt start (ordinary least squares residuals)
    ols_inv = np.linalg.inv(X.T @ X)
    resid_ols = y - X @ (ols_inv @ X.T @ y)
    tr_pv = v.sum(axis=0) - np.einsum("ab,kj,kb,ka->j", ols_inv, v, X, X)
    tau2 = np.maximum(0.0, ((resid_ols**2).sum(axis=0) - tr_pv) / (n_tasks - n_coef))
    scale = np.median(v, axis=0)
    converged = np.zeros(y.shape[1], dtype=bool)
    loglik = _reml_loglik(y, v, X, tau2)
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007  (n_iter is reported)
        w = 1.0 / (v + tau2)
        beta, xtwx_inv = _wls(y, w, X)
        py = w * (y - X @ beta.T)
        tr_p, tr_pp = _p_traces(w, X, xtwx_inv)
        step = ((py**2).sum(axis=0) - tr_p) / tr_pp
        step = np.where(converged, 0.0, step)
        new = np.maximum(0.0, tau2 + step)
        new_loglik = _reml_loglik(y, v, X, new)
        for _ in range(60):  # step halving: never accept a lower restricted likelihood
            worse = new_loglik < loglik - 1e-12 * np.abs(loglik)
            if not worse.any():
                break
            new = np.where(worse, 0.5 * (tau2 + new), new)
            new_loglik = _reml_loglik(y, v, X, new)
        change = np.abs(new - tau2)
        tau2, loglik = new, new_loglik
        converged |= change <= tol * scale
        if converged.all():
            break
    w = 1.0 / (v + tau2)
    _, xtwx_inv = _wls(y, w, X)
    _, tr_pp = _p_traces(w, X, xtwx_inv)
    return tau2, np.sqrt(2.0 / tr_pp), n_iter, converged


def _mixed_effects(
    est: TaskEstimates,
    X: np.ndarray,
    method: str,
    knapp_hartung: bool,
    tol: float = 1e-10,
    max_iter: int = 1000,
) -> dict[str, Any]:
    """Univariate mixed-effects fits θ̂ₖⱼ = xₖᵀβⱼ + uₖⱼ + εₖⱼ, one per parameter j."""
    y = est.estimates
    v = np.diagonal(est.covariances, axis1=1, axis2=2).copy()
    n_tasks, n_coef = X.shape
    dof = n_tasks - n_coef
    if dof < 1:
        raise EstimatesError(
            f"This model has {n_coef} coefficient(s) and needs more tasks than that; got "
            f"K = {n_tasks}."
        )
    n_iter = 0
    if method == "dl":
        tau2, tau2_se = _tau2_dl(y, v, X)
    else:
        tau2, tau2_se, n_iter, converged = _tau2_reml(y, v, X, tol=tol, max_iter=max_iter)
        if not converged.all():
            bad = [est.params[j] for j in np.flatnonzero(~converged)]
            warnings.warn(
                f"REML Fisher scoring did not converge in {max_iter} iterations for "
                f"parameter(s) {bad}; tau2 may be inaccurate.",
                ConvergenceWarning,
                stacklevel=3,
            )
    w = 1.0 / (v + tau2)
    beta, vb = _wls(y, w, X)
    resid = y - X @ beta.T
    s2 = np.ones(y.shape[1])
    if knapp_hartung:
        s2 = (w * resid**2).sum(axis=0) / dof
        vb = vb * s2[:, None, None]
    # heterogeneity, from the fixed-effects fit with the same design (metafor's QE and I²)
    w0 = 1.0 / v
    beta0, xtwx0_inv = _wls(y, w0, X)
    q = (w0 * (y - X @ beta0.T) ** 2).sum(axis=0)
    tr_p0, _ = _p_traces(w0, X, xtwx0_inv)
    typical_v = dof / tr_p0
    return {
        "y": y,
        "v": v,
        "beta": beta,  # (p, q)
        "vb": vb,  # (p, q, q)
        "tau2": tau2,
        "tau2_se": tau2_se,
        "s2": s2,
        "dof": dof,
        "q": q,
        "i2": tau2 / (typical_v + tau2),
        "h2": tau2 / typical_v + 1.0,
        "n_iter": n_iter,
    }


def _blups(est: TaskEstimates, X: np.ndarray, fit: dict[str, Any], crit: float) -> pd.DataFrame:
    """BLUPs of θₖⱼ = xₖᵀβⱼ + uₖⱼ with metafor's standard errors (``blup.rma.uni``)."""
    v, tau2 = fit["v"], fit["tau2"]
    fitted = X @ fit["beta"].T  # (K, p)
    var_fitted = np.einsum("ka,jab,kb->kj", X, fit["vb"], X)
    shrink = tau2 / (tau2 + v)  # λₖⱼ = τ²/(τ² + vₖⱼ)
    pred = fitted + shrink * (fit["y"] - fitted)
    se = np.sqrt(shrink * v + (1.0 - shrink) ** 2 * var_fitted)
    tasks, params = long_index(est)
    pred, se = pred.reshape(-1), se.reshape(-1)
    return pd.DataFrame(
        {
            "task": tasks,
            "param": params,
            "estimate": pred,
            "se": se,
            "ci_low": pred - crit * se,
            "ci_high": pred + crit * se,
            "shrinkage": (1.0 - shrink).reshape(-1),
        }
    )


def random_effects(
    est: TaskEstimates,
    method: str = "reml",
    ci_prob: float = 0.95,
    knapp_hartung: bool = False,
) -> BaselineFrame:
    """Random-effects meta-analysis of each parameter: θ̂ₖⱼ ~ N(μⱼ, vₖⱼ + τⱼ²).

    Each parameter is analysed on its own with vₖⱼ the diagonal of Vₖ (as metafor's
    ``rma.uni(yi, vi, method=...)``).

    Parameters
    ----------
    est : TaskEstimates
        K ≥ 2 tasks, p parameters.
    method : {"reml", "dl"}, default "reml"
        τ² estimator: restricted maximum likelihood (Fisher scoring to abs(Δτ²) ≤ 1e-10·median vₖ,
        τ² ≥ 0) or DerSimonian–Laird (method of moments, truncated at 0).
    ci_prob : float, default 0.95
        Coverage of the intervals (of μ and of the BLUPs).
    knapp_hartung : bool, default False
        Knapp–Hartung(-Sidik–Jonkman) intervals: the variance of μ̂ is multiplied by
        s² = Σₖ wₖ(θ̂ₖ − μ̂)²/(K − 1), wₖ = 1/(vₖ + τ̂²) (not truncated at 1, as metafor's
        ``test="knha"``), and intervals use Student t with K − 1 degrees of freedom.

    Returns
    -------
    BaselineFrame
        p rows, columns ``param, estimate`` (μ̂), ``se, ci_low, ci_high, pvalue, tau2,
        tau2_se`` (REML: from the expected information, √(2/tr PP); DL: the exact moment
        formula), ``i2`` (τ̂²/(τ̂² + s̃²) with s̃² the "typical" within-task variance, a
        proportion in [0, 1]), ``h2``, ``q`` (Cochran's Q), ``q_df``, ``q_pvalue``,
        ``method``, ``knapp_hartung``.
        ``result.per_task`` (also ``result.attrs["per_task"]``) holds the BLUPs: K·p rows with
        columns ``task, param, estimate`` (μ̂ + τ̂²/(τ̂² + vₖ)(θ̂ₖ − μ̂)), ``se``
        (√(λₖvₖ + (1 − λₖ)²se(μ̂)²), λₖ = τ̂²/(τ̂² + vₖ), metafor's ``blup``), ``ci_low,
        ci_high, shrinkage`` (1 − λₖ, the weight on μ̂).

    Examples
    --------
    >>> est = TaskEstimates(list("abcd"), [0.1, 0.5, -0.2, 0.9], [0.04, 0.09, 0.05, 0.1])
    >>> re = random_effects(est, method="dl")
    >>> re.per_task.shape
    (4, 7)
    """
    est = check_estimates(est)
    method = _check_method(method)
    X = np.ones((est.n_tasks, 1))
    fit = _mixed_effects(est, X, method, bool(knapp_hartung))
    dof = fit["dof"]
    crit = critical_value(ci_prob, dof if knapp_hartung else None)
    mu = fit["beta"][:, 0]
    se = np.sqrt(fit["vb"][:, 0, 0])
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = mu / se
    pvalue = 2.0 * (stats.t.sf(np.abs(stat), dof) if knapp_hartung else stats.norm.sf(np.abs(stat)))
    per_task = _blups(est, X, fit, crit)
    n_params = est.n_params
    frame = baseline_frame(
        {
            "param": list(est.params),
            "estimate": mu,
            "se": se,
            "ci_low": mu - crit * se,
            "ci_high": mu + crit * se,
            "pvalue": pvalue,
            "tau2": fit["tau2"],
            "tau2_se": fit["tau2_se"],
            "i2": fit["i2"],
            "h2": fit["h2"],
            "q": fit["q"],
            "q_df": np.full(n_params, dof),
            "q_pvalue": stats.chi2.sf(fit["q"], dof),
            "method": [method] * n_params,
            "knapp_hartung": [bool(knapp_hartung)] * n_params,
        },
        {
            "baseline": "random_effects",
            "method": method,
            "ci_prob": float(ci_prob),
            "knapp_hartung": bool(knapp_hartung),
            "n_iter": int(fit["n_iter"]),
            "per_task": per_task,
        },
    )
    frame.per_task = per_task
    return frame


def meta_regression(
    est: TaskEstimates,
    method: str = "reml",
    ci_prob: float = 0.95,
    covariates: Sequence[str] | None = None,
    knapp_hartung: bool = False,
) -> BaselineFrame:
    """Mixed-effects meta-regression of each parameter on the task covariates.

    θ̂ₖⱼ = zₖᵀβⱼ + uₖⱼ + εₖⱼ with zₖ = (1, covariates of task k), uₖⱼ ~ N(0, τⱼ²),
    εₖⱼ ~ N(0, vₖⱼ) (vₖⱼ the diagonal of Vₖ); one univariate fit per parameter, as metafor's
    ``rma.uni(yi, vi, mods = ~ z1 + z2, method=...)``.

    Parameters
    ----------
    est : TaskEstimates
        K tasks with task covariates (``est.covariates``); K must exceed the number of
        coefficients.
    method : {"reml", "dl"}, default "reml"
        Estimator of the residual heterogeneity τ².
    ci_prob : float, default 0.95
        Coverage of the intervals.
    covariates : sequence of str, optional
        Which covariate columns to use (default: all).
    knapp_hartung : bool, default False
        Knapp–Hartung adjustment with K − q degrees of freedom (q coefficients).

    Returns
    -------
    BaselineFrame
        p·q rows (param-major), columns ``param, term`` (``"intercept"`` then the covariate
        names), ``estimate, se, ci_low, ci_high, pvalue, tau2, tau2_se`` (residual
        heterogeneity of that parameter), ``i2`` (residual I², a proportion), ``r2``
        (proportion of τ² explained: max(0, (τ²₀ − τ²)/τ²₀) with τ²₀ from the model without
        covariates, as metafor), ``q_e`` (residual heterogeneity Q, df K − q), ``q_e_pvalue``,
        ``method``.
        ``result.per_task`` holds the BLUPs zₖᵀβ̂ + λₖ(θ̂ₖ − zₖᵀβ̂) as in
        :func:`random_effects`.

    Raises
    ------
    EstimatesError
        If the estimates have no covariates, a named covariate is unknown, or the design
        matrix is rank deficient (e.g. a constant covariate).

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> import bayesfuse as bf
    >>> frame = pd.DataFrame({"task": list("abcdef"), "estimate": [0.1, 0.3, 0.2, 0.6, 0.5, 0.8],
    ...                       "se": [0.1] * 6, "dose": [1.0, 2.0, 1.5, 3.0, 2.5, 4.0]})
    >>> est = bf.TaskEstimates.from_frame(frame, covariates=["dose"])
    >>> table = bf.baselines.meta_regression(est, method="reml")   # rows: coefficients
    >>> blups = table.per_task                                     # per-task predictions
    """
    est = check_estimates(est)
    method = _check_method(method)
    table = est.covariates
    if table is None or table.shape[1] == 0:
        raise EstimatesError(
            "meta_regression needs task covariates; these estimates have none. Pass "
            "covariates= to TaskEstimates (or covariate columns in the estimates file)."
        )
    if covariates is not None:
        names = [str(c) for c in ([covariates] if isinstance(covariates, str) else covariates)]
        unknown = [c for c in names if c not in table.columns]
        if unknown:
            raise EstimatesError(
                f"Unknown covariate(s) {unknown}; the estimates have {list(table.columns)}."
            )
        if not names:
            raise EstimatesError("covariates= is empty; name at least one covariate.")
        table = table[names]
    terms = ["intercept", *[str(c) for c in table.columns]]
    X = np.column_stack([np.ones(est.n_tasks), table.to_numpy(dtype=float)])
    if np.linalg.matrix_rank(X) < X.shape[1]:
        raise EstimatesError(
            f"The covariates {terms[1:]} (with an intercept) are collinear or constant across "
            "tasks; drop or combine some of them."
        )
    fit = _mixed_effects(est, X, method, bool(knapp_hartung))
    base = _mixed_effects(est, np.ones((est.n_tasks, 1)), method, False)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(base["tau2"] > 0, np.maximum(0.0, 1.0 - fit["tau2"] / base["tau2"]), 0.0)
    dof = fit["dof"]
    crit = critical_value(ci_prob, dof if knapp_hartung else None)
    n_params, n_coef = est.n_params, X.shape[1]
    beta = fit["beta"].reshape(-1)
    se = np.sqrt(np.diagonal(fit["vb"], axis1=1, axis2=2)).reshape(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = beta / se
    pvalue = 2.0 * (stats.t.sf(np.abs(stat), dof) if knapp_hartung else stats.norm.sf(np.abs(stat)))

    def per_param(values: np.ndarray) -> np.ndarray:
        return np.repeat(values, n_coef)

    per_task = _blups(est, X, fit, crit)
    frame = baseline_frame(
        {
            "param": np.repeat(np.asarray(est.params, dtype=object), n_coef),
            "term": np.tile(np.asarray(terms, dtype=object), n_params),
            "estimate": beta,
            "se": se,
            "ci_low": beta - crit * se,
            "ci_high": beta + crit * se,
            "pvalue": pvalue,
            "tau2": per_param(fit["tau2"]),
            "tau2_se": per_param(fit["tau2_se"]),
            "i2": per_param(fit["i2"]),
            "r2": per_param(r2),
            "q_e": per_param(fit["q"]),
            "q_e_pvalue": per_param(stats.chi2.sf(fit["q"], dof)),
            "method": [method] * (n_params * n_coef),
        },
        {
            "baseline": "meta_regression",
            "method": method,
            "ci_prob": float(ci_prob),
            "knapp_hartung": bool(knapp_hartung),
            "terms": terms,
            "per_task": per_task,
        },
    )
    frame.per_task = per_task
    return frame
