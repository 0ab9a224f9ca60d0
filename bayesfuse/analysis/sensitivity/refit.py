"""Sensitivity analyses that refit the model (the compiled sampler is reused, so refits of
the same shape cost only sampling time).

* :func:`prior_sweep` — refits over a grid of prior strings (:func:`default_sweep` builds a
  data-scaled grid for the scale blocks).
* :func:`loo_influence` — leave-one-task-out influence: PSIS-LOO importance weights first,
  an exact refit without the task where Pareto k > 0.7.
* :func:`inflation` — stage-1 uncertainty inflation: refits with every Vₖ multiplied by c.
* :func:`compare_families` — other families fitted to the same estimates, compared by
  PSIS-LOO with stacking weights (:func:`bayesfuse.compare`).

Every refit keeps the fit's spec, priors as used (except the one being changed), seed and
method; ``**fuse_kwargs`` override the sampler settings (``draws``, ``chains``, ``warmup``,
``method``). The separation from :mod:`bayesfuse.analysis.sensitivity.importance` follows
ArviZ's ``stats`` / ``stats_refitting``.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from itertools import product
from typing import Any

import numpy as np
import pandas as pd

from bayesfuse._validation import check_probability
from bayesfuse.analysis.sensitivity.importance import (
    K_THRESHOLD,
    SensitivityError,
    check_fit,
    posterior_quantities,
    psis_weights,
)
from bayesfuse.data.estimates import TaskEstimates
from bayesfuse.errors import BayesfuseError, BayesfuseWarning, SpecError

__all__ = [
    "prior_sweep",
    "default_sweep",
    "loo_influence",
    "inflation",
    "compare_families",
]


def _refit(fit: Any, estimates: TaskEstimates | None = None,
           priors: Mapping[str, str] | None = None, model: Any = None,
           **overrides: Any) -> Any:
    """Fit again with the spec, priors as used, seed and method of ``fit``.

    ``priors`` replaces ``fit.priors`` entirely; ``model`` replaces the family (its
    default priors then apply); ``overrides`` go to :func:`bayesfuse.fuse` (draws,
    chains, warmup, method...).
    """
    from bayesfuse.inference.fuse import fuse

    meta = fit.meta
    spec = fit.spec
    sampler = dict(spec["sampler"])
    for key in ("chains", "draws", "warmup", "target_accept"):
        if key in overrides and overrides[key] is not None:
            sampler[key] = overrides.pop(key)
    if model is None:
        model = {"family": spec["family"], "options": dict(spec.get("options", {})),
                 "sampler": sampler}
        priors = dict(fit.priors if priors is None else priors)
    else:
        from bayesfuse.specs.models import load_spec

        loaded = load_spec(model)
        model = {"family": loaded.family, "options": dict(loaded.options),
                 "priors": dict(loaded.priors), "sampler": sampler}
    explicit_method = "method" in overrides
    method = overrides.pop("method", meta.get("method", "nuts"))
    backend = meta.get("backend", "numpyro")
    kwargs: dict[str, Any] = {
        "seed": fit.seed,
        "method": method,
        "backend": "numpyro" if backend == "exact" else backend,
        "collapsed": bool(meta.get("collapsed", True)),
        "prior_draws": 0,
        "warn": False,
    }
    kwargs.update(overrides)
    data = fit.estimates if estimates is None else estimates
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BayesfuseWarning)
        try:
            return fuse(data, model=model, priors=priors, **kwargs)
        except SpecError:
            if kwargs["method"] != "exact" or explicit_method:
                raise
            # another family (or prior) without the exact method: sample it with NUTS
            kwargs["method"] = "nuts"
            return fuse(data, model=model, priors=priors, **kwargs)


def _key_quantities(fit: Any, ci_prob: float) -> pd.DataFrame:
    """Fused θ per (task, param) and hyperparameter summaries in one long table.

    Columns ``kind`` (``"theta"`` or ``"hyper"``), ``variable, task, param, mean, sd,
    eti_low, eti_high, r_hat``.
    """
    summary = fit.summary(ci_prob)
    one = len(fit.params) == 1
    theta = pd.DataFrame({
        "kind": "theta",
        "variable": [f"theta[{t}]" if one else f"theta[{t},{p}]"
                     for t, p in zip(summary["task"], summary["param"], strict=True)],
        "task": summary["task"].astype(str),
        "param": summary["param"].astype(str),
        "mean": summary["mean"], "sd": summary["sd"],
        "eti_low": summary["eti_low"], "eti_high": summary["eti_high"],
        "r_hat": summary["r_hat"],
    })
    hyper = fit.hyper_summary(ci_prob)
    hyper_frame = pd.DataFrame({
        "kind": "hyper", "variable": hyper.index.astype(str), "task": "", "param": "",
        "mean": hyper["mean"].to_numpy(), "sd": hyper["sd"].to_numpy(),
        "eti_low": hyper["eti_low"].to_numpy(), "eti_high": hyper["eti_high"].to_numpy(),
        "r_hat": hyper["r_hat"].to_numpy(),
    })
    out = pd.concat([hyper_frame, theta], ignore_index=True)
    out["diagnostics_ok"] = bool(fit.diagnostics().ok)
    return out


def _merge_priors(base: Mapping[str, str], override: Mapping[str, str]) -> dict[str, str]:
    """``base`` with ``override`` applied; a block-wide key (``"tau"``) replaces the
    element keys (``"tau[read]"``) of that block."""
    out = dict(base)
    for key, value in override.items():
        if "[" not in key:
            for existing in [k for k in out if k.split("[", 1)[0] == key]:
                del out[existing]
        out[key] = value
    return out


def _as_fit(fit_or_est: Any, model: Any, fuse_kwargs: Mapping[str, Any]) -> Any:
    from bayesfuse.result import FusionResult

    if isinstance(fit_or_est, FusionResult):
        return fit_or_est
    if isinstance(fit_or_est, TaskEstimates | pd.DataFrame):
        from bayesfuse.inference.fuse import fuse

        kwargs = {"warn": False, **fuse_kwargs}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BayesfuseWarning)
            return fuse(fit_or_est, model=model or "exchangeable", **kwargs)
    raise SensitivityError(
        f"Expected a FusionResult or TaskEstimates; got {type(fit_or_est).__name__}.")


def prior_sweep(
    fit_or_est: Any,
    grid: Mapping[str, Sequence[str]],
    *,
    full_grid: bool = False,
    ci_prob: float = 0.95,
    model: Any = None,
    **fuse_kwargs: Any,
) -> pd.DataFrame:
    """Refit over a grid of prior strings and tabulate the key quantities per setting.

    Parameters
    ----------
    fit_or_est : FusionResult or TaskEstimates
        A fit (its spec, priors as used, seed and method are reused), or estimates to fit
        first with ``model`` and ``fuse_kwargs``.
    grid : mapping of prior name -> sequence of prior strings
        E.g. ``{"tau": ["halfnormal(1)", "halfcauchy(5)", "exponential(0.2)"]}``.
    full_grid : bool
        Refit every combination of the grid (default: one name at a time, the others at the
        fit's priors).
    ci_prob : float
        Interval probability of ``eti_low, eti_high``.
    model : optional
        Family of the base fit when ``fit_or_est`` is a TaskEstimates.
    **fuse_kwargs
        Sampler overrides for the refits (``draws``, ``chains``, ``warmup``, ``method``).

    Returns
    -------
    DataFrame
        Long table: ``setting`` (``"base"`` or ``"tau=halfcauchy(5)"``), ``priors`` (the
        changed priors), then the columns of the key quantities: ``kind`` (``"theta"`` /
        ``"hyper"``), ``variable, task, param, mean, sd, eti_low, eti_high, r_hat,
        diagnostics_ok``; and ``seconds`` (refit time).

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
    >>> grid = {"tau": ["halfnormal(5)", "halfcauchy(5)", "exponential(0.2)"]}
    >>> table = bf.sensitivity.prior_sweep(fit, grid, draws=500)  # doctest: +SKIP
    """
    ci_prob = check_probability(ci_prob)
    if not isinstance(grid, Mapping) or not grid:
        raise SensitivityError(
            "grid must map prior names to lists of prior strings, e.g. "
            "{'tau': ['halfnormal(1)', 'halfcauchy(5)']}.")
    for name, values in grid.items():
        if isinstance(values, str) or not isinstance(values, Sequence) or not values:
            raise SensitivityError(
                f"grid['{name}'] must be a non-empty list of prior strings; got {values!r}.")
    base_priors = fuse_kwargs.pop("priors", None)
    fit = _as_fit(fit_or_est, model, {"priors": base_priors, **fuse_kwargs})
    settings: list[dict[str, str]]
    if full_grid:
        keys = list(grid)
        settings = [dict(zip(keys, combo, strict=True))
                    for combo in product(*(grid[k] for k in keys))]
    else:
        settings = [{name: value} for name, values in grid.items() for value in values]
    frames = []
    base = _key_quantities(fit, ci_prob)
    frames.append(base.assign(setting="base", priors="", seconds=0.0))
    for setting in settings:
        label = ", ".join(f"{k}={v}" for k, v in setting.items())
        start = time.perf_counter()
        refit = _refit(fit, priors=_merge_priors(fit.priors, setting), **fuse_kwargs)
        seconds = time.perf_counter() - start
        frames.append(_key_quantities(refit, ci_prob).assign(
            setting=label, priors=label, seconds=seconds))
    table = pd.concat(frames, ignore_index=True)
    front = ["setting", "priors"]
    return table[front + [c for c in table.columns if c not in front]]


def default_sweep(fit: Any) -> dict[str, list[str]]:
    """A data-scaled grid of alternative priors for the scale blocks of ``fit``.

    For every positive-support block (τ, ν, the concentration): the fitted prior's scale
    halved and doubled as a half-normal, a half-Cauchy and an exponential with the same
    scale; for a block with per-element priors the first element's scale is used.

    Returns
    -------
    dict of block name -> list of prior strings
    """
    from bayesfuse.specs.priors import format_number, parse_prior

    out: dict[str, list[str]] = {}
    for block in fit.family.prior_blocks():
        if block.support != "positive" or block.name not in fit.idata.posterior:
            continue
        if block.name not in fit.hyperparameters:
            continue
        current = fit.family.priors[block.name][0]
        scale = _prior_scale(current)
        choices = [f"halfnormal({format_number(float(f'{s:.2g}'))})"
                   for s in (scale / 2, scale * 2)]
        choices += [f"halfcauchy({format_number(float(f'{scale:.2g}'))})",
                    f"exponential({format_number(float(f'{1 / scale:.2g}'))})"]
        text = str(current)
        out[block.name] = [c for c in dict.fromkeys(choices) if str(parse_prior(c)) != text]
    return out


def _prior_scale(prior: Any) -> float:
    """A typical scale of a positive prior (its scale argument, or mean for gamma/exp)."""
    f, a = prior.family, prior.args
    if f in ("halfnormal", "halfcauchy"):
        return float(a[0])
    if f == "halfstudent_t":
        return float(a[1])
    if f == "exponential":
        return float(1 / a[0])
    if f == "gamma":
        return float(a[0] / a[1])
    if f == "lognormal":
        return float(math.exp(a[0]))
    if f == "inv_gamma":
        return float(a[1] / max(a[0] - 1, 1.0))
    return 1.0


def loo_influence(
    fit: Any,
    *,
    k_threshold: float = K_THRESHOLD,
    refit: bool = True,
    **fuse_kwargs: Any,
) -> pd.DataFrame:
    """Leave-one-task-out influence on the hyperparameters and the other tasks.

    For each task k the posterior without task k is reached by PSIS importance weights
    w ∝ 1 / p(θ̂ₖ | φ) (the ``log_likelihood`` group; exact for θⱼ, j ≠ k, because tasks
    are conditionally independent given φ). Where the Pareto k of those weights exceeds
    ``k_threshold`` the task is dropped (:meth:`TaskEstimates.drop`) and the model refitted
    with the same spec, priors as used and seed.

    It lives with the refitting analyses, not in :mod:`.importance`, as ArviZ keeps
    ``reloo`` in ``stats_refitting``: the importance weights are cheap, while the exact
    refits of the high-k tasks are where the time goes and what the function depends on
    (the sampler, :func:`bayesfuse.fuse`).

    Parameters
    ----------
    fit : FusionResult
    k_threshold : float
        Pareto k above which a task is refitted (0.7).
    refit : bool
        Refit high-k tasks (default); with ``False`` all rows are importance weighted.
    **fuse_kwargs
        Sampler overrides for the refits (``draws``, ``chains``, ``method``...).

    Returns
    -------
    DataFrame
        One row per task: ``task, pareto_k, elpd_loo`` (pointwise PSIS-LOO), ``method``
        (``"psis"`` or ``"refit"``), ``delta_<hyper>`` for every hyperparameter (posterior
        mean without the task minus with it), ``max_shift_other`` (largest absolute change
        of another task's fused mean), ``max_shift_other_task``, ``influence`` (largest
        change of a hyperparameter mean or another task's fused mean, in units of its
        posterior sd), ``rank`` (1 = most influential). ``attrs["detail"]`` holds the long
        table ``left_out, variable, mean, loo_mean, delta, delta_sd, method``.

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
    >>> influence = bf.sensitivity.loo_influence(fit)   # one row per task  # doctest: +SKIP
    >>> influence.sort_values("pareto_k").tail(3)        # doctest: +SKIP
    """
    check_fit(fit)
    if len(fit.tasks) < 3:
        raise SensitivityError("loo_influence needs at least 3 tasks.")
    loo = fit.loo(pointwise=True)
    pareto_k = np.asarray(loo.pareto_k.values, dtype=float)
    elpd = np.asarray(loo.loo_i.values, dtype=float)
    hyper_names, hyper_draws = posterior_quantities(fit, theta=False) if fit.hyperparameters else (
        [], np.zeros((pareto_k.size, 0)))
    theta = fit.idata.posterior["theta"].transpose("chain", "draw", "task", "param").values
    n_tasks, n_params = theta.shape[2], theta.shape[3]
    theta = theta.reshape(-1, n_tasks * n_params)
    draws = np.concatenate([hyper_draws, theta], axis=1) if hyper_names else theta
    n_hyper = len(hyper_names)
    mean = draws.mean(axis=0)
    sd = draws.std(axis=0, ddof=1)
    loglik = fit.idata.log_likelihood["theta_hat"].transpose("chain", "draw", "task").values
    loglik = loglik.reshape(-1, n_tasks)
    weights, _ = psis_weights(-loglik.T)  # (K, N)
    loo_mean = weights @ draws  # (K, Q)
    methods = np.array(["psis"] * n_tasks, dtype=object)
    if refit:
        for k in np.flatnonzero(pareto_k > k_threshold):
            task = fit.tasks[k]
            other = _refit(fit, estimates=fit.estimates.drop([task]), **dict(fuse_kwargs))
            row = np.full(draws.shape[1], np.nan)
            if n_hyper:
                _, h = posterior_quantities(other, hyper_names, theta=False)
                row[:n_hyper] = h.mean(axis=0)
            t = other.idata.posterior["theta"].transpose("chain", "draw", "task", "param")
            t_mean = t.values.reshape(-1, len(other.tasks), n_params).mean(axis=0)
            keep = [j for j in range(n_tasks) if j != k]
            cols = (n_hyper + np.add.outer(np.array(keep) * n_params,
                                           np.arange(n_params))).reshape(-1)
            row[cols] = t_mean.reshape(-1)
            loo_mean[k] = row
            methods[k] = "refit"
    delta = loo_mean - mean[None, :]
    # the left-out task's own θ is not an "other task": mask it
    own = np.zeros_like(delta, dtype=bool)
    for j in range(n_params):
        own[np.arange(n_tasks), n_hyper + np.arange(n_tasks) * n_params + j] = True
    delta = np.where(own, np.nan, delta)
    std_delta = np.abs(delta) / np.where(sd > 0, sd, np.inf)[None, :]
    theta_delta = np.abs(delta[:, n_hyper:])
    max_other = np.nanmax(theta_delta, axis=1)
    arg_other = np.nanargmax(np.where(np.isnan(theta_delta), -np.inf, theta_delta), axis=1)
    table = pd.DataFrame({"task": fit.tasks, "pareto_k": pareto_k, "elpd_loo": elpd,
                          "method": methods})
    for i, name in enumerate(hyper_names):
        table[f"delta_{name}"] = delta[:, i]
    table["max_shift_other"] = max_other
    table["max_shift_other_task"] = [fit.tasks[i // n_params] for i in arg_other]
    table["influence"] = np.nanmax(std_delta, axis=1)
    table["rank"] = table["influence"].rank(ascending=False, method="first").astype(int)
    one = n_params == 1
    names = hyper_names + [f"theta[{t}]" if one else f"theta[{t},{p}]"
                           for t in fit.tasks for p in fit.params]
    detail = pd.DataFrame({
        "left_out": np.repeat(fit.tasks, len(names)),
        "variable": np.tile(names, n_tasks),
        "mean": np.tile(mean, n_tasks),
        "loo_mean": loo_mean.reshape(-1),
        "delta": delta.reshape(-1),
        "delta_sd": (delta / np.where(sd > 0, sd, np.inf)[None, :]).reshape(-1),
        "method": np.repeat(methods, len(names)),
    }).dropna(subset=["delta"])
    table.attrs["detail"] = detail.reset_index(drop=True)
    table.attrs["k_threshold"] = k_threshold
    return table


def inflation(
    fit: Any,
    factors: Sequence[float] = (1.0, 1.5, 2.0, 4.0),
    *,
    ci_prob: float = 0.95,
    **fuse_kwargs: Any,
) -> pd.DataFrame:
    """Stage-1 uncertainty inflation: refit with every Vₖ multiplied by c.

    Robustness to standard errors that stage 1 underestimated (e.g. by ignoring clustering
    or model selection). ``c = 1`` is the fit itself.

    Parameters
    ----------
    fit : FusionResult
    factors : sequence of float
        Multipliers c > 0 of the covariances (the SEs scale by √c).
    ci_prob : float
    **fuse_kwargs
        Sampler overrides for the refits.

    Returns
    -------
    DataFrame
        Long table: ``factor`` then the key quantity columns (``kind, variable, task,
        param, mean, sd, eti_low, eti_high, r_hat, diagnostics_ok``) and ``seconds``.

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
    >>> table = bf.sensitivity.inflation(fit, (1, 2, 4), draws=500)   # doctest: +SKIP
    """
    check_fit(fit)
    ci_prob = check_probability(ci_prob)
    values = [float(c) for c in factors]
    if not values or any(not math.isfinite(c) or c <= 0 for c in values):
        raise SensitivityError(
            f"factors must be positive numbers, e.g. (1, 1.5, 2, 4); got {factors!r}.")
    frames = []
    for c in values:
        start = time.perf_counter()
        current = fit if c == 1.0 else _refit(fit, estimates=fit.estimates.inflate(c),
                                              **dict(fuse_kwargs))
        frames.append(_key_quantities(current, ci_prob).assign(
            factor=c, seconds=time.perf_counter() - start))
    table = pd.concat(frames, ignore_index=True)
    return table[["factor"] + [c for c in table.columns if c != "factor"]]


def compare_families(
    fit: Any,
    families: Sequence[str] = ("pooled", "exchangeable", "independent"),
    *,
    fits: Mapping[str, Any] | None = None,
    **fuse_kwargs: Any,
) -> pd.DataFrame:
    """Fit other families to the same estimates and compare them by PSIS-LOO.

    Parameters
    ----------
    fit : FusionResult
        The fit under study (listed under its family name).
    families : sequence of str
        Shipped model names to fit as well (their data-scaled default priors; the fit's own
        family is not refitted).
    fits : mapping of name -> FusionResult, optional
        Further fits of the same estimates to include as they are.
    **fuse_kwargs
        Sampler overrides for the new fits.

    Returns
    -------
    DataFrame
        :func:`bayesfuse.compare`'s table (``rank, elpd_loo, p_loo, elpd_diff, weight``
        (stacking), ``se, dse, warning``), best first. ``attrs["skipped"]`` maps the
        families that could not be fitted to the reason.

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
    >>> table = bf.sensitivity.compare_families(fit, ("pooled", "independent"))  # doctest: +SKIP
    >>> table["weight"]                                  # stacking weights  # doctest: +SKIP
    """
    from bayesfuse.result import compare

    check_fit(fit)
    models: dict[str, Any] = {fit.model: fit}
    skipped: dict[str, str] = {}
    for name in families:
        if name in models:
            continue
        try:
            models[name] = _refit(fit, model=name, **dict(fuse_kwargs))
        except BayesfuseError as exc:  # e.g. metareg on estimates without covariates
            skipped[name] = str(exc)
    models.update(dict(fits or {}))
    if len(models) < 2:
        reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        raise SensitivityError("compare_families needs at least one other family that can be "
                               f"fitted, e.g. families=('pooled',). {reasons}".strip())
    table = compare(models)
    table.attrs["skipped"] = skipped
    return table

