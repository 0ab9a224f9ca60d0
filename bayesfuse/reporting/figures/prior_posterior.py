"""Prior vs posterior (``bf.plot.prior_posterior``): for each hyperparameter element, the
posterior density over a histogram of the prior draws kept in ``idata.prior`` (probability
bars for integer quantities such as the number of clusters)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from bayesfuse.errors import ReportError
from bayesfuse.reporting.figures._common import (
    FUSED,
    as_result,
    check_fit,
    hyper_draws,
    panel_axes,
    tidy,
)

__all__ = ["prior_posterior"]

#: what the prior vs posterior plot reads from a fit
NEEDS = ("idata", "hyperparameters", "priors", "model")


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
        A fit with prior draws (``bf.fuse(..., prior_draws=500)``, the default), or any
        object with ``idata``, ``hyperparameters``, ``priors`` and ``model``.
    var_names : list of str, optional
        Posterior variables (default: ``fit.hyperparameters``).
    max_panels : int
        At most this many elements are drawn.
    axes : sequence of Axes, optional

    Returns
    -------
    Axes, or ndarray of Axes of shape (n_panels,)

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
    >>> axes = bf.plot.prior_posterior(fit)   # a panel per hyperparameter  # doctest: +SKIP
    """
    from bayesfuse._arviz import az

    fit = check_fit(fit, "prior_posterior", NEEDS)
    if "prior" not in fit.idata.groups():
        raise ReportError("This fit has no prior draws (idata has no 'prior' group); refit "
                          "with bf.fuse(..., prior_draws=500).")
    posterior = hyper_draws(fit, var_names)
    prior = hyper_draws(fit, var_names, group="prior")
    names = [n for n, v in posterior.items() if np.ptp(v) > 0][:max_panels]
    if not names:
        raise ReportError(f"prior_posterior(): no varying hyperparameters in this fit (model "
                          f"'{fit.model}'); pass var_names, e.g. ['theta'].")
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    panels = panel_axes(axes, len(names), "prior_posterior", (3.2 * ncols, 2.5 * nrows),
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
        tidy(panel, "y")
        panel.set_yticks([])
    panels[0].legend(frameon=False, fontsize=7.5)
    return as_result(panels)
