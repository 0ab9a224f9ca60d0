"""The forest plot (``bf.plot.forest``): per task, the stage-1 estimate with its normal
interval and the fused posterior mean with its ETI or HDI, one panel per parameter, the
pooled mean μ marked when the posterior has one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bayesfuse._validation import check_choice, check_probability
from bayesfuse.reporting.figures._common import (
    FUSED,
    INTERVALS,
    POOLED,
    STAGE1,
    as_result,
    check_fit,
    panel_axes,
    param_label,
    pooled_mean,
    select_params,
    tidy,
)

__all__ = ["forest"]

#: what the forest plot reads from a fit
NEEDS = ("idata", "summary", "params", "tasks", "estimates")


def forest(fit: Any, ci_prob: float = 0.95, sort: bool = True, interval: str = "eti",
           params: str | Sequence[str] | None = None, ax: Any = None) -> Any:
    """Forest plot: stage-1 estimate ± interval and fused posterior mean with interval.

    One row per task; one panel per parameter (shared task axis) for vector θ. The stage-1
    interval is θ̂ₖ ± z·seₖ (normal, same ``ci_prob``); the fused interval is the posterior
    ETI or HDI of θₖ. A dashed line and band mark the pooled mean μ when the family has one.

    Parameters
    ----------
    fit : FusionResult
        A fit, or any object with ``idata``, ``summary()``, ``params``, ``tasks`` and
        ``estimates``.
    ci_prob : float
        Interval probability, in (0, 1).
    sort : bool
        Order tasks by fused mean of the first plotted parameter, largest at the top
        (``False``: the estimates' order, first task at the top).
    interval : {"eti", "hdi"}
        Equal-tailed or highest-density posterior interval.
    params : str or list of str, optional
        Parameters to draw (default: all).
    ax : Axes or sequence of Axes, optional
        One Axes per parameter drawn.

    Returns
    -------
    Axes, or ndarray of Axes of shape (p,)

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
    >>> ax = bf.plot.forest(fit, ci_prob=0.9, interval="hdi")   # doctest: +SKIP
    >>> ax.figure.savefig("forest.pdf")                 # doctest: +SKIP
    """
    fit = check_fit(fit, "forest", NEEDS)
    ci_prob = check_probability(ci_prob)
    interval = check_choice(interval, "interval", INTERVALS)
    chosen = select_params(fit, params)
    table = fit.summary(ci_prob)
    n_tasks = len(fit.tasks)
    first = table[table["param"] == chosen[0]].set_index("task")
    if sort:
        order = list(first["mean"].sort_values(ascending=False, kind="stable").index)
    else:
        order = list(fit.tasks)
    height = min(max(0.24 * n_tasks + 1.4, 3.0), 30.0)
    axes = panel_axes(ax, len(chosen), "forest", (4.6 * len(chosen) + 1.2, height),
                      sharey=True)
    from matplotlib.lines import Line2D
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + ci_prob / 2))
    pooled = pooled_mean(fit, ci_prob)
    y = np.arange(n_tasks)[::-1].astype(float)  # first task of `order` at the top
    offset = 0.16
    pct = f"{ci_prob:.0%}"
    for panel, param in zip(axes, chosen, strict=True):
        rows = table[table["param"] == param].set_index("task").loc[order]
        est, se = rows["estimate"].to_numpy(), rows["se"].to_numpy()
        if param in pooled:
            mean, low, high = pooled[param]
            panel.axvspan(low, high, color=POOLED, alpha=0.08, lw=0, zorder=1)
            panel.axvline(mean, color=POOLED, ls="--", lw=1.0, zorder=1)
        panel.hlines(y + offset, est - z * se, est + z * se, color=STAGE1, lw=1.1, zorder=2)
        panel.plot(est, y + offset, "o", ls="none", ms=4.2, mfc="white", mec=STAGE1,
                   mew=1.1, zorder=3)
        panel.hlines(y - offset, rows[f"{interval}_low"], rows[f"{interval}_high"],
                     color=FUSED, lw=2.0, zorder=2)
        panel.plot(rows["mean"], y - offset, "o", ls="none", ms=4.8, color=FUSED, zorder=3)
        panel.set_yticks(y, labels=order)
        if panel is not axes[0]:
            panel.tick_params(axis="y", labelleft=False)
        panel.set_ylim(-0.7, n_tasks - 0.3)
        panel.set_xlabel(param_label(fit, param))
        tidy(panel, "x")
        panel.tick_params(axis="y", length=0)
    axes[0].set_ylabel("task")
    handles = [
        Line2D([], [], color=STAGE1, lw=1.1, marker="o", ms=4.2, mfc="white", mec=STAGE1,
               label=f"stage 1 ± {pct} CI"),
        Line2D([], [], color=FUSED, lw=2.0, marker="o", ms=4.8,
               label=f"fused mean, {pct} {interval.upper()}"),
    ]
    if any(p in pooled for p in chosen):
        handles.append(Line2D([], [], color=POOLED, ls="--", lw=1.0,
                              label=f"pooled mean μ, {pct} interval"))
    axes[0].legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=3,
                   frameon=False, fontsize=7.5, borderaxespad=0.2, handlelength=2.0)
    return as_result(axes)
