"""Meta-regression: θₖ = B zₖ + uₖ, uₖ ~ N(0, T), T = diag(τ) R diag(τ).

zₖ = (1, covariates of task k) from ``estimates.covariates``. The covariates are
standardised internally (mean 0, sd 1 over the tasks) so that the default priors are
scale-free and NUTS sees a well-conditioned posterior::

    θₖ = α + S z̃ₖ + uₖ,      z̃ₖⱼ = (zₖⱼ − mⱼ) / sⱼ

with α (p,) the ``intercept`` (the regression line at the covariates' means) and S (p, q)
the ``slope`` per standard deviation of each covariate. The coefficients on the original
covariate scale are the deterministic site ``coef`` (p, 1 + q): ``coef[:, 0] = α − S m/s``
(the intercept at z = 0) and ``coef[:, 1:] = S / s``.

Collapsed likelihood (θ integrated out)::

    θ̂ₖ | α, S, T ~ N(α + S z̃ₖ, T + Vₖ)      # independent over tasks

so NUTS samples only α, S, τ and, for p > 1, the Cholesky factor of R ~ LKJ(η); θ is drawn
exactly per posterior draw. A new task's θ is drawn from N(α + S z̃_new, T) given its
covariates (:meth:`MetaRegression.new_task_covariates`). The average effect in a target
population of tasks with covariate rows xᵢ and weights wᵢ (``predict_population``) is
Σᵢ wᵢ (α + S x̃ᵢ) per draw (:meth:`MetaRegression.conditional_mean`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd

from bayesfuse.errors import BayesfuseWarning, SpecError
from bayesfuse.families.base import (
    Family,
    _round2,
    block_distribution,
    gaussian_conditional_draw,
    mvn_logpdf,
    pooling_weight_gaussian,
    stacked_prior_args,
)
from bayesfuse.families.registry import register
from bayesfuse.specs.priors import Prior, PriorBlock, format_number


@register
class MetaRegression(Family):
    """θₖ = B zₖ + uₖ with uₖ ~ N(0, T): task effects explained by task covariates.

    Options
    -------
    covariates : list of str, optional
        The columns of ``estimates.covariates`` to regress on (default: all).
    """

    name = "metareg"
    pads_tasks = True
    task_data = ("theta_hat", "cov", "cov_chol", "zstd")
    description = "meta-regression: normal random effects around a line in the task covariates"
    option_defaults = {"covariates": None}

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        table = self.estimates.covariates
        if table is None or table.shape[1] == 0:
            raise SpecError(
                "The 'metareg' model regresses task effects on task covariates, and these "
                "estimates have none. Add task covariates (TaskEstimates(..., covariates=frame) "
                "or covariate columns in the estimates file), or use model='exchangeable'."
            )
        chosen = self.options["covariates"]
        if chosen is not None:
            if isinstance(chosen, str):
                chosen = [chosen]
            try:
                names = [str(c) for c in chosen]
            except TypeError:
                raise SpecError(
                    f"Option 'covariates' must be a list of covariate names; got {chosen!r}."
                ) from None
            if not names:
                raise SpecError("Option 'covariates' is empty; name at least one covariate.")
            unknown = [c for c in names if c not in table.columns]
            if unknown:
                raise SpecError(
                    f"Unknown covariate(s) {unknown} in option 'covariates'; the estimates have "
                    f"{list(table.columns)}."
                )
            if len(set(names)) != len(names):
                raise SpecError(f"Option 'covariates' names a covariate twice: {names}.")
            table = table[names]
            self.options["covariates"] = names
        values = table.to_numpy(dtype=float)
        self.covariate_names: list[str] = [str(c) for c in table.columns]
        constant = [c for c, v in zip(self.covariate_names, values.T, strict=True)
                    if np.ptp(v) <= 1e-12 * max(1.0, float(np.abs(v).max()))]
        if constant:
            raise SpecError(
                f"Covariate(s) {constant} are constant across the {self.estimates.n_tasks} "
                "tasks and cannot be standardised or separated from the intercept; drop them "
                "(option covariates=[...])."
            )
        #: means and standard deviations used to standardise the covariates, shape (q,)
        self.covariate_mean = values.mean(axis=0)
        self.covariate_sd = values.std(axis=0, ddof=1)
        self.zstd = (values - self.covariate_mean) / self.covariate_sd
        design = np.column_stack([np.ones(len(values)), self.zstd])
        if np.linalg.matrix_rank(design) < design.shape[1]:
            raise SpecError(
                f"The covariates {self.covariate_names} (with an intercept) are collinear; "
                "drop or combine some of them (option covariates=[...])."
            )

    @property
    def n_covariates(self) -> int:
        return len(self.covariate_names)

    @property
    def terms(self) -> list[str]:
        """Names of the original-scale coefficients: ``["intercept", *covariates]``."""
        return ["intercept", *self.covariate_names]

    def _slope_labels(self) -> tuple[str, ...]:
        """Element labels of the ``slope`` block, param-major: ``"read,age"``."""
        return tuple(f"{p},{c}" for p in self.params for c in self.covariate_names)

    # ------------------------------------------------------------------ priors
    def prior_blocks(self) -> list[PriorBlock]:
        blocks = [
            PriorBlock("intercept", "real", tuple(self.params)),
            PriorBlock("slope", "real", self._slope_labels()),
            PriorBlock("tau", "positive", tuple(self.params)),
        ]
        if self.n_params > 1:
            blocks.append(PriorBlock("corr", "correlation"))
        return blocks

    def default_priors(self) -> dict[str, str | list[str]]:
        """Data-scaled defaults on the standardised scale.

        ``intercept ~ normal(0, 5·magnitude)`` (as ``mu`` of exchangeable), ``slope ~
        normal(0, 2.5·magnitude)`` per standard deviation of a covariate, ``tau ~
        halfnormal(spread)``, ``corr ~ lkj(2)``.
        """
        slopes = [f"normal(0, {format_number(_round2(2.5 * m))})" for m in self.scale.magnitude
                  for _ in self.covariate_names]
        return {
            "intercept": self.scale.normal(5.0),
            "slope": slopes,
            "tau": self.scale.halfnormal(1.0),
            "corr": "lkj(2)",
        }

    def hyper_dims(self) -> dict[str, list[str]]:
        dims = {
            "coef": ["param", "term"],
            "intercept": ["param"],
            "slope": ["param", "regressor"],
            "tau": ["param"],
        }
        if self.n_params > 1:
            dims["corr"] = ["param", "param_b"]
        return dims

    def hyper_coords(self) -> dict[str, list[str]]:
        # "regressor", not "covariate": the constant_data group's "covariate" dimension
        # lists every covariate of the estimates, also those not used here.
        return {"term": self.terms, "regressor": list(self.covariate_names)}

    def data(self) -> dict[str, np.ndarray]:
        """Model inputs: θ̂ (K, p), V (K, p, p), chol V, standardised covariates ``zstd``
        (K, q) and the means ``zmean`` (q,) and sds ``zsd`` (q,) they were standardised with.

        The means and sds are inputs, not constants of the model, because a compiled sampler
        is reused for new data of the same shape.
        """
        return {**super().data(), "zstd": self.zstd, "zmean": self.covariate_mean,
                "zsd": self.covariate_sd}

    # ------------------------------------------------------------------ model
    @staticmethod
    def to_original_scale(intercept: Any, slope: Any, zmean: Any, zsd: Any) -> jax.Array:
        """Coefficients on the original covariate scale, shape (..., p, 1 + q).

        Parameters
        ----------
        intercept : array of shape (..., p)
            Standardised-scale intercept α.
        slope : array of shape (..., p, q)
            Slopes per standard deviation S.
        zmean, zsd : arrays of shape (q,)
            The covariates' means m and standard deviations s.

        Returns
        -------
        array of shape (..., p, 1 + q)
            ``[α − (S/s) m, S/s]``.
        """
        raw = slope / zsd
        at_zero = intercept - raw @ zmean
        return jnp.concatenate([at_zero[..., None], raw], axis=-1)

    def _prior_chol(self, draw: Mapping[str, Any]) -> jax.Array:
        """Cholesky factor of T, shape (p, p)."""
        tau = draw["tau"]
        if tau.shape[-1] == 1:
            return tau[:, None]
        return tau[:, None] * draw["corr_chol"]

    @staticmethod
    def _line(draw: Mapping[str, Any], zstd: Any) -> Any:
        """Regression means α + S z̃ₖ, shape (K, p) for ``zstd`` (K, q)."""
        return draw["intercept"] + zstd @ draw["slope"].T

    def model(self, priors: Mapping[str, Sequence[Prior]], collapsed: bool,
              theta_hat: Any = None, cov: Any = None, cov_chol: Any = None,
              zstd: Any = None, zmean: Any = None, zsd: Any = None) -> None:
        n_tasks, n_params = cov.shape[0], cov.shape[1]
        n_cov = zstd.shape[1]
        intercept = numpyro.sample("intercept", block_distribution(priors["intercept"]))
        slope_args = [jnp.reshape(a, (n_params, n_cov))
                      for a in stacked_prior_args(priors["slope"])]
        slope = numpyro.sample("slope", priors["slope"][0].numpyro(slope_args).to_event(2))
        tau = numpyro.sample("tau", block_distribution(priors["tau"]))
        numpyro.deterministic("coef", self.to_original_scale(intercept, slope, zmean, zsd))
        site = {"tau": tau, "intercept": intercept, "slope": slope}
        if n_params > 1:
            eta = priors["corr"][0].args[0]
            corr_chol = numpyro.sample("corr_chol", dist.LKJCholesky(n_params, eta))
            numpyro.deterministic("corr", corr_chol @ corr_chol.T)
            site["corr_chol"] = corr_chol
        prior_chol = self._prior_chol(site)
        mean = self._line(site, zstd)  # (K, p)
        if collapsed:
            total = prior_chol @ prior_chol.T + cov
            with numpyro.plate("task", n_tasks):
                if n_params == 1:
                    numpyro.sample("theta_hat", dist.Normal(mean[:, 0], jnp.sqrt(total[:, 0, 0])),
                                   obs=None if theta_hat is None else theta_hat[:, 0])
                else:
                    numpyro.sample("theta_hat", dist.MultivariateNormal(mean, total),
                                   obs=theta_hat)
            return
        with numpyro.plate("task", n_tasks):
            z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([n_params]).to_event(1))
            theta = numpyro.deterministic("theta", mean + z @ prior_chol.T)
            numpyro.sample("theta_hat", dist.MultivariateNormal(theta, scale_tril=cov_chol),
                           obs=theta_hat)

    def pymc_model(self, blocks: Any, priors: Mapping[str, Sequence[Prior]], collapsed: bool,
                   data: Mapping[str, np.ndarray]):
        """The same model in PyMC (sites ``intercept``, ``slope``, ``tau``, ``corr_chol``,
        ``corr``, ``coef``; ``z``, ``theta`` in the plain form), for ``backend="pymc"``.

        Parameters
        ----------
        blocks : module
            PyMC building blocks from the inference layer (``block_rv``,
            ``scale_corr_chol``, ``gaussian_tasks``; see :meth:`Family.pymc_model`).
        priors : mapping
            Resolved priors (``self.priors``).
        collapsed : bool
            Integrate θ out (True) or sample it non-centred.
        data : mapping
            ``self.data()``: ``theta_hat`` (K, p), ``cov`` (K, p, p), ``cov_chol``,
            ``zstd`` (K, q), ``zmean`` (q,), ``zsd`` (q,).

        Returns
        -------
        pymc.Model
        """
        import pymc as pm

        n_params, n_cov = data["theta_hat"].shape[1], data["zstd"].shape[1]
        with pm.Model() as model:
            intercept = blocks.block_rv("intercept", priors["intercept"], (n_params,))
            slope = blocks.block_rv("slope", priors["slope"], (n_params, n_cov))
            tau = blocks.block_rv("tau", priors["tau"], (n_params,))
            raw = slope / data["zsd"]
            pm.Deterministic("coef", pm.math.concatenate(
                [(intercept - pm.math.dot(raw, data["zmean"]))[:, None], raw], axis=1))
            prior_chol = blocks.scale_corr_chol(tau, priors.get("corr"), n_params)
            mean = intercept[None, :] + pm.math.dot(data["zstd"], slope.T)
            blocks.gaussian_tasks(mean, prior_chol, None, data, collapsed)
        return model

    # ------------------------------------------------------------------ per draw
    def draw_theta(self, key, data, draw):
        theta_hat = data["theta_hat"]
        mean = self._line(draw, data["zstd"])
        return gaussian_conditional_draw(key, mean, self._prior_chol(draw), theta_hat,
                                         data["cov_chol"])

    def pointwise_loglik(self, data, draw):
        chol = self._prior_chol(draw)
        total = chol @ chol.T + data["cov"]
        return mvn_logpdf(data["theta_hat"], self._line(draw, data["zstd"]), total)

    def pooling_weight(self, data, draw):
        chol = self._prior_chol(draw)
        prior_cov = jnp.broadcast_to(chol @ chol.T, data["cov"].shape)
        return pooling_weight_gaussian(prior_cov, data["cov"])

    def draw_new_task(self, key, data, draw, covariates):
        """θ of a new task with standardised covariates ``covariates`` (q,), shape (p,)."""
        if covariates is None:  # pragma: no cover - new_task_covariates refuses None first
            raise SpecError("The 'metareg' model needs the new task's covariates.")
        mean = draw["intercept"] + draw["slope"] @ covariates
        return mean + self._prior_chol(draw) @ jax.random.normal(key, mean.shape)

    def new_task_covariates(self, covariates: Any) -> jax.Array:
        """Validate and standardise a new task's covariates.

        Parameters
        ----------
        covariates : mapping, pandas Series, one-row DataFrame or array of shape (q,)
            Values of the model's covariates (``self.covariate_names``) for the new task,
            on their original scale. Arrays are read in the order of
            ``self.covariate_names``; mappings and Series by name (covariates of the
            estimates that the model does not use are ignored).

        Returns
        -------
        jax array of shape (q,)
            The standardised covariates (x − mean) / sd, with the tasks' means and sds.
        """
        names = self.covariate_names
        if covariates is None:
            raise SpecError(
                f"The 'metareg' model predicts from task covariates: this model needs the new "
                f"task's covariates, e.g. predict_new_task(covariates={{{names[0]!r}: ...}}) "
                f"with values for {names}."
            )
        if isinstance(covariates, pd.DataFrame):
            if len(covariates) != 1:
                raise SpecError(
                    f"Give one new task's covariates (one row); got a frame with "
                    f"{len(covariates)} rows."
                )
            covariates = covariates.iloc[0]
        if isinstance(covariates, Mapping | pd.Series):
            given = {str(k): v for k, v in dict(covariates).items()}
            known = set(self.estimates.covariates.columns)
            unknown = sorted(set(given) - known - set(names))
            if unknown:
                raise SpecError(
                    f"Unknown covariate(s) {unknown} for the new task; this model uses {names}."
                )
            missing = [n for n in names if n not in given]
            if missing:
                raise SpecError(
                    f"The new task's covariates lack {missing}; this model uses {names}."
                )
            raw = [given[n] for n in names]
        else:
            if isinstance(covariates, str | bytes):
                raise SpecError(
                    f"New-task covariates must be numbers for {names}; got {covariates!r}."
                )
            raw = np.ravel(np.asarray(covariates, dtype=object)).tolist()
            if len(raw) != len(names):
                raise SpecError(
                    f"The new task needs {len(names)} covariate value(s) ({names}, in this "
                    f"order); got {len(raw)}."
                )
        try:
            values = np.array([float(v) for v in raw])
        except (TypeError, ValueError):
            raise SpecError(
                f"New-task covariates must be numbers for {names}; got {raw!r}."
            ) from None
        bad = [n for n, v in zip(names, values, strict=True) if not np.isfinite(v)]
        if bad:
            raise SpecError(f"The new task's covariate(s) {bad} are not finite numbers.")
        return jnp.asarray((values - self.covariate_mean) / self.covariate_sd)

    def population_covariates(self, frame: Any) -> np.ndarray:
        """Validate and standardise a target population's covariate rows.

        Parameters
        ----------
        frame : DataFrame
            One row per target task or stratum, a column per covariate of the model
            (``self.covariate_names``), numbers on their original scale. Columns that are
            covariates of the estimates but not of the model are ignored; any other column
            is refused (drop it first).

        Returns
        -------
        ndarray of shape (N, q)
            The standardised covariates (x − mean) / sd, with the tasks' means and sds
            (float64, also when JAX runs in 32 bits).

        Warns
        -----
        BayesfuseWarning
            When a target covariate lies outside the range of the tasks' (extrapolation).
        """
        names = self.covariate_names
        if not isinstance(frame, pd.DataFrame):
            raise SpecError(f"The target population must be a DataFrame with columns {names}; "
                            f"got {type(frame).__name__}.")
        if len(frame) == 0:
            raise SpecError(f"The target population has no rows; give one row per target task "
                            f"with columns {names}.")
        columns = [str(c) for c in frame.columns]
        known = set(self.estimates.covariates.columns)
        unknown = [c for c in columns if c not in known and c not in names]
        if unknown:
            raise SpecError(f"Unknown column(s) {unknown} in the target population; this model "
                            f"uses the covariates {names} (drop the other columns).")
        missing = [n for n in names if n not in columns]
        if missing:
            raise SpecError(f"The target population lacks the covariate(s) {missing}; this "
                            f"model uses {names}.")
        chosen = frame.set_axis(columns, axis=1)[names]
        text = [n for n in names if not (pd.api.types.is_numeric_dtype(chosen[n])
                                         and not pd.api.types.is_bool_dtype(chosen[n]))]
        if text:
            raise SpecError(f"Target covariate(s) {text} must be numbers; got "
                            f"{chosen[text[0]].dtype} values such as {chosen[text[0]].iloc[0]!r}.")
        values = chosen.to_numpy(dtype=float)
        bad = ~np.isfinite(values)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise SpecError(f"Target covariate '{names[col]}' is not a finite number in row "
                            f"{row} ({values[row, col]!r}); fill in or drop that row.")
        fitted = self.estimates.covariates[names].to_numpy(dtype=float)
        low, high = fitted.min(axis=0), fitted.max(axis=0)
        outside = [f"{n} (target {v_lo:g} to {v_hi:g}, tasks {lo:g} to {hi:g})"
                   for n, v_lo, v_hi, lo, hi in zip(names, values.min(axis=0),
                                                    values.max(axis=0), low, high, strict=True)
                   if v_lo < lo or v_hi > hi]
        if outside:
            warnings.warn(f"The target population lies outside the tasks' covariates in "
                          f"{'; '.join(outside)}: its average effect extrapolates the "
                          "regression line.", BayesfuseWarning, stacklevel=3)
        return (values - self.covariate_mean) / self.covariate_sd

    def conditional_mean(self, data, draw, covariates):
        """The regression line α + S z̃ at standardised covariates (N, q), shape (N, p)."""
        return self._line(draw, covariates)
