"""Importance-weighted sensitivity of a fusion fit: nothing here refits the model.

* :func:`power_scaling` — prior and likelihood **power-scaling** sensitivity (Kallioinen,
  Paananen, Bürkner & Vehtari 2023, "Detecting and diagnosing prior and likelihood
  sensitivity with power-scaling", *Statistics and Computing* 34:57; the R package
  *priorsense*). The prior p(φ) of the sampled hyperparameters (the blocks that take prior
  strings: μ, τ, LKJ η, ...) or the likelihood is raised to a power α near 1; the
  power-scaled posterior is reached by Pareto-smoothed importance sampling of the existing
  draws, and the cumulative Jensen–Shannon distance between the base and the perturbed
  posterior of each quantity, differentiated with respect to log₂ α at α = 1, is the
  sensitivity. Above ``threshold`` (0.05) a quantity is flagged: prior *and* likelihood
  sensitive is a **prior-data conflict**, prior sensitive only is a **strong prior / weak
  likelihood**.
* :func:`power_scaling_sequence` — power-scaled posterior means and sds over a grid of α.
* The pieces: :func:`log_prior_draws`, :func:`log_likelihood_draws`,
  :func:`powerscale_weights`, :func:`psis_weights`, :func:`cjs_distance`, and
  :func:`posterior_quantities` (the flat draws every analysis works on).

The analyses that refit are in :mod:`bayesfuse.analysis.sensitivity.refit`.

Likelihood in the collapsed families
------------------------------------
The likelihood that is power-scaled is the one stored in the fit's ``log_likelihood`` group:
p(θ̂ₖ | φ) per task, with θ integrated out (for conditionally independent tasks its sum over
tasks is the full marginal likelihood). Prior and likelihood scaling therefore both act on
the hyperparameters φ, and θ | φ, θ̂ is carried along with each draw.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from bayesfuse._validation import check_choice
from bayesfuse.errors import BayesfuseError, BayesfuseWarning, FitError

__all__ = [
    "SENSITIVITY_THRESHOLD",
    "K_THRESHOLD",
    "DIAGNOSES",
    "COMPONENTS",
    "SensitivityError",
    "SensitivityWarning",
    "check_fit",
    "posterior_quantities",
    "log_prior_draws",
    "log_likelihood_draws",
    "psis_weights",
    "powerscale_weights",
    "cjs_distance",
    "power_scaling",
    "power_scaling_sequence",
]

#: priorsense's flagging threshold for the CJS-derivative sensitivity
SENSITIVITY_THRESHOLD = 0.05
#: Pareto k above which importance sampling is unreliable (Vehtari et al. 2024)
K_THRESHOLD = 0.7
#: the diagnoses of :func:`power_scaling` ("-": not flagged)
DIAGNOSES = ("prior-data conflict", "strong prior / weak likelihood", "-")
#: the parts of the posterior that can be power-scaled
COMPONENTS = ("prior", "likelihood")


class SensitivityError(BayesfuseError, ValueError):
    """Invalid input to a sensitivity analysis (an α, a grid, a variable name)."""


class SensitivityWarning(BayesfuseWarning):
    """A sensitivity estimate that may be unreliable (high Pareto k)."""


# ====================================================================== draws of a fit
def check_fit(fit: Any) -> None:
    """Raise :class:`SensitivityError` unless ``fit`` is a :class:`~bayesfuse.FusionResult`."""
    from bayesfuse.result import FusionResult

    if not isinstance(fit, FusionResult):
        raise SensitivityError(
            f"Expected a FusionResult (from bf.fuse or bf.load_fit); got {type(fit).__name__}."
        )


def posterior_quantities(fit: Any, variables: Sequence[str] | None = None,
                         theta: bool = True) -> tuple[list[str], np.ndarray]:
    """Flat names and draws of the hyperparameters and θ.

    Parameters
    ----------
    fit : FusionResult
    variables : sequence of str, optional
        Keep only these quantities, in this order (named as in the output).
    theta : bool
        Include the task effects θ (default) or only the hyperparameters.

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

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
    >>> logp = bf.sensitivity.log_prior_draws(fit, blocks=["tau"])   # doctest: +SKIP
    >>> logp.shape                                      # (chain·draw,)  # doctest: +SKIP
    """
    check_fit(fit)
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

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
    >>> loglik = bf.sensitivity.log_likelihood_draws(fit)  # (chain·draw,)  # doctest: +SKIP
    """
    check_fit(fit)
    loglik = fit.idata.log_likelihood["theta_hat"].transpose("chain", "draw", "task").values
    return loglik.reshape(-1, loglik.shape[-1]).sum(axis=1)


def psis_weights(log_ratio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pareto-smoothed normalised weights and k for rows of log ratios.

    Parameters
    ----------
    log_ratio : ndarray of shape (m, N)

    Returns
    -------
    weights : ndarray of shape (m, N), rows summing to 1
    k : ndarray of shape (m,)
    """
    from bayesfuse._arviz import az

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
    if check_choice(component, "component", COMPONENTS) == "prior":
        return log_prior_draws(fit, prior_blocks)
    return log_likelihood_draws(fit)


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

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
    >>> weights, pareto_k = bf.sensitivity.powerscale_weights(fit, [0.8, 1.25])  # doctest: +SKIP
    >>> weights.shape                                   # (2, chain·draw)  # doctest: +SKIP
    """
    alphas = np.atleast_1d(np.asarray(alpha, dtype=float))
    if alphas.ndim != 1 or not np.all(np.isfinite(alphas)) or np.any(alphas <= 0):
        raise SensitivityError(f"alpha must be positive numbers, e.g. 0.5 or 2; got {alpha!r}.")
    log_c = _component_log(fit, component, prior_blocks)
    return psis_weights((alphas[:, None] - 1.0) * log_c[None, :])


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

    Examples
    --------
    >>> import numpy as np
    >>> import bayesfuse as bf
    >>> draws = np.random.default_rng(0).normal(size=(4000, 2))      # N draws of Q = 2 quantities
    >>> distance = bf.sensitivity.cjs_distance(draws, np.ones(4000))  # same weights
    >>> bool(np.allclose(distance, 0.0, atol=1e-6))                  # shape (2,), no change
    True
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
    check_fit(fit)
    if not (0 < lower_alpha < 1 < upper_alpha):
        raise SensitivityError(
            f"Need 0 < lower_alpha < 1 < upper_alpha; got {lower_alpha} and {upper_alpha}.")
    if not threshold > 0:
        raise SensitivityError(f"threshold must be > 0, e.g. 0.05; got {threshold!r}.")
    names, draws = posterior_quantities(fit, variables)
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

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
    >>> seq = bf.sensitivity.power_scaling_sequence(fit, alphas=(0.5, 1.0, 2.0))  # doctest: +SKIP
    >>> seq[seq["variable"] == "tau"]                   # doctest: +SKIP
    """
    check_fit(fit)
    theta = variables is not None or not fit.hyperparameters
    names, draws = posterior_quantities(fit, variables, theta=theta)
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

