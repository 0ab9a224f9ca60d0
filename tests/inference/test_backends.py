"""The PyMC backend against the NumPyro one: same data and priors, same posterior.

Every element of the compared quantities must have posterior means within
5·sqrt(mcse₁² + mcse₂²) and standard deviations within 15%. PyMC compiles slowly, so the
fits are few and reused.
"""

from __future__ import annotations

import arviz as az
import numpy as np
import pandas as pd
import pytest
from helpers import assert_sampled_well, clustered_estimates, vector_estimates

import bayesfuse as bf
from bayesfuse.analysis.diagnostics import flat_names
from bayesfuse.data.estimates import TaskEstimates
from bayesfuse.errors import FitError

FITS = dict(chains=4, draws=1000, warmup=1000, warn=False)
STAT_KEYS = {"diverging", "energy", "n_steps", "tree_depth", "acceptance_rate", "step_size",
             "lp"}


def _mcse(x: np.ndarray) -> float:
    return float(np.ravel(az.mcse(x, method="mean"))[0])


def assert_agree(a, b, names, sd_rtol=0.15, z_max=5.0):
    """Posterior means within z_max combined MCSEs and sds within sd_rtol, per element."""
    for name in names:
        labels, x = flat_names(name, a.idata.posterior[name])
        _, y = flat_names(name, b.idata.posterior[name])
        for j, label in enumerate(labels):
            xj, yj = x[..., j], y[..., j]
            tol = z_max * np.hypot(_mcse(xj), _mcse(yj))
            assert abs(xj.mean() - yj.mean()) < tol, (label, xj.mean(), yj.mean(), tol)
            assert yj.std() == pytest.approx(xj.std(), rel=sd_rtol), (label, xj.std(), yj.std())


def assert_same_layout(a, b):
    """Same groups, variables, dims and shapes (chains, draws may differ)."""
    assert set(a.idata.groups()) == set(b.idata.groups())
    for group in ("posterior", "log_likelihood", "posterior_predictive", "prior"):
        ga, gb = getattr(a.idata, group), getattr(b.idata, group)
        assert set(ga.data_vars) == set(gb.data_vars), group
        for name in ga.data_vars:
            assert ga[name].dims == gb[name].dims, (group, name)
            assert ga[name].shape[2:] == gb[name].shape[2:], (group, name)
    assert set(b.idata.sample_stats.data_vars) == STAT_KEYS
    for key in STAT_KEYS:
        assert a.idata.sample_stats[key].dtype.kind == b.idata.sample_stats[key].dtype.kind, key


def test_eight_schools(eight_schools):
    a = bf.fuse(eight_schools, seed=1, **FITS)
    b = bf.fuse(eight_schools, backend="pymc", seed=1, **FITS)
    assert b.meta["backend"] == "pymc" and b.meta["collapsed"]
    assert b.priors == a.priors
    assert_same_layout(a, b)
    assert_agree(a, b, ["mu", "tau", "theta"])
    assert_sampled_well(b)
    np.testing.assert_allclose(b.summary()["shrinkage"], a.summary()["shrinkage"], atol=0.03)
    assert np.isfinite(b.loo().elpd_loo)


@pytest.mark.slow  # 100 s; the default run keeps the scalar and metareg agreements
def test_vector_exchangeable():
    est = vector_estimates()
    a = bf.fuse(est, seed=2, **FITS)  # (seed 1 gives a NumPyro tail ESS of 326 for tau)
    b = bf.fuse(est, backend="pymc", seed=1, **FITS)
    assert_sampled_well(a)
    assert_sampled_well(b)
    assert_same_layout(a, b)
    assert_agree(a, b, ["mu", "tau", "corr", "theta"])


def test_metareg():
    rng = np.random.default_rng(3)
    n_tasks = 20
    x1, x2 = rng.normal(50.0, 10.0, n_tasks), rng.normal(0.5, 0.1, n_tasks)
    theta = 1.0 + 0.05 * x1 - 3.0 * x2 + 0.3 * rng.standard_normal(n_tasks)
    se = rng.uniform(0.1, 0.3, n_tasks)
    tasks = [f"t{k}" for k in range(n_tasks)]
    est = TaskEstimates(tasks, theta + se * rng.standard_normal(n_tasks), se**2,
                        covariates=pd.DataFrame({"x1": x1, "x2": x2}, index=tasks))
    a = bf.fuse(est, model="metareg", seed=1, **FITS)
    b = bf.fuse(est, model="metareg", backend="pymc", seed=1, **FITS)
    assert_same_layout(a, b)
    assert_agree(a, b, ["coef", "intercept", "slope", "tau", "theta"])
    assert_sampled_well(b)
    new = {"x1": 60.0, "x2": 0.4}
    pa, pb = a.predict_new_task(new)["theta"], b.predict_new_task(new)["theta"]
    tol = 5 * np.hypot(_mcse(pa.to_numpy().reshape(4, -1)), _mcse(pb.to_numpy().reshape(4, -1)))
    assert abs(pa.mean() - pb.mean()) < tol


def test_plain_robust_form_and_seeds(eight_schools):
    """The non-centred PyMC model (θ sampled) with Student-t effects: sites as in NumPyro,
    θ taken from the draws, and the same seed giving the same draws."""
    small = dict(chains=2, draws=200, warmup=300, warn=False, collapsed=False,
                 target_accept=0.95)
    fit = bf.fuse(eight_schools, model="robust", backend="pymc", seed=4, **small)
    again = bf.fuse(eight_schools, model="robust", backend="pymc", seed=4, **small)
    post = fit.idata.posterior
    assert not fit.meta["collapsed"]
    assert set(post.data_vars) == {"mu", "tau", "nu", "task_scale", "theta"}
    assert post["theta"].shape == (2, 200, 8, 1) and post["task_scale"].shape == (2, 200, 8)
    assert np.isfinite(post["theta"].values).all()
    for name in post.data_vars:
        np.testing.assert_array_equal(post[name].values, again.idata.posterior[name].values)
    # the prior group comes from the same priors (NumPyro's plain model)
    assert set(fit.idata.prior.data_vars) == {"mu", "tau", "nu", "task_scale", "theta"}


@pytest.mark.parametrize("model", ["independent", "pooled"])
def test_unsupported_family(eight_schools, model):
    with pytest.raises(FitError, match=rf"backend='pymc' supports .*exchangeable.*metareg.*"
                                       rf"use backend='numpyro' for {model}"):
        bf.fuse(eight_schools, model=model, backend="pymc")


@pytest.mark.slow
def test_cluster_backends_agree():
    """The collapsed mixture in PyMC (centred Dirichlet weights) and in NumPyro
    (non-centred gamma weights): same fused θ and co-clustering to Monte Carlo error."""
    est = clustered_estimates(per=5)[0]
    kw = dict(model="cluster", max_clusters=4, seed=1, chains=2, draws=500, warmup=500,
              warn=False)
    a = bf.fuse(est, **kw)
    b = bf.fuse(est, backend="pymc", **kw)
    assert b.meta["backend"] == "pymc"
    assert_agree(a, b, ["theta"])
    # co-clustering: a mean of probabilities over ~1000 draws of each backend
    diff = np.abs(a.similarity().to_numpy() - b.similarity().to_numpy()).max()
    assert diff < 0.1, diff
