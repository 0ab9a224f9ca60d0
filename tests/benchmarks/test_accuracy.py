"""Slow: the multi-task simulation study runs end to end in its --quick setting."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "accuracy.py"


def _load():
    spec = importlib.util.spec_from_file_location("accuracy_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_designs_have_the_stated_truth():
    """Fast: three clusters at −δ, 0, δ; no structure within (−1, 1); task sizes."""
    acc = _load()
    rng = np.random.default_rng(0)
    theta = acc.true_effects("clusters 2/3", rng)
    assert sorted(np.unique(np.round(theta, 12))) == pytest.approx([-2 / 3, 0.0, 2 / 3])
    assert np.bincount((np.round(theta * 1.5) + 1).astype(int)).tolist() == [6, 7, 7]
    free = acc.true_effects("no structure", rng)
    assert len(np.unique(free)) == 20 and np.all(np.abs(free) < 1)
    assert acc.task_sizes(True).tolist()[:2] == [440, 480]
    rows = acc.simulate_rows(theta, np.full(20, 200), rng)
    assert len(rows) == 4000 and set(rows["d"].unique()) == {0.0, 1.0}
    # the effect in task 1 (θ = 0) vs task 2 (θ = 2/3): difference-in-means is unbiased
    # up to confounding by x0; a regression on d and x recovers θ within 4 SE
    for j in (0, 1):
        part = rows[rows["task"] == f"task{j + 1}"]
        design = np.column_stack([np.ones(len(part)), part["d"], part[[f"x{i}" for i in
                                                                         range(5)]]])
        coef, *_ = np.linalg.lstsq(design, part["y"], rcond=None)
        assert abs(coef[1] - theta[j]) < 4 * 3 / np.sqrt(200 * 0.25)


def test_oracle_posterior_matches_quadrature():
    """Fast: the true-prior posterior against direct numerical integration."""
    from scipy import integrate, stats

    acc = _load()
    estimate, se = np.array([-0.9, 0.1, 0.55]), np.array([0.2, 0.3, 0.25])
    mean, low, high = acc.oracle_posterior("no structure", estimate, se)
    for j in range(3):
        def like(t, j=j):
            return stats.norm.pdf(estimate[j], t, se[j])

        mass = integrate.quad(like, -1, 1)[0]
        moment = integrate.quad(lambda t, j=j: t * stats.norm.pdf(estimate[j], t, se[j]),
                                -1, 1)[0]
        assert mean[j] == pytest.approx(moment / mass, abs=1e-7)
        assert integrate.quad(like, -1, low[j])[0] / mass == pytest.approx(0.025, abs=1e-6)
        assert integrate.quad(like, high[j], 1)[0] / mass == pytest.approx(0.025, abs=1e-6)
    # three atoms: weights ∝ N(θ̂; atom, se²). θ̂ = 0.3 (δ = 1/3): with se = 0.4 every
    # atom holds > 2.5% (interval −1/3..1/3), with se = 0.2 the atom −1/3 holds 0.5%
    atoms = np.array([-1, 0, 1]) / 3
    mean, low, high = acc.oracle_posterior("clusters 1/3", np.array([0.3, 0.3, 5.0]),
                                           np.array([0.4, 0.2, 0.2]))
    weight = stats.norm.pdf(0.3, atoms, 0.4)
    assert mean[0] == pytest.approx(weight @ atoms / weight.sum())
    assert (low[0], high[0]) == (pytest.approx(-1 / 3), pytest.approx(1 / 3))
    assert (low[1], high[1]) == (pytest.approx(0.0), pytest.approx(1 / 3))
    assert mean[2] == pytest.approx(1 / 3)
    assert (low[2], high[2]) == (pytest.approx(1 / 3), pytest.approx(1 / 3))


def test_scale_oracle_matches_brute_force_quadrature():
    """Fast: the scale-unknown reference against adaptive quadrature over the scale with
    every labelling of three tasks enumerated (clusters), and a double integral (no
    structure) — neither uses the per-task factorisation or the grid."""
    import itertools

    from scipy import integrate, stats

    acc = _load()
    estimate, se = np.array([-0.7, 0.05, 0.8]), np.array([0.3, 0.25, 0.35])
    # clusters: p(θ̂, labels | d) = Π_j N(θ̂_j; l_j d, s_j²) / 3, d ~ Uniform(0, 2)
    labellings = np.array(list(itertools.product([-1.0, 0.0, 1.0], repeat=3)))  # (27, 3)

    def joint(d):  # (27,) p(θ̂, labels | d) up to a constant
        return np.prod(stats.norm.pdf(estimate, labellings * d, se), axis=1)

    def integral(fn, low=0.0, high=2.0):
        return integrate.quad(fn, low, high, epsabs=1e-13, epsrel=1e-10, limit=200)[0]

    evidence = integral(lambda d: joint(d).sum())
    mean, low, high = acc.scale_oracle_posterior("clusters 1", estimate, se)
    for j in range(3):
        moment = integral(lambda d, j=j: (joint(d) * labellings[:, j] * d).sum())
        assert mean[j] == pytest.approx(moment / evidence, abs=1e-6)
    # task 1 sits on −d: P(θ_1 ≤ t) = P(l_1 = −1, d ≥ −t) for t < 0, 2.5% at its lower end
    negative = labellings[:, 0] == -1

    def below(t):
        return integral(lambda d: joint(d)[negative].sum(), -t, 2.0) / evidence

    assert low[0] < 0 and below(low[0]) == pytest.approx(0.025, abs=2e-4)
    # no structure: θ_j ~ Uniform(−b, b), b ~ Uniform(0, 2)
    def likelihood(b):  # Π_j p(θ̂_j | b)
        return np.prod((stats.norm.cdf((b - estimate) / se)
                        - stats.norm.cdf((-b - estimate) / se)) / (2 * b))

    evidence = integral(likelihood, 1e-9)
    mean, low, high = acc.scale_oracle_posterior("no structure", estimate, se)
    for j in range(3):
        others = np.arange(3) != j

        def inner(b, j=j, others=others):  # ∫ t N(θ̂_j; t, s_j²) dt / 2b · Π_{i≠j} p(θ̂_i | b)
            rest = np.prod((stats.norm.cdf((b - estimate[others]) / se[others])
                            - stats.norm.cdf((-b - estimate[others]) / se[others]))
                           / (2 * b))
            first = integrate.quad(lambda t: t * stats.norm.pdf(estimate[j], t, se[j]),
                                   -b, b, epsabs=1e-13)[0]
            return first / (2 * b) * rest

        assert mean[j] == pytest.approx(integral(inner, 1e-9) / evidence, abs=1e-5)

        def mass_below(t, j=j, others=others):  # P(θ_j ≤ t | data)
            def part(b):
                rest = np.prod((stats.norm.cdf((b - estimate[others]) / se[others])
                                - stats.norm.cdf((-b - estimate[others]) / se[others]))
                               / (2 * b))
                top = min(t, b)
                if top <= -b:
                    return 0.0
                inside = stats.norm.cdf((top - estimate[j]) / se[j]) \
                    - stats.norm.cdf((-b - estimate[j]) / se[j])
                return inside / (2 * b) * rest
            return integral(part, 1e-9) / evidence

        assert mass_below(low[j]) == pytest.approx(0.025, abs=2e-4)
        assert mass_below(high[j]) == pytest.approx(0.975, abs=2e-4)


def test_centres_oracle_matches_monte_carlo():
    """Fast: the centres-unknown reference against self-normalised importance sampling
    from the prior with every labelling of three tasks enumerated (no grid, no per-task
    factorisation); tolerance 4 Monte Carlo standard errors."""
    import itertools

    acc = _load()
    estimate, se = np.array([-0.7, 0.05, 0.8]), np.array([0.3, 0.25, 0.35])
    mean, low, high = acc.centres_oracle_posterior(estimate, se)
    rng = np.random.default_rng(5)
    centres = rng.uniform(-acc.CENTRE_MAX, acc.CENTRE_MAX, (400_000, 3))
    labellings = np.array(list(itertools.product(range(3), repeat=3)))  # (27, 3)
    values = centres[:, labellings]  # (S, 27, 3): θ of the three tasks per labelling
    joint = np.exp(-0.5 * np.sum(((estimate - values) / se) ** 2, axis=2))  # (S, 27)
    weight = joint.sum(axis=1)
    for j in range(3):
        per_draw = (joint * values[:, :, j]).sum(axis=1) / weight  # E[θ_j | c, θ̂]
        norm = weight / weight.sum()
        estimate_j = norm @ per_draw
        mc_se = np.sqrt(np.sum(norm**2 * (per_draw - estimate_j) ** 2))
        assert mean[j] == pytest.approx(estimate_j, abs=4 * mc_se)
        assert low[j] < mean[j] < high[j]
    # the interval ends: P(θ_j ≤ low) ≥ 2.5% by the sampled posterior, within a grid step
    step = 2 * acc.CENTRE_MAX / acc.CENTRE_GRID
    for j in range(3):
        def below(t, j=j):  # P(θ_j ≤ t | θ̂) by the weighted draws
            return np.sum((joint * (values[:, :, j] <= t)).sum(axis=1)) / weight.sum()

        assert below(low[j] - step) < 0.025 + 0.005 and below(low[j] + step) > 0.025 - 0.005
        assert below(high[j] - step) < 0.975 + 0.005 and below(high[j] + step) > 0.975 - 0.005


@pytest.mark.slow
def test_accuracy_quick_runs_and_is_sane(tmp_path):
    acc = _load()
    acc.main(["--quick", "--out", str(tmp_path)])
    for name in ("accuracy.md", "accuracy.png", "accuracy.csv", "accuracy_raw.csv.gz"):
        assert (tmp_path / name).stat().st_size > 0, name
    table = pd.read_csv(tmp_path / "accuracy.csv")
    assert set(table["design"]) == set(acc.DESIGNS)
    assert set(table["estimand"]) == {"plr", "ate"}
    assert {"no pooling", "cluster", "exchangeable", "late fusion 3"} <= set(table["method"])
    assert table["coverage"].between(0, 1).all()
    assert (table["length"] > 0).all() and np.isfinite(table["mean_mse"]).all()
    t = table.set_index(["design", "estimand", "method"])
    for estimand in ("plr", "ate"):
        nop = t.loc[("clusters 1", estimand, "no pooling")]
        # no pooling is unbiased with SE ≈ 0.17–0.29: MSE ≈ mean SE² ≈ 0.05 (3 reps × 20)
        assert 0.02 < nop["mean_mse"] < 0.12
        # a single pooled effect misses clusters at −1, 0, 1 by 2/3 on average (squared)
        assert t.loc[("clusters 1", estimand, "fixed effect"), "mean_mse"] > 0.5
        # 3 replications: the MC SE of a mean MSE is ~20%; fusing must not hurt beyond it
        assert t.loc[("clusters 1", estimand, "cluster"), "mean_mse"] < 1.2 * nop["mean_mse"]
        assert t.loc[("clusters 1", estimand, "exchangeable"), "mean_mse"] < 1.2 * nop[
            "mean_mse"]
    md = (tmp_path / "accuracy.md").read_text()
    assert "## Targets" in md and "no structure" in md


def test_cluster_priors_reads_stage1_and_pairs_differences():
    """Fast: the prior-sensitivity script rebuilds θ̂ and se from the stored no-pooling
    rows, and its differences are paired by replication."""
    spec = importlib.util.spec_from_file_location("cluster_priors",
                                                  SCRIPT.parent / "cluster_priors.py")
    cp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cp)
    se = np.linspace(0.1, 0.3, 20)
    estimate = np.arange(20) / 10
    raw = pd.DataFrame({"rep": 0, "design": "clusters 1", "estimand": "plr",
                        "method": "no pooling", "task": np.arange(20)[::-1],
                        "theta": 0.0, "estimate": estimate[::-1],
                        "ci_low": (estimate - 1.959964 * se)[::-1],
                        "ci_high": (estimate + 1.959964 * se)[::-1]})
    est, theta = cp.stage1_estimates(raw, "clusters 1", 0, "plr")
    np.testing.assert_allclose(est.estimates[:, 0], estimate)
    np.testing.assert_allclose(np.sqrt(est.covariances[:, 0, 0]), se, rtol=1e-6)
    assert est.tasks[:2] == ["task1", "task2"] and np.all(theta == 0)
    # two replications: a variant better by 0.01 in both has diff −0.01 ± 0
    per_rep = pd.DataFrame({"variant": ["default", "default", "other", "other"],
                            "design": "clusters 1", "rep": [0, 1, 0, 1],
                            "sq_error": [0.05, 0.03, 0.04, 0.02], "coverage": 0.95})
    raw2 = pd.concat([raw, raw.assign(rep=1)])
    table = cp.summarise(per_rep, raw2, "plr").set_index("variant")
    assert table.loc["other", "diff_vs_default"] == pytest.approx(-0.01)
    assert table.loc["other", "diff_se"] == pytest.approx(0.0, abs=1e-12)
    nop = np.mean(estimate ** 2)
    assert table.loc["default", "vs_no_pooling"] == pytest.approx(0.04 / nop)
