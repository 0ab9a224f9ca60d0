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
    step size fits it (β = 1 gave many divergences; see :data:`.model.ORDER_SHARPNESS`).
  - *Warmup* sorts each chain's components by decreasing weight once, before its last
    mass-matrix window (:meth:`Cluster.warmup_relabel`); no chain starts sampling with an
    empty component stuck in front (which biased α upwards).
  - *Sampling*: after every NUTS transition the components are put in a random order drawn
    from the order law given the current weights (:meth:`Cluster.relabel_move`, an exact
    Gibbs step), so each chain visits the orderings in their posterior proportions. A chain
    kept in one ordering would sample the posterior tilted by that ordering's mass.
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

Files: :mod:`.model` (the :class:`Cluster` family), :mod:`.distributions` (the collapsed
mixture, the cloglog sticks, the weight/order transforms, k-means++ seeding) and
:mod:`.partitions` (how the posterior partition is summarised: co-clustering, number of
clusters, point clustering).
"""

from bayesfuse.families.cluster.distributions import (
    CloglogBeta,
    CollapsedMixture,
    component_loglik,
    kmeans_plus_plus,
    log_weights_to_stick,
    order_log_prob,
    stick_log_weights,
    stick_order_log_factor,
    weights_to_stick,
)
from bayesfuse.families.cluster.model import Cluster  # registers "cluster"
from bayesfuse.families.cluster.partitions import (
    binder_loss,
    canonical_labels,
    coclustering,
    point_clustering,
    summarise_partitions,
)

__all__ = [
    "Cluster",
    "CloglogBeta",
    "CollapsedMixture",
    "binder_loss",
    "canonical_labels",
    "coclustering",
    "component_loglik",
    "kmeans_plus_plus",
    "log_weights_to_stick",
    "order_log_prob",
    "point_clustering",
    "stick_log_weights",
    "stick_order_log_factor",
    "summarise_partitions",
    "weights_to_stick",
]
