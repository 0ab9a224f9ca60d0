"""Sensitivity analysis of a fusion fit: how much do the conclusions depend on the priors,
on single tasks, on the stage-1 standard errors and on the family?

Five analyses (design §5), each returning a DataFrame:

* :func:`power_scaling` — prior and likelihood **power-scaling** sensitivity without
  refitting (Kallioinen, Paananen, Bürkner & Vehtari 2023, "Detecting and diagnosing prior
  and likelihood sensitivity with power-scaling", *Statistics and Computing* 34:57; the R
  package *priorsense*). The prior p(φ) of the sampled hyperparameters (the blocks that take
  prior strings: μ, τ, LKJ η, ...) or the likelihood is raised to a power α near 1; the
  power-scaled posterior is reached by Pareto-smoothed importance sampling of the existing
  draws, and the cumulative Jensen–Shannon distance between the base and the perturbed
  posterior of each quantity, differentiated with respect to log₂ α at α = 1, is the
  sensitivity. Above ``threshold`` (0.05) a quantity is flagged: prior *and* likelihood
  sensitive is a **prior-data conflict**, prior sensitive only is a **strong prior / weak
  likelihood**.
* :func:`prior_sweep` — refits over a grid of prior strings (the compiled sampler is reused,
  so refits of the same shape cost only sampling time).
* :func:`loo_influence` — leave-one-task-out influence: PSIS-LOO importance weights first,
  an exact refit without the task where Pareto k > 0.7.
* :func:`inflation` — stage-1 uncertainty inflation: refits with every Vₖ multiplied by c.
* :func:`compare_families` — other families fitted to the same estimates, compared by
  PSIS-LOO with stacking weights (:func:`bayesfuse.compare`).

:func:`sensitivity_analysis` runs them all into a :class:`SensitivityResult`;
:func:`sensitivity_report` writes it as one self-contained HTML file (figures inline as
base64 PNG, no network requests), which is what ``bayesfuse sensitivity fit.nc -o
sensitivity.html`` does.

Likelihood in the collapsed families
------------------------------------
The likelihood that is power-scaled is the one stored in the fit's ``log_likelihood`` group:
p(θ̂ₖ | φ) per task, with θ integrated out (for conditionally independent tasks its sum over
tasks is the full marginal likelihood). Prior and likelihood scaling therefore both act on
the hyperparameters φ, and θ | φ, θ̂ is carried along with each draw.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayesfuse.data.estimates import TaskEstimates
from bayesfuse.errors import BayesfuseError, BayesfuseWarning, FitError, SpecError

__all__ = [
    "SensitivityError",
    "SensitivityWarning",
    "SensitivityResult",
    "log_prior_draws",
    "log_likelihood_draws",
    "powerscale_weights",
    "cjs_distance",
    "power_scaling",
    "power_scaling_sequence",
    "prior_sweep",
    "loo_influence",
    "inflation",
    "compare_families",
    "sensitivity_analysis",
    "sensitivity_report",
]

#: priorsense's flagging threshold for the CJS-derivative sensitivity
SENSITIVITY_THRESHOLD = 0.05
#: Pareto k above which importance sampling is unreliable (Vehtari et al. 2024)
K_THRESHOLD = 0.7
DIAGNOSES = ("prior-data conflict", "strong prior / weak likelihood", "-")
COMPONENTS = ("prior", "likelihood")


class SensitivityError(BayesfuseError, ValueError):
    """Invalid input to a sensitivity analysis (an α, a grid, a variable name)."""


class SensitivityWarning(BayesfuseWarning):
    """A sensitivity estimate that may be unreliable (high Pareto k)."""


# ====================================================================== draws of a fit
def _check_fit(fit: Any) -> None:
    from bayesfuse.result import FusionResult

    if not isinstance(fit, FusionResult):
        raise SensitivityError(
            f"Expected a FusionResult (from bf.fuse or bf.load_fit); got {type(fit).__name__}."
        )


def _quantities(fit: Any, variables: Sequence[str] | None = None,
                theta: bool = True) -> tuple[list[str], np.ndarray]:
    """Flat names and draws of the hyperparameters and θ.

    Returns
    -------
    names : list of str of length Q
        ``"mu"``, ``"tau[read]"``, ``"theta[A]"`` (p = 1) or ``"theta[A,read]"``.
    draws : ndarray of shape (chain·draw, Q)
    """
    from bayesfuse.analysis.diagnostics import flat_names

    post = fit.idata.posterior
    names: list[str] = []
    blocks: list[np.ndarray] = []
    for name in fit.hyperparameters:
        n, v = flat_names(name, post[name])
        names += n
        blocks.append(v.reshape(-1, v.shape[-1]))
    if theta:
        values = post["theta"].transpose("chain", "draw", "task", "param").values
        if len(fit.params) == 1:
            names += [f"theta[{t}]" for t in fit.tasks]
        else:
            names += [f"theta[{t},{p}]" for t in fit.tasks for p in fit.params]
        blocks.append(values.reshape(values.shape[0] * values.shape[1], -1))
    draws = np.concatenate(blocks, axis=1).astype(float)
    if variables is not None:
        index = {n: i for i, n in enumerate(names)}
        missing = [v for v in variables if v not in index]
        if missing:
            raise SensitivityError(
                f"Unknown variable(s) {missing[:5]}; valid names: "
                f"{', '.join(names[:12])}{' ...' if len(names) > 12 else ''}."
            )
        cols = [index[v] for v in variables]
        return list(variables), draws[:, cols]
    return names, draws


def log_prior_draws(fit: Any, blocks: Sequence[str] | None = None) -> np.ndarray:
    """Log prior density of the sampled hyperparameters, per posterior draw.

    Only the blocks that take prior strings are included (``fit.priors``: μ, τ, the LKJ
    correlation, ν, the concentration...); the hierarchical layer (θ | φ, mixture weights
    given the concentration, robust scales given ν) is part of the model, not of the prior
    that is power-scaled. Normalising constants are dropped (they cancel in the weights).

    Parameters
    ----------
    fit : FusionResult
    blocks : sequence of str, optional
        Prior blocks to include (default: all with a posterior variable), e.g. ``["mu"]``.

    Returns
    -------
    ndarray of shape (chain·draw,)
    """
    _check_fit(fit)
    post = fit.idata.posterior
    family = fit.family
    available = [b for b in family.prior_blocks() if b.name in post]
    if blocks is not None:
        names = {b.name for b in available}
        unknown = [b for b in blocks if b not in names]
        if unknown:
            raise SensitivityError(
                f"Unknown prior block(s) {unknown} for family '{fit.model}'; valid blocks: "
                f"{', '.join(sorted(names)) or 'none'}."
            )
        available = [b for b in available if b.name in set(blocks)]
    n = post.sizes["chain"] * post.sizes["draw"]
    total = np.zeros(n)
    for block in available:
        priors = family.priors[block.name]
        values = post[block.name].values
        values = values.reshape((n,) + values.shape[2:])
        if block.support == "correlation":
            eta = priors[0].args[0]
            _, logdet = np.linalg.slogdet(values)  # LKJ(η): p(R) ∝ det(R)^(η−1)
            total += (eta - 1.0) * logdet
            continue
        if len(priors) == 1:
            total += priors[0].logpdf(values).reshape(n, -1).sum(axis=1)
            continue
        flat = values.reshape(n, -1)
        if flat.shape[1] == len(priors):
            columns = flat[:, None, :]
        elif values.shape[-1] == len(priors):
            columns = values.reshape(n, -1, len(priors))
        else:  # pragma: no cover - a family whose block layout we do not know
            raise FitError(
                f"Cannot match the {len(priors)} priors of '{block.name}' to its posterior "
                f"draws of shape {values.shape[1:]}."
            )
        for j, prior in enumerate(priors):  # loop over prior elements, not draws
            total += prior.logpdf(columns[..., j]).sum(axis=1)
    if not np.all(np.isfinite(total)):
        raise FitError("The log prior is not finite at some posterior draws; the fit's "
                       "priors do not match its draws (was the fit file edited?).")
    return total


def log_likelihood_draws(fit: Any) -> np.ndarray:
    """Σₖ log p(θ̂ₖ | φ) per posterior draw, from the ``log_likelihood`` group.

    Returns
    -------
    ndarray of shape (chain·draw,)
    """
    _check_fit(fit)
    loglik = fit.idata.log_likelihood["theta_hat"].transpose("chain", "draw", "task").values
    return loglik.reshape(-1, loglik.shape[-1]).sum(axis=1)


def _psis(log_ratio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pareto-smoothed normalised weights and k for rows of log ratios.

    Parameters
    ----------
    log_ratio : ndarray of shape (m, N)

    Returns
    -------
    weights : ndarray of shape (m, N), rows summing to 1
    k : ndarray of shape (m,)
    """
    import arviz as az

    log_ratio = np.atleast_2d(np.asarray(log_ratio, dtype=float))
    flat = np.ptp(log_ratio, axis=1) < 1e-12
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lw, k = az.psislw(log_ratio - log_ratio.max(axis=1, keepdims=True))
    lw, k = np.asarray(lw), np.atleast_1d(np.asarray(k, dtype=float))
    weights = np.exp(lw - lw.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    weights[flat] = 1.0 / log_ratio.shape[1]
    k = np.where(flat, -np.inf, k)
    return weights, k


def _component_log(fit: Any, component: str, prior_blocks: Sequence[str] | None) -> np.ndarray:
    if component == "prior":
        return log_prior_draws(fit, prior_blocks)
    if component == "likelihood":
        return log_likelihood_draws(fit)
    raise SensitivityError(f"component must be 'prior' or 'likelihood'; got {component!r}.")


def powerscale_weights(fit: Any, alpha: float | Sequence[float], component: str = "prior",
                       prior_blocks: Sequence[str] | None = None,
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Importance weights that turn the posterior into the power-scaled posterior.

    Power-scaling a component c (prior or likelihood) by α gives
    p_α(φ | θ̂) ∝ c(φ)^α · rest(φ), so the weights are w ∝ c(φ)^(α−1), Pareto-smoothed.

    Parameters
    ----------
    fit : FusionResult
    alpha : float or sequence of m floats
        Powers (> 0); α < 1 weakens the component, α > 1 strengthens it.
    component : {"prior", "likelihood"}
    prior_blocks : sequence of str, optional
        Power-scale only these prior blocks (default: all).

    Returns
    -------
    weights : ndarray of shape (m, chain·draw)
        Normalised weights, one row per α (in draw order chain-major).
    pareto_k : ndarray of shape (m,)
        Pareto k of each set of weights (> 0.7: unreliable).
    """
    alphas = np.atleast_1d(np.asarray(alpha, dtype=float))
    if alphas.ndim != 1 or not np.all(np.isfinite(alphas)) or np.any(alphas <= 0):
        raise SensitivityError(f"alpha must be positive numbers, e.g. 0.5 or 2; got {alpha!r}.")
    log_c = _component_log(fit, component, prior_blocks)
    return _psis((alphas[:, None] - 1.0) * log_c[None, :])


# ====================================================================== CJS distance
def _cjs_sorted(x: np.ndarray, wq: np.ndarray) -> np.ndarray:
    """CJS distance between equal-weight sorted draws and the same draws weighted.

    Parameters
    ----------
    x : ndarray of shape (N, Q), each column sorted ascending
    wq : ndarray of shape (N, Q), the weights of the sorted draws (columns sum to 1)

    Returns
    -------
    ndarray of shape (Q,)
    """
    n = x.shape[0]
    width = np.diff(x, axis=0)  # (N-1, Q)
    px = (np.arange(1, n) / n)[:, None]
    qx = np.clip(np.cumsum(wq, axis=0)[:-1], 0.0, 1.0)
    px_int = (px * width).sum(axis=0)
    qx_int = (qx * width).sum(axis=0)
    mix = 0.5 * (px + qx)
    with np.errstate(divide="ignore", invalid="ignore"):
        term_p = np.where(px > 0, px * (np.log2(px) - np.log2(mix)), 0.0)
        term_q = np.where(qx > 0, qx * (np.log2(qx) - np.log2(mix)), 0.0)
    cjs_pq = (width * term_p).sum(axis=0) + 0.5 / math.log(2) * (qx_int - px_int)
    cjs_qp = (width * term_q).sum(axis=0) + 0.5 / math.log(2) * (px_int - qx_int)
    bound = px_int + qx_int
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(bound > 0, (cjs_pq + cjs_qp) / bound, 0.0)
    return np.sqrt(np.clip(out, 0.0, None))


def cjs_distance(draws: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Cumulative Jensen–Shannon distance between a sample and its reweighted version.

    The CJS divergence of Nguyen & Vreeken (2015), symmetrised, normalised by its upper
    bound and square-rooted, as in priorsense: 0 for identical distributions, at most 1.
    It is computed for x and for −x and the larger value is returned (invariance to the
    sign of a quantity).

    Parameters
    ----------
    draws : ndarray of shape (N,) or (N, Q)
        Draws of Q quantities (equal weights: the base posterior).
    weights : ndarray of shape (N,)
        Importance weights of the same draws (the perturbed posterior); normalised here.

    Returns
    -------
    ndarray of shape (Q,) (a float for 1-D ``draws``)
    """
    x = np.asarray(draws, dtype=float)
    scalar = x.ndim == 1
    x = x[:, None] if scalar else x
    w = np.asarray(weights, dtype=float)
    if w.shape != (x.shape[0],):
        raise SensitivityError(
            f"weights must have shape ({x.shape[0]},) like the draws; got {w.shape}.")
    w = w / w.sum()
    order = np.argsort(x, axis=0, kind="stable")
    xs = np.take_along_axis(x, order, axis=0)
    ws = w[order]
    up = _cjs_sorted(xs, ws)
    down = _cjs_sorted(-xs[::-1], ws[::-1])
    out = np.maximum(up, down)
    return float(out[0]) if scalar else out


# ====================================================================== power scaling
def _diagnose(prior: np.ndarray, likelihood: np.ndarray, threshold: float) -> list[str]:
    out = []
    for p, lik in zip(prior, likelihood, strict=True):
        if p >= threshold and lik >= threshold:
            out.append(DIAGNOSES[0])
        elif p >= threshold:
            out.append(DIAGNOSES[1])
        else:
            out.append(DIAGNOSES[2])
    return out


def power_scaling(
    fit: Any,
    *,
    variables: Sequence[str] | None = None,
    lower_alpha: float = 0.99,
    upper_alpha: float = 1.01,
    threshold: float = SENSITIVITY_THRESHOLD,
    prior_blocks: Sequence[str] | None = None,
    warn: bool = True,
) -> pd.DataFrame:
    """Prior and likelihood power-scaling sensitivity per quantity, without refitting.

    For each component the posterior draws are reweighted to α = ``lower_alpha`` and α =
    ``upper_alpha`` (Pareto-smoothed importance sampling); the sensitivity of a quantity is
    the derivative of the cumulative Jensen–Shannon distance between its base and its
    power-scaled posterior with respect to log₂ α, by the finite difference
    (CJS(α_low) + CJS(α_up)) / (2 log₂ α_up) of priorsense.

    Parameters
    ----------
    fit : FusionResult
    variables : sequence of str, optional
        Quantities (default: every hyperparameter and every θₖ), named as in the output.
    lower_alpha, upper_alpha : float
        Powers below and above 1 (defaults 0.99 and 1.01).
    threshold : float
        Sensitivity above which a quantity is flagged (0.05).
    prior_blocks : sequence of str, optional
        Prior blocks to power-scale (default: all, e.g. ``["mu"]`` for μ only).
    warn : bool
        Emit a :class:`SensitivityWarning` when a Pareto k exceeds 0.7.

    Returns
    -------
    DataFrame
        One row per quantity: ``variable, prior_sensitivity, likelihood_sensitivity,
        diagnosis`` (``"prior-data conflict"``, ``"strong prior / weak likelihood"`` or
        ``"-"``), ``pareto_k_prior, pareto_k_likelihood`` (largest k of the two α),
        ``mean, sd`` (base posterior). ``attrs`` hold the settings.

    Examples
    --------
    >>> table = bf.sensitivity.power_scaling(fit)                    # doctest: +SKIP
    >>> table[table.diagnosis != "-"]                                # doctest: +SKIP
    """
    _check_fit(fit)
    if not (0 < lower_alpha < 1 < upper_alpha):
        raise SensitivityError(
            f"Need 0 < lower_alpha < 1 < upper_alpha; got {lower_alpha} and {upper_alpha}.")
    if not threshold > 0:
        raise SensitivityError(f"threshold must be > 0, e.g. 0.05; got {threshold!r}.")
    names, draws = _quantities(fit, variables)
    result: dict[str, Any] = {"variable": names}
    ks: dict[str, float] = {}
    for component in COMPONENTS:
        weights, k = powerscale_weights(fit, [lower_alpha, upper_alpha], component,
                                        prior_blocks if component == "prior" else None)
        lower = cjs_distance(draws, weights[0])
        upper = cjs_distance(draws, weights[1])
        result[f"{component}_sensitivity"] = (lower + upper) / (2 * math.log2(upper_alpha))
        ks[component] = float(np.max(k))
    table = pd.DataFrame(result)
    table["diagnosis"] = _diagnose(table["prior_sensitivity"].to_numpy(),
                                   table["likelihood_sensitivity"].to_numpy(), threshold)
    table["pareto_k_prior"] = ks["prior"]
    table["pareto_k_likelihood"] = ks["likelihood"]
    table["mean"] = draws.mean(axis=0)
    table["sd"] = draws.std(axis=0, ddof=1)
    table.attrs.update({"threshold": threshold, "lower_alpha": lower_alpha,
                        "upper_alpha": upper_alpha,
                        "prior_blocks": list(prior_blocks) if prior_blocks else "all"})
    bad = [c for c, k in ks.items() if k > K_THRESHOLD]
    if warn and bad:
        warnings.warn(
            f"Power-scaling the {' and '.join(bad)}: Pareto k = "
            f"{', '.join(f'{ks[c]:.2f}' for c in bad)} > {K_THRESHOLD}; the importance "
            "weights are unreliable, so the sensitivities are rough. Refit with more draws or "
            "check with prior_sweep().",
            SensitivityWarning, stacklevel=2)
    return table


def power_scaling_sequence(
    fit: Any,
    alphas: Sequence[float] = (0.5, 0.71, 0.84, 1.0, 1.19, 1.41, 2.0),
    *,
    variables: Sequence[str] | None = None,
    components: Sequence[str] = COMPONENTS,
    prior_blocks: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Power-scaled posterior means and sds over a grid of α (importance weighted).

    Parameters
    ----------
    fit : FusionResult
    alphas : sequence of float
        Powers (> 0); 1 is the fitted posterior.
    variables : sequence of str, optional
        Quantities (default: the hyperparameters).
    components : sequence of {"prior", "likelihood"}
    prior_blocks : sequence of str, optional

    Returns
    -------
    DataFrame
        Long table with columns ``component, alpha, variable, mean, sd, pareto_k``
        (len(components)·len(alphas)·Q rows).
    """
    _check_fit(fit)
    theta = variables is not None or not fit.hyperparameters
    names, draws = _quantities(fit, variables, theta=theta)
    alphas = np.asarray(alphas, dtype=float)
    frames = []
    for component in components:
        weights, k = powerscale_weights(fit, alphas, component,
                                        prior_blocks if component == "prior" else None)
        mean = weights @ draws  # (m, Q)
        var = weights @ draws**2 - mean**2
        frames.append(pd.DataFrame({
            "component": component,
            "alpha": np.repeat(alphas, len(names)),
            "variable": np.tile(names, len(alphas)),
            "mean": mean.reshape(-1),
            "sd": np.sqrt(np.clip(var, 0, None)).reshape(-1),
            "pareto_k": np.repeat(k, len(names)),
        }))
    return pd.concat(frames, ignore_index=True)


# ====================================================================== refits
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


def _check_ci(ci_prob: float) -> float:
    if not isinstance(ci_prob, int | float) or not 0 < ci_prob < 1:
        raise SensitivityError(f"ci_prob must be in (0, 1), e.g. 0.95; got {ci_prob!r}.")
    return float(ci_prob)


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
    """
    ci_prob = _check_ci(ci_prob)
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
    """
    _check_fit(fit)
    if len(fit.tasks) < 3:
        raise SensitivityError("loo_influence needs at least 3 tasks.")
    loo = fit.loo(pointwise=True)
    pareto_k = np.asarray(loo.pareto_k.values, dtype=float)
    elpd = np.asarray(loo.loo_i.values, dtype=float)
    hyper_names, hyper_draws = _quantities(fit, theta=False) if fit.hyperparameters else (
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
    weights, _ = _psis(-loglik.T)  # (K, N)
    loo_mean = weights @ draws  # (K, Q)
    methods = np.array(["psis"] * n_tasks, dtype=object)
    if refit:
        for k in np.flatnonzero(pareto_k > k_threshold):
            task = fit.tasks[k]
            other = _refit(fit, estimates=fit.estimates.drop([task]), **dict(fuse_kwargs))
            row = np.full(draws.shape[1], np.nan)
            if n_hyper:
                _, h = _quantities(other, hyper_names, theta=False)
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
    """
    _check_fit(fit)
    ci_prob = _check_ci(ci_prob)
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
    """
    from bayesfuse.result import compare

    _check_fit(fit)
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


# ====================================================================== all together
@dataclass
class SensitivityResult:
    """The five sensitivity analyses of one fit, as DataFrames.

    Attributes
    ----------
    power_scaling : DataFrame
        :func:`power_scaling` (one row per quantity).
    power_sequence : DataFrame
        :func:`power_scaling_sequence` (means over a grid of α).
    prior_sweep : DataFrame or None
        :func:`prior_sweep`.
    loo_influence : DataFrame or None
        :func:`loo_influence` (``.attrs["detail"]`` the long table).
    inflation : DataFrame or None
        :func:`inflation`.
    comparison : DataFrame or None
        :func:`compare_families`.
    messages : list of str
        Warnings met on the way (high Pareto k, failed refits).
    info : dict
        Model, K, settings, timings.
    """

    power_scaling: pd.DataFrame
    power_sequence: pd.DataFrame
    prior_sweep: pd.DataFrame | None = None
    loo_influence: pd.DataFrame | None = None
    inflation: pd.DataFrame | None = None
    comparison: pd.DataFrame | None = None
    messages: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def flagged(self) -> pd.DataFrame:
        """Rows of ``power_scaling`` with a diagnosis other than ``"-"``."""
        return self.power_scaling[self.power_scaling["diagnosis"] != "-"]

    def figures(self) -> dict[str, Any]:
        """Matplotlib figures of the analyses, by name (closed by the caller)."""
        return _figures(self)

    def to_html(self, path: str | os.PathLike[str], force: bool = True) -> Path:
        """Write the self-contained HTML report (see :func:`sensitivity_report`)."""
        return _write_html(self, Path(path), force)


def sensitivity_analysis(
    fit: Any,
    *,
    power: bool = True,
    sweep: Mapping[str, Sequence[str]] | None | bool = None,
    loo: bool = True,
    factors: Sequence[float] | None = (1.0, 1.5, 2.0, 4.0),
    families: Sequence[str] = (),
    ci_prob: float = 0.95,
    threshold: float = SENSITIVITY_THRESHOLD,
    **fuse_kwargs: Any,
) -> SensitivityResult:
    """Run the sensitivity analyses of design §5 on one fit.

    Parameters
    ----------
    fit : FusionResult
    power : bool
        Power-scaling sensitivity (no refits). Always computed; ``False`` skips only the
        α-sequence.
    sweep : mapping, None or False
        Prior grid for :func:`prior_sweep`; ``None`` uses :func:`default_sweep`, ``False``
        skips the sweep.
    loo : bool
        Leave-one-task-out influence.
    factors : sequence of float or None
        Inflation factors (``None`` skips).
    families : sequence of str
        Families to compare with (empty: no comparison).
    ci_prob : float
    threshold : float
        Power-scaling flag threshold.
    **fuse_kwargs
        Sampler overrides for every refit (``draws``, ``chains``, ``warmup``, ``method``).

    Returns
    -------
    SensitivityResult
    """
    _check_fit(fit)
    messages: list[str] = []
    timings: dict[str, float] = {}

    def timed(name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SensitivityWarning)
            value = fn(*args, **kwargs)
        for w in caught:
            if issubclass(w.category, SensitivityWarning):
                messages.append(str(w.message))
        timings[name] = time.perf_counter() - start
        return value

    ps = timed("power_scaling", power_scaling, fit, threshold=threshold)
    seq = timed("power_sequence", power_scaling_sequence, fit) if power else pd.DataFrame()
    sweep_table = None
    if sweep is not False:
        grid = default_sweep(fit) if sweep is None or sweep is True else dict(sweep)
        if grid:
            sweep_table = timed("prior_sweep", prior_sweep, fit, grid, ci_prob=ci_prob,
                                **fuse_kwargs)
    influence = None
    if loo and len(fit.tasks) >= 3:
        influence = timed("loo_influence", loo_influence, fit, **fuse_kwargs)
        refits = influence[influence["method"] == "refit"]["task"].tolist()
        if refits:
            messages.append(f"Leave-one-out: Pareto k > {K_THRESHOLD} for task(s) "
                            f"{', '.join(map(str, refits))}; those were refitted exactly.")
    infl = None
    if factors:
        infl = timed("inflation", inflation, fit, factors, ci_prob=ci_prob, **fuse_kwargs)
    comparison = None
    if families:
        comparison = timed("comparison", compare_families, fit, families, **fuse_kwargs)
        for name, reason in comparison.attrs.get("skipped", {}).items():
            messages.append(f"Family comparison: '{name}' could not be fitted ({reason}).")
    info = {"model": fit.model, "n_tasks": len(fit.tasks), "params": list(fit.params),
            "priors": fit.priors, "ci_prob": ci_prob, "threshold": threshold,
            "method": fit.meta.get("method", "nuts"),
            "draws": int(fit.idata.posterior.sizes["chain"] * fit.idata.posterior.sizes["draw"]),
            "refit_overrides": {k: v for k, v in fuse_kwargs.items()}, "timings": timings}
    return SensitivityResult(ps, seq, sweep_table, influence, infl, comparison, messages, info)


def sensitivity_report(
    fit_or_result: Any,
    path: str | os.PathLike[str],
    *,
    force: bool = True,
    **kwargs: Any,
) -> SensitivityResult:
    """Write the sensitivity analyses of a fit as one self-contained HTML file.

    Parameters
    ----------
    fit_or_result : FusionResult or SensitivityResult
        A fit (analysed with :func:`sensitivity_analysis` and ``kwargs``) or a finished
        analysis.
    path : path
        The ``.html`` file to write (atomically).
    force : bool
        Overwrite an existing file.
    **kwargs
        Passed to :func:`sensitivity_analysis`.

    Returns
    -------
    SensitivityResult
    """
    target = Path(path)
    if target.exists() and not force:
        raise FitError(f"{target} exists; pass force=True (--force) to overwrite it.")
    result = (fit_or_result if isinstance(fit_or_result, SensitivityResult)
              else sensitivity_analysis(fit_or_result, **kwargs))
    _write_html(result, target, force=True)
    return result


# ====================================================================== figures and HTML
def _figures(result: SensitivityResult) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    figs: dict[str, Any] = {}
    ps = result.power_scaling
    threshold = result.info.get("threshold", SENSITIVITY_THRESHOLD)
    show = ps.head(40)
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(show) + 1.4))
    y = np.arange(len(show))
    ax.barh(y - 0.2, show["prior_sensitivity"], height=0.4, label="prior", color="#4c72b0")
    ax.barh(y + 0.2, show["likelihood_sensitivity"], height=0.4, label="likelihood",
            color="#dd8452")
    ax.axvline(threshold, color="k", lw=1, ls="--", label=f"threshold {threshold:g}")
    ax.set_yticks(y, show["variable"])
    ax.invert_yaxis()
    ax.set_xlabel("power-scaling sensitivity (d CJS / d log2 α)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    figs["power_scaling"] = fig

    seq = result.power_sequence
    if seq is not None and len(seq):
        variables = list(dict.fromkeys(seq["variable"]))[:6]
        fig, axes = plt.subplots(1, len(variables), figsize=(3.0 * len(variables) + 0.5, 2.9),
                                 squeeze=False)
        for ax, var in zip(axes[0], variables, strict=False):
            for comp, color in zip(COMPONENTS, ("#4c72b0", "#dd8452"), strict=True):
                part = seq[(seq["variable"] == var) & (seq["component"] == comp)]
                if not len(part):
                    continue
                x = np.log2(part["alpha"].to_numpy())
                ax.plot(x, part["mean"], "-", color=color, label=comp)
                ax.fill_between(x, part["mean"] - part["sd"], part["mean"] + part["sd"],
                                color=color, alpha=0.15)
                bad = part["pareto_k"].to_numpy() > K_THRESHOLD
                ax.plot(x[bad], part["mean"].to_numpy()[bad], "x", color="red")
            ax.set_title(var, fontsize=9)
            ax.set_xlabel("log2 α")
        axes[0][0].set_ylabel("power-scaled mean ± sd")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        figs["power_sequence"] = fig

    if result.loo_influence is not None:
        table = result.loo_influence
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 0.25 * len(table) + 1.6))
        y = np.arange(len(table))
        colors = ["#c44e52" if m == "refit" else "#4c72b0" for m in table["method"]]
        ax1.barh(y, table["influence"], color=colors)
        ax1.set_yticks(y, table["task"].astype(str))
        ax1.invert_yaxis()
        ax1.set_xlabel("influence (max |Δ mean| / sd)")
        ax1.set_title("blue: PSIS, red: refit", fontsize=8)
        ax2.scatter(table["pareto_k"], y, color=colors)
        ax2.axvline(K_THRESHOLD, color="k", ls="--", lw=1)
        ax2.set_yticks(y, [""] * len(y))
        ax2.invert_yaxis()
        ax2.set_xlabel("Pareto k (PSIS-LOO)")
        fig.tight_layout()
        figs["loo_influence"] = fig

    for name, column, label in (("prior_sweep", "setting", "prior setting"),
                                ("inflation", "factor", "inflation factor c")):
        table = getattr(result, name)
        if table is None or not len(table):
            continue
        hyper = table[table["kind"] == "hyper"]
        variables = list(dict.fromkeys(hyper["variable"]))[:4] or list(
            dict.fromkeys(table["variable"]))[:4]
        fig, axes = plt.subplots(1, len(variables) + 1,
                                 figsize=(3.2 * (len(variables) + 1), 3.2), squeeze=False)
        settings = list(dict.fromkeys(table[column]))
        for ax, var in zip(axes[0], variables, strict=False):
            part = table[table["variable"] == var].set_index(column).loc[settings]
            yy = np.arange(len(settings))
            ax.errorbar(part["mean"], yy, xerr=[part["mean"] - part["eti_low"],
                                                part["eti_high"] - part["mean"]],
                        fmt="o", color="#4c72b0")
            ax.set_yticks(yy, [str(s) for s in settings], fontsize=7)
            ax.invert_yaxis()
            ax.set_title(var, fontsize=9)
        ax = axes[0][-1]
        theta = table[table["kind"] == "theta"]
        tasks = list(dict.fromkeys(theta["variable"]))[:30]
        for i, s in enumerate(settings):
            part = theta[(theta[column] == s) & theta["variable"].isin(tasks)]
            ax.plot(part["mean"].to_numpy(), np.arange(len(part)) + 0.1 * i, "o", ms=3,
                    label=str(s))
        ax.set_yticks(np.arange(len(tasks)), tasks, fontsize=6)
        ax.invert_yaxis()
        ax.set_title("fused means", fontsize=9)
        ax.legend(fontsize=6, title=label, title_fontsize=6)
        fig.tight_layout()
        figs[name] = fig
    return figs


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _table_html(frame: pd.DataFrame, digits: int = 3, max_rows: int = 200) -> str:
    shown = frame.head(max_rows)
    body = shown.to_html(index=False, float_format=lambda v: f"{v:.{digits}g}"
                         if abs(v) >= 1e4 or (abs(v) < 1e-3 and v != 0) else f"{v:.{digits}f}",
                         border=0, classes="tbl", na_rep="", escape=True)
    more = (f"<p class='note'>{len(frame) - max_rows} more rows not shown.</p>"
            if len(frame) > max_rows else "")
    return body + more


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:2em}
table.tbl{border-collapse:collapse;font-size:.82em;margin:.6em 0}
table.tbl th,table.tbl td{padding:.2em .6em;border-bottom:1px solid #eee;text-align:right}
table.tbl th{background:#f5f5f5}
.note{color:#555;font-size:.9em}.warn{color:#a33}
img{max-width:100%;height:auto;display:block;margin:.6em 0}
"""


def _write_html(result: SensitivityResult, path: Path, force: bool) -> Path:
    from bayesfuse._io import atomic_write_text

    if path.exists() and not force:
        raise FitError(f"{path} exists; pass force=True (--force) to overwrite it.")
    esc = html.escape
    info = result.info
    figs = {name: _png(fig) for name, fig in result.figures().items()}

    def figure(name: str, alt: str) -> str:
        if name not in figs:
            return ""
        return (f"<img id='fig-{name}' alt='{esc(alt)}' "
                f"src='data:image/png;base64,{figs[name]}'>")

    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>bayesfuse sensitivity analysis</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Sensitivity analysis</h1>",
        f"<p>Model <b>{esc(str(info.get('model')))}</b>, K = {info.get('n_tasks')} tasks, "
        f"parameters {esc(', '.join(map(str, info.get('params', []))))}, "
        f"{info.get('draws')} posterior draws ({esc(str(info.get('method')))}). Priors as "
        f"used: {esc(', '.join(f'{k} ~ {v}' for k, v in info.get('priors', {}).items()))}."
        "</p>",
    ]
    if result.messages:
        parts.append("<ul class='warn'>" + "".join(
            f"<li>{esc(m)}</li>" for m in result.messages) + "</ul>")
    ps = result.power_scaling
    flagged = result.flagged
    parts += [
        "<h2 id='power-scaling'>Prior and likelihood power-scaling</h2>",
        "<p class='note'>Importance-weighted, no refits (Kallioinen et al. 2023). The prior "
        "of the hyperparameters or the likelihood is raised to a power α near 1; the "
        "sensitivity is the derivative of the cumulative Jensen–Shannon distance between the "
        "base and the power-scaled posterior with respect to log₂ α. Above "
        f"{info.get('threshold', SENSITIVITY_THRESHOLD):g}: prior and likelihood sensitive "
        "= <i>prior-data conflict</i>; prior sensitive only = <i>strong prior / weak "
        "likelihood</i>. Pareto k above 0.7 makes the weights unreliable.</p>",
        f"<p><b>{len(flagged)}</b> of {len(ps)} quantities flagged"
        + (": " + esc(", ".join(f"{v} ({d})" for v, d in zip(
            flagged["variable"], flagged["diagnosis"], strict=True))) if len(flagged) else "")
        + ".</p>",
        figure("power_scaling", "power-scaling sensitivity per quantity"),
        _table_html(ps),
        figure("power_sequence", "power-scaled posterior means over alpha"),
    ]
    if result.prior_sweep is not None:
        table = result.prior_sweep
        parts += ["<h2 id='prior-sweep'>Hyper-prior sweep</h2>",
                  "<p class='note'>Refits with one prior changed at a time (same spec, "
                  "seed and other priors).</p>",
                  figure("prior_sweep", "hyperparameters and fused means per prior setting"),
                  _table_html(table[table["kind"] == "hyper"].drop(
                      columns=["task", "param", "kind"]))]
    if result.loo_influence is not None:
        table = result.loo_influence
        parts += ["<h2 id='loo-influence'>Leave-one-task-out influence</h2>",
                  f"<p class='note'>PSIS-LOO importance weights; exact refits without the task "
                  f"where Pareto k &gt; {K_THRESHOLD} (column <i>method</i>). Influence = the "
                  "largest change of a hyperparameter's or another task's fused posterior "
                  "mean, in posterior sds.</p>",
                  figure("loo_influence", "influence and Pareto k per task"),
                  _table_html(table.sort_values("rank"))]
    if result.inflation is not None:
        table = result.inflation
        parts += ["<h2 id='inflation'>Stage-1 uncertainty inflation</h2>",
                  "<p class='note'>Refits with every stage-1 covariance Vₖ multiplied by c "
                  "(standard errors by √c): how robust are the conclusions to underestimated "
                  "standard errors?</p>",
                  figure("inflation", "hyperparameters and fused means per inflation factor"),
                  _table_html(table.drop(columns=["task", "param"]))]
    if result.comparison is not None:
        comparison = result.comparison.reset_index().rename(columns={"index": "model"})
        parts += ["<h2 id='comparison'>Family comparison</h2>",
                  "<p class='note'>PSIS-LOO expected log predictive density of the task "
                  "estimates, with stacking weights (Yao et al. 2018).</p>",
                  _table_html(comparison)]
    timings = info.get("timings", {})
    if timings:
        parts.append("<p class='note'>Timings: " + esc(", ".join(
            f"{k} {v:.1f} s" for k, v in timings.items())) + ".</p>")
    parts.append("</body></html>")
    return atomic_write_text(path, "\n".join(parts))
