"""Stage 2 behaviour: forms agree, seeds reproduce, outputs are consistent, files round-trip."""

from __future__ import annotations

import arviz as az
import jax
import numpy as np
import pandas as pd
import pytest
from helpers import assert_sampled_well, vector_estimates

import bayesfuse as bf
from bayesfuse.data.estimates import TaskEstimates
from bayesfuse.errors import FitError, PriorError, SpecError
from bayesfuse.families.base import gaussian_conditional_draw

FAST = dict(chains=4, warmup=500, draws=1000, warn=False)


def _mcse(x):
    return float(np.ravel(az.mcse(x, method="mean"))[0])


def test_collapsed_and_noncentred_agree_vector():
    est = vector_estimates()
    a = bf.fuse(est, seed=1, **FAST)
    b = bf.fuse(est, seed=2, collapsed=False, target_accept=0.95, **FAST)
    for name in ("mu", "tau", "theta"):
        x = a.idata.posterior[name].values
        y = b.idata.posterior[name].values
        x2 = x.reshape(x.shape[0], x.shape[1], -1)
        y2 = y.reshape(y.shape[0], y.shape[1], -1)
        for j in range(x2.shape[-1]):
            tol = 5 * np.hypot(_mcse(x2[..., j]), _mcse(y2[..., j]))
            assert abs(x2[..., j].mean() - y2[..., j].mean()) < tol, (name, j)
    assert_sampled_well(a)
    corr = a.hyper_summary().loc["corr[read,math]", "mean"]
    assert 0 < corr < 1  # the simulated task effects are positively correlated


def test_same_seed_identical_draws_and_different_seed_differs(eight_schools):
    a = bf.fuse(eight_schools, seed=7, **FAST)
    b = bf.fuse(eight_schools, seed=7, **FAST)
    c = bf.fuse(eight_schools, seed=8, **FAST)
    for name in ("mu", "tau", "theta"):
        np.testing.assert_array_equal(a.idata.posterior[name].values,
                                      b.idata.posterior[name].values)
    assert not np.array_equal(a.idata.posterior["mu"].values, c.idata.posterior["mu"].values)


def test_conditional_draw_is_exact():
    """Matheron's rule gives the Gaussian posterior θ | θ̂ for fixed (μ, T)."""
    mean = np.array([[0.5, -1.0]])
    T = np.array([[2.0, 0.8], [0.8, 1.0]])
    V = np.array([[1.0, -0.3], [-0.3, 0.5]])
    theta_hat = np.array([[2.0, 1.0]])
    keys = jax.random.split(jax.random.PRNGKey(0), 40000)
    draws = jax.vmap(lambda k: gaussian_conditional_draw(
        k, mean, np.linalg.cholesky(T)[None], theta_hat, np.linalg.cholesky(V)[None]))(keys)
    draws = np.asarray(draws)[:, 0]
    post_cov = np.linalg.inv(np.linalg.inv(T) + np.linalg.inv(V))
    post_mean = post_cov @ (np.linalg.solve(T, mean[0]) + np.linalg.solve(V, theta_hat[0]))
    se = np.sqrt(np.diag(post_cov) / len(draws))
    assert np.all(np.abs(draws.mean(0) - post_mean) < 5 * se)
    np.testing.assert_allclose(np.cov(draws.T), post_cov, rtol=0.05, atol=0.01)


def test_outputs_of_exchangeable(eight_schools, tmp_path):
    fit = bf.fuse(eight_schools, seed=1, **FAST)
    idata = fit.idata
    for group in ("posterior", "sample_stats", "observed_data", "constant_data",
                  "log_likelihood", "prior", "posterior_predictive"):
        assert group in idata.groups(), group
    assert idata.log_likelihood["theta_hat"].dims == ("chain", "draw", "task")
    assert idata.posterior["theta"].dims == ("chain", "draw", "task", "param")
    table = fit.summary(ci_prob=0.9)
    assert list(table.columns[:4]) == ["task", "param", "estimate", "se"]
    assert {"mean", "sd", "eti_low", "eti_high", "hdi_low", "hdi_high", "shrinkage",
            "r_hat", "ess_bulk", "ess_tail"} <= set(table.columns)
    assert (table["eti_low"] < table["mean"]).all() and (table["mean"] < table["eti_high"]).all()
    assert ((table["hdi_high"] - table["hdi_low"]) <= (table["eti_high"] - table["eti_low"])
            + 1e-9).all()
    # shrinkage = E[V/(V+τ²)]: larger for noisier schools
    se, shrink = table["se"].to_numpy(), table["shrinkage"].to_numpy()
    order = np.argsort(se)
    steps = np.diff(shrink[order])
    assert np.all(steps[np.diff(se[order]) > 0] > 0) and np.all(np.abs(steps) >= 0)
    hyper = fit.hyper_summary()
    assert list(hyper.index) == ["mu", "tau"]
    assert hyper.loc["tau", "prior"] == fit.priors["tau"]
    sim = fit.similarity()
    assert sim.shape == (8, 8) and list(sim.index) == eight_schools.tasks
    np.testing.assert_allclose(np.diag(sim), 1.0)
    assert (sim.values > 0).all()  # tasks share μ
    new = fit.predict_new_task()
    assert new.shape == (4000, 1)
    # a new school's effect: mean μ, variance E[τ²] + Var(μ)
    post = fit.idata.posterior
    mu, tau = post["mu"].values.ravel(), post["tau"].values.ravel()
    sd = np.sqrt(np.mean(tau**2) + mu.var())
    assert abs(new["theta"].mean() - mu.mean()) < 5 * sd / np.sqrt(len(new)) * 3
    # save / load round trip, atomically
    path = fit.save(tmp_path / "fit.nc")
    loaded = bf.load_fit(path)
    pd.testing.assert_frame_equal(loaded.summary(), table.pipe(lambda t: fit.summary()))
    assert loaded.priors == fit.priors and loaded.model == "exchangeable"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    with pytest.raises(FitError, match="exists"):
        fit.save(path, force=False)


def test_compare_prefers_true_structure():
    rng = np.random.default_rng(3)
    se = np.full(30, 0.2)
    theta = rng.normal(0, 1.0, 30)  # strong heterogeneity: pooling is wrong
    est = TaskEstimates([f"t{k}" for k in range(30)], theta + se * rng.standard_normal(30),
                        se**2)
    fits = {"exchangeable": bf.fuse(est, seed=1, **FAST),
            "pooled": bf.fuse(est, model="pooled", seed=1, **FAST)}
    table = bf.compare(fits)
    assert table.index[0] == "exchangeable"


def test_pooled_and_independent_limits(eight_schools):
    pooled = bf.fuse(eight_schools, model="pooled", seed=1, **FAST)
    w = 1 / eight_schools.se[:, 0] ** 2
    fe = (w * eight_schools.estimates[:, 0]).sum() / w.sum()
    mu = pooled.idata.posterior["mu"].values
    assert abs(mu.mean() - fe) < 5 * _mcse(mu[..., 0]) + 0.05  # prior normal(0, 55) is weak
    np.testing.assert_allclose(pooled.similarity().values, 1.0)
    indep = bf.fuse(eight_schools, model="independent", seed=1, **FAST)
    table = indep.summary()
    z = (table["mean"] - table["estimate"]) / table["se"]
    assert np.all(np.abs(z) < 0.1)  # wide prior: the posterior sits on the estimate
    assert (table["shrinkage"] == 0).all()
    np.testing.assert_allclose(indep.similarity().values, np.eye(8))


def test_robust_flags_outlier():
    rng = np.random.default_rng(4)
    n = 15
    theta = rng.normal(0.0, 0.3, n)
    theta[0] = 8.0  # planted outlying task
    se = np.full(n, 0.3)
    est = TaskEstimates([f"t{k}" for k in range(n)], theta + se * rng.standard_normal(n), se**2)
    robust = bf.fuse(est, model="robust", seed=1, warn=False)  # default sampler settings
    assert_sampled_well(robust)
    scale = robust.hyper_summary().filter(like="task_scale", axis=0)["mean"]
    assert scale.idxmax() == "task_scale[t0]"
    assert scale.iloc[0] > 2 * scale.iloc[1:].max()
    normal = bf.fuse(est, seed=1, **FAST)
    # the outlier drags the normal model's mean and inflates tau more than the robust one's
    mu_r = robust.hyper_summary().loc["mu", "mean"]
    mu_n = normal.hyper_summary().loc["mu", "mean"]
    assert abs(mu_r) < abs(mu_n)


def test_spec_by_name_path_and_errors(eight_schools, tmp_path):
    spec = tmp_path / "mine.toml"
    spec.write_text('family = "exchangeable"\n[priors]\ntau = "halfnormal(3)"\n'
                    '[sampler]\nchains = 2\ndraws = 300\nwarmup = 300\n')
    fit = bf.fuse(eight_schools, model=str(spec), seed=0, warn=False)
    assert fit.priors["tau"] == "halfnormal(3)"
    assert fit.idata.posterior.sizes["chain"] == 2
    with pytest.raises(SpecError, match="Unknown model 'nope'. Shipped models: .*exchangeable"):
        bf.fuse(eight_schools, model="nope")
    with pytest.raises(SpecError, match="Unknown option"):
        bf.fuse(eight_schools, model="exchangeable", max_clusters=3)
    with pytest.raises(PriorError, match="Unknown prior name 'sigma'"):
        bf.fuse(eight_schools, priors={"sigma": "halfnormal(1)"})
    with pytest.raises(PriorError, match="needs a prior on positive numbers"):
        bf.fuse(eight_schools, priors={"tau": "normal(0, 1)"})
    with pytest.raises(SpecError, match="target_accept"):
        bf.fuse(eight_schools, target_accept=1.5)
    bad = tmp_path / "bad.toml"
    bad.write_text("family = [")
    with pytest.raises(SpecError, match="not valid TOML"):
        bf.fuse(eight_schools, model=str(bad))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("normal(0)", "takes 2 argument"),
        ("halfnormal(-1)", "scale must be > 0"),
        ("wibble(1)", "Unknown prior family 'wibble'"),
        ("normal 0 1", "Write it as family"),
        ("normal(0, x)", "must be numbers"),
        ("normal(0, inf)", "finite"),
    ],
)
def test_prior_string_errors(text, message):
    from bayesfuse.specs.priors import parse_prior

    with pytest.raises(PriorError, match=message):
        parse_prior(text, name="tau")


def test_prior_strings_parse_stan_style():
    from scipy import stats

    from bayesfuse.specs.priors import parse_prior

    assert str(parse_prior("Normal( 0 , 10 )")) == "normal(0, 10)"
    g = parse_prior("gamma(2, 0.1)")  # shape, rate
    assert g.logpdf(np.array([3.0]))[0] == pytest.approx(stats.gamma.logpdf(3.0, 2, scale=10))
    d = g.numpyro()
    assert float(d.mean) == pytest.approx(20.0)
    t = parse_prior("student_t(3, 0, 2.5)")
    assert float(t.numpyro().log_prob(1.0)) == pytest.approx(stats.t.logpdf(1.0, 3, 0, 2.5))
    assert float(parse_prior("exponential(2)").numpyro().mean) == pytest.approx(0.5)


def test_default_priors_scale_with_data(eight_schools):
    scaled = TaskEstimates(eight_schools.tasks, eight_schools.estimates[:, 0] / 100,
                           eight_schools.covariances[:, 0, 0] / 100**2)
    fit = bf.fuse(scaled, chains=2, draws=200, warmup=200, warn=False)
    assert fit.priors == {"mu": "normal(0, 0.55)", "tau": "halfnormal(0.11)"}


@pytest.mark.parametrize("chain_method", ["parallel", "sequential", "vectorized"])
def test_refit_reuses_the_compiled_sampler_and_matches_a_fresh_fit(eight_schools,
                                                                   chain_method):
    """New data of the same shapes, or fewer tasks in the same size bucket (padded to it):
    nothing sizeable is compiled again (JAX's compile log), and the draws equal those of a
    fit compiled from scratch."""
    import logging

    from bayesfuse.inference import nuts as sampler

    if chain_method == "parallel" and jax.local_device_count() < 4:
        pytest.skip("needs 4 JAX host devices")
    priors = {"mu": "normal(0, 20)", "tau": "halfnormal(10)"}  # fixed: same compiled model
    shifted = TaskEstimates(eight_schools.tasks, eight_schools.estimates[:, 0] + 3.0,
                            eight_schools.covariances)
    smaller = TaskEstimates(eight_schools.tasks[:7], eight_schools.estimates[:7, 0],
                            eight_schools.covariances[:7])  # padded to 8 tasks
    larger = TaskEstimates(eight_schools.tasks + ["I"],  # 9 tasks: padded to 10
                           np.append(eight_schools.estimates[:, 0], 5.0),
                           np.append(eight_schools.covariances[:, 0, 0], 100.0))
    settings = dict(chains=4, warmup=200, draws=200, chain_method=chain_method, warn=False)
    sampler.clear_cache()
    bf.fuse(eight_schools, priors=priors, seed=3, **settings)

    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            refit = bf.fuse(shifted, priors=priors, seed=4, **settings)
            n_refit = sum("Compiling" in m for m in messages)
            messages.clear()
            bf.fuse(smaller, priors=priors, seed=4, **settings)
            n_smaller = sum("Compiling" in m for m in messages)
            messages.clear()
            if chain_method == "sequential":  # the log does see compilations (once suffices)
                bf.fuse(larger, priors=priors, seed=4, **settings)  # another bucket: compiles
                assert sum("Compiling" in m for m in messages) >= 3
    finally:
        logger.removeHandler(handler)
    assert n_refit <= 1, n_refit
    assert n_smaller <= 1, n_smaller
    sampler.clear_cache()
    fresh = bf.fuse(shifted, priors=priors, seed=4, **settings)
    for name in ("mu", "tau", "theta"):
        np.testing.assert_array_equal(refit.idata.posterior[name].values,
                                      fresh.idata.posterior[name].values)


@pytest.mark.parametrize("model", ["exchangeable", "cluster"])
def test_quickly_compiled_programs_give_the_same_numbers(model):
    """The per-draw map and the prior draws compile at XLA's lowest optimisation level for
    small fits (sampler.QUICK_COMPILE): the same draws in as out, to rounding, as the
    optimised compilation."""
    import jax.numpy as jnp
    from numpyro.infer import Predictive

    from bayesfuse.inference import draws as sampler
    from bayesfuse.inference.fuse import prepare

    rng = np.random.default_rng(0)
    est = TaskEstimates([f"t{k}" for k in range(12)], rng.normal(0, 1, 12),
                        rng.uniform(0.05, 0.2, 12))
    _, _, family = prepare(est, model)
    data = {k: np.asarray(v) for k, v in family.data().items()}
    prior, _ = sampler.prior_draws(family, data, jax.random.PRNGKey(0), 64)
    draws = {k: jnp.asarray(v[0]) for k, v in prior.items() if k != "theta"}
    keys = jax.random.split(jax.random.PRNGKey(1), 64)
    quick = sampler.postprocess_fn(family, True, data, 64)(draws, keys, data)  # small
    optimised = sampler.postprocess_fn(family, True, data, 64, quick=False)(draws, keys, data)
    for got, want in zip(jax.tree.leaves(quick), jax.tree.leaves(optimised), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # and the prior draws themselves against an optimised compilation of the same program
    def model_fn(**kwargs):
        family.model(family.priors, False, **kwargs)

    inputs = {k: v for k, v in data.items() if k != "theta_hat"}
    want = jax.jit(lambda key: Predictive(model_fn, num_samples=64)(
        key, theta_hat=None, **inputs))(jax.random.PRNGKey(0))
    for name, values in prior.items():
        np.testing.assert_allclose(values[0], want[name], rtol=1e-10, atol=1e-12)


IMPORT_CHECK = """
import os

import jax

before = dict(os.environ)  # after JAX's own import, which sets two TF_/TPU_ variables
import bayesfuse, bayesfuse.cli, bayesfuse.inference.nuts, bayesfuse.result  # noqa: E401
import bayesfuse.inference.exact, bayesfuse.inference.draws  # noqa: E401

assert dict(os.environ) == before, "an import changed os.environ"
assert not jax.config.jax_enable_x64, "an import turned on 64-bit JAX"
assert jax.config.jax_num_cpu_devices == -1, "an import set the CPU device count"
fit = bayesfuse.fuse(bayesfuse.TaskEstimates(list("ABCDEFGH"),
                                             [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0],
                                             [225.0, 100.0, 256.0, 121.0, 81.0, 121.0,
                                              100.0, 324.0]),
                     chains=2, warmup=100, draws=100, warn=False)
assert fit.idata.posterior["theta"].dtype == "float64"
assert jax.config.jax_enable_x64
assert fit.predict_new_task().dtypes.iloc[0] == "float64"
print("ok")
"""


def test_importing_changes_no_global_setting_and_a_fit_is_float64():
    """Importing bayesfuse edits neither the environment (XLA_FLAGS) nor JAX's settings;
    the first fit turns on 64-bit JAX and still gives float64 draws."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_ENABLE_X64")}
    done = subprocess.run([sys.executable, "-c", IMPORT_CHECK], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")
