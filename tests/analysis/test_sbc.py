"""Simulation-based calibration (Talts et al. 2018) of every family.

The fast tests check the rank machinery and run a small exact-method SBC of the
exchangeable family, with a negative control that must be rejected. The slow tests run NUTS
SBC at K = 8 for every family; a family passes when no quantity's rank histogram is
rejected by a chi-square test at the 1% level after Bonferroni correction.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayesfuse.analysis.calibration import (
    STUDY_SETTINGS,
    binomial_band,
    rank_uniformity,
    sbc,
    sbc_ranks,
    study_template,
)
from bayesfuse.errors import SpecError
from bayesfuse.families import FAMILIES


# ---------------------------------------------------------------------- rank machinery
def test_sbc_ranks_uniform_with_ties():
    """Random tie-breaking makes the rank of a discrete quantity uniform on {0..L}."""
    rng = np.random.default_rng(0)
    n, L = 20_000, 4
    # truth and draws i.i.d. Bernoulli(0.3): many ties, yet ranks must be uniform
    truth = (rng.uniform(size=n) < 0.3).astype(float)
    draws = (rng.uniform(size=(L, n)) < 0.3).astype(float)
    ranks = sbc_ranks(truth, draws, rng)
    assert ranks.min() >= 0 and ranks.max() <= L
    counts = np.bincount(ranks, minlength=L + 1)
    # each count ~ Bin(n, 1/5): sd = 57; 5 sd bound
    assert np.all(np.abs(counts - n / (L + 1)) < 5 * np.sqrt(n * 0.2 * 0.8))
    # without tie-breaking (ties counted below) the histogram would be far from flat
    biased = np.bincount((draws <= truth).sum(axis=0), minlength=L + 1)
    assert np.abs(biased - n / (L + 1)).max() > 20 * np.sqrt(n * 0.2 * 0.8)


def test_rank_uniformity_accepts_uniform_and_rejects_skewed():
    rng = np.random.default_rng(1)
    L = 99
    uniform = pd.DataFrame({"a": rng.integers(0, L + 1, 500), "b": rng.integers(0, L + 1, 500)})
    table = rank_uniformity(uniform, L)
    assert table.attrs["bins"] == 20
    assert table.attrs["passed"]
    assert np.all(table["p_bonferroni"] >= np.minimum(1, 2 * table["p_value"]) - 1e-12)
    # ranks piled at the ends (an overdispersed posterior's U-shape's opposite: too narrow)
    skewed = uniform.copy()
    skewed["b"] = np.where(rng.uniform(size=500) < 0.5, rng.integers(0, 5, 500),
                           rng.integers(95, 100, 500))
    table = rank_uniformity(skewed, L)
    assert not table.attrs["passed"]
    assert table.set_index("quantity").loc["b", "reject"]
    assert not table.set_index("quantity").loc["a", "reject"]


def test_rank_uniformity_validates():
    with pytest.raises(SpecError, match="ranks must lie"):
        rank_uniformity(pd.DataFrame({"a": [0, 100]}), 99)
    with pytest.raises(SpecError, match="bins"):
        rank_uniformity(pd.DataFrame({"a": [0, 1]}), 9, bins=11)


def test_binomial_band_covers_99_percent():
    low, high = binomial_band(100, 10)
    from scipy import stats

    mass = stats.binom(100, 0.1).cdf(high) - stats.binom(100, 0.1).cdf(low - 1)
    assert 0.99 <= mass < 0.999
    assert low < 10 < high


def test_sbc_needs_explicit_priors():
    with pytest.raises(SpecError, match="explicit prior.*tau"):
        sbc("exchangeable", study_template(), 4, {"mu": "normal(0, 1)"}, method="exact")


# ---------------------------------------------------------------------- fast exact SBC
def test_sbc_exchangeable_exact_is_calibrated_and_detects_a_wrong_prior():
    """Exact (quadrature) posterior: 100 simulations, 5 bins (20 expected per bin).

    With so few simulations only gross miscalibration is detectable; the negative control
    (data simulated with tau ~ halfnormal(1), fitted with halfnormal(0.25)) shows that this
    test has the power to see it.
    """
    priors = {"mu": "normal(0, 1)", "tau": "halfnormal(1)"}
    result = sbc("exchangeable", study_template(), 100, priors, method="exact", n_draws=99, seed=11)
    assert result.ranks.shape == (100, 5)
    assert set(result.ranks.columns) >= {"mu[theta]", "tau[theta]", "theta[t0,theta]"}
    assert result.ranks.to_numpy().min() >= 0 and result.ranks.to_numpy().max() <= 99
    table = result.test(bins=5)
    assert table.attrs["passed"], table
    wrong = sbc("exchangeable", study_template(), 100, priors, method="exact", n_draws=99, seed=11,
                fit_priors={"mu": "normal(0, 1)", "tau": "halfnormal(0.25)"})
    table = wrong.test(bins=5).set_index("quantity")
    assert table.loc["tau[theta]", "reject"]


# ---------------------------------------------------------------------- slow NUTS SBC
@pytest.mark.slow
@pytest.mark.parametrize("family", list(STUDY_SETTINGS))
def test_sbc_family(family):
    """NUTS SBC at K = 8, 80 simulations, L = 99, 10 bins (8 expected per bin)."""
    if family not in FAMILIES:
        pytest.skip(f"family '{family}' is not in bayesfuse.families yet")
    priors, options = STUDY_SETTINGS[family]
    result = sbc(family, study_template(), 80, priors, n_draws=99, seed=2024, **options)
    table = result.test(bins=10)
    assert table.attrs["passed"], table.to_string()
    # the fits behind the ranks were usable: few divergences, ESS near L or above
    assert result.fits["divergences"].mean() < 5
    assert result.fits["min_ess"].median() >= 99
