"""Tasks in latent clusters: θₖ ~ Σ_c π_c N(μ_c, T_c), an overfitted mixture of normals.

The number of components C (option ``max_clusters``, default 10) is deliberately larger than
the number of clusters one expects; the prior on the weights π empties the components the
data do not need, so the number of *occupied* clusters is learned (Malsiner-Walli,
Frühwirth-Schnatter & Grün 2016, "Model-based clustering based on sparse finite Gaussian
mixtures"; Rousseau & Mengersen 2011).

Weights (option ``weights``)

* ``"dirichlet"`` (default): π ~ Dirichlet(α/C, …, α/C), a sparse symmetric Dirichlet. With
  ``concentration`` α ~ gamma(2, 2) the per-component parameter e₀ = α/C is about 0.1 for
  C = 10 (Malsiner-Walli et al. use e₀ ~ G(10, 10·C), i.e. α ~ G(10, 10)); e₀ < 1 is what
  drains superfluous components. As C grows this prior tends to a Dirichlet process with
  concentration α, so α means the same thing under both options.
* ``"dp"``: truncated stick-breaking Dirichlet process, v_c ~ Beta(1, α) for c < C,
  π_c = v_c Π_{j<c} (1 − v_j), π_C = Π_{j<C} (1 − v_j).

How NUTS sees the weights (option ``weight_order``; the prior is the same either way):

* ``"exchangeable"``: the Dirichlet as normalised gamma variables in a *non-centred* log
  form, so that NUTS sees no funnel between α and the weights of empty components (whose
  log-weight spreads like C/α): Gamma(a) = Gamma(a + 1)·U^{1/a}, so log g_c = log h_c −
  w_c/a with h_c ~ Gamma(1 + a), w_c ~ Exp(1), a = α/C, and log π = log g − logsumexp(log g).
* ``"size-biased"``: the same weights in size-biased random order, as sticks v_c ~
  Beta(1 + e₀, (C − c)e₀) (Pitman 1996), each sampled as η_c = log(−log(1 − v_c))
  (:class:`CloglogBeta`), which is centred for the sticks the data pin and only *shifted*
  by α for the empty ones. Components keep their roles (the first sticks hold the large
  clusters), so the step size fits both kinds; far fewer leapfrog steps once the clusters
  are well determined, slower moves between merged and split partitions with few tasks.
  Each *ordering* of the components is then its own posterior mode (NUTS cannot carry a
  cluster's weight and parameters past another's). Three things make the orderings
  harmless:

  - *The order law.* In size-biased order an ordering has prior mass
    Π_c π_c / (π_c + … + π_C); the model multiplies it by a factor ``order_law`` that
    turns it into the Plackett–Luce law Π_c π_c^β / (π_c^β + … + π_C^β), β =
    :data:`ORDER_SHARPNESS`. Any law over orderings that sums to one for every set of
    weights leaves the mixture's prior, and so every label-invariant posterior quantity,
    unchanged; β > 1 keeps a small component behind the large ones, where NUTS's adapted
    step size fits it (β = 1 gave 115–209 divergences per 4,000 draws at K = 60, β = 10
    0–2).
  - *Warmup* sorts each chain's components by decreasing weight once, before its last
    mass-matrix window (:meth:`Cluster.warmup_relabel`); no chain starts sampling with an
    empty component stuck in front (which biased α upwards).
  - *Sampling*: after every NUTS transition the components are put in a random order drawn
    from the order law given the current weights (:meth:`Cluster.relabel_move`, an exact
    Gibbs step), so each chain visits the orderings in their posterior proportions. A chain
    kept in one ordering samples the posterior tilted by that ordering's mass: measured
    2026-12-02 at K = 60 in three groups of 20, P(4+ clusters) 0.281 against 0.349 with the
    exchangeable weights; with the moves 0.33–0.37 over four seeds.
* ``"auto"`` (default): size-biased from :data:`SIZE_BIASED_MIN_TASKS` tasks on.

The DP's sticks are always sampled as :class:`CloglogBeta` variables.

Component covariances T_c = diag(τ_c) R diag(τ_c): per-cluster scales τ_c (one τ shared by
all clusters with ``shared_scale=True``) and, for p > 1, **one correlation matrix R ~ LKJ
shared by all clusters**. Clusters are meant to be tight, so a per-cluster correlation would
be barely identified (it would mostly echo its prior), while a shared R is label invariant
and can be checked and reported.

Collapsed likelihood: θ and the labels are integrated out,

    θ̂ₖ | φ ~ Σ_c π_c N(μ_c, T_c + Vₖ)                  # independent over tasks

so NUTS samples only continuous hyperparameters φ = (α, weights, μ, τ, R). Per posterior draw
the membership probabilities r_kc ∝ π_c N(θ̂ₖ; μ_c, T_c + Vₖ) are exact; a label
zₖ ~ Cat(rₖ) and θₖ | zₖ, θ̂ₖ (Gaussian) are drawn exactly. The plain form samples θₖ with
the mixture prior and observes θ̂ₖ ~ N(θₖ, Vₖ).

Default priors (data scaled, overridable by name): μ_c ~ normal(m, R) with m the midpoint
and R the range of the estimates (Richardson & Green 1997; a wider prior on component
locations penalises every extra cluster, a narrower one invents clusters); τ_c ~
halfnormal(0.5·spread): a cluster is a group of tasks that are similar *relative to* the
spread of the estimates, which keeps one wide component from swallowing separated groups.

Label switching: the components are exchangeable (no ordering constraint), so μ_c, τ_c and
π_c are label dependent. They are saved (``predict_new_task`` needs them) but neither
summarised nor judged by the diagnostics; everything reported — θ, the co-clustering matrix,
the number of occupied clusters, α, a shared τ or R — is invariant to relabelling.
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
from jax.scipy.special import betaln

from bayesfuse.errors import SpecError
from bayesfuse.families._gaussian import gaussian_logpdf, normal_mixture_logpdf
from bayesfuse.families.base import (
    Family,
    block_distribution,
    gaussian_conditional_draw,
    pooling_weight_gaussian,
    register,
)
from bayesfuse.specs.priors import Prior, PriorBlock, format_number

__all__ = ["Cluster", "coclustering", "point_clustering", "binder_loss", "order_log_prob"]

WEIGHT_PRIORS = ("dirichlet", "dp")
WEIGHT_ORDERS = ("auto", "exchangeable", "size-biased")
#: ``weight_order="auto"`` samples the Dirichlet weights as size-biased sticks from this
#: many tasks on (see :meth:`Cluster.size_biased`)
SIZE_BIASED_MIN_TASKS = 50
#: chains whose co-clustering matrices differ by more than this found different clusterings
CHAIN_DISAGREEMENT = 0.2
#: advise a larger ``max_clusters`` when every component is occupied this often
FULL_TRUNCATION_PROB = 0.05
#: sampled partitions scored as candidate point clusterings (evenly thinned)
MAX_CANDIDATES = 500
#: β of the Plackett–Luce law of the components' order with size-biased Dirichlet sticks
#: (see the module docstring). Measured 2026-12-03, 4 × (1000 + 1000), divergences per fit:
#: K = 60 (seeds 6-9) β = 3: 2-19, β = 5: 0-4, β = 10: 0-2; K = 100 (seeds 0-3) β = 5: 0-5,
#: β = 10: 0-1; K = 1,000 (``benchmarks/families.py`` data, seeds 0-3) β = 5: 0-9 with
#: diagnostics passing in 1 of 4, β = 10: none, passing in 3 of 4 (the fourth: R-hat of the
#: number of clusters 1.015). β = 1 gave 115-209 at K = 60.
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


def _log1mexp(x: jax.Array) -> jax.Array:
    """log(1 − exp(−x)) for x > 0, accurate at both ends (Mächler 2012)."""
    return jnp.where(x < jnp.log(2.0), jnp.log(-jnp.expm1(-x)), jnp.log1p(-jnp.exp(-x)))


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
        moves. Measured (2026-11-24, 4 × (1000 + 1000), ``benchmarks/families.py``): the
        sticks cut the leapfrog steps per iteration at K = 500 from 644–919 to 56–59, and
        K = 100/500/1,000 fits pass their diagnostics in 23/55/88 s (exchangeable: 41 s with
        tree-depth hits, 348 s, 782 s with divergences). With few tasks per cluster, where
        the posterior moves between merged and split partitions, the ordered sticks mix
        those moves slowly (K = 24, three groups of 8: R-hat of the number of clusters
        1.015–1.077 over three seeds, exchangeable 1.006), so small K keeps the
        exchangeable form. The order moves in sampling do not change that (2026-12-03, same
        data, seeds 1–6: R-hat 1.008–1.028, bulk ESS 143–308; exchangeable, seeds 1–3:
        R-hat ≤ 1.003, passing).
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
        components in front samples the wrong region (measured on the STAR grades K–3
        estimates, 63 schools, p = 8: the one occupied cluster in position 3 or 2, α means
        0.72 and 0.53 by chain against 0.35 with the cluster first, R-hat 1.036). With the
        relabelling (2026-12-02): α 0.340 against 0.355 by quadrature given one cluster,
        R-hat 1.003, diagnostics pass. Orders of occupied clusters of similar weight are
        visited by :meth:`relabel_move` in sampling; a chain can still sit in a split
        partition, one group covered by two components, which R-hat on the number of
        clusters reports.
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
        weights or a small component competes with the others (measured 2026-12-02, K = 60,
        three groups of 20: P(4+ clusters) 0.281 with sticks against 0.349 with the
        exchangeable weights). :meth:`relabel_move` lets the chain visit the orderings in
        their posterior proportions.
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

    def pymc_model(self, priors: Mapping[str, Sequence[Prior]], collapsed: bool,
                   data: Mapping[str, Any]):
        """The collapsed mixture in PyMC, for ``backend="pymc"``.

        Sites as in :meth:`model`, except that the weights are PyMC's own ``weights ~
        Dirichlet(α/C)`` (simplex transform) or stick-breaking ``sticks ~ Beta(1, α)``
        rather than NumPyro's non-centred gamma/exponential variables: the same prior,
        sampled through a different parameterisation. The likelihood is
        Σₖ log Σ_c π_c N(θ̂ₖ; μ_c, T_c + Vₖ), added as a potential.
        """
        import pymc as pm
        import pytensor.tensor as pt

        from bayesfuse.errors import FitError
        from bayesfuse.inference import pymc as pmb

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
            mu = pmb.block_rv("mu", list(priors["mu"]) * n_comp, (n_comp, n_params))
            if self.options["shared_scale"]:
                tau = pmb.block_rv("tau", priors["tau"], (n_params,))
                tau_c = pt.broadcast_to(tau, (n_comp, n_params))
            else:
                tau_c = pmb.block_rv("tau", list(priors["tau"]) * n_comp, (n_comp, n_params))
            corr_chol = pmb.scale_corr_chol(pt.ones(n_params), priors.get("corr"), n_params)
            log_weights = pt.log(pt.clip(weights, 1e-300, 1.0))
            per_component = []
            for c in range(n_comp):  # builds C terms of the graph, each vectorised over tasks
                chol_c = tau_c[c][:, None] * corr_chol
                cluster_cov = pt.dot(chol_c, chol_c.T)
                mean = pt.broadcast_to(mu[c], theta_hat.shape)
                per_component.append(log_weights[c]
                                     + pmb.mvn_logp(theta_hat, mean, cluster_cov[None] + cov))
            pm.Potential("theta_hat", pt.logsumexp(pt.stack(per_component, axis=1),
                                                   axis=1).sum())
        return model

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
        return coclustering(_membership_draws(result).reshape((-1,) + _shape_kc(result)))

    def structure(self, result: Any) -> dict[str, pd.DataFrame]:
        """The posterior of the number of occupied clusters and a point clustering.

        Returns
        -------
        dict
            ``"n_clusters"``: DataFrame with columns ``n_clusters, probability`` (the
            posterior pmf, from the sampled labels). ``"clustering"``: one row per task with
            ``task, cluster`` (1..m, largest cluster first), ``size``, ``p_with_mates``
            (mean co-clustering probability with its cluster-mates; for a task alone in its
            cluster, the posterior probability that no other task shares its label) and
            ``p_max_outside`` (largest co-clustering probability with a task of another
            cluster). The partition minimises the posterior expected Binder loss among the
            sampled partitions and the average-linkage cuts of 1 − co-clustering; its
            expected loss is in ``attrs["binder_loss"]``.
        """
        post = result.idata.posterior
        counts = post["n_clusters"].values.reshape(-1)
        values, freq = np.unique(counts, return_counts=True)
        pmf = pd.DataFrame({"n_clusters": values.astype(int), "probability": freq / counts.size})
        labels = post["label"].transpose("chain", "draw", "task").values
        labels = labels.reshape(-1, labels.shape[-1])
        sim = self.similarity(result)
        partition, loss = point_clustering(sim, labels, max_groups=self.n_components)
        table = _clustering_table(result.tasks, partition, sim, labels)
        table.attrs["binder_loss"] = loss
        return {"n_clusters": pmf, "clustering": table}

    def extra_advice(self, result: Any) -> list[str]:
        """Chains that found different clusterings; a truncation that binds."""
        advice = []
        membership = _membership_draws(result)  # (chain, draw, K, C)
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


# ---------------------------------------------------------------------- likelihood
def component_loglik(theta_hat: jax.Array, mu: jax.Array, cluster_cov: jax.Array,
                     cov: jax.Array) -> jax.Array:
    """log N(θ̂ₖ; μ_c, T_c + Vₖ) for all tasks and components.

    Parameters
    ----------
    theta_hat : array of shape (K, p)
    mu : array of shape (C, p)
    cluster_cov : array of shape (C, p, p)
        T_c.
    cov : array of shape (K, p, p)
        Vₖ.

    Returns
    -------
    array of shape (K, C)
    """
    resid = theta_hat[:, None, :] - mu[None]
    return gaussian_logpdf(resid, cluster_cov[None] + cov[:, None])


def stick_log_weights(stick: jax.Array) -> jax.Array:
    """log π from the sticks in cloglog coordinates, shape (..., C − 1) -> (..., C).

    ``stick`` holds η_c = log(−log(1 − v_c)); π_c = v_c Π_{j<c} (1 − v_j) and
    π_C = Π_{j<C} (1 − v_j), all in log space (no weight underflows).
    """
    neg_log_rest = jnp.exp(stick)  # u_c = −log(1 − v_c)
    log_stick = _log1mexp(neg_log_rest)  # log v_c
    log_remaining = -jnp.cumsum(neg_log_rest, axis=-1)  # log Π_{j<=c} (1 − v_j)
    before = jnp.concatenate(
        [jnp.zeros(stick.shape[:-1] + (1,)), log_remaining[..., :-1]], axis=-1)
    return jnp.concatenate([log_stick + before, log_remaining[..., -1:]], axis=-1)


def order_log_prob(log_weights: jax.Array, sharpness: float = 1.0) -> jax.Array:
    """log of the Plackett–Luce probability of the components' order, shape (..., C) -> (...).

    Σ_{c<C} [β log π_c − log Σ_{j≥c} π_j^β], β = ``sharpness``; β = 1 is size-biased order.
    """
    scaled = sharpness * log_weights
    rest = jax.lax.cumlogsumexp(scaled, axis=scaled.ndim - 1, reverse=True)
    term = scaled[..., :-1] - rest[..., :-1]
    return jnp.sum(jnp.where(jnp.isfinite(term), term, 0.0), axis=-1)


def stick_order_log_factor(stick: jax.Array, sharpness: float = 1.0) -> jax.Array:
    """h(η) = log|dη/dπ| − log g_β(π) for sticks in cloglog coordinates, (..., C − 1) -> (...).

    With u_c = e^{η_c} = −log(1 − v_c) and R_c = Π_{j<c} (1 − v_j) the mass left before
    stick c: π_c = v_c R_c, so log|dv/dπ| = −Σ_c log R_c; dη_c/dv_c = 1 / (u_c (1 − v_c)),
    so log|dη/dv| = Σ_c (u_c − η_c); g_β is the Plackett–Luce probability of the order
    (:func:`order_log_prob`, β = ``sharpness``; at β = 1 it is Π_c v_c). Sums over
    c = 1..C − 1.
    """
    neg_log_rest = jnp.exp(stick)  # u_c
    log_left = -(jnp.cumsum(neg_log_rest, axis=-1) - neg_log_rest)  # log R_c
    log_jac = jnp.sum(neg_log_rest - stick - log_left, axis=-1)
    return log_jac - order_log_prob(stick_log_weights(stick), sharpness)


def log_weights_to_stick(log_weights: jax.Array) -> jax.Array:
    """The inverse of :func:`stick_log_weights` in log space: η (..., C − 1) from log π (..., C).

    With R_c = π_c + … + π_C (what is left before stick c), 1 − v_c = R_{c+1} / R_c, so
    u_c = −log(1 − v_c) = log(1 + π_c / R_{c+1}) = softplus(log π_c − log R_{c+1}) and
    η_c = log u_c, accurate for weights far below the smallest double's square root.
    """
    log_rest = jax.lax.cumlogsumexp(log_weights, axis=log_weights.ndim - 1, reverse=True)
    return _log_softplus(log_weights[..., :-1] - log_rest[..., 1:])  # of log π_c − log R_{c+1}


def _log_softplus(x: jax.Array) -> jax.Array:
    """log(log(1 + eˣ)), which is x itself once eˣ is negligible (no underflow to −∞)."""
    return jnp.where(x < -30.0, x, jnp.log(jax.nn.softplus(jnp.maximum(x, -30.0))))


def weights_to_stick(weights: np.ndarray) -> np.ndarray:
    """The inverse of :func:`stick_log_weights`: η of shape (..., C − 1) from π (..., C)."""
    with np.errstate(divide="ignore"):  # a zero weight: log π = −∞, η = −∞ (v = 0)
        log_weights = np.log(np.asarray(weights, dtype=float))
    return np.asarray(log_weights_to_stick(jnp.asarray(log_weights)))


class CloglogBeta(dist.Distribution):
    """η = log(−log(1 − v)) for v ~ Beta(a, b), a ≥ 1: a stick in cloglog coordinates.

    NUTS samples the weights' sticks in these coordinates because they suit both kinds of
    component. A stick the data pin (an occupied cluster) has a fixed η whatever α is (a
    *centred* parameterisation: no ridge between α and the stick), while a stick the data
    ignore has u = −log(1 − v) ≈ Exp(b), so η = log u is log Exp(1) − log b: α only
    *shifts* it (b ∝ α), no funnel, however small the weight. The log density is written in
    u, so v → 1 (1 − v below the smallest double) loses nothing:

        log p(η) = (a − 1) log(1 − e⁻ᵘ) − b u + η − log B(a, b)      # u = e^η

    Parameters
    ----------
    a : array
        First Beta shape, ≥ 1.
    b : array
        Second Beta shape, > 0.
    """

    arg_constraints = {"a": dist.constraints.positive, "b": dist.constraints.positive}
    support = dist.constraints.real
    reparametrized_params = ["a", "b"]

    def __init__(self, a, b, *, validate_args=None):
        batch_shape = jax.lax.broadcast_shapes(jnp.shape(a), jnp.shape(b))
        self.a, self.b = jnp.broadcast_to(a, batch_shape), jnp.broadcast_to(b, batch_shape)
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    def log_prob(self, value):
        neg_log_rest = jnp.exp(value)  # u
        return ((self.a - 1.0) * _log1mexp(neg_log_rest) - self.b * neg_log_rest + value
                - betaln(self.a, self.b))

    def sample(self, key, sample_shape=()):
        # 1 − v = G_b / (G_a + G_b) with log G_b = log G_{b+1} + log U / b (no underflow)
        k_a, k_b, k_u = jax.random.split(key, 3)
        shape = sample_shape + self.batch_shape
        log_a = jnp.log(jax.random.gamma(k_a, self.a, shape))
        log_b = (jnp.log(jax.random.gamma(k_b, self.b + 1.0, shape))
                 + jnp.log(jax.random.uniform(k_u, shape, minval=1e-300)) / self.b)
        return _log_softplus(log_a - log_b)  # u = log(1 + G_a / G_b); η = log u


class CollapsedMixture(dist.Distribution):
    """θ̂ₖ ~ Σ_c π_c N(μ_c, T_c + Vₖ), independently over tasks: batch (K,), event (p,).

    Parameters
    ----------
    log_weights : array of shape (C,)
        log π.
    mu : array of shape (C, p)
    cluster_cov : array of shape (C, p, p)
    cov : array of shape (K, p, p)
    """

    support = dist.constraints.real_vector

    def __init__(self, log_weights, mu, cluster_cov, cov, *, validate_args=None):
        self.log_weights, self.mu, self.cluster_cov, self.cov = log_weights, mu, cluster_cov, cov
        super().__init__(batch_shape=cov.shape[:1], event_shape=mu.shape[1:],
                         validate_args=validate_args)

    def log_prob(self, value):
        if value.ndim == 2 and value.shape[-1] == 1:  # scalar θ: closed-form derivative
            return normal_mixture_logpdf(self.log_weights, self.mu[:, 0],
                                         self.cluster_cov[:, 0, 0], value[:, 0],
                                         self.cov[:, 0, 0])
        log_joint = self.log_weights + component_loglik(value, self.mu, self.cluster_cov,
                                                        self.cov)
        return jax.nn.logsumexp(log_joint, axis=-1)

    def sample(self, key, sample_shape=()):
        k_comp, k_noise = jax.random.split(key)
        shape = sample_shape + self.batch_shape
        comp = jax.random.categorical(k_comp, self.log_weights, shape=shape)
        total = self.cluster_cov[comp] + self.cov  # (..., K, p, p)
        noise = jax.random.normal(k_noise, shape + self.event_shape)
        return self.mu[comp] + jnp.einsum("...ij,...j->...i", jnp.linalg.cholesky(total), noise)


def kmeans_plus_plus(points: np.ndarray, n_centres: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n_centres`` rows chosen by k-means++ seeding (Arthur & Vassilvitskii 2007).

    Each next centre is a row drawn with probability ∝ squared distance to the nearest
    centre so far; once every row is a centre (more centres than distinct rows), the rest
    are drawn uniformly.

    Parameters
    ----------
    points : array of shape (K, p)
    n_centres : int
    rng : numpy Generator

    Returns
    -------
    int array of shape (n_centres,)
    """
    n_rows = points.shape[0]
    picks = [int(rng.integers(n_rows))]
    nearest = np.sum((points - points[picks[0]]) ** 2, axis=1)
    for _ in range(1, n_centres):
        total = nearest.sum()
        if total <= 0:
            picks.append(int(rng.integers(n_rows)))
            continue
        pick = int(rng.choice(n_rows, p=nearest / total))
        picks.append(pick)
        nearest = np.minimum(nearest, np.sum((points - points[pick]) ** 2, axis=1))
    return np.asarray(picks)


# ---------------------------------------------------------------------- partitions
def _membership_draws(result: Any) -> np.ndarray:
    """Membership probabilities of a fit, shape (chain, draw, K, C), float64."""
    membership = result.idata.posterior["membership"]
    return membership.transpose("chain", "draw", "task", "cluster").values.astype(float)


def _shape_kc(result: Any) -> tuple[int, int]:
    post = result.idata.posterior
    return post.sizes["task"], post.sizes["cluster"]


def coclustering(membership: np.ndarray) -> np.ndarray:
    """Rao-Blackwellised co-clustering probabilities from membership draws.

    Given φ the labels are independent across tasks, so P(zᵢ = zⱼ | φ) = Σ_c r_ic r_jc; the
    posterior probability is its mean over draws. Invariant to relabelling the components.

    Parameters
    ----------
    membership : array of shape (S, K, C)
        r_kc per draw.

    Returns
    -------
    array of shape (K, K)
        Symmetric, in [0, 1], ones on the diagonal.
    """
    n_draws, n_tasks, _ = membership.shape
    flat = np.moveaxis(membership, 1, 0).reshape(n_tasks, -1)  # (K, S·C)
    sim = np.clip(flat @ flat.T / n_draws, 0.0, 1.0)
    np.fill_diagonal(sim, 1.0)
    return sim


def canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Relabel each partition 0..m−1 in order of first appearance, shape (N, K).

    Two label vectors describe the same partition exactly when their canonical forms are
    equal.
    """
    labels = np.asarray(labels)
    n_tasks = labels.shape[1]
    values = np.arange(labels.max() + 1)
    hit = labels[:, :, None] == values[None, None]  # (N, K, L)
    first = np.where(hit, np.arange(n_tasks)[None, :, None], n_tasks).min(axis=1)  # (N, L)
    rank = np.argsort(np.argsort(first, axis=1, kind="stable"), axis=1, kind="stable")
    return np.take_along_axis(rank, labels, axis=1)


def binder_loss(partitions: np.ndarray, sim: np.ndarray) -> np.ndarray:
    """Posterior expected Binder loss (equal costs) of partitions, shape (N,).

    E[loss(c)] = Σ_{i<j} |1(cᵢ = cⱼ) − P(zᵢ = zⱼ | data)|.

    Parameters
    ----------
    partitions : int array of shape (N, K)
        Labels 0..m−1 (e.g. from :func:`canonical_labels`).
    sim : array of shape (K, K)
        Co-clustering matrix.
    """
    partitions = np.asarray(partitions)
    n_labels = int(partitions.max()) + 1
    onehot = (partitions[:, :, None] == np.arange(n_labels)).astype(float)  # (N, K, m)
    weight = 1.0 - 2.0 * sim
    np.fill_diagonal(weight, 0.0)
    together = np.einsum("nkc,nkc->n", onehot, np.matmul(weight, onehot))
    upper = np.triu_indices(sim.shape[0], k=1)
    return 0.5 * together + sim[upper].sum()


def point_clustering(sim: np.ndarray, sampled: np.ndarray | None = None,
                     max_groups: int | None = None,
                     max_candidates: int = MAX_CANDIDATES) -> tuple[np.ndarray, float]:
    """A point partition: the minimiser of the expected Binder loss among candidates.

    Candidates are the sampled partitions (thinned to ``max_candidates``, duplicates
    removed) and the cuts of the average-linkage tree of 1 − ``sim`` into 1..``max_groups``
    groups.

    Parameters
    ----------
    sim : array of shape (K, K)
        Co-clustering matrix.
    sampled : int array of shape (S, K), optional
        Sampled labels.
    max_groups : int, optional
        Largest number of groups cut from the tree (default K; a fit passes its number of
        components, the most clusters any draw can occupy).

    Returns
    -------
    labels : int array of shape (K,)
        Cluster 1..m, numbered by decreasing size (ties: first task first).
    loss : float
        Its expected Binder loss.
    """
    from scipy.cluster.hierarchy import cut_tree, linkage
    from scipy.spatial.distance import squareform

    n_tasks = sim.shape[0]
    candidates = [np.zeros((1, n_tasks), dtype=int)]
    if n_tasks > 1:
        distance = squareform(np.clip(1.0 - sim, 0.0, None), checks=False)
        tree = linkage(distance, method="average")
        n_cuts = n_tasks if max_groups is None else min(n_tasks, max_groups)
        candidates.append(cut_tree(tree, n_clusters=np.arange(1, n_cuts + 1)).T)
    if sampled is not None and len(sampled):
        step = max(1, int(np.ceil(len(sampled) / max_candidates)))
        candidates.append(np.asarray(sampled)[::step])
    partitions = np.unique(canonical_labels(np.concatenate(candidates)), axis=0)
    losses = binder_loss(partitions, sim)
    best = int(np.argmin(losses))
    return _number_by_size(partitions[best]), float(losses[best])


def _number_by_size(labels: np.ndarray) -> np.ndarray:
    """Relabel 1..m by decreasing cluster size (ties: the cluster of the earlier task)."""
    labels = canonical_labels(labels[None])[0]
    sizes = np.bincount(labels)
    order = np.lexsort((np.arange(sizes.size), -sizes))  # by size, then first appearance
    new = np.empty_like(order)
    new[order] = np.arange(1, sizes.size + 1)
    return new[labels]


def _clustering_table(tasks: Sequence[str], labels: np.ndarray, sim: np.ndarray,
                      sampled: np.ndarray) -> pd.DataFrame:
    """Per-task point clustering with the probabilities that support it."""
    same = labels[:, None] == labels[None]
    np.fill_diagonal(same, False)
    sizes = np.bincount(labels)[labels]
    with np.errstate(invalid="ignore", divide="ignore"):
        with_mates = np.where(same, sim, 0.0).sum(axis=1) / same.sum(axis=1)
    # a singleton: the posterior probability that no other task shares its label
    n_draws, n_labels = sampled.shape[0], int(sampled.max()) + 1
    offset = sampled + n_labels * np.arange(n_draws)[:, None]
    counts = np.bincount(offset.ravel(), minlength=n_draws * n_labels)
    alone = (counts[offset] == 1).mean(axis=0)  # (K,)
    with_mates = np.where(sizes > 1, with_mates, alone)
    outside = np.where(labels[:, None] != labels[None], sim, 0.0).max(axis=1)
    return pd.DataFrame({
        "task": list(tasks),
        "cluster": labels.astype(int),
        "size": sizes.astype(int),
        "p_with_mates": with_mates,
        "p_max_outside": outside,
    })
