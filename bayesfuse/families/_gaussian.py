"""Batched log densities of small Gaussians, the inner loop of the collapsed likelihoods.

The collapsed families evaluate log N(rₖ; 0, Sₖ) for many small covariances at every
gradient: K of them (exchangeable, metareg with p > 1) or K × C (cluster). On CPU, XLA's
batched LAPACK calls on p × p matrices cost far more than their arithmetic, and
differentiating through a Cholesky written out element-wise leaves the backward pass to
scatter every element's cotangent into a full-size tensor. :func:`gaussian_logpdf`
therefore writes the factorisation out over the batch *and* supplies its derivative in
closed form (a custom JVP):

    d log N(r; 0, S) = −aᵀ dr + ½ Σᵢⱼ (a aᵀ − S⁻¹)ᵢⱼ dSᵢⱼ,      a = S⁻¹ r

so reverse mode costs one element-wise product with (a aᵀ − S⁻¹) per input
(measurements: benchmarks/results/design_measurements.md).

For scalar θ the cluster family's whole likelihood, log Σ_c π_c N(θ̂ₖ; μ_c, T_c + Vₖ), is
one function with a closed-form derivative (:func:`normal_mixture_logpdf`), laid out
components × tasks so that the vectorised axis is the long one.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["gaussian_logpdf", "normal_mixture_logpdf", "UNROLL_MAX_P"]

#: up to this dimension the factorisation is written out element-wise; above, LAPACK
UNROLL_MAX_P = 8


def gaussian_logpdf(resid: jax.Array, cov: jax.Array) -> jax.Array:
    """log N(resid; 0, cov), batched.

    Parameters
    ----------
    resid : array of shape (..., p)
    cov : array of shape (..., p, p)
        Symmetric positive definite; broadcast against ``resid``. Only the lower triangle
        is read, and the derivative is that of a function of a *symmetric* matrix (both
        triangles share each element's derivative), which is what every caller builds.

    Returns
    -------
    array of shape (...)
        NaN where ``cov`` is not positive definite.
    """
    n_params = resid.shape[-1]
    if n_params == 1:  # scalar: no factorisation at all
        var = cov[..., 0, 0]
        return -0.5 * (resid[..., 0] ** 2 / var + jnp.log(2 * jnp.pi * var))
    batch = jnp.broadcast_shapes(resid.shape[:-1], cov.shape[:-2])
    resid = jnp.broadcast_to(resid, batch + (n_params,))
    cov = jnp.broadcast_to(cov, batch + (n_params, n_params))
    if n_params > UNROLL_MAX_P:
        chol = jnp.linalg.cholesky(cov)
        solved = jax.scipy.linalg.solve_triangular(chol, resid[..., None], lower=True)[..., 0]
        log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
        return -0.5 * (jnp.sum(solved**2, axis=-1) + log_det + n_params * jnp.log(2 * jnp.pi))
    return _unrolled_logpdf(resid, cov)


def _factor_and_solve(resid: jax.Array, cov: jax.Array) -> tuple[jax.Array, list, list, list]:
    """The value, L (rows as lists of (...) arrays), 1/diag(L) and y = L⁻¹ r."""
    n_params = resid.shape[-1]
    chol: list[list[Any]] = [[None] * n_params for _ in range(n_params)]
    inv_diag: list[Any] = [None] * n_params
    log_det: Any = 0.0
    for j in range(n_params):
        pivot = cov[..., j, j] - sum(chol[j][k] ** 2 for k in range(j))  # L_jj²
        inv_diag[j] = jax.lax.rsqrt(pivot)
        log_det = log_det + jnp.log(pivot)
        for i in range(j + 1, n_params):
            chol[i][j] = (cov[..., i, j] - sum(chol[i][k] * chol[j][k] for k in range(j))) \
                * inv_diag[j]
    solved: list[Any] = []
    for i in range(n_params):
        solved.append((resid[..., i] - sum(chol[i][k] * solved[k] for k in range(i)))
                      * inv_diag[i])
    mahalanobis = sum(y**2 for y in solved)
    value = -0.5 * (mahalanobis + log_det + n_params * jnp.log(2 * jnp.pi))
    return value, chol, inv_diag, solved


@jax.custom_jvp
def _unrolled_logpdf(resid: jax.Array, cov: jax.Array) -> jax.Array:
    return _factor_and_solve(resid, cov)[0]


@_unrolled_logpdf.defjvp
def _unrolled_logpdf_jvp(primals, tangents):
    resid, cov = primals
    d_resid, d_cov = tangents
    n_params = resid.shape[-1]
    value, chol, inv_diag, solved = _factor_and_solve(resid, cov)
    # a = S⁻¹ r = L⁻ᵀ y, by back substitution
    precision_resid: list[Any] = [None] * n_params
    for i in reversed(range(n_params)):
        precision_resid[i] = (solved[i] - sum(chol[k][i] * precision_resid[k]
                                              for k in range(i + 1, n_params))) * inv_diag[i]
    # M = L⁻¹ (lower triangular), row by row; S⁻¹ = Mᵀ M
    inv_chol: list[list[Any]] = [[None] * n_params for _ in range(n_params)]
    for i in range(n_params):
        inv_chol[i][i] = inv_diag[i]
        for j in range(i):
            inv_chol[i][j] = -sum(chol[i][k] * inv_chol[k][j] for k in range(j, i)) * inv_diag[i]
    precision = jnp.stack([
        jnp.stack([sum(inv_chol[k][i] * inv_chol[k][j] for k in range(max(i, j), n_params))
                   for j in range(n_params)], axis=-1)
        for i in range(n_params)
    ], axis=-2)
    a = jnp.stack(precision_resid, axis=-1)
    coef = 0.5 * (a[..., :, None] * a[..., None, :] - precision)  # ∂ value / ∂S
    return value, -jnp.sum(a * d_resid, axis=-1) + jnp.sum(coef * d_cov, axis=(-2, -1))


@jax.custom_jvp
def normal_mixture_logpdf(log_weights: jax.Array, loc: jax.Array, scale_var: jax.Array,
                          value: jax.Array, noise_var: jax.Array) -> jax.Array:
    """log Σ_c π_c N(xₖ; m_c, s_c + vₖ) for scalar xₖ, one value per k.

    The derivative is written in closed form with the responsibilities
    r_kc = π_c N(xₖ; m_c, s_c + vₖ) / Σ_j π_j N(xₖ; m_j, s_j + vₖ) and
    a_kc = (xₖ − m_c) / (s_c + vₖ):

        ∂/∂log π_c = r_kc,  ∂/∂m_c = r_kc a_kc,  ∂/∂s_c = ½ r_kc (a_kc² − 1/(s_c + vₖ)),

    (and ∂/∂xₖ, ∂/∂vₖ likewise), so the reverse pass costs a few products on the
    C × K arrays the value already made, a fraction of the cost of autodiff through
    :func:`gaussian_logpdf` and ``logsumexp``
    (measurements: benchmarks/results/design_measurements.md).

    Parameters
    ----------
    log_weights : array of shape (C,)
        log π_c, −∞ allowed (an empty component).
    loc : array of shape (C,)
        m_c.
    scale_var : array of shape (C,)
        s_c > 0 (the components' variances T_c).
    value : array of shape (K,)
        xₖ (θ̂ₖ).
    noise_var : array of shape (K,)
        vₖ > 0 (the tasks' sampling variances Vₖ).

    Returns
    -------
    array of shape (K,)
    """
    return _mixture_parts(log_weights, loc, scale_var, value, noise_var)[0]


def _mixture_parts(log_weights, loc, scale_var, value, noise_var):
    """The value (K,), responsibilities r, standardised residuals a and 1/(s + v), (C, K)."""
    total = scale_var[:, None] + noise_var[None, :]  # s_c + vₖ
    inv_total = 1.0 / total
    resid = value[None, :] - loc[:, None]
    scaled = resid * inv_total  # a_kc
    log_joint = log_weights[:, None] - 0.5 * (resid * scaled + jnp.log(2 * jnp.pi * total))
    top = jnp.max(log_joint, axis=0)
    shifted = jnp.exp(log_joint - top)
    norm = jnp.sum(shifted, axis=0)
    return top + jnp.log(norm), shifted / norm, scaled, inv_total


@normal_mixture_logpdf.defjvp
def _normal_mixture_logpdf_jvp(primals, tangents):
    d_log_weights, d_loc, d_scale_var, d_value, d_noise_var = tangents
    value, resp, scaled, inv_total = _mixture_parts(*primals)
    by_loc = resp * scaled  # ∂ / ∂m_c, (C, K)
    by_var = 0.5 * resp * (scaled * scaled - inv_total)  # ∂ / ∂s_c = ∂ / ∂vₖ per component
    d_out = (jnp.sum(resp * d_log_weights[:, None] + by_loc * d_loc[:, None]
                     + by_var * d_scale_var[:, None], axis=0)
             - d_value * jnp.sum(by_loc, axis=0) + d_noise_var * jnp.sum(by_var, axis=0))
    return value, d_out
