"""The PyMC backend: ``fuse(..., backend="pymc")``.

:func:`run_pymc` builds the family's PyMC model (``family.pymc_model(blocks, priors,
collapsed, data)``) from the same resolved priors as the NumPyro model, samples it with
PyMC's own NUTS, and then hands the posterior draws of the hyperparameter sites to the
family's JAX per-draw functions (``draw_theta``, ``pointwise_loglik``, ``pooling_weight``,
``extra_draws``), exactly as :func:`bayesfuse.inference.nuts.run_numpyro` does. The backends
therefore differ only in how φ is sampled, which is what the agreement tests check. Prior
draws come from the NumPyro plain model (same priors), so both backends fill the ``prior``
group identically.

A family supports this backend by overriding :meth:`~bayesfuse.families.base.Family.pymc_model`
(``pymc_model(self, blocks, priors, collapsed, data) -> pm.Model``) with site names and
shapes that match its NumPyro model (``mu`` (p,), ``tau`` (p,), ``corr_chol`` (p, p) ...).
``blocks`` is :mod:`bayesfuse.inference.pymc_blocks`, the pieces the Gaussian families
share, handed in here so that the families never import the inference layer. Families
without a PyMC model raise the "use backend='numpyro'" error below.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bayesfuse.errors import FitError
from bayesfuse.families import FAMILIES, Family
from bayesfuse.inference import draws as per_draw
from bayesfuse.inference import pymc_blocks
from bayesfuse.inference.draws import Draws
from bayesfuse.specs.models import SamplerConfig

__all__ = ["run_pymc", "supported_families", "has_pymc_model"]

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


def has_pymc_model(family: Family | type[Family]) -> bool:
    """Whether a family (class or instance) overrides :meth:`Family.pymc_model`."""
    cls = family if isinstance(family, type) else type(family)
    return cls.pymc_model is not Family.pymc_model


def supported_families() -> list[str]:
    """Names of the registered families that have a ``pymc_model`` (aliases included)."""
    return sorted(name for name, cls in FAMILIES.items() if has_pymc_model(cls))


def _check_support(family: Family) -> None:
    if not has_pymc_model(family):
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
    model = family.pymc_model(pymc_blocks, family.priors, collapsed, data)
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
    post = per_draw.postprocess_fn(family, collapsed, data, total)
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
    prior, prior_pred = per_draw.prior_draws(family, data, key_prior, prior_draws)
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
