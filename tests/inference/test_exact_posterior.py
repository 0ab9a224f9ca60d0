"""The exchangeable posterior against the exact one (quadrature over τ).

For θ̂ₖ ~ N(θₖ, σₖ²), θₖ ~ N(μ, τ²), μ ~ N(m₀, s₀²), the posterior of τ is known up to a
1-D integral, and μ and θ are Gaussian given τ. We integrate on a fine grid with scipy
(independently of bayesfuse's code) and compare NUTS means within 5 Monte Carlo standard
errors and standard deviations within 12%. ``method="exact"`` (numpy, no compilation) is
checked the same way, its grid over τ against adaptive quadrature to 1e-5, its per-draw
outputs against the model's formulas, and its posterior against the previous JAX path.
"""

from __future__ import annotations

import arviz as az
import jax
import numpy as np
import pytest
from helpers import assert_sampled_well, simulate_exchangeable
from scipy import integrate, stats
from scipy.integrate import trapezoid

import bayesfuse as bf
from bayesfuse.cli import main
from bayesfuse.inference import draws as per_draw
from bayesfuse.inference import exact
from bayesfuse.inference.fuse import prepare
from bayesfuse.specs.priors import parse_prior


def exact_posterior(y, sigma, m0, s0, tau_logpdf, tau_max, n_grid=40001):
    """Posterior mean and sd of mu, tau and each theta_k by quadrature over tau."""
    y, sigma = np.asarray(y, float), np.asarray(sigma, float)
    tau = np.linspace(0.0, tau_max, n_grid)[1:]
    var = sigma[None, :] ** 2 + tau[:, None] ** 2  # (G, K)
    w = 1 / var
    v_mu = 1 / (1 / s0**2 + w.sum(1))
    m_mu = v_mu * (m0 / s0**2 + (w * y).sum(1))
    # log p(y | tau) with mu integrated out: y ~ N(m0 1, diag(var) + s0^2 11')
    log_lik = (
        -0.5 * np.log(var).sum(1) + 0.5 * np.log(v_mu) - 0.5 * np.log(s0**2)
        - 0.5 * ((w * y**2).sum(1) + m0**2 / s0**2 - m_mu**2 / v_mu)
    )
    log_post = log_lik + tau_logpdf(tau)
    dens = np.exp(log_post - log_post.max())
    dens /= trapezoid(dens, tau)

    def moments(mean_given, var_given):
        m = trapezoid(mean_given * dens[:, None], tau, axis=0)
        second = trapezoid((var_given + mean_given**2) * dens[:, None], tau, axis=0)
        return m, np.sqrt(second - m**2)

    shrink = tau[:, None] ** 2 / var  # weight of y_k in E[theta_k | tau, mu]
    th_mean = m_mu[:, None] + shrink * (y - m_mu[:, None])
    th_var = tau[:, None] ** 2 * sigma**2 / var + (1 - shrink) ** 2 * v_mu[:, None]
    out = {"theta": moments(th_mean, th_var)}
    out["mu"] = tuple(a[0] for a in moments(m_mu[:, None], v_mu[:, None]))
    out["tau"] = tuple(a[0] for a in moments(tau[:, None], np.zeros((len(tau), 1))))
    assert dens[-1] < 1e-8 * dens.max(), "tau grid too short"
    return out


def _check(draws, exact_mean, exact_sd, label):
    """draws: (chain, draw, n)."""
    for j in range(draws.shape[-1]):
        d = draws[..., j]
        mean, sd = d.mean(), d.std(ddof=1)
        mcse = float(np.ravel(az.mcse(d, method="mean"))[0])
        assert abs(mean - exact_mean[j]) < 5 * mcse, (
            f"{label}[{j}]: mean {mean:.4f} vs exact {exact_mean[j]:.4f} (mcse {mcse:.4f})")
        assert abs(sd / exact_sd[j] - 1) < 0.12, (
            f"{label}[{j}]: sd {sd:.4f} vs exact {exact_sd[j]:.4f}")


CASES = {
    "eight_schools": dict(mu=("normal", 0.0, 20.0), tau="halfcauchy(5)", tau_max=2000.0),
    "homogeneous": dict(mu=("normal", 1.0, 10.0), tau="halfnormal(2)", tau_max=20.0),
    "heterogeneous": dict(mu=("normal", 0.0, 10.0), tau="halfnormal(5)", tau_max=50.0),
}


def _data(case, eight_schools):
    if case == "eight_schools":
        return eight_schools
    if case == "homogeneous":
        return simulate_exchangeable(10, mu=1.0, tau=0.0, seed=11)
    return simulate_exchangeable(15, mu=-1.0, tau=2.0, seed=12)


@pytest.mark.parametrize("case", list(CASES))
def test_exchangeable_matches_quadrature(case, eight_schools):
    settings = CASES[case]
    est = _data(case, eight_schools)
    _, m0, s0 = settings["mu"]
    priors = {"mu": f"normal({m0}, {s0})", "tau": settings["tau"]}
    fit = bf.fuse(est, model="exchangeable", priors=priors, seed=3, warmup=700, draws=1500,
                  warn=False)
    tau_prior = parse_prior(settings["tau"])
    exact = exact_posterior(est.estimates[:, 0], est.se[:, 0], m0, s0,
                            lambda t: tau_prior.logpdf(t), settings["tau_max"])
    post = fit.idata.posterior
    assert_sampled_well(fit)
    _check(post["mu"].values, [exact["mu"][0]], [exact["mu"][1]], "mu")
    _check(post["tau"].values, [exact["tau"][0]], [exact["tau"][1]], "tau")
    _check(post["theta"].values[..., 0], exact["theta"][0], exact["theta"][1], "theta")
    # the summary table reports the same posterior means
    table = fit.summary()
    np.testing.assert_allclose(table["mean"], post["theta"].values.mean(axis=(0, 1))[:, 0])


def test_quadrature_reference_is_right():
    """The reference itself: with tau fixed near a point mass the posterior of mu is known."""
    y, sigma = np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 1.0])
    # tau prior concentrated near 1: halfnormal(1e-3) shifted is not available, so use a
    # narrow normal density around 1 (unnormalised is fine).
    exact = exact_posterior(y, sigma, 0.0, 100.0, lambda t: stats.norm.logpdf(t, 1.0, 1e-3),
                            1.5, n_grid=200001)
    var = sigma**2 + 1.0
    v_mu = 1 / (1 / 100.0**2 + (1 / var).sum())
    m_mu = v_mu * (y / var).sum()
    assert exact["mu"][0] == pytest.approx(m_mu, rel=1e-5)
    assert exact["mu"][1] == pytest.approx(np.sqrt(v_mu), rel=1e-3)
    assert exact["theta"][0][0] == pytest.approx(m_mu + 0.5 * (1 - m_mu), rel=1e-4)


@pytest.mark.parametrize("case", list(CASES))
def test_method_exact_matches_quadrature(case, eight_schools):
    """method="exact" (independent draws by quadrature in bayesfuse) vs this test's own
    quadrature: means within 5 standard errors of iid draws, sds within 5%."""
    settings = CASES[case]
    est = _data(case, eight_schools)
    _, m0, s0 = settings["mu"]
    priors = {"mu": f"normal({m0}, {s0})", "tau": settings["tau"]}
    fit = bf.fuse(est, model="exchangeable", priors=priors, seed=4, method="exact",
                  draws=2500, warn=False)
    assert fit.meta["method"] == "exact" and fit.diagnostics().ok
    tau_prior = parse_prior(settings["tau"])
    exact = exact_posterior(est.estimates[:, 0], est.se[:, 0], m0, s0,
                            lambda t: tau_prior.logpdf(t), settings["tau_max"])
    post = fit.idata.posterior
    n = post.sizes["chain"] * post.sizes["draw"]
    for name, values in (("mu", post["mu"].values[..., 0]), ("tau", post["tau"].values[..., 0])):
        mean, sd = exact[name]
        assert abs(values.mean() - mean) < 5 * sd / np.sqrt(n), name
        assert abs(values.std() / sd - 1) < 0.05, name
    theta = post["theta"].values[..., 0].reshape(n, -1)
    mean, sd = exact["theta"]
    assert np.all(np.abs(theta.mean(0) - mean) < 5 * sd / np.sqrt(n))
    np.testing.assert_allclose(theta.std(0), sd, rtol=0.05)


def test_method_exact_refuses_what_it_cannot_do(eight_schools):
    with pytest.raises(bf.errors.SpecError, match="normal prior on mu"):
        bf.fuse(eight_schools, priors={"mu": "cauchy(0, 10)"}, method="exact")
    with pytest.raises(bf.errors.SpecError, match="not available for family 'pooled'"):
        bf.fuse(eight_schools, model="pooled", method="exact")


def tau_moments_quad(y, sigma, m0, s0, tau_logpdf):
    """Posterior mean and sd of τ by adaptive quadrature over log τ (scipy's quad)."""
    y, var = np.asarray(y, float), np.asarray(sigma, float) ** 2

    def log_post(x):  # log p(log τ | y) up to a constant, μ integrated out
        tau2 = np.exp(2 * x)
        w = 1 / (var + tau2)
        v_mu = 1 / (1 / s0**2 + w.sum())
        m_mu = v_mu * (m0 / s0**2 + (w * y).sum())
        return (-0.5 * np.log(var + tau2).sum() + 0.5 * np.log(v_mu)
                - 0.5 * ((w * y**2).sum() - m_mu**2 / v_mu) + tau_logpdf(np.exp(x)) + x)

    xs = np.linspace(-25.0, 12.0, 1481)
    values = np.array([log_post(x) for x in xs])
    peak, top = xs[np.argmax(values)], values.max()
    integrals = [integrate.quad(lambda x, k=k: np.exp(log_post(x) - top + k * x), -40.0, 15.0,
                                points=[peak], limit=1000, epsabs=0.0, epsrel=1e-11)[0]
                 for k in (0, 1, 2)]
    mean = integrals[1] / integrals[0]
    return mean, np.sqrt(integrals[2] / integrals[0] - mean**2)


def _narrow_case():
    """Many precise tasks: the posterior of log τ is about 0.005 wide."""
    rng = np.random.default_rng(3)
    se = np.full(20_000, 0.1)
    est = bf.TaskEstimates([f"t{k}" for k in range(se.size)],
                           rng.normal(0.0, 1.0, se.size) + se * rng.standard_normal(se.size),
                           se**2)
    return est, {"mu": "normal(0, 5)", "tau": "halfnormal(2)"}


@pytest.mark.parametrize("case", [*CASES, "narrow"])
def test_exact_tau_grid_matches_adaptive_quadrature(case, eight_schools):
    """The grid over τ of method="exact" integrates τ's posterior moments to 1e-5."""
    if case == "narrow":
        est, priors = _narrow_case()
    else:
        settings = CASES[case]
        est = _data(case, eight_schools)
        _, m0, s0 = settings["mu"]
        priors = {"mu": f"normal({m0}, {s0})", "tau": settings["tau"]}
    _, _, family = prepare(est, "exchangeable", priors)
    y, var, m0, s0, tau_prior, scale = exact.exact_inputs(family)
    log_tau, density = exact.tau_grid(y, var, m0, s0, tau_prior, scale)
    tau = np.exp(log_tau)
    norm = trapezoid(density, log_tau)
    mean = trapezoid(tau * density, log_tau) / norm
    sd = np.sqrt(trapezoid(tau**2 * density, log_tau) / norm - mean**2)
    ref_mean, ref_sd = tau_moments_quad(y, np.sqrt(var), m0, s0, tau_prior.logpdf)
    assert mean == pytest.approx(ref_mean, rel=1e-5)
    assert sd == pytest.approx(ref_sd, rel=1e-5)
    # inverse-CDF draws of log τ follow the grid's density
    draws = exact.draw_log_tau(log_tau, density, np.random.default_rng(0).random(40_000))
    assert abs(np.exp(draws).mean() - ref_mean) < 5 * ref_sd / np.sqrt(draws.size)


def test_exact_draws_follow_the_model_given_tau(eight_schools):
    """Given each draw of τ (and μ), the other outputs are the model's formulas or its
    conditional normals: log-likelihood and pooling exactly, μ, θ and θ̂ standardised."""
    fit = bf.fuse(eight_schools, priors={"mu": "normal(0, 20)", "tau": "halfcauchy(5)"},
                  method="exact", seed=2, draws=4000)
    post = fit.idata.posterior
    mu, tau = post["mu"].values[..., 0], post["tau"].values[..., 0]
    y, var = eight_schools.estimates[:, 0], eight_schools.se[:, 0] ** 2
    total = var + tau[..., None] ** 2
    resid = y - mu[..., None]
    np.testing.assert_allclose(fit.idata.log_likelihood["theta_hat"].values,
                               stats.norm.logpdf(y, mu[..., None], np.sqrt(total)), rtol=1e-12)
    np.testing.assert_allclose(fit.idata.constant_data["pooling"].values[:, 0],
                               (var / total).mean(axis=(0, 1)), rtol=1e-12)
    # μ | τ, θ̂ ~ N(m, v) with v = 1/(1/s0² + Σ w), m = v (m0/s0² + Σ w y)
    prec = 1 / 20.0**2 + (1 / total).sum(-1)
    z_mu = (mu - (y / total).sum(-1) / prec) * np.sqrt(prec)
    gain = tau[..., None] ** 2 / total
    z_theta = ((post["theta"].values[..., 0] - mu[..., None] - gain * resid)
               / np.sqrt(gain * var))
    z_rep = ((fit.idata.posterior_predictive["theta_hat"].values[..., 0]
              - post["theta"].values[..., 0]) / np.sqrt(var))
    for z in (z_mu, z_theta, z_rep):
        assert abs(z.mean()) < 5 / np.sqrt(z.size)
        assert abs(z.std() - 1) < 0.02
    assert fit.timings.keys() == {"sampling_s", "postprocess_s", "prior_s"}


def test_exact_matches_the_previous_jax_path(eight_schools):
    """The numpy draws against the JAX path they replace (the family's grid over τ and the
    compiled per-draw map): the same posterior within Monte Carlo error."""
    est, priors, n = eight_schools, {"mu": "normal(0, 20)", "tau": "halfcauchy(5)"}, 8000
    fit = bf.fuse(est, priors=priors, method="exact", seed=1, chains=4, draws=n // 4)
    _, _, family = prepare(est, "exchangeable", priors)
    hyper = family.exact_hyper_draws(np.random.default_rng(1), n)
    data = {k: np.asarray(v) for k, v in family.data().items()}
    post_map = per_draw.postprocess_fn(family, True, data, n)
    theta, loglik, _, predictive, _ = post_map(hyper, jax.random.split(jax.random.PRNGKey(1), n),
                                               data)
    old = {"mu": hyper["mu"], "tau": hyper["tau"], "theta": np.asarray(theta)[..., 0],
           "loglik": np.asarray(loglik), "predictive": np.asarray(predictive)[..., 0]}
    new = {"mu": fit.idata.posterior["mu"].values.reshape(n, -1),
           "tau": fit.idata.posterior["tau"].values.reshape(n, -1),
           "theta": fit.idata.posterior["theta"].values.reshape(n, -1),
           "loglik": fit.idata.log_likelihood["theta_hat"].values.reshape(n, -1),
           "predictive": fit.idata.posterior_predictive["theta_hat"].values.reshape(n, -1)}
    for name in old:
        a, b = np.asarray(old[name], float), new[name]
        se = np.sqrt(a.var(0) / n + b.var(0) / n)
        assert np.all(np.abs(a.mean(0) - b.mean(0)) < 5 * se), name
        np.testing.assert_allclose(b.std(0), a.std(0), rtol=0.06, err_msg=name)


def test_exact_same_seed_same_draws(eight_schools, monkeypatch):
    """One generator per chain: the draws depend on the seed only, not on threads."""
    def posterior(seed):
        fit = bf.fuse(eight_schools, method="exact", seed=seed, chains=3, draws=500)
        return {k: v.values for k, v in fit.idata.posterior.items()}, fit

    first, fit = posterior(7)
    monkeypatch.setattr(exact.os, "cpu_count", lambda: 1)  # chains one after the other
    again, _ = posterior(7)
    other, _ = posterior(8)
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
        assert not np.array_equal(first[name], other[name])
    assert fit.meta["method"] == "exact" and fit.meta["backend"] == "exact"


def test_exact_prior_draws(eight_schools):
    fit = bf.fuse(eight_schools, priors={"mu": "normal(1, 2)", "tau": "halfstudent_t(3, 2)"},
                  method="exact", seed=0, prior_draws=4000)
    prior = fit.idata.prior
    assert prior["mu"].shape == (1, 4000, 1) and prior["theta"].shape == (1, 4000, 8, 1)
    assert fit.idata.prior_predictive["theta_hat"].shape == (1, 4000, 8, 1)
    tau = prior["tau"].values.ravel()
    assert tau.min() >= 0
    # halfstudent_t(3, 2): median 2·t₃⁻¹(0.75)
    assert np.median(tau) == pytest.approx(2 * stats.t.ppf(0.75, 3), rel=0.06)
    assert prior["mu"].values.mean() == pytest.approx(1.0, abs=5 * 2 / np.sqrt(4000))
    spread = (prior["theta"] - prior["mu"]).values[..., 0] / prior["tau"].values[..., None, 0]
    assert spread.std() == pytest.approx(1.0, rel=0.03)


def test_cli_method_exact(tmp_path, eight_schools, capsys):
    csv = eight_schools.to_csv(tmp_path / "estimates.csv")
    out = tmp_path / "fit.nc"
    assert main(["fuse", str(csv), "-o", str(out), "--method", "exact", "--seed", "2"]) == 0
    fit = bf.load_fit(out)
    assert fit.meta["method"] == "exact"
    capsys.readouterr()
    for args, message in (
        (["--model", "pooled", "--method", "exact"], "not available for family 'pooled'"),
        (["--method", "exact", "--prior", "mu=cauchy(0, 10)"], "normal prior on mu"),
        (["--method", "gibbs"], "--method must be one of 'nuts', 'exact'"),
    ):
        code = main(["fuse", str(csv), "-o", str(tmp_path / "x.nc"), *args])
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1, lines
        assert lines[0].startswith("error: ") and message in lines[0]
