"""The batched Gaussian log density of the collapsed likelihoods against independent code."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

import bayesfuse.sampler  # noqa: F401  (double precision, as in every fit)
from bayesfuse.families._gaussian import gaussian_logpdf


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
