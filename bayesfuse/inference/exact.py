"""``method="exact"``: independent posterior draws without MCMC.

For families that provide ``exact_hyper_draws`` (the exchangeable model with scalar θ and
a normal prior on μ: its hyperparameters by quadrature over τ), :func:`run_exact` draws
the hyperparameters independently and computes θ and the other outputs with the same
per-draw map as after NUTS (:func:`bayesfuse.inference.draws.postprocess_fn`). No sampler
diagnostics to worry about, and a check of NUTS.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from bayesfuse.errors import SpecError
from bayesfuse.families import Family
from bayesfuse.inference import draws
from bayesfuse.inference.runtime import enable_x64
from bayesfuse.specs.models import SamplerConfig

__all__ = ["run_exact"]


def run_exact(family: Family, config: SamplerConfig, seed: int,
              prior_draws: int = 500) -> draws.Draws:
    """Independent posterior draws of ``family`` by its ``exact_hyper_draws``.

    Draws are arranged as ``config.chains`` chains of ``config.draws`` so that the
    diagnostics and summaries read them like MCMC output (R-hat ≈ 1, ESS ≈ draws).

    Parameters
    ----------
    family : Family
        A family instance with priors bound that has ``exact_hyper_draws``.
    config : SamplerConfig
        Its ``chains`` and ``draws`` set the number of draws.
    seed : int
        Seed of every random number (same seed -> identical draws).
    prior_draws : int
        Number of prior (and prior-predictive) draws to keep.

    Returns
    -------
    bayesfuse.inference.draws.Draws
    """
    if not hasattr(family, "exact_hyper_draws"):
        raise SpecError(f"method='exact' is not available for family '{family.name}'; "
                        "use method='nuts'.")
    enable_x64()
    data = {k: np.asarray(v) for k, v in family.data().items()}
    start = time.perf_counter()
    n_chains, n_draws = config.chains, config.draws
    rng = np.random.default_rng(seed)
    samples = family.exact_hyper_draws(rng, n_chains * n_draws)
    timings = {"sampling_s": time.perf_counter() - start}
    key_post, key_prior = jax.random.split(jax.random.PRNGKey(seed), 2)
    cache = {"family": family}
    start = time.perf_counter()
    flat = {k: jnp.asarray(v) for k, v in samples.items()}
    keys = jax.random.split(key_post, n_chains * n_draws)
    post = draws.postprocess_fn(family, True, data, n_chains * n_draws)
    theta, loglik, weight, predictive, extras = post(flat, keys, data)

    def by_chain(x):
        return np.asarray(x).reshape((n_chains, n_draws) + x.shape[1:])

    timings["postprocess_s"] = time.perf_counter() - start
    zeros = np.zeros((n_chains, n_draws))
    sample_stats = {"diverging": zeros.astype(bool), "tree_depth": zeros.astype(int),
                    "n_steps": zeros.astype(int), "acceptance_rate": zeros + 1.0}
    prior, prior_pred = draws.prior_draws(family, data, key_prior, prior_draws, cache)
    return draws.Draws(
        hyper={name: by_chain(v) for name, v in flat.items()},
        theta=by_chain(theta), log_likelihood=by_chain(loglik),
        pooling=np.asarray(weight).mean(axis=0), predictive=by_chain(predictive),
        extras={name: by_chain(v) for name, v in extras.items()},
        sample_stats=sample_stats, prior=prior, prior_predictive=prior_pred,
        timings=timings, chain_method="exact",
    )
