"""The contract every model family fulfils, and helpers they share.

A family is one module with one :class:`Family` subclass, registered with
:func:`bayesfuse.families.registry.register`. It provides, for the data of a
:class:`~bayesfuse.TaskEstimates`:

* ``prior_blocks`` / ``default_priors``: its hyperparameters and data-scaled defaults;
* ``model``: the NumPyro model, collapsed (θ integrated out) or plain (θ sampled);
* ``draw_theta``: an exact draw of θ | φ, θ̂ for one posterior draw of φ;
* ``pointwise_loglik``: log p(θ̂ₖ | θ̂₋ₖ, φ) per task (the marginal when tasks are
  conditionally independent given φ), used for PSIS-LOO;
* ``draw_new_task``: θ for an unseen task given φ;
* optionally ``population_covariates`` / ``conditional_mean``: families with task
  covariates validate a target population's covariate rows and give E[θ | covariates, φ]
  (``FusionResult.predict_population``);
* ``pooling_weight``: the weight of the prior mean in E[θₖ | φ, θ̂] (shrinkage);
* ``similarity``: its task-similarity output;
* optionally ``pymc_model``: the same model in PyMC, for ``backend="pymc"``, built from the
  building blocks the inference layer hands in (families never import the inference layer).

Per-draw functions take one draw of the sampled sites (no leading draw axis); the sampler
maps them over draws. Nothing in the sampler, result or report code is family-specific.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from bayesfuse.data.estimates import TaskEstimates
from bayesfuse.errors import SpecError
from bayesfuse.families._gaussian import gaussian_logpdf
from bayesfuse.specs.priors import (
    Prior,
    PriorBlock,
    format_number,
    resolve_priors,
)

__all__ = ["Family", "block_distribution", "DataScale"]

def stacked_prior_args(priors: Sequence[Prior]) -> list[jax.Array]:
    """The arguments of element priors stacked into arrays of shape (n_elements,).

    Like :func:`bayesfuse.specs.priors.stacked_args`, with ``jnp.stack``: inside a model the
    arguments may be traced (a sampler passes them as inputs).
    """
    return [jnp.stack([jnp.asarray(p.args[i]) for p in priors])
            for i in range(len(priors[0].args))]


def block_distribution(priors: Sequence[Prior]):
    """A NumPyro distribution with event shape (n,) from one prior per element."""
    return priors[0].numpyro(stacked_prior_args(priors)).to_event(1)


def _round2(value: float) -> float:
    """Round to two significant digits (stated priors read '0.41', not '0.40987')."""
    if value <= 0 or not np.isfinite(value):
        return 1.0
    return float(f"{value:.2g}")


class DataScale:
    """Per-parameter scales of the estimates, for weakly-informative default priors.

    ``spread[j] = max(sd_k θ̂ₖⱼ, median_k seₖⱼ)`` — the size of task-to-task variation
    that the data could show; ``magnitude[j] = max(|mean_k θ̂ₖⱼ|, spread[j])``.
    """

    def __init__(self, est: TaskEstimates) -> None:
        theta_hat = est.estimates
        se = est.se
        sd = theta_hat.std(axis=0, ddof=1) if est.n_tasks > 1 else np.zeros(est.n_params)
        self.spread = np.maximum(sd, np.median(se, axis=0))
        self.magnitude = np.maximum(np.abs(theta_hat.mean(axis=0)), self.spread)

    def normal(self, factor: float) -> list[str]:
        """``normal(0, factor·magnitude)`` per parameter."""
        return [f"normal(0, {format_number(_round2(factor * m))})" for m in self.magnitude]

    def halfnormal(self, factor: float) -> list[str]:
        """``halfnormal(factor·spread)`` per parameter."""
        return [f"halfnormal({format_number(_round2(factor * s))})" for s in self.spread]


class Family(ABC):
    """Base class of the task-similarity priors.

    Parameters
    ----------
    estimates : TaskEstimates
        The stage-1 estimates to fuse.
    options : mapping
        Family options (see ``option_defaults`` of each family).
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    option_defaults: ClassVar[dict[str, Any]] = {}
    collapsible: ClassVar[bool] = True
    #: what ``similarity()`` holds, in words
    similarity_kind: ClassVar[str] = "posterior correlation of θ"
    #: whether the family learns or uses a task graph (the report then draws it with
    #: ``bf.plot.task_graph``)
    has_task_graph: ClassVar[bool] = False
    #: whether the sampler may pad the tasks to a bucketed count K' ≥ K with masked copies
    #: of the first task (their ``theta_hat`` term in the log density is zero), so that one
    #: compiled program serves every K of a bucket. True only for families whose model ties
    #: tasks together through shared hyperparameters alone (per-task likelihood terms,
    #: ``theta_hat`` observed with batch shape (K,)); never for graphs or partitions.
    pads_tasks: ClassVar[bool] = False
    #: the entries of :meth:`data` with one row per task (repeated when padding)
    task_data: ClassVar[tuple[str, ...]] = ("theta_hat", "cov", "cov_chol")

    def __new__(cls, estimates: TaskEstimates | None = None,
                options: Mapping[str, Any] | None = None, *args: Any, **kwargs: Any) -> Any:
        """``Family(estimates, {..., "within_corr": "unknown"})`` builds the family wrapped
        by :class:`bayesfuse.families.within_corr.WithinCorr` (a prior on the correlation
        within tasks, for vector θ with standard errors only); ``"given"`` (the default) is
        the family itself. Every family thus accepts the option, and a stored spec rebuilds
        the same model."""
        within = options.get("within_corr") if isinstance(options, Mapping) else None
        if cls.accepts_within_corr and within is not None:
            from bayesfuse.families.within_corr import WithinCorr, check_within_corr

            if check_within_corr(within) != "given":
                inner = cls(estimates, {k: v for k, v in options.items() if k != "within_corr"})
                return WithinCorr(inner, within)
        return super().__new__(cls)

    #: whether ``Family(estimates, options)`` handles the ``within_corr`` option (see
    #: :meth:`__new__`); false for the wrapper itself
    accepts_within_corr: ClassVar[bool] = True

    def __init__(self, estimates: TaskEstimates, options: Mapping[str, Any] | None = None):
        options = dict(options or {})
        options.pop("within_corr", None)  # "given" (else __new__ built the wrapper)
        unknown = set(options) - set(self.option_defaults)
        if unknown:
            valid = ", ".join(sorted(self.option_defaults)) or "none"
            raise SpecError(
                f"Unknown option(s) {sorted(unknown)} for family '{self.name}'. "
                f"Valid options: {valid}."
            )
        self.options = {**self.option_defaults, **options}
        self.estimates = estimates
        #: resolved priors (block name -> one Prior per element), set by ``bind_priors``
        self.priors: dict[str, list[Prior]] = {}
        self.scale = DataScale(estimates)
        self.setup()

    def bind_priors(self, user: Mapping[str, str] | None) -> dict[str, list[Prior]]:
        """Resolve defaults and user overrides into ``self.priors`` and return them."""
        self.priors = resolve_priors(self.prior_blocks(), self.default_priors(), user)
        return self.priors

    # ------------------------------------------------------------------ to override
    def setup(self) -> None:  # noqa: B027 - optional hook
        """Validate options against the estimates; derive family data."""

    @abstractmethod
    def prior_blocks(self) -> list[PriorBlock]:
        """The hyperparameter blocks that take priors."""

    @abstractmethod
    def default_priors(self) -> dict[str, str | list[str]]:
        """Data-scaled default prior strings per block (one string or one per element)."""

    def data(self) -> dict[str, np.ndarray]:
        """Model inputs (arrays only, so that a compiled model is reused across data)."""
        cov = self.estimates.covariances
        return {
            "theta_hat": self.estimates.estimates,
            "cov": cov,
            "cov_chol": np.linalg.cholesky(cov),
        }

    @abstractmethod
    def model(self, priors: Mapping[str, Sequence[Prior]], collapsed: bool, **data: Any) -> None:
        """The NumPyro model; observes ``theta_hat`` (``None`` for prior predictive)."""

    @abstractmethod
    def hyper_dims(self) -> dict[str, list[str]]:
        """Sampled or deterministic sites reported as hyperparameters, with their dims
        (``"param"``, ``"param_b"``, ``"cluster"``, ``"covariate"``, ...)."""

    def hyper_coords(self) -> dict[str, list[str]]:
        """Coordinates of family-specific dims used in ``hyper_dims``."""
        return {}

    @abstractmethod
    def draw_theta(self, key: jax.Array, data: Mapping[str, Any],
                   draw: Mapping[str, Any]) -> jax.Array:
        """One exact draw of θ | φ, θ̂ of shape (K, p) for one draw ``draw`` of φ."""

    @abstractmethod
    def pointwise_loglik(self, data: Mapping[str, Any], draw: Mapping[str, Any]) -> jax.Array:
        """log p(θ̂ₖ | θ̂₋ₖ, φ) per task, shape (K,)."""

    @abstractmethod
    def draw_new_task(self, key: jax.Array, data: Mapping[str, Any], draw: Mapping[str, Any],
                      covariates: jax.Array | None) -> jax.Array:
        """θ of an unseen task given φ, shape (p,)."""

    def sampling_chol(self, data: Mapping[str, Any], draw: Mapping[str, Any]) -> jax.Array:
        """Cholesky factor of the sampling covariance Vₖ of θ̂ₖ for one draw, shape (K, p, p)
        (default: the given ``data["cov_chol"]``; a model that learns Vₖ rebuilds it)."""
        return data["cov_chol"]

    def pooling_weight(self, data: Mapping[str, Any], draw: Mapping[str, Any]) -> jax.Array:
        """Weight of the prior mean in E[θₖ | φ, θ̂], shape (K, p) (0 = no pooling)."""
        return jnp.zeros_like(data["theta_hat"])

    @property
    def draw_cost(self) -> int:
        """Memory of the per-draw computations per element of θ, relative to a Gaussian
        family's (the sampler sizes its per-draw batches by it; e.g. quadrature nodes)."""
        return 1

    #: the most draws the per-draw map may vectorise at once (None: as memory allows)
    max_draw_batch: ClassVar[int | None] = None

    def extra_draws(self, key: jax.Array, data: Mapping[str, Any],
                    draw: Mapping[str, Any]) -> dict[str, jax.Array]:
        """Further per-draw posterior quantities (e.g. cluster memberships)."""
        return {}

    def extra_dims(self) -> dict[str, list[str]]:
        """Dims of the ``extra_draws`` outputs (without chain/draw)."""
        return {}

    def similarity(self, result: Any) -> np.ndarray:
        """K×K task-similarity matrix from a :class:`~bayesfuse.FusionResult`."""
        return correlation_of_theta(result)

    def summary_variables(self) -> list[str]:
        """Posterior variables listed by ``hyper_summary`` (default: all of
        ``hyper_dims``). Label-dependent quantities (cluster means) may be left out."""
        return list(self.hyper_dims())

    def checked_variables(self) -> list[str]:
        """Posterior variables whose R-hat/ESS enter the diagnostics verdict, besides θ.
        Must be label-invariant (default: ``summary_variables``)."""
        return self.summary_variables()

    def structure(self, result: Any) -> dict[str, Any]:
        """Family-specific similarity outputs as named DataFrames (e.g. the number of
        occupied clusters, a point clustering, the learned edges). Default: none."""
        return {}

    def extra_advice(self, result: Any) -> list[str]:
        """Family-specific diagnostic failures in words (e.g. chains that found different
        clusterings). A non-empty list fails the verdict."""
        return []

    def init_values(self, n_chains: int, seed: int) -> dict[str, np.ndarray] | None:
        """Starting values of some sampled sites, one per chain (default: none).

        Returns a dict of constrained values with a leading chain axis of length
        ``n_chains``; sites left out start at their prior median. Multimodal families
        (mixtures) use it to start each chain from a different data-driven configuration.
        """
        return None

    #: whether :meth:`warmup_relabel` is applied in warmup
    relabels_in_warmup: ClassVar[bool] = False

    def warmup_relabel(self, z: dict[str, jax.Array]
                       ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
        """A relabelling of the unconstrained state, applied once in warmup.

        For families whose posterior has modes that NUTS cannot cross but a relabelling
        maps onto each other (the orderings of stick-breaking weights, which fit the data
        equally well but carry different prior mass), the sampler moves each chain, at
        the end of the warmup window before the last slow one, to the relabelling the
        family prefers (see :class:`bayesfuse.inference.nuts.RelabellingNUTS`). Warmup draws are
        discarded and sampling is plain NUTS; what changes is the mode each chain starts
        sampling in. Used only when :attr:`relabels_in_warmup` is true.

        Returns
        -------
        z_relabelled : dict
            Same structure and shapes as ``z``.
        site_order : dict
            For each site whose coordinates trade places, an integer array of the site's
            shape holding at each position the (within-site, flat) index of the element
            that moved there; the sampler rearranges the adapted mass matrix likewise.
        """
        raise NotImplementedError

    #: whether :meth:`relabel_move` follows every transition in sampling
    relabels_in_sampling: ClassVar[bool] = False

    def relabel_move(self, key: jax.Array, z: dict[str, jax.Array]
                     ) -> tuple[dict[str, jax.Array], jax.Array]:
        """A Metropolis–Hastings proposal that relabels the unconstrained state.

        For families whose relabellings carry different prior mass (the orderings of
        stick-breaking weights), NUTS alone keeps each chain in the relabelling it settled
        in, and label-invariant quantities then come from that mode's share of the posterior
        only. After every transition in sampling the sampler proposes ``z_new`` from this
        method and accepts it with probability min(1, exp(U(z) − U(z_new) + log_correction)),
        U being the potential energy (see :class:`bayesfuse.inference.nuts.RelabellingNUTS`).
        Used only when :attr:`relabels_in_sampling` is true.

        Returns
        -------
        z_new : dict
            Same structure and shapes as ``z``.
        log_correction : scalar array
            The proposal's log density ratio, reverse over forward, plus the log-Jacobian
            of the relabelling in the unconstrained coordinates (zero for a permutation of
            coordinates with a symmetric proposal).
        """
        raise NotImplementedError

    def complete_prior_truth(self, truth: dict[str, np.ndarray], rng: np.random.Generator
                             ) -> dict[str, np.ndarray]:
        """Complete prior draws of the plain model into the truth of a simulation.

        Simulation-based calibration draws φ and θ from the family's plain model (its
        prior predictive). A family whose plain model sums some latent variables out (the
        cluster labels) draws them here from the same joint prior, with θ anew given them,
        and adds the quantities that depend on them. Default: ``truth`` unchanged.

        Parameters
        ----------
        truth : dict of str -> array
            Prior draws of the sampled and deterministic sites and ``theta``, each with a
            leading axis of n simulations.
        rng : numpy Generator
            Source of the further draws.

        Returns
        -------
        dict of str -> array
            ``truth`` with entries replaced or added, same leading axis.
        """
        return truth

    def pymc_model(self, blocks: Any, priors: Mapping[str, Sequence[Prior]],
                   collapsed: bool, data: Mapping[str, Any]) -> Any:
        """The same model in PyMC, for ``backend="pymc"`` (optional hook).

        A family supports the PyMC backend by overriding this method; its site names and
        shapes must match those of :meth:`model` (``mu`` (p,), ``tau`` (p,), ``corr_chol``
        (p, p) ...), so that the per-draw functions read PyMC's draws as NumPyro's.

        Parameters
        ----------
        blocks : module
            The PyMC building blocks, passed in by the inference layer
            (:mod:`bayesfuse.inference.pymc_blocks`: ``block_rv``, ``scale_corr_chol``,
            ``mvn_logp``, ``gaussian_tasks``).
        priors : mapping
            Resolved priors (``self.priors``).
        collapsed : bool
            Integrate θ out (True) or sample it.
        data : mapping
            ``self.data()`` as NumPy arrays: ``theta_hat`` (K, p), ``cov`` (K, p, p), ...

        Returns
        -------
        pymc.Model
        """
        raise NotImplementedError(f"Family '{self.name}' has no PyMC model.")

    def new_task_covariates(self, covariates: Any) -> jax.Array | None:
        """Validate covariates given for a new task (families without covariates: none)."""
        if covariates is not None:
            raise SpecError(f"Family '{self.name}' does not use task covariates; "
                            "call predict_new_task() without covariates.")
        return None

    def population_covariates(self, frame: Any) -> np.ndarray:
        """Validate a target population's task-level covariate rows (transport).

        Families whose tasks' means depend on task covariates override this together with
        :meth:`conditional_mean`; the default refuses, since without covariates every
        target population has the same average effect.

        Parameters
        ----------
        frame : DataFrame
            One row per target task or stratum, columns named as the model's covariates.

        Returns
        -------
        ndarray of shape (N, q)
            The rows in the form :meth:`conditional_mean` and :meth:`draw_new_task` read.
        """
        raise SpecError(
            f"Model '{self.name}' has no task covariates, so every target population has the "
            "same average effect: use predict_new_task() (or the hyperparameters), or fit a "
            "model with task covariates (model='metareg') to transport the effect."
        )

    def conditional_mean(self, data: Mapping[str, Any], draw: Mapping[str, Any],
                         covariates: jax.Array) -> jax.Array:
        """E[θ | covariates, φ] of new tasks for one draw of φ, shape (N, p), for rows
        ``covariates`` (N, q) from :meth:`population_covariates`."""
        raise NotImplementedError(f"Family '{self.name}' has no task covariates.")

    # ------------------------------------------------------------------ helpers
    @property
    def params(self) -> list[str]:
        return self.estimates.params

    @property
    def n_params(self) -> int:
        return self.estimates.n_params


def correlation_of_theta(result: Any) -> np.ndarray:
    """Posterior correlation between tasks' θ, averaged over parameters, shape (K, K)."""
    theta = result.idata.posterior["theta"]
    draws = theta.stack(sample=("chain", "draw")).transpose("sample", "task", "param").values
    centred = draws - draws.mean(axis=0)
    cov = np.einsum("skp,slp->pkl", centred, centred) / (draws.shape[0] - 1)
    sd = np.sqrt(np.clip(np.einsum("pkk->pk", cov), 1e-300, None))
    corr = cov / (sd[:, :, None] * sd[:, None, :])
    return corr.mean(axis=0)


def mvn_logpdf(x: jax.Array, mean: jax.Array, cov: jax.Array) -> jax.Array:
    """Batched multivariate normal log density, shapes (..., p) -> (...).

    See :func:`bayesfuse.families._gaussian.gaussian_logpdf` (element-wise factorisation
    with a closed-form derivative for p ≤ 8, LAPACK above).
    """
    return gaussian_logpdf(x - mean, cov)


def gaussian_conditional_draw(key: jax.Array, mean: jax.Array, prior_chol: jax.Array,
                              theta_hat: jax.Array, cov_chol: jax.Array) -> jax.Array:
    """Exact draw of θₖ | θ̂ₖ for θₖ ~ N(meanₖ, Tₖ), θ̂ₖ | θₖ ~ N(θₖ, Vₖ), all k at once.

    Matheron's rule: θ = m + u + T (T + V)⁻¹ (θ̂ − m − u − e) with u ~ N(0, T),
    e ~ N(0, V). It needs only solves with T + V (never T⁻¹), so it stays exact and stable
    as T → 0 (full pooling).

    Parameters
    ----------
    key : PRNG key
    mean : array of shape (K, p)
    prior_chol : array of shape (K, p, p) or (p, p)
        Cholesky factor of Tₖ.
    theta_hat : array of shape (K, p)
    cov_chol : array of shape (K, p, p)
        Cholesky factor of Vₖ.

    Returns
    -------
    array of shape (K, p)
    """
    k_u, k_e = jax.random.split(key)
    shape = theta_hat.shape
    if shape[-1] == 1:  # scalar fast path
        prior_sd = jnp.broadcast_to(prior_chol, shape + shape[-1:])[..., 0]
        noise_sd = cov_chol[..., 0]
        u = prior_sd * jax.random.normal(k_u, shape)
        e = noise_sd * jax.random.normal(k_e, shape)
        gain = prior_sd**2 / (prior_sd**2 + noise_sd**2)
        return mean + u + gain * (theta_hat - mean - u - e)
    prior_chol = jnp.broadcast_to(prior_chol, shape + shape[-1:])
    u = jnp.einsum("kij,kj->ki", prior_chol, jax.random.normal(k_u, shape))
    e = jnp.einsum("kij,kj->ki", cov_chol, jax.random.normal(k_e, shape))
    prior_cov = prior_chol @ jnp.swapaxes(prior_chol, -1, -2)
    total = prior_cov + cov_chol @ jnp.swapaxes(cov_chol, -1, -2)
    resid = theta_hat - mean - u - e
    chol = jnp.linalg.cholesky(total)
    solved = jax.scipy.linalg.cho_solve((chol, True), resid[..., None])[..., 0]
    return mean + u + jnp.einsum("kij,kj->ki", prior_cov, solved)


def pooling_weight_gaussian(prior_cov: jax.Array, cov: jax.Array) -> jax.Array:
    """diag(Vₖ (Tₖ + Vₖ)⁻¹): weight of the prior mean in E[θₖ], shape (K, p)."""
    if cov.shape[-1] == 1:
        return cov[..., 0] / (prior_cov[..., 0] + cov[..., 0])
    total = prior_cov + cov
    weight = jnp.swapaxes(jnp.linalg.solve(total, jnp.swapaxes(cov, -1, -2)), -1, -2)
    return jnp.diagonal(weight, axis1=-2, axis2=-1)
