"""How much each task borrows: the pooling factor, variance reduction and effective n.

Checked against the closed form of the normal exchangeable model with τ fixed (a lognormal
prior on τ of sd 0.001 on the log scale) and μ ~ N(m₀, s₀²), fitted by independent draws
(``method="exact"``), so the only error is Monte Carlo error of a variance.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bayesfuse as bf
from bayesfuse.cli import main
from bayesfuse.data.estimates import TaskEstimates
from bayesfuse.reporting.report import _borrowing_part
from bayesfuse.reporting.tables import results_table

TAU, M0, S0 = 1.0, 0.0, 10.0
SE = np.array([0.5, 0.8, 1.0, 1.2, 1.5, 2.0])
N = np.array([400, 150, 100, 70, 45, 25])
CHAINS, DRAWS = 4, 2500


def _estimates(n=N) -> TaskEstimates:
    rng = np.random.default_rng(0)
    y = rng.normal(1.0, TAU, SE.size) + SE * rng.standard_normal(SE.size)
    return TaskEstimates([f"t{k}" for k in range(SE.size)], y, SE**2, n=n)


def _fit(est: TaskEstimates, draws: int = DRAWS, chains: int = CHAINS):
    priors = {"tau": f"lognormal({np.log(TAU)}, 0.001)", "mu": f"normal({M0}, {S0})"}
    return bf.fuse(est, method="exact", priors=priors, chains=chains, draws=draws, seed=1,
                   warn=False)


def closed_form(var: np.ndarray, tau: float, s0: float) -> tuple[np.ndarray, np.ndarray]:
    """Pooling factor Bₖ = vₖ/(vₖ + τ²) and Var(θₖ | θ̂, τ) = (1 − Bₖ)vₖ + Bₖ² Var(μ | θ̂, τ)
    with 1/Var(μ | θ̂, τ) = 1/s₀² + Σₖ 1/(vₖ + τ²)."""
    pooling = var / (var + tau**2)
    var_mu = 1.0 / (1.0 / s0**2 + np.sum(1.0 / (var + tau**2)))
    return pooling, (1 - pooling) * var + pooling**2 * var_mu


@pytest.fixture(scope="module")
def fixed_tau_fit():
    return _fit(_estimates())


def test_borrowing_matches_the_closed_form_with_tau_fixed(fixed_tau_fit):
    table = fixed_tau_fit.summary()
    var = SE**2
    pooling, post_var = closed_form(var, TAU, S0)
    draws = CHAINS * DRAWS
    # relative Monte Carlo sd of a variance from S independent normal draws: √(2/S) ≈ 1.4%
    rel = 4.5 * np.sqrt(2.0 / draws)
    np.testing.assert_allclose(table["shrinkage"], pooling, rtol=5e-3)
    np.testing.assert_allclose(table["sd"] ** 2, post_var, rtol=rel)
    np.testing.assert_allclose(table["variance_reduction"], 1 - post_var / var,
                               atol=rel * np.max(post_var / var))
    np.testing.assert_allclose(table["effective_n"], N * var / post_var, rtol=rel)
    np.testing.assert_allclose(table["n_gained"], table["effective_n"] - N, rtol=1e-12)
    # the definitions, exactly, from the reported sd
    np.testing.assert_allclose(table["variance_reduction"], 1 - table["sd"] ** 2 / var,
                               rtol=1e-12)
    # noisier tasks borrow more: a larger share of their variance is removed
    assert np.all(np.diff(table["variance_reduction"]) > 0)
    assert np.all(table["n_gained"] > 0)


def test_no_sample_sizes_gives_nan_effective_n():
    fit = _fit(_estimates(n=None), draws=200, chains=2)
    table = fit.summary()
    assert table["effective_n"].isna().all() and table["n_gained"].isna().all()
    assert table["variance_reduction"].between(0, 1).all()
    # the text tables leave the effective n out when it is unknown
    assert list(results_table(fit, borrowing=True).columns[-2:]) == ["shrinkage",
                                                                     "variance_reduction"]
    assert "no sample sizes" in _borrowing_part(fit, 0.95, "eti")


def test_vector_estimates_get_one_value_per_task_and_param():
    rng = np.random.default_rng(2)
    cov = np.stack([np.diag([0.04, 0.09])] * 5)
    est = TaskEstimates([f"s{k}" for k in range(5)], rng.normal(size=(5, 2)), cov,
                        n=[50, 60, 70, 80, 90], params=["read", "math"])
    fit = bf.fuse(est, model="independent", chains=2, draws=200, warmup=200, seed=0,
                  warn=False)
    table = fit.summary()
    assert len(table) == 10
    own = np.tile([0.04, 0.09], 5)
    np.testing.assert_allclose(table["effective_n"],
                               np.repeat([50, 60, 70, 80, 90], 2) * own / table["sd"] ** 2)


def test_tables_report_and_cli_show_the_borrowing(fixed_tau_fit, tmp_path, capsys):
    table = results_table(fixed_tau_fit, borrowing=True, diagnostics=True)
    assert list(table.columns[8:]) == ["shrinkage", "variance_reduction", "effective_n",
                                       "n_gained", "r_hat", "ess_bulk", "ess_tail"]
    text = results_table(fixed_tau_fit, fmt="markdown", borrowing=True)
    assert text.splitlines()[0].endswith("| Shrinkage | Variance reduction | Effective n | "
                                         "n gained |")
    html = _borrowing_part(fixed_tau_fit, 0.95, "eti")
    assert "Borrowing per task" in html and "Effective n" in html
    # the CLI table of `bayesfuse fuse`
    est = _estimates()
    csv = est.to_csv(tmp_path / "estimates.csv")
    assert "n" in pd.read_csv(csv).columns
    assert main(["fuse", str(csv), "--method", "exact", "--chains", "2", "--draws", "300",
                 "-o", str(tmp_path / "fit.nc")]) == 0
    out = capsys.readouterr().out
    assert "How much each task borrows" in out
    borrowing = out.split("How much each task borrows")[1].split("Hyperparameters")[0]
    assert "variance reduction" in borrowing and "effective n" in borrowing
    fit = bf.load_fit(tmp_path / "fit.nc")
    for row in fit.summary().itertuples():
        line = next(x for x in borrowing.splitlines() if f" {row.task} " in x)
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        assert cells == [row.task, f"{row.shrinkage:.2f}", f"{row.variance_reduction:.0%}",
                         f"{row.effective_n:.0f}", f"{row.n_gained:+.0f}"]
