"""The ``metareg`` family: θₖ = B zₖ + uₖ with task covariates zₖ.

Recovery of known coefficients on the original covariate scale (covariates on very different
scales), prediction for a new task from its covariates, agreement with the REML
meta-regression baseline, covariate subsets with p = 2, and the error messages.
"""

from __future__ import annotations

import arviz as az
import numpy as np
import pandas as pd
import pytest
from helpers import assert_sampled_well

import bayesfuse as bf
from bayesfuse.data.estimates import TaskEstimates
from bayesfuse.errors import SpecError
from bayesfuse.families import get_family

TRUE_COEF = np.array([1.0, 0.05, -3.0])  # intercept, per unit of x1, per unit of x2
TRUE_TAU = 0.2


def _mcse(x: np.ndarray) -> float:
    return float(np.ravel(az.mcse(x, method="mean"))[0])


def simulate(n_tasks: int = 40, seed: int = 11) -> TaskEstimates:
    """θₖ = 1 + 0.05·x1 − 3·x2 + N(0, 0.2²), x1 ~ N(50, 10²), x2 ~ N(0.5, 0.1²), small SEs."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(50.0, 10.0, n_tasks)
    x2 = rng.normal(0.5, 0.1, n_tasks)
    design = np.column_stack([np.ones(n_tasks), x1, x2])
    theta = design @ TRUE_COEF + TRUE_TAU * rng.standard_normal(n_tasks)
    se = rng.uniform(0.05, 0.15, n_tasks)
    tasks = [f"t{k}" for k in range(n_tasks)]
    covariates = pd.DataFrame({"x1": x1, "x2": x2}, index=tasks)
    return TaskEstimates(tasks, theta + se * rng.standard_normal(n_tasks), se**2,
                         covariates=covariates)


@pytest.fixture(scope="module")
def recovery():
    est = simulate()
    fit = bf.fuse(est, model="metareg", seed=3, warn=False)
    return est, fit


def test_recovers_known_coefficients(recovery):
    est, fit = recovery
    post = fit.idata.posterior
    assert post["coef"].dims == ("chain", "draw", "param", "term")
    assert list(post["term"].values) == ["intercept", "x1", "x2"]
    assert post["slope"].dims == ("chain", "draw", "param", "regressor")
    coef = post["coef"].values[:, :, 0, :]  # (chain, draw, term)
    flat = coef.reshape(-1, 3)
    mean, sd = flat.mean(0), flat.std(0, ddof=1)
    low, high = np.quantile(flat, [0.025, 0.975], axis=0)
    assert np.all(np.abs(mean - TRUE_COEF) < 4 * sd), (mean, sd)
    assert np.all((low < TRUE_COEF) & (TRUE_COEF < high)), (low, high)
    tau = post["tau"].values.ravel()
    assert np.quantile(tau, 0.005) < TRUE_TAU < np.quantile(tau, 0.995)
    # the original-scale coefficients are the standardised ones transformed exactly
    family = fit.family
    z = est.covariates.to_numpy()
    line_raw = coef[..., :1] + np.einsum("cst,kt->csk", coef[..., 1:], z)
    line_std = post["intercept"].values[..., :1] + np.einsum(
        "cst,kt->csk", post["slope"].values[:, :, 0], family.zstd)
    np.testing.assert_allclose(line_raw, line_std, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(family.zstd.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(family.zstd.std(0, ddof=1), 1.0)
    # reporting
    assert_sampled_well(fit)
    hyper = fit.hyper_summary()
    assert {"coef[theta,intercept]", "coef[theta,x1]", "coef[theta,x2]", "tau",
            "slope[theta,x1]"} <= set(hyper.index)
    assert hyper.loc["slope[theta,x1]", "prior"].startswith("normal(0, ")
    assert set(fit.priors) == {"intercept", "slope[theta,x1]", "slope[theta,x2]", "tau"}
    table = fit.summary()
    assert table["shrinkage"].between(0, 1).all()
    # the line explains most of the spread: fused θ sit near the estimates (small SEs)
    assert np.all(np.abs(table["mean"] - table["estimate"]) < 3 * table["se"])


def test_predict_new_task_is_centred_on_the_line(recovery):
    _, fit = recovery
    x_new = {"x1": 62.0, "x2": 0.38}
    pred = fit.predict_new_task(covariates=x_new)
    assert pred.shape == (4000, 1)
    draws = pred["theta"].to_numpy().reshape(4, 1000)
    coef = fit.idata.posterior["coef"].values[:, :, 0, :]
    line = coef @ np.array([1.0, x_new["x1"], x_new["x2"]])  # posterior of the line there
    # centred on the posterior of the regression line, to Monte Carlo error
    assert abs(draws.mean() - line.mean()) < 5 * _mcse(draws)
    # which is centred on the true line, to posterior (and Monte Carlo) error
    truth = TRUE_COEF @ np.array([1.0, x_new["x1"], x_new["x2"]])
    assert abs(draws.mean() - truth) < 4 * line.std() + 5 * _mcse(draws)
    # spread: Var = E[τ²] + Var(line)
    tau = fit.idata.posterior["tau"].values[..., 0]
    assert draws.var() == pytest.approx(np.mean(tau**2) + line.var(), rel=0.1)
    # the same covariates given as a Series, an array or a one-row frame: identical draws
    same = [pd.Series(x_new), np.array([62.0, 0.38]), pd.DataFrame([x_new]),
            {"x2": 0.38, "x1": 62}]
    for covariates in same:
        np.testing.assert_array_equal(fit.predict_new_task(covariates)["theta"],
                                      pred["theta"])


def test_agrees_with_reml_meta_regression(recovery):
    baselines = pytest.importorskip("bayesfuse.analysis.baselines")
    meta_regression = getattr(baselines, "meta_regression", None)
    if meta_regression is None:
        pytest.skip("bayesfuse.analysis.baselines.meta_regression is not available")
    est, fit = recovery
    reml = meta_regression(est, method="reml")
    coef = fit.idata.posterior["coef"].values[:, :, 0, :].reshape(-1, 3)
    estimate = reml.set_index("term").loc[["intercept", "x1", "x2"], "estimate"].to_numpy()
    mean, sd = coef.mean(0), coef.std(0, ddof=1)
    assert np.all(np.abs(mean - estimate) < sd), (mean, estimate, sd)
    # posterior sds and REML standard errors describe the same uncertainty
    se = reml.set_index("term").loc[["intercept", "x1", "x2"], "se"].to_numpy()
    np.testing.assert_allclose(sd, se, rtol=0.3)


def test_vector_estimates_with_a_covariate_subset(tmp_path):
    rng = np.random.default_rng(7)
    n_tasks = 15
    x1 = rng.normal(10.0, 3.0, n_tasks)
    x2 = rng.normal(0.0, 1.0, n_tasks)  # not used by the model
    theta = np.column_stack([0.5 + 0.2 * x1, -1.0 - 0.1 * x1])
    theta += rng.multivariate_normal([0, 0], [[0.04, 0.02], [0.02, 0.04]], n_tasks)
    se = rng.uniform(0.1, 0.2, (n_tasks, 2))
    cov = np.einsum("ki,kj->kij", se, se) * np.array([[1.0, 0.3], [0.3, 1.0]])
    theta_hat = np.array([rng.multivariate_normal(t, c) for t, c in zip(theta, cov, strict=True)])
    tasks = [f"s{k}" for k in range(n_tasks)]
    est = TaskEstimates(tasks, theta_hat, cov, params=["read", "math"],
                        covariates=pd.DataFrame({"x1": x1, "x2": x2}, index=tasks))
    fit = bf.fuse(est, model="metareg", covariates=["x1"], seed=2, chains=2, draws=400,
                  warmup=400, warn=False)
    post = fit.idata.posterior
    assert post["coef"].shape == (2, 400, 2, 2)
    assert list(post["term"].values) == ["intercept", "x1"]
    assert post["corr"].shape == (2, 400, 2, 2)
    hyper = fit.hyper_summary()
    assert {"coef[read,x1]", "coef[math,intercept]", "slope[math,x1]", "corr[read,math]",
            "tau[read]"} <= set(hyper.index)
    assert hyper.loc["slope[math,x1]", "prior"] == fit.priors["slope[math,x1]"]
    slopes = hyper.loc[["coef[read,x1]", "coef[math,x1]"], "mean"].to_numpy()
    np.testing.assert_allclose(slopes, [0.2, -0.1], atol=0.1)
    new = fit.predict_new_task({"x1": 12.0})
    assert list(new.columns) == ["read", "math"] and len(new) == 800
    # a saved fit rebuilds the same model (options, standardisation) and predicts the same
    loaded = bf.load_fit(fit.save(tmp_path / "metareg.nc"))
    assert loaded.model == "metareg" and loaded.family.covariate_names == ["x1"]
    again = loaded.predict_new_task(pd.Series({"x1": 12.0, "x2": 5.0}))  # x2 is ignored
    pd.testing.assert_frame_equal(again, new)


def test_rescaled_covariates_refit_with_the_compiled_sampler():
    """A covariate in other units (x1 in hundreds) standardises to the same values, so a refit
    reuses the compiled sampler; its original-scale coefficients must use the new means and
    sds, not the first fit's."""
    est = simulate(n_tasks=12, seed=5)
    hundreds = est.covariates.assign(x1=lambda f: f["x1"] / 100)
    other = TaskEstimates(est.tasks, est.estimates, est.covariances, covariates=hundreds)
    small = dict(model="metareg", seed=0, chains=2, draws=200, warmup=200, warn=False)
    a, b = bf.fuse(est, **small), bf.fuse(other, **small)
    for fit, frame in ((a, est.covariates), (b, hundreds)):
        post = fit.idata.posterior
        coef, slope = post["coef"].values[:, :, 0], post["slope"].values[:, :, 0]
        intercept = post["intercept"].values[..., 0]
        mean, sd = frame.mean().to_numpy(), frame.std(ddof=1).to_numpy()
        np.testing.assert_allclose(coef[..., 1:], slope / sd, rtol=1e-10)
        np.testing.assert_allclose(coef[..., 0], intercept - (slope / sd) @ mean, rtol=1e-10)
    ratio = b.idata.posterior["coef"].values[..., 0, 1].mean() \
        / a.idata.posterior["coef"].values[..., 0, 1].mean()
    assert ratio == pytest.approx(100, rel=0.1)  # the same standardised posterior


def _family(est: TaskEstimates, **options):
    return get_family("metareg")(est, options)


def test_errors():
    est = simulate(n_tasks=10)
    plain = TaskEstimates(est.tasks, est.estimates, est.covariances)
    with pytest.raises(SpecError, match="Add task covariates"):
        bf.fuse(plain, model="metareg")
    constant = TaskEstimates(est.tasks, est.estimates, est.covariances,
                             covariates=est.covariates.assign(site=3.0))
    with pytest.raises(SpecError, match=r"\['site'\] are constant"):
        _family(constant)
    _family(constant, covariates=["x1", "x2"])  # fine without it
    collinear = TaskEstimates(est.tasks, est.estimates, est.covariances,
                              covariates=est.covariates.assign(x3=lambda f: 2 * f["x1"] + 1))
    with pytest.raises(SpecError, match="collinear"):
        _family(collinear)
    with pytest.raises(SpecError, match=r"Unknown covariate\(s\) \['age'\]"):
        _family(est, covariates=["age"])
    with pytest.raises(SpecError, match="empty"):
        _family(est, covariates=[])
    family = _family(est)
    with pytest.raises(SpecError, match="needs the new task's covariates"):
        family.new_task_covariates(None)
    with pytest.raises(SpecError, match="lack \\['x2'\\]"):
        family.new_task_covariates({"x1": 1.0})
    with pytest.raises(SpecError, match=r"Unknown covariate\(s\) \['x9'\]"):
        family.new_task_covariates({"x1": 1.0, "x2": 2.0, "x9": 0.0})
    with pytest.raises(SpecError, match="needs 2 covariate value"):
        family.new_task_covariates([1.0, 2.0, 3.0])
    with pytest.raises(SpecError, match="not finite"):
        family.new_task_covariates([1.0, np.nan])
    with pytest.raises(SpecError, match="must be numbers"):
        family.new_task_covariates({"x1": "a", "x2": 1.0})
    z = np.asarray(family.new_task_covariates({"x1": 50.0, "x2": 0.5}))
    expected = (np.array([50.0, 0.5]) - est.covariates.mean().to_numpy()) \
        / est.covariates.std(ddof=1).to_numpy()
    np.testing.assert_allclose(z, expected)
    # exchangeable families refuse covariates for a new task
    with pytest.raises(SpecError, match="does not use task covariates"):
        get_family("exchangeable")(est, {}).new_task_covariates({"x1": 1.0})
