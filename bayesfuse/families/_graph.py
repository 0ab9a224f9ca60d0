"""Shared pieces of the graph families (``gmrf``, ``car``): edge lists and Gaussian algebra.

Both families put a matrix-normal prior on the task effects u = θ − 1μᵀ (K×p),

    u ~ MN(0, G⁻¹, T)     ⇔     vec(u) ~ N(0, G⁻¹ ⊗ T)      # task-major vec, P = G ⊗ T⁻¹

with a K×K structure precision G (the task graph: each parameter column is a replicate on
the same graph) and T = diag(τ) R diag(τ) across parameters, so that G = I gives the
``exchangeable`` family exactly. With θ̂ₖ ~ N(θₖ, Vₖ), integrating θ out gives, in
precision form (no K×K or Kp×Kp covariance is ever inverted),

    H = G ⊗ T⁻¹ + blockdiag(Vₖ⁻¹)                         # posterior precision of u
    b = V⁻¹ r,  r = θ̂ − 1μᵀ
    log N(r; 0, P⁻¹ + V) = −½ [rᵀV⁻¹r − bᵀH⁻¹b + log|H| − p log|G| + K log|T| + log|V|
                                + Kp log 2π]
    u | θ̂, φ ~ N(H⁻¹ b, H⁻¹)

Everything goes through Cholesky factors of G (K×K), T (p×p) and H (Kp×Kp).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pandas as pd

from bayesfuse.errors import SpecError
from bayesfuse.families import _blocktri

__all__ = [
    "parse_edges",
    "knn_edges",
    "all_edges",
    "dense_from_edges",
    "log_det",
    "log_det_minus_quad",
    "scale_and_log_det",
    "mean_marginal_variance",
    "GraphGaussian",
    "dense_graph",
    "collapsed_loglik",
    "conditional_draw",
    "conditional_blocks",
    "matrix_normal_draw",
    "GraphModel",
]

LOG_2PI = float(np.log(2 * np.pi))


# ---------------------------------------------------------------------- edge lists
def _edges_frame(value: Any, option: str, n_tasks: int) -> pd.DataFrame:
    """An edge list or adjacency given in any accepted form, as a DataFrame."""
    if isinstance(value, str | os.PathLike):
        path = Path(value)
        if not path.is_file():
            raise SpecError(f"{option}: file '{path}' not found; give a CSV with columns "
                            "task_a, task_b[, weight].")
        try:
            frame = pd.read_csv(path, dtype={"task_a": str, "task_b": str})
        except (ValueError, OSError, pd.errors.ParserError) as exc:
            raise SpecError(f"{option}: could not read '{path}' as CSV ({exc}).") from None
        missing = {"task_a", "task_b"} - set(frame.columns)
        if missing:
            raise SpecError(f"{option}: '{path}' lacks column(s) {sorted(missing)}; expected "
                            "task_a, task_b[, weight].")
        return frame
    if isinstance(value, pd.DataFrame):
        if {"task_a", "task_b"} <= set(value.columns):
            return value
        if value.shape[0] == value.shape[1]:  # K×K adjacency labelled by task
            index = [str(t) for t in value.index]
            if [str(c) for c in value.columns] != index:
                raise SpecError(f"{option}: a K×K adjacency DataFrame needs the same task ids "
                                "as index and columns.")
            return _dense_to_frame(value.to_numpy(), index, option)
        raise SpecError(f"{option}: a DataFrame must have columns task_a, task_b[, weight] or "
                        "be a square adjacency labelled by task.")
    if isinstance(value, np.ndarray) and value.shape == (n_tasks, n_tasks):
        return _dense_to_frame(value, None, option)
    if isinstance(value, Sequence | np.ndarray):
        rows = []
        for item in value:
            if not isinstance(item, Sequence | np.ndarray) or isinstance(item, str) \
                    or len(item) not in (2, 3):
                raise SpecError(f"{option}: each edge must be [task_a, task_b] or "
                                f"[task_a, task_b, weight]; got {item!r}.")
            rows.append([str(item[0]), str(item[1]), item[2] if len(item) == 3 else 1.0])
        return pd.DataFrame(rows, columns=["task_a", "task_b", "weight"])
    raise SpecError(f"{option}: expected a CSV path, a list of [task_a, task_b(, weight)] "
                    f"pairs, an edge DataFrame or a K×K adjacency; got {type(value).__name__}.")


def _dense_to_frame(matrix: np.ndarray, tasks: list[str] | None, option: str) -> pd.DataFrame:
    matrix = np.asarray(matrix, dtype=float)
    if not np.allclose(matrix, matrix.T, equal_nan=False):
        raise SpecError(f"{option}: the adjacency matrix must be symmetric.")
    rows, cols = np.nonzero(np.triu(matrix, k=1))
    names = tasks if tasks is not None else None
    return pd.DataFrame({
        "task_a": rows if names is None else [names[i] for i in rows],
        "task_b": cols if names is None else [names[j] for j in cols],
        "weight": matrix[rows, cols],
        "_positional": names is None,
    })


def parse_edges(value: Any, tasks: Sequence[str], option: str = "edges",
                weighted: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Validate an edge list against the task ids.

    Parameters
    ----------
    value : path, sequence of pairs/triples, DataFrame or array of shape (K, K)
        A CSV file with columns ``task_a, task_b[, weight]``; a list of ``[task_a, task_b]``
        or ``[task_a, task_b, weight]``; an edge DataFrame with those columns; or a
        symmetric K×K adjacency (DataFrame labelled by task, or array in task order).
    tasks : sequence of str
        Task ids, in the order of the estimates.
    option : str
        The option's name, for messages.
    weighted : bool
        Whether weights other than 1 are allowed.

    Returns
    -------
    index : int array of shape (E, 2)
        Task positions (a < b) of each edge.
    weight : float array of shape (E,)
    """
    frame = _edges_frame(value, option, len(tasks))
    positions = {t: i for i, t in enumerate(tasks)}
    positional = bool(frame.get("_positional", pd.Series([False])).any())
    if positional:
        if len(frame) and int(max(frame["task_a"].max(), frame["task_b"].max())) >= len(tasks):
            raise SpecError(f"{option}: the adjacency matrix is larger than the {len(tasks)} "
                            "tasks.")
        a = frame["task_a"].to_numpy(int)
        b = frame["task_b"].to_numpy(int)
    else:
        names_a = frame["task_a"].astype(str).to_numpy()
        names_b = frame["task_b"].astype(str).to_numpy()
        unknown = sorted({t for t in np.concatenate([names_a, names_b]) if t not in positions})
        if unknown:
            raise SpecError(f"{option}: unknown task id(s) {unknown[:5]}; edges must name tasks "
                            "of the estimates.")
        a = np.array([positions[t] for t in names_a], dtype=int)
        b = np.array([positions[t] for t in names_b], dtype=int)
    if "weight" in frame:
        weight = pd.to_numeric(frame["weight"], errors="coerce").to_numpy(float)
    else:
        weight = np.ones(len(frame))
    if len(frame) == 0:
        raise SpecError(f"{option}: the edge list is empty.")
    if np.any(a == b):
        bad = tasks[int(a[np.argmax(a == b)])]
        raise SpecError(f"{option}: self-loop on task '{bad}'; edges join two different tasks.")
    if not np.all(np.isfinite(weight)) or np.any(weight <= 0):
        raise SpecError(f"{option}: edge weights must be finite and > 0.")
    if not weighted and not np.allclose(weight, 1.0):
        raise SpecError(f"{option}: weights are not used here; give pairs only.")
    low, high = np.minimum(a, b), np.maximum(a, b)
    index = np.stack([low, high], axis=1)
    unique, first = np.unique(index, axis=0, return_index=True)
    if len(unique) != len(index):
        dup = index[np.setdiff1d(np.arange(len(index)), first)[0]]
        raise SpecError(f"{option}: edge {tasks[dup[0]]}–{tasks[dup[1]]} is listed twice.")
    order = np.lexsort((index[:, 1], index[:, 0]))
    return index[order], weight[order]


def all_edges(n_tasks: int) -> np.ndarray:
    """Every pair a < b, shape (K(K−1)/2, 2)."""
    a, b = np.triu_indices(n_tasks, k=1)
    return np.stack([a, b], axis=1)


def knn_edges(points: np.ndarray, k: int) -> np.ndarray:
    """Pairs joining each task to its ``k`` nearest tasks (symmetrised), shape (E, 2).

    Parameters
    ----------
    points : array of shape (K, q)
        Standardised task covariates.
    k : int
    """
    n_tasks = points.shape[0]
    k = min(k, n_tasks - 1)
    dist2 = np.sum((points[:, None] - points[None]) ** 2, axis=-1)
    np.fill_diagonal(dist2, np.inf)
    nearest = np.argsort(dist2, axis=1, kind="stable")[:, :k]
    a = np.repeat(np.arange(n_tasks), k)
    b = nearest.ravel()
    index = np.unique(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1), axis=0)
    return index


def dense_from_edges(index: jax.Array, weight: jax.Array, n_tasks: int) -> jax.Array:
    """Symmetric K×K weight matrix from an edge list (zero diagonal)."""
    matrix = jnp.zeros((n_tasks, n_tasks), dtype=weight.dtype)
    matrix = matrix.at[index[:, 0], index[:, 1]].set(weight)
    return matrix.at[index[:, 1], index[:, 0]].set(weight)


# ---------------------------------------------------------------------- Gaussian algebra
# JAX differentiates a Cholesky factor step by step, at several times the factor's cost on
# CPU. The functions below give the likelihoods' gradients in closed form from one factor and
# one inverse (∂ log|A| / ∂A = A⁻¹, ∂ bᵀA⁻¹b / ∂A = −A⁻¹bbᵀA⁻¹; symmetric in and out,
# checked against autodiff in the tests). Above FACTOR_LEAF rows both come from recursive
# halving: LAPACK sees only small blocks, which stay on one thread (larger calls run on
# OpenBLAS threads that, with several chains on the cores, spin against each other).
# Measurements: benchmarks/results/design_measurements.md and speed.md.
def _factor_and_inverse(matrix: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Cholesky factor and inverse of A (n, n)."""
    if matrix.shape[-1] <= _blocktri.FACTOR_LEAF:
        chol = jnp.linalg.cholesky(matrix)
        inverse = jax.scipy.linalg.cho_solve((chol, True), jnp.eye(matrix.shape[-1],
                                                                  dtype=matrix.dtype))
        return chol, inverse
    chol, inverse_factor = _blocktri.factor_and_inverse_factor(matrix)
    return chol, inverse_factor.T @ inverse_factor


@jax.custom_vjp
def log_det(matrix: jax.Array) -> jax.Array:
    """log|A| of a symmetric positive definite A of shape (n, n), by Cholesky."""
    return _log_det_chol(jnp.linalg.cholesky(matrix))


def _log_det_fwd(matrix):
    chol, inverse = _factor_and_inverse(matrix)
    return _log_det_chol(chol), inverse


def _log_det_bwd(inverse, cotangent):
    return (cotangent * inverse,)


log_det.defvjp(_log_det_fwd, _log_det_bwd)


@jax.custom_vjp
def log_det_minus_quad(matrix: jax.Array, vector: jax.Array) -> jax.Array:
    """log|A| − bᵀA⁻¹b for A of shape (n, n), symmetric positive definite, and b (n,)."""
    chol = jnp.linalg.cholesky(matrix)
    half = jax.scipy.linalg.solve_triangular(chol, vector, lower=True)
    return _log_det_chol(chol) - jnp.sum(half**2)


def _ldmq_fwd(matrix, vector):
    chol, inverse = _factor_and_inverse(matrix)
    solved = inverse @ vector  # A⁻¹b
    return _log_det_chol(chol) - vector @ solved, (inverse, solved)


def _ldmq_bwd(residuals, cotangent):
    inverse, solved = residuals
    return (cotangent * (inverse + jnp.outer(solved, solved)), -2.0 * cotangent * solved)


log_det_minus_quad.defvjp(_ldmq_fwd, _ldmq_bwd)


@jax.custom_vjp
def scale_and_log_det(precision: jax.Array) -> tuple[jax.Array, jax.Array]:
    """log s and log|Q| of a K×K precision Q, s = (Πₖ (Q⁻¹)ₖₖ)^(1/K).

    s is the geometric mean of the marginal variances diag(Q⁻¹): dividing the covariance
    Q⁻¹ by it gives marginal variances of geometric mean 1 (the scaling of Sørbye & Rue
    2014 for GMRF priors). One Cholesky factor and one inverse serve both, and their
    gradients: ∂ log s / ∂Q = −Q⁻¹ diag(1/(Q⁻¹)ₖₖ) Q⁻¹ / K, ∂ log|Q| / ∂Q = Q⁻¹.
    """
    return _scale_and_log_det_fwd(precision)[0]


def _scale_and_log_det_fwd(precision):
    chol, inverse = _factor_and_inverse(precision)
    variance = jnp.diagonal(inverse)
    return (jnp.mean(jnp.log(variance)), _log_det_chol(chol)), (inverse, variance)


def _scale_and_log_det_bwd(residuals, cotangents):
    inverse, variance = residuals
    d_log_scale, d_log_det = cotangents
    d_scale = -(inverse / variance[None, :]) @ inverse / variance.shape[0]
    return (d_log_scale * d_scale + d_log_det * inverse,)


scale_and_log_det.defvjp(_scale_and_log_det_fwd, _scale_and_log_det_bwd)


def mean_marginal_variance(precision: jax.Array) -> jax.Array:
    """Geometric mean s of the marginal variances diag(Q⁻¹) of a K×K precision Q (scalar);
    see :func:`scale_and_log_det`."""
    return jnp.exp(scale_and_log_det(precision)[0])


def _block_diag(blocks: jax.Array) -> jax.Array:
    """Dense block-diagonal matrix from blocks of shape (K, p, p) -> (Kp, Kp)."""
    n_tasks, n_params = blocks.shape[:2]
    eye = jnp.eye(n_tasks, dtype=blocks.dtype)
    return jnp.einsum("kl,kij->kilj", eye, blocks).reshape(n_tasks * n_params, -1)


def _posterior_precision(graph: jax.Array, prior_chol: jax.Array, cov_inv: jax.Array):
    """H = G ⊗ T⁻¹ + blockdiag(Vₖ⁻¹), shape (Kp, Kp)."""
    n_params = prior_chol.shape[-1]
    prior_prec = jax.scipy.linalg.cho_solve((prior_chol, True), jnp.eye(n_params))
    return jnp.kron(graph, prior_prec) + _block_diag(cov_inv)


def _log_det_chol(chol: jax.Array) -> jax.Array:
    return 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)


def collapsed_loglik(resid: jax.Array, graph: jax.Array, prior_chol: jax.Array,
                     cov_inv: jax.Array, cov_log_det: jax.Array,
                     graph_log_det: jax.Array | None = None) -> jax.Array:
    """log N(vec r; 0, G⁻¹ ⊗ T + blockdiag Vₖ), the joint density of all tasks.

    Parameters
    ----------
    resid : array of shape (K, p)
        r = θ̂ − μ.
    graph : array of shape (K, K)
        G, symmetric positive definite.
    prior_chol : array of shape (p, p)
        Cholesky factor of T.
    cov_inv : array of shape (K, p, p)
        Vₖ⁻¹.
    cov_log_det : scalar
        Σₖ log|Vₖ|.
    graph_log_det : scalar, optional
        log|G| when the family has it cheaper than a Cholesky factor of G.

    Returns
    -------
    scalar
    """
    n_tasks, n_params = resid.shape
    if graph_log_det is None:
        graph_log_det = log_det(graph)
    scaled = jnp.einsum("kij,kj->ki", cov_inv, resid)  # b = V⁻¹ r
    # log|H| − bᵀH⁻¹b
    post_terms = log_det_minus_quad(_posterior_precision(graph, prior_chol, cov_inv),
                                    scaled.reshape(-1))
    total = (jnp.sum(resid * scaled) + post_terms - n_params * graph_log_det
             + n_tasks * _log_det_chol(prior_chol) + cov_log_det)
    return -0.5 * (total + n_tasks * n_params * LOG_2PI)


def conditional_draw(key: jax.Array, resid: jax.Array, graph: Any,
                     prior_chol: jax.Array, cov_inv: jax.Array) -> jax.Array:
    """One exact draw of u | θ̂, φ ~ N(H⁻¹ V⁻¹ r, H⁻¹), shape (K, p); G dense or in
    block form."""
    if isinstance(graph, _blocktri.BlockGraph):
        return _blocktri.conditional_draw(key, resid, graph, prior_chol, cov_inv)
    precision = _posterior_precision(graph, prior_chol, cov_inv)
    scaled = jnp.einsum("kij,kj->ki", cov_inv, resid).reshape(-1)
    if precision.shape[0] > _blocktri.FACTOR_LEAF:  # H⁻¹b + L⁻ᵀz, both from L⁻¹
        inverse_factor = _blocktri.factor_and_inverse_factor(precision)[1]
        noise = jax.random.normal(key, scaled.shape)
        return (inverse_factor.T @ (inverse_factor @ scaled + noise)).reshape(resid.shape)
    chol_post = jnp.linalg.cholesky(precision)
    mean = jax.scipy.linalg.cho_solve((chol_post, True), scaled)
    noise = jax.scipy.linalg.solve_triangular(
        chol_post.T, jax.random.normal(key, scaled.shape), lower=False)
    return (mean + noise).reshape(resid.shape)


def conditional_blocks(resid: jax.Array, graph: Any, prior_chol: jax.Array,
                       cov_inv: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-task leave-one-out log densities and pooling weights; G dense or in block form.

    ``loo[k] = log p(θ̂ₖ | θ̂₋ₖ, φ)``: with Λ = (P⁻¹ + V)⁻¹ = V⁻¹ − V⁻¹H⁻¹V⁻¹ and
    g = Λ r, θ̂ₖ | θ̂₋ₖ has precision Λₖₖ and mean θ̂ₖ − Λₖₖ⁻¹ gₖ. ``pooling[k]`` is
    diag(I − (H⁻¹)ₖₖ Vₖ⁻¹), the weight the fused mean of task k gives to everything but
    its own estimate. Needs the diagonal blocks of H⁻¹ (one triangular inverse, or the
    selected inversion of the block form).

    Returns
    -------
    loo : array of shape (K,)
    pooling : array of shape (K, p)
    """
    n_tasks, n_params = resid.shape
    if isinstance(graph, _blocktri.BlockGraph):
        post_blocks, post_mean = _blocktri.posterior_blocks_and_mean(resid, graph, prior_chol,
                                                                     cov_inv)
    else:
        precision = _posterior_precision(graph, prior_chol, cov_inv)
        scaled = jnp.einsum("kij,kj->ki", cov_inv, resid).reshape(-1)
        if n_tasks * n_params > _blocktri.FACTOR_LEAF:
            chol_inv = _blocktri.factor_and_inverse_factor(precision)[1]
            post_mean = chol_inv.T @ (chol_inv @ scaled)
        else:
            chol_post = jnp.linalg.cholesky(precision)
            chol_inv = jax.scipy.linalg.solve_triangular(
                chol_post, jnp.eye(n_tasks * n_params), lower=True)
            post_mean = jax.scipy.linalg.cho_solve((chol_post, True), scaled)
        chol_inv = chol_inv.reshape(-1, n_tasks, n_params)
        post_blocks = jnp.einsum("mki,mkj->kij", chol_inv, chol_inv)  # (H⁻¹)ₖₖ
        post_mean = post_mean.reshape(n_tasks, n_params)
    grad = jnp.einsum("kij,kj->ki", cov_inv, resid - post_mean)  # g = Λ r
    loo_prec = cov_inv - cov_inv @ post_blocks @ cov_inv  # Λₖₖ
    chol_loo = jnp.linalg.cholesky(loo_prec)
    half = jax.scipy.linalg.solve_triangular(chol_loo, grad[..., None], lower=True)[..., 0]
    loo = 0.5 * _log_det_chol(chol_loo) - 0.5 * jnp.sum(half**2, axis=-1) \
        - 0.5 * n_params * LOG_2PI
    own = jnp.diagonal(post_blocks @ cov_inv, axis1=-2, axis2=-1)
    return loo, 1.0 - own


def matrix_normal_draw(key: jax.Array, graph: jax.Array, prior_chol: jax.Array,
                       sample_shape: tuple[int, ...] = ()) -> jax.Array:
    """u ~ MN(0, G⁻¹, T): L_G⁻ᵀ Z L_Tᵀ, shape sample_shape + (K, p)."""
    n_tasks, n_params = graph.shape[0], prior_chol.shape[-1]
    chol_graph = jnp.linalg.cholesky(graph)
    z = jax.random.normal(key, sample_shape + (n_tasks, n_params))
    left = jax.scipy.linalg.solve_triangular(chol_graph.T, z, lower=False)
    return left @ prior_chol.T


class GraphGaussian(dist.Distribution):
    """θ̂ ~ N(1μᵀ, G⁻¹ ⊗ T + blockdiag Vₖ) with θ integrated out; event shape (K, p).

    Parameters
    ----------
    mu : array of shape (p,)
    graph : array of shape (K, K), or BlockGraph
        G, dense or in block-tridiagonal form (:mod:`bayesfuse.families._blocktri`; then
        ``graph_log_det`` is required).
    prior_chol : array of shape (p, p)
        Cholesky factor of T.
    cov, cov_inv, cov_chol : arrays of shape (K, p, p)
        Vₖ, Vₖ⁻¹ and the Cholesky factors of Vₖ.
    graph_log_det : scalar, optional
        log|G| (default: from a Cholesky factor of G).
    """

    support = dist.constraints.independent(dist.constraints.real_vector, 1)

    def __init__(self, mu, graph, prior_chol, cov_inv, cov_chol, graph_log_det=None, *,
                 validate_args=None):
        self.mu, self.graph, self.prior_chol = mu, graph, prior_chol
        self.graph_log_det = graph_log_det
        self.cov_inv, self.cov_chol = cov_inv, cov_chol
        self.cov_log_det = _log_det_chol(cov_chol).sum()
        super().__init__(batch_shape=(), event_shape=cov_chol.shape[:2],
                         validate_args=validate_args)

    def log_prob(self, value):
        if isinstance(self.graph, _blocktri.BlockGraph):
            return _blocktri.collapsed_loglik(value - self.mu, self.graph, self.prior_chol,
                                              self.cov_inv, self.cov_log_det,
                                              self.graph_log_det)
        return collapsed_loglik(value - self.mu, self.graph, self.prior_chol, self.cov_inv,
                                self.cov_log_det, self.graph_log_det)

    def sample(self, key, sample_shape=()):
        k_u, k_e = jax.random.split(key)
        u = matrix_normal_draw(k_u, dense_graph(self.graph), self.prior_chol, sample_shape)
        e = jnp.einsum("kij,...kj->...ki", self.cov_chol,
                       jax.random.normal(k_e, sample_shape + self.event_shape))
        return self.mu + u + e


def dense_graph(graph: Any) -> jax.Array:
    """G as a dense K×K array, whether given dense or in block form."""
    if isinstance(graph, _blocktri.BlockGraph):
        return _blocktri.to_dense(graph)
    return graph


class GraphModel:
    """What ``gmrf`` and ``car`` share: μ, τ (and R), the collapsed or plain likelihood of a
    matrix-normal prior with structure precision G, and the exact per-draw computations.

    A family mixes this in before :class:`~bayesfuse.families.base.Family` and defines
    ``graph_matrix(n_tasks, data, draw)`` -> G of shape (K, K) from the data's edge arrays
    and a draw's graph parameters, and ``graph_data()`` -> its edge arrays. It may override
    :meth:`graph_parts` when it has log|G| cheaper than a factor of G.
    """

    @property
    def draw_cost(self) -> int:
        # every draw factors dense Kp × Kp matrices (θ | φ, θ̂ and the LOO conditionals):
        # without this, 4,000 draws at K = 500 asked for 32 GB at once
        return self.estimates.n_tasks * self.n_params  # type: ignore[attr-defined]

    #: one draw at a time: vectorised over draws, the dense factors become batched LAPACK
    #: calls, which jaxlib 0.10 on CPU splits over XLA's intra-op thread pool and waits
    #: for from inside that pool; with several such calls in flight at once every pool
    #: thread waits and the process hangs (seen at K = 200: gdb shows all workers in
    #: BlockingCounter::Wait under lapack_dtrsm_ffi). Unbatched, each call runs inline.
    max_draw_batch = 1

    def graph_parts(self, n_tasks: int, data: Any, draw: Any) -> tuple[jax.Array, jax.Array]:
        """G (K, K) and log|G| (scalar) for the collapsed likelihood."""
        graph = self.graph_matrix(n_tasks, data, draw)  # type: ignore[attr-defined]
        return graph, log_det(graph)

    def data(self) -> dict[str, np.ndarray]:
        data = super().data()  # type: ignore[misc]
        data["cov_inv"] = np.linalg.inv(data["cov"])
        data.update(self.graph_data())  # type: ignore[attr-defined]
        return data

    def block_layout(self, edge_index: np.ndarray) -> dict[str, np.ndarray]:
        """The block-tridiagonal layout of the collapsed likelihood's factors for this
        graph (``band_*`` arrays for :meth:`data`), or ``{}`` when the dense factor is as
        cheap; see :mod:`bayesfuse.families._blocktri`."""
        return _blocktri.layout(edge_index, self.estimates.n_tasks)  # type: ignore[attr-defined]

    @staticmethod
    def block_data(data: Any) -> dict[str, Any] | None:
        """The ``band_*`` arrays among the data, or None (dense factors)."""
        if data.get("band_slot_task") is None:
            return None
        return {key: data[key] for key in _blocktri.LAYOUT_KEYS}

    def _prior_chol(self, draw: Any) -> jax.Array:
        """Cholesky factor of T = diag(τ) R diag(τ), shape (p, p)."""
        tau = jnp.asarray(draw["tau"])
        if tau.shape[-1] == 1:
            return tau[:, None]
        return tau[:, None] * draw["corr_chol"]

    @staticmethod
    def _sample_location_scale(priors: Any, n_params: int) -> tuple[jax.Array, dict]:
        """Sample μ, τ and (p > 1) R's Cholesky factor; returns μ and the scale sites."""
        import numpyro

        from bayesfuse.families.base import block_distribution

        mu = numpyro.sample("mu", block_distribution(priors["mu"]))
        site: dict[str, Any] = {"tau": numpyro.sample("tau", block_distribution(priors["tau"]))}
        if n_params > 1:
            eta = priors["corr"][0].args[0]
            corr_chol = numpyro.sample("corr_chol", dist.LKJCholesky(n_params, eta))
            numpyro.deterministic("corr", corr_chol @ corr_chol.T)
            site["corr_chol"] = corr_chol
        return mu, site

    def _observe(self, mu: jax.Array, graph: jax.Array, graph_log_det: jax.Array, site: Any,
                 collapsed: bool, theta_hat: Any, cov_chol: Any, cov_inv: Any) -> None:
        """θ̂ given φ: collapsed (θ integrated out) or plain (θ = μ + L_G⁻ᵀ z L_Tᵀ)."""
        import numpyro

        prior_chol = self._prior_chol(site)
        if collapsed:
            numpyro.sample("theta_hat", GraphGaussian(mu, graph, prior_chol, cov_inv, cov_chol,
                                                      graph_log_det), obs=theta_hat)
            return
        n_tasks, n_params = cov_chol.shape[0], cov_chol.shape[1]
        with numpyro.plate("task", n_tasks):
            z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([n_params]).to_event(1))
        chol_graph = jnp.linalg.cholesky(dense_graph(graph))
        u = jax.scipy.linalg.solve_triangular(chol_graph.T, z, lower=False) @ prior_chol.T
        theta = numpyro.deterministic("theta", mu + u)
        with numpyro.plate("task", n_tasks):
            numpyro.sample("theta_hat", dist.MultivariateNormal(theta, scale_tril=cov_chol),
                           obs=theta_hat)

    def _parts(self, data: Any, draw: Any):
        """r = θ̂ − μ, G (dense, or in block form when the data carry a block layout) and
        the Cholesky factor of T."""
        theta_hat = data["theta_hat"]
        graph = self.graph_parts(theta_hat.shape[0], data, draw)[0]
        return theta_hat - draw["mu"], graph, self._prior_chol(draw)

    def draw_theta(self, key, data, draw):
        resid, graph, prior_chol = self._parts(data, draw)
        return draw["mu"] + conditional_draw(key, resid, graph, prior_chol, data["cov_inv"])

    def pointwise_loglik(self, data, draw):
        """log p(θ̂ₖ | θ̂₋ₖ, φ): tasks are dependent given φ, so this is the leave-one-out
        conditional density that PSIS-LOO needs (Bürkner, Gabry & Vehtari 2021)."""
        return conditional_blocks(*self._parts(data, draw), data["cov_inv"])[0]

    def pooling_weight(self, data, draw):
        return conditional_blocks(*self._parts(data, draw), data["cov_inv"])[1]
