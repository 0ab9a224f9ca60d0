"""Site summary files: what a site sends instead of its rows (JSON, versioned schema).

Version 1 holds one task per file (or a ``tasks`` list of such objects)::

    {"schema": "bayesfuse.summary", "version": 1,
     "task": "school-12", "estimand": "ate", "params": ["theta"],
     "estimate": [0.21], "covariance": [[0.0049]],
     "n": 84, "n_treated": 40, "n_control": 44,
     "covariates": {"urban": 1.0},
     "learners": {...}, "folds": 5, "seed": 0, "versions": {...}, "created_at": "..."}

Reading validates everything: JSON only (never pickle), a size limit, finite numbers (NaN
and Infinity are refused), consistent shapes, symmetric positive-definite covariance.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bayesfuse.errors import EstimatesError
from bayesfuse.estimates import TaskEstimates

__all__ = [
    "read_summary",
    "read_summaries",
    "read_summary_tasks",
    "summary_dict",
    "write_summary",
    "SCHEMA",
    "VERSION",
]

SCHEMA = "bayesfuse.summary"
VERSION = 1
MAX_SUMMARY_BYTES = 20 * 1024 * 1024
_MAX_PARAMS = 1000


def _refuse_constant(name: str) -> Any:
    raise EstimatesError(f"non-finite number {name} (JSON allows only finite numbers)")


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EstimatesError(f"{where} must be a number; got {type(value).__name__}.")
    number = float(value)
    if not math.isfinite(number):
        raise EstimatesError(f"{where} must be finite.")
    return number


def _task_from_dict(entry: Any, where: str) -> dict[str, Any]:
    if not isinstance(entry, Mapping):
        raise EstimatesError(f"{where}: each task must be a JSON object.")
    for key in ("task", "params", "estimate", "covariance"):
        if key not in entry:
            raise EstimatesError(f"{where}: missing field '{key}'.")
    task = entry["task"]
    if not isinstance(task, str | int) or isinstance(task, bool) or str(task) == "":
        raise EstimatesError(f"{where}: 'task' must be a non-empty string.")
    params = entry["params"]
    if (not isinstance(params, list) or not params or len(params) > _MAX_PARAMS
            or not all(isinstance(p, str) and p for p in params)):
        raise EstimatesError(f"{where}: 'params' must be a non-empty list of names.")
    p = len(params)
    estimate = entry["estimate"]
    if not isinstance(estimate, list) or len(estimate) != p:
        raise EstimatesError(f"{where}: 'estimate' must be a list of {p} numbers.")
    theta = [_number(v, f"{where}: estimate") for v in estimate]
    cov = entry["covariance"]
    if (not isinstance(cov, list) or len(cov) != p
            or not all(isinstance(row, list) and len(row) == p for row in cov)):
        raise EstimatesError(f"{where}: 'covariance' must be a {p}x{p} list of lists.")
    matrix = [[_number(v, f"{where}: covariance") for v in row] for row in cov]
    out: dict[str, Any] = {"task": str(task), "params": params, "estimate": theta,
                           "covariance": matrix, "estimand": entry.get("estimand")}
    if entry.get("estimand") is not None and not isinstance(entry["estimand"], str):
        raise EstimatesError(f"{where}: 'estimand' must be a string.")
    if entry.get("n") is not None:
        out["n"] = _number(entry["n"], f"{where}: n")
        if out["n"] <= 0:
            raise EstimatesError(f"{where}: n must be positive.")
    covariates = entry.get("covariates")
    if covariates is not None:
        if not isinstance(covariates, Mapping):
            raise EstimatesError(f"{where}: 'covariates' must be an object of name: number.")
        out["covariates"] = {str(k): _number(v, f"{where}: covariate '{k}'")
                             for k, v in covariates.items()}
    if entry.get("dp_noise_variance") is not None:
        noise = entry["dp_noise_variance"]
        if not isinstance(noise, list) or len(noise) != p:
            raise EstimatesError(f"{where}: 'dp_noise_variance' must be a list of {p} numbers.")
        out["dp_noise_variance"] = [_number(v, f"{where}: dp_noise_variance") for v in noise]
    return out


def read_summary_tasks(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Validated task objects of one summary JSON file (each with its ``source``)."""
    path = Path(path)
    if not path.is_file():
        raise EstimatesError(f"Summary file not found: {path}")
    size = path.stat().st_size
    if size > MAX_SUMMARY_BYTES:
        raise EstimatesError(f"{path}: summary file is {size} bytes, above the 20 MB limit.")
    try:
        text = path.read_text(encoding="utf-8")
        document = json.loads(text, parse_constant=_refuse_constant)
    except EstimatesError as exc:
        raise EstimatesError(f"{path}: {exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as exc:
        kind = "too deeply nested" if isinstance(exc, RecursionError) else "not valid JSON"
        raise EstimatesError(f"{path}: {kind} ({type(exc).__name__}).") from None
    where = str(path)
    if not isinstance(document, Mapping):
        raise EstimatesError(f"{where}: a summary must be a JSON object.")
    if document.get("schema") != SCHEMA:
        raise EstimatesError(f"{where}: not a bayesfuse summary (schema must be '{SCHEMA}').")
    version = document.get("version")
    if version != VERSION:
        raise EstimatesError(
            f"{where}: summary version {version!r} is not supported (this bayesfuse reads "
            f"version {VERSION}); upgrade bayesfuse or re-run `bayesfuse site`."
        )
    entries = document["tasks"] if "tasks" in document else [document]
    if not isinstance(entries, list) or not entries:
        raise EstimatesError(f"{where}: 'tasks' must be a non-empty list.")
    tasks = [_task_from_dict(e, f"{where}: task {i + 1}") for i, e in enumerate(entries)]
    for t in tasks:
        t["source"] = where
    return tasks


def read_summaries(paths: list[str | os.PathLike[str]]) -> TaskEstimates:
    """Merge summary files into one validated ``TaskEstimates``.

    Every problem is named with the file it came from: mixed estimands or parameter names,
    duplicated task ids, invalid covariances. Differential-privacy noise variances recorded
    in a file are added to the diagonal of Vₖ, so that the fusion accounts for them.
    """
    tasks = [t for p in paths for t in read_summary_tasks(p)]
    first = tasks[0]
    owner: dict[str, str] = {}
    for t in tasks:
        if t["params"] != first["params"]:
            raise EstimatesError(f"{t['source']}: task '{t['task']}' has parameters "
                                 f"{t['params']}, but {first['source']} has {first['params']}.")
        if t["estimand"] != first["estimand"]:
            raise EstimatesError(f"{t['source']}: estimand {t['estimand']!r} differs from "
                                 f"{first['estimand']!r} in {first['source']}.")
        if t["task"] in owner:
            raise EstimatesError(f"Task id '{t['task']}' appears in both {owner[t['task']]} "
                                 f"and {t['source']}.")
        owner[t["task"]] = t["source"]
    params = first["params"]
    for t in tasks:
        cov = np.array(t["covariance"])
        scale = max(np.abs(cov).max(), np.finfo(float).tiny)
        if np.abs(cov - cov.T).max() > 1e-8 * scale:
            raise EstimatesError(f"{t['source']}: task '{t['task']}': covariance is not "
                                 "symmetric.")
        if np.linalg.eigvalsh(0.5 * (cov + cov.T))[0] <= 1e-12 * np.abs(np.diag(cov)).max():
            raise EstimatesError(f"{t['source']}: task '{t['task']}': covariance is not "
                                 "positive definite.")
        if t.get("dp_noise_variance") is not None:
            t["covariance"] = (cov + np.diag(t["dp_noise_variance"])).tolist()
    covariates = None
    if all("covariates" in t for t in tasks):
        import pandas as pd

        covariates = pd.DataFrame([t["covariates"] for t in tasks],
                                  index=[t["task"] for t in tasks])
        if covariates.isna().any().any():
            raise EstimatesError("Summary files give different task covariates; give the same "
                                 "covariate names in every file.")
    has_n = all("n" in t for t in tasks)
    return TaskEstimates(
        [t["task"] for t in tasks],
        np.array([t["estimate"] for t in tasks]),
        np.array([t["covariance"] for t in tasks]),
        n=[t["n"] for t in tasks] if has_n else None,
        covariates=covariates,
        params=params,
        estimand=first["estimand"],
        meta={"sources": sorted({t["source"] for t in tasks})},
    )


def read_summary(path: str | os.PathLike[str]) -> TaskEstimates:
    """Read one summary JSON file holding at least two tasks."""
    return read_summaries([path])


def summary_dict(est: TaskEstimates, index: int, extra: Mapping[str, Any] | None = None
                 ) -> dict[str, Any]:
    """The v1 summary object of task ``index`` of ``est``."""
    document: dict[str, Any] = {
        "schema": SCHEMA,
        "version": VERSION,
        "task": est.tasks[index],
        "estimand": est.estimand,
        "params": est.params,
        "estimate": [float(v) for v in est.estimates[index]],
        "covariance": [[float(v) for v in row] for row in est.covariances[index]],
    }
    if est.n is not None:
        document["n"] = int(est.n[index]) if float(est.n[index]).is_integer() \
            else float(est.n[index])
    if est.covariates is not None:
        document["covariates"] = {k: float(v) for k, v in est.covariates.iloc[index].items()}
    document.update(dict(extra or {}))
    return document


def write_summary(document: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a summary atomically, with sorted keys so that equal inputs give equal bytes."""
    from bayesfuse._io import atomic_write_text

    text = json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n"
    return atomic_write_text(path, text)
