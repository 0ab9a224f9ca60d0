"""The graph families ``gmrf`` (learned graph) and ``car`` (known graph).

Exact pieces (collapsed likelihood, leave-one-out conditionals, pooling weights, θ draws)
are checked against dense brute force; recovery of a sparse graph and a CAR fit are slower
end-to-end checks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_sampled_well
from numpyro import handlers
from scipy import stats
from scipy.linalg import block_diag

import bayesfuse as bf
from bayesfuse.errors import SpecError
from bayesfuse.inference.fuse import prepare


def random_estimates(seed=0, n_tasks=6, n_params=2):
    rng = np.random.default_rng(seed)
    cov = np.array([np.cov(rng.normal(size=(n_params, 5 * n_params)))
                    for _ in range(n_tasks)]).reshape(n_tasks, n_params, n_params)
    params = [f"q{j}" for j in range(n_params)]
    return bf.TaskEstimates([f"t{k}" for k in range(n_tasks)],
                            rng.normal(size=(n_tasks, n_params)), cov, params=params)


def sparse_graph_estimates(seed=0, groups=(2, 2, 2, 3, 3), n_params=8, weight=8.0, se=0.1):
    """θ = 0.5 + u, u ~ MN(0, L⁻¹, I), L = I + L_W: tasks joined in short paths (pairs and
    triples, shuffled). Partial correlations 0.65–0.9: with p = 8 replicates a partial
    correlation is estimated to about ±1/√8, so weaker graphs (a ring: at most 0.5) cannot
    be ranked with AUC ≥ 0.9 by any method (sample correlations reach 0.63–0.80 there)."""
    rng = np.random.default_rng(seed)
    n_tasks = sum(groups)
    adjacency = np.zeros((n_tasks, n_tasks))
    start = 0
    for size in groups:
        for k in range(start, start + size - 1):
            adjacency[k, k + 1] = adjacency[k + 1, k] = weight
        start += size
    order = rng.permutation(n_tasks)
    adjacency = adjacency[order][:, order]
    laplacian = np.diag(1 + adjacency.sum(1)) - adjacency
    u = np.linalg.solve(np.linalg.cholesky(laplacian).T,
                        rng.standard_normal((n_tasks, n_params)))
    theta = 0.5 + u
    ses = rng.uniform(0.8 * se, 1.2 * se, (n_tasks, n_params))
    est = bf.TaskEstimates([f"t{k}" for k in range(n_tasks)],
                           theta + ses * rng.standard_normal((n_tasks, n_params)),
                           np.einsum("ki,ij->kij", ses**2, np.eye(n_params)),
                           params=[f"q{j}" for j in range(n_params)])
    return est, adjacency, theta


def _draw(family, rng, n_params):
    draw = {"mu": jnp.asarray(rng.normal(size=n_params)),
            "tau": jnp.asarray(rng.uniform(0.5, 1.5, n_params))}
    if n_params > 1:
        corr = np.array([[1.0, 0.4], [0.4, 1.0]])
        draw["corr_chol"] = jnp.asarray(np.linalg.cholesky(corr))
    if family.name == "gmrf":
        draw["edge_weight"] = jnp.asarray(rng.exponential(size=family.n_edges))
    else:
        draw["rho"] = jnp.asarray(0.8)
    return draw


def _dense(family, est, draw):
    """Σ = G⁻¹ ⊗ T + blockdiag V, by brute force."""
    data = {k: jnp.asarray(v) for k, v in family.data().items()}
    resid, graph, prior_chol = family._parts(data, draw)
    prior_cov = np.asarray(prior_chol @ prior_chol.T)
    sigma = np.kron(np.linalg.inv(np.asarray(graph)), prior_cov) + block_diag(*est.covariances)
    return data, np.asarray(resid).reshape(-1), np.asarray(graph), sigma


CHAIN = [["t0", "t1"], ["t1", "t2"], ["t2", "t3"], ["t3", "t4"], ["t4", "t5"], ["t5", "t0"],
         ["t0", "t3"]]


@pytest.mark.parametrize("family_name", ["gmrf", "car"])
@pytest.mark.parametrize("n_params", [1, 2])
def test_collapsed_likelihood_and_conditionals_match_dense_algebra(family_name, n_params):
    est = random_estimates(n_params=n_params)
    options = {"adjacency": CHAIN} if family_name == "car" else {}
    _, _, family = prepare(est, family_name, **options)
    draw = _draw(family, np.random.default_rng(3), n_params)
    data, resid, graph, sigma = _dense(family, est, draw)
    n_tasks, p = est.n_tasks, n_params
    joint = stats.multivariate_normal(np.zeros(n_tasks * p), sigma).logpdf(resid)
    # the NumPyro model's observed site
    sites = {k: v for k, v in draw.items()}
    if family_name == "gmrf":
        # edge_weight = c g λ / √(c² + g² λ²): choose g = 1, a huge slab c, λ = w
        family.options["slab_scale"] = 1e12
        sites = {**sites, "edge_scale": 1.0, "edge_local": draw["edge_weight"]}
    model = handlers.substitute(handlers.seed(family.model, 0), data=sites)
    trace = handlers.trace(model).get_trace(family.priors, True, **data)
    site = trace["theta_hat"]
    np.testing.assert_allclose(float(site["fn"].log_prob(site["value"])), joint, rtol=1e-9)
    # leave-one-task-out conditionals p(θ̂ₖ | θ̂₋ₖ, φ)
    loo = []
    for k in range(n_tasks):
        own = np.arange(k * p, (k + 1) * p)
        rest = np.setdiff1d(np.arange(n_tasks * p), own)
        gain = sigma[np.ix_(own, rest)] @ np.linalg.inv(sigma[np.ix_(rest, rest)])
        cond_cov = sigma[np.ix_(own, own)] - gain @ sigma[np.ix_(rest, own)]
        loo.append(stats.multivariate_normal(gain @ resid[rest], cond_cov).logpdf(resid[own]))
    np.testing.assert_allclose(np.asarray(family.pointwise_loglik(data, draw)), loo,
                               rtol=1e-9)
    # posterior of θ: mean, covariance and the pooling weight
    prior_prec = np.linalg.inv(sigma - block_diag(*est.covariances))
    noise_prec = np.linalg.inv(block_diag(*est.covariances))
    post_cov = np.linalg.inv(prior_prec + noise_prec)
    post_mean = post_cov @ noise_prec @ resid + np.tile(np.asarray(draw["mu"]), n_tasks)
    own_weight = np.array([np.diag((post_cov @ noise_prec)[k * p:(k + 1) * p, k * p:(k + 1) * p])
                           for k in range(n_tasks)])
    np.testing.assert_allclose(np.asarray(family.pooling_weight(data, draw)), 1 - own_weight,
                               atol=1e-12)
    keys = jax.random.split(jax.random.PRNGKey(0), 20000)
    draws = np.asarray(jax.vmap(lambda key: family.draw_theta(key, data, draw))(keys))
    draws = draws.reshape(len(keys), -1)
    se = np.sqrt(np.diag(post_cov) / len(keys))
    assert np.all(np.abs(draws.mean(axis=0) - post_mean) < 5 * se)
    np.testing.assert_allclose(np.cov(draws.T), post_cov, atol=0.05 * np.abs(post_cov).max())


@pytest.mark.parametrize("family_name", ["gmrf", "car"])
@pytest.mark.parametrize("n_params", [1, 2])
def test_hand_written_gradients_match_automatic_differentiation(family_name, n_params):
    """The collapsed likelihood's gradient (closed-form VJPs of log|H| − bᵀH⁻¹b, log|G|
    and the gmrf scale s) equals autodiff of the dense N(1μᵀ, G⁻¹ ⊗ T + V) density."""
    est = random_estimates(seed=4, n_params=n_params)
    options = {"adjacency": CHAIN} if family_name == "car" else {}
    _, _, family = prepare(est, family_name, **options)
    draw = _draw(family, np.random.default_rng(5), n_params)
    data = {k: jnp.asarray(v) for k, v in family.data().items()}
    graph_key = "edge_weight" if family_name == "gmrf" else "rho"
    noise = jnp.asarray(block_diag(*est.covariances))

    def fast(params):
        point = {**draw, **params}
        graph, graph_log_det = family.graph_parts(est.n_tasks, data, point)
        dist = bf.families._graph.GraphGaussian(
            point["mu"], graph, family._prior_chol(point), data["cov_inv"], data["cov_chol"],
            graph_log_det)
        return dist.log_prob(data["theta_hat"])

    def dense(params):
        point = {**draw, **params}
        if family_name == "gmrf":  # G = s L, s = geometric mean of diag(L⁻¹), by inversion
            laplacian = family._laplacian(est.n_tasks, data, point)
            graph = laplacian * jnp.exp(jnp.mean(jnp.log(jnp.diag(jnp.linalg.inv(laplacian)))))
        else:
            graph = family.graph_matrix(est.n_tasks, data, point)
        prior_chol = family._prior_chol(point)
        sigma = jnp.kron(jnp.linalg.inv(graph), prior_chol @ prior_chol.T) + noise
        resid = (data["theta_hat"] - point["mu"]).reshape(-1)
        return jax.scipy.stats.multivariate_normal.logpdf(resid, jnp.zeros_like(resid), sigma)

    params = {"mu": draw["mu"], "tau": draw["tau"], graph_key: draw[graph_key]}
    np.testing.assert_allclose(float(fast(params)), float(dense(params)), rtol=1e-10)
    grad_fast, grad_dense = jax.grad(fast)(params), jax.grad(dense)(params)
    for name in params:
        np.testing.assert_allclose(np.asarray(grad_fast[name]), np.asarray(grad_dense[name]),
                                   rtol=1e-8, atol=1e-10, err_msg=name)


def test_gmrf_collapsed_density_and_gradient_by_halving_match_dense_algebra():
    """K = 12 tasks, p = 8 parameters (Kp = 96 > FACTOR_LEAF): the collapsed likelihood,
    whose factor and inverse are built by recursive halving, and its closed-form gradient
    equal autodiff of the dense N(1μᵀ, G⁻¹ ⊗ T + V) density at a random point (diagonal
    Vₖ, correlated T) to 1e-10."""
    from bayesfuse.families import _blocktri, _graph

    est = sparse_graph_estimates(seed=3)[0]
    _, _, family = prepare(est, "gmrf")
    n_tasks, n_params = est.n_tasks, est.n_params
    assert n_tasks * n_params > _blocktri.FACTOR_LEAF
    rng = np.random.default_rng(11)
    corr = np.corrcoef(rng.normal(size=(n_params, 3 * n_params)))
    draw = {"mu": jnp.asarray(rng.normal(size=n_params)),
            "tau": jnp.asarray(rng.uniform(0.5, 1.5, n_params)),
            "corr_chol": jnp.asarray(np.linalg.cholesky(corr)),
            "edge_weight": jnp.asarray(rng.exponential(size=family.n_edges))}
    data = {k: jnp.asarray(v) for k, v in family.data().items()}
    noise = jnp.asarray(block_diag(*est.covariances))

    def fast(params):
        point = {**draw, **params}
        graph, graph_log_det = family.graph_parts(n_tasks, data, point)
        dist = _graph.GraphGaussian(point["mu"], graph, family._prior_chol(point),
                                    data["cov_inv"], data["cov_chol"], graph_log_det)
        return dist.log_prob(data["theta_hat"])

    def dense(params):
        point = {**draw, **params}
        laplacian = family._laplacian(n_tasks, data, point)
        graph = laplacian * jnp.exp(jnp.mean(jnp.log(jnp.diag(jnp.linalg.inv(laplacian)))))
        prior_chol = family._prior_chol(point)
        sigma = jnp.kron(jnp.linalg.inv(graph), prior_chol @ prior_chol.T) + noise
        resid = (data["theta_hat"] - point["mu"]).reshape(-1)
        return jax.scipy.stats.multivariate_normal.logpdf(resid, jnp.zeros_like(resid), sigma)

    params = {name: draw[name] for name in ("mu", "tau", "corr_chol", "edge_weight")}
    np.testing.assert_allclose(float(fast(params)), float(dense(params)), rtol=1e-10)
    grad_fast, grad_dense = jax.grad(fast)(params), jax.grad(dense)(params)
    # a Cholesky factor's upper triangle is structurally zero: the fast path never reads it
    grad_fast["corr_chol"] = jnp.tril(grad_fast["corr_chol"])
    grad_dense["corr_chol"] = jnp.tril(grad_dense["corr_chol"])
    for name in params:
        np.testing.assert_allclose(np.asarray(grad_fast[name]), np.asarray(grad_dense[name]),
                                   rtol=1e-8, atol=1e-10, err_msg=name)
    # leave-one-out densities and pooling weights from the factor by halving
    _, resid, _, sigma = _dense(family, est, draw)
    loo, own_weight = [], []
    noise_prec = np.linalg.inv(block_diag(*est.covariances))
    post_cov = np.linalg.inv(np.linalg.inv(sigma - block_diag(*est.covariances)) + noise_prec)
    for k in range(n_tasks):
        own = np.arange(k * n_params, (k + 1) * n_params)
        rest = np.setdiff1d(np.arange(n_tasks * n_params), own)
        gain = sigma[np.ix_(own, rest)] @ np.linalg.inv(sigma[np.ix_(rest, rest)])
        cond_cov = sigma[np.ix_(own, own)] - gain @ sigma[np.ix_(rest, own)]
        loo.append(stats.multivariate_normal(gain @ resid[rest], cond_cov).logpdf(resid[own]))
        own_weight.append(np.diag((post_cov @ noise_prec)[np.ix_(own, own)]))
    np.testing.assert_allclose(np.asarray(family.pointwise_loglik(data, draw)), loo,
                               rtol=1e-9)
    np.testing.assert_allclose(np.asarray(family.pooling_weight(data, draw)),
                               1 - np.array(own_weight), atol=1e-10)
    # a θ draw: H⁻¹b + L⁻ᵀz with the same z as the LAPACK factor's draw
    key = jax.random.PRNGKey(4)
    resid_k, graph, prior_chol = family._parts(data, draw)
    precision = np.asarray(_graph._posterior_precision(graph, prior_chol, data["cov_inv"]))
    chol = np.linalg.cholesky(precision)
    z = np.asarray(jax.random.normal(key, (n_tasks * n_params,)))
    expected = np.linalg.solve(precision, noise_prec @ resid) + np.linalg.solve(chol.T, z)
    np.testing.assert_allclose(np.asarray(_graph.conditional_draw(
        key, resid_k, graph, prior_chol, data["cov_inv"])).reshape(-1), expected, atol=1e-10)
    # the factor and inverse by halving, against LAPACK, at sizes around the leaf
    for size in (_blocktri.FACTOR_LEAF + 1, 40, 96):
        matrix = rng.normal(size=(size, size))
        matrix = matrix @ matrix.T + 0.1 * np.eye(size)
        chol, inverse = _blocktri.factor_and_inverse_factor(jnp.asarray(matrix))
        np.testing.assert_allclose(np.asarray(chol), np.linalg.cholesky(matrix), atol=1e-11)
        np.testing.assert_allclose(np.asarray(inverse.T @ inverse), np.linalg.inv(matrix),
                                   rtol=1e-8, atol=1e-10)


def test_gmrf_without_edges_is_the_exchangeable_model():
    est = random_estimates(n_params=2)
    _, _, gmrf = prepare(est, "gmrf")
    _, _, exch = prepare(est, "exchangeable")
    draw = _draw(gmrf, np.random.default_rng(5), 2)
    draw["edge_weight"] = jnp.zeros(gmrf.n_edges)
    data = {k: jnp.asarray(v) for k, v in gmrf.data().items()}
    np.testing.assert_allclose(np.asarray(gmrf.pointwise_loglik(data, draw)),
                               np.asarray(exch.pointwise_loglik(data, draw)), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(gmrf.pooling_weight(data, draw)),
                               np.asarray(exch.pooling_weight(data, draw)), atol=1e-12)


def test_edge_lists_and_masks(tmp_path):
    est = random_estimates(n_tasks=6, n_params=1)
    path = tmp_path / "graph.csv"
    path.write_text("task_a,task_b,weight\nt0,t1,1\nt2,t1,2\nt3,t4,1\nt4,t5,1\nt5,t0,1\nt2,t3,1\n")
    _, _, car = prepare(est, "car", adjacency=str(path))
    np.testing.assert_array_equal(car.edge_index[:2], [[0, 1], [0, 5]])
    assert car.options["adjacency"][1] == ["t1", "t2", 2.0] or \
        ["t1", "t2", 2.0] in car.options["adjacency"]
    dense = np.zeros((6, 6))
    for a, b in [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 0)]:
        dense[a, b] = dense[b, a] = 1
    _, _, from_matrix = prepare(est, "car", adjacency=dense)
    assert len(from_matrix.edge_index) == 6
    with pytest.raises(SpecError, match="no neighbour"):
        prepare(est, "car", adjacency=[["t0", "t1"], ["t1", "t2"]])
    with pytest.raises(SpecError, match="unknown task"):
        prepare(est, "car", adjacency=[["t0", "zz"]])
    with pytest.raises(SpecError, match="required"):
        prepare(est, "car")
    with pytest.raises(SpecError, match="self-loop"):
        prepare(est, "car", adjacency=[["t0", "t0"]])
    with pytest.raises(SpecError, match="listed twice"):
        prepare(est, "gmrf", edges=[["t0", "t1"], ["t1", "t0"]])
    _, _, masked = prepare(est, "gmrf", edges="knn", neighbors=1)
    assert 3 <= masked.n_edges <= 6
    _, _, full = prepare(est, "gmrf")
    assert full.n_edges == 15 and full.edge_source == "all"
    with pytest.raises(SpecError, match="neighbors"):
        prepare(est, "gmrf", neighbors=0)
    big = random_estimates(n_tasks=45, n_params=1)
    _, _, auto = prepare(big, "gmrf")
    assert auto.edge_source == "knn" and auto.n_edges < 45 * 5


@pytest.mark.slow
def test_gmrf_recovers_sparse_graph_with_eight_replicates():
    from sklearn.metrics import roc_auc_score

    est, adjacency, theta = sparse_graph_estimates()
    fit = bf.fuse(est, model="gmrf", seed=1)  # default settings: 4 × (1000 + 1000)
    sim = fit.similarity().to_numpy()
    upper = np.triu_indices(est.n_tasks, 1)
    auc = roc_auc_score(adjacency[upper] > 0, sim[upper])
    assert auc >= 0.9, auc
    edges = fit.structure()["edges"]
    assert set(edges.columns) >= {"task_a", "task_b", "weight_mean", "partial_corr_mean",
                                  "inclusion"}
    fused = fit.summary()["mean"].to_numpy().reshape(theta.shape)
    assert np.sqrt(np.mean((fused - theta) ** 2)) < np.sqrt(np.mean((est.estimates - theta)
                                                                    ** 2))
    assert_sampled_well(fit)


def test_car_fit_borrows_along_the_graph(tmp_path):
    """A known chain graph: ρ is learned, and the fit round-trips through a file."""
    rng = np.random.default_rng(4)
    n_tasks = 12
    pairs = [[f"t{k}", f"t{k + 1}"] for k in range(n_tasks - 1)]
    weights = np.zeros((n_tasks, n_tasks))
    for k in range(n_tasks - 1):
        weights[k, k + 1] = weights[k + 1, k] = 1
    graph = np.diag(weights.sum(1)) - 0.95 * weights
    u = np.linalg.solve(np.linalg.cholesky(graph).T, rng.standard_normal(n_tasks))
    se = np.full(n_tasks, 0.5)
    est = bf.TaskEstimates([f"t{k}" for k in range(n_tasks)], u + se * rng.standard_normal(
        n_tasks), se**2)
    fit = bf.fuse(est, model="car", adjacency=pairs, seed=2, chains=4, warmup=400, draws=400)
    assert fit.spec["options"]["adjacency"][0] == ["t0", "t1", 1.0]
    post = fit.idata.posterior
    assert float(post["rho"].mean()) > 0.5  # prior mean 0.5; the chain borrows strongly
    assert_sampled_well(fit)
    sim = fit.similarity().to_numpy()
    assert sim[0, 1] > sim[0, n_tasks - 1]  # neighbours correlate more than chain ends
    loaded = bf.load_fit(fit.save(tmp_path / "car.nc"))
    np.testing.assert_allclose(loaded.summary()["mean"], fit.summary()["mean"])
    with pytest.raises(SpecError, match="not on the known graph"):
        fit.predict_new_task()


@pytest.mark.parametrize("n_params", [1, 2])
def test_sparse_car_density_equals_the_dense_gaussian(n_params):
    """The plain form's CAR log density from the edge list (O(K + E)) equals the dense
    N(vec(θ − 1μᵀ); 0, G⁻¹ ⊗ T) with G = D − ρW, weighted edges, for several ρ."""
    from bayesfuse.families.car import SparseCar

    est = random_estimates(seed=5, n_tasks=7, n_params=n_params)
    edges = [["t0", "t1", 2.0], ["t1", "t2", 1.0], ["t2", "t3", 0.5], ["t3", "t0", 1.0],
             ["t4", "t5", 1.5], ["t5", "t6", 1.0], ["t6", "t4", 3.0], ["t2", "t5", 0.7]]
    _, _, family = prepare(est, "car", adjacency=edges)
    data = {k: jnp.asarray(v) for k, v in family.graph_data().items()}
    rng = np.random.default_rng(2)
    prior_chol = np.tril(rng.uniform(0.2, 1.0, (n_params, n_params)))
    mu = rng.normal(size=n_params)
    theta = rng.normal(size=(7, n_params))
    weights = np.zeros((7, 7))
    for a, b, w in edges:
        i, j = int(a[1:]), int(b[1:])
        weights[i, j] = weights[j, i] = w
    for rho in (0.0, 0.5, 0.99):
        ours = SparseCar(jnp.asarray(mu), rho, jnp.asarray(prior_chol), **data).log_prob(
            jnp.asarray(theta))
        graph = np.diag(weights.sum(1)) - rho * weights
        covariance = np.kron(np.linalg.inv(graph), prior_chol @ prior_chol.T)  # vec by rows
        dense = stats.multivariate_normal(np.tile(mu, 7), covariance).logpdf(theta.ravel())
        np.testing.assert_allclose(float(ours), dense, rtol=1e-10)


@pytest.mark.slow
def test_car_plain_form_agrees_with_collapsed():
    """collapsed=False (θ sampled, sparse CAR density) and the collapsed likelihood give
    the same posterior of ρ, τ, μ and θ to Monte Carlo error (5 MC SEs)."""
    rng = np.random.default_rng(7)
    n_tasks = 16
    pairs = [[f"t{k}", f"t{(k + 1) % n_tasks}"] for k in range(n_tasks)]
    weights = np.zeros((n_tasks, n_tasks))
    for k in range(n_tasks):
        weights[k, (k + 1) % n_tasks] = weights[(k + 1) % n_tasks, k] = 1
    graph = np.diag(weights.sum(1)) - 0.9 * weights
    u = np.linalg.solve(np.linalg.cholesky(graph).T, rng.standard_normal(n_tasks))
    se = rng.uniform(0.2, 0.4, n_tasks)
    est = bf.TaskEstimates([f"t{k}" for k in range(n_tasks)],
                           0.5 + u + se * rng.standard_normal(n_tasks), se**2)
    settings = dict(model="car", adjacency=pairs, chains=4, warmup=500, draws=1000,
                    warn=False)
    a = bf.fuse(est, seed=1, **settings)
    b = bf.fuse(est, seed=2, collapsed=False, **settings)
    assert_sampled_well(b)
    for name in ("rho", "tau", "mu", "theta"):
        x = a.idata.posterior[name].values.reshape(4, 1000, -1)
        y = b.idata.posterior[name].values.reshape(4, 1000, -1)
        for j in range(x.shape[-1]):
            mcse = np.hypot(*(stats.sem(v[..., j].mean(axis=1)) for v in (x, y)))
            assert abs(x[..., j].mean() - y[..., j].mean()) < 5 * mcse, (name, j)
