"""The robust family's quadrature over the Student-t mixing variables λₖ."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_sampled_well
from scipy import integrate, special

import bayesfuse as bf
from bayesfuse.families.exchangeable import scale_mixture_posterior

jax.config.update("jax_enable_x64", True)  # as every fit runs (bayesfuse.inference.runtime)


def _log_integrand(s, nu, resid, prior_cov, cov):
    """log[Gamma(eˢ; ν/2, ν/2) eˢ N(resid; 0, e⁻ˢT + V)] from the definitions; s scalar or
    a 1-D array."""
    s = np.atleast_1d(np.asarray(s, dtype=float))
    out = np.full(s.shape, -np.inf)
    ok = np.abs(s) < 150  # beyond any mass; keeps exp(∓s) finite
    s_ok = s[ok]
    a = nu / 2
    log_prior = a * (s_ok - np.exp(s_ok) + np.log(a)) - special.gammaln(a)
    total = np.exp(-s_ok)[:, None, None] * prior_cov + cov
    _, log_det = np.linalg.slogdet(total)
    quad = np.einsum("i,nij,j->n", resid, np.linalg.inv(total), resid)
    out[ok] = log_prior - 0.5 * (quad + log_det + len(resid) * np.log(2 * np.pi))
    return out if out.size > 1 else float(out[0])


def _reference(nu, resid, prior_cov, cov, log_moment=None):
    """log ∫ f(s) ds (or E[exp(log_moment(s))] under f) by adaptive quadrature."""
    grid = np.linspace(-80.0, 20.0, 20_001)
    values = _log_integrand(grid, nu, resid, prior_cov, cov)
    peak, top = grid[np.argmax(values)], values.max()
    pieces = [(-np.inf, peak - 30), (peak - 30, peak), (peak, peak + 30), (peak + 30, np.inf)]

    def integral(fn):
        return sum(integrate.quad(fn, a, b, limit=400, epsabs=0, epsrel=1e-12)[0]
                   for a, b in pieces)

    mass = integral(lambda s: np.exp(_log_integrand(s, nu, resid, prior_cov, cov) - top))
    if log_moment is None:
        return np.log(mass) + top
    return integral(lambda s: np.exp(
        log_moment(s) + _log_integrand(s, nu, resid, prior_cov, cov) - top)) / mass


CASES = list(itertools.product([0.5, 2.0, 30.0, 300.0], [0.01, 0.3], [0.01, 1.0],
                               [0.0, 1.0, 50.0]))


def test_scalar_marginal_matches_adaptive_quadrature():
    """p = 1 over ν 0.5–300, τ 0.01–0.3, V 0.01–1 and residuals up to 50 (a far outlier):
    the 2×64-node rule agrees with scipy's adaptive quadrature to 1e-6 in log density."""
    errors = []
    quadrature = jax.jit(scale_mixture_posterior)  # one compilation for every case
    for nu, tau, var, resid in CASES:
        ours = quadrature(jnp.float64(nu), jnp.zeros(1), jnp.array([[tau]]),
                                       jnp.array([[resid]]), jnp.array([[[var]]]),
                                       jnp.array([[[var**0.5]]]))[0]
        errors.append(abs(float(ours[0]) - _reference(nu, np.array([resid]),
                                                      np.array([[tau**2]]),
                                                      np.array([[var]]))))
    assert max(errors) < 1e-6, max(errors)


def test_vector_marginal_and_batching_match_adaptive_quadrature():
    """p = 2 with a full T and full, different Vₖ, all tasks in one call."""
    rng = np.random.default_rng(0)
    chol = np.array([[0.4, 0.0], [0.25, 0.3]])
    resid = np.array([[0.1, -0.2], [2.0, 1.5], [-8.0, 6.0]])
    cov = np.stack([np.array([[v, 0.3 * v], [0.3 * v, 1.5 * v]])
                    for v in rng.uniform(0.02, 0.5, 3)])
    for nu in (1.0, 8.0, 80.0):
        ours = scale_mixture_posterior(jnp.float64(nu), jnp.zeros(2), jnp.asarray(chol),
                                       jnp.asarray(resid), jnp.asarray(cov),
                                       jnp.asarray(np.linalg.cholesky(cov)))[0]
        ref = [_reference(nu, resid[k], chol @ chol.T, cov[k]) for k in range(3)]
        np.testing.assert_allclose(np.asarray(ours), ref, atol=1e-7)


def test_gradient_is_the_gradient_of_the_marginal():
    """Node placement is held fixed when differentiating; the gradient must still be that
    of the marginal density (central differences of the value, which re-places nodes)."""
    theta_hat = jnp.array([[0.1], [0.5], [-0.3], [6.0]])
    cov = jnp.full((4, 1, 1), 0.04)

    @jax.jit
    def total(x):
        mu, log_tau, log_nu = x
        return scale_mixture_posterior(jnp.exp(log_nu), mu[None], jnp.exp(log_tau)[None, None],
                                       theta_hat, cov, jnp.sqrt(cov))[0].sum()

    gradient = jax.jit(jax.grad(total))
    for point in ([0.1, -1.0, 0.5], [0.3, -2.5, 3.0], [-0.2, 0.5, -0.5]):
        x = jnp.array(point)
        step = 1e-5
        numeric = [(total(x.at[i].add(step)) - total(x.at[i].add(-step))) / (2 * step)
                   for i in range(3)]
        np.testing.assert_allclose(np.asarray(gradient(x)), numeric, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", ["full", "repeated eigenvalues"])
def test_vector_gradient_through_the_eigendecomposition(case):
    """p = 2: each node's Gaussian is evaluated from the eigenpairs of W = Lᵥ⁻¹TLᵥ⁻ᵀ with a
    hand-written derivative (no eigenvalue gaps in it). Its gradient in μ, the Cholesky
    factor of T, ν and θ̂ must equal central differences of the value — also where W has a
    repeated eigenvalue (T ∝ Vₖ), where differentiating ``eigh`` itself gives NaN."""
    rng = np.random.default_rng(3)
    if case == "full":
        cov = np.stack([np.array([[v, 0.3 * v], [0.3 * v, 1.5 * v]])
                        for v in rng.uniform(0.02, 0.5, 4)])
        chol0 = np.array([[0.4, 0.0], [0.25, 0.3]])
    else:
        cov = np.stack([v * np.eye(2) for v in rng.uniform(0.02, 0.5, 4)])
        chol0 = 0.4 * np.eye(2)
    cov_chol = jnp.asarray(np.linalg.cholesky(cov))
    theta_hat0 = np.array([[0.1, -0.2], [0.6, 0.4], [-0.5, 0.3], [4.0, -3.0]])

    @jax.jit
    def total(x):
        mu, chol_entries, log_nu, theta_hat = x[:2], x[2:5], x[5], x[6:].reshape(4, 2)
        chol = jnp.array([[chol_entries[0], 0.0], [chol_entries[1], chol_entries[2]]])
        return scale_mixture_posterior(jnp.exp(log_nu), mu, chol, theta_hat, jnp.asarray(cov),
                                       cov_chol)[0].sum()

    x = jnp.concatenate([jnp.array([0.1, -0.1, chol0[0, 0], chol0[1, 0], chol0[1, 1],
                                    np.log(4.0)]), jnp.asarray(theta_hat0).ravel()])
    grad = np.asarray(jax.jit(jax.grad(total))(x))
    assert np.all(np.isfinite(grad))
    step = 1e-6
    numeric = np.array([(total(x.at[i].add(step)) - total(x.at[i].add(-step))) / (2 * step)
                        for i in range(x.size)])
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6)


def test_task_scale_draws_follow_the_conditional_of_lambda():
    """Per posterior draw, 1/√λₖ is drawn on the quadrature nodes; over many draws at one
    φ its mean equals E[e^(−s/2) | φ, θ̂ₖ] by adaptive quadrature (4 Monte Carlo SEs)."""
    est = bf.TaskEstimates(["a", "b", "c"], [0.1, 1.2, 5.0], [0.04, 0.09, 0.04])
    family = bf.families.get_family("robust")(est)
    data = {k: jnp.asarray(v) for k, v in family.data().items()}
    draw = {"mu": jnp.array([0.2]), "tau": jnp.array([0.5]), "nu": jnp.float64(3.0)}
    keys = jax.random.split(jax.random.PRNGKey(0), 20_000)
    scales = np.asarray(jax.jit(jax.vmap(
        lambda k: family.extra_draws(k, data, draw)["task_scale"]))(keys))
    for k in range(3):
        expected = _reference(3.0, np.array([est.estimates[k, 0] - 0.2]), np.array([[0.25]]),
                              est.covariances[k], log_moment=lambda s: -s / 2)
        mcse = scales[:, k].std() / np.sqrt(len(scales))
        assert abs(scales[:, k].mean() - expected) < 4 * mcse, (k, expected)
    # the far task is the outlying one
    assert scales[:, 2].mean() > 2 * scales[:, 0].mean()


@pytest.mark.slow
@pytest.mark.parametrize("n_tasks", [100])
def test_robust_mixes_at_larger_k(n_tasks):
    """With λ integrated out, ν no longer mixes slowly against K mixing variables."""
    rng = np.random.default_rng(1)
    theta = 0.3 + 0.4 * rng.standard_normal(n_tasks)
    theta[0] = 4.0
    se = rng.uniform(0.15, 0.35, n_tasks)
    est = bf.TaskEstimates([f"t{k}" for k in range(n_tasks)],
                           theta + se * rng.standard_normal(n_tasks), se**2)
    fit = bf.fuse(est, model="robust", seed=0, warn=False)
    assert_sampled_well(fit)


def test_vector_pooling_weight_matches_the_per_node_formula():
    """p = 2: the pooling weight averaged over λₖ | φ, θ̂ₖ (computed from W's eigenpairs)
    equals Σⱼ P(sⱼ) diag(Vₖ(e^(−sⱼ)T + Vₖ)⁻¹) computed node by node with dense inverses."""
    rng = np.random.default_rng(4)
    cov = np.stack([np.array([[v, 0.4 * v], [0.4 * v, 2.0 * v]])
                    for v in rng.uniform(0.02, 0.5, 5)])
    theta_hat = np.array([[0.1, 0.2], [1.0, -0.5], [-0.3, 0.4], [6.0, -4.0], [0.0, 0.0]])
    est = bf.TaskEstimates([f"t{k}" for k in range(5)], theta_hat, cov, params=["a", "b"])
    family = bf.families.get_family("robust")(est)
    data = {k: jnp.asarray(v) for k, v in family.data().items()}
    corr_chol = np.linalg.cholesky(np.array([[1.0, 0.5], [0.5, 1.0]]))
    draw = {"mu": jnp.array([0.1, -0.1]), "tau": jnp.array([0.5, 0.3]),
            "corr_chol": jnp.asarray(corr_chol), "nu": jnp.float64(3.0)}
    ours = np.asarray(family.pooling_weight(data, draw))
    _, nodes, log_prob = (np.asarray(a) for a in family._scale_posterior(data, draw))
    prior_chol = np.diag([0.5, 0.3]) @ corr_chol
    prior_cov = prior_chol @ prior_chol.T
    expected = np.zeros((5, 2))
    for k in range(5):
        for s, lp in zip(nodes[k], log_prob[k], strict=True):
            if np.isfinite(lp):
                total = np.exp(-s) * prior_cov + cov[k]
                expected[k] += np.exp(lp) * np.diag(cov[k] @ np.linalg.inv(total))
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-12)
    assert ours[3].max() < ours[0].min()  # the outlying task is pooled least
