"""The ``blp`` estimand: the best linear predictor of the CATE on chosen effect modifiers.

Per task, the conditional average treatment effect τ(x) = E[Y(1) − Y(0) | X = x] is projected
on the basis b(z) = [1, z − c] of the effect modifiers z (a few of the covariates), centred at
c (Semenova & Chernozhukov, 2021, "Debiased machine learning of conditional average treatment
effects and other causal functions"):

    θₖ = argmin_β E[(τ(X) − b(Z)ᵀβ)²]      (p = 1 + number of modifiers).

It is estimated by OLS of the AIPW orthogonal signal

    ψᵢ = ĝ₁(Xᵢ) − ĝ₀(Xᵢ) + Dᵢ(Yᵢ − ĝ₁(Xᵢ))/m̂(Xᵢ) − (1 − Dᵢ)(Yᵢ − ĝ₀(Xᵢ))/(1 − m̂(Xᵢ))

(DoubleML's cross-fitted IRM ``psi_b``) on b(Zᵢ), with the heteroskedasticity-robust HC0
sandwich covariance Vₖ = (BᵀB)⁻¹ (Σᵢ eᵢ² bᵢbᵢᵀ) (BᵀB)⁻¹. This is what DoubleML's
``DoubleMLIRM.cate(basis)`` returns (its default ``cov_type="HC0"``), and for the basis [1]
it is DoubleML's ATE with its variance. Cross-fitting needs no correction: by Neyman
orthogonality the error of the learned nuisances enters θ̂ₖ only at second order, so the
sandwich that treats ψ as known is asymptotically valid.

Centring (the same c for every task, so that fused coefficients mean the same thing): the
``"intercept"`` is the best linear predictor of the CATE at z = c; the slopes do not depend on
c. Modifiers given as a list are centred at their mean over all rows passed (pooled across
tasks: the intercept is the predicted effect for a unit with the average modifiers of the
whole data set); a mapping ``{name: c}`` gives the centres — what a site summary needs, since
a site cannot see the pooled mean (sites agree on c beforehand).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from bayesfuse.errors import DataError

__all__ = ["INTERCEPT", "resolve_modifiers", "blp_params", "best_linear_predictor", "fit_blp"]

INTERCEPT = "intercept"


def resolve_modifiers(df: pd.DataFrame, modifiers: Sequence[str] | Mapping[str, Any] | None,
                      estimand: str, outcomes: Sequence[str],
                      covariates: Sequence[str]) -> dict[str, float] | None:
    """Validate the effect modifiers and return their centres.

    Parameters
    ----------
    df : DataFrame of shape (N, ...)
        All rows passed to stage 1 (the pooled mean is taken over them).
    modifiers : sequence of str or mapping str -> float, optional
        Modifier columns (centred at their pooled mean), or ``{column: centre}``.
    estimand : str
        ``"blp"`` needs modifiers; the other estimands refuse them.
    outcomes : sequence of str
        Outcome columns (``blp`` takes one).
    covariates : sequence of str
        The adjustment covariates; every modifier must be one of them.

    Returns
    -------
    dict or None
        ``{modifier: centre}`` in the order given, or None for the other estimands.

    Raises
    ------
    DataError
        ``blp`` without modifiers, modifiers with another estimand, several outcomes, a
        missing, repeated or non-covariate modifier, a modifier named ``"intercept"``, or a
        centre that is not a finite number.

    Examples
    --------
    >>> df = pd.DataFrame({"y": [0.0, 1.0], "d": [0, 1], "age": [30.0, 50.0]})
    >>> resolve_modifiers(df, ["age"], "blp", ["y"], ["age"])
    {'age': 40.0}
    >>> resolve_modifiers(df, {"age": 45}, "blp", ["y"], ["age"])
    {'age': 45.0}
    """
    if estimand != "blp":
        if modifiers is not None:
            raise DataError(f"modifiers= is used with estimand='blp' only (got estimand="
                            f"'{estimand}'); drop modifiers or use estimand='blp'.")
        return None
    if modifiers is None or isinstance(modifiers, str) or len(modifiers) == 0:
        hint = f" (modifiers=['{modifiers}'])" if isinstance(modifiers, str) and modifiers else ""
        raise DataError("estimand='blp' needs modifiers=[...]: the columns the CATE is "
                        f"projected on, e.g. modifiers=['age']{hint}.")
    if len(outcomes) != 1:
        raise DataError(f"estimand='blp' takes one outcome; got {list(outcomes)}. Run one "
                        "estimate per outcome.")
    names = [str(m) for m in modifiers]
    if len(set(names)) != len(names):
        raise DataError(f"Modifiers must be distinct; got {names}.")
    if INTERCEPT in names:
        raise DataError(f"A modifier cannot be named '{INTERCEPT}' (the name of the constant "
                        "term); rename the column.")
    missing = [m for m in names if m not in df.columns]
    if missing:
        raise DataError(f"Missing modifier column(s) {missing}; the table has "
                        f"{list(df.columns)}.")
    outside = [m for m in names if m not in covariates]
    if outside:
        raise DataError(f"Modifier(s) {outside} must also be covariates (the CATE is a function "
                        "of the covariates); add them to covariates.")
    if isinstance(modifiers, Mapping):
        centres = {}
        for name, value in modifiers.items():
            try:
                centre = float(value)
            except (TypeError, ValueError):
                centre = np.nan
            if not np.isfinite(centre):
                raise DataError(f"The centre of modifier '{name}' must be a finite number; got "
                                f"{value!r}.")
            centres[str(name)] = centre
        return centres
    means = df[names].astype(float).mean(axis=0)
    return {name: float(means[name]) for name in names}


def blp_params(centres: Mapping[str, float]) -> list[str]:
    """Parameter names of a ``blp`` θ: ``["intercept", *modifiers]``.

    Examples
    --------
    >>> blp_params({"age": 40.0, "score": 0.0})
    ['intercept', 'age', 'score']
    """
    return [INTERCEPT, *centres]


def best_linear_predictor(signal: np.ndarray, basis: np.ndarray,
                          ) -> tuple[np.ndarray, np.ndarray]:
    """OLS of an orthogonal signal on a basis, with the HC0 sandwich covariance.

    Parameters
    ----------
    signal : ndarray of shape (n,)
        The orthogonal signal ψᵢ (for the CATE: the AIPW pseudo-outcome).
    basis : ndarray of shape (n, d)
        The basis b(Zᵢ), full column rank.

    Returns
    -------
    coef : ndarray of shape (d,)
        β̂ = (BᵀB)⁻¹ Bᵀψ.
    covariance : ndarray of shape (d, d)
        (BᵀB)⁻¹ (Σᵢ eᵢ² bᵢbᵢᵀ) (BᵀB)⁻¹ with eᵢ = ψᵢ − bᵢᵀβ̂ (symmetrised).

    Examples
    --------
    >>> x = np.linspace(-1, 1, 5)
    >>> coef, cov = best_linear_predictor(2 + 3 * x + np.array([.1, -.1, 0, -.1, .1]),
    ...                                   np.column_stack([np.ones(5), x]))
    >>> np.round(coef, 6).tolist()
    [2.0, 3.0]
    """
    signal = np.asarray(signal, dtype=float)
    basis = np.asarray(basis, dtype=float)
    q, r = np.linalg.qr(basis)
    coef = np.linalg.solve(r, q.T @ signal)
    resid = signal - basis @ coef
    bread = np.linalg.inv(r)  # (BᵀB)⁻¹ = R⁻¹R⁻ᵀ
    scaled = (q * resid[:, None]).T @ (q * resid[:, None])  # Qᵀ diag(e²) Q
    covariance = bread @ scaled @ bread.T
    return coef, (covariance + covariance.T) / 2


def fit_blp(rows: pd.DataFrame, payload: dict[str, Any]) -> dict[str, Any]:
    """Stage-1 fitter of the ``blp`` estimand for one task.

    Parameters
    ----------
    rows : DataFrame of shape (n, ...)
        The task's rows (outcome, treatment, covariates).
    payload : dict
        The task's payload of :mod:`bayesfuse.stage1.dml`, with ``blp_center``
        (``{modifier: centre}``).

    Returns
    -------
    dict
        ``estimate`` (p,), ``covariance`` (p, p) on [intercept, modifiers...] and
        ``propensity`` (n,), the fitted (trimmed) propensities for the overlap guard.
    """
    from bayesfuse.stage1.dml import _fit_doubleml, _TaskFailure

    centres = payload["blp_center"]
    names = list(centres)
    z = rows[names].to_numpy(dtype=float) - np.array(list(centres.values()))
    flat = [name for name, spread in zip(names, np.ptp(z, axis=0), strict=True) if spread == 0]
    if flat:
        raise _TaskFailure(f"modifier(s) {flat} do not vary within the task: their CATE "
                           "slope cannot be estimated")
    basis = np.column_stack([np.ones(len(rows)), z])
    scaled = basis / np.linalg.norm(basis, axis=0)
    if np.linalg.cond(scaled) > 1e8:
        raise _TaskFailure(f"the modifiers {names} are collinear within the task")
    model = _fit_doubleml(rows, payload["outcomes"][0], {**payload, "estimand": "ate"})
    signal = np.asarray(model.psi_elements["psi_b"])[:, 0, 0]
    coef, covariance = best_linear_predictor(signal, basis)
    eig = np.linalg.eigvalsh(covariance)
    if not np.isfinite(coef).all() or not eig[0] > 1e-12 * max(eig[-1], 1e-300):
        raise _TaskFailure(f"the BLP covariance is not positive definite (smallest eigenvalue "
                           f"{eig[0]:.3g}); too few rows for {len(names)} modifier(s)?")
    return {"estimate": coef, "covariance": covariance,
            "propensity": np.asarray(model.predictions["ml_m"]).reshape(-1)}
