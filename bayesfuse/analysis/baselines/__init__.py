"""Frequentist comparators for the Bayesian fusion models.

Every function takes a :class:`~bayesfuse.data.estimates.TaskEstimates` (θ̂ₖ of shape (K, p) with
covariances Vₖ of shape (K, p, p)) and returns a tidy :class:`pandas.DataFrame`:

* :func:`no_pooling` -- each task on its own (normal intervals from Vₖ);
* :func:`fixed_effect` -- inverse-variance (multivariate GLS) common effect, Cochran's Q, I²;
* :func:`random_effects` -- DerSimonian–Laird or REML random effects per parameter, optional
  Knapp–Hartung intervals; ``.per_task`` holds the BLUPs of the task effects;
* :func:`meta_regression` -- mixed-effects meta-regression on the task covariates (REML or DL);
* :func:`late_fusion` -- an ARMUL-style adaptive aggregator (Duan & Wang 2023; Bhattacharya,
  Chen & Liang): tasks close to a centre are fused with it exactly, distant tasks move towards
  it by a bounded amount; with ``clusters > 1`` several centres.

The random-effects code follows metafor's ``rma.uni`` (Viechtbauer 2010): the same DL and REML
estimators (REML by Fisher scoring), the same I² definition, the same standard error of τ², the
same Knapp–Hartung adjustment and the same BLUP standard errors, so numbers can be checked
against metafor one to one.

The frames returned are :class:`BaselineFrame` objects: ordinary DataFrames that also carry
``.per_task`` (random effects and meta-regression) or ``.centers`` (late fusion), mirrored in
``df.attrs``.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from copy import deepcopy
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from bayesfuse.data.estimates import TaskEstimates
from bayesfuse.errors import ConvergenceWarning, EstimatesError, SpecError

__all__ = [
    "BaselineFrame",
    "no_pooling",
    "fixed_effect",
    "random_effects",
    "meta_regression",
    "late_fusion",
]

_METHODS = ("reml", "dl")


# ---------------------------------------------------------------------------- result frame
def _same_attr_value(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if isinstance(a, pd.DataFrame | pd.Series) or isinstance(b, pd.DataFrame | pd.Series):
        return type(a) is type(b) and a.equals(b)
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _same_attrs(a: dict[Hashable, Any], b: dict[Hashable, Any]) -> bool:
    return a.keys() == b.keys() and all(_same_attr_value(a[key], b[key]) for key in a)


class BaselineFrame(pd.DataFrame):
    """A DataFrame with the extra results of a baseline attached.

    Attributes
    ----------
    per_task : DataFrame or None
        Per-task estimates that go with a pooled table (the BLUPs of :func:`random_effects`
        and :func:`meta_regression`). Also in ``attrs["per_task"]``.
    centers : DataFrame or None
        The centres γ of :func:`late_fusion` (one row per cluster, one column per
        parameter). Also in ``attrs["centers"]``.

    Notes
    -----
    Concatenating several of these frames (``pd.concat([reml, dl])``) works; the attributes
    are kept only when all the inputs carry the same ones.
    """

    _metadata = ["per_task", "centers"]
    per_task: pd.DataFrame | None = None
    centers: pd.DataFrame | None = None

    @property
    def _constructor(self):
        return BaselineFrame

    def __finalize__(self, other, method: str | None = None, **kwargs) -> BaselineFrame:
        # pandas compares ``attrs`` of concatenated inputs with ``==``, which raises for the
        # DataFrames we keep there; compare them with ``.equals`` instead.
        objs = getattr(other, "input_objs", None)
        if objs is not None and not isinstance(other, pd.DataFrame | pd.Series):
            objs = list(objs)
            if objs and all(bool(obj.attrs) for obj in objs):
                first = objs[0].attrs
                if all(_same_attrs(obj.attrs, first) for obj in objs[1:]):
                    self.attrs = deepcopy(first)
            if not all(obj.flags.allows_duplicate_labels for obj in objs):
                self.flags.allows_duplicate_labels = False
            return self
        return super().__finalize__(other, method=method, **kwargs)


def _frame(columns: dict[str, Any], attrs: dict[str, Any] | None = None) -> BaselineFrame:
    frame = BaselineFrame(columns)
    if attrs:
        frame.attrs.update(attrs)
    return frame


# ---------------------------------------------------------------------------- validation
def _check_estimates(est: Any) -> TaskEstimates:
    if not isinstance(est, TaskEstimates):
        raise EstimatesError(
            f"Expected a TaskEstimates; got {type(est).__name__}. Build one with "
            "bf.TaskEstimates(tasks, estimates, covariances) or bf.read_estimates(path)."
        )
    return est


def _critical(ci_prob: float, df: float | None = None) -> float:
    """Two-sided critical value: normal, or Student t with ``df`` degrees of freedom."""
    try:
        prob = float(ci_prob)
    except (TypeError, ValueError):
        raise SpecError(f"ci_prob must be a number in (0, 1); got {ci_prob!r}.") from None
    if not 0.0 < prob < 1.0:
        raise SpecError(f"ci_prob must be in (0, 1), e.g. 0.95; got {ci_prob!r}.")
    upper = 0.5 + prob / 2.0
    return float(stats.norm.ppf(upper) if df is None else stats.t.ppf(upper, df))


def _check_method(method: str) -> str:
    name = str(method).lower()
    if name not in _METHODS:
        raise SpecError(f"method must be one of {list(_METHODS)}; got {method!r}.")
    return name


def _long_index(est: TaskEstimates) -> tuple[np.ndarray, np.ndarray]:
    """Task and param labels of the (task, param) rows, task-major, each of length K·p."""
    n_tasks, n_params = est.estimates.shape
    tasks = np.repeat(np.asarray(est.tasks, dtype=object), n_params)
    params = np.tile(np.asarray(est.params, dtype=object), n_tasks)
    return tasks, params


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
    """
    est = _check_estimates(est)
    crit = _critical(ci_prob)
    tasks, params = _long_index(est)
    theta = est.estimates.reshape(-1)
    se = est.se.reshape(-1)
    return _frame(
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
    """
    est = _check_estimates(est)
    crit = _critical(ci_prob)
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
    return _frame(
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
    |Δτ²| ≤ tol·median(vₖ).

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
    tasks, params = _long_index(est)
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
        τ² estimator: restricted maximum likelihood (Fisher scoring to |Δτ²| ≤ 1e-10·median vₖ,
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
    est = _check_estimates(est)
    method = _check_method(method)
    X = np.ones((est.n_tasks, 1))
    fit = _mixed_effects(est, X, method, bool(knapp_hartung))
    dof = fit["dof"]
    crit = _critical(ci_prob, dof if knapp_hartung else None)
    mu = fit["beta"][:, 0]
    se = np.sqrt(fit["vb"][:, 0, 0])
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = mu / se
    pvalue = 2.0 * (stats.t.sf(np.abs(stat), dof) if knapp_hartung else stats.norm.sf(np.abs(stat)))
    per_task = _blups(est, X, fit, crit)
    n_params = est.n_params
    frame = _frame(
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
    """
    est = _check_estimates(est)
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
    crit = _critical(ci_prob, dof if knapp_hartung else None)
    n_params, n_coef = est.n_params, X.shape[1]
    beta = fit["beta"].reshape(-1)
    se = np.sqrt(np.diagonal(fit["vb"], axis1=1, axis2=2)).reshape(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = beta / se
    pvalue = 2.0 * (stats.t.sf(np.abs(stat), dof) if knapp_hartung else stats.norm.sf(np.abs(stat)))

    def per_param(values: np.ndarray) -> np.ndarray:
        return np.repeat(values, n_coef)

    per_task = _blups(est, X, fit, crit)
    frame = _frame(
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


# ---------------------------------------------------------------------------- late fusion
class _Problem:
    """The late-fusion problem in standardized coordinates, with per-task eigen-decompositions.

    y : (K, p) standardized θ̂ₖ;  e, Q : eigenvalues (K, p) and eigenvectors (K, p, p) of the
    standardized Vₖ;  lam : (K,) penalty weights λₖ.
    """

    def __init__(self, y: np.ndarray, cov: np.ndarray, lam: np.ndarray) -> None:
        self.y = y
        self.cov = cov
        self.e, self.Q = np.linalg.eigh(cov)
        self.lam = lam
        self.lam_e = lam[:, None] * self.e

    def with_y(self, y: np.ndarray) -> _Problem:
        clone = object.__new__(_Problem)
        clone.__dict__.update(self.__dict__)
        clone.y = y
        return clone

    def prox(self, gamma: np.ndarray, rows: np.ndarray | slice = slice(None)) -> dict[str, Any]:
        """Minimise over θₖ for fixed centres γ (shape (p,) or (n, p)) for the tasks ``rows``.

        In the eigenbasis of Vₖ, with c = Qₖᵀ(θ̂ₖ − γ): θₖ − γ = Qₖ (r c/(r + λₖe)), where the
        radius r = ‖θₖ − γ‖ is 0 (fused) if ‖Vₖ⁻¹(θ̂ₖ − γ)‖ = ‖c/e‖ ≤ λₖ and otherwise solves
        the secular equation Σᵢ cᵢ²/(r + λₖeᵢ)² = 1.
        """
        y, e, Q, lam, lam_e = self.y[rows], self.e[rows], self.Q[rows], self.lam[rows], \
            self.lam_e[rows]
        b = y - gamma
        c = np.einsum("kji,kj->ki", Q, b)
        fused = np.sum((c / e) ** 2, axis=1) <= lam**2
        r = np.zeros(len(b))
        free = ~fused
        if free.any():
            if b.shape[1] == 1:
                r[free] = np.abs(c[free, 0]) - lam_e[free, 0]
            else:
                r[free] = _secular(c[free], lam_e[free], np.linalg.norm(b[free], axis=1))
            r = np.maximum(r, 0.0)
        denom = r[:, None] + lam_e
        value = 0.5 * np.sum(c**2 * lam[:, None] * lam_e / denom**2, axis=1) + lam * r
        theta = np.where(
            fused[:, None], gamma, gamma + np.einsum("kij,kj->ki", Q, r[:, None] * c / denom)
        )
        return {"c": c, "r": r, "denom": denom, "fused": fused, "value": value, "theta": theta,
                "lam": lam, "Q": Q}

    def center(
        self, rows: np.ndarray, gamma: np.ndarray, tol: float, max_iter: int
    ) -> tuple[np.ndarray, bool]:
        """Minimise G(γ) = Σ_{k ∈ rows} min_θₖ Fₖ(θₖ, γ): a smooth convex function of γ.

        Newton steps (exact Hessian of the Moreau-type envelope) when the Hessian is
        invertible, otherwise the iteratively reweighted step γ ← (Σ Mₖ)⁻¹ Σ Mₖ θ̂ₖ with
        Mₖ = (Vₖ + (rₖ/λₖ)I)⁻¹ (a preconditioned gradient step); both with Armijo
        backtracking, so G decreases monotonically.
        """
        n_params = self.y.shape[1]
        if n_params == 1:
            return self._center_scalar(rows), True
        gamma = np.asarray(gamma, dtype=float).copy()
        state = self.prox(gamma, rows)
        objective = state["value"].sum()
        for _ in range(max_iter):
            c, r, denom, lam, Q = state["c"], state["r"], state["denom"], state["lam"], state["Q"]
            a = lam[:, None] / denom  # (n, p): weights in the eigenbasis
            grad = -np.einsum("kij,kj->i", Q, a * c)
            irls = np.einsum("kij,kj,klj->il", Q, a, Q)
            free = r > 0
            hess = irls.copy()
            if free.any():
                w = c[free] / denom[free] ** 2
                t = np.sum(c[free] ** 2 / denom[free] ** 3, axis=1)
                qw = np.einsum("kij,kj->ki", Q[free], w)
                hess -= np.einsum("k,ki,kj->ij", lam[free] / t, qw, qw)
            directions = []
            eig = np.linalg.eigvalsh(0.5 * (hess + hess.T))
            if eig[0] > 1e-10 * max(eig[-1], np.finfo(float).tiny):
                directions.append(np.linalg.solve(hess, -grad))
            directions.append(np.linalg.solve(irls, -grad))
            moved = None
            for direction in directions:
                slope = float(grad @ direction)
                step = 1.0
                while step > 1e-12:
                    trial_state = self.prox(gamma + step * direction, rows)
                    value = trial_state["value"].sum()
                    if value <= objective + 1e-4 * step * slope:
                        moved = step * direction
                        break
                    step *= 0.5
                if moved is not None:
                    break
            if moved is None:  # no descent possible at machine precision
                return gamma, True
            gamma = gamma + moved
            state, objective = trial_state, value
            if np.max(np.abs(moved)) <= tol * max(1.0, float(np.max(np.abs(gamma)))):
                return gamma, True
        return gamma, False

    def _center_scalar(self, rows: np.ndarray) -> np.ndarray:
        """Exact minimiser of G for p = 1 (a Huber-type location problem).

        G'(γ) = −Σₖ clip((θ̂ₖ − γ)/vₖ, −λₖ, λₖ) is increasing and piecewise linear with
        breakpoints θ̂ₖ ± λₖvₖ: bisect over the sorted breakpoints for the sign change, then
        solve the linear piece. (Iterative schemes crawl here when few tasks are fused.)
        """
        y = self.y[rows, 0]
        v = self.e[rows, 0]
        lam = self.lam[rows]
        reach = lam * v
        points = np.sort(np.concatenate([y - reach, y + reach]))

        def pull(gamma: float) -> float:  # −G'(γ), decreasing in γ
            return float(np.sum(np.clip((y - gamma) / v, -lam, lam)))

        lo, hi = 0, len(points) - 1  # pull(points[lo]) ≥ 0 ≥ pull(points[hi])
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if pull(points[mid]) >= 0.0:
                lo = mid
            else:
                hi = mid
        left, right = points[lo], points[hi]
        value = pull(left)
        inside = np.abs(y - 0.5 * (left + right)) < reach  # fused on this piece
        slope = float(np.sum(1.0 / v[inside]))
        gamma = left + value / slope if slope > 0 else left
        return np.array([min(max(gamma, left), right)])


def _secular(c: np.ndarray, lam_e: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Root r ∈ (0, upper) of Σᵢ cᵢ²/(r + λeᵢ)² = 1, row-wise (rows with ‖c/(λe)‖ > 1).

    Newton on φ(r) = 1/‖c/(r + λe)‖ − 1, which is increasing and concave in r (Moré &
    Sorensen 1983), so Newton iterates started left of the root increase monotonically to
    it. The start max(0, ‖c‖ − λ·max eᵢ) is such a lower bound (exact when Vₖ ∝ I).
    """
    c2 = c**2
    r = np.minimum(np.maximum(0.0, np.sqrt(c2.sum(axis=1)) - lam_e.max(axis=1)), upper)
    for _ in range(100):
        denom = r[:, None] + lam_e
        terms = c2 / denom**2
        norm2 = terms.sum(axis=1)
        norm = np.sqrt(norm2)
        slope = (terms / denom).sum(axis=1) / (norm2 * norm)
        new = np.clip(r - (1.0 / norm - 1.0) / slope, r, upper)
        done = np.all(new - r <= 4 * np.finfo(float).eps * np.maximum(new, 1.0))
        r = new
        if done:
            break
    return r


def _initial_centers(y: np.ndarray, m: int, n_random: int, rng: np.random.Generator) -> list:
    """Deterministic starts (quantile splits along each coordinate and the first principal
    axis, farthest-point) followed by ``n_random`` k-means++ starts."""
    n_tasks, n_params = y.shape
    starts: list[np.ndarray] = []
    centred = y - np.median(y, axis=0)
    axes = [np.eye(n_params)[j] for j in range(n_params)]
    if n_params > 1:
        axes.insert(0, np.linalg.svd(centred, full_matrices=False)[2][0])
    for axis in axes:
        order = np.argsort(centred @ axis, kind="stable")
        groups = np.array_split(order, m)
        starts.append(np.stack([np.median(y[g], axis=0) for g in groups]))
    # farthest point from the coordinate-wise median
    chosen = [int(np.argmin(np.sum(centred**2, axis=1)))]
    dist = np.sum((y - y[chosen[0]]) ** 2, axis=1)
    for _ in range(m - 1):
        chosen.append(int(np.argmax(dist)))
        dist = np.minimum(dist, np.sum((y - y[chosen[-1]]) ** 2, axis=1))
    starts.append(y[chosen].copy())
    for _ in range(n_random):  # k-means++
        chosen = [int(rng.integers(n_tasks))]
        dist = np.sum((y - y[chosen[0]]) ** 2, axis=1)
        for _ in range(m - 1):
            total = dist.sum()
            pick = int(rng.choice(n_tasks, p=dist / total)) if total > 0 else int(
                rng.integers(n_tasks))
            chosen.append(pick)
            dist = np.minimum(dist, np.sum((y - y[pick]) ** 2, axis=1))
        starts.append(y[chosen].copy())
    return starts


def _fit_clusters(
    problem: _Problem, m: int, starts: list, tol: float, max_iter: int
) -> dict[str, Any]:
    """k-means-style alternation between assignments and centres, best of several starts."""
    n_tasks = problem.y.shape[0]
    best: dict[str, Any] | None = None
    all_rows = np.arange(n_tasks)
    converged_all = True
    for start in starts:
        centers = np.array(start, dtype=float)
        values = np.stack([problem.prox(g)["value"] for g in centers], axis=1)
        assign = np.argmin(values, axis=1)
        for _ in range(200):
            for cluster in range(m):  # re-seed empty clusters at the worst-fitted task
                if not np.any(assign == cluster):
                    counts = np.bincount(assign, minlength=m)
                    current = values[all_rows, assign]
                    current = np.where(counts[assign] > 1, current, -np.inf)
                    worst = int(np.argmax(current))
                    assign[worst] = cluster
                    centers[cluster] = problem.y[worst]
            for cluster in range(m):
                rows = np.flatnonzero(assign == cluster)
                centers[cluster], ok = problem.center(rows, centers[cluster], tol, max_iter)
                converged_all &= ok
            values = np.stack([problem.prox(g)["value"] for g in centers], axis=1)
            current = values[all_rows, assign]
            new_assign = np.where(values.min(axis=1) < current - 1e-12 * (1.0 + current),
                                  np.argmin(values, axis=1), assign)
            if np.array_equal(new_assign, assign):
                break
            assign = new_assign
        objective = float(values[all_rows, assign].sum())
        if best is None or objective < best["objective"] - 1e-10 * (1.0 + abs(objective)):
            best = {"centers": centers.copy(), "assign": assign.copy(), "objective": objective}
    assert best is not None
    # relabel clusters by first appearance so that labels are deterministic
    order = list(dict.fromkeys(best["assign"].tolist()))
    order += [c for c in range(m) if c not in order]
    relabel = np.empty(m, dtype=int)
    relabel[order] = np.arange(m)
    best["assign"] = relabel[best["assign"]]
    best["centers"] = best["centers"][order]
    state = problem.prox(best["centers"][best["assign"]])
    best["theta"] = state["theta"]
    best["fused"] = state["fused"]
    best["converged"] = converged_all
    return best


def late_fusion(
    est: TaskEstimates,
    clusters: int = 1,
    C: float | None = None,
    *,
    fuse_prob: float = 0.9,
    standardize: bool = True,
    n_init: int = 8,
    n_boot: int = 0,
    ci_prob: float = 0.95,
    seed: int = 0,
    tol: float = 1e-10,
    max_iter: int = 1000,
) -> BaselineFrame:
    """ARMUL-style adaptive late fusion: fuse a task with its centre unless the data disagree.

    Solves (Duan & Wang 2023, "Adaptive and robust multi-task learning"; Bhattacharya, Chen &
    Liang, late-fusion multi-task learning, on the stage-1 summaries)

        minimise over θ₁..θ_K, γ₁..γ_m, labels zₖ:
            Σₖ ½(θₖ − θ̂ₖ)ᵀVₖ⁻¹(θₖ − θ̂ₖ) + λₖ‖S⁻¹(θₖ − γ_{zₖ})‖₂

    where S = diag(s₁..s_p) puts the parameters on a common scale (sⱼ = median over tasks of
    the standard errors of parameter j; S = I with ``standardize=False``) and

        λₖ = C·√p · (tr(Ṽₖ)/p)^(-1/2),    Ṽₖ = S⁻¹VₖS⁻¹.

    **Why this λₖ.** ARMUL penalises the averaged loss of task k with C·√(p/nₖ); with the
    summed log-likelihood of θ̂ₖ ~ N(θₖ, Vₖ) and Vₖ ≈ Σ/nₖ this is a penalty weight
    proportional to √nₖ ∝ (tr Vₖ/p)^(-1/2), which is what is used, so nₖ (often not shared)
    is not needed. The objective is then invariant to the units of each parameter (rescaling
    θⱼ and Vₖ consistently rescales the solution) and to translations.

    **Choosing C from summaries alone.** The subgradient condition for θₖ says θₖ = γ exactly
    iff ‖Ṽₖ⁻¹(θ̂ₖ − γ)‖ ≤ λₖ (standardized coordinates). When Ṽₖ = σₖ²I this reads
    ‖θ̂ₖ − γ‖/σₖ ≤ C√p, i.e. a task is fused iff its standardized distance to the centre is at
    most C√p. The default C = √(χ²_{p, fuse_prob}/p) therefore fuses a task whose true θₖ
    equals the centre with probability ≈ ``fuse_prob`` (0.9), ignoring the estimation of γ:
    for p = 1, C = 1.645 and task k is fused iff |θ̂ₖ − γ| ≤ 1.645·seₖ. For non-spherical
    Vₖ this calibration is approximate. A task that is not fused moves towards its centre by
    exactly Vₖ·(λₖ S⁻¹uₖ) (uₖ the unit direction), so by at most λₖ‖Vₖ S⁻¹‖ -- for p = 1,
    exactly C·seₖ: the aggregation is robust to outlying tasks.

    **Algorithm.** For fixed γ each θₖ has a closed form (p = 1: soft-thresholding towards
    γ; p > 1: θₖ − γ = (I + (λₖ/r)Ṽₖ)⁻¹(θ̂ₖ − γ) with the radius r from a 1-D secular
    equation, solved by monotone Newton). Minimising θ out leaves a smooth convex
    (Huber-like) function of γ. For p = 1 its minimiser is found exactly (its derivative is
    piecewise linear); for p > 1 by damped Newton / iteratively reweighted steps (whose fixed
    point is the GLS γ = (Σ Mₖ)⁻¹ Σ Mₖ θ̂ₖ with Mₖ = (Ṽₖ + (rₖ/λₖ)I)⁻¹, a random-effects-like
    weighting) to |Δγ| ≤ ``tol``. This avoids the stall of naive alternation between θ and
    γ, where the fused tasks (θₖ = γ) pin γ where it is.
    With ``clusters = m > 1`` tasks are assigned to the centre that minimises their
    profiled objective and centres are refitted, k-means style, from several starts
    (quantile splits along each coordinate and the first principal axis, farthest-point,
    plus ``n_init`` seeded k-means++ starts); the best objective is kept. Empty clusters are
    re-seeded at the worst-fitted task. For m = 1 the problem is convex and the solution θ is
    unique (γ may not be, e.g. when no task is fused).

    Parameters
    ----------
    est : TaskEstimates
        K tasks, p parameters, covariances Vₖ (the full Vₖ is used).
    clusters : int, default 1
        Number of centres m (1 ≤ m ≤ K).
    C : float, optional
        Penalty constant (> 0). Default √(χ²_{p, fuse_prob}/p). Larger C fuses more
        (C → ∞: the fixed-effect estimate within each cluster); smaller C fuses less
        (C → 0: no pooling).
    fuse_prob : float, default 0.9
        Sets the default C (ignored when C is given).
    standardize : bool, default True
        Put the parameters on a common scale S before applying the Euclidean penalty.
    n_init : int, default 8
        Number of random (seeded) k-means++ starts added to the deterministic ones when
        ``clusters > 1``.
    n_boot : int, default 0
        Standard errors are **not available** analytically for this estimator (it is
        non-smooth: tasks are fused with probability > 0). With ``n_boot > 0`` a parametric
        bootstrap is run: θ̂ₖ* ~ N(θ̂ₖ, Vₖ), refit with the same λₖ (starting from the fitted
        centres and the deterministic starts), and ``se`` is the standard deviation of θₖ*
        over replicates; ``ci_low, ci_high`` are estimate ± z·se. These
        ignore the shrinkage bias and have no coverage guarantee.
    ci_prob : float, default 0.95
        Coverage of the bootstrap intervals.
    seed : int, default 0
        Seed of the random starts and of the bootstrap.
    tol : float, default 1e-10
        Convergence tolerance on the centres (relative, standardized units; p > 1).
    max_iter : int, default 1000
        Iteration limit of each centre update (p > 1).

    Returns
    -------
    BaselineFrame
        K·p rows (task-major), columns ``task, param, estimate`` (the fused θₖⱼ), ``center``
        (γ of the task's cluster), ``cluster`` (int, 0..m−1, numbered by first appearance),
        ``fused`` (bool: θₖ equals its centre exactly), and with ``n_boot > 0`` also ``se,
        ci_low, ci_high``.
        ``result.centers`` (also ``attrs["centers"]``): DataFrame of the centres, one row per
        cluster, one column per parameter. ``attrs`` also holds ``C``, ``penalty`` (λₖ per
        task, standardized scale), ``scale`` (sⱼ per parameter) and ``objective``.

    Examples
    --------
    >>> est = TaskEstimates(list("abcde"), [0.0, 0.1, -0.1, 0.05, 3.0], [0.01] * 5)
    >>> fit = late_fusion(est)
    >>> fit["fused"].tolist()
    [True, True, True, True, False]
    """
    est = _check_estimates(est)
    n_tasks, n_params = est.estimates.shape
    if isinstance(clusters, bool) or not isinstance(clusters, int | np.integer):
        raise SpecError(f"clusters must be a whole number; got {clusters!r}.")
    m = int(clusters)
    if not 1 <= m <= n_tasks:
        raise SpecError(f"clusters must be between 1 and the number of tasks ({n_tasks}); got {m}.")
    if C is None:
        if not 0.0 < float(fuse_prob) < 1.0:
            raise SpecError(f"fuse_prob must be in (0, 1); got {fuse_prob!r}.")
        C = float(np.sqrt(stats.chi2.ppf(float(fuse_prob), n_params) / n_params))
    try:
        C = float(C)
    except (TypeError, ValueError):
        raise SpecError(f"C must be a positive number; got {C!r}.") from None
    if not (np.isfinite(C) and C > 0):
        raise SpecError(f"C must be a positive finite number; got {C!r}.")
    n_boot = int(n_boot)
    if n_boot < 0 or n_boot == 1:
        raise SpecError(f"n_boot must be 0 (no bootstrap) or at least 2; got {n_boot}.")
    crit = _critical(ci_prob) if n_boot else None

    cov = est.covariances
    scale = (
        np.sqrt(np.median(np.diagonal(cov, axis1=1, axis2=2), axis=0))
        if standardize
        else np.ones(n_params)
    )
    y = est.estimates / scale
    cov_std = cov / np.outer(scale, scale)
    sigma = np.sqrt(np.trace(cov_std, axis1=1, axis2=2) / n_params)
    lam = C * np.sqrt(n_params) / sigma
    problem = _Problem(y, cov_std, lam)
    rng = np.random.default_rng(seed)

    def solve(prob: _Problem, warm: np.ndarray | None = None) -> dict[str, Any]:
        if m == 1:
            start = np.median(prob.y, axis=0) if warm is None else warm[0]
            center, ok = prob.center(np.arange(n_tasks), start, tol, max_iter)
            state = prob.prox(center)
            return {"centers": center[None, :], "assign": np.zeros(n_tasks, dtype=int),
                    "objective": float(state["value"].sum()), "theta": state["theta"],
                    "fused": state["fused"], "converged": ok}
        if warm is None:
            starts = _initial_centers(prob.y, m, int(n_init), rng)
        else:  # bootstrap refits: the fitted centres plus the deterministic starts
            starts = [warm, *_initial_centers(prob.y, m, 0, rng)]
        return _fit_clusters(prob, m, starts, tol, max_iter)

    fit = solve(problem)
    if not fit["converged"]:
        warnings.warn(
            f"late_fusion: a centre update did not converge in {max_iter} iterations.",
            ConvergenceWarning,
            stacklevel=2,
        )
    theta = fit["theta"] * scale
    centers = fit["centers"] * scale
    assign = fit["assign"]
    tasks, params = _long_index(est)
    columns: dict[str, Any] = {
        "task": tasks,
        "param": params,
        "estimate": theta.reshape(-1),
        "center": centers[assign].reshape(-1),
        "cluster": np.repeat(assign, n_params),
        "fused": np.repeat(fit["fused"], n_params),
    }
    if n_boot:
        chol = np.linalg.cholesky(cov_std)
        draws = np.empty((n_boot, n_tasks, n_params))
        for b in range(n_boot):
            noise = np.einsum("kij,kj->ki", chol, rng.standard_normal((n_tasks, n_params)))
            draws[b] = solve(problem.with_y(y + noise), fit["centers"])["theta"] * scale
        se = draws.std(axis=0, ddof=1).reshape(-1)
        columns["se"] = se
        columns["ci_low"] = columns["estimate"] - crit * se
        columns["ci_high"] = columns["estimate"] + crit * se
    centers_frame = pd.DataFrame(
        centers, index=pd.RangeIndex(m, name="cluster"), columns=list(est.params)
    )
    frame = _frame(
        columns,
        {
            "baseline": "late_fusion",
            "C": C,
            "clusters": m,
            "penalty": lam.tolist(),
            "scale": scale.tolist(),
            "objective": fit["objective"],
            "n_boot": n_boot,
            "centers": centers_frame,
        },
    )
    frame.centers = centers_frame
    return frame
