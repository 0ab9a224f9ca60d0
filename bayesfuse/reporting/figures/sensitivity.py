"""Figures of a sensitivity analysis (:class:`~bayesfuse.analysis.sensitivity.SensitivityResult`).

:func:`sensitivity_figures` draws one figure per analysis that was run: the power-scaling
sensitivities per quantity, the power-scaled means over α, the leave-one-task-out influence
with its Pareto k, and the hyperparameters and fused means per prior setting and per
inflation factor. The figures are made with ``pyplot`` under the Agg backend; the caller
closes them (:func:`bayesfuse.reporting.html.close_figures`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["sensitivity_figures"]

#: colours of the prior and the likelihood component
COLORS = {"prior": "#4c72b0", "likelihood": "#dd8452"}
#: colour of the refitted tasks in the influence plot
REFIT = "#c44e52"


def sensitivity_figures(result: Any) -> dict[str, Any]:
    """Matplotlib figures of the analyses in a sensitivity result, by name.

    Parameters
    ----------
    result : SensitivityResult
        From :func:`bayesfuse.analysis.sensitivity.sensitivity_analysis`.

    Returns
    -------
    dict of str -> Figure
        ``"power_scaling"`` always; ``"power_sequence"``, ``"loo_influence"``,
        ``"prior_sweep"`` and ``"inflation"`` when those analyses were run.
    """
    threshold = result.info.get("threshold", result.sensitivity_threshold)
    figs: dict[str, Any] = {"power_scaling": _power_scaling(result.power_scaling, threshold)}
    seq = result.power_sequence
    if seq is not None and len(seq):
        figs["power_sequence"] = _power_sequence(seq, result.components, result.k_threshold)
    if result.loo_influence is not None:
        figs["loo_influence"] = _loo_influence(result.loo_influence, result.k_threshold)
    for name, column, label in (("prior_sweep", "setting", "prior setting"),
                                ("inflation", "factor", "inflation factor c")):
        table = getattr(result, name)
        if table is not None and len(table):
            figs[name] = _refits(table, column, label)
    return figs


def _pyplot() -> Any:
    """``matplotlib.pyplot`` with the backend the user has (matplotlib falls back to Agg
    without a display; forcing Agg here would switch a notebook off its inline figures)."""
    import matplotlib.pyplot as plt

    return plt


def _power_scaling(ps: pd.DataFrame, threshold: float) -> Any:
    """Prior and likelihood sensitivity per quantity (the first 40), with the threshold."""
    show = ps.head(40)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(show) + 1.4))
    y = np.arange(len(show))
    ax.barh(y - 0.2, show["prior_sensitivity"], height=0.4, label="prior",
            color=COLORS["prior"])
    ax.barh(y + 0.2, show["likelihood_sensitivity"], height=0.4, label="likelihood",
            color=COLORS["likelihood"])
    ax.axvline(threshold, color="k", lw=1, ls="--", label=f"threshold {threshold:g}")
    ax.set_yticks(y, show["variable"])
    ax.invert_yaxis()
    ax.set_xlabel("power-scaling sensitivity (d CJS / d log2 α)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def _power_sequence(seq: pd.DataFrame, components: tuple[str, ...], k_threshold: float) -> Any:
    """Power-scaled mean ± sd over log₂ α, one panel per quantity (the first 6); points whose
    Pareto k exceeds ``k_threshold`` are crossed."""
    variables = list(dict.fromkeys(seq["variable"]))[:6]
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(variables), figsize=(3.0 * len(variables) + 0.5, 2.9),
                             squeeze=False)
    for ax, var in zip(axes[0], variables, strict=False):
        for comp in components:
            color = COLORS[comp]
            part = seq[(seq["variable"] == var) & (seq["component"] == comp)]
            if not len(part):
                continue
            x = np.log2(part["alpha"].to_numpy())
            ax.plot(x, part["mean"], "-", color=color, label=comp)
            ax.fill_between(x, part["mean"] - part["sd"], part["mean"] + part["sd"],
                            color=color, alpha=0.15)
            bad = part["pareto_k"].to_numpy() > k_threshold
            ax.plot(x[bad], part["mean"].to_numpy()[bad], "x", color="red")
        ax.set_title(var, fontsize=9)
        ax.set_xlabel("log2 α")
    axes[0][0].set_ylabel("power-scaled mean ± sd")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _loo_influence(table: pd.DataFrame, k_threshold: float) -> Any:
    """Influence per task (refitted tasks in red) and the PSIS-LOO Pareto k."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 0.25 * len(table) + 1.6))
    y = np.arange(len(table))
    colors = [REFIT if m == "refit" else COLORS["prior"] for m in table["method"]]
    ax1.barh(y, table["influence"], color=colors)
    ax1.set_yticks(y, table["task"].astype(str))
    ax1.invert_yaxis()
    ax1.set_xlabel("influence (max |Δ mean| / sd)")
    ax1.set_title("blue: PSIS, red: refit", fontsize=8)
    ax2.scatter(table["pareto_k"], y, color=colors)
    ax2.axvline(k_threshold, color="k", ls="--", lw=1)
    ax2.set_yticks(y, [""] * len(y))
    ax2.invert_yaxis()
    ax2.set_xlabel("Pareto k (PSIS-LOO)")
    fig.tight_layout()
    return fig


def _refits(table: pd.DataFrame, column: str, label: str) -> Any:
    """Hyperparameters (up to 4 panels) and fused means per setting of a refit analysis.

    ``column`` names the setting (``"setting"`` of a prior sweep, ``"factor"`` of an
    inflation) and ``label`` titles the legend.
    """
    hyper = table[table["kind"] == "hyper"]
    variables = list(dict.fromkeys(hyper["variable"]))[:4] or list(
        dict.fromkeys(table["variable"]))[:4]
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(variables) + 1,
                             figsize=(3.2 * (len(variables) + 1), 3.2), squeeze=False)
    settings = list(dict.fromkeys(table[column]))
    for ax, var in zip(axes[0], variables, strict=False):
        part = table[table["variable"] == var].set_index(column).loc[settings]
        yy = np.arange(len(settings))
        ax.errorbar(part["mean"], yy, xerr=[part["mean"] - part["eti_low"],
                                            part["eti_high"] - part["mean"]],
                    fmt="o", color=COLORS["prior"])
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
    return fig
