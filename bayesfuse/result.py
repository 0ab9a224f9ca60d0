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
from bayesfuse.errors import BayesfuseError, FitError
from bayesfuse.families import Family, get_family
from bayesfuse.inference.convert import estimates_from_idata, read_meta

__all__ = ["FusionResult", "load_fit", "compare"]


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
        return self.estimates.tasks

    @property
    def params(self) -> list[str]:
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
        return dict(self.meta["spec"])

    @property
    def seed(self) -> int:
        return int(self.meta["seed"])

    @property
    def timings(self) -> dict[str, float]:
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
        of occupied clusters and a point clustering; for ``gmrf`` the learned edges."""
        return self.family.structure(self)

    # ------------------------------------------------------------------ tables
    def summary(self, ci_prob: float = 0.95) -> pd.DataFrame:
        """Fused estimates per (task, param).

        Returns
        -------
        DataFrame
            Columns ``task, param, estimate, se`` (stage 1), ``mean, sd, eti_low, eti_high,
            hdi_low, hdi_high`` (posterior of θₖ), ``shrinkage`` (posterior mean weight of
            the prior mean in E[θₖ]: 0 no pooling, 1 complete pooling), ``r_hat, ess_bulk,
            ess_tail``; one row per (task, param), K·p rows.
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
        })
        for column in ("r_hat", "ess_bulk", "ess_tail"):
            frame[column] = diag.loc[names, column].to_numpy()
        frame.attrs["ci_prob"] = ci_prob
        return frame

    def results_table(self, ci_prob: float = 0.95, interval: str = "eti",
                      fmt: str = "dataframe", digits: int | None = None) -> pd.DataFrame | str:
        """Fused estimates as a DataFrame, CSV, Markdown, LaTeX or HTML table
        (:func:`bayesfuse.reporting.tables.results_table`)."""
        from bayesfuse.reporting.tables import results_table

        return results_table(self, ci_prob=ci_prob, interval=interval, fmt=fmt, digits=digits)

    def report(self, path: str | os.PathLike[str], force: bool = False,
               ci_prob: float = 0.95, sensitivity: Any = None, interval: str = "eti") -> Path:
        """Write the self-contained HTML report (:func:`bayesfuse.reporting.report.write_report`);
        ``interval`` is ``"eti"`` (equal-tailed) or ``"hdi"``."""
        from bayesfuse.reporting.report import write_report

        return write_report(self, path, sensitivity=sensitivity, ci_prob=ci_prob,
                            interval=interval, force=force)

    def fused_estimates(self, ci_prob: float = 0.95) -> pd.DataFrame:
        """Posterior mean and equal-tailed interval per task: a compact ``summary``."""
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
        """PSIS-LOO of the task-level predictive log p(θ̂ₖ | θ̂₋ₖ) (``arviz.loo``)."""
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
        """
        target = Path(path)
        if target.exists() and not force:
            raise FitError(f"{target} exists; pass force=True (--force) to overwrite it.")

        def write(tmp: Path) -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.idata.to_netcdf(str(tmp), engine="h5netcdf")

        return atomic_write_with(target, write, suffix=".nc")


def load_fit(path: str | os.PathLike[str]) -> FusionResult:
    """Read a fit written by :meth:`FusionResult.save`."""
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
