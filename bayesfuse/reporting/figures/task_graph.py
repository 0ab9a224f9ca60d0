"""The task graph (``bf.plot.task_graph``): tasks as nodes, the similarities above a
threshold as edges whose width and opacity grow with the weight, nodes coloured by the
fit's point clustering when it has one."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bayesfuse._validation import check_choice
from bayesfuse.errors import ReportError
from bayesfuse.reporting.figures._common import (
    EDGE,
    FUSED,
    panel_axes,
    point_clustering,
    similarity_frame,
)
from bayesfuse.reporting.layout import (
    circle_layout,
    edge_list,
    hierarchical_order,
    spectral_layout,
)

__all__ = ["task_graph"]


def task_graph(fit: Any, threshold: float | None = None, layout: str = "circle",
               labels: bool | None = None, ax: Any = None) -> Any:
    """Draw the task graph: nodes are tasks, edges the similarities above ``threshold``.

    Made for fits whose ``similarity()`` is a learned graph (posterior mean edge weights),
    and usable with any symmetric nonnegative K×K similarity, such as co-clustering
    probabilities. Edge width is proportional to
    the weight (the largest edge is 4 pt wide), edge opacity grows with it.

    Parameters
    ----------
    fit : FusionResult or DataFrame of shape (K, K)
        A fit (``fit.similarity()`` is drawn) or a similarity matrix with task ids.
    threshold : float, optional
        Edges with weight ≤ threshold are not drawn (default: 10% of the largest
        off-diagonal weight).
    layout : {"circle", "spectral"}
        ``"circle"``: tasks on a circle in hierarchical order (similar tasks adjacent);
        ``"spectral"``: the Laplacian eigenvector embedding (falls back to the circle for
        a disconnected graph).
    labels : bool, optional
        Task ids next to the nodes (default: K ≤ 40).
    ax : Axes, optional

    Returns
    -------
    Axes
        Edges are the ``LineCollection`` ``ax.collections[0]`` (one segment per edge),
        nodes the ``PathCollection`` ``ax.collections[1]``.

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
    >>> ax = bf.plot.task_graph(fit, threshold=0.2)     # doctest: +SKIP
    """
    from matplotlib.collections import LineCollection
    from matplotlib.colors import to_rgba

    check_choice(layout, "layout", ("circle", "spectral"))
    frame = similarity_frame(fit, "task_graph")
    weights = frame.to_numpy(dtype=float).copy()
    np.fill_diagonal(weights, 0.0)
    if np.any(weights < -1e-12):
        raise ReportError(
            "task_graph() needs nonnegative similarities (edge weights, co-clustering "
            f"probabilities); this one has entries down to {weights.min():.3g}. For a "
            "correlation, pass fit.similarity().clip(lower=0) to draw positive links only."
        )
    weights = np.clip(weights, 0.0, None)
    tasks = list(frame.index)
    n_tasks = len(tasks)
    largest = float(weights.max()) if n_tasks > 1 else 0.0
    if threshold is None:
        threshold = 0.1 * largest
    elif not np.isfinite(threshold) or threshold < 0:
        raise ReportError(f"threshold must be a nonnegative number; got {threshold!r}.")
    positions = spectral_layout(weights) if layout == "spectral" else None
    if positions is None:
        positions = np.empty((n_tasks, 2))
        positions[hierarchical_order(frame.to_numpy(dtype=float))] = circle_layout(n_tasks)
    pairs, values = edge_list(weights, float(threshold))
    (panel,) = panel_axes(ax, 1, "task_graph", (5.6, 5.6))
    rel = values / largest if largest > 0 else values
    colours = [to_rgba(EDGE, alpha=0.3 + 0.7 * r) for r in rel]
    edges = LineCollection([positions[[i, j]] for i, j in pairs], linewidths=4.0 * rel,
                           colors=colours, zorder=1, capstyle="round")
    panel.add_collection(edges)
    clustering = point_clustering(fit)
    if clustering is not None:
        node_colour = [f"C{(c - 1) % 10}" for c in
                       clustering.set_index("task").loc[tasks, "cluster"].to_numpy()]
    else:
        node_colour = [FUSED] * n_tasks
    node_size = 70 if n_tasks <= 30 else 30
    panel.scatter(positions[:, 0], positions[:, 1], s=node_size, c=node_colour,
                  edgecolors="white", linewidths=0.8, zorder=2)
    if labels if labels is not None else n_tasks <= 40:
        for task, (x, y) in zip(tasks, positions, strict=True):
            norm = math.hypot(x, y) or 1.0
            panel.annotate(task, (x, y), xytext=(7 * x / norm, 7 * y / norm),
                           textcoords="offset points", fontsize=7 if n_tasks <= 25 else 5.5,
                           ha="left" if x > 0.05 else ("right" if x < -0.05 else "center"),
                           va="bottom" if y > 0.05 else ("top" if y < -0.05 else "center"))
    panel.set_aspect("equal")
    panel.set_xlim(-1.3, 1.3)
    panel.set_ylim(-1.3, 1.3)
    panel.axis("off")
    kind = frame.attrs.get("kind", "similarity")
    panel.set_title(f"{kind}\n{len(pairs)} edges with weight > {threshold:.3g}", fontsize=9)
    return panel
