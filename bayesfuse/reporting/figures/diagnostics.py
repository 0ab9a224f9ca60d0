"""The sampler diagnostics of a fit, drawn by ArviZ: per-chain rank or trace plots
(``bf.plot.trace``), the NUTS energy plot (``bf.plot.energy``) and the pairwise scatter of
the hyperparameters with divergences marked (``bf.plot.pair``)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from bayesfuse._validation import check_choice
from bayesfuse.errors import ReportError
from bayesfuse.reporting.figures._common import check_fit, hyper_dataset, new_figure

__all__ = ["trace", "energy", "pair"]

#: what the trace and pair plots read from a fit
NEEDS = ("idata", "hyperparameters", "model")


def trace(fit: Any, var_names: Sequence[str] | None = None, kind: str = "rank_bars",
          axes: Any = None) -> Any:
    """Per-chain densities and rank plots of the hyperparameters (``arviz.plot_trace``).

    Rank plots (Vehtari et al. 2021) show well-mixed chains as flat, overlapping bar
    rows; a chain stuck in its own region shows as a slope.

    Parameters
    ----------
    fit : FusionResult
        A fit, or any object with ``idata``, ``hyperparameters`` and ``model``.
    var_names : list of str, optional
        Posterior variables (default: ``fit.hyperparameters``; ``["theta"]`` for θ).
    kind : {"rank_bars", "rank_vlines", "trace"}
        Right column: rank bars, rank lines, or the classic trace.
    axes : ndarray of Axes of shape (n, 2), optional

    Returns
    -------
    ndarray of Axes of shape (n, 2)

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
    >>> axes = bf.plot.trace(fit)                       # rows: hyperparameters  # doctest: +SKIP
    >>> axes[0, 0].figure.savefig("trace.png")          # doctest: +SKIP
    """
    from bayesfuse._arviz import az

    fit = check_fit(fit, "trace", NEEDS)
    check_choice(kind, "kind", ("rank_bars", "rank_vlines", "trace"))
    data = hyper_dataset(fit, var_names, "trace")
    n_vars = len(data.data_vars)
    if axes is None:
        axes = new_figure((8.0, 2.0 * n_vars)).subplots(n_vars, 2, squeeze=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.plot_trace(data, kind=kind, axes=axes, compact=False,
                             plot_kwargs={"textsize": 9}, show=False)


def energy(fit: Any, ax: Any = None) -> Any:
    """NUTS energy plot with E-BFMI per chain (``arviz.plot_energy``).

    Overlapping marginal energy and energy-transition densities mean the sampler explores
    the posterior's energy well; a much narrower transition density (E-BFMI < 0.3) warns of
    heavy tails or a funnel.

    Parameters
    ----------
    fit : FusionResult
        A NUTS fit, or any object with ``idata`` (with ``sample_stats.energy``) and ``meta``.
    ax : Axes, optional

    Returns
    -------
    Axes

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
    >>> ax = bf.plot.energy(fit)                        # doctest: +SKIP
    """
    from bayesfuse._arviz import az

    fit = check_fit(fit, "energy", ("idata", "meta"))
    if "energy" not in fit.idata.sample_stats:
        raise ReportError(
            f"This fit has no NUTS energy (method '{fit.meta.get('method', 'nuts')}', backend "
            f"'{fit.meta.get('backend')}'): exact draws are independent and need no energy "
            "plot."
        )
    if ax is None:
        ax = new_figure((5.0, 3.4)).subplots()
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
        A fit, or any object with ``idata``, ``hyperparameters`` and ``model``.
    var_names : list of str, optional
        Posterior variables (default: ``fit.hyperparameters``); at least two elements.
    divergences : bool
        Mark the divergent transitions, when the fit has any record of them.
    ax : ndarray of Axes, optional

    Returns
    -------
    Axes, or ndarray of Axes

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
    >>> axes = bf.plot.pair(fit, var_names=["mu", "tau"])   # doctest: +SKIP
    """
    from bayesfuse._arviz import az

    fit = check_fit(fit, "pair", NEEDS)
    data = hyper_dataset(fit, var_names, "pair", max_elements=8)
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
        figure = new_figure((side, side))
        ax = figure.subplots() if n_vars == 2 else \
            figure.subplots(n_vars - 1, n_vars - 1, squeeze=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = az.InferenceData(**groups)
        return az.plot_pair(idata, divergences=has_div, ax=ax, textsize=8,
                            scatter_kwargs={"alpha": 0.35, "s": 6}, show=False)
