"""A known task graph: proper conditional autoregression (CAR) on the user's adjacency W.

    θ = 1μᵀ + u,  vec(u) ~ N(0, G⁻¹ ⊗ T),  G = D − ρW,  T = diag(τ) R diag(τ)

D = diag(row sums of W), ρ ∈ (0, 1) (prior ``rho``). For p = 1 this is the textbook proper
CAR, Q = τ⁻²(D − ρW): given its neighbours, task k's effect has mean ρ·(weighted mean of
the neighbours' effects) and variance τ²/d_k. The p parameter columns are replicates on the
same graph; for p > 1 the parameters are correlated through R ~ LKJ (one R for all tasks).

The adjacency (option ``adjacency``, required) is a CSV with columns ``task_a, task_b`` and
an optional positive ``weight``, a list of pairs or triples, an edge DataFrame or a
symmetric K×K matrix. Every task needs at least one neighbour (D − ρW must be positive
definite for every ρ < 1).

Collapsed likelihood θ̂ | φ ~ N(1μᵀ, G⁻¹ ⊗ T + blockdiag Vₖ) in precision form
(:mod:`bayesfuse.families._graph`); θ | φ, θ̂ is drawn exactly. It factors a Kp × Kp
matrix on every gradient: dense, O(K³), up to 80 tasks or when the graph is too dense;
above, in block-tridiagonal form after a bandwidth-reducing task order
(:mod:`bayesfuse.families._blocktri`), O(K w² p³) for a graph of bandwidth w.

The plain form (``collapsed=False``) samples θ itself and never forms a K × K matrix: the
CAR log density is evaluated from the edge list,

    log p(θ | μ, T, ρ) = −½ Kp log 2π + ½ p log|G| − ½ K log|T| − ½ Σₖ dₖ ‖wₖ‖²
                         + ρ Σ_edges (k,l) W_kl wₖᵀ w_l,      wₖ = L_T⁻¹ (θₖ − μ)

with log|G| = Σ log dₖ + Σ log(1 − ρλᵢ) from the eigenvalues λ of D^(−1/2) W D^(−1/2)
(computed once), so a gradient costs O(K + E) (Besag, York & Mollié 1991; the sparse
form of Joseph's Stan case study). θ is centred: the right form when the
tasks' estimates are informative relative to τ, as they are when K is large enough for
this to matter. ``similarity()`` is the posterior correlation of θ.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from bayesfuse.errors import SpecError
from bayesfuse.families import _blocktri, _graph
from bayesfuse.families.base import Family
from bayesfuse.families.registry import register
from bayesfuse.specs.priors import Prior, PriorBlock

__all__ = ["Car"]


@register
class Car(_graph.GraphModel, Family):
    """θ = μ + u with a proper CAR prior on a known task graph."""

    name = "car"
    description = "known task graph: proper conditional autoregression on a user adjacency"
    has_task_graph = True
    option_defaults = {"adjacency": None}

    def setup(self) -> None:
        adjacency = self.options["adjacency"]
        if adjacency is None:
            raise SpecError("car: the option 'adjacency' is required: a CSV with columns "
                            "task_a, task_b[, weight] (CLI: --option adjacency=graph.csv), "
                            "a list of pairs, or a K×K matrix. To learn the graph, use "
                            "model 'gmrf'.")
        tasks = self.estimates.tasks
        index, weight = _graph.parse_edges(adjacency, tasks, "car: 'adjacency'")
        degree = np.bincount(index.ravel(), weights=np.repeat(weight, 2),
                             minlength=len(tasks))
        isolated = [tasks[k] for k in np.flatnonzero(degree == 0)]
        if isolated:
            raise SpecError(f"car: task(s) {isolated[:5]} have no neighbour in the adjacency; "
                            "a CAR prior needs every task joined to another (add edges, drop "
                            "those tasks, or use model 'gmrf').")
        # stored as a JSON-friendly edge list: options go into the saved fit
        self.options["adjacency"] = [[tasks[a], tasks[b], float(w)]
                                     for (a, b), w in zip(index, weight, strict=True)]
        self.edge_index = np.asarray(index, dtype=np.int32)
        self.edge_weight = np.asarray(weight, dtype=float)

    def prior_blocks(self) -> list[PriorBlock]:
        blocks = [
            PriorBlock("mu", "real", tuple(self.params)),
            PriorBlock("tau", "positive", tuple(self.params)),
            PriorBlock("rho", "unit"),
        ]
        if self.n_params > 1:
            blocks.append(PriorBlock("corr", "correlation"))
        return blocks

    def default_priors(self) -> dict[str, str | list[str]]:
        """τ is the conditional scale (an isolated task's effect would have sd τ/√d_k);
        its default is ``halfnormal(2·spread)``, wider than the exchangeable family's
        because the marginal sd of a task effect is about τ/√d_k."""
        return {
            "mu": self.scale.normal(5.0),
            "tau": self.scale.halfnormal(2.0),
            "rho": "uniform(0, 1)",
            "corr": "lkj(2)",
        }

    def hyper_dims(self) -> dict[str, list[str]]:
        dims = {"mu": ["param"], "tau": ["param"], "rho": []}
        if self.n_params > 1:
            dims["corr"] = ["param", "param_b"]
        return dims

    def graph_data(self) -> dict[str, np.ndarray]:
        """Edges, and the eigenvalues λ of D^(−1/2) W D^(−1/2) and log d for log|G|."""
        weights = np.asarray(_graph.dense_from_edges(
            self.edge_index, jnp.asarray(self.edge_weight), self.estimates.n_tasks))
        inv_sqrt_degree = 1.0 / np.sqrt(weights.sum(axis=1))
        normalised = inv_sqrt_degree[:, None] * weights * inv_sqrt_degree[None, :]
        return {"edge_index": self.edge_index, "edge_weight": self.edge_weight,
                "adjacency_eigen": np.linalg.eigvalsh(normalised),
                "log_degree": -2.0 * np.log(inv_sqrt_degree),
                **self.block_layout(self.edge_index)}

    # ------------------------------------------------------------------ model
    @staticmethod
    def graph_matrix(n_tasks: int, data: Mapping[str, Any],
                     draw: Mapping[str, Any]) -> jax.Array:
        """G = D − ρW, shape (K, K)."""
        weights = _graph.dense_from_edges(data["edge_index"], data["edge_weight"], n_tasks)
        return jnp.diag(weights.sum(axis=1)) - draw["rho"] * weights

    def graph_parts(self, n_tasks: int, data: Mapping[str, Any],
                    draw: Mapping[str, Any]) -> tuple[jax.Array, jax.Array]:
        """G and log|G| = Σₖ log dₖ + Σᵢ log(1 − ρλᵢ), with λ the eigenvalues of
        D^(−1/2) W D^(−1/2) computed once (G = D^(1/2) (I − ρ D^(−1/2) W D^(−1/2)) D^(1/2)).
        G is in block form when the data carry a block layout (large sparse graphs)."""
        log_det = car_log_det(draw["rho"], data["log_degree"], data["adjacency_eigen"])
        band = self.block_data(data)
        if band is None:
            return self.graph_matrix(n_tasks, data, draw), log_det
        graph = _blocktri.graph_blocks(band, jnp.exp(data["log_degree"]),
                                       draw["rho"] * data["edge_weight"])
        return graph, log_det

    def model(self, priors: Mapping[str, Sequence[Prior]], collapsed: bool,
              theta_hat: Any = None, cov: Any = None, cov_chol: Any = None,
              cov_inv: Any = None, edge_index: Any = None, edge_weight: Any = None,
              adjacency_eigen: Any = None, log_degree: Any = None, **band: Any) -> None:
        n_tasks, n_params = cov.shape[0], cov.shape[1]
        mu, site = self._sample_location_scale(priors, n_params)
        site["rho"] = numpyro.sample("rho", priors["rho"][0].numpyro())
        graph_data = {"edge_index": edge_index, "edge_weight": edge_weight,
                      "adjacency_eigen": adjacency_eigen, "log_degree": log_degree}
        if collapsed:
            graph, graph_log_det = self.graph_parts(n_tasks, {**graph_data, **band}, site)
            self._observe(mu, graph, graph_log_det, site, collapsed, theta_hat, cov_chol,
                          cov_inv)
            return
        theta = numpyro.sample("theta", SparseCar(mu, site["rho"], self._prior_chol(site),
                                                  **graph_data))
        with numpyro.plate("task", n_tasks):
            numpyro.sample("theta_hat", dist.MultivariateNormal(theta, scale_tril=cov_chol),
                           obs=theta_hat)

    # ------------------------------------------------------------------ per draw
    def draw_new_task(self, key, data, draw, covariates):
        """A task outside the graph has no neighbours to borrow from; the CAR prior does not
        define it. Refused with a clear error by :meth:`new_task_covariates`."""
        return draw["mu"] + jnp.nan * jax.random.normal(key, draw["mu"].shape)

    def new_task_covariates(self, covariates: Any) -> None:
        raise SpecError("car: a new task is not on the known graph, so the CAR prior says "
                        "nothing about it; use model 'exchangeable' or 'gmrf' to predict "
                        "unseen tasks.")


def car_log_det(rho: jax.Array, log_degree: jax.Array, adjacency_eigen: jax.Array) -> jax.Array:
    """log|D − ρW| = Σₖ log dₖ + Σᵢ log(1 − ρλᵢ), λ the eigenvalues of D^(−1/2) W D^(−1/2)."""
    return jnp.sum(log_degree) + jnp.sum(jnp.log1p(-rho * adjacency_eigen))


class SparseCar(dist.Distribution):
    """vec(θ − 1μᵀ) ~ N(0, G⁻¹ ⊗ T) with G = D − ρW, from the edge list: event (K, p).

    ``log_prob`` costs O(K p² + E p) (see the module docstring); ``sample`` factors G
    densely (prior draws only, never inside NUTS).

    Parameters
    ----------
    mu : (p,) array
    rho : scalar
    prior_chol : (p, p) array, Cholesky factor of T
    edge_index : (E, 2) int array
    edge_weight : (E,) array
    adjacency_eigen : (K,) array, eigenvalues of D^(−1/2) W D^(−1/2)
    log_degree : (K,) array, log dₖ
    """

    support = dist.constraints.real_matrix

    def __init__(self, mu, rho, prior_chol, edge_index, edge_weight, adjacency_eigen,
                 log_degree, *, validate_args=None):
        self.mu, self.rho, self.prior_chol = mu, rho, prior_chol
        self.edge_index, self.edge_weight = edge_index, edge_weight
        self.adjacency_eigen, self.log_degree = adjacency_eigen, log_degree
        super().__init__(batch_shape=(), event_shape=(log_degree.shape[0], mu.shape[-1]),
                         validate_args=validate_args)

    def log_prob(self, value):
        n_tasks, n_params = self.event_shape
        whitened = jax.scipy.linalg.solve_triangular(
            self.prior_chol, (value - self.mu).T, lower=True).T  # wₖ = L_T⁻¹(θₖ − μ), (K, p)
        first, second = self.edge_index[:, 0], self.edge_index[:, 1]
        # wᵀ G w summed over the p columns = Σ dₖ‖wₖ‖² − 2ρ Σ_edges W_kl wₖ·w_l
        quad = (jnp.sum(jnp.exp(self.log_degree) * jnp.sum(whitened**2, axis=-1))
                - 2 * self.rho * jnp.sum(self.edge_weight
                                         * jnp.sum(whitened[first] * whitened[second], -1)))
        graph_log_det = car_log_det(self.rho, self.log_degree, self.adjacency_eigen)
        prior_log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(self.prior_chol)))
        return 0.5 * (n_params * graph_log_det - n_tasks * prior_log_det - quad
                      - n_tasks * n_params * jnp.log(2 * jnp.pi))

    def sample(self, key, sample_shape=()):
        n_tasks, _ = self.event_shape
        weights = _graph.dense_from_edges(self.edge_index, self.edge_weight, n_tasks)
        graph = jnp.diag(weights.sum(axis=1)) - self.rho * weights
        chol_graph = jnp.linalg.cholesky(graph)
        z = jax.random.normal(key, sample_shape + self.event_shape)
        u = jax.scipy.linalg.solve_triangular(chol_graph.T, z, lower=False)
        return self.mu + u @ self.prior_chol.T
