"""PyMC building blocks of the families' PyMC models, for ``backend="pymc"``.

:func:`bayesfuse.inference.pymc.run_pymc` passes this module to ``family.pymc_model(blocks,
priors, collapsed, data)`` (see :meth:`bayesfuse.families.base.Family.pymc_model`), so the
families use these pieces without importing the inference layer. They build what the
Gaussian families share: :func:`block_rv` (one prior per element), :func:`scale_corr_chol`
(chol of T = diag(τ) R diag(τ), R ~ LKJ), :func:`mvn_logp` (per-task Gaussian log density)
and :func:`gaussian_tasks` (the collapsed or non-centred likelihood).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bayesfuse.specs.priors import Prior, stacked_args

__all__ = ["block_rv", "scale_corr_chol", "mvn_logp", "gaussian_tasks"]

#: the unrolled Cholesky of :func:`mvn_logp` is used up to this dimension
_UNROLL_MAX_P = 8


def block_rv(name: str, priors: Sequence[Prior], shape: tuple[int, ...]):
    """The PyMC variable ``name`` of the given shape with one prior per element.

    Parameters
    ----------
    name : str
        Site name (as in the NumPyro model).
    priors : sequence of Prior
        One prior per element, in C order of ``shape``, all of one distribution family.
    shape : tuple of int
        e.g. ``(p,)`` for ``mu`` or ``(p, q)`` for metareg's ``slope``.
    """
    args = [np.reshape(a, shape) for a in stacked_args(priors)]
    return priors[0].pymc(name, args=args, shape=shape)


def scale_corr_chol(tau, corr_priors: Sequence[Prior] | None, n_params: int | None = None):
    """Cholesky factor of T = diag(τ) R diag(τ), a (p, p) tensor.

    For p > 1, R ~ LKJ(η) with η from ``corr_priors`` (the ``"lkj(η)"`` prior), and the
    deterministic sites ``corr_chol`` (p, p) and ``corr`` (p, p) are added, as in NumPyro.
    R comes from ``pm.LKJCholeskyCov`` (whose transform keeps every draw positive definite,
    unlike ``LKJCorr``'s element-wise interval transform for p > 2) with placeholder standard
    deviations s that are divided out (chol R = chol Σ / s): under ``LKJCholeskyCov`` s and R
    are independent a priori and nothing else depends on s, so R's prior is exactly LKJ(η)
    and τ keeps its own prior. s ~ LogNormal(0, 0.1) keeps the unconstrained Cholesky
    entries (off-diagonals s·R-factor, log diagonals) on one scale; a wide placeholder such
    as Exponential(1) makes a funnel there (step sizes ~4x smaller, tail ESS below 400 on a
    12-task p = 2 problem where NumPyro has ~1000).

    Parameters
    ----------
    tau : tensor of shape (p,)
    corr_priors : sequence of one Prior, or None when p = 1
    n_params : int, optional
        p (default: the static length of ``tau``).
    """
    import pymc as pm
    import pytensor.tensor as pt

    p = int(n_params if n_params is not None else tau.type.shape[0])
    if p == 1:
        return tau[:, None]
    eta = float(corr_priors[0].args[0])
    chol, _, sds = pm.LKJCholeskyCov("corr_lkj", n=p, eta=eta,
                                     sd_dist=pm.LogNormal.dist(0.0, 0.1, size=p),
                                     compute_corr=True, store_in_trace=False)
    corr_chol = pm.Deterministic("corr_chol", chol / sds[:, None])
    pm.Deterministic("corr", pt.dot(corr_chol, corr_chol.T))
    return tau[:, None] * corr_chol


def mvn_logp(x, mean, cov):
    """Log density of N(meanₖ, covₖ) at xₖ per task, a (K,) tensor.

    For p ≤ 8 the Cholesky factor and the triangular solve are unrolled into element-wise
    operations on (K,) vectors (fast compiled code, no per-task loop); larger p uses
    ``pm.MvNormal`` with a batched covariance.

    Parameters
    ----------
    x : array of shape (K, p)
    mean : tensor of shape (K, p)
    cov : tensor of shape (K, p, p)
    """
    import pymc as pm
    import pytensor.tensor as pt

    p = int(np.shape(x)[1])
    if p > _UNROLL_MAX_P:
        return pm.logp(pm.MvNormal.dist(mu=mean, cov=cov), x)
    diff = x - mean
    chol: list[list[Any]] = [[None] * p for _ in range(p)]
    for j in range(p):
        chol[j][j] = pt.sqrt(cov[:, j, j] - sum(chol[j][k] ** 2 for k in range(j)))
        for i in range(j + 1, p):
            chol[i][j] = (cov[:, i, j] - sum(chol[i][k] * chol[j][k] for k in range(j))) \
                / chol[j][j]
    solved: list[Any] = []
    for i in range(p):
        solved.append((diff[:, i] - sum(chol[i][k] * solved[k] for k in range(i))) / chol[i][i])
    quad = sum(s**2 for s in solved)
    logdet = 2 * sum(pt.log(chol[j][j]) for j in range(p))
    return -0.5 * (quad + logdet + p * math.log(2 * math.pi))


def gaussian_tasks(mean, prior_chol, task_scale, data: Mapping[str, np.ndarray],
                   collapsed: bool) -> None:
    """Add the likelihood of θ̂ for θₖ ~ N(meanₖ, sₖ² T), θ̂ₖ | θₖ ~ N(θₖ, Vₖ).

    Collapsed: θ̂ₖ ~ N(meanₖ, sₖ² T + Vₖ) (site ``theta_hat``). Plain (non-centred):
    ``z`` (K, p) standard normal, deterministic ``theta = meanₖ + sₖ L z``, θ̂ₖ ~ N(θₖ, Vₖ).

    Parameters
    ----------
    mean : tensor of shape (p,) or (K, p)
    prior_chol : tensor of shape (p, p)
        Cholesky factor L of T.
    task_scale : tensor of shape (K,) or None
        Per-task scale sₖ (robust family), None for sₖ = 1.
    data : mapping
        ``theta_hat`` (K, p), ``cov`` (K, p, p).
    collapsed : bool
    """
    import pymc as pm
    import pytensor.tensor as pt

    theta_hat, cov = data["theta_hat"], data["cov"]
    n_tasks, n_params = theta_hat.shape
    mean = pt.broadcast_to(mean, (n_tasks, n_params))
    if collapsed:
        prior_cov = pt.dot(prior_chol, prior_chol.T)[None]
        if task_scale is not None:
            prior_cov = task_scale[:, None, None] ** 2 * prior_cov
        total = prior_cov + cov
        if n_params == 1:
            pm.Normal("theta_hat", mu=mean[:, 0], sigma=pt.sqrt(total[:, 0, 0]),
                      observed=theta_hat[:, 0])
        else:
            pm.Potential("theta_hat", pt.sum(mvn_logp(theta_hat, mean, total)))
        return
    z = pm.Normal("z", 0.0, 1.0, shape=(n_tasks, n_params))
    effect = pt.dot(z, prior_chol.T)
    if task_scale is not None:
        effect = task_scale[:, None] * effect
    theta = pm.Deterministic("theta", mean + effect)
    if n_params == 1:
        pm.Normal("theta_hat", mu=theta[:, 0], sigma=np.sqrt(cov[:, 0, 0]),
                  observed=theta_hat[:, 0])
        return
    precision = np.linalg.inv(cov)
    resid = theta_hat - theta
    quad = pt.sum(pt.sum(precision * resid[:, None, :], axis=-1) * resid)
    logdet = float(np.sum(np.linalg.slogdet(cov)[1]))
    pm.Potential("theta_hat", -0.5 * (quad + logdet + theta_hat.size * math.log(2 * math.pi)))
