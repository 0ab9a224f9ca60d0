"""``bayesfuse report``: one self-contained HTML file describing a fit.

The file holds its figures as inline base64 PNG images and its style sheet inline; it
loads no script, font, style sheet or image from anywhere (a Content-Security-Policy
meta tag forbids every request but ``data:`` images), so it can be mailed, archived and
opened offline. Sections: data, model and priors as used, diagnostics verdict with advice,
fused estimates, hyperparameters, similarity, and sensitivity analyses when given. The
skeleton, style sheet, CSP and figure encoding are shared with the sensitivity page
(:mod:`bayesfuse.reporting.html`).

Sensitivity hook
----------------
``write_report(fit, path, sensitivity=...)`` takes a mapping of section titles to results;
each value is a DataFrame (drawn as a table), a Matplotlib ``Figure`` / ``Axes`` / array of
Axes (an inline image), a string (a paragraph), or a list of these. It also takes the
result of ``bayesfuse.analysis.sensitivity.sensitivity_analysis`` directly (its tables, figures and
messages), or any object with a ``report_sections()`` method returning such a mapping.
"""

from __future__ import annotations

import datetime as _dt
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayesfuse.errors import ReportError
from bayesfuse.reporting import html
from bayesfuse.reporting.html import figure_to_data_uri
from bayesfuse.reporting.tables import headers, hyper_table, results_table

__all__ = ["render_report", "write_report", "figure_to_data_uri", "sensitivity_sections"]

# ---------------------------------------------------------------------- building blocks
# The page is written with the shared HTML writer (bayesfuse.reporting.html): its resolution,
# CSP and style sheet, and its helpers under the short names the section builders use.
DPI, CSP, CSS = html.DPI, html.CSP, html.CSS
_esc, _img, _table, _kv = html.escape, html.image, html.table, html.key_values


class _Figures:
    """Draws figures off-screen and embeds them; a figure that fails becomes a note."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def __call__(self, draw: Callable[[], Any], alt: str, caption: str) -> str:
        from bayesfuse.reporting.figures import offscreen

        try:
            with offscreen(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                uri = figure_to_data_uri(draw())
        except Exception as exc:  # noqa: BLE001 - one figure never sinks the report
            message = f"{alt}: not drawn ({type(exc).__name__}: {exc})"
            self.failures.append(message)
            return f'<p class="note warn">{_esc(message)}</p>\n'
        return _img(uri, alt, caption)


# ---------------------------------------------------------------------- sections
def _data_section(fit: Any) -> str:
    est = fit.estimates
    pairs: list[tuple[str, Any]] = [
        ("tasks (K)", est.n_tasks),
        ("parameters (p)", ", ".join(est.params)),
        ("estimand", est.estimand or "not recorded"),
    ]
    if est.n is not None:
        n = np.asarray(est.n, dtype=float)
        pairs.append(("units per task", f"{int(n.sum())} in total; median {np.median(n):g}, "
                                        f"range {n.min():g}–{n.max():g}"))
    if est.covariates is not None:
        pairs.append(("task covariates", ", ".join(map(str, est.covariates.columns))))
    parts = ['<h2 id="data">Data</h2>\n', _kv(pairs)]
    flags = est.flags
    if len(flags):
        parts.append("<h3>Stage-1 flags</h3>\n")
        parts.append(_table(flags.astype(str), caption="Tasks flagged or excluded in stage 1"))
    frame = pd.DataFrame({
        "task": np.repeat(est.tasks, est.n_params),
        "param": np.tile(est.params, est.n_tasks),
        "estimate": est.estimates.reshape(-1),
        "se": est.se.reshape(-1),
    })
    if est.n is not None:
        frame["n"] = np.repeat(np.asarray(est.n).astype(int), est.n_params)
    if est.n_params == 1:
        frame = frame.drop(columns="param")
    parts.append("<h3>Stage-1 estimates</h3>\n")
    parts.append(_table(frame, names=headers(0.95, "eti"),
                        caption="Per-task estimates θ̂ₖ and standard errors from stage 1"))
    return "".join(parts)


def _model_section(fit: Any) -> str:
    family = fit.family
    spec = fit.spec
    meta = fit.meta
    sampler = spec.get("sampler", {})
    pairs: list[tuple[str, Any]] = [
        ("family", f"{fit.model}: {family.description}" if family.description else fit.model),
        ("similarity output", family.similarity_kind),
        ("options", ", ".join(f"{k}={v}" for k, v in spec.get("options", {}).items())
         or "none"),
        ("spec", Path(str(spec.get("source") or "given in code")).name),
        ("method / backend", f"{meta.get('method', 'nuts')} / {meta.get('backend')}"
                             + (", collapsed (θ integrated out)" if meta.get("collapsed")
                                else "")),
    ]
    post = fit.idata.posterior
    pairs.append(("draws", f"{post.sizes['chain']} chains × {post.sizes['draw']} draws"
                           + (f" after {sampler['warmup']} warmup"
                              if meta.get("method", "nuts") == "nuts" and "warmup" in sampler
                              else "")))
    if meta.get("method", "nuts") == "nuts" and "target_accept" in sampler:
        pairs.append(("target_accept / max tree depth",
                      f"{sampler['target_accept']} / {sampler.get('max_tree_depth')}"))
    pairs.append(("seed", fit.seed))
    timings = fit.timings
    if timings:
        pairs.append(("timings", ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())))
    versions = meta.get("versions") or {}
    if versions:
        pairs.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    given = spec.get("priors") or {}
    priors = pd.DataFrame(
        [(name, text, "spec / user" if name in given else "default, scaled to the data")
         for name, text in fit.priors.items()],
        columns=["hyperparameter", "prior", "source"])
    return ('<h2 id="model">Model and priors</h2>\n' + _kv(pairs)
            + "<h3>Priors as used</h3>\n"
            + (_table(priors) if len(priors) else '<p class="note">No hyperparameters.</p>\n'))


def _diagnostics_section(fit: Any, figure: _Figures) -> str:
    diag = fit.diagnostics()
    verdict = ('<span class="verdict pass">PASS</span>' if diag.ok
               else '<span class="verdict fail">FAIL</span>')
    parts = ['<h2 id="diagnostics">Diagnostics</h2>\n',
             f"<p>Verdict: {verdict} &nbsp;(R-hat &lt; 1.01, bulk and tail ESS ≥ 400, no "
             "divergent transitions, E-BFMI &gt; 0.3, no tree-depth saturation)</p>\n"]
    if diag.advice:
        items = "".join(f"<li>{_esc(a)}</li>" for a in diag.advice)
        parts.append(f"<p><strong>What to do:</strong></p><ul>{items}</ul>\n")
    checks = diag.checks.copy()
    checks["value"] = [
        "–" if pd.isna(v) else (f"{v:.0f}" if name in ("divergences", "max_treedepth_hits",
                                                        "ess_bulk", "ess_tail") else f"{v:.3f}")
        for name, v in zip(checks["check"], checks["value"], strict=True)]
    checks["passed"] = checks["passed"].map({True: "yes", False: "NO"})
    parts.append(_table(checks, caption="Checks (worst value over the reported quantities)"))
    from bayesfuse.reporting import figures as plot

    if fit.hyperparameters:
        parts.append(figure(lambda: plot.trace(fit), "Rank plots of the hyperparameters",
                            "Per-chain densities (left) and rank histograms (right): "
                            "well-mixed chains give flat, overlapping bars."))
    if "energy" in fit.idata.sample_stats:
        parts.append(figure(lambda: plot.energy(fit), "Energy plot",
                            "Marginal energy vs energy transitions; similar widths mean "
                            "NUTS explores the posterior well (E-BFMI per chain)."))
    return "".join(parts)


def _results_section(fit: Any, ci_prob: float, interval: str, figure: _Figures) -> str:
    from bayesfuse.reporting import figures as plot

    pct = f"{100 * ci_prob:g}%"
    kind = "equal-tailed" if interval == "eti" else "highest-density"
    table = results_table(fit, ci_prob, interval)
    if len(fit.params) == 1:
        table = table.drop(columns="param")
    parts = ['<h2 id="results">Fused estimates</h2>\n',
             f'<p class="note">Posterior of each task\'s θₖ under the {_esc(fit.model)} '
             f"prior, with {pct} {kind} credible intervals. Shrinkage (the pooling factor) is the "
             "posterior weight of the prior mean in E[θₖ]: 0 = the task alone, 1 = complete "
             "pooling.</p>\n",
             _table(table, names=headers(ci_prob, interval),
                    caption=f"Fused estimates ({pct} {interval.upper()})"),
             _borrowing_part(fit, ci_prob, interval),
             figure(lambda: plot.forest(fit, ci_prob=ci_prob, interval=interval),
                    "Forest plot",
                    f"Stage-1 estimate ± {pct} normal interval (open) and fused posterior "
                    f"mean with {pct} {interval.upper()} (filled), tasks sorted by fused "
                    "mean."),
             figure(lambda: plot.shrinkage(fit), "Shrinkage plot",
                    "Each arrow runs from the stage-1 estimate to the fused mean, against the "
                    "stage-1 standard error: noisier tasks borrow more strength.")]
    return "".join(parts)


def _borrowing_part(fit: Any, ci_prob: float, interval: str) -> str:
    """How much each task borrows: pooling factor, variance reduction, effective n."""
    full = results_table(fit, ci_prob, interval, borrowing=True)
    keep = ["task", "param", "shrinkage", *[c for c in full.columns
                                            if c in ("variance_reduction", "effective_n",
                                                     "n_gained")]]
    table = full[keep].drop(columns="param" if len(fit.params) == 1 else [])
    has_n = "effective_n" in table.columns
    note = ("Variance reduction is 1 − Var(θₖ | data) / Vₖ: the share of the task's own "
            "sampling variance removed by borrowing from the other tasks. "
            + ("Effective n is nₖ · Vₖ / Var(θₖ | data), the units the task alone would need "
               "for the same precision; n gained is effective n − nₖ." if has_n else
               "The estimates carry no sample sizes nₖ, so no effective sample size is "
               "given."))
    return ("<h3>How much each task borrows</h3>\n"
            f'<p class="note">{_esc(note)}</p>\n'
            + _table(table, names=headers(ci_prob, interval),
                     caption="Borrowing per task"))


def _hyper_section(fit: Any, ci_prob: float, interval: str, figure: _Figures) -> str:
    from bayesfuse.reporting import figures as plot

    parts = ['<h2 id="hyper">Hyperparameters</h2>\n']
    table = hyper_table(fit, ci_prob, interval)
    if not len(table):
        parts.append(f'<p class="note">The {_esc(fit.model)} model has no '
                     "hyperparameters.</p>\n")
        return "".join(parts)
    parts.append(_table(table, names=headers(ci_prob, interval)))
    if "prior" in fit.idata.groups():
        parts.append(figure(lambda: plot.prior_posterior(fit), "Prior and posterior",
                            "Prior draws (grey histogram) against the posterior density "
                            "(blue): a posterior that repeats its prior is not learned from "
                            "the data."))
    return "".join(parts)


def _similarity_section(fit: Any, figure: _Figures) -> str:
    from bayesfuse.reporting import figures as plot

    kind = fit.family.similarity_kind
    parts = ['<h2 id="similarity">Similarity between tasks</h2>\n',
             f'<p class="note">{_esc(kind)}; tasks ordered so that similar tasks are '
             "adjacent (grouped by the point clustering when the model clusters).</p>\n"]
    parts.append(figure(lambda: plot.similarity(fit), "Similarity heatmap",
                        f"Task-similarity matrix: {kind}."))
    if fit.family.has_task_graph:
        parts.append(figure(lambda: plot.task_graph(fit), "Task graph",
                            "Learned task graph: edge width proportional to the posterior "
                            "mean edge weight (edges below 10% of the largest are omitted)."))
    for name, table in fit.structure().items():
        if isinstance(table, pd.DataFrame) and len(table):
            index = not isinstance(table.index, pd.RangeIndex)
            parts.append(f"<h3>{_esc(name.replace('_', ' '))}</h3>\n")
            parts.append(_table(table, index=index))
    return "".join(parts)


def sensitivity_sections(results: Any) -> tuple[dict[str, list[Any]], list[Any]]:
    """Report sections from sensitivity results.

    Parameters
    ----------
    results : mapping or object
        A mapping of title -> item(s) is used as given. An object with a
        ``report_sections()`` method gives its mapping. A dataclass of DataFrames (such as
        ``bayesfuse.analysis.sensitivity.SensitivityResult``) gives one section per non-empty
        DataFrame field, with the figure of the same name from its ``figures()`` method,
        and its ``messages`` as notes.

    Returns
    -------
    sections : dict of str -> list
    created : list
        Figures made here (to be closed once embedded).

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
    >>> sens = bf.sensitivity.sensitivity_analysis(fit, draws=500)     # doctest: +SKIP
    >>> sections, figures = bf.report.sensitivity_sections(sens)       # doctest: +SKIP
    >>> list(sections)                                  # section titles  # doctest: +SKIP
    """
    import dataclasses

    if isinstance(results, Mapping):
        return {str(k): list(v) if isinstance(v, list | tuple) else [v]
                for k, v in results.items()}, []
    if callable(getattr(results, "report_sections", None)):
        return sensitivity_sections(results.report_sections())[0], []
    if dataclasses.is_dataclass(results) and not isinstance(results, type):
        figures = dict(results.figures()) if callable(getattr(results, "figures", None)) \
            else {}
        created = list(figures.values())
        sections: dict[str, list[Any]] = {}
        for field in dataclasses.fields(results):
            value = getattr(results, field.name)
            items: list[Any] = [value] if isinstance(value, pd.DataFrame) and len(value) else []
            if field.name in figures:
                items.append(figures.pop(field.name))
            if items:
                sections[field.name.replace("_", " ")] = items
        for name, fig in figures.items():
            sections[name.replace("_", " ")] = [fig]
        messages = [str(m) for m in getattr(results, "messages", None) or []]
        if messages:
            sections["notes"] = messages
        return sections, created
    raise ReportError(
        "sensitivity must be a mapping of section title -> DataFrame, figure or text, or a "
        f"sensitivity result (bayesfuse.analysis.sensitivity.sensitivity_analysis); got "
        f"{type(results).__name__}."
    )


def _sensitivity_section(sections: Mapping[str, list[Any]]) -> str:
    parts = ['<h2 id="sensitivity">Sensitivity</h2>\n']
    for title, items in sections.items():
        parts.append(f"<h3>{_esc(title)}</h3>\n")
        for item in items:
            parts.append(_sensitivity_item(str(title), item))
    return "".join(parts)


def _item_kind(title: str, item: Any) -> str:
    """'table', 'text' or 'figure'; a clear error for anything else."""
    from matplotlib.artist import Artist
    from matplotlib.figure import Figure

    if isinstance(item, pd.DataFrame):
        return "table"
    if isinstance(item, str):
        return "text"
    if isinstance(item, Figure | Artist) or (
            isinstance(item, np.ndarray) and item.size and isinstance(item.flat[0], Artist)):
        return "figure"
    raise ReportError(
        f"sensitivity['{title}']: cannot put a {type(item).__name__} in the report; give a "
        "DataFrame, a Matplotlib Figure/Axes, a string, or a list of these."
    )


def _sensitivity_item(title: str, item: Any) -> str:
    kind = _item_kind(title, item)
    if kind == "table":
        return _table(item, index=not isinstance(item.index, pd.RangeIndex))
    if kind == "text":
        return f"<p>{_esc(item)}</p>\n"
    return _img(figure_to_data_uri(item), title, title)


# ---------------------------------------------------------------------- public
def render_report(fit: Any, ci_prob: float = 0.95, interval: str = "eti",
                  sensitivity: Mapping[str, Any] | None = None,
                  title: str | None = None, source: str | None = None) -> str:
    """The report of a fit as one self-contained HTML document.

    Parameters
    ----------
    fit : FusionResult
    ci_prob : float
        Credible interval probability of the tables and plots.
    interval : {"eti", "hdi"}
        Interval kind of the tables and the forest plot.
    sensitivity : mapping or sensitivity result, optional
        One subsection per key of a mapping of title -> DataFrame, Figure, Axes, str or a
        list of these; or a ``SensitivityResult`` (see :func:`sensitivity_sections`).
    title : str, optional
        Page title (default: model and number of tasks).
    source : str, optional
        Where the fit came from (a file name), shown under the title.

    Returns
    -------
    str
        HTML5 text; figures are inline base64 PNG, no external resources.

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
    >>> html = bf.report.render_report(fit, ci_prob=0.9)  # one HTML document  # doctest: +SKIP
    """
    needs = ("idata", "family", "summary", "hyper_summary", "diagnostics", "structure")
    if not all(hasattr(fit, name) for name in needs):
        raise ReportError(f"render_report() needs a FusionResult (a fit from bf.fuse or "
                          f"bf.load_fit); got {type(fit).__name__}.")
    # validates ci_prob and interval with clear messages before any figure is drawn
    results_table(fit, ci_prob, interval)
    sections_in, created = ({}, []) if sensitivity is None else \
        sensitivity_sections(sensitivity)
    try:
        for key, items in sections_in.items():
            for item in items:
                _item_kind(key, item)
        return _render(fit, ci_prob, interval, sections_in, title, source)
    finally:
        _close(created)


def _close(figures: list[Any]) -> None:
    html.close_figures(figures)


def _render(fit: Any, ci_prob: float, interval: str, sensitivity: Mapping[str, list[Any]],
            title: str | None, source: str | None) -> str:
    from bayesfuse import __version__

    figure = _Figures()
    title = title or (f"bayesfuse report: {fit.model} fusion of {len(fit.tasks)} tasks")
    sections = [
        ("data", "Data", _data_section(fit)),
        ("model", "Model", _model_section(fit)),
        ("diagnostics", "Diagnostics", _diagnostics_section(fit, figure)),
        ("results", "Fused estimates", _results_section(fit, ci_prob, interval, figure)),
        ("hyper", "Hyperparameters", _hyper_section(fit, ci_prob, interval, figure)),
        ("similarity", "Similarity", _similarity_section(fit, figure)),
    ]
    if sensitivity:
        sections.append(("sensitivity", "Sensitivity", _sensitivity_section(sensitivity)))
    nav = "".join(f'<a href="#{key}">{_esc(label)}</a>' for key, label, _ in sections)
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    meta_line = f"bayesfuse {__version__} · {stamp}" + (f" · {source}" if source else "")
    failures = ""
    if figure.failures:
        failures = ('<p class="warn">Some figures could not be drawn; see the notes in '
                    "their sections.</p>\n")
    body = "".join(text for _, _, text in sections)
    return html.document(title, (
        f"<h1>{_esc(title)}</h1>\n<p class=\"meta\">{_esc(meta_line)}</p>\n"
        f"<nav>{nav}</nav>\n{failures}{body}"
        '<p class="note" style="margin-top:3em">Reload the fit with '
        "<code>bf.load_fit(path)</code>; tables as text with "
        "<code>bf.tables.results_table(fit, fmt=\"latex\")</code>.</p>\n"
    ))


def write_report(fit: Any, path: str | os.PathLike[str],
                 sensitivity: Mapping[str, Any] | None = None, ci_prob: float = 0.95,
                 interval: str = "eti", force: bool = False, title: str | None = None,
                 source: str | None = None) -> Path:
    """Write :func:`render_report` to ``path`` atomically.

    Parameters
    ----------
    fit : FusionResult
    path : path
        The HTML file to write.
    sensitivity : mapping, optional
        See :func:`render_report`.
    ci_prob, interval, title, source
        See :func:`render_report`.
    force : bool
        Overwrite an existing file (the CLI's ``--force``).

    Returns
    -------
    Path

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
    >>> path = bf.report.write_report(fit, "report.html", force=True)   # doctest: +SKIP
    >>> sens = bf.sensitivity.sensitivity_analysis(fit, draws=500)     # doctest: +SKIP
    >>> path = bf.report.write_report(fit, "report.html", sensitivity=sens,
    ...                               force=True)                      # doctest: +SKIP
    """
    from bayesfuse._io import atomic_write_text, check_overwrite

    if Path(path).is_dir():
        raise ReportError(f"{path} is a folder; give a file name such as "
                          f"{Path(path) / 'report.html'}.")
    target = check_overwrite(path, force)
    text = render_report(fit, ci_prob=ci_prob, interval=interval, sensitivity=sensitivity,
                         title=title, source=source)
    return atomic_write_text(target, text)
