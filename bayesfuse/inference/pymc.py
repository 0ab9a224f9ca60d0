"""The PyMC backend: ``fuse(..., backend="pymc")``.

:func:`run_pymc` builds the family's PyMC model (``family.pymc_model(priors, collapsed,
data)``) from the same resolved priors as the NumPyro model, samples it with PyMC's own NUTS,
and then hands the posterior draws of the hyperparameter sites to the family's JAX per-draw
functions (``draw_theta``, ``pointwise_loglik``, ``pooling_weight``, ``extra_draws``),
exactly as :func:`bayesfuse.inference.nuts.run_numpyro` does. The backends therefore differ only in
how φ is sampled, which is what the agreement tests check. Prior draws come from the NumPyro
plain model (same priors), so both backends fill the ``prior`` group identically.

A family supports this backend by a method ``pymc_model(self, priors, collapsed, data) ->
pm.Model`` whose site names and shapes match its NumPyro model (``mu`` (p,), ``tau`` (p,),
``corr_chol`` (p, p) ...). The helpers below build the pieces the Gaussian families share:
:func:`block_rv` (one prior per element), :func:`scale_corr_chol` (chol of
T = diag(τ) R diag(τ), R ~ LKJ) and :func:`gaussian_tasks` (the collapsed or non-centred
likelihood). Implemented: ``exchangeable``, ``robust``, ``metareg`` and ``cluster`` (its
collapsed mixture Σ_c π_c N(μ_c, T_c + Vₖ) as a log-sum-exp potential of
:func:`mvn_logp`); other families raise the "use backend='numpyro'" error below.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bayesfuse.errors import FitError
from bayesfuse.families.base import FAMILIES, Family
from bayesfuse.inference.nuts import (  # also enables JAX x64
    Draws,
    _postprocess_fn,
    _prior_draws,
)
from bayesfuse.specs.models import SamplerConfig
from bayesfuse.specs.priors import Prior, stacked_args

__all__ = [
    "run_pymc",
    "supported_families",
    "block_rv",
    "scale_corr_chol",
    "gaussian_tasks",
    "mvn_logp",
]

#: sample_stats names written by ``run_numpyro``, from PyMC's (ArviZ-converted) names
_STATS = {
    "diverging": "diverging",
    "energy": "energy",
    "n_steps": "n_steps",
    "tree_depth": "tree_depth",
    "acceptance_rate": "acceptance_rate",
    "step_size": "step_size",
    "lp": "lp",
}
#: the unrolled Cholesky of :func:`mvn_logp` is used up to this dimension
_UNROLL_MAX_P = 8


def supported_families() -> list[str]:
    """Names of the registered families that have a ``pymc_model`` (aliases included)."""
    from bayesfuse import families  # noqa: F401  (fills the registry)

    return sorted(name for name, cls in FAMILIES.items()
                  if callable(getattr(cls, "pymc_model", None)))


def _check_support(family: Family) -> None:
    if not callable(getattr(family, "pymc_model", None)):
        raise FitError(
            f"backend='pymc' supports {', '.join(supported_families())}; use "
            f"backend='numpyro' for {family.name}."
        )


def _cores(config: SamplerConfig) -> int:
    """PyMC worker processes: one per chain (up to the CPU count) with
    ``chain_method="parallel"``, else 1 (chains in turn, in this process)."""
    if config.chain_method != "parallel":
        return 1
    return max(1, min(config.chains, os.cpu_count() or 1))


@contextlib.contextmanager
def _quiet_pymc() -> Iterator[None]:
    """Silence PyMC's informational log lines (sampler assignment, timings)."""
    logger = logging.getLogger("pymc")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def run_pymc(family: Family, config: SamplerConfig, seed: int, collapsed: bool = True,
             prior_draws: int = 500) -> Draws:
    """Sample ``family`` with PyMC's NUTS and compute the exact per-draw outputs.

    Parameters
    ----------
    family : Family
        A family instance with priors bound (``family.bind_priors``) and a ``pymc_model``.
    config : SamplerConfig
        Chains, draws, warmup (PyMC's ``tune``), target_accept, max tree depth, thinning.
        Chains run one after another in this process, unless ``chain_method="parallel"``:
        then in worker processes started by ``forkserver`` (not ``fork``, which can deadlock
        once JAX runs threads), so a script must guard its entry point with
        ``if __name__ == "__main__":``.
    seed : int
        Seed of PyMC's sampler and of the JAX per-draw computations.
    collapsed : bool
        Sample the collapsed model (θ integrated out) when the family allows it.
    prior_draws : int
        Number of prior (and prior-predictive) draws to keep (NumPyro plain model).

    Returns
    -------
    Draws
        As :func:`bayesfuse.inference.nuts.run_numpyro`: hyperparameters (C, S, ...), θ
        (C, S, K, p), log-likelihood (C, S, K), pooling (K, p), predictive (C, S, K, p),
        sample statistics with the same keys.

    Raises
    ------
    FitError
        If the family has no PyMC model, or PyMC fails to sample.
    """
    _check_support(family)
    import pymc as pm

    collapsed = collapsed and family.collapsible
    data = {k: np.asarray(v) for k, v in family.data().items()}
    timings: dict[str, float] = {}
    start = time.perf_counter()
    model = family.pymc_model(family.priors, collapsed, data)
    cores = _cores(config)
    _, key_post, key_prior = jax.random.split(jax.random.PRNGKey(seed), 3)
    with _quiet_pymc(), warnings.catch_warnings():
        # PyTensor without a BLAS is slower, not wrong; the tip is not for bayesfuse's users
        warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS")
        try:
            idata = pm.sample(
                draws=config.draws,
                tune=config.warmup,
                chains=config.chains,
                cores=cores,
                target_accept=config.target_accept,
                max_treedepth=config.max_tree_depth,
                random_seed=seed,
                progressbar=False,
                compute_convergence_checks=False,
                # fork after JAX has started its threads can deadlock
                mp_ctx="forkserver" if cores > 1 else None,
                model=model,
            )
        except pm.exceptions.SamplingError as exc:
            raise FitError(f"PyMC could not sample the '{family.name}' model: {exc}") from exc
    step = slice(None, None, config.thinning)
    posterior = {name: np.asarray(var.values)[:, step]
                 for name, var in idata.posterior.data_vars.items()}
    timings["sampling_s"] = time.perf_counter() - start

    start = time.perf_counter()
    n_chains, n_draws = next(iter(posterior.values())).shape[:2]
    total = n_chains * n_draws
    flat = {k: jnp.reshape(jnp.asarray(v), (total,) + v.shape[2:]) for k, v in posterior.items()}
    keys = jax.random.split(key_post, total)
    post = _postprocess_fn(family, collapsed, data, total)
    theta, loglik, weight, predictive, extras = post(flat, keys, data)

    def by_chain(x: Any) -> np.ndarray:
        x = np.asarray(x)
        return x.reshape((n_chains, n_draws) + x.shape[1:])

    hyper = {name: posterior[name] for name in family.hyper_dims() if name in posterior}
    timings["postprocess_s"] = time.perf_counter() - start

    stats = idata.sample_stats
    missing = [name for name in _STATS.values() if name not in stats]
    if missing:  # pragma: no cover - PyMC's NUTS writes all of them
        raise FitError(f"PyMC's sampler statistics lack {missing}.")
    sample_stats = {ours: np.asarray(stats[theirs].values)[:, step]
                    for ours, theirs in _STATS.items()}
    sample_stats["diverging"] = sample_stats["diverging"].astype(bool)
    sample_stats["n_steps"] = sample_stats["n_steps"].astype(int)
    sample_stats["tree_depth"] = sample_stats["tree_depth"].astype(int)

    start = time.perf_counter()
    prior, prior_pred = _prior_draws(family, data, key_prior, prior_draws)
    timings["prior_s"] = time.perf_counter() - start
    return Draws(
        hyper=hyper,
        theta=by_chain(theta),
        log_likelihood=by_chain(loglik),
        pooling=np.asarray(weight).mean(axis=0),
        predictive=by_chain(predictive),
        extras={name: by_chain(v) for name, v in extras.items()},
        sample_stats=sample_stats,
        prior=prior,
        prior_predictive=prior_pred,
        timings=timings,
        chain_method="parallel" if cores > 1 else "sequential",
    )


# ---------------------------------------------------------------------- model pieces
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
