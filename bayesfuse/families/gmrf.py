"""A learned task graph: θ = 1μᵀ + u, u ~ MN(0, G⁻¹, T), G a generalized graph Laplacian.

    L = diag(v) + D_W − W            # D_W = diag(row sums of W)
    G = s L,  s = (Πₖ (L⁻¹)ₖₖ)^(1/K)  # marginal variances diag(G⁻¹) of geometric mean 1
    vec(u) ~ N(0, G⁻¹ ⊗ T),  T = diag(τ) R diag(τ)

The edge weights w_kl ≥ 0 of W are unknown, with a global–local shrinkage prior so that
most edges shrink towards zero and a few are large:

    w_e = c g λ_e / √(c² + g² λ_e²),  λ_e ~ halfcauchy(1),  g ~ ``edge_scale`` prior

— half-Cauchy(g) weights (the positive half of the horseshoe's heavy-tailed local scale,
one parameter per edge) regularised by a slab c = ``slab_scale`` that bounds every weight,
as in the regularized horseshoe of Piironen & Vehtari (2017). NUTS sees log λ and log g, in
which the prior is smooth and the weight is a shift, not a funnel. (A full horseshoe,
w_e = g λ_e |z_e|, doubles the parameters and saturated NUTS's tree depth in our tests.)

The p parameter columns of u are replicates on the same graph, which is what makes the
graph learnable. The node precisions v are 1 (``node_precision="shared"``; a graph with no
edges is then exactly the ``exchangeable`` family) or sampled per task (``"per_task"``).
The scale s (Sørbye & Rue 2014) makes τ the typical marginal sd of a task effect whatever
the edges: without it, stronger edges shrink every marginal variance and τ must grow to
compensate, a ridge in (τ, w) that NUTS crossed slowly (bulk ESS 28 of 300 draws on a
12-task graph). The partial correlation of tasks k and l, for every parameter, is
w_kl / √(L_kk L_ll). This is a Bayesian counterpart of learned-precision multitask learning
(Wan & Vlaski).

Candidate edges (option ``edges``): ``"all"`` pairs; ``"knn"``: each task and its
``neighbors`` nearest tasks by standardised task covariates (by the standardised stage-1
estimates when the tasks have no covariates); or a user edge list (CSV path with
``task_a, task_b``, list of pairs, DataFrame, K×K 0/1 matrix). ``"auto"`` (default) is
``"all"`` up to 40 tasks and ``"knn"`` above, so that large K stays tractable.

Collapsed likelihood θ̂ | φ ~ N(1μᵀ, G⁻¹ ⊗ T + blockdiag Vₖ) evaluated in precision form
(:mod:`bayesfuse.families._graph`); θ | φ, θ̂ is drawn exactly. Above 80 tasks with a
sparse candidate set (``knn`` or a given list) the factors of L and of the posterior
precision are block tridiagonal after a bandwidth-reducing task order, and the likelihood
and its gradient take O(K w² p³) instead of O(K³ p³) for bandwidth w
(:mod:`bayesfuse.families._blocktri`; measurements: benchmarks/results/design_measurements.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd

from bayesfuse.errors import SpecError
from bayesfuse.families import _blocktri, _graph
from bayesfuse.families.base import Family
from bayesfuse.families.registry import register
from bayesfuse.specs.priors import Prior, PriorBlock, format_number

__all__ = ["Gmrf"]

EDGE_MODES = ("auto", "all", "knn")
NODE_PRECISION = ("shared", "per_task")
#: "auto" uses all pairs up to this many tasks, k-nearest candidates above
AUTO_ALL_MAX_TASKS = 40
#: refuse candidate sets larger than this (each edge is two sampled parameters)
MAX_EDGES = 20_000


@register
class Gmrf(_graph.GraphModel, Family):
    """θ = μ + u with u ~ N(0, G⁻¹ ⊗ T) and a sparse learned graph G."""

    name = "gmrf"
    description = "learned task graph: Gaussian Markov random field with sparse edge weights"
    option_defaults = {"edges": "auto", "neighbors": 5, "node_precision": "shared",
                       "slab_scale": 10.0, "edge_threshold": 0.1}
    similarity_kind = "posterior mean edge weight w_kl of the learned task graph"
    has_task_graph = True

    def setup(self) -> None:
        opts = self.options
        neighbors = opts["neighbors"]
        if not isinstance(neighbors, int) or isinstance(neighbors, bool) or neighbors < 1:
            raise SpecError(f"gmrf: 'neighbors' must be an integer >= 1; got {neighbors!r}.")
        if opts["node_precision"] not in NODE_PRECISION:
            raise SpecError(f"gmrf: 'node_precision' must be one of "
                            f"{', '.join(NODE_PRECISION)}; got {opts['node_precision']!r}.")
        for key in ("slab_scale", "edge_threshold"):
            value = opts[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise SpecError(f"gmrf: '{key}' must be a number > 0; got {value!r}.")
        n_tasks = self.estimates.n_tasks
        edges = opts["edges"]
        if isinstance(edges, str) and edges in EDGE_MODES:
            mode = edges
            if mode == "auto":
                mode = "all" if n_tasks <= AUTO_ALL_MAX_TASKS else "knn"
            if mode == "all":
                index = _graph.all_edges(n_tasks)
            else:
                index = _graph.knn_edges(self._knn_points(), neighbors)
            self.edge_source = mode
        else:
            index, weight = _graph.parse_edges(edges, self.estimates.tasks, "gmrf: 'edges'",
                                               weighted=False)
            # store the list, not the object: options go into the saved fit as JSON
            tasks = self.estimates.tasks
            self.options["edges"] = [[tasks[a], tasks[b]] for a, b in index]
            self.edge_source = "given"
        if len(index) > MAX_EDGES:
            raise SpecError(f"gmrf: {len(index)} candidate edges is too many (max {MAX_EDGES}); "
                            "use edges='knn' with a small 'neighbors', or give an edge list.")
        self.edge_index = np.asarray(index, dtype=np.int32)

    def _knn_points(self) -> np.ndarray:
        covariates = self.estimates.covariates
        if covariates is not None:
            points = covariates.to_numpy(float)
        else:
            points = self.estimates.estimates
        sd = points.std(axis=0)
        return (points - points.mean(axis=0)) / np.where(sd > 0, sd, 1.0)

    @property
    def n_edges(self) -> int:
        return int(self.edge_index.shape[0])

    @property
    def edge_names(self) -> list[str]:
        tasks = self.estimates.tasks
        return [f"{tasks[a]}~{tasks[b]}" for a, b in self.edge_index]

    # ------------------------------------------------------------------ priors
    def prior_blocks(self) -> list[PriorBlock]:
        blocks = [
            PriorBlock("mu", "real", tuple(self.params)),
            PriorBlock("tau", "positive", tuple(self.params)),
            PriorBlock("edge_scale", "positive"),
        ]
        if self.n_params > 1:
            blocks.append(PriorBlock("corr", "correlation"))
        if self.options["node_precision"] == "per_task":
            blocks.append(PriorBlock("node_precision", "positive"))
        return blocks

    def default_priors(self) -> dict[str, str | list[str]]:
        """``edge_scale ~ halfcauchy(s)``, s = K / (E − K): the horseshoe's global scale
        for about K true edges (average degree 2) among E candidates (Piironen & Vehtari
        2017, with p₀ = K). τ, the typical marginal sd of a task effect, gets the
        exchangeable family's ``halfnormal(spread)``."""
        n_tasks, n_edges = self.estimates.n_tasks, self.n_edges
        guess = n_tasks / max(n_edges - n_tasks, 1)
        scale = float(f"{min(1.0, guess):.2g}")
        return {
            "mu": self.scale.normal(5.0),
            "tau": self.scale.halfnormal(1.0),
            "edge_scale": f"halfcauchy({format_number(scale)})",
            "corr": "lkj(2)",
            "node_precision": "gamma(4, 4)",
        }

    # ------------------------------------------------------------------ names
    def hyper_dims(self) -> dict[str, list[str]]:
        dims = {"mu": ["param"], "tau": ["param"], "edge_scale": [], "edge_weight": ["edge"]}
        if self.n_params > 1:
            dims["corr"] = ["param", "param_b"]
        if self.options["node_precision"] == "per_task":
            dims["node_precision"] = ["task"]
        return dims

    def hyper_coords(self) -> dict[str, list[str]]:
        return {"edge": self.edge_names}

    def summary_variables(self) -> list[str]:
        names = ["mu", "tau", "edge_scale"]
        if self.n_params > 1:
            names.append("corr")
        return names

    def checked_variables(self) -> list[str]:
        names = ["mu", "tau"]
        if self.n_params > 1:
            names.append("corr")
        return names

    def graph_data(self) -> dict[str, np.ndarray]:
        return {"edge_index": self.edge_index, **self.block_layout(self.edge_index)}

    # ------------------------------------------------------------------ model
    def _laplacian(self, n_tasks: int, data: Mapping[str, Any],
                   draw: Mapping[str, Any]) -> jax.Array:
        """diag(v) + D_W − W, shape (K, K)."""
        weights = _graph.dense_from_edges(data["edge_index"], draw["edge_weight"], n_tasks)
        node = draw["node_precision"] if "node_precision" in draw else jnp.ones(n_tasks)
        return jnp.diag(node + weights.sum(axis=1)) - weights

    def graph_matrix(self, n_tasks: int, data: Mapping[str, Any],
                     draw: Mapping[str, Any]) -> jax.Array:
        """G = s·(diag(v) + D_W − W), shape (K, K); s scales the task effects' marginal
        variances diag(G⁻¹) to geometric mean 1, so that τ stays their typical sd."""
        laplacian = self._laplacian(n_tasks, data, draw)
        return laplacian * _graph.mean_marginal_variance(laplacian)

    def graph_parts(self, n_tasks: int, data: Mapping[str, Any],
                    draw: Mapping[str, Any]) -> tuple[Any, jax.Array]:
        """G and log|G| = K log s + log|L| from one factor of L; G in block form when the
        data carry a block layout (large sparse graphs), dense otherwise."""
        laplacian, log_scale, log_det = self._scaled_parts(n_tasks, data, draw)
        scale = jnp.exp(log_scale)
        graph = _blocktri.scaled(laplacian, scale) \
            if isinstance(laplacian, _blocktri.BlockGraph) else laplacian * scale
        return graph, n_tasks * log_scale + log_det

    def _log_scale(self, n_tasks: int, data: Mapping[str, Any],
                   draw: Mapping[str, Any]) -> jax.Array:
        """log s, s the geometric mean of diag(L⁻¹)."""
        return self._scaled_parts(n_tasks, data, draw)[1]

    def _scaled_parts(self, n_tasks: int, data: Mapping[str, Any],
                      draw: Mapping[str, Any]) -> tuple[Any, jax.Array, jax.Array]:
        """L (dense, or in block form), log s and log|L|."""
        band = self.block_data(data)
        if band is None:
            laplacian = self._laplacian(n_tasks, data, draw)
            log_scale, log_det = _graph.scale_and_log_det(laplacian)
            return laplacian, log_scale, log_det
        weights, index = draw["edge_weight"], data["edge_index"]
        node = draw["node_precision"] if "node_precision" in draw else jnp.ones(n_tasks)
        degree = jnp.zeros(n_tasks, weights.dtype).at[index[:, 0]].add(weights) \
            .at[index[:, 1]].add(weights)
        laplacian = _blocktri.graph_blocks(band, node + degree, weights)
        real = (band["band_slot_task"] < n_tasks) / n_tasks  # mean over tasks, not padding
        log_det, log_scale = _blocktri.log_det_and_log_inverse_diagonal(
            laplacian.diag, laplacian.lower, real)
        return laplacian, log_scale, log_det

    def model(self, priors: Mapping[str, Sequence[Prior]], collapsed: bool,
              theta_hat: Any = None, cov: Any = None, cov_chol: Any = None,
              cov_inv: Any = None, edge_index: Any = None, **band: Any) -> None:
        n_tasks, n_params = cov.shape[0], cov.shape[1]
        mu, site = self._sample_location_scale(priors, n_params)
        global_scale = numpyro.sample("edge_scale", priors["edge_scale"][0].numpyro())
        with numpyro.plate("edge", edge_index.shape[0]):
            local = numpyro.sample("edge_local", dist.HalfCauchy(1.0))
        slab = float(self.options["slab_scale"])
        # w = c g λ / √(c² + g² λ²): half-Cauchy(g) near zero, bounded by the slab c
        site["edge_weight"] = numpyro.deterministic(
            "edge_weight", slab * global_scale * local
            / jnp.sqrt(slab**2 + global_scale**2 * local**2))
        if self.options["node_precision"] == "per_task":
            with numpyro.plate("task", n_tasks):
                site["node_precision"] = numpyro.sample(
                    "node_precision", priors["node_precision"][0].numpyro())
        graph, graph_log_det = self.graph_parts(n_tasks, {"edge_index": edge_index, **band},
                                                site)
        self._observe(mu, graph, graph_log_det, site, collapsed, theta_hat, cov_chol, cov_inv)

    # ------------------------------------------------------------------ per draw
    def draw_new_task(self, key, data, draw, covariates):
        """A task joined to no other: θ ~ N(μ, T / (s v)), v = 1 (or from its prior), s the
        fitted graph's scale (see :meth:`graph_matrix`)."""
        k_node, k_z = jax.random.split(key)
        scale = jnp.exp(self._log_scale(data["theta_hat"].shape[0], data, draw))
        chol = self._prior_chol(draw) / jnp.sqrt(scale)
        if self.options["node_precision"] == "per_task":
            chol = chol / jnp.sqrt(self.priors["node_precision"][0].numpyro().sample(k_node))
        return draw["mu"] + chol @ jax.random.normal(k_z, draw["mu"].shape)

    # ------------------------------------------------------------------ outputs
    def _edge_draws(self, result: Any) -> np.ndarray:
        """Edge weight draws, shape (S, E)."""
        post = result.idata.posterior["edge_weight"]
        return post.transpose("chain", "draw", "edge").values.reshape(-1, self.n_edges)

    def similarity(self, result: Any) -> np.ndarray:
        """Posterior mean edge weight matrix E[W | data], shape (K, K), zero diagonal."""
        mean = self._edge_draws(result).mean(axis=0)
        return np.asarray(_graph.dense_from_edges(jnp.asarray(self.edge_index),
                                                  jnp.asarray(mean), len(result.tasks)))

    def structure(self, result: Any) -> dict[str, pd.DataFrame]:
        """The learned edges, strongest first.

        Returns
        -------
        dict
            ``"edges"``: one row per candidate edge with ``task_a, task_b``,
            ``weight_mean, weight_sd`` (w_kl), ``partial_corr_mean`` (w_kl / √(L_kk L_ll),
            the partial correlation of the two tasks' effects for every parameter) and
            ``inclusion`` = P(partial correlation > ``edge_threshold`` | data).
        """
        weights = self._edge_draws(result)  # (S, E)
        n_tasks = len(result.tasks)
        incidence = np.zeros((self.n_edges, n_tasks))
        rows = np.arange(self.n_edges)
        incidence[rows, self.edge_index[:, 0]] = 1.0
        incidence[rows, self.edge_index[:, 1]] = 1.0
        node = np.ones((weights.shape[0], n_tasks))
        if "node_precision" in result.idata.posterior:
            node = result.idata.posterior["node_precision"].transpose(
                "chain", "draw", "task").values.reshape(-1, n_tasks)
        diag = node + weights @ incidence  # L_kk per draw (partial correlations ignore s)
        partial = weights / np.sqrt(diag[:, self.edge_index[:, 0]]
                                    * diag[:, self.edge_index[:, 1]])
        tasks = np.asarray(result.tasks)
        table = pd.DataFrame({
            "task_a": tasks[self.edge_index[:, 0]],
            "task_b": tasks[self.edge_index[:, 1]],
            "weight_mean": weights.mean(axis=0),
            "weight_sd": weights.std(axis=0, ddof=1),
            "partial_corr_mean": partial.mean(axis=0),
            "inclusion": (partial > self.options["edge_threshold"]).mean(axis=0),
        })
        table = table.sort_values("weight_mean", ascending=False, kind="stable")
        table.attrs["edge_source"] = self.edge_source
        return {"edges": table.reset_index(drop=True)}
