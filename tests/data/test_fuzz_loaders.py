"""Property-based hardening of every loader (hypothesis).

Malformed, truncated, huge, deeply nested, NaN/Inf, wrong-typed and adversarial summary files,
CSVs and tables go into ``read_estimates`` (CSV and JSON), ``read_summaries`` and
``TaskEstimates.from_frame``. The only acceptable outcomes are a valid ``TaskEstimates`` or a
``BayesfuseError`` with a clear one-paragraph message. The default run tries 200 examples per
loader; the slow suite (``-m slow``) 2,000.
"""

from __future__ import annotations

import json
import math
import string
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from bayesfuse.data.estimates import TaskEstimates
from bayesfuse.data.read import read_estimates
from bayesfuse.data.summary import read_summaries
from bayesfuse.errors import BayesfuseError

FAST = settings(max_examples=200, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# the slow suite explores other examples than the default run, from a fixed seed
SLOW = settings(FAST, max_examples=2000, derandomize=False)

# ---------------------------------------------------------------------- strategies
WEIRD_FLOATS = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e308, -1e308,
                                5e-324, 1e-300, 1e13, 1e30, 1e300])
NUMBERS = st.one_of(st.integers(-10**30, 10**30), st.floats(allow_nan=True), WEIRD_FLOATS,
                    st.integers(-5, 5))
TEXT = st.one_of(st.text(max_size=12), st.sampled_from(
    ["theta", "a", "", " ", "\n", "\x00", "\x1b[31m", "NaN", "Infinity", "-1", "1e999",
     "task", "estimate", "se", "cov[theta]", "__proto__", "[link=x]y[/link]", "é", "🙂"]))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)


def _valid_task(name: str, p: int = 1) -> dict:
    params = ["theta"] if p == 1 else [f"th{j}" for j in range(p)]
    cov = (np.eye(p) * 0.04 + 0.01).tolist()
    return {"task": name, "estimand": "ate", "params": params, "estimate": [0.1] * p,
            "covariance": cov, "n": 50, "n_treated": 20, "n_control": 30}


def _valid_document(p: int = 1, multi: bool = True) -> dict:
    head = {"schema": "bayesfuse.summary", "version": 1, "folds": 5, "seed": 0,
            "created_at": "2024-01-01T00:00:00Z"}
    if multi:
        return {**head, "tasks": [_valid_task("a", p), _valid_task("b", p)]}
    return {**head, **_valid_task("a", p)}


FIELDS = ["schema", "version", "tasks", "task", "estimand", "params", "estimate",
          "covariance", "n", "n_treated", "n_control", "covariates", "dp",
          "dp_noise_variance", "warnings", "folds", "seed", "versions", "created_at",
          "learners", "learner", "min_n", "extra"]


@st.composite
def mutated_documents(draw):
    """A valid summary with a few fields replaced, removed or added (top level or task)."""
    document = _valid_document(p=draw(st.sampled_from([1, 2, 3])), multi=draw(st.booleans()))
    for _ in range(draw(st.integers(1, 3))):
        target = document
        tasks = document.get("tasks")
        if (isinstance(tasks, list) and len(tasks) == 2
                and all(isinstance(t, dict) for t in tasks) and draw(st.booleans())):
            target = tasks[draw(st.integers(0, 1))]
        key = draw(st.sampled_from(FIELDS))
        action = draw(st.sampled_from(["replace", "delete", "number", "matrix"]))
        if action == "delete":
            target.pop(key, None)
        elif action == "number":
            target[key] = [draw(NUMBERS)] if key != "covariance" else [[draw(NUMBERS)]]
        elif action == "matrix":
            size = draw(st.integers(0, 3))
            target[key] = [[draw(NUMBERS) for _ in range(size)] for _ in range(size)]
        else:
            target[key] = draw(JSON_VALUES)
    return document


def _serialise(document) -> bytes:
    return json.dumps(document, allow_nan=True).encode("utf-8")


@st.composite
def summary_bytes(draw):
    """Bytes of a would-be summary file: mutated, truncated, nested, huge or random."""
    kind = draw(st.sampled_from(["mutated", "truncated", "random_json", "bytes", "nested",
                                 "huge_number", "duplicate_key", "valid"]))
    if kind == "mutated":
        return _serialise(draw(mutated_documents()))
    if kind == "valid":
        return _serialise(_valid_document(draw(st.sampled_from([1, 2])), draw(st.booleans())))
    if kind == "truncated":
        data = _serialise(_valid_document())
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "random_json":
        return _serialise(draw(JSON_VALUES))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "nested":
        depth = draw(st.integers(50, 100_000))
        opener = draw(st.sampled_from(["[", '{"a":']))
        return (opener * depth).encode() + draw(st.sampled_from([b"", b"1", b"]" * depth]))
    if kind == "huge_number":
        digits = draw(st.integers(15, 5000))
        text = _serialise(_valid_document(multi=False)).decode()
        return text.replace('"estimate": [0.1]', f'"estimate": [{"9" * digits}]').encode()
    text = _serialise(_valid_document(multi=False)).decode()
    return text.replace('"n": 50', '"n": 50, "n": 51').encode()


CSV_HEADERS = ["task", "estimate", "se", "variance", "n", "param", "cov[theta]", "cov[a]",
               "z", "task", "", "ci_low", "ci_high", "level", "p_value", "se_from"]
CSV_CELLS = st.one_of(
    st.sampled_from(["", "nan", "NaN", "inf", "-inf", "1e999", "0", "-1", "1", "0.5", "a",
                     "b", "theta", '"', '"x,y"', "1,2", "\x00", "True", "1e-320", "9" * 400,
                     "  ", "NULL", "#"]),
    st.floats(allow_nan=True).map(repr), st.integers(-10**20, 10**20).map(str),
    st.text(alphabet=string.printable, max_size=6),
)


@st.composite
def csv_bytes(draw):
    """Bytes of a would-be estimates CSV."""
    kind = draw(st.sampled_from(["table", "table", "truncated", "bytes", "wide", "valid"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    valid = "task,estimate,se,n\na,0.1,0.2,30\nb,0.3,0.1,40\nc,-0.2,0.3,50\n"
    if kind == "valid":
        return valid.encode()
    if kind == "truncated":
        return valid[: draw(st.integers(0, len(valid) - 1))].encode()
    if kind == "wide":
        columns = draw(st.integers(50, 3000))
        header = ",".join(["task", "estimate", "se"] + [f"z{j}" for j in range(columns)])
        row = ",".join(["a", "1", "1"] + ["1"] * columns)
        return f"{header}\n{row}\n{row.replace('a', 'b', 1)}\n".encode()
    if draw(st.booleans()):  # mostly the right columns, so that the values get checked
        base = draw(st.sampled_from([["task", "estimate", "se"], ["task", "estimate", "variance"],
                                     ["task", "param", "estimate", "se", "cov[theta]"],
                                     ["task", "estimate", "ci_low", "ci_high"],
                                     ["task", "estimate", "p_value"]]))
        header = base + draw(st.lists(st.sampled_from(CSV_HEADERS), max_size=2))
    else:
        header = draw(st.lists(st.sampled_from(CSV_HEADERS), min_size=1, max_size=6))
    numeric = st.one_of(CSV_CELLS, st.floats(0.01, 10).map(repr), st.integers(1, 99).map(str))
    width = st.integers(len(header), len(header) + draw(st.sampled_from([0, 0, 1])))
    rows = draw(st.lists(width.flatmap(lambda w: st.lists(numeric, min_size=w, max_size=w)),
                         max_size=6))
    separator = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    return separator.join(",".join(r) for r in [header, *rows]).encode(
        "utf-8", errors="surrogatepass") + separator.encode()


CELL_VALUES = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT,
                        st.lists(st.integers(), max_size=2), st.just(pd.NaT),
                        st.just(object()))


@st.composite
def frames(draw):
    """A DataFrame and from_frame keyword arguments: mostly well-formed, with bad cells,
    wrong types, missing or duplicated columns and mismatched arguments mixed in."""
    n = draw(st.integers(0, 6))
    names = ["task", "estimate", "se"] + draw(st.lists(
        st.sampled_from(["variance", "n", "param", "cov[theta]", "cov[x]", "z", "w", "lo", "hi",
                         "p"]),
        max_size=4, unique=True))
    good = {
        "task": st.one_of(st.sampled_from(["a", "b", "c", "d", "e", "f"]), st.integers(0, 5)),
        "estimate": st.floats(-5, 5), "se": st.floats(0.01, 3), "variance": st.floats(0.01, 3),
        "n": st.integers(1, 500), "param": st.sampled_from(["theta", "x"]),
        "lo": st.floats(-6, 0), "hi": st.floats(0, 6), "p": st.floats(0, 1),
    }
    data = {}
    if "param" not in names and draw(st.booleans()):  # distinct task ids, as a valid table has
        data["task"] = draw(st.lists(good["task"], min_size=n, max_size=n,
                                     unique_by=lambda t: str(t)))
    for name in names:
        if name in data:
            continue
        cell = good.get(name, st.floats(-3, 3))
        if draw(st.integers(0, 3)) == 0:  # a column with bad cells mixed in
            cell = st.one_of(cell, CELL_VALUES)
        data[name] = draw(st.lists(cell, min_size=n, max_size=n))
    frame = pd.DataFrame({k: pd.Series(v, dtype=object if draw(st.booleans()) else None)
                          for k, v in data.items()})
    if draw(st.integers(0, 5)) == 0 and len(frame.columns) > 1:  # duplicated column names
        columns = list(frame.columns)
        columns[-1] = draw(st.sampled_from(columns[:-1]))
        frame.columns = columns
    if draw(st.integers(0, 5)) == 0:
        frame = frame.drop(columns=draw(st.sampled_from(list(frame.columns))))
    kwargs = {"task": draw(st.sampled_from(["task", "task", "task", "z", "missing"])),
              "estimate": draw(st.sampled_from(["estimate", "estimate", "w"])),
              "se": draw(st.sampled_from(["se", "se", "se", None, "n"]))}
    if draw(st.integers(0, 3)) == 0:
        kwargs["variance"] = draw(st.sampled_from(["variance", "se"]))
    if "n" in names and draw(st.booleans()):
        kwargs["n"] = "n"
    if draw(st.integers(0, 2)) == 0:  # standard errors from intervals or p-values
        kwargs.update(draw(st.sampled_from([{"ci_low": "lo", "ci_high": "hi"}, {"p_value": "p"},
                                            {"ci_low": "lo", "ci_high": "hi", "level": 0.9},
                                            {"ci_low": "lo"}, {"level": "z", "ci_low": "lo",
                                                               "ci_high": "hi"}])))
    if draw(st.integers(0, 2)) == 0:
        kwargs["covariates"] = draw(st.lists(st.sampled_from(["z", "w", "task"]), max_size=2))
    if "param" in names and draw(st.booleans()):
        kwargs["param"] = "param"
    return frame, kwargs


# ---------------------------------------------------------------------- the property
def _check_outcome(call):
    """Run ``call``: a valid TaskEstimates or a clear BayesfuseError, nothing else."""
    try:
        est = call()
    except BayesfuseError as exc:
        message = str(exc)
        assert message.strip(), "empty error message"
        assert "Traceback" not in message
        assert len(message) < 2000, f"message too long: {message[:200]}..."
        return None
    assert isinstance(est, TaskEstimates)
    assert est.n_tasks >= 2 and len(set(est.tasks)) == est.n_tasks
    assert np.isfinite(est.estimates).all() and np.isfinite(est.covariances).all()
    assert (np.linalg.eigvalsh(est.covariances) > 0).all()
    return est


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _summary_json(folder, data):
    _check_outcome(lambda: read_estimates(_write(folder, "s.json", data)))


def _summary_pair(folder, first, second):
    a, b = _write(folder, "a.json", first), _write(folder, "b.json", second)
    _check_outcome(lambda: read_summaries([a, b]))


def _csv(folder, data):
    _check_outcome(lambda: read_estimates(_write(folder, "e.csv", data)))


def _frame(frame_and_kwargs):
    frame, kwargs = frame_and_kwargs
    _check_outcome(lambda: TaskEstimates.from_frame(frame, **kwargs))


ONE_TASK = _serialise(_valid_document(multi=False))


@FAST
@given(data=summary_bytes())
def test_read_estimates_json_fuzz(folder, data):
    _summary_json(folder, data)


@FAST
@given(first=summary_bytes(), second=st.one_of(summary_bytes(), st.just(ONE_TASK)))
def test_read_summaries_fuzz(folder, first, second):
    _summary_pair(folder, first, second)


@FAST
@given(data=csv_bytes())
def test_read_estimates_csv_fuzz(folder, data):
    _csv(folder, data)


@FAST
@given(frame_and_kwargs=frames())
def test_from_frame_fuzz(frame_and_kwargs):
    _frame(frame_and_kwargs)


@pytest.mark.slow
@SLOW
@seed(20240101)
@given(data=summary_bytes())
def test_read_estimates_json_fuzz_slow(folder, data):
    _summary_json(folder, data)


@pytest.mark.slow
@SLOW
@seed(20240101)
@given(first=summary_bytes(), second=st.one_of(summary_bytes(), st.just(ONE_TASK)))
def test_read_summaries_fuzz_slow(folder, first, second):
    _summary_pair(folder, first, second)


@pytest.mark.slow
@SLOW
@seed(20240101)
@given(data=csv_bytes())
def test_read_estimates_csv_fuzz_slow(folder, data):
    _csv(folder, data)


@pytest.mark.slow
@SLOW
@seed(20240101)
@given(frame_and_kwargs=frames())
def test_from_frame_fuzz_slow(frame_and_kwargs):
    _frame(frame_and_kwargs)


def test_valid_inputs_load(folder):
    """The generators' valid cases really are valid (the fuzz tests exercise success too)."""
    est = read_estimates(_write(folder, "v.json", _serialise(_valid_document(p=2))))
    assert est.tasks == ["a", "b"] and est.n_params == 2
    pair = read_summaries([_write(folder, "a1.json", ONE_TASK),
                           _write(folder, "b1.json", ONE_TASK.replace(b'"a"', b'"b"'))])
    assert pair.tasks == ["a", "b"]
    csv = read_estimates(_write(folder, "v.csv", b"task,estimate,se\na,1,1\nb,2,1\n"))
    assert csv.n_tasks == 2


def test_found_by_fuzzing(tmp_path):
    """Inputs that once escaped as non-bayesfuse exceptions (kept as regressions)."""
    frame = pd.DataFrame({"task": ["a", "b"], "estimate": [0.1, 0.2], "se": [0.1, 0.1],
                          "z": [1.0, 2.0]})
    with pytest.raises(BayesfuseError, match="covariates must be distinct"):
        TaskEstimates.from_frame(frame, covariates=["z", "z"])
    with pytest.raises(BayesfuseError, match="Column names must be unique"):
        TaskEstimates.from_frame(frame.set_axis(["task", "estimate", "se", "se"], axis=1))
    huge = frame.astype(object)
    huge.loc[1, "estimate"] = 10**400
    with pytest.raises(BayesfuseError, match="Task 'b': estimate is not finite"):
        TaskEstimates.from_frame(huge)
    # an empty covariates object next to a task without covariates
    folder = tmp_path
    document = _valid_document()
    document["tasks"][0]["covariates"] = {}
    est = read_estimates(_write(folder, "empty-covariates.json", _serialise(document)))
    assert est.covariates is None
    document["tasks"][0]["covariates"] = {"z": 1.0}
    with pytest.raises(BayesfuseError, match="has covariates"):
        read_estimates(_write(folder, "one-covariate.json", _serialise(document)))
