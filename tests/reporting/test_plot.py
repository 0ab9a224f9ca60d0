"""``bf.plot``: what each figure draws (rows, intervals, arrows, orderings, edges)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import LineCollection, PathCollection  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from report_fits import (  # noqa: E402
    CLUSTER_TRUTH,
    cluster_fit,
    exact_fit,
    nuts_fit,
    vector_fit,
)
from scipy.stats import norm  # noqa: E402

import bayesfuse as bf  # noqa: E402
from bayesfuse.errors import OptionError, ReportError  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def rows_top_down(ax) -> list[str]:
    """y tick labels from the top of the axes to the bottom."""
    ticks = ax.get_yticks()
    labels = [t.get_text() for t in ax.get_yticklabels()]
    return [label for _, label in sorted(zip(ticks, labels, strict=True), reverse=True)]


def segments_by_row(collection) -> list[tuple[float, float, float]]:
    """(y, x_low, x_high) of each horizontal segment, top row first."""
    segs = [(s[0, 1], min(s[0, 0], s[1, 0]), max(s[0, 0], s[1, 0]))
            for s in collection.get_segments()]
    return sorted(segs, reverse=True)


# ---------------------------------------------------------------------- forest
def test_forest_sorts_tasks_and_draws_both_intervals():
    fit = exact_fit()
    ax = bf.plot.forest(fit, ci_prob=0.9)
    summary = fit.summary(0.9).set_index("task")
    expected = list(summary["mean"].sort_values(ascending=False).index)
    assert rows_top_down(ax) == expected
    lines = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(lines) == 2  # stage-1 intervals, fused intervals
    stage1, fused = lines
    z = norm.ppf(0.95)
    for (_, low, high), task in zip(segments_by_row(stage1), expected, strict=True):
        row = summary.loc[task]
        assert low == pytest.approx(row["estimate"] - z * row["se"])
        assert high == pytest.approx(row["estimate"] + z * row["se"])
    for (_, low, high), task in zip(segments_by_row(fused), expected, strict=True):
        assert (low, high) == pytest.approx((summary.loc[task, "eti_low"],
                                             summary.loc[task, "eti_high"]))
    # the pooled mean line sits at the posterior mean of mu
    mu = float(fit.idata.posterior["mu"].mean())
    vertical = [ln for ln in ax.lines if np.ptp(ln.get_xdata()) == 0 and len(ln.get_xdata())]
    assert any(ln.get_xdata()[0] == pytest.approx(mu) for ln in vertical)
    assert ax.get_xlabel() == "θ"
    assert len(ax.get_legend().get_texts()) == 3


def test_forest_data_order_and_hdi():
    fit = exact_fit()
    ax = bf.plot.forest(fit, ci_prob=0.8, sort=False, interval="hdi")
    assert rows_top_down(ax) == fit.tasks
    summary = fit.summary(0.8).set_index("task")
    fused = [c for c in ax.collections if isinstance(c, LineCollection)][1]
    for (_, low, high), task in zip(segments_by_row(fused), fit.tasks, strict=True):
        assert (low, high) == pytest.approx((summary.loc[task, "hdi_low"],
                                             summary.loc[task, "hdi_high"]))


def test_forest_facets_one_panel_per_param():
    fit = vector_fit()
    axes = bf.plot.forest(fit)
    assert axes.shape == (2,)
    assert [a.get_xlabel() for a in axes] == ["read", "math"]
    for panel in axes:
        lines = [c for c in panel.collections if isinstance(c, LineCollection)]
        assert [len(c.get_segments()) for c in lines] == [6, 6]
    # one task order for both panels: sorted by the fused mean of the first parameter
    read = fit.summary().query("param == 'read'").set_index("task")["mean"]
    assert rows_top_down(axes[0]) == list(read.sort_values(ascending=False).index)
    assert axes[1].yaxis.get_tick_params()["labelleft"] is False
    # the math panel's fused intervals follow the same rows
    math = fit.summary().query("param == 'math'").set_index("task")
    fused = [c for c in axes[1].collections if isinstance(c, LineCollection)][1]
    order = rows_top_down(axes[0])
    lows = [low for _, low, _ in segments_by_row(fused)]
    assert lows == pytest.approx(math.loc[order, "eti_low"].to_list())


def test_forest_draws_into_given_axes_and_rejects_bad_input():
    fit = vector_fit()
    fig, axes = plt.subplots(1, 2)
    returned = bf.plot.forest(fit, ax=axes)
    assert returned[0] is axes[0] and returned[1] is axes[1]
    single = bf.plot.forest(fit, params="math", ax=plt.subplots()[1])
    assert single.get_xlabel() == "math"
    with pytest.raises(ReportError, match="sequence of 2 Axes"):
        bf.plot.forest(fit, ax=plt.subplots()[1])
    with pytest.raises(ReportError, match="valid params: read, math"):
        bf.plot.forest(fit, params="reading")
    with pytest.raises(OptionError, match="ci_prob"):
        bf.plot.forest(fit, ci_prob=95)
    with pytest.raises(OptionError, match="'eti', 'hdi'"):
        bf.plot.forest(fit, interval="hpd")
    with pytest.raises(ReportError, match="FusionResult"):
        bf.plot.forest(fit.summary())


# ---------------------------------------------------------------------- shrinkage
def test_shrinkage_arrows_run_from_stage1_to_fused_mean():
    fit = nuts_fit()
    ax = bf.plot.shrinkage(fit)
    summary = fit.summary().set_index("task")
    arrows = [t for t in ax.texts if getattr(t, "arrow_patch", None) is not None]
    assert len(arrows) == len(fit.tasks)
    starts = sorted(tuple(a.xyann) for a in arrows)
    ends = sorted(tuple(a.xy) for a in arrows)
    np.testing.assert_allclose(starts, sorted(zip(summary["se"], summary["estimate"],
                                                  strict=True)))
    np.testing.assert_allclose(ends, sorted(zip(summary["se"], summary["mean"], strict=True)))
    labels = {t.get_text() for t in ax.texts} - {""}
    assert labels == set(fit.tasks)  # K = 8 <= 12: tasks labelled
    mu = float(fit.idata.posterior["mu"].mean())
    horizontal = [ln for ln in ax.lines if np.ptp(ln.get_ydata()) == 0]
    assert [ln.get_ydata()[0] for ln in horizontal] == pytest.approx([mu])
    assert ax.get_xlabel() == "stage-1 standard error"
    assert len([c for c in ax.collections if isinstance(c, PathCollection)]) == 2


# ---------------------------------------------------------------------- similarity
def test_similarity_heatmap_groups_the_clusters():
    fit = cluster_fit()
    ax = bf.plot.similarity(fit)
    order = [t.get_text() for t in ax.get_xticklabels()]
    assert sorted(order) == sorted(fit.tasks)
    assert order == [t.get_text() for t in ax.get_yticklabels()]
    truth = dict(zip(fit.tasks, CLUSTER_TRUTH, strict=True))
    along = [truth[t] for t in order]
    assert sum(a != b for a, b in zip(along, along[1:], strict=False)) == 1  # two blocks
    # the image is the similarity matrix in that order, one outline per cluster
    sim = fit.similarity()
    np.testing.assert_allclose(ax.images[0].get_array(), sim.loc[order, order].to_numpy())
    boxes = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert sorted(b.get_width() for b in boxes) == [4, 4]
    assert bf.plot.task_order(fit) == order


def test_similarity_hierarchical_order_without_clustering():
    rng = np.random.default_rng(1)
    block = np.repeat([0, 1, 2], 4)
    sim = np.where(block[:, None] == block[None], 0.8, 0.1) + 0.02 * rng.random((12, 12))
    sim = (sim + sim.T) / 2
    np.fill_diagonal(sim, 1.0)
    perm = rng.permutation(12)
    tasks = [f"k{i}" for i in range(12)]
    frame = pd.DataFrame(sim[perm][:, perm], index=tasks, columns=tasks)
    ax = bf.plot.similarity(frame)
    order = [t.get_text() for t in ax.get_xticklabels()]
    groups = [block[perm][tasks.index(t)] for t in order]
    assert sum(a != b for a, b in zip(groups, groups[1:], strict=False)) == 2
    assert bf.plot.task_order(frame, order="data") == tasks
    with pytest.raises(ReportError, match="point clustering"):
        bf.plot.task_order(exact_fit(), order="cluster")
    # a correlation (negative entries) gets a symmetric diverging scale
    corr = bf.plot.similarity(frame - 0.5)
    low, high = corr.images[0].get_clim()
    assert low == pytest.approx(-high)


# ---------------------------------------------------------------------- task graph
def test_task_graph_edge_widths_proportional_to_weights():
    weights = np.zeros((5, 5))
    edges = {(0, 1): 2.0, (1, 2): 1.0, (2, 3): 0.5, (3, 4): 0.05, (0, 4): 1.5}
    for (i, j), w in edges.items():
        weights[i, j] = weights[j, i] = w
    tasks = list("abcde")
    frame = pd.DataFrame(weights, index=tasks, columns=tasks)
    ax = bf.plot.task_graph(frame)  # default threshold: 10% of the largest (0.2)
    lines, nodes = ax.collections[0], ax.collections[1]
    assert isinstance(lines, LineCollection) and isinstance(nodes, PathCollection)
    assert len(lines.get_segments()) == 4  # the 0.05 edge is below the threshold
    widths = np.asarray(lines.get_linewidths())
    drawn = sorted(w for w in edges.values() if w > 0.2)
    np.testing.assert_allclose(np.sort(widths) / widths.max(), np.array(drawn) / max(drawn))
    assert len(nodes.get_offsets()) == 5
    every = bf.plot.task_graph(frame, threshold=0.0, layout="spectral")
    assert len(every.collections[0].get_segments()) == 5
    positions = every.collections[1].get_offsets()
    assert np.abs(positions).max() <= 1.0 + 1e-9
    assert len({tuple(np.round(p, 6)) for p in positions}) == 5  # distinct node positions
    assert {t.get_text() for t in every.texts} == set(tasks)


def test_task_graph_validates_the_matrix():
    bad = pd.DataFrame([[1.0, -0.3], [-0.3, 1.0]], index=["a", "b"], columns=["a", "b"])
    with pytest.raises(ReportError, match="nonnegative"):
        bf.plot.task_graph(bad)
    with pytest.raises(ReportError, match="symmetric"):
        bf.plot.task_graph(np.array([[0.0, 1.0], [0.0, 0.0]]))
    with pytest.raises(ReportError, match="square"):
        bf.plot.task_graph(np.ones((2, 3)))
    with pytest.raises(OptionError, match="layout"):
        bf.plot.task_graph(np.eye(3), layout="spring")


def test_task_graph_of_a_cluster_fit_links_cluster_mates_only():
    fit = cluster_fit()
    ax = bf.plot.task_graph(fit, threshold=0.5)
    pairs = []
    positions = {tuple(np.round(p, 9)): i for i, p in
                 enumerate(ax.collections[1].get_offsets())}
    for segment in ax.collections[0].get_segments():
        i, j = (positions[tuple(np.round(p, 9))] for p in segment)
        pairs.append((i, j))
    assert pairs, "co-clustering above 0.5 within clusters should give edges"
    assert all(CLUSTER_TRUTH[i] == CLUSTER_TRUTH[j] for i, j in pairs)
    colours = ax.collections[1].get_facecolors()
    assert len({tuple(c) for c in colours}) == 2  # nodes coloured by cluster


# ---------------------------------------------------------------------- hyperparameters
def test_prior_posterior_one_panel_per_hyperparameter():
    fit = nuts_fit()
    axes = bf.plot.prior_posterior(fit)
    assert [a.get_title() for a in axes] == ["mu", "tau"]
    for panel, name in zip(axes, ["mu", "tau"], strict=True):
        assert len(panel.lines) == 1  # posterior density
        assert len(panel.patches) >= 1  # prior histogram
        assert panel.get_xlabel() == f"prior: {fit.priors[name]}"
        x = panel.lines[0].get_xdata()
        post = fit.idata.posterior[name].values
        assert x.min() <= np.quantile(post, 0.01) and x.max() >= np.quantile(post, 0.99)
    integer = bf.plot.prior_posterior(cluster_fit(), var_names=["n_clusters"])
    heights = [p.get_height() for p in integer.patches]
    assert sum(heights) == pytest.approx(1.0)  # posterior pmf (no prior draws of it)


def test_prior_posterior_needs_prior_draws():
    fit = nuts_fit()
    no_prior = bf.FusionResult(fit.idata.copy(), estimates=fit.estimates, family=fit.family)
    del no_prior.idata.prior
    with pytest.raises(ReportError, match="prior_draws"):
        bf.plot.prior_posterior(no_prior)
    with pytest.raises(ReportError, match="valid names"):
        bf.plot.prior_posterior(fit, var_names=["sigma"])


def test_arviz_diagnostic_plots():
    fit = nuts_fit()
    axes = bf.plot.trace(fit)
    assert axes.shape == (2, 2)
    assert [a.get_title() for a in axes[:, 0]] == ["mu", "tau"]
    assert bf.plot.energy(fit).get_legend() is not None
    pair_ax = bf.plot.pair(fit)
    assert pair_ax.get_xlabel() == "mu" and pair_ax.get_ylabel() == "tau"
    with pytest.raises(ReportError, match="no NUTS energy"):
        bf.plot.energy(exact_fit())
    with pytest.raises(ReportError, match="at least two"):
        bf.plot.pair(fit, var_names=["tau"])
    vector = bf.plot.trace(vector_fit())
    titles = [a.get_title() for a in vector[:, 0]]
    assert titles == ["mu[read]", "mu[math]", "tau[read]", "tau[math]", "corr[read,math]"]


def test_offscreen_figures_bypass_pyplot():
    before = plt.get_fignums()
    with bf.plot.offscreen():
        ax = bf.plot.forest(exact_fit())
    assert plt.get_fignums() == before
    assert ax.figure.get_layout_engine() is not None
    ax_pyplot = bf.plot.forest(exact_fit())
    assert ax_pyplot.figure.number in plt.get_fignums()
