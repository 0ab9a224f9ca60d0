"""Sensitivity analysis: power-scaling, prior sweeps, LOO influence, inflation, comparison.

Statistical checks compare importance-weighted answers with independent ones (an exact refit
with the power-scaled prior, a quadrature of the power-scaled posterior) to Monte Carlo
error. Fits use ``method="exact"`` (iid draws, quadrature over τ) to stay fast.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import optimize, stats

import bayesfuse as bf
from bayesfuse.analysis import sensitivity as sens
from bayesfuse.data.estimates import TaskEstimates
from tests.conftest import EIGHT_SCHOOLS_SE, EIGHT_SCHOOLS_Y

TIGHT = {"mu": "normal(0, 5)", "tau": "halfnormal(5)"}


@pytest.fixture(scope="module")
def tight_fit(eight_schools):
    """Eight schools with priors tight enough for power-scaling to move the posterior."""
    return bf.fuse(eight_schools, priors=TIGHT, method="exact", chains=4, draws=2000, seed=3)


def _weighted_mean_and_se(draws: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """Self-normalised IS mean of iid draws and its standard error (delta method)."""
    mean = float(weights @ draws)
    se = float(np.sqrt(np.sum(weights**2 * (draws - mean) ** 2)))
    return mean, se


# ---------------------------------------------------------------------- CJS distance
def test_cjs_distance_properties():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(4000)
    uniform = np.full(x.size, 1 / x.size)
    assert sens.cjs_distance(x, uniform) == pytest.approx(0.0, abs=1e-12)
    # exponential tilting by δ turns N(0, 1) into N(δ, 1): the distance grows with δ
    dists = [sens.cjs_distance(x, np.exp(d * x)) for d in (0.05, 0.2, 0.5, 1.0)]
    assert all(a < b for a, b in zip(dists, dists[1:], strict=False))
    assert 0 < dists[0] < dists[-1] <= 1
    # invariant to affine maps of the draws, and to the sign (the max over ±x is taken)
    w = np.exp(0.3 * x)
    both = sens.cjs_distance(np.column_stack([x, 3 * x + 7, -x]), w)
    assert both[1] == pytest.approx(both[0], rel=1e-9)
    assert both[2] == pytest.approx(both[0], rel=1e-9)
    with pytest.raises(sens.SensitivityError, match="weights must have shape"):
        sens.cjs_distance(x, w[:-1])


# ---------------------------------------------------------------------- power scaling
@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_prior_power_scaling_matches_refit(eight_schools, tight_fit, alpha):
    """normal(0, s)^α ∝ normal(0, s/√α) and halfnormal(s)^α ∝ halfnormal(s/√α): the
    importance-weighted posterior must agree with a refit under those priors."""
    weights, k = sens.powerscale_weights(tight_fit, alpha, "prior")
    assert k[0] < 0.5
    scale = 5 / math.sqrt(alpha)
    refit = bf.fuse(eight_schools, priors={"mu": f"normal(0, {scale!r})",
                                     "tau": f"halfnormal({scale!r})"},
                    method="exact", chains=4, draws=2000, seed=11)
    for name in ("mu", "tau"):
        draws = tight_fit.idata.posterior[name].values.reshape(-1)
        mean, se_is = _weighted_mean_and_se(draws, weights[0])
        ref = refit.idata.posterior[name].values.reshape(-1)
        se_ref = ref.std() / math.sqrt(ref.size)
        base = draws.mean()
        assert abs(mean - ref.mean()) < 4 * math.hypot(se_is, se_ref), (name, mean, ref.mean())
        # and the move is real: the power-scaled mean differs from the base mean
        assert abs(ref.mean() - base) > 4 * math.hypot(se_ref, draws.std() / math.sqrt(
            draws.size))


def _quadrature_means(alpha_prior: float, alpha_lik: float) -> dict[str, float]:
    """Posterior means of μ, τ of the power-scaled collapsed model on a 2-D grid."""
    y = np.asarray(EIGHT_SCHOOLS_Y)
    s2 = np.square(EIGHT_SCHOOLS_SE)
    mu = np.linspace(-25, 35, 601)
    tau = np.linspace(1e-4, 30, 600)
    m, t = np.meshgrid(mu, tau, indexing="ij")
    total = t[..., None] ** 2 + s2
    loglik = (-0.5 * (np.log(2 * np.pi * total) + (y - m[..., None]) ** 2 / total)).sum(-1)
    logprior = stats.norm.logpdf(m, 0, 5) + stats.halfnorm.logpdf(t, 0, 5)
    logpost = alpha_prior * logprior + alpha_lik * loglik
    dens = np.exp(logpost - logpost.max())
    dens /= dens.sum()
    return {"mu": float((dens * m).sum()), "tau": float((dens * t).sum())}


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_likelihood_power_scaling_matches_quadrature(tight_fit, alpha):
    weights, k = sens.powerscale_weights(tight_fit, alpha, "likelihood")
    assert k[0] < K_OK
    exact = _quadrature_means(1.0, alpha)
    for name in ("mu", "tau"):
        draws = tight_fit.idata.posterior[name].values.reshape(-1)
        mean, se = _weighted_mean_and_se(draws, weights[0])
        assert abs(mean - exact[name]) < 4 * se + 0.02, (name, mean, exact[name])
    # the prior weights against the same quadrature (a second, independent check)
    weights, _ = sens.powerscale_weights(tight_fit, alpha, "prior")
    exact = _quadrature_means(alpha, 1.0)
    draws = tight_fit.idata.posterior["tau"].values.reshape(-1)
    mean, se = _weighted_mean_and_se(draws, weights[0])
    assert abs(mean - exact["tau"]) < 4 * se + 0.02


K_OK = 0.7


def test_log_prior_draws_match_scipy(tight_fit):
    post = tight_fit.idata.posterior
    mu, tau = post["mu"].values.reshape(-1), post["tau"].values.reshape(-1)
    expected = stats.norm.logpdf(mu, 0, 5) + stats.halfnorm.logpdf(tau, 0, 5)
    np.testing.assert_allclose(sens.log_prior_draws(tight_fit), expected, rtol=1e-10)
    np.testing.assert_allclose(sens.log_prior_draws(tight_fit, ["mu"]),
                               stats.norm.logpdf(mu, 0, 5), rtol=1e-10)
    with pytest.raises(sens.SensitivityError, match="valid blocks: mu, tau"):
        sens.log_prior_draws(tight_fit, ["sigma"])


def test_power_scaling_flags_prior_data_conflict():
    """Tiny-SE data far from a tight prior on μ: μ is flagged as a prior-data conflict."""
    rng = np.random.default_rng(0)
    se = np.full(8, 0.2)
    theta_hat = 5 + 0.3 * rng.standard_normal(8) + se * rng.standard_normal(8)
    est = TaskEstimates([f"t{k}" for k in range(8)], theta_hat, se**2)
    fit = bf.fuse(est, priors={"mu": "normal(0, 1)", "tau": "halfnormal(1)"},
                  method="exact", chains=4, draws=1000, seed=1)
    table = sens.power_scaling(fit).set_index("variable")
    assert table.loc["mu", "diagnosis"] == "prior-data conflict"
    assert table.loc["mu", "prior_sensitivity"] > 0.05
    assert table.loc["mu", "likelihood_sensitivity"] > 0.05
    assert (table["pareto_k_prior"] < 0.7).all()
    # only μ's prior is the culprit: scaling τ's prior alone leaves μ unflagged
    tau_only = sens.power_scaling(fit, prior_blocks=["tau"], variables=["mu"])
    assert tau_only.loc[0, "prior_sensitivity"] < table.loc["mu", "prior_sensitivity"] / 2


def test_power_scaling_weak_prior_not_flagged(eight_schools):
    fit = bf.fuse(eight_schools, priors={"mu": "normal(0, 100)", "tau": "halfcauchy(5)"},
                  method="exact", chains=4, draws=1000, seed=1)
    table = sens.power_scaling(fit).set_index("variable")
    assert table.loc["mu", "diagnosis"] == "-"
    assert table.loc["mu", "prior_sensitivity"] < 0.05
    assert set(table["diagnosis"]) <= set(sens.DIAGNOSES)
    assert list(table.index[:2]) == ["mu", "tau"] and len(table) == 10
    seq = sens.power_scaling_sequence(fit, alphas=(0.5, 1.0, 2.0))
    at_one = seq[(seq["alpha"] == 1.0) & (seq["variable"] == "mu")]
    assert np.allclose(at_one["mean"], table.loc["mu", "mean"])  # α = 1 is the posterior


def test_power_scaling_input_errors(tight_fit):
    with pytest.raises(sens.SensitivityError, match="lower_alpha < 1 < upper_alpha"):
        sens.power_scaling(tight_fit, lower_alpha=1.1)
    with pytest.raises(sens.SensitivityError, match="Unknown variable"):
        sens.power_scaling(tight_fit, variables=["sigma"])
    with pytest.raises(sens.SensitivityError, match="alpha must be positive"):
        sens.powerscale_weights(tight_fit, -1.0)
    with pytest.raises(sens.SensitivityError, match="FusionResult"):
        sens.power_scaling("fit.nc")


# ---------------------------------------------------------------------- prior sweep
def test_prior_sweep(eight_schools, tight_fit):
    grid = {"tau": ["halfnormal(1)", "halfnormal(50)"]}
    # from estimates: the base fit is made with the given priors and settings
    table = sens.prior_sweep(eight_schools, grid, priors=TIGHT, method="exact", chains=4,
                             draws=2000, seed=3)
    assert list(dict.fromkeys(table["setting"])) == [
        "base", "tau=halfnormal(1)", "tau=halfnormal(50)"]
    hyper = table[table["kind"] == "hyper"].set_index(["setting", "variable"])
    base = tight_fit.hyper_summary()
    assert hyper.loc[("base", "tau"), "mean"] == pytest.approx(base.loc["tau", "mean"],
                                                               rel=1e-12)
    # the refit is the fit one would get by hand: same spec, other priors as used, same seed
    direct = bf.fuse(eight_schools, priors={"mu": "normal(0, 5)", "tau": "halfnormal(1)"},
                     method="exact", chains=4, draws=2000, seed=3)
    assert hyper.loc[("tau=halfnormal(1)", "mu"), "mean"] == pytest.approx(
        direct.hyper_summary().loc["mu", "mean"], rel=1e-12)
    # a tighter prior on τ shrinks τ and pulls the fused means together
    assert hyper.loc[("tau=halfnormal(1)", "tau"), "mean"] < hyper.loc[
        ("tau=halfnormal(50)", "tau"), "mean"]
    theta = table[table["kind"] == "theta"]
    spread = theta.groupby("setting")["mean"].std()
    assert spread["tau=halfnormal(1)"] < spread["tau=halfnormal(50)"]
    with pytest.raises(sens.SensitivityError, match="non-empty list"):
        sens.prior_sweep(tight_fit, {"tau": "halfnormal(1)"})
    assert sens.default_sweep(tight_fit)["tau"] == [
        "halfnormal(2.5)", "halfnormal(10)", "halfcauchy(5)", "exponential(0.2)"]


# ---------------------------------------------------------------------- LOO influence
def test_loo_influence_finds_planted_task():
    """An outlying task with a small SE moves μ, τ and the others most."""
    rng = np.random.default_rng(4)
    theta_hat = np.append(rng.standard_normal(10), 6.0)
    se = np.append(np.full(10, 1.0), 0.3)
    tasks = [f"t{k}" for k in range(10)] + ["planted"]
    est = TaskEstimates(tasks, theta_hat, se**2)
    fit = bf.fuse(est, priors={"mu": "normal(0, 10)", "tau": "halfnormal(3)"},
                  method="exact", chains=4, draws=1000, seed=2)
    table = sens.loo_influence(fit)
    top = table.sort_values("rank").iloc[0]
    assert top["task"] == "planted"
    assert top["influence"] > 2 * table.sort_values("rank").iloc[1]["influence"]
    assert top["delta_mu"] < 0  # without the task at 6, μ drops
    planted = table.set_index("task").loc["planted"]
    assert planted["method"] == ("refit" if planted["pareto_k"] > 0.7 else "psis")
    assert set(table["method"]) <= {"psis", "refit"}
    detail = table.attrs["detail"]
    assert not ((detail["left_out"] == "t0") & (detail["variable"] == "theta[t0]")).any()

    # PSIS vs an exact refit for a well-behaved task, to Monte Carlo error
    low = table[table["pareto_k"] < 0.5].iloc[0]
    refit = bf.fuse(est.drop([low["task"]]), priors=fit.priors, method="exact",
                    chains=4, draws=4000, seed=5)
    mu_full = fit.idata.posterior["mu"].values.reshape(-1)
    mu_refit = refit.idata.posterior["mu"].values.reshape(-1)
    expected = mu_refit.mean() - mu_full.mean()
    tol = 4 * mu_full.std() * math.sqrt(1 / mu_full.size + 1 / mu_refit.size) + 0.02
    assert abs(low["delta_mu"] - expected) < tol


# ---------------------------------------------------------------------- inflation
def test_inflation(eight_schools, tight_fit):
    table = sens.inflation(tight_fit, (1, 4))
    hyper = table[table["kind"] == "hyper"].set_index(["factor", "variable"])
    summary = tight_fit.summary()
    theta1 = table[(table["factor"] == 1) & (table["kind"] == "theta")]
    np.testing.assert_allclose(theta1["mean"].to_numpy(), summary["mean"].to_numpy())
    direct = bf.fuse(eight_schools.inflate(4), priors=tight_fit.priors, method="exact", chains=4,
                     draws=2000, seed=3)
    assert hyper.loc[(4.0, "mu"), "mean"] == pytest.approx(
        direct.hyper_summary().loc["mu", "mean"], rel=1e-12)
    # noisier stage-1 estimates: wider intervals for μ and more shrinkage of the tasks
    width = hyper["eti_high"] - hyper["eti_low"]
    assert width.loc[(4.0, "mu")] > width.loc[(1.0, "mu")]
    theta4 = table[(table["factor"] == 4) & (table["kind"] == "theta")]
    assert theta4["mean"].std() < theta1["mean"].std()
    with pytest.raises(sens.SensitivityError, match="positive numbers"):
        sens.inflation(tight_fit, (1, -2))


# ---------------------------------------------------------------------- comparison
def _stacking_weights(elpd_i: np.ndarray) -> np.ndarray:
    """Stacking of predictive distributions (Yao et al. 2018): maximise
    Σᵢ log Σₘ wₘ exp(elpdᵢₘ) over the simplex, by softmax parameters."""
    dens = np.exp(elpd_i - elpd_i.max(axis=1, keepdims=True))

    def loss(z):
        w = np.exp(z - z.max())
        w /= w.sum()
        return -np.log(dens @ w).sum()

    best = optimize.minimize(loss, np.zeros(elpd_i.shape[1]), method="Nelder-Mead",
                             options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 20000})
    w = np.exp(best.x - best.x.max())
    return w / w.sum()


def test_compare_reports_stacking_weights(eight_schools, tight_fit):
    pooled_like = bf.fuse(eight_schools, priors={"mu": "normal(0, 5)", "tau": "halfnormal(0.1)"},
                          method="exact", chains=4, draws=2000, seed=3)
    wide = bf.fuse(eight_schools, priors={"mu": "normal(0, 5)", "tau": "halfnormal(40)"},
                   method="exact", chains=4, draws=2000, seed=3)
    fits = {"tight": tight_fit, "pooled_like": pooled_like, "wide": wide}
    table = bf.compare(fits)
    assert set(table.index) == set(fits)
    assert table["weight"].sum() == pytest.approx(1.0, abs=1e-6)
    elpd = np.column_stack([fits[n].loo(pointwise=True).loo_i.values for n in fits])
    expected = dict(zip(fits, _stacking_weights(elpd), strict=True))
    for name in fits:
        assert table.loc[name, "weight"] == pytest.approx(expected[name], abs=0.02)
    pseudo = bf.compare(fits, method="BB-pseudo-BMA")
    assert pseudo["weight"].sum() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.slow
def test_compare_families_with_nuts(eight_schools):
    fit = bf.fuse(eight_schools, chains=2, draws=500, warmup=500, seed=0, warn=False)
    table = sens.compare_families(fit, ("pooled", "independent"))
    assert set(table.index) == {"exchangeable", "pooled", "independent"}
    assert table["weight"].sum() == pytest.approx(1.0, abs=1e-6)


# ---------------------------------------------------------------------- report and CLI
def _no_external_requests(text: str) -> bool:
    lowered = text.lower()
    return not any(s in lowered for s in ("src='http", 'src="http', "href='http",
                                          'href="http', "<script src", "<link", "@import",
                                          "url(http"))


def test_sensitivity_report_html(tmp_path, tight_fit):
    path = tmp_path / "sens.html"
    with warnings.catch_warnings():
        warnings.simplefilter("error", sens.SensitivityWarning)
        result = sens.sensitivity_report(tight_fit, path, sweep={"tau": ["halfnormal(20)"]},
                                         factors=(1, 2))
    text = path.read_text(encoding="utf-8")
    assert isinstance(result, sens.SensitivityResult)
    for section in ("power-scaling", "prior-sweep", "loo-influence", "inflation"):
        assert f"id='{section}'" in text
    for fig in ("power_scaling", "power_sequence", "prior_sweep", "loo_influence",
                "inflation"):
        assert f"id='fig-{fig}'" in text
    assert text.count("data:image/png;base64,") == 5
    assert _no_external_requests(text)
    assert "theta[A]" in text and "prior_sensitivity" in text
    assert set(result.prior_sweep["setting"]) == {"base", "tau=halfnormal(20)"}
    assert sorted(set(result.inflation["factor"])) == [1.0, 2.0]
    with pytest.raises(bf.BayesfuseError, match="exists"):
        sens.sensitivity_report(result, path, force=False)


def test_cli_sensitivity(tmp_path, tight_fit):
    from bayesfuse.cli import main

    fit_path = tmp_path / "fit.nc"
    tight_fit.save(fit_path)
    out = tmp_path / "sensitivity.html"
    args = ["sensitivity", str(fit_path), "-o", str(out), "--factors", "1,2",
            "--sweep", "tau=halfnormal(20)", "--families", "none", "--csv-dir",
            str(tmp_path)]
    assert main(args) == 0
    text = out.read_text(encoding="utf-8")
    assert "id='fig-power_scaling'" in text and _no_external_requests(text)
    assert (tmp_path / "power_scaling.csv").is_file()
    assert main(args) == 2  # exists, no --force
    quick = ["sensitivity", str(fit_path), "-o", str(out), "--sweep", "none", "--factors",
             "none", "--no-loo", "--families", "none", "--force"]
    assert main(quick) == 0
    text = out.read_text(encoding="utf-8")
    assert "id='power-scaling'" in text and "id='prior-sweep'" not in text
    assert main(["sensitivity", str(tmp_path / "missing.nc"), "-o",
                 str(tmp_path / "x.html")]) == 2
    assert main(args + ["--force", "--factors", "1,zero"]) == 2


@pytest.mark.slow
def test_log_prior_vector_theta_matches_numpyro():
    """p = 2 (LKJ correlation, per-element priors) and cluster (per-component μ, τ,
    concentration): the log prior equals NumPyro's log densities up to a constant."""
    import jax.numpy as jnp
    import numpyro.distributions as dist

    from bayesfuse.families.base import block_distribution

    rng = np.random.default_rng(0)
    n_tasks = 12
    theta_hat = rng.standard_normal((n_tasks, 2)) + np.array([1.0, -1.0])
    cov = np.einsum("k,ij->kij", rng.uniform(0.2, 0.5, n_tasks), [[1, 0.3], [0.3, 1]])
    est = TaskEstimates([f"t{k}" for k in range(n_tasks)], theta_hat, cov,
                        params=["read", "math"])
    for model, options in (("exchangeable", {}), ("cluster", {"max_clusters": 4})):
        fit = bf.fuse(est, model=model, chains=2, draws=300, warmup=300, seed=0, warn=False,
                      **options)
        post, priors = fit.idata.posterior, fit.family.priors
        n = post.sizes["chain"] * post.sizes["draw"]
        mu = jnp.asarray(post["mu"].values.reshape((n,) + post["mu"].shape[2:]))
        tau = jnp.asarray(post["tau"].values.reshape((n,) + post["tau"].shape[2:]))
        corr = jnp.asarray(post["corr"].values.reshape(n, 2, 2))
        expected = dist.LKJ(2, priors["corr"][0].args[0]).log_prob(corr)
        mu_lp = block_distribution(priors["mu"]).log_prob(mu)
        tau_lp = block_distribution(priors["tau"]).log_prob(tau)
        expected = expected + mu_lp.reshape(n, -1).sum(1) + tau_lp.reshape(n, -1).sum(1)
        if model == "cluster":
            conc = jnp.asarray(post["concentration"].values.reshape(n))
            expected = expected + priors["concentration"][0].numpyro().log_prob(conc)
        diff = sens.log_prior_draws(fit) - np.asarray(expected)
        assert np.ptp(diff) < 1e-8, model
        table = sens.power_scaling(fit, warn=False)
        assert table[["prior_sensitivity", "likelihood_sensitivity"]].notna().all().all()
