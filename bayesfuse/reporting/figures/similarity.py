"""The similarity heatmap (``bf.plot.similarity``) and the task order it uses
(``bf.plot.task_order``): the K×K task-similarity matrix with similar tasks adjacent,
grouped and outlined cluster by cluster when the fit has a point clustering."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bayesfuse._validation import check_choice
from bayesfuse.errors import ReportError
from bayesfuse.reporting.figures._common import panel_axes, point_clustering, similarity_frame
from bayesfuse.reporting.layout import cluster_order, hierarchical_order

__all__ = ["similarity", "task_order"]

#: the task orders of the heatmap
ORDERS = ("auto", "cluster", "hierarchical", "data")


def task_order(fit: Any, order: str = "auto") -> list[str]:
    """The task order used by the similarity heatmap.

    Parameters
    ----------
    fit : FusionResult or DataFrame of shape (K, K)
        A fit, or a similarity matrix with task ids as index and columns.
    order : {"auto", "cluster", "hierarchical", "data"}
        ``"cluster"``: tasks grouped by the fit's point clustering
        (``fit.structure()["clustering"]``), similar tasks adjacent within a cluster;
        ``"hierarchical"``: the leaf order of the average-linkage tree of the similarity;
        ``"data"``: as in the estimates; ``"auto"``: cluster when the fit has a point
        clustering, else hierarchical.

    Returns
    -------
    list of str
        The K task ids in plotting order.

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
    >>> order = bf.plot.task_order(fit)                 # K task ids  # doctest: +SKIP
    >>> fit.similarity().loc[order, order]              # doctest: +SKIP
    """
    _check_order(order)
    frame = similarity_frame(fit, "task_order")
    clustering = point_clustering(fit) if order in ("auto", "cluster") else None
    return _ordered(frame, clustering, order)


def _check_order(order: str) -> None:
    check_choice(order, "order", ORDERS)


def _ordered(frame: pd.DataFrame, clustering: pd.DataFrame | None, order: str) -> list[str]:
    """The task ids of ``frame`` in the order ``order`` (``clustering``: the fit's point
    clustering, or None)."""
    tasks = list(frame.index)
    if order == "data":
        return tasks
    sim = frame.to_numpy(dtype=float)
    if order == "cluster" and clustering is None:
        raise ReportError("order='cluster' needs a fit with a point clustering (a 'clustering' "
                          "table in fit.structure()); this one has none, use "
                          "order='hierarchical'.")
    if clustering is not None:
        labels = clustering.set_index("task").loc[tasks, "cluster"].to_numpy()
        perm = cluster_order(labels, sim)
    else:
        perm = hierarchical_order(sim)
    return [tasks[i] for i in perm]


def _colour_scale(values: np.ndarray) -> tuple[str, float, float]:
    """Diverging scale for signed similarities (correlations), sequential otherwise."""
    low, high = float(np.min(values)), float(np.max(values))
    if low < 0:
        bound = max(abs(low), abs(high), 1e-12)
        return "RdBu_r", -bound, bound
    return "Blues", 0.0, 1.0 if high <= 1.0 else high


def similarity(fit: Any, order: str = "auto", annotate: bool | None = None,
               ax: Any = None) -> Any:
    """Heatmap of the task-similarity matrix, tasks ordered so that similar ones are adjacent.

    When the fit has a point clustering (a ``"clustering"`` table in ``fit.structure()``)
    tasks are grouped cluster by cluster and each cluster is outlined; otherwise they follow
    the average-linkage tree of the similarity.

    Parameters
    ----------
    fit : FusionResult or DataFrame of shape (K, K)
        A fit (``fit.similarity()`` is drawn), or a similarity matrix with task ids as
        index and columns.
    order : {"auto", "cluster", "hierarchical", "data"}
        See :func:`task_order`.
    annotate : bool, optional
        Print the values in the cells (default: when K ≤ 10).
    ax : Axes, optional

    Returns
    -------
    Axes
        The heatmap's ``AxesImage`` is ``ax.images[0]``; the tick labels give the order.

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
    >>> ax = bf.plot.similarity(fit, order="hierarchical")   # doctest: +SKIP
    """
    _check_order(order)
    frame = similarity_frame(fit, "similarity")
    clustering = point_clustering(fit) if order in ("auto", "cluster") else None
    order_tasks = _ordered(frame, clustering, order)
    matrix = frame.loc[order_tasks, order_tasks].to_numpy(dtype=float)
    n_tasks = len(order_tasks)
    size = min(max(0.22 * n_tasks + 2.2, 3.6), 10.0)
    (panel,) = panel_axes(ax, 1, "similarity", (size + 0.9, size))
    cmap, vmin, vmax = _colour_scale(matrix)
    image = panel.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    kind = frame.attrs.get("kind", "similarity")
    colorbar = panel.figure.colorbar(image, ax=panel, fraction=0.046, pad=0.03)
    colorbar.ax.tick_params(labelsize=7)
    ticks = np.arange(n_tasks)
    if n_tasks <= 60:
        fontsize = 8 if n_tasks <= 25 else 6
        panel.set_xticks(ticks, labels=order_tasks, rotation=90, fontsize=fontsize)
        panel.set_yticks(ticks, labels=order_tasks, fontsize=fontsize)
    else:
        panel.set_xticks([])
        panel.set_yticks([])
        panel.set_xlabel(f"{n_tasks} tasks")
    panel.tick_params(length=0)
    if clustering is not None:
        from matplotlib.patches import Rectangle

        labels = clustering.set_index("task").loc[order_tasks, "cluster"].to_numpy()
        starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
        ends = np.r_[starts[1:], n_tasks]
        for start, end in zip(starts, ends, strict=True):
            panel.add_patch(Rectangle((start - 0.5, start - 0.5), end - start, end - start,
                                      fill=False, edgecolor="#222222", lw=1.3, zorder=3))
    if annotate if annotate is not None else n_tasks <= 10:
        for i in range(n_tasks):
            for j in range(n_tasks):
                value = matrix[i, j]
                shade = (value - vmin) / (vmax - vmin) if vmax > vmin else 0.0
                dark = abs(shade - 0.5) > 0.3 if vmin < 0 else shade > 0.6
                panel.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6.5,
                           color="white" if dark else "black")
    panel.set_title(kind, fontsize=9)
    return panel
