"""Block-tridiagonal algebra of the sparse graph families against dense linear algebra."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer.util import potential_energy

import bayesfuse as bf
from bayesfuse.families import _blocktri, _graph
from bayesfuse.inference.fuse import prepare


def knn_graph(n_tasks, dims, seed=0):
    rng = np.random.default_rng(seed)
    edges = _graph.knn_edges(rng.standard_normal((n_tasks, dims)), 5)
    weights = rng.uniform(0.1, 2.0, len(edges))
    diagonal = rng.uniform(0.5, 1.5, n_tasks) + np.bincount(
        edges.ravel(), np.repeat(weights, 2), minlength=n_tasks)
    dense = np.diag(diagonal)
    dense[edges[:, 0], edges[:, 1]] = dense[edges[:, 1], edges[:, 0]] = -weights
    return edges, diagonal, weights, dense


@pytest.mark.parametrize("n_tasks,dims", [(97, 1), (150, 2), (203, 1)])
def test_layout_gives_the_same_matrix_in_block_form(n_tasks, dims):
    edges, diagonal, weights, dense = knn_graph(n_tasks, dims, seed=n_tasks)
    band = _blocktri.layout(edges, n_tasks)
    n_blocks, size = band["band_slot_task"].shape
    assert n_blocks >= _blocktri.MIN_BLOCKS and size >= _blocktri.BLOCK_MIN
    assert n_blocks * size >= n_tasks > (n_blocks - 1) * size  # the last block is padded
    graph = _blocktri.graph_blocks(band, jnp.asarray(diagonal), jnp.asarray(weights))
    np.testing.assert_array_equal(np.asarray(_blocktri.to_dense(graph)), dense)
    diag, lower = graph.diag, graph.lower
    sign, log_det = np.linalg.slogdet(dense)
    assert sign == 1
    np.testing.assert_allclose(float(_blocktri.log_det(diag, lower)), log_det, rtol=1e-12)
    variance = np.asarray(_blocktri.inverse_diagonal(diag, lower)).reshape(-1)
    real = np.asarray(band["band_slot_task"]).reshape(-1) < n_tasks
    np.testing.assert_allclose(variance[band["band_task_slot"]], np.diag(np.linalg.inv(dense)),
                               rtol=1e-12)
    np.testing.assert_allclose(variance[~real], 1.0)  # padded slots: isolated unit diagonal


def test_dense_graphs_and_small_graphs_stay_dense():
    edges, *_ = knn_graph(60, 1)
    assert _blocktri.layout(edges, 60) == {}  # below MIN_TASKS
    assert _blocktri.layout(_graph.all_edges(100), 100) == {}  # bandwidth 99: one block
    edges, *_ = knn_graph(100, 1)
    assert set(_blocktri.layout(edges, 100)) == set(_blocktri.LAYOUT_KEYS)


def random_block_matrix(n_blocks, size, seed):
    rng = np.random.default_rng(seed)
    lower = 0.3 * rng.standard_normal((n_blocks - 1, size, size))
    diag = rng.standard_normal((n_blocks, size, size))
    diag = diag @ np.swapaxes(diag, 1, 2) / size + 2.0 * np.eye(size)
    dense = np.zeros((n_blocks * size,) * 2)
    for i in range(n_blocks):
        dense[i * size:(i + 1) * size, i * size:(i + 1) * size] = diag[i]
    for i in range(n_blocks - 1):
        dense[(i + 1) * size:(i + 2) * size, i * size:(i + 1) * size] = lower[i]
        dense[i * size:(i + 1) * size, (i + 1) * size:(i + 2) * size] = lower[i].T
    return jnp.asarray(diag), jnp.asarray(lower), dense


def _assemble(diag, lower):
    """The dense matrix of the blocks, as a differentiable function of them."""
    n_blocks, size = diag.shape[:2]
    full = jnp.zeros((n_blocks, size, n_blocks, size))
    index = jnp.arange(n_blocks)
    full = full.at[index, :, index, :].set(diag)
    full = full.at[index[1:], :, index[:-1], :].set(lower)
    full = full.at[index[:-1], :, index[1:], :].set(jnp.swapaxes(lower, -1, -2))
    return full.reshape(n_blocks * size, n_blocks * size)


@pytest.mark.parametrize("n_blocks,size", [(2, 1), (6, 3)])
def test_closed_form_gradients_match_dense_automatic_differentiation(n_blocks, size):
    """log|A| − bᵀA⁻¹b and Σₖ cₖ log (A⁻¹)ₖₖ: values and gradients with respect to the
    blocks (and b) equal autodiff of the dense formulas."""
    diag, lower, dense = random_block_matrix(n_blocks, size, seed=n_blocks)
    rng = np.random.default_rng(1)
    vector = jnp.asarray(rng.standard_normal((n_blocks, size)))
    weight = jnp.asarray(rng.uniform(0.0, 1.0, (n_blocks, size)))

    def dense_ldmq(d, c, b):
        full = _assemble(d, c)
        return jnp.linalg.slogdet(full)[1] - b.reshape(-1) @ jnp.linalg.solve(full, b.reshape(-1))

    def dense_ldlid(d, c):
        full = _assemble(d, c)
        variance = jnp.diag(jnp.linalg.inv(full))
        return jnp.linalg.slogdet(full)[1] + 0.7 * jnp.sum(weight.reshape(-1) * jnp.log(variance))

    def block_ldlid(d, c):
        log_det, log_var = _blocktri.log_det_and_log_inverse_diagonal(d, c, weight)
        return log_det + 0.7 * log_var

    np.testing.assert_allclose(np.asarray(_assemble(diag, lower)), dense)
    pairs = [(_blocktri.log_det_minus_quad, dense_ldmq, (diag, lower, vector)),
             (block_ldlid, dense_ldlid, (diag, lower))]
    for fast, reference, args in pairs:
        np.testing.assert_allclose(float(fast(*args)), float(reference(*args)), rtol=1e-12)
        argnums = tuple(range(len(args)))
        for got, want in zip(jax.grad(fast, argnums)(*args), jax.grad(reference, argnums)(*args),
                             strict=True):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-9, atol=1e-12)


def _estimates(n_tasks, n_params, seed=0):
    rng = np.random.default_rng(seed)
    cov = np.einsum("ki,ij->kij", rng.uniform(0.02, 0.1, (n_tasks, n_params)), np.eye(n_params))
    if n_params > 1:
        cov[:, 0, 1] = cov[:, 1, 0] = 0.3 * np.sqrt(cov[:, 0, 0] * cov[:, 1, 1])
    tasks = [f"t{k}" for k in range(n_tasks)]
    covariates = pd.DataFrame({"z": rng.standard_normal(n_tasks)}, index=tasks)
    return bf.TaskEstimates(tasks, rng.standard_normal((n_tasks, n_params)), cov,
                            covariates=covariates, params=[f"q{j}" for j in range(n_params)])


def _potential(family, data):
    """The unconstrained latent point of a prior draw, flattened, and the jitted value and
    gradient of NUTS's potential there."""
    def model(**kwargs):
        family.model(family.priors, True, **kwargs)

    trace = handlers.trace(handlers.seed(model, 0)).get_trace(**data)
    latent = {name: biject_to(site["fn"].support).inv(site["value"])
              for name, site in trace.items()
              if site["type"] == "sample" and not site["is_observed"]}
    flat, unravel = jax.flatten_util.ravel_pytree(latent)

    def energy(point):
        return potential_energy(model, (), data, unravel(point))

    return flat, jax.jit(jax.value_and_grad(energy))


@pytest.mark.parametrize("family_name,n_params,options", [
    ("gmrf", 1, {}),
    pytest.param("gmrf", 2, {"node_precision": "per_task"}, marks=pytest.mark.slow),
    ("car", 1, {}),
    pytest.param("car", 2, {}, marks=pytest.mark.slow),
])
def test_block_form_potential_equals_the_dense_one(family_name, n_params, options):
    """The model NUTS samples gives the same log density and gradient with the block layout
    (used from 80 tasks on) as with dense factors, at random points."""
    est = _estimates(90, n_params)
    if family_name == "car":
        edges = _graph.knn_edges(est.covariates.to_numpy(), 3)
        options = {"adjacency": [[est.tasks[a], est.tasks[b]] for a, b in edges]}
    _, _, family = prepare(est, family_name, **options)
    data = {k: jnp.asarray(v) for k, v in family.data().items()}
    assert set(_blocktri.LAYOUT_KEYS) <= set(data)
    dense = {k: v for k, v in data.items() if k not in _blocktri.LAYOUT_KEYS}
    flat, block_fn = _potential(family, data)
    _, dense_fn = _potential(family, dense)
    rng = np.random.default_rng(2)
    for _ in range(3):
        point = flat + jnp.asarray(0.5 * rng.standard_normal(flat.shape))
        (value, grad), (want, want_grad) = block_fn(point), dense_fn(point)
        np.testing.assert_allclose(float(value), float(want), rtol=1e-10)
        np.testing.assert_allclose(np.asarray(grad), np.asarray(want_grad), rtol=1e-8,
                                   atol=1e-8 * float(jnp.abs(want_grad).max()))


@pytest.mark.parametrize("family_name,n_params", [("gmrf", 1), ("car", 2)])
def test_block_form_per_draw_outputs_equal_the_dense_ones(family_name, n_params):
    """Leave-one-out densities and pooling weights agree exactly with the dense algebra;
    the exact draws of θ have the dense posterior's mean and covariance (Monte Carlo)."""
    est = _estimates(90, n_params, seed=3)
    options = {}
    if family_name == "car":
        edges = _graph.knn_edges(est.covariates.to_numpy(), 3)
        options = {"adjacency": [[est.tasks[a], est.tasks[b]] for a, b in edges]}
    _, _, family = prepare(est, family_name, **options)
    data = {k: jnp.asarray(v) for k, v in family.data().items()}
    dense = {k: v for k, v in data.items() if k not in _blocktri.LAYOUT_KEYS}
    rng = np.random.default_rng(4)
    draw = {"mu": jnp.asarray(rng.normal(size=n_params)),
            "tau": jnp.asarray(rng.uniform(0.3, 0.8, n_params))}
    if n_params > 1:
        draw["corr_chol"] = jnp.asarray(np.linalg.cholesky([[1.0, 0.3], [0.3, 1.0]]))
    if family_name == "gmrf":
        draw["edge_weight"] = jnp.asarray(rng.exponential(size=family.n_edges))
    else:
        draw["rho"] = jnp.asarray(0.7)
    assert isinstance(family._parts(data, draw)[1], _blocktri.BlockGraph)
    for method in ("pointwise_loglik", "pooling_weight"):
        got = getattr(family, method)(data, draw)
        want = getattr(family, method)(dense, draw)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-9, atol=1e-12)
    resid, graph, prior_chol = family._parts(dense, draw)
    post_prec = np.asarray(_graph._posterior_precision(graph, prior_chol, data["cov_inv"]))
    post_cov = np.linalg.inv(post_prec)
    scaled = np.einsum("kij,kj->ki", np.asarray(data["cov_inv"]), np.asarray(resid))
    post_mean = post_cov @ scaled.reshape(-1) + np.tile(np.asarray(draw["mu"]), est.n_tasks)
    n_draws = 4000
    keys = jax.random.split(jax.random.PRNGKey(0), n_draws)
    draws = jax.lax.map(lambda key: family.draw_theta(key, data, draw), keys)
    draws = np.asarray(draws).reshape(n_draws, -1)
    se = np.sqrt(np.diag(post_cov) / n_draws)
    assert np.all(np.abs(draws.mean(axis=0) - post_mean) < 4.5 * se)
    # sd of a sample covariance entry: √((Σᵢᵢ Σⱼⱼ + Σᵢⱼ²) / S)
    sd = np.sqrt((np.outer(np.diag(post_cov), np.diag(post_cov)) + post_cov**2) / n_draws)
    assert np.all(np.abs(np.cov(draws.T) - post_cov) < 5.5 * sd)
