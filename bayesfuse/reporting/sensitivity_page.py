"""The sensitivity page: one self-contained HTML file of a sensitivity analysis.

:func:`render_sensitivity_page` lays out a
:class:`~bayesfuse.analysis.sensitivity.SensitivityResult` (power-scaling, prior sweep,
leave-one-task-out influence, stage-1 inflation, family comparison: one section each, with
its figure from :mod:`bayesfuse.reporting.figures.sensitivity` and its table);
:func:`write_sensitivity_page` writes it atomically. The skeleton, style sheet, CSP and
figure encoding are those of every bayesfuse page (:mod:`bayesfuse.reporting.html`). This
is what ``SensitivityResult.to_html``, ``bf.sensitivity.sensitivity_report`` and
``bayesfuse sensitivity fit.nc -o sensitivity.html`` write.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bayesfuse.errors import FitError
from bayesfuse.reporting.figures.sensitivity import sensitivity_figures
from bayesfuse.reporting.html import (
    close_figures,
    document,
    escape,
    figure_to_data_uri,
    image,
    table,
)

__all__ = ["render_sensitivity_page", "write_sensitivity_page"]

#: rows of a table shown on the page (the rest is counted in a note)
MAX_ROWS = 200
TITLE = "bayesfuse sensitivity analysis"


def render_sensitivity_page(result: Any) -> str:
    """The sensitivity analyses of a fit as one self-contained HTML document.

    Parameters
    ----------
    result : SensitivityResult
        From :func:`bayesfuse.analysis.sensitivity.sensitivity_analysis`.

    Returns
    -------
    str
        HTML5 text; figures are inline base64 PNG, no external resources.
    """
    figs = sensitivity_figures(result)
    try:
        uris = {name: figure_to_data_uri(fig) for name, fig in figs.items()}
    finally:
        close_figures(figs.values())
    return document(TITLE, _body(result, uris))


def write_sensitivity_page(result: Any, path: str | os.PathLike[str],
                           force: bool = True) -> Path:
    """Write :func:`render_sensitivity_page` to ``path`` atomically.

    Parameters
    ----------
    result : SensitivityResult
    path : path
        The ``.html`` file to write.
    force : bool
        Overwrite an existing file.

    Returns
    -------
    Path
    """
    from bayesfuse._io import atomic_write_text

    path = Path(path)
    if path.exists() and not force:
        raise FitError(f"{path} exists; pass force=True (--force) to overwrite it.")
    return atomic_write_text(path, render_sensitivity_page(result))


def _body(result: Any, uris: dict[str, str]) -> str:
    """The page's content: header, then one section per analysis that was run."""
    info = result.info

    def figure(name: str, alt: str) -> str:
        if name not in uris:
            return ""
        return f"<div id='fig-{name}'>{image(uris[name], alt)}</div>"

    def frame(data: Any) -> str:
        return table(data, max_rows=MAX_ROWS)

    parts = [
        "<h1>Sensitivity analysis</h1>",
        f"<p>Model <b>{escape(info.get('model'))}</b>, K = {info.get('n_tasks')} tasks, "
        f"parameters {escape(', '.join(map(str, info.get('params', []))))}, "
        f"{info.get('draws')} posterior draws ({escape(info.get('method'))}). Priors as "
        f"used: {escape(', '.join(f'{k} ~ {v}' for k, v in info.get('priors', {}).items()))}."
        "</p>",
    ]
    if result.messages:
        parts.append("<ul class='warn'>" + "".join(
            f"<li>{escape(m)}</li>" for m in result.messages) + "</ul>")
    ps = result.power_scaling
    flagged = result.flagged
    parts += [
        "<h2 id='power-scaling'>Prior and likelihood power-scaling</h2>",
        "<p class='note'>Importance-weighted, no refits (Kallioinen et al. 2023). The prior "
        "of the hyperparameters or the likelihood is raised to a power α near 1; the "
        "sensitivity is the derivative of the cumulative Jensen–Shannon distance between the "
        "base and the power-scaled posterior with respect to log₂ α. Above "
        f"{info.get('threshold', result.sensitivity_threshold):g}: prior and likelihood sensitive "
        "= <i>prior-data conflict</i>; prior sensitive only = <i>strong prior / weak "
        f"likelihood</i>. Pareto k above {result.k_threshold} makes the weights unreliable.</p>",
        f"<p><b>{len(flagged)}</b> of {len(ps)} quantities flagged"
        + (": " + escape(", ".join(f"{v} ({d})" for v, d in zip(
            flagged["variable"], flagged["diagnosis"], strict=True))) if len(flagged) else "")
        + ".</p>",
        figure("power_scaling", "power-scaling sensitivity per quantity"),
        frame(ps),
        figure("power_sequence", "power-scaled posterior means over alpha"),
    ]
    if result.prior_sweep is not None:
        sweep = result.prior_sweep
        parts += ["<h2 id='prior-sweep'>Hyper-prior sweep</h2>",
                  "<p class='note'>Refits with one prior changed at a time (same spec, "
                  "seed and other priors).</p>",
                  figure("prior_sweep", "hyperparameters and fused means per prior setting"),
                  frame(sweep[sweep["kind"] == "hyper"].drop(
                      columns=["task", "param", "kind"]))]
    if result.loo_influence is not None:
        influence = result.loo_influence
        parts += ["<h2 id='loo-influence'>Leave-one-task-out influence</h2>",
                  "<p class='note'>PSIS-LOO importance weights; exact refits without the task "
                  f"where Pareto k &gt; {result.k_threshold} (column <i>method</i>). "
                  "Influence = the "
                  "largest change of a hyperparameter's or another task's fused posterior "
                  "mean, in posterior sds.</p>",
                  figure("loo_influence", "influence and Pareto k per task"),
                  frame(influence.sort_values("rank"))]
    if result.inflation is not None:
        parts += ["<h2 id='inflation'>Stage-1 uncertainty inflation</h2>",
                  "<p class='note'>Refits with every stage-1 covariance Vₖ multiplied by c "
                  "(standard errors by √c): how robust are the conclusions to underestimated "
                  "standard errors?</p>",
                  figure("inflation", "hyperparameters and fused means per inflation factor"),
                  frame(result.inflation.drop(columns=["task", "param"]))]
    if result.comparison is not None:
        comparison = result.comparison.reset_index().rename(columns={"index": "model"})
        parts += ["<h2 id='comparison'>Family comparison</h2>",
                  "<p class='note'>PSIS-LOO expected log predictive density of the task "
                  "estimates, with stacking weights (Yao et al. 2018).</p>",
                  frame(comparison)]
    timings = info.get("timings", {})
    if timings:
        parts.append("<p class='note'>Timings: " + escape(", ".join(
            f"{k} {v:.1f} s" for k, v in timings.items())) + ".</p>")
    return "\n".join(parts) + "\n"
