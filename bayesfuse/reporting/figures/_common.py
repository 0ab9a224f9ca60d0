"""What every figure module shares: the colours, new figures (on or off pyplot), the
panels a figure draws on, and the checks of the fit a figure is given.

A figure takes any object that offers the attributes it reads (``idata``, ``summary``,
``params``, ...), as ArviZ's plots take anything ``convert_to_dataset`` accepts; nothing
here imports the result class.
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

__all__ = [
    "STAGE1",
    "FUSED",
    "POOLED",
    "EDGE",
    "INTERVALS",
    "offscreen",
    "new_figure",
    "check_fit",
    "select_params",
    "param_label",
    "panel_axes",
    "as_result",
    "tidy",
    "pooled_mean",
    "similarity_frame",
    "point_clustering",
    "hyper_draws",
    "hyper_dataset",
]

#: colours: stage 1 (grey), fused posterior (dark blue), pooled mean (dark red)
STAGE1 = "#6b6b6b"
FUSED = "#1b4f8a"
POOLED = "#b2182b"
EDGE = "#1b4f8a"
#: posterior interval kinds: equal-tailed, highest density
INTERVALS = ("eti", "hdi")
#: when set, new figures are plain ``matplotlib.figure.Figure`` objects, never pyplot's
_OFFSCREEN: contextvars.ContextVar[bool] = contextvars.ContextVar("offscreen", default=False)


@contextlib.contextmanager
def offscreen() -> Iterator[None]:
    """Make new figures without ``pyplot`` inside the block (no GUI backend, no figure
    manager to close): for writing files from scripts and servers. The figures are
    released when no longer referenced.

    Examples
    --------
    >>> import bayesfuse as bf
    >>> with bf.plot.offscreen():                                   # doctest: +SKIP
    ...     bf.plot.forest(fit).figure.savefig("forest.png")
    """
    token = _OFFSCREEN.set(True)
    try:
        yield
    finally:
        _OFFSCREEN.reset(token)


def new_figure(figsize: tuple[float, float]) -> Any:
    """A constrained-layout figure, from pyplot unless :func:`offscreen` is active.

    Parameters
    ----------
    figsize : tuple of float
        Width and height in inches.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if _OFFSCREEN.get():
        from matplotlib.figure import Figure

        return Figure(figsize=figsize, layout="constrained")
    import matplotlib.pyplot as plt

    return plt.figure(figsize=figsize, layout="constrained")


# ---------------------------------------------------------------------- the fit
def check_fit(fit: Any, what: str, needs: Sequence[str] = ("idata",)) -> Any:
    """Return ``fit`` if it offers what the figure reads, else raise :class:`ReportError`.

    Duck typing: any object with the attributes in ``needs`` and an ``idata`` holding a
    ``posterior`` group will do (a ``FusionResult`` from ``bf.fuse`` or ``bf.load_fit``).

    Parameters
    ----------
    fit : object
        The argument given to the figure.
    what : str
        The figure's function name, used in the message.
    needs : sequence of str
        The attributes the figure reads.

    Returns
    -------
    object
        ``fit`` itself.
    """
    missing = [name for name in needs if not hasattr(fit, name)]
    idata = getattr(fit, "idata", None)
    if not missing and hasattr(idata, "groups") and "posterior" in idata.groups():
        return fit
    lacking = f" (it has no {', '.join(missing)})" if missing else \
        " (its idata has no posterior group)"
    wanted = ", ".join("idata (an ArviZ InferenceData with a posterior)" if name == "idata"
                       else name for name in needs)
    raise ReportError(
        f"{what}() needs a fit: a FusionResult from bf.fuse or bf.load_fit, or any object "
        f"with the attributes {wanted}; got {type(fit).__name__}{lacking}."
    )


def select_params(fit: Any, params: str | Sequence[str] | None) -> list[str]:
    """The parameters to draw: all of ``fit.params``, or the ones named (checked)."""
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


def param_label(fit: Any, param: str) -> str:
    """x/y label of a parameter: its name, or θ (with the estimand) for scalar θ."""
    if len(fit.params) == 1 and param == "theta":
        estimand = fit.estimates.estimand
        return f"θ ({estimand.upper()})" if estimand else "θ"
    return param


def pooled_mean(fit: Any, ci_prob: float) -> dict[str, tuple[float, float, float]]:
    """Posterior mean and ETI of a global ``mu`` per parameter (empty when the posterior
    has no single pooled mean, e.g. one mean per cluster or a regression on covariates)."""
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


def similarity_frame(source: Any, what: str) -> pd.DataFrame:
    """A K×K similarity DataFrame from a fit, a DataFrame or a square array (checked:
    square, finite, symmetric; task ids as strings)."""
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


def point_clustering(source: Any) -> pd.DataFrame | None:
    """The point clustering of a fit (``structure()["clustering"]``), if it has one."""
    if not (hasattr(source, "structure") and hasattr(source, "idata")):
        return None
    table = source.structure().get("clustering")
    if isinstance(table, pd.DataFrame) and {"task", "cluster"} <= set(table.columns):
        return table
    return None


def hyper_draws(fit: Any, var_names: Sequence[str] | None, group: str = "posterior",
                ) -> dict[str, np.ndarray]:
    """Flat hyperparameter elements (``mu[read]``) → draws of shape (chain, draw).

    Parameters
    ----------
    fit : object
        A fit with ``idata`` and ``hyperparameters``.
    var_names : list of str, optional
        Posterior variables (default: ``fit.hyperparameters``); checked against the
        posterior.
    group : str
        The InferenceData group to read (``"posterior"`` or ``"prior"``); variables it
        lacks are left out.

    Returns
    -------
    dict of str to ndarray of shape (chain, draw)
    """
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


def hyper_dataset(fit: Any, var_names: Sequence[str] | None, what: str,
                  max_elements: int = 12) -> Any:
    """An xarray Dataset with one (chain, draw) variable per non-constant element (at most
    ``max_elements``), for ArviZ's plots."""
    from bayesfuse._arviz import az

    draws = {k: v for k, v in hyper_draws(fit, var_names).items() if np.ptp(v) > 0}
    if not draws:
        raise ReportError(
            f"{what}(): this fit has no varying hyperparameters to plot (model "
            f"'{fit.model}'); pass var_names=['theta'] to look at θ."
        )
    draws = dict(list(draws.items())[:max_elements])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.convert_to_dataset(draws)


# ---------------------------------------------------------------------- panels
def panel_axes(ax: Any, n_panels: int, what: str, figsize: tuple[float, float],
           sharey: bool = False, ncols: int | None = None) -> list[Any]:
    """The axes to draw on: ``ax`` checked against ``n_panels``, or a new figure."""
    if ax is None:
        ncols = n_panels if ncols is None else ncols
        nrows = math.ceil(n_panels / ncols)
        axes = new_figure(figsize).subplots(nrows, ncols, sharey=sharey, squeeze=False)
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


def as_result(axes: list[Any]) -> Any:
    """What a figure returns: the one Axes, or an ndarray of them."""
    return axes[0] if len(axes) == 1 else np.asarray(axes, dtype=object)


def tidy(ax: Any, grid_axis: str = "x") -> None:
    """Publication style: no top/right spines, a light grid behind the data."""
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(True, axis=grid_axis, color="#e3e3e3", linewidth=0.6, zorder=0)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=8)
