"""`bayesfuse site` / `bf.site_summary`: summaries that hold no row, small-cell refusal,
differential privacy, byte-identical files, the JSON schema, and the CLI."""

from __future__ import annotations

import json
import re
from importlib import resources

import numpy as np
import pandas as pd
import pytest

import bayesfuse as bf
from bayesfuse.cli import main
from bayesfuse.data.summary import PROVENANCE_FIELDS, TASK_FIELDS, read_summary_tasks
from bayesfuse.errors import BayesfuseError, DataError
from bayesfuse.stage1.site import SiteError, resolve_created_at

STAMP = "2024-01-01T00:00:00Z"
FAST = dict(outcome="y", treatment="d", covariates=["x1", "x2"], learner="linear", folds=3,
            n_jobs=1, created_at=STAMP)


def _rows(n=80, seed=0, effect=1.0, tasks=("a",), n_treated=None):
    """Individual-level rows with continuous values of many digits (easy to spot)."""
    rng = np.random.default_rng(seed)
    frames = []
    for t in tasks:
        x = rng.standard_normal((n, 2))
        d = np.zeros(n, dtype=int)
        d[: (n // 2 if n_treated is None else n_treated)] = 1
        rng.shuffle(d)
        y = effect * d + x @ [0.5, -0.3] + rng.standard_normal(n)
        frames.append(pd.DataFrame({"site": t, "y": y, "d": d, "x1": x[:, 0], "x2": x[:, 1]}))
    return pd.concat(frames, ignore_index=True)


def _numbers(value):
    """Every number and string in a parsed JSON document."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)
    else:
        yield value


def test_site_summary_fields_and_round_trip(tmp_path):
    rows = _rows()
    doc = bf.site_summary(rows, task_id="hospital-a", output=tmp_path / "a.json", **FAST)
    assert doc["task"] == "hospital-a" and doc["params"] == ["theta"]
    assert doc["n"] == 80 and doc["n_treated"] == 40 and doc["n_control"] == 40
    assert doc["estimand"] == "ate" and doc["folds"] == 3 and doc["seed"] == 0
    assert doc["created_at"] == STAMP and doc["min_n"] == 20
    assert {"bayesfuse", "doubleml", "scikit-learn", "numpy"} <= set(doc["versions"])
    assert set(doc["learners"]) == {"outcome", "propensity"}
    assert "dp" not in doc and "dp_noise_variance" not in doc
    # the file reads back to the same numbers (exactly: JSON floats round-trip)
    on_disk = json.loads((tmp_path / "a.json").read_text())
    assert on_disk == doc
    task = read_summary_tasks(tmp_path / "a.json")[0]
    assert task["estimate"] == doc["estimate"] and task["n_treated"] == 40
    # the same task's row of a pooled estimate_tasks run
    pooled = bf.estimate_tasks(pd.concat([rows.assign(site="hospital-a"),
                                          _rows(seed=1).assign(site="b")]),
                               task="site", outcome="y", treatment="d",
                               covariates=["x1", "x2"], learner="linear", folds=3, n_jobs=1)
    assert pooled.estimates[0, 0] == doc["estimate"][0]
    assert pooled.covariances[0, 0, 0] == doc["covariance"][0][0]


def test_summary_holds_no_row_level_value(tmp_path):
    rows = _rows(seed=3)
    doc = bf.site_summary(rows, task_id="s", output=tmp_path / "s.json", **FAST)
    text = (tmp_path / "s.json").read_text()
    row_values = set(rows[["y", "x1", "x2"]].to_numpy().ravel().tolist())
    numbers = [v for v in _numbers(doc) if isinstance(v, float)]
    assert numbers and not row_values & set(numbers)
    # nor any number close to one (rounded), nor a row value's digits in the text
    values = np.array(sorted(row_values))
    for number in numbers:
        assert not np.isclose(values, number, rtol=1e-9, atol=0).any()
    for value in values[:50]:
        assert repr(float(value)) not in text
    # only the documented fields
    allowed = {"schema", "version", *TASK_FIELDS["required"], *TASK_FIELDS["optional"],
               *PROVENANCE_FIELDS}
    assert set(doc) <= allowed
    # a size that cannot hold the 240 row values
    assert len(text) < 3000


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(n=19), r"Task 's' has n = 19 rows, below min_n = 20"),
    (dict(n=60, n_treated=15), r"Task 's' has 15 treated unit\(s\), below min_n = 20"),
    (dict(n=60, n_treated=45), r"Task 's' has 15 control unit\(s\), below min_n = 20"),
])
def test_small_cells_are_refused_and_nothing_is_written(tmp_path, kwargs, message):
    out = tmp_path / "s.json"
    with pytest.raises(SiteError, match=message) as info:
        bf.site_summary(_rows(**kwargs), task_id="s", output=out, **FAST)
    assert isinstance(info.value, BayesfuseError)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_min_n_is_configurable():
    doc = bf.site_summary(_rows(n=60, n_treated=15), task_id="s", min_n=10, **FAST)
    assert doc["n_treated"] == 15 and doc["min_n"] == 10


def test_byte_identical_with_fixed_time_and_source_date_epoch(tmp_path, monkeypatch):
    rows = _rows(seed=5)
    a = tmp_path / "a.json"
    b = tmp_path / "b.json"
    bf.site_summary(rows, task_id="s", output=a, **FAST)
    bf.site_summary(rows.copy(), task_id="s", output=b, **FAST)
    assert a.read_bytes() == b.read_bytes()
    # SOURCE_DATE_EPOCH fixes the time stamp when created_at is not given
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1704067200")
    assert resolve_created_at() == STAMP
    c = tmp_path / "c.json"
    bf.site_summary(rows, task_id="s", output=c, **{**FAST, "created_at": None})
    assert c.read_bytes() == a.read_bytes()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(DataError, match="SOURCE_DATE_EPOCH must be an integer"):
        resolve_created_at()
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", resolve_created_at())
    # a different seed gives different bytes (the seed matters and is recorded)
    d = tmp_path / "d.json"
    bf.site_summary(rows, task_id="s", output=d, seed=1, **FAST)
    assert d.read_bytes() != a.read_bytes() and json.loads(d.read_text())["seed"] == 1


def test_overwrite_needs_force(tmp_path):
    out = tmp_path / "s.json"
    out.write_text("keep me")
    with pytest.raises(BayesfuseError, match="exists"):
        bf.site_summary(_rows(), task_id="s", output=out, **FAST)
    assert out.read_text() == "keep me"
    bf.site_summary(_rows(), task_id="s", output=out, force=True, **FAST)
    assert json.loads(out.read_text())["task"] == "s"


def test_differential_privacy_fields_and_read_back(tmp_path):
    rows = _rows(seed=7)
    plain = bf.site_summary(rows, task_id="s", **FAST)
    dp = dict(dp_epsilon=1.0, dp_delta=1e-5, dp_sensitivity=0.05, dp_seed=11)
    one = bf.site_summary(rows, task_id="s", output=tmp_path / "one.json", **FAST, **dp)
    two = bf.site_summary(rows, task_id="s", output=tmp_path / "two.json", **FAST, **dp)
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()
    from bayesfuse.stage1.dp import analytic_sigma

    sigma2 = analytic_sigma(1.0, 1e-5, 0.05) ** 2
    assert one["dp"] == {"mechanism": "analytic-gaussian", "epsilon": 1.0, "delta": 1e-5,
                         "sensitivity": 0.05}
    assert one["dp_noise_variance"] == [pytest.approx(sigma2)]
    assert "dp_seed" not in json.dumps(one)  # the noise seed is never written
    assert one["estimate"] != plain["estimate"] and one["covariance"] == plain["covariance"]
    assert one == two
    # a different dp seed, different noise; no dp seed: fresh entropy each time
    other = bf.site_summary(rows, task_id="s", **FAST, **{**dp, "dp_seed": 12})
    assert other["estimate"] != one["estimate"]
    fresh = [bf.site_summary(rows, task_id="s", **FAST, **{**dp, "dp_seed": None})["estimate"]
             for _ in range(2)]
    assert fresh[0] != fresh[1]
    # the reader adds the noise variance to V
    bf.site_summary(_rows(seed=8), task_id="t", output=tmp_path / "t.json", **FAST, **dp)
    est = bf.read_estimates([tmp_path / "one.json", tmp_path / "t.json"])
    assert est.covariances[0, 0, 0] == pytest.approx(plain["covariance"][0][0] + sigma2)
    with pytest.raises(BayesfuseError, match="sensitivity .* is missing"):
        bf.site_summary(rows, task_id="s", dp_epsilon=1.0, dp_delta=1e-5, **FAST)


def test_several_tasks_in_one_site_and_task_covariates(tmp_path):
    rows = _rows(tasks=("north", "south"), seed=2)
    rows["urban"] = np.where(rows["site"] == "north", 1.0, 0.0)
    doc = bf.site_summary(rows, task="site", task_covariates=["urban"],
                          output=tmp_path / "two.json", **FAST)
    assert [t["task"] for t in doc["tasks"]] == ["north", "south"]
    assert [t["covariates"] for t in doc["tasks"]] == [{"urban": 1.0}, {"urban": 0.0}]
    est = bf.read_estimates([tmp_path / "two.json"])
    assert est.tasks == ["north", "south"] and list(est.covariates["urban"]) == [1.0, 0.0]
    # a covariate that varies within a task would leak rows: refused
    with pytest.raises(DataError, match="varies within task"):
        bf.site_summary(rows, task="site", task_covariates=["x1"], **FAST)
    with pytest.raises(DataError, match="mapping needs a site with one task"):
        bf.site_summary(rows, task="site", task_covariates={"urban": 1}, **FAST)
    one = bf.site_summary(_rows(), task_id="a", task_covariates={"urban": 1}, **FAST)
    assert one["covariates"] == {"urban": 1.0}
    with pytest.raises(DataError, match="Give either task="):
        bf.site_summary(rows, **FAST)


def test_written_summaries_follow_the_json_schema(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    text = (resources.files("bayesfuse.data") / "schemas" / "summary-v1.json").read_text()
    schema = json.loads(text)
    validator = jsonschema.Draft202012Validator(schema)
    rows = _rows(tasks=("n", "s"), seed=4)
    docs = [
        bf.site_summary(_rows(), task_id="a", **FAST),
        bf.site_summary(_rows(), task_id="a", dp_epsilon=2, dp_delta=1e-6, dp_sensitivity=0.1,
                        dp_seed=0, **FAST),
        bf.site_summary(rows, task="site", **FAST),
    ]
    for doc in docs:
        assert list(validator.iter_errors(doc)) == []
    # the schema and the reader agree on the allowed fields
    task_props = set(schema["$defs"]["taskFields"]["properties"])
    assert task_props == set(TASK_FIELDS["required"]) | set(TASK_FIELDS["optional"])
    assert set(schema["$defs"]["taskFields"]["required"]) == set(TASK_FIELDS["required"])
    assert set(schema["$defs"]["provenance"]["properties"]) == set(PROVENANCE_FIELDS)
    # and the schema refuses what the reader refuses
    assert list(validator.iter_errors({**docs[0], "rows": [[1.0, 2.0]]}))
    assert list(validator.iter_errors({**docs[0], "version": 2}))


def _one_error_line(capsys):
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and "Traceback" not in captured.err
    return lines[0]


def test_cli_site_then_fuse(tmp_path, capsys):
    for seed, name in ((0, "a"), (1, "b"), (2, "c")):
        _rows(seed=seed).to_csv(tmp_path / f"{name}.csv", index=False)
        code = main(["site", str(tmp_path / f"{name}.csv"), "--task-id", f"site-{name}",
                     "--outcome", "y", "--treatment", "d", "--covariates", "x1,x2",
                     "--learner", "linear", "--folds", "3", "--n-jobs", "1",
                     "--created-at", STAMP, "--task-covariate", f"size={seed}",
                     "-o", str(tmp_path / f"{name}.json")])
        assert code == 0, capsys.readouterr().err
    assert "holds no row" in capsys.readouterr().out
    doc = json.loads((tmp_path / "a.json").read_text())
    assert doc["task"] == "site-a" and doc["covariates"] == {"size": 0.0}
    # rerun without --force: refused, file untouched
    before = (tmp_path / "a.json").read_bytes()
    assert main(["site", str(tmp_path / "a.csv"), "--task-id", "site-a", "--outcome", "y",
                 "--treatment", "d", "-o", str(tmp_path / "a.json")]) == 2
    assert "exists; add --force" in _one_error_line(capsys)
    assert (tmp_path / "a.json").read_bytes() == before
    # small cells on the command line: exit 2, one line
    _rows(n=30, n_treated=10).to_csv(tmp_path / "small.csv", index=False)
    assert main(["site", str(tmp_path / "small.csv"), "--task-id", "x", "--outcome", "y",
                 "--treatment", "d", "--covariates", "x1,x2",
                 "-o", str(tmp_path / "small.json")]) == 2
    assert "small-cell protection" in _one_error_line(capsys)
    assert not (tmp_path / "small.json").exists()
    # the coordinator fuses the three files
    files = [str(tmp_path / f"{n}.json") for n in "abc"]
    code = main(["fuse", *files, "-o", str(tmp_path / "fit.nc"), "--chains", "1", "--draws",
                 "100", "--warmup", "100", "--summary", str(tmp_path / "fused.csv")])
    assert code == 0, capsys.readouterr().err
    fused = pd.read_csv(tmp_path / "fused.csv")
    assert list(fused["task"]) == ["site-a", "site-b", "site-c"]
    np.testing.assert_allclose(fused["estimate"],
                               [json.loads((tmp_path / f"{n}.json").read_text())["estimate"][0]
                                for n in "abc"])


def test_plr_and_vector_theta_sites(tmp_path):
    rows = _rows(seed=9)
    rows["dose"] = rows["d"] + np.random.default_rng(0).uniform(0, 1, len(rows))
    rows["y2"] = rows["y"] * 0.5 + np.random.default_rng(1).standard_normal(len(rows))
    plr = bf.site_summary(rows, task_id="s", **{**FAST, "treatment": "dose"}, estimand="plr")
    assert plr["estimand"] == "plr" and "n_treated" not in plr and plr["n"] == 80
    vec = bf.site_summary(rows, task_id="s", **{**FAST, "outcome": ["y", "y2"]},
                          output=tmp_path / "s.json")
    assert vec["params"] == ["y", "y2"]
    cov = np.array(vec["covariance"])
    assert cov.shape == (2, 2) and cov[0, 1] == cov[1, 0] != 0
    assert np.linalg.eigvalsh(cov).min() > 0
    # a task that stage 1 cannot estimate (collinear outcomes): refused, nothing written
    with pytest.raises(SiteError, match="could not be estimated .*collinear"):
        bf.site_summary(_rows(seed=10).assign(y2=lambda f: f["y"] + 1.0), task_id="t",
                        **{**FAST, "outcome": ["y", "y2"]}, output=tmp_path / "t.json")
    assert not (tmp_path / "t.json").exists()
    other = bf.site_summary(rows.assign(y2=rows["y2"] * 2), task_id="t",
                            **{**FAST, "outcome": ["y", "y2"]}, output=tmp_path / "t.json")
    est = bf.read_estimates([tmp_path / "s.json", tmp_path / "t.json"])
    assert est.params == ["y", "y2"] and est.covariances.shape == (2, 2, 2)
    assert other["task"] == "t"
