"""Tests of the frequentist baselines (bayesfuse.analysis.baselines).

Reference figures for the BCG vaccine data (metafor's ``dat.bcg``) come from metafor itself:
the README of wviechtb/metafor (REML with Knapp–Hartung, meta-regression on ablat, the yi/vi
table), its test file ``tests/testthat/test_misc_metan_vs_rma.uni_with_dat.bcg.r`` (FE and DL,
checked there against Stata's metan) and Viechtbauer (2010, J Stat Softw 36(3)) for REML.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from bayesfuse.analysis import baselines as bl
from bayesfuse.data.estimates import TaskEstimates
from bayesfuse.errors import BayesfuseError, EstimatesError, OptionError

# --------------------------------------------------------------------------- BCG data
TPOS = np.array([4, 6, 3, 62, 33, 180, 8, 505, 29, 17, 186, 5, 27], dtype=float)
TNEG = np.array(
    [119, 300, 228, 13536, 5036, 1361, 2537, 87886, 7470, 1699, 50448, 2493, 16886], dtype=float
)
CPOS = np.array([11, 29, 11, 248, 47, 372, 10, 499, 45, 65, 141, 3, 29], dtype=float)
CNEG = np.array(
    [128, 274, 209, 12619, 5761, 1079, 619, 87892, 7232, 1600, 27197, 2338, 17825], dtype=float
)
ABLAT = np.array([44, 55, 42, 52, 13, 44, 19, 13, 27, 42, 18, 33, 33], dtype=float)


def bcg_yi_vi() -> tuple[np.ndarray, np.ndarray]:
    """Log risk ratios and their sampling variances (metafor's escalc(measure="RR"))."""
    yi = np.log((TPOS / (TPOS + TNEG)) / (CPOS / (CPOS + CNEG)))
    vi = 1 / TPOS - 1 / (TPOS + TNEG) + 1 / CPOS - 1 / (CPOS + CNEG)
    return yi, vi


@pytest.fixture(scope="module")
def bcg() -> TaskEstimates:
    yi, vi = bcg_yi_vi()
    return TaskEstimates(
        [f"trial{i + 1}" for i in range(13)], yi, vi,
        covariates=pd.DataFrame({"ablat": ABLAT}),
    )


def test_bcg_effect_sizes_match_metafor():
    yi, vi = bcg_yi_vi()
    # rows 1, 4, 8, 12 and 13 of metafor's printed escalc table
    expected = {0: (-0.8893, 0.3256), 3: (-1.4416, 0.0200), 7: (0.0120, 0.0040),
                11: (0.4459, 0.5325), 12: (-0.0173, 0.0714)}
    for k, (y, v) in expected.items():
        assert yi[k] == pytest.approx(y, abs=5e-5)
        assert vi[k] == pytest.approx(v, abs=5e-5)


# --------------------------------------------------------------------------- no pooling
def test_no_pooling_intervals():
    est = TaskEstimates(["a", "b"], [[0.5, 1.0], [-0.2, 0.3]],
                        [[[0.04, 0.01], [0.01, 0.09]], [[0.01, 0.0], [0.0, 0.25]]],
                        params=["x", "y"])
    out = bl.no_pooling(est, ci_prob=0.9)
    assert list(out.columns) == ["task", "param", "estimate", "se", "ci_low", "ci_high"]
    assert out["task"].tolist() == ["a", "a", "b", "b"]
    assert out["param"].tolist() == ["x", "y", "x", "y"]
    np.testing.assert_allclose(out["se"], [0.2, 0.3, 0.1, 0.5])
    z = stats.norm.ppf(0.95)
    np.testing.assert_allclose(out["ci_high"], out["estimate"] + z * out["se"])
    with pytest.raises(OptionError, match="ci_prob"):
        bl.no_pooling(est, ci_prob=95)
    with pytest.raises(EstimatesError, match="TaskEstimates"):
        bl.no_pooling(pd.DataFrame({"estimate": [1.0]}))


# --------------------------------------------------------------------------- fixed effect
def test_fixed_effect_bcg_matches_metafor_and_hand_computation(bcg):
    yi, vi = bcg_yi_vi()
    w = 1 / vi
    mean = np.sum(w * yi) / np.sum(w)
    se = 1 / np.sqrt(np.sum(w))
    q = np.sum(w * (yi - mean) ** 2)
    out = bl.fixed_effect(bcg)
    row = out.iloc[0]
    assert row["estimate"] == pytest.approx(mean, abs=1e-12)
    assert row["se"] == pytest.approx(se, rel=1e-12)
    assert row["q"] == pytest.approx(q, rel=1e-12)
    assert row["i2"] == pytest.approx((q - 12) / q, rel=1e-12)
    # metafor rma(method="FE"): -0.4303 [-0.5097, -0.3509], z = -10.6247, QE = 152.2330
    assert row["estimate"] == pytest.approx(-0.4303, abs=5e-5)
    assert row["ci_low"] == pytest.approx(-0.5097, abs=5e-5)
    assert row["ci_high"] == pytest.approx(-0.3509, abs=5e-5)
    assert row["estimate"] / row["se"] == pytest.approx(-10.6247, abs=5e-5)
    assert row["q"] == pytest.approx(152.2330, abs=5e-5)
    assert row["q_df"] == 12
    assert row["i2"] == pytest.approx(0.921173, abs=5e-7)


def test_fixed_effect_multivariate_is_gls():
    rng = np.random.default_rng(3)
    n_tasks, p = 7, 2
    theta = rng.normal(size=(n_tasks, p))
    a = rng.normal(size=(n_tasks, p, p)) * 0.3
    cov = a @ np.swapaxes(a, 1, 2) + 0.05 * np.eye(p)
    est = TaskEstimates([f"t{k}" for k in range(n_tasks)], theta, cov, params=["ate", "slope"])
    # explicit GLS: stack all tasks, block-diagonal V, design = stacked identities
    big_v = np.zeros((n_tasks * p, n_tasks * p))
    for k in range(n_tasks):
        big_v[k * p:(k + 1) * p, k * p:(k + 1) * p] = cov[k]
    design = np.tile(np.eye(p), (n_tasks, 1))
    vinv_x = np.linalg.solve(big_v, design)
    info = design.T @ vinv_x
    gls = np.linalg.solve(info, vinv_x.T @ theta.reshape(-1))
    gls_cov = np.linalg.inv(info)
    out = bl.fixed_effect(est)
    assert out["param"].tolist() == ["ate", "slope"]
    np.testing.assert_allclose(out["estimate"], gls, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out["se"], np.sqrt(np.diag(gls_cov)), rtol=1e-10)
    np.testing.assert_allclose(np.array(out.attrs["cov"]), gls_cov, rtol=1e-9, atol=1e-14)
    resid = theta.reshape(-1) - design @ gls
    assert out.attrs["q_total"] == pytest.approx(resid @ np.linalg.solve(big_v, resid), rel=1e-9)
    assert out.attrs["q_total_df"] == (n_tasks - 1) * p
    # the per-parameter Q uses the diagonal only
    v0 = cov[:, 0, 0]
    m0 = np.sum(theta[:, 0] / v0) / np.sum(1 / v0)
    assert out["q"].iloc[0] == pytest.approx(np.sum((theta[:, 0] - m0) ** 2 / v0), rel=1e-10)


# --------------------------------------------------------------------------- random effects
def test_random_effects_reml_bcg_matches_metafor(bcg):
    out = bl.random_effects(bcg, method="reml")
    row = out.iloc[0]
    assert row["estimate"] == pytest.approx(-0.7145, abs=5e-5)
    assert row["se"] == pytest.approx(0.1798, abs=5e-5)
    assert row["tau2"] == pytest.approx(0.3132, abs=5e-5)
    assert row["tau2_se"] == pytest.approx(0.1664, abs=5e-5)
    assert row["ci_low"] == pytest.approx(-1.0669, abs=5e-5)
    assert row["ci_high"] == pytest.approx(-0.3622, abs=5e-5)
    assert 100 * row["i2"] == pytest.approx(92.22, abs=5e-3)
    assert row["h2"] == pytest.approx(12.86, abs=5e-3)
    assert row["q"] == pytest.approx(152.2330, abs=5e-5)
    assert row["method"] == "reml" and not row["knapp_hartung"]


def test_random_effects_dl_bcg_matches_metafor(bcg):
    out = bl.random_effects(bcg, method="DL")
    row = out.iloc[0]
    assert row["estimate"] == pytest.approx(-0.7141, abs=5e-5)
    assert row["se"] == pytest.approx(0.1787, abs=5e-5)
    assert row["tau2"] == pytest.approx(0.3088, abs=5e-5)
    assert row["ci_low"] == pytest.approx(-1.0644, abs=5e-5)
    assert row["ci_high"] == pytest.approx(-0.3638, abs=5e-5)
    assert row["estimate"] / row["se"] == pytest.approx(-3.9952, abs=5e-5)
    assert 100 * row["i2"] == pytest.approx(92.1173, abs=5e-5)
    # DL closed form, computed here independently
    yi, vi = bcg_yi_vi()
    w = 1 / vi
    q = np.sum(w * (yi - np.sum(w * yi) / np.sum(w)) ** 2)
    tau2 = max(0.0, (q - 12) / (np.sum(w) - np.sum(w**2) / np.sum(w)))
    assert row["tau2"] == pytest.approx(tau2, rel=1e-12)


def test_knapp_hartung_bcg_matches_metafor(bcg):
    out = bl.random_effects(bcg, method="reml", knapp_hartung=True)
    row = out.iloc[0]
    # metafor README: rma(yi, vi, data=dat, test="knha")
    #   estimate -0.7145, se 0.1808, tval -3.9522, df 12, pval 0.0019, CI [-1.1084, -0.3206]
    assert row["estimate"] == pytest.approx(-0.7145, abs=5e-5)
    assert row["se"] == pytest.approx(0.1808, abs=5e-5)
    assert row["estimate"] / row["se"] == pytest.approx(-3.9522, abs=5e-5)
    assert row["pvalue"] == pytest.approx(0.0019, abs=5e-5)
    assert row["ci_low"] == pytest.approx(-1.1084, abs=5e-5)
    assert row["ci_high"] == pytest.approx(-0.3206, abs=5e-5)
    assert row["knapp_hartung"]
    # independent computation from the REML tau2
    yi, vi = bcg_yi_vi()
    w = 1 / (vi + row["tau2"])
    mu = np.sum(w * yi) / np.sum(w)
    s2 = np.sum(w * (yi - mu) ** 2) / 12
    se = np.sqrt(s2 / np.sum(w))
    half = stats.t.ppf(0.975, 12) * se
    assert row["se"] == pytest.approx(se, rel=1e-10)
    assert row["ci_low"] == pytest.approx(mu - half, rel=1e-10)
    assert row["ci_high"] == pytest.approx(mu + half, rel=1e-10)


def test_blups_bcg_follow_metafor_formula(bcg):
    for method, kh in [("reml", False), ("dl", False), ("reml", True)]:
        out = bl.random_effects(bcg, method=method, knapp_hartung=kh, ci_prob=0.9)
        assert out.per_task is out.attrs["per_task"]
        blup = out.per_task
        mu, se_mu, tau2 = out["estimate"].iloc[0], out["se"].iloc[0], out["tau2"].iloc[0]
        yi, vi = bcg_yi_vi()
        lam = tau2 / (tau2 + vi)
        pred = mu + lam * (yi - mu)
        se = np.sqrt(tau2 * vi / (tau2 + vi) + (vi / (tau2 + vi)) ** 2 * se_mu**2)
        crit = stats.t.ppf(0.95, 12) if kh else stats.norm.ppf(0.95)
        assert blup["task"].tolist() == bcg.tasks
        np.testing.assert_allclose(blup["estimate"], pred, rtol=1e-12)
        np.testing.assert_allclose(blup["se"], se, rtol=1e-12)
        np.testing.assert_allclose(blup["ci_low"], pred - crit * se, rtol=1e-12)
        np.testing.assert_allclose(blup["ci_high"], pred + crit * se, rtol=1e-12)
        np.testing.assert_allclose(blup["shrinkage"], 1 - lam, rtol=1e-12)


def _reml_tau2_by_optimizer(y: np.ndarray, v: np.ndarray) -> float:
    def negloglik(tau2: float) -> float:
        w = 1 / (v + tau2)
        mu = np.sum(w * y) / np.sum(w)
        return 0.5 * (np.sum(np.log(v + tau2)) + np.log(np.sum(w)) + np.sum(w * (y - mu) ** 2))

    upper = 10 * (np.var(y) + np.max(v))
    res = optimize.minimize_scalar(negloglik, bounds=(0.0, upper), method="bounded",
                                   options={"xatol": 1e-12})
    return float(res.x)


def test_reml_maximises_restricted_likelihood_and_handles_the_boundary():
    rng = np.random.default_rng(11)
    n_tasks = 15
    v = rng.uniform(0.02, 0.3, size=(n_tasks, 3))
    y = rng.normal(0.3, 1.0, size=(n_tasks, 3)) * np.sqrt(v + np.array([0.5, 0.05, 0.0]))
    est = TaskEstimates([f"t{k}" for k in range(n_tasks)], y, v, params=["a", "b", "c"])
    out = bl.random_effects(est)
    for j in range(3):
        expected = _reml_tau2_by_optimizer(y[:, j], v[:, j])
        assert out["tau2"].iloc[j] == pytest.approx(expected, abs=1e-7)
    # each parameter is analysed on its own: same numbers as one-parameter estimates
    for j in range(3):
        single = bl.random_effects(TaskEstimates(est.tasks, y[:, j], v[:, j]))
        pd.testing.assert_series_equal(
            out.iloc[j][["estimate", "se", "tau2", "i2", "q"]].astype(float),
            single.iloc[0][["estimate", "se", "tau2", "i2", "q"]].astype(float),
            check_names=False, rtol=1e-9,
        )
    # homogeneous estimates: both estimators put tau2 exactly at 0, and RE equals FE
    flat = TaskEstimates(list("abcdef"), [0.10, 0.11, 0.09, 0.10, 0.105, 0.095], [0.04] * 6)
    fe = bl.fixed_effect(flat)
    for method in ("reml", "dl"):
        out = bl.random_effects(flat, method=method)
        assert out["tau2"].iloc[0] == 0.0
        assert out["i2"].iloc[0] == 0.0
        assert out["estimate"].iloc[0] == pytest.approx(fe["estimate"].iloc[0], rel=1e-12)
        np.testing.assert_allclose(out.per_task["estimate"], fe["estimate"].iloc[0])


def test_random_effects_rejects_bad_options(bcg):
    with pytest.raises(OptionError, match="method"):
        bl.random_effects(bcg, method="ml")


def test_results_concatenate_and_keep_their_extras(bcg):
    reml = bl.random_effects(bcg)
    dl = bl.random_effects(bcg, method="dl")
    both = pd.concat([reml, dl], ignore_index=True)
    assert both["method"].tolist() == ["reml", "dl"]
    assert isinstance(reml, pd.DataFrame)
    # column selections and copies keep the BLUPs
    assert reml[["param", "estimate"]].per_task is reml.per_task
    assert reml.copy().attrs["per_task"].equals(reml.per_task)


# --------------------------------------------------------------------------- meta-regression
def _reml_tau2_regression(y: np.ndarray, v: np.ndarray) -> float:
    X = np.column_stack([np.ones_like(y), ABLAT])

    def negloglik(tau2: float) -> float:
        w = 1 / (v + tau2)
        xtwx = X.T @ (w[:, None] * X)
        beta = np.linalg.solve(xtwx, X.T @ (w * y))
        resid = y - X @ beta
        return 0.5 * (np.sum(np.log(v + tau2)) + np.linalg.slogdet(xtwx)[1]
                      + np.sum(w * resid**2))

    res = optimize.minimize_scalar(negloglik, bounds=(0.0, 1.0), method="bounded",
                                   options={"xatol": 1e-12})
    return float(res.x)


def test_meta_regression_bcg_matches_metafor(bcg):
    out = bl.meta_regression(bcg, method="reml")
    assert out["term"].tolist() == ["intercept", "ablat"]
    b0, b1 = out.iloc[0], out.iloc[1]
    assert b0["estimate"] == pytest.approx(0.2515, abs=1e-4)
    assert b1["estimate"] == pytest.approx(-0.0291, abs=1e-4)
    # Checked to 1e-4: metafor's Fisher scoring stops at |change| < 1e-5, at tau2 = 0.076355
    # (printed 0.0764); the REML maximum, checked below with an independent optimizer, is
    # 0.076348, which moves the other printed figures by up to 6e-5.
    assert b0["tau2"] == pytest.approx(0.0764, abs=1e-4)
    assert b0["tau2"] == pytest.approx(_reml_tau2_regression(bcg_yi_vi()[0], bcg_yi_vi()[1]),
                                       abs=1e-8)
    # metafor README (same model): SE(tau2) 0.0591, I2 68.39%, R2 75.62%, QE(11) 30.7331
    # (SE(tau2) is 0.059051 at metafor's stopping point, 0.059047 at the maximum)
    assert b0["tau2_se"] == pytest.approx(0.0591, abs=1e-4)
    assert 100 * b0["i2"] == pytest.approx(68.39, abs=5e-3)
    assert b0["r2"] == pytest.approx(0.7562, abs=1e-4)  # 0.75624 at metafor's stopping point
    assert b0["q_e"] == pytest.approx(30.7331, abs=1e-4)
    assert b0["q_e_pvalue"] == pytest.approx(0.0012, abs=1e-4)
    # with Knapp-Hartung (the README call): se 0.2839 / 0.0082, CIs [-0.3735, 0.8764],
    # [-0.0472, -0.0111], t = -3.5483 on 11 df
    kh = bl.meta_regression(bcg, knapp_hartung=True)
    assert kh["se"].tolist() == pytest.approx([0.2839, 0.0082], abs=1e-4)
    assert kh["ci_low"].tolist() == pytest.approx([-0.3735, -0.0472], abs=1e-4)
    assert kh["ci_high"].tolist() == pytest.approx([0.8764, -0.0111], abs=1e-4)
    assert kh["estimate"].iloc[1] / kh["se"].iloc[1] == pytest.approx(-3.5483, abs=1e-4)
    # BLUPs: fitted value + shrunken residual
    yi, vi = bcg_yi_vi()
    fitted = b0["estimate"] + b1["estimate"] * ABLAT
    lam = b0["tau2"] / (b0["tau2"] + vi)
    np.testing.assert_allclose(out.per_task["estimate"], fitted + lam * (yi - fitted), rtol=1e-12)


def test_meta_regression_errors(bcg):
    yi, vi = bcg_yi_vi()
    plain = TaskEstimates(bcg.tasks, yi, vi)
    with pytest.raises(EstimatesError, match="covariates"):
        bl.meta_regression(plain)
    with pytest.raises(EstimatesError, match="Unknown covariate"):
        bl.meta_regression(bcg, covariates=["year"])
    constant = TaskEstimates(bcg.tasks, yi, vi, covariates=pd.DataFrame({"z": np.ones(13)}))
    with pytest.raises(EstimatesError, match="collinear or constant"):
        bl.meta_regression(constant)


# --------------------------------------------------------------------------- late fusion
def _check_optimality(est: TaskEstimates, out: pd.DataFrame, atol: float = 1e-7) -> None:
    """Subgradient (KKT) conditions of the late-fusion objective in the original units:
    Vₖ⁻¹(θ̂ₖ − θₖ) = λₖ S⁻¹uₖ with uₖ = S⁻¹(θₖ − γ)/‖S⁻¹(θₖ − γ)‖ if θₖ ≠ γ, ‖uₖ‖ ≤ 1 if
    θₖ = γ; and Σ_{k in cluster} Vₖ⁻¹(θ̂ₖ − θₖ) = 0 for each centre γ."""
    n_tasks, p = est.estimates.shape
    theta = out["estimate"].to_numpy().reshape(n_tasks, p)
    center = out["center"].to_numpy().reshape(n_tasks, p)
    fused = out["fused"].to_numpy().reshape(n_tasks, p)[:, 0]
    cluster = out["cluster"].to_numpy().reshape(n_tasks, p)[:, 0]
    lam = np.array(out.attrs["penalty"])
    scale = np.array(out.attrs["scale"])
    pull = np.linalg.solve(est.covariances, (est.estimates - theta)[..., None])[..., 0]
    u = scale * pull / lam[:, None]  # = uₖ
    for k in range(n_tasks):
        diff = (theta[k] - center[k]) / scale
        if fused[k]:
            np.testing.assert_array_equal(theta[k], center[k])
            assert np.linalg.norm(u[k]) <= 1 + 1e-9
        else:
            assert np.linalg.norm(diff) > 0
            np.testing.assert_allclose(u[k], diff / np.linalg.norm(diff), atol=atol)
    for c in np.unique(cluster):
        members = cluster == c
        scale_c = np.abs(pull[members]).sum(axis=0) + 1.0
        np.testing.assert_allclose(pull[members].sum(axis=0) / scale_c, 0.0, atol=atol)


def _correlated_cov(rng: np.random.Generator, n_tasks: int, p: int, size: float) -> np.ndarray:
    a = rng.normal(size=(n_tasks, p, p))
    cov = a @ np.swapaxes(a, 1, 2) + p * np.eye(p)
    return size**2 * cov / np.trace(cov, axis1=1, axis2=2)[:, None, None] * p


def test_late_fusion_recovers_two_groups():
    rng = np.random.default_rng(5)
    truth = np.repeat([0, 1], 6)
    order = rng.permutation(12)
    truth = truth[order]
    # p = 1
    y = np.where(truth == 0, 0.0, 4.0) + rng.normal(0, 0.1, 12)
    est = TaskEstimates([f"t{k}" for k in range(12)], y, np.full(12, 0.04))
    out = bl.late_fusion(est, clusters=2)
    labels = out["cluster"].to_numpy()
    assert set(labels) == {0, 1}
    assert all(len(set(labels[truth == g])) == 1 for g in (0, 1))
    assert labels[truth == 0][0] != labels[truth == 1][0]
    centers = np.sort(out.centers["theta"].to_numpy())
    assert centers == pytest.approx([0.0, 4.0], abs=0.2)
    _check_optimality(est, out)
    # p = 2, correlated covariances, groups separated along both parameters
    means = np.array([[0.0, 0.0], [3.0, -2.0]])[truth]
    cov = _correlated_cov(rng, 12, 2, 0.2)
    y2 = means + np.einsum("kij,kj->ki", np.linalg.cholesky(cov), rng.normal(size=(12, 2)))
    est2 = TaskEstimates([f"t{k}" for k in range(12)], y2, cov, params=["a", "b"])
    out2 = bl.late_fusion(est2, clusters=2)
    labels2 = out2["cluster"].to_numpy()[::2]
    assert all(len(set(labels2[truth == g])) == 1 for g in (0, 1))
    assert labels2[truth == 0][0] != labels2[truth == 1][0]
    _check_optimality(est2, out2)


def test_late_fusion_outlier_moves_by_a_bounded_amount():
    y = np.array([1.0, 1.05, 0.95, 1.02, 0.98, 1.0, 1.03, 0.97, 1.0, 8.0])
    se = np.array([0.2] * 9 + [0.5])
    est = TaskEstimates([f"t{k}" for k in range(10)], y, se**2)
    out = bl.late_fusion(est)
    C = out.attrs["C"]
    assert C == pytest.approx(stats.norm.ppf(0.95), rel=1e-12)
    fused = out["fused"].to_numpy()
    assert fused[:9].all() and not fused[9]
    theta = out["estimate"].to_numpy()
    # the outlier is pulled by exactly C standard errors (soft thresholding), no more
    assert y[9] - theta[9] == pytest.approx(C * se[9], rel=1e-10)
    # the centre: the fused tasks' inverse-variance mean plus the outlier's bounded pull
    w = 1 / se[:9] ** 2
    center = (np.sum(w * y[:9]) + C / se[9]) / np.sum(w)
    assert out.centers["theta"].iloc[0] == pytest.approx(center, rel=1e-10)
    np.testing.assert_allclose(theta[:9], center, rtol=1e-12)
    fe = bl.fixed_effect(est)["estimate"].iloc[0]
    assert abs(center - 1.0) < 0.02 < abs(fe - 1.0)  # robust, unlike the fixed effect
    _check_optimality(est, out)


def test_late_fusion_similar_tasks_fuse_to_the_fixed_effect():
    rng = np.random.default_rng(7)
    cov = _correlated_cov(rng, 8, 2, 0.3)
    y = np.array([0.5, -1.0]) + rng.normal(0, 0.005, size=(8, 2))
    est = TaskEstimates([f"t{k}" for k in range(8)], y, cov, params=["a", "b"])
    out = bl.late_fusion(est)
    assert out["fused"].all()
    assert (out["cluster"] == 0).all()
    fe = bl.fixed_effect(est)["estimate"].to_numpy()
    np.testing.assert_allclose(out.centers.iloc[0].to_numpy(), fe, atol=1e-9)
    np.testing.assert_allclose(out["estimate"].to_numpy().reshape(8, 2), np.tile(fe, (8, 1)),
                               atol=1e-9)
    # a huge C fuses everything too; a tiny C pools nothing
    spread = TaskEstimates(est.tasks, y * 50, cov, params=["a", "b"])
    assert bl.late_fusion(spread, C=1e6)["fused"].all()
    loose = bl.late_fusion(spread, C=1e-9)
    assert not loose["fused"].any()
    np.testing.assert_allclose(loose["estimate"].to_numpy(), spread.estimates.reshape(-1),
                               atol=1e-6)


def test_late_fusion_satisfies_optimality_conditions():
    rng = np.random.default_rng(2024)
    for n_params, clusters in [(1, 1), (2, 1), (3, 1), (2, 3)]:
        n_tasks = 14
        cov = _correlated_cov(rng, n_tasks, n_params, 0.3)
        # mixed scales across parameters to exercise the standardization
        scales = np.array([1.0, 30.0, 0.01])[:n_params]
        y = rng.standard_t(3, size=(n_tasks, n_params)) * 0.6
        est = TaskEstimates([f"t{k}" for k in range(n_tasks)], y * scales,
                            cov * np.outer(scales, scales))
        out = bl.late_fusion(est, clusters=clusters)
        assert out["fused"].any() and not out["fused"].all()
        _check_optimality(est, out)


def test_late_fusion_is_unit_invariant():
    rng = np.random.default_rng(9)
    cov = _correlated_cov(rng, 10, 2, 0.3)
    y = rng.normal(size=(10, 2))
    est = TaskEstimates([f"t{k}" for k in range(10)], y, cov)
    units = np.array([1000.0, 0.1])
    scaled = TaskEstimates(est.tasks, y * units, cov * np.outer(units, units))
    for clusters in (1, 2):
        a = bl.late_fusion(est, clusters=clusters)
        b = bl.late_fusion(scaled, clusters=clusters)
        np.testing.assert_array_equal(a["fused"], b["fused"])
        np.testing.assert_array_equal(a["cluster"], b["cluster"])
        np.testing.assert_allclose(b["estimate"].to_numpy(),
                                   a["estimate"].to_numpy() * np.tile(units, 10), rtol=1e-7)
        assert b.attrs["objective"] == pytest.approx(a.attrs["objective"], rel=1e-8)


def test_late_fusion_clusters_reach_the_global_optimum():
    """p = 1: brute force over all 2-partitions, each centre by an independent 1-D search on
    the profiled (Huber) objective."""
    y = np.array([0.0, 0.3, 0.5, 1.9, 2.2, 2.4, 2.0, 0.9])
    se = np.array([0.2, 0.15, 0.3, 0.2, 0.25, 0.1, 0.3, 0.4])
    est = TaskEstimates([f"t{k}" for k in range(8)], y, se**2)
    C = 1.2

    def profile(gamma: float, idx: list[int]) -> float:
        z = np.abs(y[idx] - gamma) / se[idx]
        return float(np.sum(np.where(z <= C, 0.5 * z**2, C * z - 0.5 * C**2)))

    def best_center(idx: list[int]) -> float:
        res = optimize.minimize_scalar(lambda g: profile(g, idx), bounds=(y.min(), y.max()),
                                       method="bounded", options={"xatol": 1e-10})
        return float(res.fun)

    brute = min(
        best_center([k for k in range(8) if mask[k]])
        + best_center([k for k in range(8) if not mask[k]])
        for mask in itertools.product([True, False], repeat=8)
        if mask[0] and not all(mask)
    )
    out = bl.late_fusion(est, clusters=2, C=C)
    assert out.attrs["objective"] == pytest.approx(brute, abs=1e-8)
    one = bl.late_fusion(est, clusters=1, C=C)
    assert one.attrs["objective"] == pytest.approx(best_center(list(range(8))), abs=1e-8)
    _check_optimality(est, out)
    # K clusters: every task alone, no shrinkage
    alone = bl.late_fusion(est, clusters=8, C=C)
    np.testing.assert_allclose(alone["estimate"], y, atol=1e-12)
    assert alone.attrs["objective"] == pytest.approx(0.0, abs=1e-12)


def test_late_fusion_bootstrap_and_errors():
    rng = np.random.default_rng(1)
    y = np.r_[rng.normal(0, 0.1, 6), 2.0]
    est = TaskEstimates([f"t{k}" for k in range(7)], y, np.full(7, 0.04))
    a = bl.late_fusion(est, n_boot=30, seed=3)
    b = bl.late_fusion(est, n_boot=30, seed=3)
    c = bl.late_fusion(est, n_boot=30, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["se"], c["se"])
    assert np.all(np.isfinite(a["se"])) and np.all(a["se"] > 0)
    assert np.all(a["se"] < 0.2 * 1.5)  # pooling: not wider than no pooling, with margin
    np.testing.assert_allclose(a["ci_high"] - a["estimate"], stats.norm.ppf(0.975) * a["se"])
    assert "se" not in bl.late_fusion(est).columns
    with pytest.raises(BayesfuseError, match="clusters"):
        bl.late_fusion(est, clusters=8)
    with pytest.raises(BayesfuseError, match="clusters"):
        bl.late_fusion(est, clusters=0)
    with pytest.raises(BayesfuseError, match="C must be"):
        bl.late_fusion(est, C=0.0)
    with pytest.raises(BayesfuseError, match="n_boot"):
        bl.late_fusion(est, n_boot=1)
