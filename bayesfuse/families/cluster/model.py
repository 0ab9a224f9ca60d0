"""The cluster family: its options, priors, NumPyro and PyMC models and per-draw functions.

:class:`Cluster` is the overfitted mixture θₖ ~ Σ_c π_c N(μ_c, T_c) described in
:mod:`bayesfuse.families.cluster`: the weight parameterisations NUTS samples and the
relabelling moves between orderings of the components, the collapsed likelihood, the exact
per-draw label and θ draws, the starting values, and the similarity, structure and advice
hooks (which summarise the partition with :mod:`.partitions`).
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

from bayesfuse.errors import FitError, SpecError
from bayesfuse.families.base import (
    Family,
    block_distribution,
    gaussian_conditional_draw,
    pooling_weight_gaussian,
)
from bayesfuse.families.cluster.distributions import (
    CloglogBeta,
    CollapsedMixture,
    component_loglik,
    kmeans_plus_plus,
    log_weights_to_stick,
    order_log_prob,
    stick_log_weights,
    stick_order_log_factor,
)
from bayesfuse.families.cluster.partitions import (
    coclustering,
    membership_draws,
    posterior_coclustering,
    summarise_partitions,
)
from bayesfuse.families.registry import register
from bayesfuse.specs.priors import Prior, PriorBlock, format_number

__all__ = ["Cluster"]

WEIGHT_PRIORS = ("dirichlet", "dp")
WEIGHT_ORDERS = ("auto", "exchangeable", "size-biased")
#: ``weight_order="auto"`` samples the Dirichlet weights as size-biased sticks from this
#: many tasks on (see :meth:`Cluster.size_biased`)
SIZE_BIASED_MIN_TASKS = 50
#: chains whose co-clustering matrices differ by more than this found different clusterings
CHAIN_DISAGREEMENT = 0.2
#: advise a larger ``max_clusters`` when every component is occupied this often
FULL_TRUNCATION_PROB = 0.05
#: β of the Plackett–Luce law of the components' order with size-biased Dirichlet sticks
#: (see :mod:`bayesfuse.families.cluster`); of the values tried (1, 3, 5, 10) it gave the
#: fewest divergences (measurements: benchmarks/results/design_measurements.md).
ORDER_SHARPNESS = 10.0


def _round_sig(value: float, digits: int = 2) -> float:
    """``value`` to ``digits`` significant digits (positive scales of default priors)."""
    if value <= 0 or not np.isfinite(value):
        return 1.0
    return float(f"{value:.{digits}g}")


def _round_like(value: float, scale: float) -> float:
    """``value`` rounded to the second significant digit of ``scale``."""
    decimals = int(1 - np.floor(np.log10(scale)))
    return float(round(value, decimals)) + 0.0  # + 0.0 turns -0.0 into 0.0


@register
class Cluster(Family):
    """θₖ ~ Σ_c π_c N(μ_c, T_c), c = 1..``max_clusters``, with a sparse prior on π."""

    name = "cluster"
    description = "tasks in latent clusters: an overfitted (sparse) mixture of normals"
    option_defaults = {"max_clusters": 10, "weights": "dirichlet", "shared_scale": False,
                       "weight_order": "auto"}
    similarity_kind = "co-clustering probability P(z_i = z_j | data)"

    def setup(self) -> None:
        n_max = self.options["max_clusters"]
        if not isinstance(n_max, int) or isinstance(n_max, bool) or n_max < 2:
            raise SpecError(f"cluster: 'max_clusters' must be an integer >= 2; got {n_max!r}.")
        if self.options["weights"] not in WEIGHT_PRIORS:
            raise SpecError(
                f"cluster: 'weights' must be one of {', '.join(WEIGHT_PRIORS)}; "
                f"got {self.options['weights']!r}."
            )
        if self.options["weight_order"] not in WEIGHT_ORDERS:
            raise SpecError(
                f"cluster: 'weight_order' must be one of {', '.join(WEIGHT_ORDERS)}; "
                f"got {self.options['weight_order']!r}."
            )
        if self.options["weights"] == "dp" and self.options["weight_order"] == "exchangeable":
            raise SpecError("cluster: the stick-breaking weights (weights = 'dp') are ordered; "
                            "weight_order = 'exchangeable' applies to weights = 'dirichlet' "
                            "only.")
        if not isinstance(self.options["shared_scale"], bool):
            raise SpecError(
                f"cluster: 'shared_scale' must be true or false; got "
                f"{self.options['shared_scale']!r}."
            )

    @property
    def n_components(self) -> int:
        """C, the number of mixture components (an upper bound on occupied clusters)."""
        return int(self.options["max_clusters"])

    # ------------------------------------------------------------------ priors
    def prior_blocks(self) -> list[PriorBlock]:
        blocks = [
            PriorBlock("mu", "real", tuple(self.params)),
            PriorBlock("tau", "positive", tuple(self.params)),
            PriorBlock("concentration", "positive"),
        ]
        if self.n_params > 1:
            blocks.append(PriorBlock("corr", "correlation"))
        return blocks

    def default_priors(self) -> dict[str, str | list[str]]:
        theta_hat = self.estimates.estimates
        low, high = theta_hat.min(axis=0), theta_hat.max(axis=0)
        width = np.maximum(high - low, 2 * self.scale.spread)
        mu = []
        for centre, scale in zip((low + high) / 2, width, strict=True):
            scale = _round_sig(float(scale))
            mu.append(f"normal({format_number(_round_like(float(centre), scale))}, "
                      f"{format_number(scale)})")
        return {
            "mu": mu,
            "tau": self.scale.halfnormal(0.5),
            "concentration": "gamma(2, 2)",
            "corr": "lkj(2)",
        }

    # ------------------------------------------------------------------ names
    def hyper_dims(self) -> dict[str, list[str]]:
        dims = {
            "mu": ["cluster", "param"],
            "tau": ["param"] if self.options["shared_scale"] else ["cluster", "param"],
            "weights": ["cluster"],
            "concentration": [],
        }
        if self.n_params > 1:
            dims["corr"] = ["param", "param_b"]
        return dims

    def hyper_coords(self) -> dict[str, list[str]]:
        return {"cluster": [str(c) for c in range(1, self.n_components + 1)]}

    def extra_dims(self) -> dict[str, list[str]]:
        return {"membership": ["task", "cluster"], "label": ["task"], "n_clusters": []}

    def summary_variables(self) -> list[str]:
        names = ["concentration", "n_clusters"]
        if self.options["shared_scale"]:
            names.append("tau")
        if self.n_params > 1:
            names.append("corr")
        return names

    def init_values(self, n_chains: int, seed: int) -> dict[str, np.ndarray]:
        """Each chain starts with its components on tasks chosen by k-means++ seeding.

        An overfitted mixture empties surplus components easily but splits a component that
        covers two groups only with difficulty: started with every component at the prior
        median (one merged cluster), NUTS can stay in that local mode. Starting the C
        components on C well-spread tasks (a different draw per chain, so that chains still
        test each other), each tight (τ_c = the median stage-1 SE), lets the sparse weight
        prior drain what the data do not need.

        Returns
        -------
        dict
            ``mu`` of shape (chains, C, p) and ``tau`` of shape (chains, C, p) or
            (chains, p) with ``shared_scale``.
        """
        theta_hat = self.estimates.estimates
        n_tasks, n_params = theta_hat.shape
        se = np.sqrt(np.diagonal(self.estimates.covariances, axis1=1, axis2=2))  # (K, p)
        scaled = theta_hat / np.maximum(theta_hat.std(axis=0), 1e-12)
        rng = np.random.default_rng([seed, 20_241])
        mu = np.empty((n_chains, self.n_components, n_params))
        for chain in range(n_chains):
            picks = kmeans_plus_plus(scaled, self.n_components, rng)
            mu[chain] = theta_hat[picks]
        tau_shape = (n_chains, n_params) if self.options["shared_scale"] else \
            (n_chains, self.n_components, n_params)
        tau = np.broadcast_to(np.median(se, axis=0), tau_shape).copy()
        return {"mu": mu, "tau": tau}

    # ------------------------------------------------------------------ model
    @property
    def size_biased(self) -> bool:
        """Whether NUTS samples the weights as sticks (always for ``"dp"``).

        With ``weight_order="auto"`` the Dirichlet weights are size-biased sticks from
        :data:`SIZE_BIASED_MIN_TASKS` tasks on and exchangeable gamma variables below.
        Both are exact representations of the same mixture prior; they differ in how NUTS
        moves. With many tasks the sticks need far fewer leapfrog steps per iteration and
        large fits pass their diagnostics several times sooner. With few tasks per cluster,
        where the posterior moves between merged and split partitions, the ordered sticks
        mix those moves slowly, so small K keeps the exchangeable form; the order moves in
        sampling do not change that
        (measurements: benchmarks/results/design_measurements.md).
        """
        order = self.options["weight_order"]
        if self.options["weights"] == "dp" or order == "size-biased":
            return True
        return order == "auto" and self.estimates.n_tasks >= SIZE_BIASED_MIN_TASKS

    def stick_shapes(self, concentration: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Beta(a, b_c) laws of the C − 1 sticks v_c, c = 1..C − 1.

        ``"dirichlet"``: the size-biased sticks of Dirichlet(e₀, …, e₀), e₀ = α/C:
        v_c ~ Beta(1 + e₀, (C − c)e₀) (Pitman 1996: the weights in size-biased random
        order; the components' parameters are iid, so the mixture's law is unchanged).
        ``"dp"``: v_c ~ Beta(1, α).

        Returns
        -------
        a : scalar array
        b : array of shape (C − 1,)
        """
        n_comp = self.n_components
        if self.options["weights"] == "dirichlet":
            shape = concentration / n_comp  # e₀
            return 1.0 + shape, shape * jnp.arange(n_comp - 1, 0, -1)
        return jnp.ones(()), jnp.full(n_comp - 1, concentration)

    @property
    def relabels_in_warmup(self) -> bool:  # type: ignore[override]
        """With sticks, warmup puts the components in order of decreasing weight (once).

        Ordered sticks make each ordering of the components its own posterior mode, of mass
        (size-biased sampling) Π_c π_c / (π_c + π_{c+1} + … + π_C): high with the large
        weights first, tiny with an empty component in front of an occupied one. NUTS cannot
        carry a cluster's weight and parameters past another's, so without help a chain
        keeps the order it happened to settle in, and a chain that settled with empty
        components in front samples the wrong region (on the STAR estimates, α too large);
        with the relabelling the diagnostics pass
        (measurements: benchmarks/results/design_measurements.md). Orders of occupied
        clusters of similar weight are visited by :meth:`relabel_move` in sampling; a chain
        can still sit in a split partition, one group covered by two components, which R-hat
        on the number of clusters reports.
        """
        return self.size_biased

    def warmup_relabel(self, z: dict[str, jax.Array]
                       ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
        """The components sorted by decreasing weight: their sticks, μ_c and τ_c."""
        log_weights = stick_log_weights(z["stick"])
        return self._reordered(z, log_weights, jnp.argsort(-log_weights))  # stable sort

    @property
    def relabels_in_sampling(self) -> bool:  # type: ignore[override]
        """With sticks, every sampling transition is followed by a reordering move.

        Sticks make each ordering of the components its own mode, and the warmup
        relabelling leaves a chain in one of them. A chain confined to one ordering samples
        the posterior tilted by that ordering's probability under the order law, and
        label-invariant quantities come out biased where occupied components have similar
        weights or a small component competes with the others
        (measurements: benchmarks/results/design_measurements.md).
        :meth:`relabel_move` lets the chain visit the orderings in their posterior
        proportions.
        """
        return self.size_biased

    def relabel_move(self, key: jax.Array, z: dict[str, jax.Array]
                     ) -> tuple[dict[str, jax.Array], jax.Array]:
        """The components in a random order drawn from the order law of their weights.

        The order is drawn by an exponential race (component c finishes at E_c / π_c^β,
        E_c ~ Exp(1): the first is chosen with probability ∝ π_c^β, and so on among the
        rest), so the proposal's probability is the Plackett–Luce g_β(π') and the reverse
        proposal's g_β(π) (:func:`order_log_prob`). On the simplex a permutation preserves
        volume, so the Metropolis–Hastings log ratio is log p_π(π') − log g_β(π') −
        (log p_π(π) − log g_β(π)), with p_π the model's density of the weights: in the
        sampler's coordinates p_π = exp(−U)·|dη/dπ|, hence ``log_correction`` =
        h(η') − h(η), h = log|dη/dπ| − log g_β (:func:`stick_order_log_factor`). For
        Dirichlet weights p_π ∝ g_β (size-biased sticks times the ``order_law`` factor),
        so every proposal is accepted: an exact Gibbs draw of the order. For the truncated
        DP (β = 1) the ratio is not 1 and the move is a Metropolis–Hastings step.
        """
        log_weights = stick_log_weights(z["stick"])
        sharp = self.order_sharpness
        race = jnp.log(jax.random.exponential(key, log_weights.shape)) - sharp * log_weights
        moved, _ = self._reordered(z, log_weights, jnp.argsort(race))
        return moved, (stick_order_log_factor(moved["stick"], sharp)
                       - stick_order_log_factor(z["stick"], sharp))

    @property
    def order_sharpness(self) -> float:
        """β of the components' order law: :data:`ORDER_SHARPNESS` for Dirichlet weights,
        1 (the stick-breaking order itself) for the truncated DP, whose prior is not
        symmetric in the components."""
        return ORDER_SHARPNESS if self.options["weights"] == "dirichlet" else 1.0

    def _reordered(self, z: dict[str, jax.Array], log_weights: jax.Array, order: jax.Array
                   ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
        """``z`` with its components in ``order``: sticks, μ_c and τ_c; and the site order."""
        per_component = ["mu"] if self.options["shared_scale"] else ["mu", "tau"]
        moved = dict(z, stick=log_weights_to_stick(log_weights[order]))
        moved.update({name: z[name][order] for name in per_component})
        site_order = {name: jnp.arange(z[name].size).reshape(z[name].shape)[order]
                      for name in per_component}
        return moved, site_order

    def _log_weights(self, concentration: jax.Array) -> jax.Array:
        """Sample the weight sites and return log π, shape (C,)."""
        if self.size_biased:
            first, second = self.stick_shapes(concentration)
            stick = numpyro.sample("stick", CloglogBeta(first, second).to_event(1))
            log_weights = stick_log_weights(stick)
            sharp = self.order_sharpness
            if sharp != 1.0:
                numpyro.factor("order_law", order_log_prob(log_weights, sharp)
                               - order_log_prob(log_weights, 1.0))
            return log_weights
        n_comp = self.n_components
        shape = concentration / n_comp  # e₀
        gamma_part = numpyro.sample(
            "weight_gamma", dist.Gamma(jnp.full(n_comp, 1.0 + shape), 1.0).to_event(1))
        exp_part = numpyro.sample(
            "weight_exp", dist.Exponential(jnp.ones(n_comp)).to_event(1))
        log_gamma = jnp.log(gamma_part) - exp_part / shape  # log of Gamma(e₀) variables
        return log_gamma - jax.nn.logsumexp(log_gamma)

    def model(self, priors: Mapping[str, Sequence[Prior]], collapsed: bool,
              theta_hat: Any = None, cov: Any = None, cov_chol: Any = None) -> None:
        n_tasks, n_params = cov.shape[0], cov.shape[1]
        n_comp = self.n_components
        concentration = numpyro.sample("concentration", priors["concentration"][0].numpyro())
        log_weights = self._log_weights(concentration)
        numpyro.deterministic("weights", jnp.exp(log_weights))
        mu = numpyro.sample("mu", block_distribution(priors["mu"]).expand([n_comp]).to_event(1))
        tau_dist = block_distribution(priors["tau"])
        if not self.options["shared_scale"]:
            tau_dist = tau_dist.expand([n_comp]).to_event(1)
        tau = numpyro.sample("tau", tau_dist)
        site = {"tau": tau}
        if n_params > 1:
            eta = priors["corr"][0].args[0]
            corr_chol = numpyro.sample("corr_chol", dist.LKJCholesky(n_params, eta))
            numpyro.deterministic("corr", corr_chol @ corr_chol.T)
            site["corr_chol"] = corr_chol
        cluster_chol = self._cluster_chol(site, n_params)
        if collapsed:
            cluster_cov = cluster_chol @ jnp.swapaxes(cluster_chol, -1, -2)
            with numpyro.plate("task", n_tasks):
                numpyro.sample("theta_hat", CollapsedMixture(log_weights, mu, cluster_cov, cov),
                               obs=theta_hat)
            return
        mixing = dist.Categorical(logits=log_weights)
        with numpyro.plate("task", n_tasks):
            theta = numpyro.sample(
                "theta",
                dist.MixtureSameFamily(mixing, dist.MultivariateNormal(
                    mu, scale_tril=cluster_chol)),
            )
            numpyro.sample("theta_hat", dist.MultivariateNormal(theta, scale_tril=cov_chol),
                           obs=theta_hat)

    def pymc_model(self, blocks: Any, priors: Mapping[str, Sequence[Prior]], collapsed: bool,
                   data: Mapping[str, Any]):
        """The collapsed mixture in PyMC, for ``backend="pymc"``.

        Sites as in :meth:`model`, except that the weights are PyMC's own ``weights ~
        Dirichlet(α/C)`` (simplex transform) or stick-breaking ``sticks ~ Beta(1, α)``
        rather than NumPyro's non-centred gamma/exponential variables: the same prior,
        sampled through a different parameterisation. The likelihood is
        Σₖ log Σ_c π_c N(θ̂ₖ; μ_c, T_c + Vₖ), added as a potential (``blocks.mvn_logp``;
        ``blocks`` are the PyMC building blocks the inference layer hands in, see
        :meth:`Family.pymc_model`).
        """
        import pymc as pm
        import pytensor.tensor as pt

        if not collapsed:
            raise FitError("cluster: the PyMC backend fits the collapsed mixture only; use "
                           "collapsed=True or backend='numpyro'.")
        theta_hat, cov = data["theta_hat"], data["cov"]
        n_params, n_comp = theta_hat.shape[1], self.n_components
        with pm.Model() as model:
            concentration = priors["concentration"][0].pymc("concentration")
            if self.options["weights"] == "dirichlet":
                weights = pm.Dirichlet("weights", a=pt.ones(n_comp) * concentration / n_comp)
            else:
                sticks = pm.Beta("sticks", 1.0, concentration, shape=(n_comp - 1,))
                rest = pt.concatenate([pt.ones(1), pt.cumprod(1 - sticks)])
                weights = pm.Deterministic(
                    "weights", pt.concatenate([sticks, pt.ones(1)]) * rest)
            mu = blocks.block_rv("mu", list(priors["mu"]) * n_comp, (n_comp, n_params))
            if self.options["shared_scale"]:
                tau = blocks.block_rv("tau", priors["tau"], (n_params,))
                tau_c = pt.broadcast_to(tau, (n_comp, n_params))
            else:
                tau_c = blocks.block_rv("tau", list(priors["tau"]) * n_comp, (n_comp, n_params))
            corr_chol = blocks.scale_corr_chol(pt.ones(n_params), priors.get("corr"), n_params)
            log_weights = pt.log(pt.clip(weights, 1e-300, 1.0))
            per_component = []
            for c in range(n_comp):  # builds C terms of the graph, each vectorised over tasks
                chol_c = tau_c[c][:, None] * corr_chol
                cluster_cov = pt.dot(chol_c, chol_c.T)
                mean = pt.broadcast_to(mu[c], theta_hat.shape)
                per_component.append(log_weights[c]
                                     + blocks.mvn_logp(theta_hat, mean, cluster_cov[None] + cov))
            pm.Potential("theta_hat", pt.logsumexp(pt.stack(per_component, axis=1),
                                                   axis=1).sum())
        return model

    def complete_prior_truth(self, truth: dict[str, np.ndarray], rng: np.random.Generator
                             ) -> dict[str, np.ndarray]:
        """Labels zₖ ~ Cat(π) and θₖ | zₖ ~ N(μ_z, T_z) for prior draws of the plain model.

        The plain model sums the labels out, so for simulation-based calibration the labels
        are drawn from the sampled weights (inverse CDF) and θ anew given them (the same
        joint prior); the number of occupied clusters is taken from those labels.

        Returns
        -------
        dict
            ``truth`` with ``theta`` (n, K, p) replaced and ``label`` (n, K) and
            ``n_clusters`` (n,) added.
        """
        truth = dict(truth)
        weights = truth["weights"]  # (n, C)
        n_sims, n_comp = weights.shape
        cum = np.cumsum(weights, axis=1)
        cum[:, -1] = 1.0
        u = rng.uniform(size=(n_sims, self.estimates.n_tasks))
        label = (u[:, :, None] > cum[:, None, :]).sum(axis=-1)  # inverse CDF, (n, K)
        n_params = self.n_params
        tau = np.broadcast_to(truth["tau"].reshape(n_sims, -1, n_params),
                              (n_sims, n_comp, n_params))
        if n_params > 1:
            chol = tau[..., None] * np.linalg.cholesky(truth["corr"])[:, None]
        else:
            chol = tau[..., None]
        rows = np.arange(n_sims)[:, None]
        z = rng.standard_normal((n_sims, self.estimates.n_tasks, n_params))
        truth["theta"] = truth["mu"][rows, label] + np.einsum(
            "nkij,nkj->nki", chol[rows, label], z)
        truth["label"] = label
        occupied = (label[:, :, None] == np.arange(n_comp)).any(axis=1)
        truth["n_clusters"] = occupied.sum(axis=1)
        return truth

    # ------------------------------------------------------------------ per draw
    @property
    def draw_cost(self) -> int:
        # every draw holds K × C membership probabilities (and K × C component densities)
        return self.n_components

    def _cluster_chol(self, draw: Mapping[str, Any], n_params: int) -> jax.Array:
        """Cholesky factors of T_c = diag(τ_c) R diag(τ_c), shape (C, p, p)."""
        tau = jnp.broadcast_to(jnp.asarray(draw["tau"]), (self.n_components, n_params))
        if n_params == 1:
            return tau[:, :, None]
        return tau[:, :, None] * draw["corr_chol"][None]

    def component_loglik(self, data: Mapping[str, Any], draw: Mapping[str, Any]) -> jax.Array:
        """log N(θ̂ₖ; μ_c, T_c + Vₖ) for every task and component, shape (K, C)."""
        theta_hat, cov = data["theta_hat"], data["cov"]
        chol = self._cluster_chol(draw, theta_hat.shape[1])
        return component_loglik(theta_hat, jnp.asarray(draw["mu"]),
                                chol @ jnp.swapaxes(chol, -1, -2), cov)

    def log_joint(self, data: Mapping[str, Any], draw: Mapping[str, Any]) -> jax.Array:
        """log π_c + log N(θ̂ₖ; μ_c, T_c + Vₖ), shape (K, C)."""
        return jnp.log(draw["weights"])[None] + self.component_loglik(data, draw)

    def membership(self, data: Mapping[str, Any], draw: Mapping[str, Any]) -> jax.Array:
        """r_kc = P(zₖ = c | φ, θ̂ₖ), shape (K, C); rows sum to 1."""
        return jax.nn.softmax(self.log_joint(data, draw), axis=-1)

    def draw_theta(self, key, data, draw):
        """θₖ | φ, θ̂ₖ: a label zₖ ~ Cat(rₖ), then the Gaussian conditional given zₖ.

        The labels drawn here are independent of the ``label`` extra (the sampler hands
        ``draw_theta`` and ``extra_draws`` different keys); each is an exact draw from the
        same conditional given φ, and no reported quantity uses them jointly.
        """
        k_label, k_theta = jax.random.split(key)
        theta_hat = data["theta_hat"]
        label = jax.random.categorical(k_label, self.log_joint(data, draw), axis=-1)  # (K,)
        chol = self._cluster_chol(draw, theta_hat.shape[1])
        mean = jnp.asarray(draw["mu"])[label]
        return gaussian_conditional_draw(k_theta, mean, chol[label], theta_hat, data["cov_chol"])

    def pointwise_loglik(self, data, draw):
        return jax.nn.logsumexp(self.log_joint(data, draw), axis=-1)

    def pooling_weight(self, data, draw):
        """Σ_c r_kc diag(Vₖ (T_c + Vₖ)⁻¹), shape (K, p)."""
        theta_hat, cov = data["theta_hat"], data["cov"]
        n_tasks, n_params = theta_hat.shape
        chol = self._cluster_chol(draw, n_params)
        shape = (n_tasks, self.n_components, n_params, n_params)
        prior_cov = jnp.broadcast_to((chol @ jnp.swapaxes(chol, -1, -2))[None], shape)
        weight = pooling_weight_gaussian(prior_cov, jnp.broadcast_to(cov[:, None], shape))
        return jnp.einsum("kc,kcp->kp", self.membership(data, draw), weight)

    def draw_new_task(self, key, data, draw, covariates):
        """A component c ~ Cat(π), then θ ~ N(μ_c, T_c), shape (p,)."""
        k_comp, k_z = jax.random.split(key)
        mu = jnp.asarray(draw["mu"])
        n_params = mu.shape[-1]
        comp = jax.random.categorical(k_comp, jnp.log(draw["weights"]))
        chol = self._cluster_chol(draw, n_params)[comp]
        return mu[comp] + chol @ jax.random.normal(k_z, (n_params,))

    def extra_draws(self, key, data, draw):
        """Memberships r (K, C; float32), one label draw z (K,) and the number of clusters
        it occupies."""
        log_joint = self.log_joint(data, draw)
        label = jax.random.categorical(key, log_joint, axis=-1)
        occupied = jnp.any(label[:, None] == jnp.arange(self.n_components)[None], axis=0)
        return {
            "membership": jax.nn.softmax(log_joint, axis=-1).astype(jnp.float32),
            "label": label.astype(jnp.int32),
            "n_clusters": jnp.sum(occupied).astype(jnp.int32),
        }

    # ------------------------------------------------------------------ outputs
    def similarity(self, result: Any) -> np.ndarray:
        """Co-clustering matrix P(zᵢ = zⱼ | data), Rao-Blackwellised, shape (K, K)."""
        return posterior_coclustering(result.idata.posterior)

    def structure(self, result: Any) -> dict[str, pd.DataFrame]:
        """The posterior of the number of occupied clusters (``"n_clusters"``) and a point
        clustering (``"clustering"``), as :func:`~bayesfuse.families.cluster.partitions.
        summarise_partitions` makes them."""
        return summarise_partitions(result.idata.posterior, result.tasks,
                                    self.similarity(result), self.n_components)

    def extra_advice(self, result: Any) -> list[str]:
        """Chains that found different clusterings; a truncation that binds."""
        advice = []
        membership = membership_draws(result.idata.posterior)  # (chain, draw, K, C)
        n_chains = membership.shape[0]
        if n_chains > 1:
            per_chain = np.stack([coclustering(m) for m in membership])
            diff = np.abs(per_chain[:, None] - per_chain[None]).max(axis=(2, 3))
            a, b = np.unravel_index(np.argmax(diff), diff.shape)
            if diff[a, b] > CHAIN_DISAGREEMENT:
                chains = result.idata.posterior["chain"].values
                advice.append(
                    f"chains found different clusterings (max difference in co-clustering "
                    f"{diff[a, b]:.2f} between chains {chains[min(a, b)]} and "
                    f"{chains[max(a, b)]}): run longer (more warmup and draws), or reduce "
                    "max_clusters"
                )
        n_comp, n_tasks = self.n_components, len(result.tasks)
        if n_comp < n_tasks:
            full = float(np.mean(result.idata.posterior["n_clusters"].values >= n_comp))
            if full > FULL_TRUNCATION_PROB:
                advice.append(
                    f"all {n_comp} components are occupied in {full:.0%} of the draws: the "
                    "number of clusters is limited by max_clusters; raise max_clusters"
                )
        return advice

