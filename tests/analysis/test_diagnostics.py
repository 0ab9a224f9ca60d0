"""Vectorised R-hat and ESS against ArviZ's reference implementation, and the verdict."""

from __future__ import annotations

import warnings

import arviz as az
import numpy as np
import pytest

import bayesfuse as bf
from bayesfuse.analysis.diagnostics import rhat_ess


@pytest.mark.parametrize(("chains", "draws"), [(4, 1000), (2, 301), (3, 57)])
def test_rhat_ess_match_arviz(chains, draws):
    rng = np.random.default_rng(draws)
    n = 12
    phi = rng.uniform(0, 0.97, n)
    noise = rng.standard_normal((chains, draws, n))
    x = np.zeros_like(noise)
    for t in range(1, draws):
        x[:, t] = phi * x[:, t - 1] + noise[:, t]
    x[..., 0] += np.arange(chains)[:, None] * 0.5  # chains that disagree
    x[..., 1] = rng.standard_cauchy((chains, draws))  # heavy tails
    x[..., 2] = np.round(x[..., 2])  # ties
    r_hat, bulk, tail = rhat_ess(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_r = [az.rhat(x[..., j]) for j in range(n)]
        ref_b = [az.ess(x[..., j], method="bulk") for j in range(n)]
        ref_t = [az.ess(x[..., j], method="tail") for j in range(n)]
    np.testing.assert_allclose(r_hat, ref_r, rtol=1e-10)
    np.testing.assert_allclose(bulk, ref_b, rtol=1e-10)
    np.testing.assert_allclose(tail, ref_t, rtol=1e-10)
    assert r_hat[0] > 1.01  # the disagreeing chains are caught


def test_verdict_fails_with_advice_for_short_chains(eight_schools):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bf.fuse(eight_schools, chains=2, draws=30, warmup=30, seed=0, warn=False)
    diag = fit.diagnostics()
    assert not diag.ok
    checks = diag.checks.set_index("check")
    assert not checks.loc["ess_bulk", "passed"]
    assert any("increase draws" in a for a in diag.advice)
    with pytest.warns(bf.errors.ConvergenceWarning, match="Sampler diagnostics failed"):
        bf.fuse(eight_schools, chains=2, draws=30, warmup=30, seed=0)
