"""`FusionResult`: a thin wrapper around the fit's ``arviz.InferenceData``."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayesfuse._arviz import az
from bayesfuse._io import atomic_write_with
from bayesfuse._validation import check_choice, check_probability
from bayesfuse.analysis.diagnostics import Diagnostics, Thresholds, diagnose, flat_names
from bayesfuse.data.estimates import TaskEstimates
from bayesfuse.errors import BayesfuseError, FitError, SpecError
from bayesfuse.families import Family, get_family
from bayesfuse.inference.convert import estimates_from_idata, read_meta

__all__ = ["FusionResult", "load_fit", "compare", "summarize_draws"]


def _interval_columns(values: np.ndarray, ci_prob: float) -> dict[str, np.ndarray]:
    """mean, sd, ETI and HDI of (chain, draw, n) values, vectorised over n."""
    flat = values.reshape(-1, values.shape[-1])
    alpha = (1 - ci_prob) / 2
    lo, hi = np.quantile(flat, [alpha, 1 - alpha], axis=0)
    sorted_ = np.sort(flat, axis=0)
    n = sorted_.shape[0]
    width = max(1, int(np.floor(ci_prob * n)))
    if width < n:
        spans = sorted_[width:] - sorted_[: n - width]
        start = np.argmin(spans, axis=0)
        cols = np.arange(flat.shape[1])
        hdi_lo, hdi_hi = sorted_[start, cols], sorted_[start + width, cols]
    else:
        hdi_lo, hdi_hi = sorted_[0], sorted_[-1]
    return {
        "mean": flat.mean(axis=0),
        "sd": flat.std(axis=0, ddof=1),
        "eti_low": lo,
        "eti_high": hi,
        "hdi_low": hdi_lo,
        "hdi_high": hdi_hi,
    }


class FusionResult:
    """The posterior of a fusion model.

    Parameters
    ----------
    idata : arviz.InferenceData
        Groups ``posterior`` (``theta`` with dims ``task, param``, hyperparameters),
        ``sample_stats``, ``log_likelihood``, ``posterior_predictive``, ``prior``,
        ``prior_predictive``, ``observed_data``, ``constant_data``.
    estimates : TaskEstimates, optional
        The stage-1 estimates (rebuilt from ``idata`` when omitted).
    family : Family, optional
        The family instance (rebuilt from the stored spec when omitted).

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
    >>> fit.summary()                                   # per task  # doctest: +SKIP
    >>> fit.hyper_summary()                             # mu, tau   # doctest: +SKIP
    >>> fit.diagnostics().ok                            # doctest: +SKIP
    True
    >>> fit.idata                                       # arviz.InferenceData  # doctest: +SKIP
    """

    def __init__(self, idata, estimates: TaskEstimates | None = None,
                 family: Family | None = None) -> None:
        self.idata = idata
        self.meta = read_meta(idata)
        self.estimates = estimates if estimates is not None else estimates_from_idata(
            idata, self.meta)
        if family is None:
            spec = self.meta["spec"]
            family = get_family(spec["family"])(self.estimates, spec.get("options", {}))
            family.bind_priors(self.meta["priors"])
        self.family = family
        self._diagnostics: Diagnostics | None = None

    # ------------------------------------------------------------------ descriptors
    @property
    def tasks(self) -> list[str]:
        """Task ids, in the order of the estimates (K entries)."""
        return self.estimates.tasks

    @property
    def params(self) -> list[str]:
        """Parameter names (p entries; ``["theta"]`` for a scalar θ read from a table)."""
        return self.estimates.params

    @property
    def model(self) -> str:
        """Family name."""
        return self.family.name

    @property
    def priors(self) -> dict[str, str]:
        """Priors as used (data-scaled defaults and overrides), ``{"tau": "halfnormal(1)"}``."""
        return dict(self.meta["priors"])

    @property
    def spec(self) -> dict[str, Any]:
        """The resolved model spec: family, options, priors and sampler settings."""
        return dict(self.meta["spec"])

    @property
    def seed(self) -> int:
        """The random seed of the fit (the same seed gives the same draws)."""
        return int(self.meta["seed"])

    @property
    def timings(self) -> dict[str, float]:
        """Wall time in seconds of each step of the fit (``sampling_s``, ``postprocess_s``...)."""
        return dict(self.meta.get("timings", {}))

    def __repr__(self) -> str:
        post = self.idata.posterior
        return (
            f"FusionResult(model={self.model!r}, K={len(self.tasks)}, params={self.params}, "
            f"chains={post.sizes['chain']}, draws={post.sizes['draw']}, "
            f"backend={self.meta.get('backend')!r})"
        )

    @property
    def hyperparameters(self) -> list[str]:
        """Names of the posterior variables reported as hyperparameters."""
        return [v for v in self.family.summary_variables() if v in self.idata.posterior]

    def structure(self) -> dict[str, pd.DataFrame]:
        """Family-specific similarity structure: for ``cluster`` the posterior of the number
        of occupied clusters and a point clustering; for ``gmrf`` the learned edges.

        Examples
        --------
        >>> import bayesfuse as bf
        >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
        >>> fit = bf.fuse(est, model="cluster", seed=0)     # doctest: +SKIP
        >>> structure = fit.structure()                     # doctest: +SKIP
        >>> sorted(structure)                               # doctest: +SKIP
        """
        return self.family.structure(self)

    # ------------------------------------------------------------------ tables
    def summary(self, ci_prob: float = 0.95) -> pd.DataFrame:
        """Fused estimates per (task, param), with how much each task borrows.

        Parameters
        ----------
        ci_prob : float
            Credible interval probability, in (0, 1).

        Returns
        -------
        DataFrame
            One row per (task, param), K·p rows, columns:

            * ``task, param, estimate, se``: the stage-1 estimate θ̂ₖⱼ and its standard
              error √Vₖ,ⱼⱼ;
            * ``mean, sd, eti_low, eti_high, hdi_low, hdi_high``: the posterior of θₖⱼ;
            * ``shrinkage``: the pooling factor, the posterior mean weight of the prior mean
              in E[θₖ | φ, θ̂] (the family's ``pooling_weight``; for the normal exchangeable
              model E[Vₖ/(Vₖ + τ²)]): 0 = the task alone, 1 = complete pooling;
            * ``variance_reduction``: 1 − Var(θₖⱼ | data) / Vₖ,ⱼⱼ, the share of the
              task's own sampling variance removed by borrowing from the other tasks
              (0 = none; it can fall slightly below 0 by Monte Carlo error, or under a
              heavy-tailed model for an outlying task);
            * ``effective_n``: nₖ · Vₖ,ⱼⱼ / Var(θₖⱼ | data), the number of units the task
              alone would need for the posterior's precision (variance ∝ 1/n); NaN where
              the estimates carry no sample sizes nₖ;
            * ``n_gained``: ``effective_n`` − nₖ, the units borrowed from the other tasks
              (NaN without nₖ);
            * ``r_hat, ess_bulk, ess_tail``: convergence of θₖⱼ.

            Var(θₖⱼ | data) is the square of ``sd``, the posterior variance of the draws.

        Examples
        --------
        >>> fit = bf.fuse(bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools()),
        ...               method="exact", seed=0)                        # doctest: +SKIP
        >>> fit.summary()[["task", "mean", "shrinkage", "variance_reduction"]]  # doctest: +SKIP
        """
        ci_prob = check_probability(ci_prob)
        theta = self.idata.posterior["theta"].transpose("chain", "draw", "task", "param")
        values = theta.values.reshape(theta.shape[0], theta.shape[1], -1)
        stats = _interval_columns(values, ci_prob)
        diag = self.diagnostics().set_index("quantity")
        names, _ = flat_names("theta", theta)
        n_tasks, n_params = len(self.tasks), len(self.params)
        frame = pd.DataFrame({
            "task": np.repeat(self.tasks, n_params),
            "param": np.tile(self.params, n_tasks),
            "estimate": self.estimates.estimates.reshape(-1),
            "se": self.estimates.se.reshape(-1),
            **stats,
            "shrinkage": self.idata.constant_data["pooling"].values.reshape(-1),
            **self._borrowing(stats["sd"]),
        })
        for column in ("r_hat", "ess_bulk", "ess_tail"):
            frame[column] = diag.loc[names, column].to_numpy()
        frame.attrs["ci_prob"] = ci_prob
        return frame

    def _borrowing(self, sd: np.ndarray) -> dict[str, np.ndarray]:
        """``variance_reduction``, ``effective_n``, ``n_gained`` from the posterior sds of
        θ, flattened (K·p,) task-major (see :meth:`summary`)."""
        own = self.estimates.se.reshape(-1) ** 2
        post = np.asarray(sd, dtype=float) ** 2
        n = self.estimates.n
        n_flat = (np.full(own.shape, np.nan) if n is None
                  else np.repeat(np.asarray(n, dtype=float), len(self.params)))
        with np.errstate(divide="ignore", invalid="ignore"):
            effective = n_flat * own / post
        return {"variance_reduction": 1.0 - post / own, "effective_n": effective,
                "n_gained": effective - n_flat}

    def results_table(self, ci_prob: float = 0.95, interval: str = "eti",
                      fmt: str = "dataframe", digits: int | None = None) -> pd.DataFrame | str:
        """Fused estimates as a DataFrame, CSV, Markdown, LaTeX or HTML table
        (:func:`bayesfuse.reporting.tables.results_table`).

        Examples
        --------
        >>> import bayesfuse as bf
        >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
        >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
        >>> print(fit.results_table(ci_prob=0.9, fmt="markdown", digits=2))   # doctest: +SKIP
        """
        from bayesfuse.reporting.tables import results_table

        return results_table(self, ci_prob=ci_prob, interval=interval, fmt=fmt, digits=digits)

    def report(self, path: str | os.PathLike[str], force: bool = False,
               ci_prob: float = 0.95, sensitivity: Any = None, interval: str = "eti") -> Path:
        """Write the self-contained HTML report (:func:`bayesfuse.reporting.report.write_report`);
        ``interval`` is ``"eti"`` (equal-tailed) or ``"hdi"``.

        Examples
        --------
        >>> import bayesfuse as bf
        >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
        >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
        >>> fit.report("report.html", force=True)           # doctest: +SKIP
        """
        from bayesfuse.reporting.report import write_report

        return write_report(self, path, sensitivity=sensitivity, ci_prob=ci_prob,
                            interval=interval, force=force)

    def fused_estimates(self, ci_prob: float = 0.95) -> pd.DataFrame:
        """Posterior mean and equal-tailed interval per task: a compact ``summary``.

        Examples
        --------
        >>> import bayesfuse as bf
        >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
        >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
        >>> fit.fused_estimates(ci_prob=0.9)                # K·p rows  # doctest: +SKIP
        """
        table = self.summary(ci_prob)
        return table[["task", "param", "estimate", "mean", "eti_low", "eti_high"]]

    def hyper_summary(self, ci_prob: float = 0.95) -> pd.DataFrame:
        """Posterior summary of the hyperparameters.

        Returns
        -------
        DataFrame
            Indexed by name (``"mu"``, ``"tau"``, ``"mu[read]"``, ``"corr[read,math]"``),
            columns ``mean, sd, eti_low, eti_high, hdi_low, hdi_high, r_hat, ess_bulk,
            ess_tail, prior``.

        Examples
        --------
        >>> import bayesfuse as bf
        >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
        >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
        >>> fit.hyper_summary().loc["tau", ["mean", "eti_low", "eti_high"]]   # doctest: +SKIP
        """
        ci_prob = check_probability(ci_prob)
        diag = self.diagnostics().set_index("quantity")
        rows = []
        for name in self.hyperparameters:
            names, values = flat_names(name, self.idata.posterior[name])
            stats = pd.DataFrame(_interval_columns(values, ci_prob), index=names)
            rows.append(stats)
        if not rows:
            return pd.DataFrame(columns=["mean", "sd", "eti_low", "eti_high", "hdi_low",
                                         "hdi_high", "r_hat", "ess_bulk", "ess_tail", "prior"])
        table = pd.concat(rows)
        for column in ("r_hat", "ess_bulk", "ess_tail"):
            table[column] = diag.loc[table.index, column].to_numpy()
        priors = self.priors
        table["prior"] = [priors.get(n, priors.get(n.split("[")[0], "")) for n in table.index]
        table.index.name = "name"
        table.attrs["ci_prob"] = ci_prob
        return table

    def similarity(self) -> pd.DataFrame:
        """Task-similarity matrix (K×K, index and columns = task ids).

        What it holds depends on the family (``result.family.similarity_kind``): posterior
        correlation of θ (exchangeable), co-clustering probabilities (cluster), posterior
        mean edge weights (gmrf).

        Examples
        --------
        >>> import bayesfuse as bf
        >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
        >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
        >>> sim = fit.similarity()                          # 8×8  # doctest: +SKIP
        >>> sim.loc["A", "B"]                               # doctest: +SKIP
        """
        matrix = np.asarray(self.family.similarity(self))
        frame = pd.DataFrame(matrix, index=self.tasks, columns=self.tasks)
        frame.index.name = "task"
        frame.attrs["kind"] = self.family.similarity_kind
        return frame

    def predict_new_task(self, covariates: Any = None, seed: int | None = None) -> pd.DataFrame:
        """Posterior predictive draws of θ for an unseen task.

        Parameters
        ----------
        covariates : mapping or array of shape (q,), optional
            The new task's covariates (families that use them).
        seed : int, optional
            Seed (default: the fit's seed + 1).

        Returns
        -------
        DataFrame
            One row per posterior draw (chains × draws), one column per parameter.

        Examples
        --------
        >>> import bayesfuse as bf
        >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
        >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
        >>> draws = fit.predict_new_task(seed=1)            # draws × params  # doctest: +SKIP
        >>> draws["theta"].quantile([0.05, 0.95])           # doctest: +SKIP
        """
        from bayesfuse.inference.draws import per_draw_map

        z = self.family.new_task_covariates(covariates)
        data = {k: np.asarray(v) for k, v in self.family.data().items()}
        sites = self._sampled_sites()
        family = self.family

        def one(key, draw):
            return family.draw_new_task(key, data, draw, z)

        draws = per_draw_map(one, sites, self.seed + 1 if seed is None else seed)
        return pd.DataFrame(draws.reshape(-1, len(self.params)), columns=self.params)

    def predict_population(self, covariates: Any, weights: Any = None, kind: str = "mean",
                           seed: int | None = None) -> pd.DataFrame:
        """Posterior of the average effect in a target population (transport).

        The target is described by task-level covariate rows xᵢ (target tasks, sites or
        strata) with weights wᵢ (normalised to sum to 1). Two quantities:

        * ``kind="mean"`` (default): Σᵢ wᵢ E[θ | xᵢ, φ], the population average of the
          conditional mean of a task (for ``metareg`` Σᵢ wᵢ (α + S x̃ᵢ), the regression line
          at the weighted mean covariates) — the average effect over many tasks like the
          rows; its spread is the uncertainty about the hyperparameters φ only;
        * ``kind="predictive"``: Σᵢ wᵢ θᵢ with θᵢ a new task's effect drawn at xᵢ
          (independent draws, as :meth:`predict_new_task`) — the average effect of exactly
          these target tasks, adding their between-task variation (Σᵢ wᵢ² T given φ).

        Parameters
        ----------
        covariates : DataFrame, mapping of columns, or Series (one row)
            N rows, one column per covariate of the model (covariates of the estimates that
            the model does not use are ignored; other columns are refused).
        weights : array-like of shape (N,) or str, optional
            Non-negative, finite weights of the rows (e.g. target sizes), or the name of a
            column of ``covariates`` holding them. Default: equal weights.
        kind : {"mean", "predictive"}
            See above.
        seed : int, optional
            Seed of the ``predictive`` draws (default: the fit's seed + 2).

        Returns
        -------
        DataFrame
            One row per posterior draw (chains × draws), one column per parameter;
            ``attrs``: ``kind``, ``weights`` (normalised, a list of N floats).
            :func:`summarize_draws` gives means and intervals.

        Raises
        ------
        SpecError
            When the model has no task covariates (the average effect is then the same in
            every population: use :meth:`predict_new_task`), or the rows or weights are
            malformed.

        Examples
        --------
        >>> fit = bf.fuse(est, model="metareg")                              # doctest: +SKIP
        >>> target = pd.DataFrame({"x1": [40.0, 60.0], "x2": [0.4, 0.5], "size": [3, 1]})
        >>> draws = fit.predict_population(target, weights="size")          # doctest: +SKIP
        >>> summarize_draws(draws, ci_prob=0.9)                             # doctest: +SKIP
        """
        import jax

        from bayesfuse.inference.draws import per_draw_map

        check_choice(kind, "kind", ("mean", "predictive"))
        frame = _target_frame(covariates)
        if isinstance(weights, str):
            if weights not in frame.columns:
                raise SpecError(f"weights={weights!r} is not a column of the target population "
                                f"(columns: {[str(c) for c in frame.columns]}).")
            weights, frame = frame[weights], frame.drop(columns=weights)
        family = self.family
        z = np.asarray(family.population_covariates(frame), dtype=float)
        w = _target_weights(weights, len(frame))
        data = {k: np.asarray(v) for k, v in family.data().items()}

        if kind == "mean":
            def one(key, draw):
                return w @ family.conditional_mean(data, draw, z)
        else:
            def one(key, draw):
                keys = jax.random.split(key, len(w))
                thetas = jax.vmap(lambda k, x: family.draw_new_task(k, data, draw, x))(keys, z)
                return w @ thetas

        draws = per_draw_map(one, self._sampled_sites(), self.seed + 2 if seed is None else seed)
        table = pd.DataFrame(draws.reshape(-1, len(self.params)), columns=self.params)
        table.attrs = {"kind": kind, "weights": w.tolist()}
        return table

    def _sampled_sites(self) -> dict[str, np.ndarray]:
        """Posterior draws of the variables a family's per-draw functions read."""
        post = self.idata.posterior
        sites = {name: post[name].values for name in post.data_vars}
        if "corr" in sites and "corr_chol" not in sites:
            sites["corr_chol"] = np.linalg.cholesky(sites["corr"])
        return sites

    def diagnostics(self, thresholds: Thresholds | None = None) -> Diagnostics:
        """R-hat, bulk/tail ESS per quantity with a verdict (``.ok``) and ``.advice``.

        Checks: R-hat < 1.01, bulk and tail ESS ≥ 400, zero divergences, E-BFMI > 0.3,
        no transition at the maximum tree depth.

        Examples
        --------
        >>> import bayesfuse as bf
        >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
        >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
        >>> d = fit.diagnostics()                           # doctest: +SKIP
        >>> d.ok, d.advice                                  # doctest: +SKIP
        (True, [])
        """
        if thresholds is None and self._diagnostics is not None:
            return self._diagnostics
        depth = int(self.meta["spec"]["sampler"]["max_tree_depth"])
        checked = [v for v in self.family.checked_variables() if v in self.idata.posterior]
        variables = list(dict.fromkeys(checked + self.hyperparameters + ["theta"]))
        result = diagnose(self.idata, variables, depth, thresholds or Thresholds(),
                          checked=checked + ["theta"])
        extra = self.family.extra_advice(self)
        if extra:
            result.advice = list(result.advice) + list(extra)
            result.ok = False
        if thresholds is None:
            self._diagnostics = result
        return result

    def loo(self, pointwise: bool = False):
        """PSIS-LOO of the task-level predictive log p(θ̂ₖ | θ̂₋ₖ) (``arviz.loo``).

        Examples
        --------
        >>> import bayesfuse as bf
        >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
        >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
        >>> fit.loo()                                       # elpd_loo, p_loo  # doctest: +SKIP
        >>> fit.loo(pointwise=True).pareto_k                # one k per task  # doctest: +SKIP
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return az.loo(self.idata, pointwise=pointwise)

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike[str], force: bool = True) -> Path:
        """Write the fit to netCDF atomically (temporary file, then rename).

        Parameters
        ----------
        path : path
            Target file (``.nc``).
        force : bool
            Overwrite an existing file (default True; the CLI asks for ``--force``).

        Examples
        --------
        >>> import bayesfuse as bf
        >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
        >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
        >>> path = fit.save("fit.nc")                       # doctest: +SKIP
        >>> again = bf.load_fit(path)                       # doctest: +SKIP
        """
        target = Path(path)
        if target.exists() and not force:
            raise FitError(f"{target} exists; pass force=True (--force) to overwrite it.")

        def write(tmp: Path) -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.idata.to_netcdf(str(tmp), engine="h5netcdf")

        return atomic_write_with(target, write, suffix=".nc")


def _target_frame(covariates: Any) -> pd.DataFrame:
    """A target population as a DataFrame (a Series or a mapping of scalars: one row)."""
    if isinstance(covariates, pd.DataFrame):
        return covariates
    if isinstance(covariates, pd.Series):
        return covariates.to_frame().T.infer_objects()
    if isinstance(covariates, Mapping):
        values = list(covariates.values())
        scalar = all(np.ndim(v) == 0 for v in values)
        try:
            return pd.DataFrame([dict(covariates)] if scalar else dict(covariates))
        except ValueError as exc:
            raise SpecError(f"The target population's columns differ in length ({exc}).") \
                from None
    raise SpecError("The target population must be a DataFrame (one row per target task, one "
                    f"column per covariate) or a mapping of columns; got "
                    f"{type(covariates).__name__}.")


def _target_weights(weights: Any, n_rows: int) -> np.ndarray:
    """Validated weights of N target rows, normalised to sum to 1, shape (N,)."""
    if weights is None:
        return np.full(n_rows, 1.0 / n_rows)
    try:
        w = np.asarray(weights, dtype=float)
    except (TypeError, ValueError):
        raise SpecError("weights must be numbers, one per target row; got "
                        f"{np.asarray(weights, dtype=object).ravel()[:3].tolist()}...") from None
    if w.shape != (n_rows,):
        raise SpecError(f"weights must hold one number per target row ({n_rows}); got shape "
                        f"{w.shape}.")
    if not np.isfinite(w).all() or (w < 0).any():
        row = int(np.flatnonzero(~np.isfinite(w) | (w < 0))[0])
        raise SpecError(f"weights must be finite and non-negative; row {row} has {w[row]!r}.")
    if w.sum() <= 0:
        raise SpecError("weights sum to zero; give at least one row a positive weight.")
    return w / w.sum()


def summarize_draws(draws: pd.DataFrame, ci_prob: float = 0.95) -> pd.DataFrame:
    """Mean, sd, equal-tailed and highest-density intervals of draws, one row per column.

    Parameters
    ----------
    draws : DataFrame
        One row per draw (e.g. from :meth:`FusionResult.predict_population` or
        :meth:`FusionResult.predict_new_task`).
    ci_prob : float
        Interval probability, in (0, 1).

    Returns
    -------
    DataFrame
        Indexed by ``param``, columns ``mean, sd, eti_low, eti_high, hdi_low, hdi_high``.

    Examples
    --------
    >>> draws = pd.DataFrame({"theta": np.random.default_rng(0).normal(size=4000)})
    >>> summarize_draws(draws)["mean"].abs().item() < 0.1
    True
    """
    ci_prob = check_probability(ci_prob)
    values = np.asarray(draws, dtype=float)
    table = pd.DataFrame(_interval_columns(values[None], ci_prob),
                         index=pd.Index([str(c) for c in draws.columns], name="param"))
    table.attrs = {**draws.attrs, "ci_prob": ci_prob}
    return table


def load_fit(path: str | os.PathLike[str]) -> FusionResult:
    """Read a fit written by :meth:`FusionResult.save`.

    Examples
    --------
    >>> import bayesfuse as bf
    >>> fit = bf.load_fit("fit.nc")                     # from fit.save  # doctest: +SKIP
    >>> fit.summary()                                   # doctest: +SKIP
    """
    target = Path(path)
    if not target.is_file():
        raise FitError(f"Fit file not found: {target}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            idata = az.InferenceData.from_netcdf(str(target), engine="h5netcdf")
            for group in idata.groups():
                getattr(idata, group).load()
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise FitError(f"{target}: not a readable bayesfuse fit ({type(exc).__name__}).") from None
    return FusionResult(idata)


def compare(fits: Mapping[str, FusionResult], ic: str = "loo",
            method: str = "stacking") -> pd.DataFrame:
    """Compare fits of the same estimates by PSIS-LOO (``arviz.compare``, stacking weights).

    Parameters
    ----------
    fits : mapping of name -> FusionResult
    ic : {"loo", "waic"}
    method : {"stacking", "BB-pseudo-BMA", "pseudo-BMA"}
        How the ``weight`` column is computed: stacking of the predictive distributions
        (Yao, Vehtari, Simpson & Gelman 2018; default) or (Bayesian-bootstrap) pseudo-BMA.

    Returns
    -------
    DataFrame
        ArviZ's comparison table, best model first: ``rank, elpd_loo, p_loo, elpd_diff,
        weight, se, dse, warning, scale``.

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> fits = {name: bf.fuse(est, model=name, seed=0)
    ...         for name in ("pooled", "exchangeable", "independent")}   # doctest: +SKIP
    >>> bf.compare(fits)[["rank", "elpd_loo", "elpd_diff", "weight"]]   # doctest: +SKIP
    """
    check_choice(method, "method", ("stacking", "BB-pseudo-BMA", "pseudo-BMA"))
    if len(fits) < 2:
        raise BayesfuseError("compare() needs at least two fits, e.g. {'exch': f1, 'clus': f2}.")
    first = next(iter(fits.values()))
    for name, fit in fits.items():
        if not isinstance(fit, FusionResult):
            raise BayesfuseError(f"compare(): '{name}' is not a FusionResult.")
        if fit.tasks != first.tasks or not np.allclose(
                fit.estimates.estimates, first.estimates.estimates):
            raise BayesfuseError(
                f"compare(): '{name}' was fitted to different estimates; LOO comparisons need "
                "the same tasks and data."
            )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.compare({name: fit.idata for name, fit in fits.items()}, ic=ic,
                          method=method)
