"""Conversion of sampler output into an ``arviz.InferenceData`` and back.

Groups: ``posterior`` (θ with dims ``task, param`` and the hyperparameters),
``sample_stats``, ``log_likelihood`` (``theta_hat``: per task), ``posterior_predictive``
(replicated θ̂), ``prior``, ``prior_predictive``, ``observed_data`` (θ̂),
``constant_data`` (V, n, covariates, stage-1 pooling weights). What is needed to rebuild the
fit (spec, priors as used, seed, versions, stage-1 flags) is stored as JSON in the
``posterior`` group's ``bayesfuse`` attribute.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
import pandas as pd

from bayesfuse._arviz import az
from bayesfuse.data.estimates import TaskEstimates
from bayesfuse.errors import FitError
from bayesfuse.families.base import Family
from bayesfuse.inference.draws import Draws

__all__ = ["build_idata", "estimates_from_idata", "read_meta", "META_KEY"]

META_KEY = "bayesfuse"


def _dataset(data: dict[str, np.ndarray], coords: dict, dims: dict, default_dims=None):
    kwargs: dict[str, Any] = {"coords": coords, "dims": dims, "library": None}
    if default_dims is not None:
        kwargs["default_dims"] = default_dims
    return az.dict_to_dataset(data, **kwargs)


def build_idata(family: Family, est: TaskEstimates, draws: Draws, meta: dict[str, Any]):
    """Assemble the ``InferenceData`` of a fit.

    Parameters
    ----------
    family : Family
    est : TaskEstimates
    draws : Draws
        Output of the sampler (arrays grouped by chain).
    meta : dict
        JSON-serialisable description of the fit (spec, priors, seed, versions...).
    """
    coords: dict[str, Any] = {"task": est.tasks, "param": est.params, "param_b": est.params}
    coords.update(family.hyper_coords())
    hyper_dims = family.hyper_dims()
    dims = {**hyper_dims, "theta": ["task", "param"], **family.extra_dims()}

    posterior = {**draws.hyper, "theta": draws.theta, **draws.extras}
    groups: dict[str, Any] = {
        "posterior": _dataset(posterior, coords, dims),
        "sample_stats": _dataset(draws.sample_stats, coords, {}),
        "log_likelihood": _dataset({"theta_hat": draws.log_likelihood}, coords,
                                   {"theta_hat": ["task"]}),
        "posterior_predictive": _dataset({"theta_hat": draws.predictive}, coords,
                                         {"theta_hat": ["task", "param"]}),
        "observed_data": _dataset({"theta_hat": est.estimates}, coords,
                                  {"theta_hat": ["task", "param"]}, default_dims=[]),
    }
    constant = {"cov": np.asarray(est.covariances), "pooling": draws.pooling}
    const_dims = {"cov": ["task", "param", "param_b"], "pooling": ["task", "param"]}
    if est.n is not None:
        constant["n"] = est.n
        const_dims["n"] = ["task"]
    if est.covariates is not None:
        constant["covariates"] = est.covariates.to_numpy(dtype=float)
        const_dims["covariates"] = ["task", "covariate"]
        coords["covariate"] = list(est.covariates.columns)
    groups["constant_data"] = _dataset(constant, coords, const_dims, default_dims=[])
    if draws.prior:
        groups["prior"] = _dataset(draws.prior, coords, dims)
    if draws.prior_predictive:
        groups["prior_predictive"] = _dataset(draws.prior_predictive, coords,
                                              {"theta_hat": ["task", "param"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = az.InferenceData(**groups)
    idata.posterior.attrs[META_KEY] = json.dumps(meta, default=_json_default)
    return idata


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def read_meta(idata) -> dict[str, Any]:
    """The fit description stored in the ``posterior`` attributes."""
    try:
        return json.loads(idata.posterior.attrs[META_KEY])
    except (AttributeError, KeyError, TypeError, json.JSONDecodeError):
        raise FitError(
            "This InferenceData was not written by bayesfuse (no 'bayesfuse' attribute in "
            "its posterior group)."
        ) from None


def estimates_from_idata(idata, meta: dict[str, Any]) -> TaskEstimates:
    """Rebuild the stage-1 ``TaskEstimates`` stored in a fit."""
    obs = idata.observed_data["theta_hat"]
    const = idata.constant_data
    covariates = None
    if "covariates" in const:
        covariates = pd.DataFrame(const["covariates"].values,
                                  index=[str(t) for t in const["task"].values],
                                  columns=[str(c) for c in const["covariate"].values])
    flags = pd.DataFrame(meta.get("flags") or [], columns=["task", "status", "reason"])
    return TaskEstimates(
        [str(t) for t in obs["task"].values],
        obs.values,
        const["cov"].values,
        n=const["n"].values if "n" in const else None,
        covariates=covariates,
        params=[str(p) for p in obs["param"].values],
        estimand=meta.get("estimand"),
        flags=flags,
        meta=meta.get("estimates_meta") or {},
    )
