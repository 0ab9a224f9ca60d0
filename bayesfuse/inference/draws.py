"""What a fit produces, whichever sampler drew the hyperparameters.

Every backend (NUTS in :mod:`bayesfuse.inference.nuts`, quadrature in
:mod:`bayesfuse.inference.exact`, PyMC in :mod:`bayesfuse.inference.pymc`) draws the
hyperparameters φ; the rest is computed here, the same way for all of them:

- :class:`Draws`, the arrays a fit hands to :func:`bayesfuse.inference.convert.build_idata`;
- :func:`postprocess_fn`, the jitted per-draw map from φ to θ (drawn exactly from its
  conditional), per-task log-likelihoods, pooling weights, replicated θ̂ and the family's
  extra draws;
- :func:`prior_draws`, draws of φ, θ and θ̂ from the prior;
- :func:`per_draw_map`, any per-draw function over a fit's draws (e.g. a new task's θ);
- :func:`is_finite_draws`.

Each function that computes with JAX first turns on JAX's 64-bit mode
(:func:`bayesfuse.inference.runtime.enable_x64`): the results are float64 as in NumPy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import Predictive

from bayesfuse.families import Family
from bayesfuse.inference.runtime import enable_x64
from bayesfuse.specs.priors import prior_arguments, with_arguments

__all__ = ["Draws", "postprocess_fn", "postprocess_batch", "prior_draws", "per_draw_map",
           "is_finite_draws", "QUICK_COMPILE", "QUICK_COMPILE_MAX_WORK"]


@dataclass
class Draws:
    """Everything a fit produced, as numpy arrays grouped by chain (C, S, ...)."""

    hyper: dict[str, np.ndarray]
    theta: np.ndarray  # (C, S, K, p)
    log_likelihood: np.ndarray  # (C, S, K)
    pooling: np.ndarray  # (K, p) posterior mean of the pooling weight
    predictive: np.ndarray  # (C, S, K, p) replicated θ̂
    extras: dict[str, np.ndarray]
    sample_stats: dict[str, np.ndarray]
    prior: dict[str, np.ndarray] = field(default_factory=dict)
    prior_predictive: dict[str, np.ndarray] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    chain_method: str = ""


def postprocess_batch(family: Family, data: Mapping[str, Any], total: int) -> int:
    """How many draws the per-draw map handles at once: about 2 million task elements
    (K·p times the family's ``draw_cost``) per batch, so that memory stays bounded, and
    at most the family's ``max_draw_batch``."""
    per_draw = max(1, data["theta_hat"].size * family.draw_cost)
    batch = min(total, max(1, 2_000_000 // per_draw))
    if family.max_draw_batch is not None:
        batch = min(batch, family.max_draw_batch)
    return int(batch)


#: XLA options for programs that run once and briefly: compile time dominates them. On large
#: fits the slower run outweighs the quicker compile, so the per-draw map and the prior draws
#: compile this way only for small fits (measurements:
#: benchmarks/results/design_measurements.md). Since compiled programs persist across
#: processes (bayesfuse.inference.runtime), the bound is low: at K = 2,000 × 4,000 draws the
#: optimised per-draw map runs in 0.7 s against 2.7–3.0 s (benchmarks/results/speed.md).
QUICK_COMPILE = {"xla_backend_optimization_level": 0}
#: the per-draw map and prior draws compile with QUICK_COMPILE up to this many task
#: elements × draws
QUICK_COMPILE_MAX_WORK = 1_000_000


def postprocess_fn(family: Family, collapsed: bool, data: Mapping[str, Any], total: int,
                   quick: bool | None = None) -> Callable[..., Any]:
    """A jitted map over ``total`` draws of the exact per-draw computations.

    Parameters
    ----------
    family : Family
        The fitted family (priors bound).
    collapsed : bool
        Whether θ was integrated out (then it is drawn here from its conditional).
    data : mapping
        The family's data (``family.data()``), as arrays.
    total : int
        Number of draws the map is called with (chains × draws).
    quick : bool, optional
        Compile with :data:`QUICK_COMPILE`; by default when the work is at most
        :data:`QUICK_COMPILE_MAX_WORK` task elements × draws.

    Returns
    -------
    callable
        ``fn(draws, keys, data) -> (theta, loglik, weight, predictive, extras)``, ``draws``
        a mapping of flat draws (``total``, ...), ``keys`` ``total`` PRNG keys; the draws
        are handled in batches of :func:`postprocess_batch`.
    """
    enable_x64()
    batch = postprocess_batch(family, data, total)
    if quick is None:
        quick = data["theta_hat"].size * family.draw_cost * total <= QUICK_COMPILE_MAX_WORK

    def run(draws, keys, data):
        def one(args):
            draw, key = args
            k_theta, k_pred, k_extra = jax.random.split(key, 3)
            if collapsed or "theta" not in draw:
                theta = family.draw_theta(k_theta, data, draw)
            else:
                theta = draw["theta"]
            loglik = family.pointwise_loglik(data, draw)
            weight = family.pooling_weight(data, draw)
            noise = jax.random.normal(k_pred, theta.shape)
            predictive = theta + jnp.einsum("kij,kj->ki", family.sampling_chol(data, draw), noise)
            extras = family.extra_draws(k_extra, data, draw)
            return theta, loglik, weight, predictive, extras

        return jax.lax.map(one, (draws, keys), batch_size=batch)

    return jax.jit(run, compiler_options=QUICK_COMPILE if quick else None)


def prior_draws(family: Family, data: Mapping[str, np.ndarray], key: jax.Array,
                n: int, cache: dict[Any, Any] | None = None,
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Draws of φ and θ (and θ̂) from the prior, via the family's plain model.

    Parameters
    ----------
    family : Family
        The family (priors bound).
    data : mapping
        The family's data; ``theta_hat`` is left out (it is drawn).
    key : jax.Array
        PRNG key.
    n : int
        Number of draws; ``0`` gives two empty mappings.
    cache : dict, optional
        Where the jitted draw function is kept between calls (a sampler's cache entry,
        whose ``"family"`` holds the instance the model reads).

    Returns
    -------
    prior, prior_predictive : dict of ndarray
        The family's hyperparameters and ``theta`` (shape (1, n, ...)), and ``theta_hat``
        (shape (1, n, K, p)).
    """
    if n <= 0:
        return {}, {}
    enable_x64()
    cache_key = ("prior", n)
    draw_fn = None if cache is None else cache.get(cache_key)
    if draw_fn is None:
        holder = family if cache is None else cache["family"]

        def model(prior_args: Any, **kwargs: Any) -> None:
            holder.model(with_arguments(holder.priors, prior_args), False, **kwargs)

        def draw_fn(key, inputs):  # the priors' numbers are inputs (see nuts._compiled)
            return Predictive(model, num_samples=n)(key, theta_hat=None, **inputs)

        quick = np.size(data["theta_hat"]) * n <= QUICK_COMPILE_MAX_WORK
        draw_fn = jax.jit(draw_fn, compiler_options=QUICK_COMPILE if quick else None)
        if cache is not None:
            cache[cache_key] = draw_fn
    inputs = {k: v for k, v in data.items() if k != "theta_hat"}
    inputs["prior_args"] = prior_arguments(family.priors)
    draws = draw_fn(key, inputs)
    keep = set(family.hyper_dims()) | {"theta"}
    prior = {k: np.asarray(v)[None] for k, v in draws.items() if k in keep}
    predictive = {"theta_hat": np.asarray(draws["theta_hat"])[None]}
    if predictive["theta_hat"].ndim == 3:  # p = 1 models observe a (K,) vector
        predictive["theta_hat"] = predictive["theta_hat"][..., None]
    return prior, predictive


def per_draw_map(fn: Callable[[jax.Array, dict[str, jax.Array]], jax.Array],
                 draws: Mapping[str, np.ndarray], seed: int) -> np.ndarray:
    """Apply ``fn(key, draw)`` to every draw of a fit with a jitted map.

    Parameters
    ----------
    fn : callable
        ``fn(key, draw) -> array``, ``draw`` a mapping of one draw per variable.
    draws : mapping of ndarray
        Draws grouped by chain, each of shape (C, S, ...).
    seed : int
        Seed of the per-draw keys.

    Returns
    -------
    ndarray of shape (C·S, ...)
    """
    enable_x64()
    flat = {k: jnp.reshape(jnp.asarray(v), (-1,) + np.shape(v)[2:]) for k, v in draws.items()}
    total = next(iter(flat.values())).shape[0] if flat else 1
    keys = jax.random.split(jax.random.PRNGKey(seed), total)
    batch = int(min(total, max(1, 4096)))
    out = jax.jit(lambda d, k: jax.lax.map(lambda a: fn(a[1], a[0]), (d, k), batch_size=batch))(
        flat, keys)
    return np.asarray(out)


def is_finite_draws(draws: Draws) -> bool:
    """Whether θ draws are all finite (a failed Cholesky gives NaN)."""
    return bool(np.isfinite(draws.theta).all()) and math.isfinite(float(draws.theta.sum()))
