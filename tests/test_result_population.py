"""Transport: ``FusionResult.predict_population`` and ``bayesfuse predict-population``.

With the hyperparameters fixed at each posterior draw the average effect in a target
population is a closed form (Σᵢ wᵢ (b₀ + bᵀxᵢ) on the original covariate scale), so the
draws are checked against it to machine precision; the predictive version against the
distribution of its between-task part; and the posterior against the known truth of a
simulation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from report_fits import exact_fit

import bayesfuse as bf
from bayesfuse.cli import main
from bayesfuse.data.estimates import TaskEstimates
from bayesfuse.errors import BayesfuseWarning, SpecError
from bayesfuse.result import summarize_draws

TRUE_COEF = np.array([1.0, 0.05, -3.0])  # intercept, per unit of x1, per unit of x2
TRUE_TAU = 0.2
TARGET = pd.DataFrame({"x1": [42.0, 50.0, 58.0], "x2": [0.45, 0.5, 0.62],
                       "size": [1.0, 2.0, 5.0]})


def _simulate(n_tasks: int = 16, seed: int = 4) -> TaskEstimates:
    rng = np.random.default_rng(seed)
    x1 = rng.normal(50.0, 10.0, n_tasks)
    x2 = rng.normal(0.5, 0.1, n_tasks)
    theta = TRUE_COEF[0] + TRUE_COEF[1] * x1 + TRUE_COEF[2] * x2 \
        + TRUE_TAU * rng.standard_normal(n_tasks)
    se = rng.uniform(0.05, 0.15, n_tasks)
    tasks = [f"t{k}" for k in range(n_tasks)]
    return TaskEstimates(tasks, theta + se * rng.standard_normal(n_tasks), se**2,
                         covariates=pd.DataFrame({"x1": x1, "x2": x2}, index=tasks))


@pytest.fixture(scope="module")
def metareg_fit():
    return bf.fuse(_simulate(), model="metareg", chains=2, draws=300, warmup=300, seed=2,
                   warn=False)


def _closed_form(fit, frame: pd.DataFrame, weights: np.ndarray) -> np.ndarray:
    """Σᵢ wᵢ (b₀ + bᵀxᵢ) per draw from the original-scale coefficients, shape (C·S,)."""
    coef = fit.idata.posterior["coef"].values[:, :, 0, :].reshape(-1, 3)
    x = frame[["x1", "x2"]].to_numpy(float)
    w = weights / weights.sum()
    return coef[:, 0] + coef[:, 1:] @ (w @ x)


def test_mean_is_the_closed_form_at_every_draw(metareg_fit):
    draws = metareg_fit.predict_population(TARGET, weights="size")
    assert list(draws.columns) == ["theta"] and len(draws) == 600
    assert draws.attrs["kind"] == "mean"
    np.testing.assert_allclose(draws.attrs["weights"], [1 / 8, 2 / 8, 5 / 8], rtol=1e-15)
    want = _closed_form(metareg_fit, TARGET, TARGET["size"].to_numpy())
    np.testing.assert_allclose(draws["theta"], want, rtol=1e-12, atol=1e-12)
    # the same weights as an array; equal weights by default; columns in any order
    by_array = metareg_fit.predict_population(TARGET[["x2", "x1"]], weights=[2, 4, 10])
    np.testing.assert_allclose(by_array["theta"], want, rtol=1e-12, atol=1e-12)
    equal = metareg_fit.predict_population(TARGET.drop(columns="size"))
    np.testing.assert_allclose(equal["theta"],
                               _closed_form(metareg_fit, TARGET, np.ones(3)), rtol=1e-12)
    # one row given as a mapping of scalars: the conditional mean of a new task there
    one = metareg_fit.predict_population({"x1": 42.0, "x2": 0.45})
    np.testing.assert_allclose(one["theta"], _closed_form(metareg_fit, TARGET.iloc[:1],
                                                          np.ones(1)), rtol=1e-12)


def test_predictive_adds_the_between_task_variation(metareg_fit):
    weights = TARGET["size"].to_numpy()
    mean = _closed_form(metareg_fit, TARGET, weights)
    pred = metareg_fit.predict_population(TARGET, weights="size", kind="predictive", seed=5)
    assert pred.attrs["kind"] == "predictive"
    # given φ: Σ wᵢ θᵢ − Σ wᵢ E[θ | xᵢ, φ] ~ N(0, Σ wᵢ² τ²), independent over draws
    w = weights / weights.sum()
    tau = metareg_fit.idata.posterior["tau"].values.reshape(-1)
    z = (pred["theta"].to_numpy() - mean) / (np.sqrt(np.sum(w**2)) * tau)
    n = z.size  # 600: sd of the mean 0.04, of the variance 0.06
    assert abs(z.mean()) < 4.5 / np.sqrt(n)
    assert abs(z.var() - 1) < 4.5 * np.sqrt(2 / n)
    again = metareg_fit.predict_population(TARGET, weights="size", kind="predictive", seed=5)
    pd.testing.assert_frame_equal(pred, again)


def test_posterior_covers_the_true_population_average(metareg_fit):
    w = TARGET["size"].to_numpy() / TARGET["size"].sum()
    truth = TRUE_COEF[0] + TARGET[["x1", "x2"]].to_numpy() @ TRUE_COEF[1:] @ w
    summary = summarize_draws(metareg_fit.predict_population(TARGET, weights="size"), 0.99)
    row = summary.loc["theta"]
    assert row["eti_low"] < truth < row["eti_high"], (row.to_dict(), truth)
    assert abs(row["mean"] - truth) < 4 * row["sd"]
    assert summary.attrs["ci_prob"] == 0.99 and summary.attrs["kind"] == "mean"


@pytest.mark.parametrize(("frame", "kwargs", "message"), [
    (TARGET.drop(columns="x2"), {"weights": "size"}, "lacks the covariate(s) ['x2']"),
    (TARGET.assign(region="north"), {"weights": "size"}, "Unknown column(s) ['region']"),
    (TARGET.assign(x1=["a", "b", "c"]), {"weights": "size"}, "must be numbers"),
    (TARGET.assign(x2=[0.5, np.nan, 0.5]), {"weights": "size"}, "row 1"),
    (TARGET.iloc[:0], {"weights": "size"}, "has no rows"),
    (TARGET, {"weights": "weight"}, "not a column of the target"),
    (TARGET.drop(columns="size"), {"weights": [1.0, -1.0, 1.0]}, "non-negative; row 1"),
    (TARGET.drop(columns="size"), {"weights": [1.0, 1.0]}, "one number per target row (3)"),
    (TARGET.drop(columns="size"), {"weights": [0.0, 0.0, 0.0]}, "sum to zero"),
    (TARGET.drop(columns="size"), {"weights": ["a", "b", "c"]}, "must be numbers"),
    (TARGET.drop(columns="size"), {"kind": "draws"}, "kind"),
    ("x1=40", {}, "must be a DataFrame"),
])
def test_bad_targets_are_refused_in_one_line(metareg_fit, frame, kwargs, message):
    with pytest.raises(bf.errors.BayesfuseError) as info:
        metareg_fit.predict_population(frame, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_extrapolation_warns_and_models_without_covariates_refuse(metareg_fit):
    with pytest.warns(BayesfuseWarning, match=r"x1 \(target 42 to 500"):
        metareg_fit.predict_population(TARGET.assign(x1=[42.0, 50.0, 500.0]), weights="size")
    with pytest.raises(SpecError, match="Model 'exchangeable' has no task covariates"):
        exact_fit().predict_population(pd.DataFrame({"x": [1.0]}))


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def test_cli_predict_population(metareg_fit, tmp_path, capsys):
    fit_path = metareg_fit.save(tmp_path / "fit.nc")
    target = tmp_path / "target.csv"
    TARGET.to_csv(target, index=False)
    out_csv, draws_csv = tmp_path / "population.csv", tmp_path / "draws.csv"
    assert main(["predict-population", str(fit_path), str(target), "--weights", "size",
                 "--ci-prob", "0.9", "-o", str(out_csv), "--draws-output",
                 str(draws_csv)]) == 0
    printed = capsys.readouterr().out
    want = summarize_draws(metareg_fit.predict_population(TARGET, weights="size"), 0.9)
    row = want.loc["theta"]
    assert "Target population (3 rows): average effect, metareg fit" in printed
    assert f"[{row['eti_low']:.3f}, {row['eti_high']:.3f}]" in printed
    written = pd.read_csv(out_csv)
    assert list(written.columns) == ["param", "mean", "sd", "eti_low", "eti_high", "hdi_low",
                                     "hdi_high"]
    np.testing.assert_allclose(written[["mean", "sd", "eti_low"]].to_numpy()[0],
                               row[["mean", "sd", "eti_low"]].to_numpy(float), rtol=1e-12)
    assert len(pd.read_csv(draws_csv)) == 600
    # predictive version; existing outputs need --force
    assert main(["predict-population", str(fit_path), str(target), "--weights", "size",
                 "--predictive"]) == 0
    assert "average of the target tasks' effects" in capsys.readouterr().out
    assert main(["predict-population", str(fit_path), str(target), "-o", str(out_csv)]) == 2
    assert "exists; add --force" in _one_error_line(capsys)
    # bad input: one line, exit 2
    TARGET.drop(columns="x2").to_csv(target, index=False)
    assert main(["predict-population", str(fit_path), str(target), "--weights", "size"]) == 2
    assert "lacks the covariate(s) ['x2']" in _one_error_line(capsys)
    exch = exact_fit().save(tmp_path / "exch.nc")
    assert main(["predict-population", str(exch), str(target)]) == 2
    assert "has no task covariates" in _one_error_line(capsys)
    assert main(["predict-population", str(fit_path), str(tmp_path / "none.csv")]) == 2
    assert "not found" in _one_error_line(capsys)
    assert main(["--help"]) == 0
    assert "predict-population" in capsys.readouterr().out
