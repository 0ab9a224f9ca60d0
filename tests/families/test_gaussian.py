"""The batched Gaussian log density of the collapsed likelihoods against independent code."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy.stats import multivariate_normal

from bayesfuse.families._gaussian import gaussian_logpdf, normal_mixture_logpdf


def _lapack_logpdf(resid, cov):
    """Reference: LAPACK Cholesky and a triangular solve, differentiated by JAX."""
    chol = jnp.linalg.cholesky(cov)
    solved = jax.scipy.linalg.solve_triangular(chol, resid[..., None], lower=True)[..., 0]
    log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    return -0.5 * (jnp.sum(solved**2, -1) + log_det + resid.shape[-1] * jnp.log(2 * jnp.pi))


def _problem(n_params, batch, seed):
    rng = np.random.default_rng(seed)
    factor = rng.standard_normal(batch + (n_params, n_params))
    cov = factor @ np.swapaxes(factor, -1, -2) / n_params + 0.3 * np.eye(n_params)
    return rng.standard_normal(batch + (n_params,)), cov


@pytest.mark.parametrize("n_params", [1, 2, 3, 5, 8, 9])
def test_value_matches_scipy(n_params):
    resid, cov = _problem(n_params, (7,), n_params)
    expected = [multivariate_normal(np.zeros(n_params), c).logpdf(r)
                for r, c in zip(resid, cov, strict=True)]
    np.testing.assert_allclose(gaussian_logpdf(jnp.asarray(resid), jnp.asarray(cov)),
                               expected, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("n_params", [2, 4, 8])
def test_gradient_matches_lapack_autodiff(n_params):
    """Gradients through a symmetric S = L Lᵀ + V, as the families build it."""
    resid, cov = _problem(n_params, (5, 3), 10 + n_params)
    rng = np.random.default_rng(n_params)
    factor = jnp.asarray(np.tril(rng.standard_normal((3, n_params, n_params))))

    def total(fn, resid, factor):
        return jnp.sum(fn(resid, factor @ jnp.swapaxes(factor, -1, -2) + cov) ** 2)

    got = jax.grad(lambda r, f: total(gaussian_logpdf, r, f), argnums=(0, 1))(resid, factor)
    want = jax.grad(lambda r, f: total(_lapack_logpdf, r, f), argnums=(0, 1))(resid, factor)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-9)


def test_second_derivatives_and_broadcasting():
    """The closed-form derivative is itself differentiable (Hessians) and shapes broadcast."""
    resid, cov = _problem(3, (4,), 0)
    hess = jax.hessian(lambda r: jnp.sum(gaussian_logpdf(r, jnp.asarray(cov))))(resid)
    want = jax.hessian(lambda r: jnp.sum(_lapack_logpdf(r, jnp.asarray(cov))))(resid)
    np.testing.assert_allclose(hess, want, rtol=1e-9, atol=1e-12)
    # resid (K, 1, p) against cov (C, p, p) -> (K, C)
    out = gaussian_logpdf(jnp.asarray(resid)[:, None], jnp.asarray(cov)[:3])
    assert out.shape == (4, 3)
    np.testing.assert_allclose(out[2, 1], _lapack_logpdf(resid[2], cov[1]), rtol=1e-12)


def test_not_positive_definite_is_nan():
    cov = jnp.asarray([[[1.0, 2.0], [2.0, 1.0]]])
    assert np.isnan(gaussian_logpdf(jnp.zeros((1, 2)), cov)).all()


def _mixture_reference(log_weights, loc, scale_var, value, noise_var):
    """Reference: scipy-free logsumexp of the component densities, differentiated by JAX."""
    total = scale_var[None, :] + noise_var[:, None]  # (K, C)
    resid = value[:, None] - loc[None, :]
    log_joint = log_weights - 0.5 * (resid**2 / total + jnp.log(2 * jnp.pi * total))
    return jax.nn.logsumexp(log_joint, axis=-1)


def _mixture_problem(seed, n_tasks=9, n_comp=4):
    rng = np.random.default_rng(seed)
    log_weights = np.log(rng.dirichlet(np.ones(n_comp)))
    return tuple(jnp.asarray(a) for a in (
        log_weights, rng.normal(0, 1, n_comp), rng.uniform(0.05, 1.0, n_comp),
        rng.normal(0, 1.5, n_tasks), rng.uniform(0.02, 0.3, n_tasks)))


def test_mixture_value_and_every_derivative_match_autodiff():
    """All five arguments' gradients (of a non-linear function of the output), and the
    value against scipy's normal density summed by hand."""
    from scipy.stats import norm

    args = _mixture_problem(0)
    log_weights, loc, scale_var, value, noise_var = (np.asarray(a) for a in args)
    by_hand = np.log(np.sum(np.exp(log_weights)[None] * norm.pdf(
        value[:, None], loc[None], np.sqrt(scale_var[None] + noise_var[:, None])), axis=1))
    np.testing.assert_allclose(normal_mixture_logpdf(*args), by_hand, rtol=1e-12)

    def total(fn, *a):
        return jnp.sum(jnp.sin(fn(*a)))

    got = jax.jit(jax.grad(lambda *a: total(normal_mixture_logpdf, *a), argnums=range(5)))(*args)
    want = jax.jit(jax.grad(lambda *a: total(_mixture_reference, *a), argnums=range(5)))(*args)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
    # forward mode against finite differences, and a Hessian (the rule differentiates again)
    check_grads(normal_mixture_logpdf, args, order=1, modes=("fwd",))
    hessian = jax.jit(jax.hessian(lambda m: total(normal_mixture_logpdf, args[0], m,
                                                  *args[2:])))
    reference = jax.jit(jax.hessian(lambda m: total(_mixture_reference, args[0], m, *args[2:])))
    np.testing.assert_allclose(hessian(args[1]), reference(args[1]), rtol=1e-9, atol=1e-12)


def test_mixture_empty_component_and_vmap():
    """A weight of exactly zero (log π = −∞) is ignored, with finite gradients; vmapped
    chains give the unbatched answers."""
    log_weights, loc, scale_var, value, noise_var = _mixture_problem(1)
    with_empty = jnp.concatenate([log_weights, jnp.array([-jnp.inf])])
    loc5, var5 = jnp.append(loc, 0.3), jnp.append(scale_var, 0.5)
    np.testing.assert_allclose(
        normal_mixture_logpdf(with_empty, loc5, var5, value, noise_var),
        normal_mixture_logpdf(log_weights, loc, scale_var, value, noise_var), rtol=1e-13)
    grads = jax.grad(lambda lw, m: jnp.sum(normal_mixture_logpdf(lw, m, var5, value,
                                                                  noise_var)),
                     argnums=(0, 1))(with_empty, loc5)
    assert all(np.isfinite(g).all() for g in grads) and grads[1][-1] == 0.0
    batch = jnp.stack([loc, loc + 0.5])
    out = jax.vmap(lambda m: normal_mixture_logpdf(log_weights, m, scale_var, value,
                                                   noise_var))(batch)
    np.testing.assert_allclose(
        out[1], normal_mixture_logpdf(log_weights, loc + 0.5, scale_var, value, noise_var),
        rtol=1e-13)


def test_cluster_likelihood_takes_the_scalar_route_with_the_same_value_and_gradient():
    """The cluster family's collapsed likelihood for p = 1 (this function) against its
    general p-dimensional route (component densities and logsumexp)."""
    from bayesfuse.families.cluster import CollapsedMixture, component_loglik

    log_weights, loc, scale_var, value, noise_var = _mixture_problem(2)

    def both(loc):
        mixture = CollapsedMixture(log_weights, loc[:, None], scale_var[:, None, None],
                                   noise_var[:, None, None])
        general = jax.nn.logsumexp(log_weights + component_loglik(
            value[:, None], loc[:, None], scale_var[:, None, None], noise_var[:, None, None]),
            axis=-1)
        return jnp.sum(mixture.log_prob(value[:, None])), jnp.sum(general)

    (fast, general), (d_fast, d_general) = both(loc), jax.jacrev(both)(loc)
    np.testing.assert_allclose(fast, general, rtol=1e-13)
    np.testing.assert_allclose(d_fast, d_general, rtol=1e-10)
