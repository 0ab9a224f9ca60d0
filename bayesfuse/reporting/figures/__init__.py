"""Figures of a fit (``bf.plot``): forest, shrinkage, similarity, task graph, prior vs
posterior, and the ArviZ sampler diagnostics.

Every function draws with Matplotlib's object-oriented API, accepts ``ax=`` (or ``axes=``)
to draw into existing axes, and returns what it drew on: one ``Axes``, or an array of
``Axes`` for several panels. Without ``ax`` a new figure is made with ``pyplot``; nothing
is shown, so the functions are safe under the non-interactive Agg backend.

Examples
--------
>>> import bayesfuse as bf
>>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
>>> fit = bf.fuse(est, method="exact", seed=0)                 # doctest: +SKIP
>>> ax = bf.plot.forest(fit, ci_prob=0.9)                      # doctest: +SKIP
>>> ax.figure.savefig("forest.png", dpi=200)                   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from bayesfuse.errors import ReportError
from bayesfuse.reporting import layout as _layout

__all__ = [
    "forest",
    "shrinkage",
    "similarity",
    "task_graph",
    "prior_posterior",
    "trace",
    "energy",
    "pair",
    "task_order",
    "offscreen",
]

#: colours: stage 1 (grey), fused posterior (dark blue), pooled mean (dark red)
STAGE1 = "#6b6b6b"
FUSED = "#1b4f8a"
POOLED = "#b2182b"
EDGE = "#1b4f8a"
INTERVALS = ("eti", "hdi")
#: when set, new figures are plain ``matplotlib.figure.Figure`` objects, never pyplot's
_OFFSCREEN: contextvars.ContextVar[bool] = contextvars.ContextVar("offscreen", default=False)


@contextlib.contextmanager
def offscreen() -> Iterator[None]:
    """Make new figures without ``pyplot`` inside the block (no GUI backend, no figure
    manager to close): for writing files from scripts and servers. The figures are
    released when no longer referenced."""
    token = _OFFSCREEN.set(True)
    try:
        yield
    finally:
        _OFFSCREEN.reset(token)


def _new_figure(figsize: tuple[float, float]) -> Any:
    """A constrained-layout figure, from pyplot unless :func:`offscreen` is active."""
    if _OFFSCREEN.get():
        from matplotlib.figure import Figure

        return Figure(figsize=figsize, layout="constrained")
    import matplotlib.pyplot as plt

    return plt.figure(figsize=figsize, layout="constrained")


# ---------------------------------------------------------------------- helpers
def _check_fit(fit: Any, what: str) -> Any:
    from bayesfuse.result import FusionResult

    if not isinstance(fit, FusionResult):
        raise ReportError(
            f"{what}() needs a FusionResult (from bf.fuse or bf.load_fit); got "
            f"{type(fit).__name__}."
        )
    return fit


def _check_prob(ci_prob: float) -> float:
    if isinstance(ci_prob, bool) or not isinstance(ci_prob, int | float) \
            or not 0 < ci_prob < 1:
        raise ReportError(f"ci_prob must be in (0, 1), e.g. 0.95; got {ci_prob!r}.")
    return float(ci_prob)


def _check_interval(interval: str) -> str:
    if interval not in INTERVALS:
        raise ReportError(
            f"interval must be one of {', '.join(INTERVALS)} (equal-tailed or highest "
            f"density); got {interval!r}."
        )
    return interval


def _select_params(fit: Any, params: str | Sequence[str] | None) -> list[str]:
    if params is None:
        return list(fit.params)
    chosen = [params] if isinstance(params, str) else list(params)
    unknown = [p for p in chosen if p not in fit.params]
    if unknown or not chosen:
        raise ReportError(
            f"params {unknown or chosen!r} not in this fit; valid params: "
            f"{', '.join(fit.params)}."
        )
    return chosen


def _param_label(fit: Any, param: str) -> str:
    """x/y label of a parameter: its name, or θ (with the estimand) for scalar θ."""
    if len(fit.params) == 1 and param == "theta":
        estimand = fit.estimates.estimand
        return f"θ ({estimand.upper()})" if estimand else "θ"
    return param


def _panels(ax: Any, n_panels: int, what: str, figsize: tuple[float, float],
            sharey: bool = False, ncols: int | None = None) -> list[Any]:
    """The axes to draw on: ``ax`` checked against ``n_panels``, or a new figure."""
    if ax is None:
        ncols = n_panels if ncols is None else ncols
        nrows = math.ceil(n_panels / ncols)
        axes = _new_figure(figsize).subplots(nrows, ncols, sharey=sharey, squeeze=False)
        flat = list(axes.ravel())
        for extra in flat[n_panels:]:
            extra.set_visible(False)
        return flat[:n_panels]
    flat = list(np.ravel(np.asarray(ax, dtype=object)))
    if len(flat) < n_panels:
        raise ReportError(
            f"{what}() draws {n_panels} panels here; pass ax as a sequence of {n_panels} "
            f"Axes (got {len(flat)}), or leave ax=None for a new figure."
        )
    return flat[:n_panels]


def _result(axes: list[Any]) -> Any:
    return axes[0] if len(axes) == 1 else np.asarray(axes, dtype=object)


def _tidy(ax: Any, grid_axis: str = "x") -> None:
    """Publication style: no top/right spines, a light grid behind the data."""
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(True, axis=grid_axis, color="#e3e3e3", linewidth=0.6, zorder=0)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=8)


def _pooled_mean(fit: Any, ci_prob: float) -> dict[str, tuple[float, float, float]]:
    """Posterior mean and ETI of a global ``mu`` per parameter (empty when the family has
    no single pooled mean, e.g. ``cluster`` or ``metareg``)."""
    post = fit.idata.posterior
    if "mu" not in post or set(post["mu"].dims) - {"chain", "draw", "param"}:
        return {}
    mu = post["mu"]
    if "param" not in mu.dims:
        mu = mu.expand_dims(param=fit.params[:1], axis=-1)
    values = mu.transpose("chain", "draw", "param").values.reshape(-1, mu.sizes["param"])
    alpha = (1 - ci_prob) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha], axis=0)
    return {str(p): (float(values[:, j].mean()), float(low[j]), float(high[j]))
            for j, p in enumerate(mu["param"].values)}


def _similarity_frame(source: Any, what: str) -> pd.DataFrame:
    """A K×K similarity DataFrame from a fit, a DataFrame or a square array."""
    if hasattr(source, "similarity") and hasattr(source, "idata"):
        return source.similarity()
    if isinstance(source, pd.DataFrame):
        frame = source.copy()
    else:
        array = np.asarray(source, dtype=float)
        if array.ndim != 2:
            raise ReportError(
                f"{what}() needs a FusionResult or a K×K similarity matrix; got an object "
                f"of type {type(source).__name__}."
            )
        frame = pd.DataFrame(array, index=[str(i) for i in range(array.shape[0])],
                             columns=[str(i) for i in range(array.shape[1])])
    if frame.shape[0] != frame.shape[1] or frame.shape[0] == 0:
        raise ReportError(f"{what}(): the similarity matrix must be square K×K; got shape "
                          f"{frame.shape}.")
    values = frame.to_numpy(dtype=float)
    if not np.all(np.isfinite(values)):
        raise ReportError(f"{what}(): the similarity matrix has NaN or infinite entries.")
    if not np.allclose(values, values.T, atol=1e-8, rtol=1e-6):
        raise ReportError(f"{what}(): the similarity matrix must be symmetric; pass "
                          "(S + S.T) / 2 for a nearly symmetric one.")
    frame.index = [str(t) for t in frame.index]
    frame.columns = [str(t) for t in frame.columns]
    return frame


def _clustering(source: Any) -> pd.DataFrame | None:
    """The point clustering of a fit (``structure()["clustering"]``), if it has one."""
    if not (hasattr(source, "structure") and hasattr(source, "idata")):
        return None
    table = source.structure().get("clustering")
    if isinstance(table, pd.DataFrame) and {"task", "cluster"} <= set(table.columns):
        return table
    return None


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
        ``"data"``: as in the estimates; ``"auto"``: cluster when the family has a
        clustering, else hierarchical.

    Returns
    -------
    list of str
        The K task ids in plotting order.
    """
    valid = ("auto", "cluster", "hierarchical", "data")
    if order not in valid:
        raise ReportError(f"order must be one of {', '.join(valid)}; got {order!r}.")
    frame = _similarity_frame(fit, "task_order")
    clustering = _clustering(fit) if order in ("auto", "cluster") else None
    return _ordered(frame, clustering, order)


def _ordered(frame: pd.DataFrame, clustering: pd.DataFrame | None, order: str) -> list[str]:
    tasks = list(frame.index)
    if order == "data":
        return tasks
    sim = frame.to_numpy(dtype=float)
    if order == "cluster" and clustering is None:
        raise ReportError("order='cluster' needs a family with a clustering (model='cluster'); "
                          "use order='hierarchical' for this fit.")
    if clustering is not None:
        labels = clustering.set_index("task").loc[tasks, "cluster"].to_numpy()
        perm = _layout.cluster_order(labels, sim)
    else:
        perm = _layout.hierarchical_order(sim)
    return [tasks[i] for i in perm]


# ---------------------------------------------------------------------- estimates
def forest(fit: Any, ci_prob: float = 0.95, sort: bool = True, interval: str = "eti",
           params: str | Sequence[str] | None = None, ax: Any = None) -> Any:
    """Forest plot: stage-1 estimate ± interval and fused posterior mean with interval.

    One row per task; one panel per parameter (shared task axis) for vector θ. The stage-1
    interval is θ̂ₖ ± z·seₖ (normal, same ``ci_prob``); the fused interval is the posterior
    ETI or HDI of θₖ. A dashed line and band mark the pooled mean μ when the family has one.

    Parameters
    ----------
    fit : FusionResult
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
    """
    fit = _check_fit(fit, "forest")
    ci_prob = _check_prob(ci_prob)
    interval = _check_interval(interval)
    chosen = _select_params(fit, params)
    table = fit.summary(ci_prob)
    n_tasks = len(fit.tasks)
    first = table[table["param"] == chosen[0]].set_index("task")
    if sort:
        order = list(first["mean"].sort_values(ascending=False, kind="stable").index)
    else:
        order = list(fit.tasks)
    height = min(max(0.24 * n_tasks + 1.4, 3.0), 30.0)
    axes = _panels(ax, len(chosen), "forest", (4.6 * len(chosen) + 1.2, height),
                   sharey=True)
    from matplotlib.lines import Line2D
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + ci_prob / 2))
    pooled = _pooled_mean(fit, ci_prob)
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
        panel.set_xlabel(_param_label(fit, param))
        _tidy(panel, "x")
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
    return _result(axes)


def shrinkage(fit: Any, params: str | Sequence[str] | None = None, labels: bool | None = None,
              ax: Any = None) -> Any:
    """Shrinkage plot: each task's stage-1 estimate → fused posterior mean, against its SE.

    Arrows run from θ̂ₖ to E[θₖ | data] at x = stage-1 SE; noisy tasks (right) move
    further, toward the pooled mean (dashed line, when the family has one μ).

    Parameters
    ----------
    fit : FusionResult
    params : str or list of str, optional
        Parameters to draw (default: all), one panel each.
    labels : bool, optional
        Write task ids next to the stage-1 points (default: when K ≤ 12).
    ax : Axes or sequence of Axes, optional

    Returns
    -------
    Axes, or ndarray of Axes of shape (p,)
    """
    fit = _check_fit(fit, "shrinkage")
    chosen = _select_params(fit, params)
    table = fit.summary()
    labels = len(fit.tasks) <= 12 if labels is None else bool(labels)
    axes = _panels(ax, len(chosen), "shrinkage", (4.2 * len(chosen) + 0.6, 3.6))
    pooled = _pooled_mean(fit, 0.95)
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
        panel.set_ylabel(_param_label(fit, param))
        _tidy(panel, "y")
    axes[0].legend(loc="best", frameon=False, fontsize=7.5)
    return _result(axes)


# ---------------------------------------------------------------------- similarity
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

    With a clustering (``model="cluster"``) tasks are grouped cluster by cluster and each
    cluster is outlined; otherwise they follow the average-linkage tree of the similarity.

    Parameters
    ----------
    fit : FusionResult or DataFrame of shape (K, K)
    order : {"auto", "cluster", "hierarchical", "data"}
        See :func:`task_order`.
    annotate : bool, optional
        Print the values in the cells (default: when K ≤ 10).
    ax : Axes, optional

    Returns
    -------
    Axes
        The heatmap's ``AxesImage`` is ``ax.images[0]``; the tick labels give the order.
    """
    valid = ("auto", "cluster", "hierarchical", "data")
    if order not in valid:
        raise ReportError(f"order must be one of {', '.join(valid)}; got {order!r}.")
    frame = _similarity_frame(fit, "similarity")
    clustering = _clustering(fit) if order in ("auto", "cluster") else None
    order_tasks = _ordered(frame, clustering, order)
    matrix = frame.loc[order_tasks, order_tasks].to_numpy(dtype=float)
    n_tasks = len(order_tasks)
    size = min(max(0.22 * n_tasks + 2.2, 3.6), 10.0)
    (panel,) = _panels(ax, 1, "similarity", (size + 0.9, size))
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


def task_graph(fit: Any, threshold: float | None = None, layout: str = "circle",
               labels: bool | None = None, ax: Any = None) -> Any:
    """Draw the task graph: nodes are tasks, edges the similarities above ``threshold``.

    Made for the learned graphs of ``gmrf``/``car`` (posterior mean edge weights), and
    usable with any symmetric nonnegative K×K similarity. Edge width is proportional to
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
    """
    from matplotlib.collections import LineCollection
    from matplotlib.colors import to_rgba

    if layout not in ("circle", "spectral"):
        raise ReportError(f"layout must be 'circle' or 'spectral'; got {layout!r}.")
    frame = _similarity_frame(fit, "task_graph")
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
    positions = _layout.spectral_layout(weights) if layout == "spectral" else None
    if positions is None:
        positions = np.empty((n_tasks, 2))
        positions[_layout.hierarchical_order(frame.to_numpy(dtype=float))] = \
            _layout.circle_layout(n_tasks)
    pairs, values = _layout.edge_list(weights, float(threshold))
    (panel,) = _panels(ax, 1, "task_graph", (5.6, 5.6))
    rel = values / largest if largest > 0 else values
    colours = [to_rgba(EDGE, alpha=0.3 + 0.7 * r) for r in rel]
    edges = LineCollection([positions[[i, j]] for i, j in pairs], linewidths=4.0 * rel,
                           colors=colours, zorder=1, capstyle="round")
    panel.add_collection(edges)
    clustering = _clustering(fit)
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


# ---------------------------------------------------------------------- hyperparameters
def _hyper_draws(fit: Any, var_names: Sequence[str] | None, group: str = "posterior",
                 ) -> dict[str, np.ndarray]:
    """Flat hyperparameter elements (``mu[read]``) -> draws of shape (chain, draw)."""
    from bayesfuse.analysis.diagnostics import flat_names

    names = list(fit.hyperparameters) if var_names is None else list(var_names)
    posterior = fit.idata.posterior
    unknown = [n for n in names if n not in posterior]
    if unknown:
        raise ReportError(
            f"var_names {unknown} not in the posterior; valid names: "
            f"{', '.join(fit.hyperparameters + ['theta'])}."
        )
    data = getattr(fit.idata, group) if group in fit.idata.groups() else None
    out: dict[str, np.ndarray] = {}
    for name in names:
        if data is None or name not in data:
            continue
        flat, values = flat_names(name, data[name])
        for j, label in enumerate(flat):
            out[label] = values[:, :, j]
    return out


def _hyper_dataset(fit: Any, var_names: Sequence[str] | None, what: str,
                   max_elements: int = 12):
    """An xarray Dataset with one (chain, draw) variable per non-constant element."""
    import arviz as az

    draws = {k: v for k, v in _hyper_draws(fit, var_names).items() if np.ptp(v) > 0}
    if not draws:
        raise ReportError(
            f"{what}(): this fit has no varying hyperparameters to plot (model "
            f"'{fit.model}'); pass var_names=['theta'] to look at θ."
        )
    draws = dict(list(draws.items())[:max_elements])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.convert_to_dataset(draws)


def prior_posterior(fit: Any, var_names: Sequence[str] | None = None, max_panels: int = 12,
                    axes: Any = None) -> Any:
    """Prior vs posterior of each hyperparameter element, one panel each.

    The posterior is a kernel density line; the prior is a filled histogram of the draws
    kept in ``idata.prior`` (normalised by all prior draws, so that a heavy-tailed prior
    cut at the plot's range keeps its true density). The x range covers the central 99% of
    the posterior and 95% of the prior. Integer quantities (``n_clusters``) are drawn as
    probability bars.

    Parameters
    ----------
    fit : FusionResult
        A fit with prior draws (``bf.fuse(..., prior_draws=500)``, the default).
    var_names : list of str, optional
        Posterior variables (default: ``fit.hyperparameters``).
    max_panels : int
        At most this many elements are drawn.
    axes : sequence of Axes, optional

    Returns
    -------
    Axes, or ndarray of Axes of shape (n_panels,)
    """
    import arviz as az

    fit = _check_fit(fit, "prior_posterior")
    if "prior" not in fit.idata.groups():
        raise ReportError("This fit has no prior draws (idata has no 'prior' group); refit "
                          "with bf.fuse(..., prior_draws=500).")
    posterior = _hyper_draws(fit, var_names)
    prior = _hyper_draws(fit, var_names, group="prior")
    names = [n for n, v in posterior.items() if np.ptp(v) > 0][:max_panels]
    if not names:
        raise ReportError(f"prior_posterior(): no varying hyperparameters in this fit (model "
                          f"'{fit.model}'); pass var_names, e.g. ['theta'].")
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    panels = _panels(axes, len(names), "prior_posterior", (3.2 * ncols, 2.5 * nrows),
                     ncols=ncols)
    for panel, name in zip(panels, names, strict=True):
        post = posterior[name].ravel()
        pri = prior[name].ravel() if name in prior else None
        if np.issubdtype(post.dtype, np.integer):
            from matplotlib.ticker import MaxNLocator

            support = np.arange(post.min(), post.max() + 1)
            shift = 0.0
            if pri is not None:
                support = np.arange(min(support[0], pri.min()), max(support[-1], pri.max()) + 1)
                panel.bar(support - 0.2, [np.mean(pri == s) for s in support], width=0.4,
                          color="#bdbdbd", label="prior")
                shift = 0.2
            panel.bar(support + shift, [np.mean(post == s) for s in support], width=0.4,
                      color=FUSED, label="posterior")
            panel.xaxis.set_major_locator(MaxNLocator(integer=True))
            panel.set_ylabel("probability", fontsize=8)
        else:
            low, high = np.quantile(post, [0.005, 0.995])
            if pri is not None:
                p_low, p_high = np.quantile(pri, [0.025, 0.975])
                low, high = min(low, p_low), max(high, p_high)
                edges = np.linspace(low, high, 31)
                counts, _ = np.histogram(pri, bins=edges)
                density = counts / (pri.size * np.diff(edges))
                panel.stairs(density, edges, fill=True, color="#d0d0d0", label="prior")
                panel.stairs(density, edges, color="#9a9a9a", lw=0.6)
            grid, pdf = az.kde(post)
            panel.plot(grid, pdf, color=FUSED, lw=1.6, label="posterior")
            panel.set_xlim(low, high)
            panel.set_ylabel("density", fontsize=8)
        panel.set_title(name + ("" if pri is not None else "  (no prior draws)"), fontsize=9)
        prior_text = fit.priors.get(name, fit.priors.get(name.split("[")[0]))
        if prior_text:
            panel.set_xlabel(f"prior: {prior_text}", fontsize=7.5)
        _tidy(panel, "y")
        panel.set_yticks([])
    panels[0].legend(frameon=False, fontsize=7.5)
    return _result(panels)


def trace(fit: Any, var_names: Sequence[str] | None = None, kind: str = "rank_bars",
          axes: Any = None) -> Any:
    """Per-chain densities and rank plots of the hyperparameters (``arviz.plot_trace``).

    Rank plots (Vehtari et al. 2021) show well-mixed chains as flat, overlapping bar
    rows; a chain stuck in its own region shows as a slope.

    Parameters
    ----------
    fit : FusionResult
    var_names : list of str, optional
        Posterior variables (default: ``fit.hyperparameters``; ``["theta"]`` for θ).
    kind : {"rank_bars", "rank_vlines", "trace"}
        Right column: rank bars, rank lines, or the classic trace.
    axes : ndarray of Axes of shape (n, 2), optional

    Returns
    -------
    ndarray of Axes of shape (n, 2)
    """
    import arviz as az

    fit = _check_fit(fit, "trace")
    if kind not in ("rank_bars", "rank_vlines", "trace"):
        raise ReportError(f"kind must be 'rank_bars', 'rank_vlines' or 'trace'; got {kind!r}.")
    data = _hyper_dataset(fit, var_names, "trace")
    n_vars = len(data.data_vars)
    if axes is None:
        axes = _new_figure((8.0, 2.0 * n_vars)).subplots(n_vars, 2, squeeze=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.plot_trace(data, kind=kind, axes=axes, compact=False,
                             plot_kwargs={"textsize": 9}, show=False)


def energy(fit: Any, ax: Any = None) -> Any:
    """NUTS energy plot with E-BFMI per chain (``arviz.plot_energy``).

    Overlapping marginal energy and energy-transition densities mean the sampler explores
    the posterior's energy well; a much narrower transition density (E-BFMI < 0.3) warns of
    heavy tails or a funnel.

    Returns
    -------
    Axes
    """
    import arviz as az

    fit = _check_fit(fit, "energy")
    if "energy" not in fit.idata.sample_stats:
        raise ReportError(
            f"This fit has no NUTS energy (method '{fit.meta.get('method', 'nuts')}', backend "
            f"'{fit.meta.get('backend')}'): exact draws are independent and need no energy "
            "plot."
        )
    if ax is None:
        ax = _new_figure((5.0, 3.4)).subplots()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.plot_energy(fit.idata, ax=ax, textsize=8, show=False)


def pair(fit: Any, var_names: Sequence[str] | None = None, divergences: bool = True,
         ax: Any = None) -> Any:
    """Pairwise scatter of the hyperparameter draws, divergent transitions highlighted
    (``arviz.plot_pair``); funnels show as a narrowing cloud toward small scales.

    Parameters
    ----------
    fit : FusionResult
    var_names : list of str, optional
        Posterior variables (default: ``fit.hyperparameters``); at least two elements.
    divergences : bool
    ax : ndarray of Axes, optional

    Returns
    -------
    Axes, or ndarray of Axes
    """
    import arviz as az

    fit = _check_fit(fit, "pair")
    data = _hyper_dataset(fit, var_names, "pair", max_elements=8)
    if len(data.data_vars) < 2:
        raise ReportError(
            f"pair() needs at least two varying hyperparameter elements; this fit has "
            f"{list(data.data_vars)}. Pass more var_names (e.g. ['mu', 'tau'])."
        )
    groups: dict[str, Any] = {"posterior": data}
    stats = fit.idata.sample_stats
    has_div = divergences and "diverging" in stats
    if has_div:
        groups["sample_stats"] = stats[["diverging"]]
    n_vars = len(data.data_vars)
    if ax is None:
        side = 2.4 * (n_vars - 1) + 0.6
        figure = _new_figure((side, side))
        ax = figure.subplots() if n_vars == 2 else \
            figure.subplots(n_vars - 1, n_vars - 1, squeeze=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = az.InferenceData(**groups)
        return az.plot_pair(idata, divergences=has_div, ax=ax, textsize=8,
                            scatter_kwargs={"alpha": 0.35, "s": 6}, show=False)
