"""An unknown correlation within tasks, for vector θ when sites report only standard errors.

Stage-1 summaries sometimes give each parameter's standard error but not the covariances
between a task's estimates (θ̂ₖ₁, θ̂ₖ₂ come from the same units, so they are correlated).
Treating Vₖ as diagonal then misstates the likelihood θ̂ₖ | θₖ ~ N(θₖ, Vₖ). Following the
multivariate meta-analysis literature (Riley et al. 2008; Wei & Higgins 2013), the
within-task correlation is given a prior and sampled with the other hyperparameters.

Choice made here: **one correlation matrix R shared by all tasks**, R ~ LKJ(η) (default
η = 2; for p = 2 this is ρ = 2·Beta(η, η) − 1, density ∝ (1 − ρ²)^(η−1), i.e. one ρ per
pair), and

    Vₖ = Sₖ R Sₖ,   Sₖ = diag(seₖ),   chol(Vₖ) = Sₖ chol(R).

A shared R is what the data can inform (K pairs of residuals per entry), and it is what
sites estimating the same quantities by the same method have in common; Riley's
overall-correlation model (one correlation of θ̂ₖ₁ and θ̂ₖ₂ mixing within and between
tasks) is not implemented. The posterior variable is ``within_corr`` (dims ``param``,
``param_b``; ``hyper_summary`` lists ``within_corr[a,b]``), its prior block
``within_corr`` (``priors={"within_corr": "lkj(4)"}``).

A float instead of ``"unknown"`` fixes a known common correlation ρ on every pair (R with
unit diagonal and ρ elsewhere); nothing is then sampled and Vₖ = Sₖ R Sₖ is data.

:class:`WithinCorr` wraps any family: ``Family(estimates, {"within_corr": ...})`` returns
it (see :meth:`bayesfuse.families.base.Family.__new__`). Its model samples R and hands
the wrapped family's model the covariances built from it; its per-draw functions rebuild
them from each posterior draw of R before calling the wrapped family's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from bayesfuse.errors import FitError, OptionError
from bayesfuse.families.base import Family
from bayesfuse.specs.priors import Prior, PriorBlock

__all__ = ["WithinCorr", "covariances_with_corr", "check_within_corr", "WITHIN_CORR_CHOICES"]

#: the string values of the ``within_corr`` option (a float in (−1, 1) is the third kind)
WITHIN_CORR_CHOICES = ("given", "unknown")
#: posterior variable and prior block of the within-task correlation matrix
SITE = "within_corr"
#: |correlation| above which a given off-diagonal entry of Vₖ counts as non-zero
_OFF_DIAGONAL_TOL = 1e-12


def check_within_corr(value: Any, n_params: int | None = None) -> str | float:
    """Validate a ``within_corr`` option: ``"given"``, ``"unknown"`` or a correlation.

    Parameters
    ----------
    value : str or float
        The option as given (strings are case-insensitive; numeric strings are read as
        numbers, as the CLI passes them).
    n_params : int, optional
        p; a fixed correlation ρ on every pair needs ρ > −1/(p − 1) (R positive definite).

    Returns
    -------
    str or float

    Raises
    ------
    OptionError
        On any other value.

    Examples
    --------
    >>> check_within_corr("Unknown")
    'unknown'
    >>> check_within_corr("0.5")
    0.5
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text in WITHIN_CORR_CHOICES:
            return text
        try:
            value = float(text)
        except ValueError:
            raise OptionError(
                f"within_corr must be 'given', 'unknown' or a correlation in (-1, 1); got "
                f"{value!r}.") from None
    if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(value):
        raise OptionError(f"within_corr must be 'given', 'unknown' or a correlation in "
                          f"(-1, 1); got {value!r}.")
    rho = float(value)
    low = -1.0 if not n_params or n_params <= 2 else -1.0 / (n_params - 1)
    if not low < rho < 1.0:
        raise OptionError(f"within_corr = {rho:g} is not a valid common correlation for "
                          f"p = {n_params or 2} parameters; give a value in ({low:.4g}, 1).")
    return rho


def covariances_with_corr(cov: Any, corr_chol: Any) -> dict[str, Any]:
    """Covariances Vₖ = Sₖ R Sₖ with Sₖ = diag(√diag Vₖ), and their factors.

    Parameters
    ----------
    cov : array of shape (K, p, p)
        The given covariances (only their diagonals are read).
    corr_chol : array of shape (p, p)
        Cholesky factor L of the correlation matrix R = L Lᵀ.

    Returns
    -------
    dict
        ``cov`` (K, p, p), ``cov_chol`` = Sₖ L (K, p, p, lower triangular) and
        ``cov_inv`` = Sₖ⁻¹ R⁻¹ Sₖ⁻¹ (K, p, p), as JAX arrays.

    Examples
    --------
    >>> import numpy as np
    >>> out = covariances_with_corr(np.diag([4.0, 1.0])[None], np.linalg.cholesky(
    ...     np.array([[1.0, 0.5], [0.5, 1.0]])))
    >>> np.asarray(out["cov"])[0].round(6).tolist()
    [[4.0, 1.0], [1.0, 1.0]]
    """
    se = jnp.sqrt(jnp.diagonal(jnp.asarray(cov), axis1=-2, axis2=-1))  # (K, p)
    corr_chol = jnp.asarray(corr_chol)
    corr = corr_chol @ corr_chol.T
    eye = jnp.eye(corr.shape[-1], dtype=corr.dtype)
    corr_inv = jax.scipy.linalg.cho_solve((corr_chol, True), eye)
    return {
        "cov": se[:, :, None] * corr * se[:, None, :],
        "cov_chol": se[:, :, None] * corr_chol,
        "cov_inv": corr_inv / (se[:, :, None] * se[:, None, :]),
    }


def _with_corr(data: Mapping[str, Any], corr_chol: Any) -> dict[str, Any]:
    """``data`` with the covariance entries it has (``cov``, ``cov_chol``, ``cov_inv``)
    rebuilt from the correlation factor ``corr_chol``."""
    built = covariances_with_corr(data["cov"], corr_chol)
    return {**data, **{k: v for k, v in built.items() if k in data}}


class WithinCorr(Family):
    """A family with the within-task correlation of θ̂ₖ unknown (or fixed).

    Built by ``Family(estimates, {"within_corr": ...})`` (``bf.fuse(...,
    within_corr="unknown")``), not registered under a name of its own: it reports the
    wrapped family's name and options plus ``within_corr``, so a saved fit rebuilds it.

    Parameters
    ----------
    inner : Family
        The wrapped family, built from the same estimates.
    within_corr : "unknown" or float
        Sample a shared correlation matrix R ~ LKJ(η) (prior block ``within_corr``), or fix
        every pair's correlation at the given value.

    Raises
    ------
    OptionError
        For scalar θ (p = 1), for covariances that already have non-zero off-diagonal
        entries, or for an invalid ``within_corr``.
    """

    accepts_within_corr = False

    def __init__(self, inner: Family, within_corr: Any) -> None:  # noqa: D107
        est = inner.estimates
        value = check_within_corr(within_corr, est.n_params)
        if value == "given":  # pragma: no cover - Family.__new__ does not wrap then
            raise OptionError("within_corr='given' needs no wrapper.")
        if est.n_params == 1:
            raise OptionError(
                f"within_corr={value!r} needs vector estimates (p >= 2 parameters per task); "
                "these have one parameter, so there is no correlation to model. Drop the "
                "within_corr option.")
        cov = est.covariances
        se = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
        corr = cov / (se[:, :, None] * se[:, None, :])
        off = np.abs(corr - np.eye(est.n_params)).max(axis=(1, 2))
        if np.any(off > _OFF_DIAGONAL_TOL):
            task = est.tasks[int(np.argmax(off))]
            raise OptionError(
                f"within_corr={value!r} is for estimates given with standard errors only, but "
                f"task '{task}' has non-zero covariances between its parameters; fuse with "
                "the covariances as given (within_corr='given', the default), or drop the "
                "off-diagonal entries (keep only the SEs) to model the correlation.")
        self.inner = inner
        self.within_corr = value
        self.estimates = est
        self.scale = inner.scale
        self.priors: dict[str, list[Prior]] = {}
        self.options = {**inner.options, "within_corr": value}
        self.option_defaults = {**inner.option_defaults, "within_corr": "given"}
        # the wrapped family's class-level description, read as instance attributes
        for attribute in ("name", "aliases", "description", "collapsible", "similarity_kind",
                          "has_task_graph", "max_draw_batch", "relabels_in_warmup",
                          "relabels_in_sampling", "pads_tasks", "task_data"):
            if hasattr(inner, attribute):
                setattr(self, attribute, getattr(inner, attribute))

    @property
    def sampled(self) -> bool:
        """Whether R is sampled (``"unknown"``) rather than fixed."""
        return self.within_corr == "unknown"

    def _fixed_chol(self) -> np.ndarray:
        p = self.n_params
        corr = np.full((p, p), float(self.within_corr))
        np.fill_diagonal(corr, 1.0)
        return np.linalg.cholesky(corr)

    def _inner_priors(self, priors: Mapping[str, Sequence[Prior]]) -> dict[str, Any]:
        return {k: v for k, v in priors.items() if k != SITE}

    def _data(self, data: Mapping[str, Any], draw: Mapping[str, Any]) -> Mapping[str, Any]:
        """The wrapped family's data for one draw: Vₖ rebuilt from the draw's R."""
        if not self.sampled:
            return data  # fixed R: built into self.data() already
        chol = draw.get(f"{SITE}_chol")
        if chol is None:  # a loaded fit keeps R only
            chol = jnp.linalg.cholesky(draw[SITE])
        return _with_corr(data, chol)

    # ------------------------------------------------------------------ declarations
    def bind_priors(self, user: Mapping[str, str] | None) -> dict[str, list[Prior]]:
        priors = super().bind_priors(user)
        self.inner.priors = self._inner_priors(priors)
        return priors

    def prior_blocks(self) -> list[PriorBlock]:
        blocks = self.inner.prior_blocks()
        if self.sampled:
            blocks.append(PriorBlock(SITE, "correlation"))
        return blocks

    def default_priors(self) -> dict[str, str | list[str]]:
        defaults = dict(self.inner.default_priors())
        if self.sampled:
            defaults[SITE] = "lkj(2)"
        return defaults

    def data(self) -> dict[str, np.ndarray]:
        data = self.inner.data()
        if self.sampled:
            return data
        return {k: np.asarray(v) for k, v in _with_corr(data, self._fixed_chol()).items()}

    def hyper_dims(self) -> dict[str, list[str]]:
        dims = dict(self.inner.hyper_dims())
        if self.sampled:
            dims[SITE] = ["param", "param_b"]
        return dims

    def hyper_coords(self) -> dict[str, list[str]]:
        return self.inner.hyper_coords()

    def summary_variables(self) -> list[str]:
        return self.inner.summary_variables() + ([SITE] if self.sampled else [])

    def checked_variables(self) -> list[str]:
        return self.inner.checked_variables() + ([SITE] if self.sampled else [])

    # ------------------------------------------------------------------ model
    def model(self, priors: Mapping[str, Sequence[Prior]], collapsed: bool,
              **data: Any) -> None:
        """Sample R ~ LKJ(η) (``within_corr_chol``, deterministic ``within_corr``), then the
        wrapped family's model with Vₖ = Sₖ R Sₖ."""
        if self.sampled:
            n_params = data["cov"].shape[-1]
            eta = priors[SITE][0].args[0]
            chol = numpyro.sample(f"{SITE}_chol", dist.LKJCholesky(n_params, eta))
            numpyro.deterministic(SITE, chol @ chol.T)
            data = _with_corr(data, chol)
        self.inner.model(self._inner_priors(priors), collapsed, **data)

    def pymc_model(self, blocks: Any, priors: Mapping[str, Sequence[Prior]],
                   collapsed: bool, data: Mapping[str, Any]) -> Any:
        """The wrapped family's PyMC model with a fixed R; an unknown R is NumPyro only."""
        if self.sampled:
            raise OptionError("within_corr='unknown' is available with backend='numpyro' "
                              "only; use backend='numpyro' (or a fixed within_corr value).")
        if type(self.inner).pymc_model is Family.pymc_model:
            raise FitError(f"backend='pymc' does not support '{self.name}'; use "
                           "backend='numpyro'.")
        return self.inner.pymc_model(blocks, self._inner_priors(priors), collapsed, data)

    # ------------------------------------------------------------------ per draw
    def sampling_chol(self, data, draw):
        return self._data(data, draw)["cov_chol"]

    def draw_theta(self, key, data, draw):
        return self.inner.draw_theta(key, self._data(data, draw), draw)

    def pointwise_loglik(self, data, draw):
        return self.inner.pointwise_loglik(self._data(data, draw), draw)

    def draw_new_task(self, key, data, draw, covariates):
        return self.inner.draw_new_task(key, self._data(data, draw), draw, covariates)

    def pooling_weight(self, data, draw):
        return self.inner.pooling_weight(self._data(data, draw), draw)

    def extra_draws(self, key, data, draw):
        return self.inner.extra_draws(key, self._data(data, draw), draw)

    def extra_dims(self) -> dict[str, list[str]]:
        return self.inner.extra_dims()

    def conditional_mean(self, data, draw, covariates):
        return self.inner.conditional_mean(self._data(data, draw), draw, covariates)

    def population_covariates(self, frame: Any) -> Any:
        return self.inner.population_covariates(frame)

    def new_task_covariates(self, covariates: Any) -> Any:
        return self.inner.new_task_covariates(covariates)

    @property
    def draw_cost(self) -> int:
        return self.inner.draw_cost

    # ------------------------------------------------------------------ the rest delegates
    def similarity(self, result: Any) -> np.ndarray:
        return self.inner.similarity(result)

    def structure(self, result: Any) -> dict[str, Any]:
        return self.inner.structure(result)

    def extra_advice(self, result: Any) -> list[str]:
        return self.inner.extra_advice(result)

    def init_values(self, n_chains: int, seed: int) -> dict[str, np.ndarray] | None:
        return self.inner.init_values(n_chains, seed)

    def warmup_relabel(self, z):
        return self.inner.warmup_relabel(z)

    def relabel_move(self, key, z):
        return self.inner.relabel_move(key, z)

    def complete_prior_truth(self, truth, rng):
        return self.inner.complete_prior_truth(truth, rng)
