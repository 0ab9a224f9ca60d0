"""The shrinkage plot (``bf.plot.shrinkage``): an arrow per task from its stage-1 estimate
to its fused posterior mean, placed at its stage-1 standard error, with the pooled mean μ
when the posterior has one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bayesfuse.reporting.figures._common import (
    FUSED,
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

__all__ = ["shrinkage"]

#: what the shrinkage plot reads from a fit
NEEDS = ("idata", "summary", "params", "tasks", "estimates")


def shrinkage(fit: Any, params: str | Sequence[str] | None = None, labels: bool | None = None,
              ax: Any = None) -> Any:
    """Shrinkage plot: each task's stage-1 estimate → fused posterior mean, against its SE.

    Arrows run from θ̂ₖ to E[θₖ | data] at x = stage-1 SE; noisy tasks (right) move
    further, toward the pooled mean (dashed line, when the family has one μ).

    Parameters
    ----------
    fit : FusionResult
        A fit, or any object with ``idata``, ``summary()``, ``params``, ``tasks`` and
        ``estimates``.
    params : str or list of str, optional
        Parameters to draw (default: all), one panel each.
    labels : bool, optional
        Write task ids next to the stage-1 points (default: when K ≤ 12).
    ax : Axes or sequence of Axes, optional

    Returns
    -------
    Axes, or ndarray of Axes of shape (p,)

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
    >>> ax = bf.plot.shrinkage(fit)                     # doctest: +SKIP
    """
    fit = check_fit(fit, "shrinkage", NEEDS)
    chosen = select_params(fit, params)
    table = fit.summary()
    labels = len(fit.tasks) <= 12 if labels is None else bool(labels)
    axes = panel_axes(ax, len(chosen), "shrinkage", (4.2 * len(chosen) + 0.6, 3.6))
    pooled = pooled_mean(fit, 0.95)
    for panel, param in zip(axes, chosen, strict=True):
        rows = table[table["param"] == param]
        se, est, mean = (rows[c].to_numpy() for c in ("se", "estimate", "mean"))
        if param in pooled:
            panel.axhline(pooled[param][0], color=POOLED, ls="--", lw=1.0, zorder=1,
                          label="pooled mean μ")
        for x, start, end in zip(se, est, mean, strict=True):
            panel.annotate("", xy=(x, end), xytext=(x, start), zorder=2,
                           arrowprops={"arrowstyle": "-|>", "color": "#8da9c9", "lw": 0.9,
                                       "shrinkA": 3.5, "shrinkB": 3.5, "mutation_scale": 7})
        panel.scatter(se, est, s=22, facecolors="white", edgecolors=STAGE1, linewidths=1.1,
                      zorder=3, label="stage 1 estimate")
        panel.scatter(se, mean, s=22, color=FUSED, zorder=4, label="fused mean")
        if labels:
            for task, x, value in zip(rows["task"], se, est, strict=True):
                panel.annotate(str(task), (x, value), xytext=(4, 2), textcoords="offset points",
                               fontsize=7, color=STAGE1)
        panel.set_xlabel("stage-1 standard error")
        panel.set_ylabel(param_label(fit, param))
        tidy(panel, "y")
    axes[0].legend(loc="best", frameon=False, fontsize=7.5)
    return as_result(axes)
