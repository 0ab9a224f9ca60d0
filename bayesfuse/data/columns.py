"""The columns of an estimates table: task ids, numbers, and standard errors as reported.

Every reader (the :class:`~bayesfuse.data.estimates.TaskEstimates` constructor,
:meth:`~bayesfuse.data.estimates.TaskEstimates.from_frame`, the estimates CSV and the summary
JSON readers) turns task ids into text with :func:`task_label`, which refuses control
characters with one message.

Estimates are often reported without their standard error. :func:`row_variances` takes, row
by row, the first of these that the row holds:

* ``se`` (or ``variance``), used as given;
* ``ci_low``, ``ci_high`` with a ``level`` (default 0.95), read as a symmetric normal
  interval: se = (ci_high − ci_low) / (2 z₍₁₊ₗₑᵥₑₗ₎/₂). The estimate must lie inside it, and
  an interval whose two half-widths differ by more than ``MAX_ASYMMETRY`` (10 %) of their
  mean is refused: it comes from another scale (odds, risk and hazard ratios are symmetric
  on the log scale), where the estimate and the bounds should be given;
* ``p_value``, two-sided, of the z test of θ = 0: se = |estimate| / z₁₋ₚ/₂.

The source of each converted standard error ("95% CI", "p-value") is returned, so that the
readers record it (``TaskEstimates.meta["se_from"]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from bayesfuse.errors import EstimatesError

__all__ = ["task_label", "has_control_characters", "numeric", "row_variances",
           "record_se_from", "MAX_ASYMMETRY"]

MAX_ASYMMETRY = 0.10  # |upper − lower half-width| / their mean, above which a CI is refused


def has_control_characters(text: str) -> bool:
    """Whether ``text`` holds a control character (C0, DEL or C1: newline, tab, escape...)."""
    return any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text)


def task_label(value: Any) -> str:
    """Task id as a string: integral floats lose their '.0' (school 63.0 -> '63').

    Parameters
    ----------
    value : object
        A task id as read from a table (str, int, float...).

    Returns
    -------
    str

    Raises
    ------
    EstimatesError
        If the id holds control characters (a newline, a tab, a terminal escape...).
    """
    if isinstance(value, float | np.floating) and np.isfinite(value) and float(value).is_integer():
        return str(int(value))
    label = str(value)
    if has_control_characters(label):
        shown = repr(label[:40] + ("..." if len(label) > 40 else ""))
        raise EstimatesError(f"Task id {shown} contains control characters (a newline, tab or "
                             "escape); task ids must be printable text.")
    return label


def numeric(values: pd.Series) -> pd.Series:
    """``values`` as float64: NaN where not a number, ±inf where too large for a float."""
    try:
        converted = pd.to_numeric(values, errors="coerce")
    except OverflowError:  # a Python int beyond the float range
        converted = values.astype(object)
    if converted.dtype != object:
        return converted.astype(float)

    def one(value: Any) -> float:
        try:
            return float(value)
        except OverflowError:
            return float(np.sign(value)) * np.inf
        except (TypeError, ValueError):
            return np.nan

    return converted.map(one).astype(float)


def _z_upper(tail: float) -> float:
    """The normal quantile with ``tail`` above it (``tail`` in (0, 1), accurate when tiny)."""
    return -NormalDist().inv_cdf(tail) if tail > 0 else np.inf


def row_variances(
    estimate: np.ndarray,
    labels: Sequence[str],
    sources: dict[str, np.ndarray],
    names: dict[str, str],
) -> tuple[np.ndarray, list[str]]:
    """Variance of each row's estimate, from the first source the row holds.

    Parameters
    ----------
    estimate : ndarray of shape (m,)
        The estimates (finite or not; the container checks them).
    labels : sequence of str
        Task id of each row, for messages.
    sources : dict
        Arrays of shape (m,), NaN where missing, under any of the keys ``se``, ``variance``,
        ``ci_low`` and ``ci_high`` (together, with ``level``), ``p_value``; tried in that order.
    names : dict
        The column name of each key, for messages.

    Returns
    -------
    variances : ndarray of shape (m,)
    se_from : list of str
        ``""`` where the standard error or variance was given, else ``"95% CI"`` (its level)
        or ``"p-value"``.

    Raises
    ------
    EstimatesError
        Naming the task and the problem.
    """
    estimate = np.asarray(estimate, dtype=float)
    groups = [key for key in ("se", "variance", "ci_low", "p_value") if key in sources]
    shown = {"se": names.get("se"), "variance": names.get("variance"), "p_value":
             names.get("p_value"), "ci_low": f"{names.get('ci_low')}/{names.get('ci_high')}"}
    out = np.full(estimate.shape, np.nan)
    se_from = [""] * len(estimate)
    with np.errstate(all="ignore"):
        for k, label in enumerate(labels):
            key = next((g for g in groups if not np.isnan(sources[g][k])
                        or (g == "ci_low" and not np.isnan(sources["ci_high"][k]))), None)
            if key is None:
                if len(groups) == 1 and groups[0] != "ci_low":
                    raise EstimatesError(f"Column '{names[groups[0]]}' has a missing value for "
                                         f"task '{label}'.")
                raise EstimatesError(f"Task '{label}' has no standard error: "
                                     f"{', '.join(shown[g] for g in groups)} "
                                     f"{'are all' if len(groups) > 1 else 'is'} missing.")
            value = sources[key][k]
            if key == "variance":
                out[k] = value  # the container checks variances
            elif key == "se":
                if not (np.isfinite(value) and value > 0):
                    raise EstimatesError(f"Task '{label}': standard error must be a finite "
                                         f"number > 0; got {value}.")
                out[k] = value**2
            elif key == "ci_low":
                se, se_from[k] = _se_from_interval(estimate[k], sources, k, label, names)
                out[k] = se**2
            else:
                se, se_from[k] = _se_from_p_value(estimate[k], value, label), "p-value"
                out[k] = se**2
    return out, se_from


def _se_from_interval(estimate: float, sources: dict[str, np.ndarray], k: int, label: str,
                      names: dict[str, str]) -> tuple[float, str]:
    low, high = float(sources["ci_low"][k]), float(sources["ci_high"][k])
    lo_name, hi_name = names["ci_low"], names["ci_high"]
    if np.isnan(low) or np.isnan(high):
        raise EstimatesError(f"Task '{label}': give both '{lo_name}' and '{hi_name}' (one of "
                             "them is missing).")
    level = float(sources["level"][k])
    if np.isnan(level):
        raise EstimatesError(f"Column '{names['level']}' has a missing value for task "
                             f"'{label}'.")
    if not 0 < level < 1:
        raise EstimatesError(f"Task '{label}': the interval's level must be in (0, 1), e.g. "
                             f"0.95; got {level:g}.")
    if not (np.isfinite(low) and np.isfinite(high)):
        raise EstimatesError(f"Task '{label}': the confidence interval [{low:g}, {high:g}] "
                             "needs finite bounds.")
    if not low < high:
        raise EstimatesError(f"Task '{label}': {lo_name} ({low:g}) must be below {hi_name} "
                             f"({high:g}).")
    if np.isfinite(estimate) and not low <= estimate <= high:
        raise EstimatesError(f"Task '{label}': the estimate {estimate:g} lies outside its "
                             f"confidence interval [{low:g}, {high:g}].")
    if np.isfinite(estimate):
        below, above = estimate - low, high - estimate
        if abs(above - below) > MAX_ASYMMETRY * 0.5 * (above + below):
            raise EstimatesError(
                f"Task '{label}': the confidence interval [{low:g}, {high:g}] is not symmetric "
                f"about the estimate {estimate:g} (half-widths {below:.3g} and {above:.3g}), so "
                "no normal standard error can be read from it. For a ratio (odds, risk, "
                "hazard) give the log of the estimate and of both bounds.")
    se = (high - low) / (2 * _z_upper((1 - level) / 2))
    if not (np.isfinite(se) and se > 0):
        raise EstimatesError(f"Task '{label}': the confidence interval [{low:g}, {high:g}] "
                             "gives no finite standard error.")
    return se, f"{100 * level:g}% CI"


def _se_from_p_value(estimate: float, p: float, label: str) -> float:
    if not 0 < p < 1:
        hint = (" (a p-value of 0 gives no standard error: give the p-value with more digits, "
                "or se, or a confidence interval)" if p == 0 else "")
        raise EstimatesError(f"Task '{label}': a two-sided p-value must be in (0, 1); got "
                             f"{p:g}{hint}.")
    if estimate == 0:
        raise EstimatesError(f"Task '{label}': an estimate of 0 with a p-value gives no "
                             "standard error; give se or a confidence interval.")
    se = abs(estimate) / _z_upper(p / 2)
    if np.isfinite(estimate) and not (np.isfinite(se) and se > 0):
        raise EstimatesError(f"Task '{label}': the p-value {p:g} gives no finite standard "
                             "error.")
    return se


def record_se_from(meta: dict[str, Any], tasks: Sequence[str], params: Sequence[str],
                   se_from: Sequence[str]) -> None:
    """Record the converted standard errors in ``meta``.

    ``meta["se_from"]`` maps task → parameter → source (``"95% CI"``, ``"p-value"``) for the
    converted ones only; ``meta["notes"]`` gets one sentence per source.
    """
    record: dict[str, dict[str, str]] = {}
    for t, p, source in zip(tasks, params, se_from, strict=True):
        if source:
            record.setdefault(t, {})[p] = source
    if not record:
        return
    meta["se_from"] = record
    for source, count in pd.Series([s for s in se_from if s]).value_counts(sort=False).items():
        which = ", ".join(t for t in record if source in record[t].values())
        meta.setdefault("notes", []).append(
            f"standard error from the {source} for {count} estimate(s) (task "
            f"{which if len(which) <= 200 else which[:200] + '...'})")
