"""Site summary files: what a site sends instead of its rows (JSON, versioned schema).

Version 1 (``bayesfuse/data/schemas/summary-v1.json``, documented in ``docs/summary-format.md``)
holds one task per file::

    {"schema": "bayesfuse.summary", "version": 1,
     "task": "school-12", "estimand": "ate", "params": ["theta"],
     "estimate": [0.21], "covariance": [[0.0049]],
     "n": 84, "n_treated": 40, "n_control": 44,
     "covariates": {"urban": 1.0},
     "learner": "gbm", "learners": {...}, "folds": 5, "seed": 0, "min_n": 20,
     "versions": {...}, "created_at": "2024-01-01T00:00:00Z"}

or several, as a ``tasks`` list of task objects with the provenance fields at the top level.
With differential privacy, a ``dp`` object (mechanism, epsilon, delta, sensitivity) sits at
the top level and every task carries ``dp_noise_variance`` (p numbers), which the reader adds
to the diagonal of Vₖ.

Reading validates everything and names the file in every message: JSON only (never
pickle), a size limit, no duplicated keys, no unknown fields, finite numbers of sane
magnitude (NaN and Infinity are refused), consistent shapes, symmetric positive-definite
covariances, consistent estimand and parameter names across files, unique task ids.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayesfuse._io import atomic_write_text, check_overwrite
from bayesfuse.data.columns import has_control_characters, task_label
from bayesfuse.data.estimates import TaskEstimates
from bayesfuse.errors import EstimatesError

__all__ = [
    "read_summary",
    "read_summaries",
    "read_summary_tasks",
    "validate_summary",
    "summary_dict",
    "write_summary",
    "SCHEMA",
    "VERSION",
    "TASK_FIELDS",
    "PROVENANCE_FIELDS",
]

SCHEMA = "bayesfuse.summary"  # the file-format id written in every summary (not a module path)
VERSION = 1
MAX_SUMMARY_BYTES = 20 * 1024 * 1024  # refuse summary files above 20 MB
MAX_TASKS = 100_000
MAX_PARAMS = 1000
MAX_COVARIATES = 200
MAX_ABS_ESTIMATE = 1e12  # |θ̂| above this is not a sane estimate
SE_RANGE = (1e-12, 1e12)  # standard errors outside this range are refused
MAX_N = 10**12
MAX_NAME = 200  # task ids, parameter and covariate names, estimand
MAX_TEXT = 10_000  # free text (learner descriptions)
DP_MECHANISMS = ("analytic-gaussian",)

#: fields of a task object: required, then optional
TASK_FIELDS = {
    "required": ("task", "params", "estimate", "covariance"),
    "optional": ("estimand", "n", "n_treated", "n_control", "covariates",
                 "dp_noise_variance", "warnings"),
}
#: provenance fields (top level): all optional
PROVENANCE_FIELDS = ("learner", "learners", "folds", "seed", "min_n", "versions",
                     "created_at", "dp", "blp_center")


class _Refused(Exception):
    """A problem found while validating; re-raised as EstimatesError with the file name."""


# ---------------------------------------------------------------------- JSON parsing
def _refuse_constant(name: str) -> Any:
    raise _Refused(f"non-finite number {name} (JSON allows only finite numbers)")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"key '{_short(key)}' appears twice in one object")
        out[key] = value
    return out


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > 20:
        raise _Refused(f"integer {text[:20]}... is too large")
    return int(text)


def _parse_json(text: str) -> Any:
    return json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_no_duplicates,
                       parse_int=_parse_int)


# ---------------------------------------------------------------------- value checks
def _short(text: Any, limit: int = 40) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "..."


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Refused(f"{where} must be a number; got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise _Refused(f"{where} is too large") from None
    if not math.isfinite(number):
        raise _Refused(f"{where} must be finite")
    return number


def _integer(value: Any, where: str, low: int, high: int = MAX_N) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Refused(f"{where} must be an integer; got {_kind(value)}")
    if not low <= value <= high:
        raise _Refused(f"{where} must be an integer in [{low}, {high}]; got {value}")
    return value


def _kind(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    return type(value).__name__


def _text(value: Any, where: str, limit: int = MAX_NAME) -> str:
    if not isinstance(value, str):
        raise _Refused(f"{where} must be a string; got {type(value).__name__}")
    if not value.strip():
        raise _Refused(f"{where} must not be empty")
    if len(value) > limit:
        raise _Refused(f"{where} is longer than {limit} characters")
    if has_control_characters(value):
        raise _Refused(f"{where} contains control characters")
    return value


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _Refused(f"{where} must be a JSON object; got {type(value).__name__}")
    return value


def _check_keys(entry: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = [k for k in entry if k not in allowed]
    if unknown:
        raise _Refused(f"{where}: unknown field '{_short(unknown[0])}' (schema "
                       f"{SCHEMA} version {VERSION} allows {', '.join(allowed)})")


# ---------------------------------------------------------------------- task objects
def _task_from_dict(entry: Any, where: str) -> dict[str, Any]:
    entry = _object(entry, where)
    for key in TASK_FIELDS["required"]:
        if key not in entry:
            raise _Refused(f"{where}: missing field '{key}'")
    task = entry["task"]
    if isinstance(task, int) and not isinstance(task, bool):
        task = str(task)
    if isinstance(task, str):
        try:  # the one rule for task ids, in every reader
            task_label(task)
        except EstimatesError as exc:
            raise _Refused(f"{where}: {exc}") from None
    task = _text(task, f"{where}: 'task'")
    where = f"{where} ('{_short(task)}')"
    params = entry["params"]
    if not isinstance(params, list) or not 1 <= len(params) <= MAX_PARAMS:
        raise _Refused(f"{where}: 'params' must be a list of 1 to {MAX_PARAMS} names")
    params = [_text(p, f"{where}: parameter name") for p in params]
    if len(set(params)) != len(params):
        raise _Refused(f"{where}: parameter names must be unique; got {params[:10]}")
    p = len(params)
    estimate = entry["estimate"]
    if not isinstance(estimate, list) or len(estimate) != p:
        raise _Refused(f"{where}: 'estimate' must be a list of {p} number(s), one per "
                       "parameter")
    theta = [_number(v, f"{where}: estimate") for v in estimate]
    if max(abs(v) for v in theta) > MAX_ABS_ESTIMATE:
        raise _Refused(f"{where}: estimate {max(theta, key=abs):.3g} is implausibly large "
                       f"(|estimate| > {MAX_ABS_ESTIMATE:g}); check its units")
    cov = entry["covariance"]
    if (not isinstance(cov, list) or len(cov) != p
            or not all(isinstance(row, list) and len(row) == p for row in cov)):
        raise _Refused(f"{where}: 'covariance' must be a {p}x{p} list of lists")
    matrix = np.array([[_number(v, f"{where}: covariance") for v in row] for row in cov])
    _check_covariance(matrix, where)
    estimand = entry.get("estimand")
    out: dict[str, Any] = {
        "task": task, "params": params, "estimate": theta, "covariance": matrix,
        "estimand": None if estimand is None else _text(estimand, f"{where}: 'estimand'"),
    }
    counts = {}
    for key in ("n", "n_treated", "n_control"):
        if entry.get(key) is not None:
            counts[key] = _integer(entry[key], f"{where}: '{key}'", 1 if key == "n" else 0)
    if "n_treated" in counts or "n_control" in counts:
        if not {"n", "n_treated", "n_control"} <= set(counts):
            raise _Refused(f"{where}: give 'n', 'n_treated' and 'n_control' together")
        if counts["n_treated"] + counts["n_control"] != counts["n"]:
            raise _Refused(f"{where}: n_treated + n_control = "
                           f"{counts['n_treated'] + counts['n_control']} differs from n = "
                           f"{counts['n']}")
    out.update(counts)
    covariates = entry.get("covariates")
    if covariates is not None:
        covariates = _object(covariates, f"{where}: 'covariates'")
        if len(covariates) > MAX_COVARIATES:
            raise _Refused(f"{where}: more than {MAX_COVARIATES} covariates")
        values = {_text(k, f"{where}: covariate name"):
                  _number(v, f"{where}: covariate '{_short(k)}'") for k, v in covariates.items()}
        if values:  # an empty object means no covariates
            out["covariates"] = values
    noise = entry.get("dp_noise_variance")
    if noise is not None:
        if not isinstance(noise, list) or len(noise) != p:
            raise _Refused(f"{where}: 'dp_noise_variance' must be a list of {p} number(s)")
        values = [_number(v, f"{where}: dp_noise_variance") for v in noise]
        if min(values) < 0 or max(values) > SE_RANGE[1] ** 2:
            raise _Refused(f"{where}: 'dp_noise_variance' must be >= 0 and at most "
                           f"{SE_RANGE[1] ** 2:g}")
        out["dp_noise_variance"] = values
    warnings = entry.get("warnings")
    if warnings is not None:
        if not isinstance(warnings, list) or len(warnings) > 100:
            raise _Refused(f"{where}: 'warnings' must be a list of at most 100 strings")
        out["warnings"] = [_text(w, f"{where}: warning", MAX_TEXT) for w in warnings]
    return out


def _check_covariance(matrix: np.ndarray, where: str) -> None:
    """Symmetric, positive definite, standard errors in ``SE_RANGE``."""
    diag = np.diag(matrix)
    if (diag <= 0).any():
        raise _Refused(f"{where}: covariance has a variance <= 0 on its diagonal "
                       f"({float(diag.min()):.3g}); a standard error must be > 0")
    se = np.sqrt(diag)
    if se.min() < SE_RANGE[0] or se.max() > SE_RANGE[1]:
        worst = float(se.min() if se.min() < SE_RANGE[0] else se.max())
        raise _Refused(f"{where}: standard error {worst:.3g} is outside the sane range "
                       f"[{SE_RANGE[0]:g}, {SE_RANGE[1]:g}]; check the stage-1 fit and the units")
    scaled = matrix / np.outer(se, se)
    if np.abs(scaled - scaled.T).max() > 1e-8:
        raise _Refused(f"{where}: covariance is not symmetric")
    if np.linalg.eigvalsh(0.5 * (scaled + scaled.T))[0] <= 1e-10:
        raise _Refused(f"{where}: covariance is not positive definite")


def _provenance(document: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Validated provenance fields of a document (all optional)."""
    out: dict[str, Any] = {}
    if document.get("learner") is not None:
        out["learner"] = _text(document["learner"], f"{where}: 'learner'", MAX_TEXT)
    if document.get("learners") is not None:
        learners = _object(document["learners"], f"{where}: 'learners'")
        if len(learners) > 20:
            raise _Refused(f"{where}: 'learners' has more than 20 entries")
        out["learners"] = {_text(k, f"{where}: learner role"):
                           _text(v, f"{where}: learner '{_short(k)}'", MAX_TEXT)
                           for k, v in learners.items()}
    if document.get("folds") is not None:
        out["folds"] = _integer(document["folds"], f"{where}: 'folds'", 2, 10_000)
    if document.get("seed") is not None:
        out["seed"] = _integer(document["seed"], f"{where}: 'seed'", 0, 2**63 - 1)
    if document.get("min_n") is not None:
        out["min_n"] = _integer(document["min_n"], f"{where}: 'min_n'", 1)
    if document.get("versions") is not None:
        versions = _object(document["versions"], f"{where}: 'versions'")
        if len(versions) > 50:
            raise _Refused(f"{where}: 'versions' has more than 50 entries")
        out["versions"] = {_text(k, f"{where}: package name"):
                           _text(v, f"{where}: version of '{_short(k)}'")
                           for k, v in versions.items()}
    if document.get("created_at") is not None:
        out["created_at"] = _text(document["created_at"], f"{where}: 'created_at'", 64)
    if document.get("blp_center") is not None:
        centre = _object(document["blp_center"], f"{where}: 'blp_center'")
        if not centre or len(centre) > 50:
            raise _Refused(f"{where}: 'blp_center' must name 1 to 50 effect modifiers")
        out["blp_center"] = {}
        for name, value in centre.items():
            what = f"{where}: 'blp_center' of '{_short(name)}'"
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not np.isfinite(value):
                raise _Refused(f"{what} must be a finite number")
            out["blp_center"][_text(name, f"{where}: effect modifier")] = float(value)
    if document.get("dp") is not None:
        dp = _object(document["dp"], f"{where}: 'dp'")
        _check_keys(dp, ("mechanism", "epsilon", "delta", "sensitivity"), f"{where}: 'dp'")
        for key in ("mechanism", "epsilon", "delta", "sensitivity"):
            if key not in dp:
                raise _Refused(f"{where}: 'dp' is missing '{key}'")
        if dp["mechanism"] not in DP_MECHANISMS:
            raise _Refused(f"{where}: unknown dp mechanism {_short(dp['mechanism'])!r}; known: "
                           f"{', '.join(DP_MECHANISMS)}")
        values = {k: _number(dp[k], f"{where}: dp {k}") for k in ("epsilon", "delta",
                                                                   "sensitivity")}
        if values["epsilon"] <= 0 or values["sensitivity"] <= 0 or not 0 < values["delta"] < 1:
            raise _Refused(f"{where}: dp needs epsilon > 0, 0 < delta < 1, sensitivity > 0")
        out["dp"] = {"mechanism": dp["mechanism"], **values}
    return out


def validate_summary(document: Any, where: str = "summary") -> tuple[list[dict[str, Any]],
                                                                      dict[str, Any]]:
    """Validate a parsed summary document.

    Parameters
    ----------
    document : object
        The parsed JSON.
    where : str
        Name used in messages (the file name).

    Returns
    -------
    tasks : list of dict
        Validated task objects (``covariance`` as an ndarray of shape (p, p)).
    provenance : dict
        Validated provenance fields.

    Raises
    ------
    EstimatesError
        With ``where`` and the problem in the message.
    """
    try:
        return _validate(document, where)
    except _Refused as exc:
        raise EstimatesError(str(exc) if str(exc).startswith(where) else f"{where}: {exc}") \
            from None


def _validate(document: Any, where: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    if not isinstance(document, Mapping):
        raise _Refused(f"{where}: a summary must be a JSON object; got {type(document).__name__}")
    if document.get("schema") != SCHEMA:
        raise _Refused(f"{where}: not a bayesfuse summary ('schema' must be '{SCHEMA}'; write "
                       "summaries with `bayesfuse site`)")
    version = document.get("version")
    if isinstance(version, bool) or version != VERSION:
        raise _Refused(f"{where}: summary version {_short(repr(version))} is not supported "
                       f"(this bayesfuse reads version {VERSION}); upgrade bayesfuse or re-run "
                       "`bayesfuse site`")
    task_keys = TASK_FIELDS["required"] + TASK_FIELDS["optional"]
    if "tasks" in document:
        _check_keys(document, ("schema", "version", "tasks", *PROVENANCE_FIELDS), where)
        entries = document["tasks"]
        if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_TASKS:
            raise _Refused(f"{where}: 'tasks' must be a list of 1 to {MAX_TASKS} task objects")
        for i, entry in enumerate(entries):
            _check_keys(_object(entry, f"{where}: task {i + 1}"), task_keys,
                        f"{where}: task {i + 1}")
        tasks = [_task_from_dict(e, f"{where}: task {i + 1}") for i, e in enumerate(entries)]
    else:
        _check_keys(document, ("schema", "version", *task_keys, *PROVENANCE_FIELDS), where)
        tasks = [_task_from_dict(document, where)]
    provenance = _provenance(document, where)
    has_noise = ["dp_noise_variance" in t for t in tasks]
    if "dp" in provenance and not all(has_noise):
        raise _Refused(f"{where}: 'dp' is set but a task has no 'dp_noise_variance'; the "
                       "fusion would ignore the privacy noise. Re-run `bayesfuse site`")
    if any(has_noise) and "dp" not in provenance:
        raise _Refused(f"{where}: 'dp_noise_variance' without the 'dp' settings object")
    return tasks, provenance


# ---------------------------------------------------------------------- files
def _load(path: Path) -> Any:
    if not path.exists():
        raise EstimatesError(f"Summary file not found: {path}")
    if not path.is_file():
        raise EstimatesError(f"{path}: not a regular file.")
    size = path.stat().st_size
    if size > MAX_SUMMARY_BYTES:
        raise EstimatesError(f"{path}: summary file is {size} bytes, above the "
                             f"{MAX_SUMMARY_BYTES // 2**20} MB limit.")
    if size == 0:
        raise EstimatesError(f"{path}: file is empty.")
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_SUMMARY_BYTES + 1)
        if len(data) > MAX_SUMMARY_BYTES:
            raise EstimatesError(f"{path}: summary file is above the "
                                 f"{MAX_SUMMARY_BYTES // 2**20} MB limit.")
        return _parse_json(data.decode("utf-8-sig"))
    except _Refused as exc:
        raise EstimatesError(f"{path}: not a valid summary: {exc}.") from None
    except UnicodeDecodeError:
        raise EstimatesError(f"{path}: not UTF-8 text; a summary is a JSON file written by "
                             "`bayesfuse site`.") from None
    except json.JSONDecodeError as exc:
        raise EstimatesError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, "
                             f"column {exc.colno}).") from None
    except RecursionError:
        raise EstimatesError(f"{path}: JSON is too deeply nested to be a summary.") from None
    except (ValueError, OverflowError) as exc:
        raise EstimatesError(f"{path}: not valid JSON ({_short(exc, 80)}).") from None


def read_summary_tasks(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Validated task objects of one summary JSON file (each with its ``source``).

    Parameters
    ----------
    path : path
        A summary JSON file written by ``bayesfuse site``.

    Returns
    -------
    list of dict
        One per task: ``task``, ``params``, ``estimate`` (list of p floats), ``covariance``
        (ndarray of shape (p, p)), ``estimand`` and the optional fields present, plus
        ``source`` (the file name) and ``provenance`` (validated top-level fields).
    """
    path = Path(path)
    where = str(path)
    tasks, provenance = validate_summary(_load(path), where)
    for t in tasks:
        t["source"] = where
        t["provenance"] = provenance
    return tasks


def read_summaries(paths: Sequence[str | os.PathLike[str]]) -> TaskEstimates:
    """Merge summary files into one validated ``TaskEstimates``.

    Every problem is named with the file it came from: mixed estimands or parameter names,
    duplicated task ids, invalid covariances. Differential-privacy noise variances recorded
    in a file are added to the diagonal of Vₖ, so that the fusion accounts for them.

    Parameters
    ----------
    paths : sequence of paths
        Summary JSON files (``bayesfuse site`` output); tasks keep the file order.

    Returns
    -------
    TaskEstimates
        ``meta["sources"]`` lists the files, ``meta["provenance"]`` maps each file to its
        provenance fields (learners, folds, seed, versions, created_at, dp).
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    if not paths:
        raise EstimatesError("No summary file given.")
    tasks = [t for p in paths for t in read_summary_tasks(p)]
    first = tasks[0]
    owner: dict[str, str] = {}
    for t in tasks:
        if t["params"] != first["params"]:
            raise EstimatesError(f"{t['source']}: task '{_short(t['task'])}' has parameters "
                                 f"{t['params'][:10]}, but {first['source']} has "
                                 f"{first['params'][:10]}; fuse only the same parameters.")
        if t["estimand"] != first["estimand"]:
            raise EstimatesError(f"{t['source']}: estimand {t['estimand']!r} differs from "
                                 f"{first['estimand']!r} in {first['source']}; fuse only "
                                 "estimates of the same quantity.")
        if t["task"] in owner:
            where = ("twice in " + t["source"] if owner[t["task"]] == t["source"]
                     else f"in both {owner[t['task']]} and {t['source']}")
            raise EstimatesError(f"Task id '{_short(t['task'])}' appears {where}; task ids "
                                 "must be unique across sites.")
        owner[t["task"]] = t["source"]
    covariates = None
    names = [tuple(sorted(t["covariates"])) for t in tasks if "covariates" in t]
    if names:
        if len(names) != len(tasks) or len(set(names)) != 1:
            bad = next((t for t in tasks
                        if tuple(sorted(t.get("covariates", {}))) != names[0]), tasks[0])
            raise EstimatesError(f"{bad['source']}: task '{_short(bad['task'])}' has covariates "
                                 f"{list(bad.get('covariates', {}))[:10]}, other tasks have "
                                 f"{list(names[0])[:10]}; give the same task covariates in "
                                 "every file (or none).")
        covariates = pd.DataFrame([t["covariates"] for t in tasks],
                                  index=[t["task"] for t in tasks], columns=list(names[0]))
    # blp: every file that records its centres must use the same (else the intercepts,
    # effects at the centres, are not comparable across sites)
    centred = [(t["source"], t["provenance"]["blp_center"]) for t in tasks
               if t["provenance"].get("blp_center") is not None]
    for source, centre in centred[1:]:
        if centre != centred[0][1]:
            raise EstimatesError(
                f"{source}: the BLP effect modifiers are centred at {centre}, but "
                f"{centred[0][0]} centres them at {centred[0][1]}; the intercepts are then "
                "not comparable. Re-run `bayesfuse site` with the same --modifiers "
                "name=centre at every site.")
    extra_meta = {"blp_center": dict(centred[0][1])} if centred else {}
    covariances = np.array([t["covariance"] + np.diag(t.get("dp_noise_variance", 0.0)
                                                        * np.ones(len(t["params"])))
                            for t in tasks])
    has_n = all("n" in t for t in tasks)
    try:
        return TaskEstimates(
            [t["task"] for t in tasks],
            np.array([t["estimate"] for t in tasks]),
            covariances,
            n=[t["n"] for t in tasks] if has_n else None,
            covariates=covariates,
            params=first["params"],
            estimand=first["estimand"],
            meta={"sources": list(dict.fromkeys(t["source"] for t in tasks)),
                  "provenance": {t["source"]: t["provenance"] for t in tasks},
                  **extra_meta},
        )
    except EstimatesError as exc:
        files = ", ".join(dict.fromkeys(t["source"] for t in tasks))
        raise EstimatesError(f"{_short(files, 200)}: {exc}") from None


def read_summary(path: str | os.PathLike[str]) -> TaskEstimates:
    """Read one summary JSON file holding at least two tasks."""
    return read_summaries([path])


# ---------------------------------------------------------------------- writing
def summary_dict(est: TaskEstimates, index: int, extra: Mapping[str, Any] | None = None
                 ) -> dict[str, Any]:
    """The v1 summary object of task ``index`` of ``est`` (``extra``: provenance fields)."""
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
        document["n"] = int(round(float(est.n[index])))
    if est.covariates is not None:
        document["covariates"] = {k: float(v) for k, v in est.covariates.iloc[index].items()}
    document.update(dict(extra or {}))
    return {k: v for k, v in document.items() if v is not None}


def summary_text(document: Mapping[str, Any]) -> str:
    """Canonical JSON text: sorted keys, 2-space indent, shortest round-trip floats."""
    return json.dumps(document, indent=2, sort_keys=True, allow_nan=False,
                      ensure_ascii=False) + "\n"


def write_summary(document: Mapping[str, Any], path: str | os.PathLike[str],
                  force: bool = True) -> Path:
    """Validate ``document`` and write it atomically; equal documents give equal bytes.

    Parameters
    ----------
    document : mapping
        A v1 summary (see :func:`validate_summary`); refused if it would not read back.
    path : path
        Output file (written to a temporary file, then renamed).
    force : bool, default True
        Overwrite an existing file (the CLI asks for ``--force``).

    Returns
    -------
    Path
    """
    check_overwrite(path, force)
    try:
        text = summary_text(document)
        parsed = _parse_json(text)
    except (TypeError, ValueError, _Refused) as exc:
        raise EstimatesError(f"Cannot write {path}: not a valid summary ({exc}).") from None
    validate_summary(parsed, str(path))
    return atomic_write_text(path, text)
