"""The cluster family's distributions and weight transforms.

* :class:`CollapsedMixture`: θ̂ₖ ~ Σ_c π_c N(μ_c, T_c + Vₖ), the likelihood with θ and the
  labels integrated out, and :func:`component_loglik`, its per-component densities;
* :class:`CloglogBeta`: a stick-breaking weight in the cloglog coordinates NUTS samples;
* the sticks ↔ weights transforms (:func:`stick_log_weights`, :func:`log_weights_to_stick`,
  :func:`weights_to_stick`) and the law of the components' order (:func:`order_log_prob`,
  :func:`stick_order_log_factor`) used by the relabelling moves;
* :func:`kmeans_plus_plus`: the seeding that places the components' starting values.

See :mod:`bayesfuse.families.cluster` for the model they serve.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.scipy.special import betaln

from bayesfuse.families._gaussian import gaussian_logpdf, normal_mixture_logpdf

__all__ = [
    "CloglogBeta",
    "CollapsedMixture",
    "component_loglik",
    "kmeans_plus_plus",
    "log_weights_to_stick",
    "order_log_prob",
    "stick_log_weights",
    "stick_order_log_factor",
    "weights_to_stick",
]


def _log1mexp(x: jax.Array) -> jax.Array:
    """log(1 − exp(−x)) for x > 0, accurate at both ends (Mächler 2012)."""
    return jnp.where(x < jnp.log(2.0), jnp.log(-jnp.expm1(-x)), jnp.log1p(-jnp.exp(-x)))


def component_loglik(theta_hat: jax.Array, mu: jax.Array, cluster_cov: jax.Array,
                     cov: jax.Array) -> jax.Array:
    """log N(θ̂ₖ; μ_c, T_c + Vₖ) for all tasks and components.

    Parameters
    ----------
    theta_hat : array of shape (K, p)
    mu : array of shape (C, p)
    cluster_cov : array of shape (C, p, p)
        T_c.
    cov : array of shape (K, p, p)
        Vₖ.

    Returns
    -------
    array of shape (K, C)
    """
    resid = theta_hat[:, None, :] - mu[None]
    return gaussian_logpdf(resid, cluster_cov[None] + cov[:, None])


def stick_log_weights(stick: jax.Array) -> jax.Array:
    """log π from the sticks in cloglog coordinates, shape (..., C − 1) -> (..., C).

    ``stick`` holds η_c = log(−log(1 − v_c)); π_c = v_c Π_{j<c} (1 − v_j) and
    π_C = Π_{j<C} (1 − v_j), all in log space (no weight underflows).
    """
    neg_log_rest = jnp.exp(stick)  # u_c = −log(1 − v_c)
    log_stick = _log1mexp(neg_log_rest)  # log v_c
    log_remaining = -jnp.cumsum(neg_log_rest, axis=-1)  # log Π_{j<=c} (1 − v_j)
    before = jnp.concatenate(
        [jnp.zeros(stick.shape[:-1] + (1,)), log_remaining[..., :-1]], axis=-1)
    return jnp.concatenate([log_stick + before, log_remaining[..., -1:]], axis=-1)


def order_log_prob(log_weights: jax.Array, sharpness: float = 1.0) -> jax.Array:
    """log of the Plackett–Luce probability of the components' order, shape (..., C) -> (...).

    Σ_{c<C} [β log π_c − log Σ_{j≥c} π_j^β], β = ``sharpness``; β = 1 is size-biased order.
    """
    scaled = sharpness * log_weights
    rest = jax.lax.cumlogsumexp(scaled, axis=scaled.ndim - 1, reverse=True)
    term = scaled[..., :-1] - rest[..., :-1]
    return jnp.sum(jnp.where(jnp.isfinite(term), term, 0.0), axis=-1)


def stick_order_log_factor(stick: jax.Array, sharpness: float = 1.0) -> jax.Array:
    """h(η) = log|dη/dπ| − log g_β(π) for sticks in cloglog coordinates, (..., C − 1) -> (...).

    With u_c = e^{η_c} = −log(1 − v_c) and R_c = Π_{j<c} (1 − v_j) the mass left before
    stick c: π_c = v_c R_c, so log|dv/dπ| = −Σ_c log R_c; dη_c/dv_c = 1 / (u_c (1 − v_c)),
    so log|dη/dv| = Σ_c (u_c − η_c); g_β is the Plackett–Luce probability of the order
    (:func:`order_log_prob`, β = ``sharpness``; at β = 1 it is Π_c v_c). Sums over
    c = 1..C − 1.
    """
    neg_log_rest = jnp.exp(stick)  # u_c
    log_left = -(jnp.cumsum(neg_log_rest, axis=-1) - neg_log_rest)  # log R_c
    log_jac = jnp.sum(neg_log_rest - stick - log_left, axis=-1)
    return log_jac - order_log_prob(stick_log_weights(stick), sharpness)


def log_weights_to_stick(log_weights: jax.Array) -> jax.Array:
    """The inverse of :func:`stick_log_weights` in log space: η (..., C − 1) from log π (..., C).

    With R_c = π_c + … + π_C (what is left before stick c), 1 − v_c = R_{c+1} / R_c, so
    u_c = −log(1 − v_c) = log(1 + π_c / R_{c+1}) = softplus(log π_c − log R_{c+1}) and
    η_c = log u_c, accurate for weights far below the smallest double's square root.
    """
    log_rest = jax.lax.cumlogsumexp(log_weights, axis=log_weights.ndim - 1, reverse=True)
    return _log_softplus(log_weights[..., :-1] - log_rest[..., 1:])  # of log π_c − log R_{c+1}


def _log_softplus(x: jax.Array) -> jax.Array:
    """log(log(1 + eˣ)), which is x itself once eˣ is negligible (no underflow to −∞)."""
    return jnp.where(x < -30.0, x, jnp.log(jax.nn.softplus(jnp.maximum(x, -30.0))))


def weights_to_stick(weights: np.ndarray) -> np.ndarray:
    """The inverse of :func:`stick_log_weights`: η of shape (..., C − 1) from π (..., C)."""
    with np.errstate(divide="ignore"):  # a zero weight: log π = −∞, η = −∞ (v = 0)
        log_weights = np.log(np.asarray(weights, dtype=float))
    return np.asarray(log_weights_to_stick(jnp.asarray(log_weights)))


class CloglogBeta(dist.Distribution):
    """η = log(−log(1 − v)) for v ~ Beta(a, b), a ≥ 1: a stick in cloglog coordinates.

    NUTS samples the weights' sticks in these coordinates because they suit both kinds of
    component. A stick the data pin (an occupied cluster) has a fixed η whatever α is (a
    *centred* parameterisation: no ridge between α and the stick), while a stick the data
    ignore has u = −log(1 − v) ≈ Exp(b), so η = log u is log Exp(1) − log b: α only
    *shifts* it (b ∝ α), no funnel, however small the weight. The log density is written in
    u, so v → 1 (1 − v below the smallest double) loses nothing:

        log p(η) = (a − 1) log(1 − e⁻ᵘ) − b u + η − log B(a, b)      # u = e^η

    Parameters
    ----------
    a : array
        First Beta shape, ≥ 1.
    b : array
        Second Beta shape, > 0.
    """

    arg_constraints = {"a": dist.constraints.positive, "b": dist.constraints.positive}
    support = dist.constraints.real
    reparametrized_params = ["a", "b"]

    def __init__(self, a, b, *, validate_args=None):
        batch_shape = jax.lax.broadcast_shapes(jnp.shape(a), jnp.shape(b))
        self.a, self.b = jnp.broadcast_to(a, batch_shape), jnp.broadcast_to(b, batch_shape)
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    def log_prob(self, value):
        neg_log_rest = jnp.exp(value)  # u
        return ((self.a - 1.0) * _log1mexp(neg_log_rest) - self.b * neg_log_rest + value
                - betaln(self.a, self.b))

    def sample(self, key, sample_shape=()):
        # 1 − v = G_b / (G_a + G_b) with log G_b = log G_{b+1} + log U / b (no underflow)
        k_a, k_b, k_u = jax.random.split(key, 3)
        shape = sample_shape + self.batch_shape
        log_a = jnp.log(jax.random.gamma(k_a, self.a, shape))
        log_b = (jnp.log(jax.random.gamma(k_b, self.b + 1.0, shape))
                 + jnp.log(jax.random.uniform(k_u, shape, minval=1e-300)) / self.b)
        return _log_softplus(log_a - log_b)  # u = log(1 + G_a / G_b); η = log u


class CollapsedMixture(dist.Distribution):
    """θ̂ₖ ~ Σ_c π_c N(μ_c, T_c + Vₖ), independently over tasks: batch (K,), event (p,).

    Parameters
    ----------
    log_weights : array of shape (C,)
        log π.
    mu : array of shape (C, p)
    cluster_cov : array of shape (C, p, p)
    cov : array of shape (K, p, p)
    """

    support = dist.constraints.real_vector

    def __init__(self, log_weights, mu, cluster_cov, cov, *, validate_args=None):
        self.log_weights, self.mu, self.cluster_cov, self.cov = log_weights, mu, cluster_cov, cov
        super().__init__(batch_shape=cov.shape[:1], event_shape=mu.shape[1:],
                         validate_args=validate_args)

    def log_prob(self, value):
        if value.ndim == 2 and value.shape[-1] == 1:  # scalar θ: closed-form derivative
            return normal_mixture_logpdf(self.log_weights, self.mu[:, 0],
                                         self.cluster_cov[:, 0, 0], value[:, 0],
                                         self.cov[:, 0, 0])
        log_joint = self.log_weights + component_loglik(value, self.mu, self.cluster_cov,
                                                        self.cov)
        return jax.nn.logsumexp(log_joint, axis=-1)

    def sample(self, key, sample_shape=()):
        k_comp, k_noise = jax.random.split(key)
        shape = sample_shape + self.batch_shape
        comp = jax.random.categorical(k_comp, self.log_weights, shape=shape)
        total = self.cluster_cov[comp] + self.cov  # (..., K, p, p)
        noise = jax.random.normal(k_noise, shape + self.event_shape)
        return self.mu[comp] + jnp.einsum("...ij,...j->...i", jnp.linalg.cholesky(total), noise)


def kmeans_plus_plus(points: np.ndarray, n_centres: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n_centres`` rows chosen by k-means++ seeding (Arthur & Vassilvitskii 2007).

    Each next centre is a row drawn with probability ∝ squared distance to the nearest
    centre so far; once every row is a centre (more centres than distinct rows), the rest
    are drawn uniformly.

    Parameters
    ----------
    points : array of shape (K, p)
    n_centres : int
    rng : numpy Generator

    Returns
    -------
    int array of shape (n_centres,)
    """
    n_rows = points.shape[0]
    picks = [int(rng.integers(n_rows))]
    nearest = np.sum((points - points[picks[0]]) ** 2, axis=1)
    for _ in range(1, n_centres):
        total = nearest.sum()
        if total <= 0:
            picks.append(int(rng.integers(n_rows)))
            continue
        pick = int(rng.choice(n_rows, p=nearest / total))
        picks.append(pick)
        nearest = np.minimum(nearest, np.sum((points - points[pick]) ** 2, axis=1))
    return np.asarray(picks)
