"""`read_estimates`: one entry point for estimates files, whatever their kind.

Dispatches by file kind — summary JSON (:mod:`bayesfuse.data.summary`) or estimates CSV
(:mod:`bayesfuse.data.csv`) — and merges several CSV files into one
:class:`~bayesfuse.data.estimates.TaskEstimates` (summary files are merged by
:func:`~bayesfuse.data.summary.read_summaries`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bayesfuse.data.csv import read_estimates_csv
from bayesfuse.data.estimates import TaskEstimates
from bayesfuse.data.summary import read_summaries
from bayesfuse.errors import EstimatesError

__all__ = ["read_estimates"]


def read_estimates(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> TaskEstimates:
    """Read estimates from a CSV file or from one or several site summary JSON files.

    Parameters
    ----------
    path : path or sequence of paths
        A CSV (scalar: ``task, estimate, se[, n, covariates...]``; vector: long format with a
        ``param`` column and ``cov[<param>]`` columns) or summary JSON file(s) written by
        ``bayesfuse site``. Several paths are merged (all JSON, or all CSV).

    Returns
    -------
    TaskEstimates

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.read_estimates("estimates.csv")                      # doctest: +SKIP
    >>> est = bf.read_estimates(["site-a.json", "site-b.json"])       # doctest: +SKIP
    >>> fit = bf.fuse(est, model="exchangeable")                      # doctest: +SKIP
    """
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    if not paths:
        raise EstimatesError("No estimates file given.")
    is_json = [Path(p).suffix.lower() == ".json" for p in paths]
    if any(is_json):
        if not all(is_json):
            raise EstimatesError("Give either summary JSON files or estimates CSV files, not both.")
        return read_summaries(paths)
    parts = [read_estimates_csv(p) for p in paths]
    if len(parts) == 1:
        return parts[0]
    return _merge(parts, [str(p) for p in paths])


def _merge(parts: list[TaskEstimates], sources: list[str]) -> TaskEstimates:
    """One ``TaskEstimates`` from several files: same parameters and estimand, unique tasks."""
    first = parts[0]
    for part, source in zip(parts[1:], sources[1:], strict=True):
        if part.params != first.params:
            raise EstimatesError(
                f"{source}: parameters {part.params} differ from {first.params} in {sources[0]}."
            )
        if (part.estimand or first.estimand) and part.estimand != first.estimand:
            raise EstimatesError(
                f"{source}: estimand '{part.estimand}' differs from '{first.estimand}' in "
                f"{sources[0]}; fuse only estimates of the same quantity."
            )
    owner: dict[str, str] = {}
    for part, source in zip(parts, sources, strict=True):
        for t in part.tasks:
            if t in owner:
                raise EstimatesError(f"Task id '{t}' appears in both {owner[t]} and {source}.")
            owner[t] = source
    has_n = all(p.n is not None for p in parts)
    has_cov = all(p.covariates is not None for p in parts)
    covariates = None
    if has_cov:
        covariates = pd.concat([p.covariates for p in parts])
        if covariates.isna().any().any():
            raise EstimatesError("Task covariates differ between files; give the same columns.")
    flags = pd.concat([p.flags for p in parts if len(p.flags)] or [first.flags])
    meta: dict = {"sources": sources}
    for part, source in zip(parts, sources, strict=True):  # provenance kept: se_from, notes
        for t, by_param in part.meta.get("se_from", {}).items():
            meta.setdefault("se_from", {})[t] = dict(by_param)
        meta.setdefault("notes", []).extend(f"{source}: {note}"
                                            for note in part.meta.get("notes", []))
    if not meta["notes"]:
        del meta["notes"]
    return TaskEstimates(
        [t for p in parts for t in p.tasks],
        np.concatenate([p.estimates for p in parts]),
        np.concatenate([p.covariances for p in parts]),
        n=np.concatenate([p.n for p in parts]) if has_n else None,
        covariates=covariates,
        params=first.params,
        estimand=first.estimand,
        flags=flags,
        meta=meta,
    )
