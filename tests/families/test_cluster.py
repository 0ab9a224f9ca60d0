"""The ``cluster`` family: recovery, label invariance, exact per-draw computations, outputs."""

from __future__ import annotations

import copy
import re
from types import SimpleNamespace

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_sampled_well, clustered_estimates
from numpyro import handlers
from scipy import integrate, stats
from sklearn.metrics import adjusted_rand_score

import bayesfuse as bf
from bayesfuse.data.estimates import TaskEstimates
from bayesfuse.errors import SpecError
from bayesfuse.families.cluster import (
    CloglogBeta,
    binder_loss,
    canonical_labels,
    coclustering,
    log_weights_to_stick,
    order_log_prob,
    point_clustering,
    stick_log_weights,
    weights_to_stick,
)
from bayesfuse.inference.fuse import prepare
from bayesfuse.inference.nuts import relabel_adaptation

FIT = dict(chains=4, warmup=500, draws=500, warn=False)
SHORT = dict(chains=4, warmup=300, draws=300, warn=False)


def vector_cluster_estimates(seed=3, per=10):
    """p = 2 in two clusters, full (correlated) sampling covariances."""
    rng = np.random.default_rng(seed)
    means = np.array([[-1.5, 1.0], [1.5, -1.0]])
    truth = np.repeat([0, 1], per)
    theta = means[truth] + 0.1 * rng.standard_normal((truth.size, 2))
    se = rng.uniform(0.25, 0.35, (truth.size, 2))
    corr = rng.uniform(-0.5, 0.5, truth.size)
    cov = np.einsum("ki,kj->kij", se, se) * np.where(np.eye(2)[None] > 0, 1.0,
                                                     corr[:, None, None])
    theta_hat = np.array([rng.multivariate_normal(t, c) for t, c in zip(theta, cov, strict=True)])
    est = TaskEstimates([f"s{k}" for k in range(truth.size)], theta_hat, cov,
                        params=["read", "math"])
    return est, truth, theta


def separation(sim, truth):
    """Mean co-clustering within true clusters (off-diagonal) and between them."""
    same = truth[:, None] == truth[None]
    off = ~np.eye(truth.size, dtype=bool)
    return sim[same & off].mean(), sim[~same].mean()


@pytest.fixture(scope="module")
def recovery():
    est, truth, theta = clustered_estimates()
    # the shipped spec, by name, at its default settings (4 × (1000 + 1000)), as the issue
    # asks; at 500 + 500 the tail ESS sits near 400 and 1 or 2 seeds in 6 miss the threshold
    fit = bf.fuse(est, model="cluster", seed=1, warn=False)
    return est, truth, theta, fit


def test_recovers_three_clusters(recovery):
    est, truth, theta, fit = recovery
    assert fit.spec["source"].endswith("cluster.toml")
    assert fit.spec["options"] == {"max_clusters": 10, "weights": "dirichlet",
                                   "shared_scale": False, "weight_order": "auto"}
    assert fit.priors["concentration"] == "gamma(2, 2)"
    assert fit.priors["mu"].startswith("normal(")  # data-scaled default
    structure = fit.structure()
    clustering = structure["clustering"]
    assert list(clustering["task"]) == est.tasks
    ari = adjusted_rand_score(truth, clustering["cluster"])
    assert ari >= 0.9, ari
    assert sorted(clustering["cluster"].unique()) == [1, 2, 3]
    assert (clustering["p_with_mates"] > 0.7).all()
    sim = fit.similarity()
    assert list(sim.index) == est.tasks and sim.attrs["kind"].startswith("co-clustering")
    values = sim.to_numpy()
    np.testing.assert_allclose(np.diag(values), 1.0)
    np.testing.assert_allclose(values, values.T, atol=1e-12)
    within, between = separation(values, truth)
    assert within >= 0.8 and between <= 0.1, (within, between)
    pmf = structure["n_clusters"]
    np.testing.assert_allclose(pmf["probability"].sum(), 1.0)
    assert pmf.loc[pmf["probability"].idxmax(), "n_clusters"] == 3
    fused = fit.summary()["mean"].to_numpy()
    rmse_fused = np.sqrt(np.mean((fused - theta) ** 2))
    rmse_raw = np.sqrt(np.mean((est.estimates[:, 0] - theta) ** 2))
    assert rmse_fused < 0.8 * rmse_raw, (rmse_fused, rmse_raw)
    assert_sampled_well(fit)
    assert fit.family.extra_advice(fit) == []
    assert list(fit.hyper_summary().index) == ["concentration", "n_clusters"]


def test_label_switching_leaves_coclustering_unchanged(recovery):
    *_, fit = recovery
    post = fit.idata.posterior
    membership = post["membership"].transpose("chain", "draw", "task", "cluster").values
    flat = membership.reshape((-1,) + membership.shape[2:]).astype(float)
    rng = np.random.default_rng(0)
    perms = np.argsort(rng.random((flat.shape[0], flat.shape[2])), axis=1)  # per draw
    permuted = np.take_along_axis(flat, perms[:, None, :], axis=2)
    np.testing.assert_allclose(coclustering(permuted), coclustering(flat), atol=1e-10)
    np.testing.assert_allclose(coclustering(flat), fit.similarity().to_numpy(), atol=1e-10)
    # the sampler does switch labels (the component holding task t0 changes) ...
    labels = post["label"].values
    assert len(np.unique(labels[..., 0])) > 1
    # ... yet chains, each with its own labelling, agree on the co-clustering
    per_chain = np.stack([coclustering(m.astype(float)) for m in membership])
    assert np.abs(per_chain - per_chain.mean(axis=0)).max() < 0.15


def test_outputs_predict_and_round_trip(recovery, tmp_path):
    est, truth, theta, fit = recovery
    post = fit.idata.posterior
    assert post["mu"].dims == ("chain", "draw", "cluster", "param")
    assert post["membership"].dims == ("chain", "draw", "task", "cluster")
    assert post["label"].dims == ("chain", "draw", "task")
    np.testing.assert_allclose(post["weights"].sum("cluster"), 1.0, atol=1e-9)
    np.testing.assert_allclose(post["membership"].sum("cluster"), 1.0, atol=1e-5)
    counts = [len(np.unique(row)) for row in post["label"].values.reshape(-1, len(truth))]
    np.testing.assert_array_equal(counts, post["n_clusters"].values.reshape(-1))
    for name in ("mu", "tau", "weights", "concentration", "theta"):
        assert name in fit.idata.prior  # prior draws come from the plain model
    table = fit.summary()
    assert len(table) == len(truth)
    assert ((table["shrinkage"] >= 0) & (table["shrinkage"] <= 1)).all()
    new = fit.predict_new_task(seed=3)
    assert new.shape == (post.sizes["chain"] * post.sizes["draw"], 1)
    # a new task falls in one of the clusters: its draws are trimodal around the centres
    near = np.min(np.abs(new["theta"].to_numpy()[:, None] - np.array([-2.0, 0.0, 2.5])), axis=1)
    assert np.mean(near < 1.0) > 0.9
    loaded = bf.load_fit(fit.save(tmp_path / "cluster.nc"))
    np.testing.assert_allclose(loaded.similarity().to_numpy(), fit.similarity().to_numpy())
    assert (loaded.structure()["clustering"]["cluster"]
            == fit.structure()["clustering"]["cluster"]).all()


def test_dp_weights_recover_clusters(recovery):
    est, truth, *_ = recovery
    fit = bf.fuse(est, model="cluster", weights="dp", seed=2, **SHORT)
    assert "stick" not in fit.idata.posterior  # only the weights are kept
    np.testing.assert_allclose(fit.idata.posterior["weights"].sum("cluster"), 1.0, atol=1e-9)
    ari = adjusted_rand_score(truth, fit.structure()["clustering"]["cluster"])
    within, between = separation(fit.similarity().to_numpy(), truth)
    # The truncated DP moves between merged and split states more slowly than the sparse
    # Dirichlet default (at 4 x 300 draws some chains visit a state that merges two groups:
    # measured between-cluster co-clustering 0.08-0.17 per chain), so the bound on
    # `between` is looser here than for the default weights.
    assert ari >= 0.9 and within >= 0.8 and between <= 0.2, (ari, within, between)
    # For the same reason the number of clusters mixes slowly at these short settings: with
    # XLA held to AVX2, seeds 2-6 gave R-hat 1.009-1.042, bulk ESS 81-245, tail ESS 97-133,
    # 0-1 divergences and 0-11 of 1,200 transitions at the maximum tree depth (2026-12-03),
    # where this seed passes the verdict on an AVX-512 CPU. The bounds catch a sampler that
    # is stuck (chains in different partitions give R-hat well above 1.1) without asking the
    # DP form for the default's mixing, which it does not have (see README).
    assert_sampled_well(fit, max_rhat=1.1, min_ess=40, max_divergent_share=0.03)


def test_vector_case_recovers_two_clusters():
    """p = 2, K = 20 at the short settings (300 + 300).

    Known weakness, measured 2026-12-02 (exchangeable weights): a few divergent transitions
    in 4 of 10 seeds (seeds 0-9 on an AVX-512 CPU: 0, 11, 1, 0, 15, 0, 0, 0, 0, 1 of 1,200),
    all in chains whose warmup ended with a step size 2-3 times the others'. Which seeds
    diverge depends on the CPU's floating-point paths (this seed: 0 on AVX-512, 1 in CI), so
    the test bounds the rate (2%, above the worst of the ten) and checks that the
    diagnostics report every divergence, rather than asserting none for a chosen seed."""
    est, truth, theta = vector_cluster_estimates()
    fit = bf.fuse(est, model="cluster", seed=5, **SHORT)
    assert fit.idata.posterior["corr"].dims == ("chain", "draw", "param", "param_b")
    ari = adjusted_rand_score(truth, fit.structure()["clustering"]["cluster"])
    within, between = separation(fit.similarity().to_numpy(), truth)
    assert ari >= 0.9 and within >= 0.8 and between <= 0.1, (ari, within, between)
    assert "corr[read,math]" in fit.hyper_summary().index
    fused = fit.summary()["mean"].to_numpy().reshape(-1, 2)
    assert np.sqrt(np.mean((fused - theta) ** 2)) < np.sqrt(np.mean((est.estimates - theta) ** 2))
    diverging = fit.idata.sample_stats["diverging"]
    n_divergent = int(diverging.sum())
    assert n_divergent <= 0.02 * diverging.size, n_divergent
    reported = [a for a in fit.diagnostics().advice if "divergent" in a]
    assert reported == [a for a in reported if a.startswith(f"{n_divergent} divergent ")]
    assert len(reported) == (n_divergent > 0), reported


def _random_draw(family, rng, n_params):
    n_comp = family.n_components
    draw = {
        "weights": rng.dirichlet(np.full(n_comp, 0.7)),
        "mu": rng.normal(0, 2, (n_comp, n_params)),
        "tau": rng.uniform(0.05, 1.0, (n_comp, n_params)),
        "concentration": np.array(1.0),
    }
    if n_params > 1:
        corr = np.array([[1.0, -0.4], [-0.4, 1.0]])
        draw["corr"] = corr
        draw["corr_chol"] = np.linalg.cholesky(corr)
    return draw


@pytest.mark.parametrize("which,order", [("scalar", "exchangeable"), ("scalar", "size-biased"),
                                         ("vector", "auto")])
def test_collapsed_loglik_equals_brute_force(which, order):
    est = clustered_estimates()[0] if which == "scalar" else vector_cluster_estimates()[0]
    _, _, family = prepare(est, "cluster", weight_order=order)
    assert family.size_biased == (order == "size-biased")
    data = {k: np.asarray(v) for k, v in family.data().items()}
    p = est.n_params
    draw = _random_draw(family, np.random.default_rng(7), p)
    corr = draw.get("corr", np.eye(1))
    brute = np.zeros(est.n_tasks)
    for k in range(est.n_tasks):
        total = 0.0
        for c in range(family.n_components):
            prior_cov = np.outer(draw["tau"][c], draw["tau"][c]) * corr
            total += draw["weights"][c] * stats.multivariate_normal.pdf(
                est.estimates[k], draw["mu"][c], prior_cov + est.covariances[k])
        brute[k] = np.log(total)
    loglik = np.asarray(family.pointwise_loglik(data, draw))
    np.testing.assert_allclose(loglik, brute, rtol=1e-10)
    # the NumPyro model's observed site holds the same log-likelihood
    sites = {"concentration": 1.0, "mu": draw["mu"], "tau": draw["tau"]}
    if family.size_biased:
        sites["stick"] = weights_to_stick(draw["weights"])
    else:  # weight_gamma = exp(log g), weight_exp = 0
        sites.update(weight_gamma=draw["weights"], weight_exp=np.zeros(family.n_components))
    if p > 1:
        sites["corr_chol"] = draw["corr_chol"]
    model = handlers.substitute(handlers.seed(family.model, 0), data=sites)
    trace = handlers.trace(model).get_trace(family.priors, True, **data)
    site = trace["theta_hat"]
    model_loglik = site["fn"].log_prob(site["value"])
    np.testing.assert_allclose(np.asarray(model_loglik), brute, rtol=1e-8)
    # membership and pooling weight against the same brute force
    member = np.asarray(family.membership(data, draw))
    np.testing.assert_allclose(member.sum(axis=1), 1.0)
    weight = np.asarray(family.pooling_weight(data, draw))
    expected = np.zeros_like(weight)
    for k in range(est.n_tasks):
        for c in range(family.n_components):
            prior_cov = np.outer(draw["tau"][c], draw["tau"][c]) * corr
            V = est.covariances[k]
            expected[k] += member[k, c] * np.diag(V @ np.linalg.inv(prior_cov + V))
    np.testing.assert_allclose(weight, expected, rtol=1e-10)


def test_theta_draw_is_exact_mixture_posterior():
    """θₖ | φ, θ̂ₖ is the mixture Σ_c r_kc N(m_kc, s²_kc) of the Gaussian conditionals."""
    est = clustered_estimates(per=2)[0]
    _, _, family = prepare(est, "cluster")
    data = {k: np.asarray(v) for k, v in family.data().items()}
    draw = _random_draw(family, np.random.default_rng(11), 1)
    draws = jax.vmap(lambda key: family.draw_theta(key, data, draw))(
        jax.random.split(jax.random.PRNGKey(0), 40000))
    draws = np.asarray(draws)[..., 0]  # (S, K)
    member = np.asarray(family.membership(data, draw))
    tau2, V = draw["tau"][:, 0] ** 2, est.covariances[:, 0, 0]
    post_var = 1 / (1 / tau2[None] + 1 / V[:, None])  # (K, C)
    post_mean = post_var * (draw["mu"][None, :, 0] / tau2[None]
                            + est.estimates[:, :1] / V[:, None])
    mean = (member * post_mean).sum(axis=1)
    var = (member * (post_var + post_mean**2)).sum(axis=1) - mean**2
    se = np.sqrt(var / draws.shape[0])
    assert np.all(np.abs(draws.mean(axis=0) - mean) < 5 * se)
    np.testing.assert_allclose(draws.var(axis=0), var, rtol=0.05)
    new = jax.vmap(lambda key: family.draw_new_task(key, data, draw, None))(
        jax.random.split(jax.random.PRNGKey(1), 40000))
    expected = (draw["weights"] * draw["mu"][:, 0]).sum()
    assert abs(float(jnp.mean(new)) - expected) < 0.05


def test_extra_advice_flags_disagreeing_chains_and_binding_truncation(recovery):
    est, truth, theta, fit = recovery
    idata = copy.deepcopy(fit.idata)
    member = idata.posterior["membership"]
    member.values[1] = 0.0
    member.values[1, :, :, 0] = 1.0  # chain 1 puts every task in one cluster
    fake = SimpleNamespace(idata=idata, tasks=fit.tasks)
    advice = fit.family.extra_advice(fake)
    assert len(advice) == 1 and advice[0].startswith("chains found different clusterings")
    pair = re.search(r"between chains (\d+) and (\d+)", advice[0]).groups()
    assert "1" in pair
    idata.posterior["membership"].values[:] = fit.idata.posterior["membership"].values
    idata.posterior["n_clusters"].values[:] = fit.family.n_components
    advice = fit.family.extra_advice(fake)
    assert len(advice) == 1 and "raise max_clusters" in advice[0]


def test_point_clustering_minimises_binder_loss():
    truth = np.array([0, 0, 0, 1, 1, 2])
    sim = (truth[:, None] == truth[None]).astype(float)
    sim[2, 3] = sim[3, 2] = 0.4  # task 2 sometimes joins cluster 1
    labels, loss = point_clustering(sim, np.array([[5, 5, 5, 1, 1, 0], [1, 1, 0, 0, 0, 2]]))
    np.testing.assert_array_equal(labels, [1, 1, 1, 2, 2, 3])  # numbered by size
    np.testing.assert_allclose(loss, 0.4)
    # brute force: Σ_{i<j} |1(cᵢ = cⱼ) − Pᵢⱼ| for a few partitions
    partitions = canonical_labels(np.array([[0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 1, 2],
                                            [0, 0, 0, 0, 0, 0], [3, 3, 3, 7, 7, 2]]))
    iu = np.triu_indices(6, k=1)
    brute = [np.abs((p[:, None] == p[None])[iu] - sim[iu]).sum() for p in partitions]
    np.testing.assert_allclose(binder_loss(partitions, sim), brute)
    np.testing.assert_array_equal(partitions[0], partitions[3])


def test_invalid_options():
    est = clustered_estimates(per=2)[0]
    with pytest.raises(SpecError, match="max_clusters"):
        prepare(est, "cluster", max_clusters=1)
    with pytest.raises(SpecError, match="'weights' must be one of dirichlet, dp"):
        prepare(est, "cluster", weights="pitman-yor")
    with pytest.raises(SpecError, match="shared_scale"):
        prepare(est, "cluster", shared_scale="yes")
    with pytest.raises(SpecError, match="'weight_order' must be one of"):
        prepare(est, "cluster", weight_order="sorted")
    with pytest.raises(SpecError, match="ordered"):
        prepare(est, "cluster", weights="dp", weight_order="exchangeable")


@pytest.mark.parametrize("a,b", [(1.1, 0.9), (1.0, 0.05), (1.01, 0.01), (1.3, 2.0)])
def test_cloglog_stick_density_and_draws(a, b):
    """η = log(−log(1 − v)), v ~ Beta(a, b): the density integrates to 1, equals the Beta
    density with its Jacobian, and the draws follow it (KS on v where v is representable,
    on u = −log(1 − v) against an independent numpy draw otherwise)."""
    stick = CloglogBeta(jnp.array(a), jnp.array(b))
    total = integrate.quad(lambda e: float(jnp.exp(stick.log_prob(e))), -60, 10,
                           limit=500, points=[-5.0, 0.0, 2.0])[0]
    assert abs(total - 1.0) < 1e-8
    eta = np.linspace(-3.0, 1.5, 7)
    v = -np.expm1(-np.exp(eta))
    jacobian = np.exp(eta) * np.exp(-np.exp(eta))
    np.testing.assert_allclose(np.asarray(stick.log_prob(jnp.asarray(eta))),
                               stats.beta(a, b).logpdf(v) + np.log(jacobian), rtol=1e-9)
    draws = np.exp(np.asarray(stick.sample(jax.random.PRNGKey(0), (20_000,))))
    rng = np.random.default_rng(1)
    log_ga = np.log(rng.gamma(a, size=100_000))
    log_gb = np.log(rng.gamma(b + 1, size=100_000)) + np.log(rng.uniform(size=100_000)) / b
    reference = np.logaddexp(log_ga, log_gb) - log_gb  # −log(1 − v), 1 − v = G_b/(G_a + G_b)
    assert stats.ks_2samp(draws, reference).pvalue > 0.001


def test_size_biased_sticks_are_the_dirichlet_weights():
    """Sorted, the stick weights have the law of sorted Dirichlet(α/C) weights (KS per order
    statistic, Bonferroni over C + 1 tests, and on Σπ², a symmetric function)."""
    est = clustered_estimates(per=20)[0]
    _, _, family = prepare(est, "cluster", weight_order="size-biased")
    n_comp, n_draws, alpha = family.n_components, 20_000, 0.7
    first, second = family.stick_shapes(jnp.asarray(alpha))
    sticks = CloglogBeta(first, second).sample(jax.random.PRNGKey(3), (n_draws,))
    weights = np.exp(np.asarray(stick_log_weights(sticks)))
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
    reference = np.random.default_rng(4).dirichlet(np.full(n_comp, alpha / n_comp), n_draws)
    ordered, ordered_ref = -np.sort(-weights, axis=1), -np.sort(-reference, axis=1)
    pvalues = [stats.ks_2samp(ordered[:, c], ordered_ref[:, c]).pvalue for c in range(4)]
    pvalues.append(stats.ks_2samp((weights**2).sum(1), (reference**2).sum(1)).pvalue)
    assert min(pvalues) > 0.01 / len(pvalues), pvalues
    # the first stick is the largest weight more often than any other (size-biased order)
    assert np.mean(np.argmax(weights, axis=1) == 0) > 0.5


def test_log_weights_to_stick_inverts_the_sticks_in_log_space():
    """η from log π round-trips to 1e-12, down to weights of e^-800 (no 0 or inf)."""
    stick = jnp.asarray([2.5, -6.0, 0.3, -1.2, 1.1, -40.0, 3.0, -700.0, 6.5])
    log_weights = stick_log_weights(stick)
    assert float(log_weights.min()) < -700.0
    np.testing.assert_allclose(log_weights_to_stick(log_weights), stick, atol=1e-12)
    batch = jax.random.normal(jax.random.PRNGKey(0), (50, 9)) * 3.0
    np.testing.assert_allclose(log_weights_to_stick(stick_log_weights(batch)), batch,
                               atol=1e-10)


@pytest.mark.parametrize("shared_scale", [False, True])
def test_warmup_relabel_sorts_the_components_and_keeps_the_fit(shared_scale):
    """The relabelled state has the same weights, sorted decreasing, each component with
    its μ and τ (the collapsed likelihood is unchanged), and ``site_order`` says where
    each element went, as the mass-matrix relabelling reads it."""
    est = clustered_estimates(per=20)[0]
    _, _, family = prepare(est, "cluster", shared_scale=shared_scale)
    assert family.size_biased and family.relabels_in_warmup
    n_comp = family.n_components
    z = _random_stick_state(family, np.random.default_rng(2))
    moved, site_order = family.warmup_relabel(z)
    weights, new_weights = (np.exp(np.asarray(stick_log_weights(x["stick"]))) for x in (z, moved))
    order = np.argsort(-weights, kind="stable")
    assert not np.array_equal(order, np.arange(n_comp))  # the test state needs sorting
    np.testing.assert_allclose(new_weights, weights[order], rtol=1e-10)
    assert np.all(np.diff(new_weights) <= 0)
    np.testing.assert_array_equal(moved["mu"], np.asarray(z["mu"])[order])
    np.testing.assert_array_equal(moved["tau"], np.asarray(z["tau"])[order] if not shared_scale
                                  else z["tau"])
    assert set(site_order) == ({"mu"} if shared_scale else {"mu", "tau"})
    for name, index in site_order.items():
        np.testing.assert_array_equal(np.asarray(z[name]).ravel()[np.asarray(index).ravel()],
                                      np.asarray(moved[name]).ravel())
    data = {k: np.asarray(v) for k, v in family.data().items()}

    def loglik(state):
        draw = {"weights": np.exp(np.asarray(stick_log_weights(state["stick"]))),
                "mu": state["mu"], "tau": np.exp(np.asarray(state["tau"]))}
        return np.asarray(family.pointwise_loglik(data, draw))

    np.testing.assert_allclose(loglik(moved), loglik(z), rtol=1e-12)


def test_relabelling_carries_the_mass_matrix_with_the_components():
    """NumPyro's adapted (diagonal or dense) mass matrix and warmup statistics move the way
    the state moves: each coordinate's scale stays with its component; sticks stay put."""
    n_comp = 4
    z = {"concentration": jnp.asarray(0.1), "stick": jnp.linspace(-1, 1, n_comp - 1),
         "mu": jnp.arange(n_comp, dtype=float)[:, None] + 10.0, "tau": jnp.zeros(1)}
    names = tuple(sorted(z))
    flat = jnp.concatenate([jnp.ravel(z[n]) for n in names])
    dense = flat[:, None] * 100.0 + flat[None, :]
    order = np.asarray([2, 0, 3, 1])
    # block coordinates: concentration, mu (4), stick (3), tau: mu's entries move
    index = np.concatenate([[0], 1 + order, [5, 6, 7, 8]])
    expected = jnp.concatenate([jnp.ravel(dict(z, mu=z["mu"][order])[n]) for n in names])
    np.testing.assert_array_equal(flat[index], expected)
    for matrix in (flat, dense):
        adapt = SimpleNamespace(inverse_mass_matrix={names: matrix},
                                mass_matrix_sqrt={names: matrix},
                                mass_matrix_sqrt_inv={names: matrix},
                                mm_state={names: (flat, matrix, 3)})
        adapt._replace = lambda **kw: SimpleNamespace(**{**vars(adapt), **kw})  # noqa: B023
        moved = relabel_adaptation(adapt, {"mu": jnp.asarray(order)[:, None]}, z)
        both = matrix[index] if matrix.ndim == 1 else matrix[index][:, index]
        np.testing.assert_array_equal(moved.inverse_mass_matrix[names], both)
        np.testing.assert_array_equal(moved.mm_state[names][0], expected)
        np.testing.assert_array_equal(moved.mm_state[names][1], both)
        np.testing.assert_array_equal(moved.mass_matrix_sqrt[names], matrix[index])
        np.testing.assert_array_equal(moved.mass_matrix_sqrt_inv[names],
                                      matrix[index] if matrix.ndim == 1 else matrix[:, index])


def _random_stick_state(family, rng, spread=2.0):
    """An unconstrained state of a sticks model, far from any fit (all sites random)."""
    n_comp = family.n_components
    tau_shape = (1,) if family.options["shared_scale"] else (n_comp, 1)
    return {"concentration": jnp.asarray(rng.normal(-0.5, 0.5)),
            "stick": jnp.asarray(rng.normal(0, spread, n_comp - 1)),
            "mu": jnp.asarray(rng.normal(0, 2, (n_comp, 1))),
            "tau": jnp.asarray(rng.normal(-1, 1, tau_shape))}


def _potential(family):
    from numpyro.infer.util import potential_energy

    data = {k: np.asarray(v) for k, v in family.data().items()}

    def model(**kwargs):
        family.model(family.priors, True, **kwargs)

    return lambda z: float(potential_energy(model, (), data, z))


def test_order_law_sums_to_one_over_orderings():
    """The Plackett–Luce order law is a probability over the C! orderings for any weights
    and any β, which is what keeps the mixture's prior unchanged by the order factor; at
    β = 1 it is the size-biased probability Π_c v_c."""
    import itertools

    rng = np.random.default_rng(0)
    for beta in (1.0, 5.0):
        for log_weights in (np.log(rng.dirichlet(np.ones(5))),
                            np.log(rng.dirichlet(np.full(5, 0.1))) - 1e-3):
            total = sum(float(jnp.exp(order_log_prob(jnp.asarray(log_weights[list(perm)]), beta)))
                        for perm in itertools.permutations(range(5)))
            assert abs(total - 1.0) < 1e-10
    log_weights = np.log(rng.dirichlet(np.ones(6)))
    sticks = np.exp(log_weights) / np.cumsum(np.exp(log_weights)[::-1])[::-1]
    np.testing.assert_allclose(float(order_log_prob(jnp.asarray(log_weights))),
                               np.log(sticks[:-1]).sum(), rtol=1e-12)


@pytest.mark.parametrize("shared_scale", [False, True])
def test_relabel_move_is_an_exact_gibbs_draw_of_the_order(shared_scale):
    """With Dirichlet sticks the move's Metropolis–Hastings log ratio, U(z) − U(z') +
    log_correction, is zero at any state (every proposal accepted: the order is drawn from
    its exact conditional); the moved state holds the same components, each with its own μ
    and τ; and the first component is drawn with probability ∝ π_c^β."""
    est = clustered_estimates(per=20)[0]
    _, _, family = prepare(est, "cluster", shared_scale=shared_scale)
    assert family.size_biased and family.relabels_in_sampling
    beta = family.order_sharpness
    assert beta > 1
    potential = _potential(family)
    rng = np.random.default_rng(5)
    for i in range(6):
        z = _random_stick_state(family, rng)
        moved, log_correction = family.relabel_move(jax.random.PRNGKey(i), z)
        log_ratio = potential(z) - potential(moved) + float(log_correction)
        assert abs(log_ratio) < 1e-8, log_ratio
        weights, new_weights = (np.exp(np.asarray(stick_log_weights(x["stick"])))
                                for x in (z, moved))
        order = [int(np.argmin(np.abs(weights - w))) for w in new_weights]
        assert sorted(order) == list(range(family.n_components))
        np.testing.assert_allclose(new_weights, weights[order], rtol=1e-9)
        np.testing.assert_array_equal(moved["mu"], np.asarray(z["mu"])[order])
        if not shared_scale:
            np.testing.assert_array_equal(moved["tau"], np.asarray(z["tau"])[order])
    # the first position's law: chi-square against π^β / Σ π^β
    z = {**_random_stick_state(family, rng),
         "stick": weights_to_stick(np.array([0.3, 0.25, 0.2, 0.1, 0.05, 0.04, 0.03, 0.02,
                                             0.006, 0.004]))}
    weights = np.exp(np.asarray(stick_log_weights(z["stick"])))
    keys = jax.random.split(jax.random.PRNGKey(11), 4000)
    first_mu = jax.vmap(lambda k: family.relabel_move(k, z)[0]["mu"][0, 0])(keys)
    first = np.argmin(np.abs(np.asarray(first_mu)[:, None] - np.asarray(z["mu"])[None, :, 0]),
                      axis=1)
    expected = weights**beta / np.sum(weights**beta) * keys.shape[0]
    observed = np.bincount(first, minlength=weights.size)
    big = expected > 5
    chi2 = np.sum((observed[big] - expected[big]) ** 2 / expected[big])
    assert stats.chi2(big.sum() - 1).sf(chi2) > 0.001, (observed, expected)
    assert observed[~big].sum() <= 10


def test_relabel_move_ratio_for_dp_sticks():
    """The truncated DP's order is part of its prior, so its move is a Metropolis–Hastings
    step: the log ratio equals an independent computation in the weights' own coordinates,
    log p(π') − log p(π) + log g(π) − log g(π'), with p the stick-breaking density on the
    simplex (Beta(1, α) sticks over the Jacobian Π_c R_c) and g the size-biased order
    probability."""
    est = clustered_estimates(per=20)[0]
    _, _, family = prepare(est, "cluster", weights="dp")
    assert family.order_sharpness == 1.0 and family.relabels_in_sampling
    potential = _potential(family)

    def log_density(weights, alpha):
        left = np.concatenate([[1.0], 1.0 - np.cumsum(weights)[:-1]])  # R_c
        sticks = (weights / left)[:-1]
        return (stats.beta(1.0, alpha).logpdf(sticks).sum() - np.log(left[:-1]).sum()
                - np.log(sticks).sum())  # − log g(π): g = Π_c v_c

    rng = np.random.default_rng(7)
    ratios = []
    for i in range(6):
        z = _random_stick_state(family, rng, spread=0.7)
        moved, log_correction = family.relabel_move(jax.random.PRNGKey(i), z)
        alpha = float(np.exp(z["concentration"]))
        weights, new_weights = (np.exp(np.asarray(stick_log_weights(x["stick"])))
                                for x in (z, moved))
        expected = log_density(new_weights, alpha) - log_density(weights, alpha)
        got = potential(z) - potential(moved) + float(log_correction)
        np.testing.assert_allclose(got, expected, atol=1e-8)
        ratios.append(got)
    assert np.ptp(ratios) > 0.1  # not a Gibbs draw: the ratios differ


@pytest.mark.slow  # about 30 s; the move's exactness is checked directly above
def test_sampling_with_moves_keeps_the_prior_of_the_weights():
    """With a flat likelihood (stage-1 variances of 10⁸) the posterior is the prior: the
    largest weight's mean under sticks with the order factor and the moves equals a direct
    Monte Carlo of α ~ gamma(2, 2), π ~ Dirichlet(α/C), within 4 Monte Carlo SEs; the
    chains do change their order in sampling. An end-to-end check of the composed sampler,
    not a sharp one: dropping the move's log_correction moved the mean by 1.5 SEs only
    (0.728 against 0.740, reference 0.735), which the exact-ratio test above catches."""
    n_comp = 5
    est = TaskEstimates([f"t{k}" for k in range(8)], np.linspace(-1, 1, 8), np.full(8, 1e8))
    # priors given: the data-scaled defaults would make components as wide as the noise,
    # and then the likelihood tells one cluster from several
    fit = bf.fuse(est, model="cluster", weight_order="size-biased", max_clusters=n_comp,
                  priors={"mu": "normal(0, 1)", "tau": "halfnormal(1)"},
                  seed=3, chains=4, warmup=500, draws=1000, warn=False)
    weights = fit.idata.posterior["weights"].values  # (chain, draw, C)
    largest = weights.max(axis=-1)
    mcse = largest.std() / np.sqrt(float(az.ess(largest)))
    rng = np.random.default_rng(0)
    alpha = rng.gamma(2.0, 1 / 2.0, 400_000)
    shape = np.repeat(alpha[:, None] / n_comp, n_comp, axis=1)
    # log Gamma(a) = log Gamma(a + 1) + log U / a: no underflow at small shapes
    log_gamma = np.log(rng.gamma(shape + 1.0)) + np.log(rng.uniform(size=shape.shape)) / shape
    reference = np.exp(log_gamma.max(axis=1) - np.logaddexp.reduce(log_gamma, axis=1))
    assert abs(largest.mean() - reference.mean()) < 4 * mcse, (largest.mean(),
                                                              reference.mean(), mcse)
    first_is_largest = np.argmax(weights, axis=-1) == 0
    assert 0.05 < first_is_largest.mean() < 0.999


def test_warmup_relabels_each_chain_once_before_the_last_slow_window():
    """The sampler applies the family's relabelling at the end of the window before the
    last slow one (warmup 40: windows [0, 5], [6, 35], [36, 39], so at step 5): started
    with the large weight behind empty ones, every chain has its weights in decreasing
    order exactly there, and not just before."""
    from numpyro.infer import MCMC, init_to_value

    from bayesfuse.inference.nuts import RelabellingNUTS

    est = clustered_estimates(per=4)[0]  # K = 12
    _, _, family = prepare(est, "cluster", weight_order="size-biased", max_clusters=4)
    data = {k: np.asarray(v) for k, v in family.data().items()}
    start = {"concentration": 1.0, "stick": weights_to_stick(np.array([0.05, 0.05, 0.85, 0.05])),
             "mu": np.array([[-5.0], [5.0], [0.0], [8.0]]), "tau": np.full((4, 1), 0.5)}

    def model(**kwargs):
        family.model(family.priors, True, **kwargs)

    kernel = RelabellingNUTS(model, family, init_strategy=init_to_value(values=start))
    # vectorised chains (the sampler's batched branch; parallel chains run the other)
    mcmc = MCMC(kernel, num_warmup=40, num_samples=1, num_chains=2,
                chain_method="vectorized", progress_bar=False)
    mcmc.warmup(jax.random.PRNGKey(0), collect_warmup=True, **data)
    assert kernel._relabel_step == 5
    sticks = np.asarray(mcmc.get_samples(group_by_chain=True)["stick"])  # (2, 40, 3)
    weights = np.exp(np.asarray(stick_log_weights(jnp.asarray(sticks))))
    decreasing = np.all(np.diff(weights, axis=-1) <= 1e-12, axis=-1)  # (chains, steps)
    assert decreasing[:, 5].all() and not decreasing[:, 4].any()


def concentration_given_one_cluster(n_tasks, n_comp=10, shape=2.0, rate=2.0):
    """E[α | all tasks in one cluster] under Dirichlet(α/C) weights and α ~ gamma(2, 2).

    Given the partition α is independent of the data, and P(one block of n | α) =
    C Γ(α) Γ(α/C + n) / (Γ(α/C) Γ(α + n)), so the posterior is one-dimensional quadrature.
    """
    from scipy.special import gammaln

    def log_density(alpha):
        return (stats.gamma(shape, scale=1 / rate).logpdf(alpha) + gammaln(alpha)
                - gammaln(alpha + n_tasks) + gammaln(alpha / n_comp + n_tasks)
                - gammaln(alpha / n_comp))

    peak = max(log_density(a) for a in np.linspace(0.01, 5, 500))
    mass = integrate.quad(lambda a: np.exp(log_density(a) - peak), 0, 40, limit=200)[0]
    first = integrate.quad(lambda a: a * np.exp(log_density(a) - peak), 0, 40, limit=200)[0]
    return first / mass


@pytest.mark.slow
def test_star_cluster_concentration_matches_quadrature():
    """The STAR demo's vector fit (grades K-3, p = 8, 63 schools, sticks): one cluster, and
    α's posterior mean given one cluster equals the quadrature within 4 Monte Carlo SEs;
    diagnostics pass. Before the warmup relabelling (2026-12-01) the chains kept the
    cluster behind empty components (α 0.72, 0.73, 0.73, 0.53 by chain, R-hat 1.036);
    with it, measured 2026-12-02: α 0.340 against 0.355, R-hat 1.003, 0 divergences."""
    from bayesfuse.data.datasets import STAR_COVARIATES, star_vector_frame
    from bayesfuse.stage1.dml import estimate_tasks

    frame = star_vector_frame(["k", "1", "2", "3"])
    est = estimate_tasks(frame, task="school", outcome=list(frame.attrs["outcomes"]),
                         treatment="treatment", covariates=STAR_COVARIATES, estimand="ate",
                         learner={"outcome": "gbm", "propensity": "linear"}, folds=5,
                         seed=0, min_n=10)
    fit = bf.fuse(est, model="cluster", draws=1000, warmup=1000, seed=0, warn=False)
    assert fit.family.size_biased and est.n_params == 8
    post = fit.idata.posterior
    one = (post["n_clusters"] == 1).astype(float)
    assert float(one.mean()) > 0.99
    alpha = post["concentration"]
    estimate = float((alpha * one).sum() / one.sum())
    residual = (alpha - estimate) * one / float(one.mean())  # ratio estimator's residual
    mcse = float(residual.std()) / np.sqrt(float(az.ess(residual.to_dataset(name="x"))["x"]))
    exact = concentration_given_one_cluster(est.n_tasks)
    assert abs(estimate - exact) < 4 * mcse, (estimate, exact, mcse)
    assert_sampled_well(fit)


@pytest.fixture(scope="module")
def many_task_fits():
    """K = 60, three groups of 20, fitted at the default settings with the size-biased
    sticks (``weight_order="auto"`` from 50 tasks on) and with the exchangeable weights, two
    parameterisations of the same prior."""
    est, truth, theta = clustered_estimates(per=20, seed=5)
    fits = {order: bf.fuse(est, model="cluster", seed=8, warn=False, weight_order=order)
            for order in ("auto", "exchangeable")}
    return truth, fits


@pytest.mark.slow  # two K = 60 fits at the defaults (about 100 s)
def test_many_tasks_use_sticks_and_recover_clusters(many_task_fits):
    """Both forms recover the three groups.

    Known weakness: at K = 60 neither form passes its diagnostics reliably. Measured
    2026-12-02, before the order moves: the sticks' chains disagreed on the partitions where
    a fourth component takes tasks from a group (per-chain P(4 or more clusters) 0.25-0.51
    over seeds 6-9, R-hat of the number of clusters 1.01-1.10); the exchangeable weights
    agree across chains (0.32-0.38) but hit the tree depth (26-168 transitions). Measured
    2026-12-03 with the moves: the sticks' chains agree (0.30-0.43), and the split
    partitions they now visit in full give 0-2 divergences per fit over seeds 6-9. Which
    seeds pass depends on the CPU's floating-point paths, so this test does not assert a
    hand-picked seed's diagnostics."""
    truth, fits = many_task_fits
    assert fits["auto"].family.size_biased and not fits["exchangeable"].family.size_biased
    for order, fit in fits.items():
        ari = adjusted_rand_score(truth, fit.structure()["clustering"]["cluster"])
        within, between = separation(fit.similarity().to_numpy(), truth)
        assert ari >= 0.9 and within >= 0.8 and between <= 0.1, (order, ari, within, between)


@pytest.mark.slow
def test_sticks_and_exchangeable_weights_give_the_same_posterior(many_task_fits):
    """The number of clusters and the co-clustering matrix agree between the two forms,
    within Monte Carlo error from the ESS (chains that disagree widen it, as they should).

    Before the order moves in sampling (2026-12-02) the sticks gave P(4+ clusters) = 0.281
    against 0.349 at this seed, outside 4 Monte Carlo SEs: each chain kept one ordering of
    the components. With them (2026-12-03), sticks at seeds 6-9: 0.33-0.37."""
    _, fits = many_task_fits
    many, errors = {}, {}
    for order, fit in fits.items():
        indicator = (fit.idata.posterior["n_clusters"].values >= 4).astype(float)
        many[order] = indicator.mean()
        errors[order] = np.sqrt(max(indicator.var(), 1e-4) / float(az.ess(indicator)))
    tolerance = 4 * np.hypot(errors["auto"], errors["exchangeable"])
    assert abs(many["auto"] - many["exchangeable"]) < tolerance, (many, errors)
    gap = np.abs(fits["auto"].similarity().to_numpy()
                 - fits["exchangeable"].similarity().to_numpy())
    assert gap.mean() < 0.02 and gap.max() < 0.25, (gap.mean(), gap.max())
