"""All the sensitivity analyses of one fit together: :class:`SensitivityResult`,
:func:`sensitivity_analysis` (design §5) and :func:`sensitivity_report`.

:func:`sensitivity_report` writes the result as one self-contained HTML file (figures inline
as base64 PNG, no network requests), which is what ``bayesfuse sensitivity fit.nc -o
sensitivity.html`` does. The figures and the page are drawn by
:mod:`bayesfuse.reporting.figures.sensitivity` and :mod:`bayesfuse.reporting.sensitivity_page`;
the convenience methods :meth:`SensitivityResult.figures` and :meth:`SensitivityResult.to_html`
import them when called, so this package imports neither Matplotlib nor the reporting code.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from bayesfuse._validation import check_probability
from bayesfuse.analysis.sensitivity.importance import (
    COMPONENTS,
    K_THRESHOLD,
    SENSITIVITY_THRESHOLD,
    SensitivityWarning,
    check_fit,
    power_scaling,
    power_scaling_sequence,
)
from bayesfuse.analysis.sensitivity.refit import (
    compare_families,
    default_sweep,
    inflation,
    loo_influence,
    prior_sweep,
)
from bayesfuse.errors import FitError

__all__ = ["SensitivityResult", "sensitivity_analysis", "sensitivity_report"]


@dataclass
class SensitivityResult:
    """The five sensitivity analyses of one fit, as DataFrames.

    Attributes
    ----------
    power_scaling : DataFrame
        :func:`power_scaling` (one row per quantity).
    power_sequence : DataFrame
        :func:`power_scaling_sequence` (means over a grid of α).
    prior_sweep : DataFrame or None
        :func:`prior_sweep`.
    loo_influence : DataFrame or None
        :func:`loo_influence` (``.attrs["detail"]`` the long table).
    inflation : DataFrame or None
        :func:`inflation`.
    comparison : DataFrame or None
        :func:`compare_families`.
    messages : list of str
        Warnings met on the way (high Pareto k, failed refits).
    info : dict
        Model, K, settings, timings.

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
    >>> result = bf.sensitivity.sensitivity_analysis(fit, draws=500)       # doctest: +SKIP
    >>> result.power_scaling[["variable", "prior_sensitivity", "diagnosis"]]  # doctest: +SKIP
    >>> result.flagged                                  # what needs a look  # doctest: +SKIP
    """

    power_scaling: pd.DataFrame
    power_sequence: pd.DataFrame
    prior_sweep: pd.DataFrame | None = None
    loo_influence: pd.DataFrame | None = None
    inflation: pd.DataFrame | None = None
    comparison: pd.DataFrame | None = None
    messages: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    #: the thresholds and components the analyses used, read by the figures and the page
    #: (so that reporting needs nothing from this package)
    sensitivity_threshold: ClassVar[float] = SENSITIVITY_THRESHOLD
    k_threshold: ClassVar[float] = K_THRESHOLD
    components: ClassVar[tuple[str, ...]] = COMPONENTS

    @property
    def flagged(self) -> pd.DataFrame:
        """Rows of ``power_scaling`` with a diagnosis other than ``"-"``."""
        return self.power_scaling[self.power_scaling["diagnosis"] != "-"]

    def figures(self) -> dict[str, Any]:
        """Matplotlib figures of the analyses, by name (closed by the caller).

        Drawn by :func:`bayesfuse.reporting.figures.sensitivity.sensitivity_figures`.

        Examples
        --------
        >>> figures = result.figures()                      # doctest: +SKIP
        >>> figures["power_sequence"].savefig("power.png")  # doctest: +SKIP
        """
        from bayesfuse.reporting.figures.sensitivity import sensitivity_figures

        return sensitivity_figures(self)

    def to_html(self, path: str | os.PathLike[str], force: bool = True) -> Path:
        """Write the self-contained HTML report (see :func:`sensitivity_report`).

        Written by :func:`bayesfuse.reporting.sensitivity_page.write_sensitivity_page`.

        Examples
        --------
        >>> result.to_html("sensitivity.html")              # doctest: +SKIP
        """
        from bayesfuse.reporting.sensitivity_page import write_sensitivity_page

        return write_sensitivity_page(self, path, force=force)


def sensitivity_analysis(
    fit: Any,
    *,
    power: bool = True,
    sweep: Mapping[str, Sequence[str]] | None | bool = None,
    loo: bool = True,
    factors: Sequence[float] | None = (1.0, 1.5, 2.0, 4.0),
    families: Sequence[str] = (),
    ci_prob: float = 0.95,
    threshold: float = SENSITIVITY_THRESHOLD,
    **fuse_kwargs: Any,
) -> SensitivityResult:
    """Run the sensitivity analyses of design §5 on one fit.

    Parameters
    ----------
    fit : FusionResult
    power : bool
        Power-scaling sensitivity (no refits). Always computed; ``False`` skips only the
        α-sequence.
    sweep : mapping, None or False
        Prior grid for :func:`prior_sweep`; ``None`` uses :func:`default_sweep`, ``False``
        skips the sweep.
    loo : bool
        Leave-one-task-out influence.
    factors : sequence of float or None
        Inflation factors (``None`` skips).
    families : sequence of str
        Families to compare with (empty: no comparison).
    ci_prob : float
    threshold : float
        Power-scaling flag threshold.
    **fuse_kwargs
        Sampler overrides for every refit (``draws``, ``chains``, ``warmup``, ``method``).

    Returns
    -------
    SensitivityResult

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
    >>> result = bf.sensitivity.sensitivity_analysis(
    ...     fit, sweep={"tau": ["halfnormal(5)", "halfcauchy(5)"]}, draws=500)  # doctest: +SKIP
    >>> result.inflation                                # doctest: +SKIP
    """
    check_fit(fit)
    ci_prob = check_probability(ci_prob)
    messages: list[str] = []
    timings: dict[str, float] = {}

    def timed(name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SensitivityWarning)
            value = fn(*args, **kwargs)
        for w in caught:
            if issubclass(w.category, SensitivityWarning):
                messages.append(str(w.message))
        timings[name] = time.perf_counter() - start
        return value

    ps = timed("power_scaling", power_scaling, fit, threshold=threshold)
    seq = timed("power_sequence", power_scaling_sequence, fit) if power else pd.DataFrame()
    sweep_table = None
    if sweep is not False:
        grid = default_sweep(fit) if sweep is None or sweep is True else dict(sweep)
        if grid:
            sweep_table = timed("prior_sweep", prior_sweep, fit, grid, ci_prob=ci_prob,
                                **fuse_kwargs)
    influence = None
    if loo and len(fit.tasks) >= 3:
        influence = timed("loo_influence", loo_influence, fit, **fuse_kwargs)
        refits = influence[influence["method"] == "refit"]["task"].tolist()
        if refits:
            messages.append(f"Leave-one-out: Pareto k > {K_THRESHOLD} for task(s) "
                            f"{', '.join(map(str, refits))}; those were refitted exactly.")
    infl = None
    if factors:
        infl = timed("inflation", inflation, fit, factors, ci_prob=ci_prob, **fuse_kwargs)
    comparison = None
    if families:
        comparison = timed("comparison", compare_families, fit, families, **fuse_kwargs)
        for name, reason in comparison.attrs.get("skipped", {}).items():
            messages.append(f"Family comparison: '{name}' could not be fitted ({reason}).")
    info = {"model": fit.model, "n_tasks": len(fit.tasks), "params": list(fit.params),
            "priors": fit.priors, "ci_prob": ci_prob, "threshold": threshold,
            "method": fit.meta.get("method", "nuts"),
            "draws": int(fit.idata.posterior.sizes["chain"] * fit.idata.posterior.sizes["draw"]),
            "refit_overrides": {k: v for k, v in fuse_kwargs.items()}, "timings": timings}
    return SensitivityResult(ps, seq, sweep_table, influence, infl, comparison, messages, info)


def sensitivity_report(
    fit_or_result: Any,
    path: str | os.PathLike[str],
    *,
    force: bool = True,
    **kwargs: Any,
) -> SensitivityResult:
    """Write the sensitivity analyses of a fit as one self-contained HTML file.

    Parameters
    ----------
    fit_or_result : FusionResult or SensitivityResult
        A fit (analysed with :func:`sensitivity_analysis` and ``kwargs``) or a finished
        analysis.
    path : path
        The ``.html`` file to write (atomically).
    force : bool
        Overwrite an existing file.
    **kwargs
        Passed to :func:`sensitivity_analysis`.

    Returns
    -------
    SensitivityResult

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
    >>> result = bf.sensitivity.sensitivity_report(fit, "sensitivity.html")  # doctest: +SKIP
    """
    target = Path(path)
    if target.exists() and not force:
        raise FitError(f"{target} exists; pass force=True (--force) to overwrite it.")
    result = (fit_or_result if isinstance(fit_or_result, SensitivityResult)
              else sensitivity_analysis(fit_or_result, **kwargs))
    result.to_html(target, force=True)
    return result

