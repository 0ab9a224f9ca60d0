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

__all__ = [
    "parse_edges",
    "knn_edges",
    "all_edges",
    "dense_from_edges",
    "mean_marginal_variance",
    "GraphGaussian",
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
def mean_marginal_variance(precision: jax.Array) -> jax.Array:
    """Geometric mean of the marginal variances diag(Q⁻¹) of a K×K precision Q (scalar).

    Dividing the covariance Q⁻¹ by it gives marginal variances of geometric mean 1 (the
    scaling of Sørbye & Rue 2014 for GMRF priors); costs one Cholesky factor and one
    triangular inverse.
    """
    chol = jnp.linalg.cholesky(precision)
    inverse = jax.scipy.linalg.solve_triangular(chol, jnp.eye(precision.shape[-1]),
                                                lower=True)  # L⁻¹; Q⁻¹ = L⁻ᵀ L⁻¹
    return jnp.exp(jnp.mean(jnp.log(jnp.sum(inverse**2, axis=-2))))


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
                     cov_inv: jax.Array, cov_log_det: jax.Array) -> jax.Array:
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

    Returns
    -------
    scalar
    """
    n_tasks, n_params = resid.shape
    chol_graph = jnp.linalg.cholesky(graph)
    chol_post = jnp.linalg.cholesky(_posterior_precision(graph, prior_chol, cov_inv))
    scaled = jnp.einsum("kij,kj->ki", cov_inv, resid)  # b = V⁻¹ r
    solved = jax.scipy.linalg.solve_triangular(chol_post, scaled.reshape(-1), lower=True)
    quad = jnp.sum(resid * scaled) - jnp.sum(solved**2)
    log_det = (_log_det_chol(chol_post) - n_params * _log_det_chol(chol_graph)
               + n_tasks * _log_det_chol(prior_chol) + cov_log_det)
    return -0.5 * (quad + log_det + n_tasks * n_params * LOG_2PI)


def conditional_draw(key: jax.Array, resid: jax.Array, graph: jax.Array,
                     prior_chol: jax.Array, cov_inv: jax.Array) -> jax.Array:
    """One exact draw of u | θ̂, φ ~ N(H⁻¹ V⁻¹ r, H⁻¹), shape (K, p)."""
    chol_post = jnp.linalg.cholesky(_posterior_precision(graph, prior_chol, cov_inv))
    scaled = jnp.einsum("kij,kj->ki", cov_inv, resid).reshape(-1)
    mean = jax.scipy.linalg.cho_solve((chol_post, True), scaled)
    noise = jax.scipy.linalg.solve_triangular(
        chol_post.T, jax.random.normal(key, scaled.shape), lower=False)
    return (mean + noise).reshape(resid.shape)


def conditional_blocks(resid: jax.Array, graph: jax.Array, prior_chol: jax.Array,
                       cov_inv: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-task leave-one-out log densities and pooling weights.

    ``loo[k] = log p(θ̂ₖ | θ̂₋ₖ, φ)``: with Λ = (P⁻¹ + V)⁻¹ = V⁻¹ − V⁻¹H⁻¹V⁻¹ and
    g = Λ r, θ̂ₖ | θ̂₋ₖ has precision Λₖₖ and mean θ̂ₖ − Λₖₖ⁻¹ gₖ. ``pooling[k]`` is
    diag(I − (H⁻¹)ₖₖ Vₖ⁻¹), the weight the fused mean of task k gives to everything but
    its own estimate. Needs the diagonal blocks of H⁻¹ (one triangular inverse).

    Returns
    -------
    loo : array of shape (K,)
    pooling : array of shape (K, p)
    """
    n_tasks, n_params = resid.shape
    chol_post = jnp.linalg.cholesky(_posterior_precision(graph, prior_chol, cov_inv))
    chol_inv = jax.scipy.linalg.solve_triangular(
        chol_post, jnp.eye(n_tasks * n_params), lower=True).reshape(-1, n_tasks, n_params)
    post_blocks = jnp.einsum("mki,mkj->kij", chol_inv, chol_inv)  # (H⁻¹)ₖₖ
    scaled = jnp.einsum("kij,kj->ki", cov_inv, resid)
    post_mean = jax.scipy.linalg.cho_solve((chol_post, True), scaled.reshape(-1))
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
    graph : array of shape (K, K)
        G.
    prior_chol : array of shape (p, p)
        Cholesky factor of T.
    cov, cov_inv, cov_chol : arrays of shape (K, p, p)
        Vₖ, Vₖ⁻¹ and the Cholesky factors of Vₖ.
    """

    support = dist.constraints.independent(dist.constraints.real_vector, 1)

    def __init__(self, mu, graph, prior_chol, cov_inv, cov_chol, *, validate_args=None):
        self.mu, self.graph, self.prior_chol = mu, graph, prior_chol
        self.cov_inv, self.cov_chol = cov_inv, cov_chol
        self.cov_log_det = _log_det_chol(cov_chol).sum()
        super().__init__(batch_shape=(), event_shape=cov_chol.shape[:2],
                         validate_args=validate_args)

    def log_prob(self, value):
        return collapsed_loglik(value - self.mu, self.graph, self.prior_chol, self.cov_inv,
                                self.cov_log_det)

    def sample(self, key, sample_shape=()):
        k_u, k_e = jax.random.split(key)
        u = matrix_normal_draw(k_u, self.graph, self.prior_chol, sample_shape)
        e = jnp.einsum("kij,...kj->...ki", self.cov_chol,
                       jax.random.normal(k_e, sample_shape + self.event_shape))
        return self.mu + u + e


class GraphModel:
    """What ``gmrf`` and ``car`` share: μ, τ (and R), the collapsed or plain likelihood of a
    matrix-normal prior with structure precision G, and the exact per-draw computations.

    A family mixes this in before :class:`~bayesfuse.families.base.Family` and defines
    ``graph_matrix(n_tasks, data, draw)`` -> G of shape (K, K) from the data's edge arrays
    and a draw's graph parameters, and ``graph_data()`` -> its edge arrays.
    """

    def data(self) -> dict[str, np.ndarray]:
        data = super().data()  # type: ignore[misc]
        data["cov_inv"] = np.linalg.inv(data["cov"])
        data.update(self.graph_data())  # type: ignore[attr-defined]
        return data

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

    def _observe(self, mu: jax.Array, graph: jax.Array, site: Any, collapsed: bool,
                 theta_hat: Any, cov_chol: Any, cov_inv: Any) -> None:
        """θ̂ given φ: collapsed (θ integrated out) or plain (θ = μ + L_G⁻ᵀ z L_Tᵀ)."""
        import numpyro

        prior_chol = self._prior_chol(site)
        if collapsed:
            numpyro.sample("theta_hat", GraphGaussian(mu, graph, prior_chol, cov_inv, cov_chol),
                           obs=theta_hat)
            return
        n_tasks, n_params = cov_chol.shape[0], cov_chol.shape[1]
        with numpyro.plate("task", n_tasks):
            z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([n_params]).to_event(1))
        chol_graph = jnp.linalg.cholesky(graph)
        u = jax.scipy.linalg.solve_triangular(chol_graph.T, z, lower=False) @ prior_chol.T
        theta = numpyro.deterministic("theta", mu + u)
        with numpyro.plate("task", n_tasks):
            numpyro.sample("theta_hat", dist.MultivariateNormal(theta, scale_tril=cov_chol),
                           obs=theta_hat)

    def _parts(self, data: Any, draw: Any):
        theta_hat = data["theta_hat"]
        graph = self.graph_matrix(theta_hat.shape[0], data, draw)  # type: ignore[attr-defined]
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
