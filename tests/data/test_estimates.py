"""TaskEstimates: validation at construction, frames and files."""

from __future__ import annotations

import json
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

import bayesfuse as bf
from bayesfuse.data.estimates import TaskEstimates
from bayesfuse.errors import BayesfuseError, EstimatesError


def test_constructor_shapes_and_defaults():
    est = TaskEstimates(["a", "b", "c"], [0.1, 0.2, 0.3], [0.01, 0.04, 0.09], n=[10, 20, 30])
    assert est.estimates.shape == (3, 1) and est.covariances.shape == (3, 1, 1)
    np.testing.assert_allclose(est.se[:, 0], [0.1, 0.2, 0.3])
    assert est.params == ["theta"]
    vec = TaskEstimates([1.0, 2.0], np.zeros((2, 2)), np.stack([np.eye(2)] * 2),
                        params=["read", "math"])
    assert vec.tasks == ["1", "2"] and vec.n_params == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(tasks=["a"], estimates=[1.0], covariances=[1.0]), "at least 2 tasks"),
        (dict(tasks=["a", "a"], estimates=[1, 2], covariances=[1, 1]), "unique; duplicated: a"),
        (dict(tasks=["a", "b"], estimates=[1, np.nan], covariances=[1, 1]),
         "Task 'b': estimate is not finite"),
        (dict(tasks=["a", "b"], estimates=[1, 2], covariances=[1, 0]),
         "Task 'b': standard error / variance must be > 0"),
        (dict(tasks=["a", "b"], estimates=[1, 2], covariances=[1, np.inf]),
         "Task 'b': variance is not finite"),
        (dict(tasks=["a", "b"], estimates=[1, 2, 3], covariances=[1, 1]), r"shape \(K,\)"),
        (dict(tasks=["a", "b"], estimates=["x", "y"], covariances=[1, 1]), "must be numeric"),
        (dict(tasks=["a", "b"], estimates=np.zeros((2, 2)),
              covariances=np.array([[[1, 0.5], [0, 1]], [[1, 0], [0, 1]]])),
         "Task 'a': covariance is not symmetric"),
        (dict(tasks=["a", "b"], estimates=np.zeros((2, 2)),
              covariances=np.array([[[1, 2], [2, 1]], [[1, 0], [0, 1]]])),
         "Task 'a': covariance is not positive definite"),
        (dict(tasks=["a", "b"], estimates=np.zeros((2, 2)), covariances=np.ones((2, 3, 3))),
         r"must have shape \(K, p, p\)"),
        (dict(tasks=["a", "b"], estimates=[1, 2], covariances=[1, 1], params=["x", "y"]),
         "params must name each of the 1"),
        (dict(tasks=["a", "b"], estimates=[1, 2], covariances=[1, 1], n=[5, -1]),
         "Task 'b': n must be a positive"),
        (dict(tasks=["a", "b"], estimates=[1, 2], covariances=[1, 1],
              covariates=pd.DataFrame({"z": [1.0, None]}, index=["a", "b"])),
         "Task 'b': covariate 'z' is missing"),
        (dict(tasks=["a", "b"], estimates=[1, 2], covariances=[1, 1], covariates=[[1], [2], [3]]),
         r"covariates must have shape \(K, q\)"),
    ],
)
def test_constructor_errors_name_task_and_problem(kwargs, message):
    with pytest.raises(EstimatesError, match=message):
        TaskEstimates(**kwargs)


def test_errors_are_bayesfuse_errors():
    assert issubclass(EstimatesError, BayesfuseError)


def test_from_frame_and_errors():
    df = pd.DataFrame({"site": ["x", "y", "z"], "est": [0.1, 0.5, 0.2], "s": [0.1, 0.2, 0.1],
                       "size": [100, 50, 80], "latitude": [40.0, 30.0, 35.0]})
    est = TaskEstimates.from_frame(df, task="site", estimate="est", se="s", n="size",
                                   covariates=["latitude"])
    assert est.tasks == ["x", "y", "z"]
    np.testing.assert_allclose(est.covariates["latitude"], [40, 30, 35])
    var = TaskEstimates.from_frame(df.assign(v=df["s"] ** 2), task="site", estimate="est",
                                   se=None, variance="v")
    np.testing.assert_allclose(var.covariances, est.covariances)
    with pytest.raises(EstimatesError, match=r"Missing column\(s\) \['se'\]"):
        TaskEstimates.from_frame(df, task="site", estimate="est")
    with pytest.raises(EstimatesError, match="Column 'est' must be numeric; task 'y' has 'big'"):
        TaskEstimates.from_frame(df.assign(est=["0.1", "big", "0.2"]), task="site",
                                 estimate="est", se="s")
    with pytest.raises(EstimatesError, match="Task 'z': standard error must be a finite"):
        TaskEstimates.from_frame(df.assign(s=[0.1, 0.2, -1.0]), task="site", estimate="est",
                                 se="s")
    with pytest.raises(EstimatesError, match="missing value for task 'y'"):
        TaskEstimates.from_frame(df.assign(s=[0.1, None, 0.1]), task="site", estimate="est",
                                 se="s")


def test_csv_round_trip_scalar_and_vector(tmp_path):
    est = TaskEstimates(["a", "b", "c"], [0.1, 0.2, 0.3], [0.01, 0.04, 0.09], n=[10, 20, 30],
                        covariates=pd.DataFrame({"z": [1.0, 2.0, 3.0]}, index=["a", "b", "c"]))
    back = bf.read_estimates(est.to_csv(tmp_path / "e.csv"))
    np.testing.assert_array_equal(back.estimates, est.estimates)
    np.testing.assert_allclose(back.covariances, est.covariances, rtol=1e-14)  # via se
    np.testing.assert_array_equal(back.n, est.n)
    pd.testing.assert_frame_equal(back.covariates, est.covariates)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 3, 3))
    cov = a @ np.swapaxes(a, 1, 2) + np.eye(3)
    vec = TaskEstimates(list("wxyz"), rng.normal(size=(4, 3)), cov, params=["p", "q", "r"])
    back = bf.read_estimates(vec.to_csv(tmp_path / "v.csv"))
    assert back.params == ["p", "q", "r"]
    np.testing.assert_array_equal(back.covariances, vec.covariances)
    np.testing.assert_array_equal(back.estimates, vec.estimates)


def test_read_estimates_file_errors(tmp_path):
    with pytest.raises(EstimatesError, match="not found"):
        bf.read_estimates(tmp_path / "missing.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(EstimatesError, match="empty"):
        bf.read_estimates(empty)
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("task,value\na,1\nb,2\n")
    with pytest.raises(EstimatesError, match="needs columns 'task', 'estimate' and 'se'"):
        bf.read_estimates(nocol)
    dup = tmp_path / "dup.csv"
    dup.write_text("task,estimate,se\na,1,1\na,2,1\n")
    with pytest.raises(EstimatesError, match="dup.csv: Task ids must be unique"):
        bf.read_estimates(dup)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("task,param,estimate,se\na,x,1,1\na,y,1,1\nb,x,1,1\n")
    with pytest.raises(EstimatesError, match="Task 'b' has 1 rows"):
        bf.read_estimates(ragged)


def test_merge_several_files(tmp_path):
    a = TaskEstimates(["a", "b"], [1.0, 2.0], [1.0, 1.0])
    b = TaskEstimates(["c", "d"], [3.0, 4.0], [1.0, 1.0])
    merged = bf.read_estimates([a.to_csv(tmp_path / "a.csv"), b.to_csv(tmp_path / "b.csv")])
    assert merged.tasks == ["a", "b", "c", "d"]
    with pytest.raises(EstimatesError, match="appears in both"):
        bf.read_estimates([a.to_csv(tmp_path / "a.csv"), a.to_csv(tmp_path / "a2.csv")])


def test_select_drop_inflate():
    est = TaskEstimates(["a", "b", "c"], [0.1, 0.2, 0.3], [0.01, 0.04, 0.09])
    assert est.drop(["b"]).tasks == ["a", "c"]
    assert est.select(["c", "a"]).estimates[0, 0] == 0.3
    np.testing.assert_allclose(est.inflate(2.0).covariances, 2 * est.covariances)
    with pytest.raises(EstimatesError, match="Unknown task ids: q"):
        est.select(["q"])


# ---------------------------------------------------------------------- inputs as they come
Z975 = NormalDist().inv_cdf(0.975)
Z95 = NormalDist().inv_cdf(0.95)


def test_se_from_confidence_intervals_95_and_90():
    df = pd.DataFrame({"task": ["a", "b", "c"], "estimate": [1.0, -0.5, 0.2],
                       "lo": [1.0 - Z975 * 0.3, -0.5 - Z975 * 0.1, 0.2 - Z95 * 0.25],
                       "hi": [1.0 + Z975 * 0.3, -0.5 + Z975 * 0.1, 0.2 + Z95 * 0.25],
                       "lev": [0.95, 0.95, 0.90]})
    est = TaskEstimates.from_frame(df, ci_low="lo", ci_high="hi", level="lev")
    np.testing.assert_allclose(est.se[:, 0], [0.3, 0.1, 0.25], rtol=1e-12)
    assert est.meta["se_from"] == {"a": {"theta": "95% CI"}, "b": {"theta": "95% CI"},
                                   "c": {"theta": "90% CI"}}
    assert list(est.to_frame()["se_from"]) == ["95% CI", "95% CI", "90% CI"]
    # the level as an argument (default 0.95); the textbook 1.96 gives the se to 1e-4
    same = TaskEstimates.from_frame(df.iloc[:2], ci_low="lo", ci_high="hi")
    np.testing.assert_allclose(same.se[:, 0], [0.3, 0.1], rtol=1e-12)
    ninety = TaskEstimates.from_frame(df.iloc[1:], ci_low="lo", ci_high="hi", level=0.9)
    np.testing.assert_allclose(ninety.se[:, 0], [0.1 * Z975 / Z95, 0.25], rtol=1e-12)
    assert ninety.meta["se_from"]["b"] == {"theta": "90% CI"}
    rounded = pd.DataFrame({"task": ["a", "b"], "estimate": [1.0, 2.0],
                            "ci_low": [1 - 1.96 * 0.5, 2 - 1.96],
                            "ci_high": [1 + 1.96 * 0.5, 2 + 1.96]})
    np.testing.assert_allclose(TaskEstimates.from_frame(rounded, ci_low="ci_low",
                                                        ci_high="ci_high").se[:, 0],
                               [0.5, 1.0], atol=1e-4)


def test_se_from_p_values():
    df = pd.DataFrame({"task": ["a", "b"], "estimate": [Z975 * 0.5, -Z975 * 2.0],
                       "p": [0.05, 0.05]})
    est = TaskEstimates.from_frame(df, p_value="p")
    np.testing.assert_allclose(est.se[:, 0], [0.5, 2.0], rtol=1e-12)
    assert est.meta["se_from"] == {"a": {"theta": "p-value"}, "b": {"theta": "p-value"}}
    assert any("from the p-value for 2 estimate(s)" in note for note in est.meta["notes"])
    textbook = TaskEstimates.from_frame(df.assign(estimate=[1.96 * 0.5, 1.0]), p_value="p")
    assert abs(textbook.se[0, 0] - 0.5) < 2e-5  # 1.96 is z to 4 digits
    tiny = TaskEstimates.from_frame(df.assign(p=[1e-300, 0.5]), p_value="p")
    assert np.isfinite(tiny.se).all() and (tiny.se > 0).all()


def test_se_sources_mix_row_by_row_and_se_wins():
    df = pd.DataFrame({"task": ["a", "b", "c"], "estimate": [1.0, 2.0, 3.0],
                       "se": [0.5, None, None], "ci_low": [0.0, 2 - Z975, None],
                       "ci_high": [2.0, 2 + Z975, None], "p_value": [None, None, 0.05]})
    est = TaskEstimates.from_frame(df, ci_low="ci_low", ci_high="ci_high", p_value="p_value")
    np.testing.assert_allclose(est.se[:, 0], [0.5, 1.0, 3 / Z975], rtol=1e-12)
    assert est.meta["se_from"] == {"b": {"theta": "95% CI"}, "c": {"theta": "p-value"}}
    assert list(est.to_frame()["se_from"]) == ["", "95% CI", "p-value"]
    with pytest.raises(EstimatesError, match="Task 'c' has no standard error: se, "
                                             "ci_low/ci_high are all missing"):
        TaskEstimates.from_frame(df, ci_low="ci_low", ci_high="ci_high")


def test_long_format_intervals_per_task_and_param():
    df = pd.DataFrame({"task": ["a", "a", "b", "b"], "param": ["x", "y", "x", "y"],
                       "estimate": [0.0, 1.0, 2.0, 3.0],
                       "ci_low": [-Z975, 1 - 2 * Z975, 2 - Z975, 3 - Z975 / 2],
                       "ci_high": [Z975, 1 + 2 * Z975, 2 + Z975, 3 + Z975 / 2]})
    est = TaskEstimates.from_frame(df, param="param", ci_low="ci_low", ci_high="ci_high")
    np.testing.assert_allclose(est.se, [[1.0, 2.0], [1.0, 0.5]], rtol=1e-12)
    assert est.meta["se_from"]["b"] == {"x": "95% CI", "y": "95% CI"}
    assert list(est.to_frame()["se_from"]) == ["95% CI"] * 4


BASE = pd.DataFrame({"task": ["a", "b"], "estimate": [1.0, 2.0], "lo": [0.5, 1.0],
                     "hi": [1.5, 3.0], "p": [0.05, 0.01]})


@pytest.mark.parametrize(
    ("change", "kwargs", "message"),
    [
        ({"lo": [0.5, 2.5], "hi": [1.5, 3.5]}, {},
         r"Task 'b': the estimate 2 lies outside its confidence interval \[2.5, 3.5\]"),
        ({"lo": [0.5, 1.8], "hi": [1.5, 3.0]}, {},
         r"Task 'b': the confidence interval \[1.8, 3\] is not symmetric about the estimate 2 "
         r"\(half-widths 0.2 and 1\).*log"),
        ({"lo": [1.5, 1.0], "hi": [0.5, 3.0]}, {}, r"Task 'a': lo \(1.5\) must be below hi"),
        ({"lo": [0.5, None]}, {}, "Task 'b': give both 'lo' and 'hi'"),
        ({}, {"level": 95}, r"level must be a number in \(0, 1\)"),
        ({"lev": [0.95, 95.0]}, {"level": "lev"},
         r"Task 'b': the interval's level must be in \(0, 1\)"),
        ({"lo": [0.5, "n/a"]}, {}, "Column 'lo' must be numeric; task 'b' has 'n/a'"),
    ],
)
def test_interval_refusals(change, kwargs, message):
    with pytest.raises(BayesfuseError, match=message):
        TaskEstimates.from_frame(BASE.assign(**change), ci_low="lo", ci_high="hi", **kwargs)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"p": [0.05, 0.0]}, r"Task 'b': a two-sided p-value must be in \(0, 1\); got 0 "
                             r"\(a p-value of 0 gives no standard error"),
        ({"p": [1.0, 0.05]}, r"Task 'a': a two-sided p-value must be in \(0, 1\); got 1\."),
        ({"p": [1.5, 0.05]}, r"Task 'a': a two-sided p-value must be in \(0, 1\); got 1.5"),
        ({"estimate": [0.0, 2.0]}, "Task 'a': an estimate of 0 with a p-value gives no "
                                   "standard error"),
    ],
)
def test_p_value_refusals(change, message):
    with pytest.raises(EstimatesError, match=message):
        TaskEstimates.from_frame(BASE.assign(**change), p_value="p")


def test_csv_intervals_p_values_and_provenance_round_trip(tmp_path):
    path = tmp_path / "reported.csv"
    path.write_text("task,estimate,se,ci_low,ci_high,level,p_value\n"
                    f"a,1,0.5,,,,\nb,2,,{2 - Z95},{2 + Z95},0.9,\nc,{Z975},,,,,0.05\n")
    est = bf.read_estimates(path)
    np.testing.assert_allclose(est.se[:, 0], [0.5, 1.0, 1.0], rtol=1e-12)
    assert est.covariates is None  # 'level' is the interval's, not a covariate
    assert est.meta["se_from"] == {"b": {"theta": "90% CI"}, "c": {"theta": "p-value"}}
    back = bf.read_estimates(est.to_csv(tmp_path / "written.csv"))
    assert back.meta["se_from"] == est.meta["se_from"] and back.covariates is None
    np.testing.assert_array_equal(back.se, est.se)
    default = tmp_path / "default-level.csv"
    default.write_text(f"task,estimate,ci_low,ci_high\na,0,{-Z975},{Z975}\nb,1,0,2\n")
    assert bf.read_estimates(default).se[0, 0] == pytest.approx(1.0, rel=1e-12)
    one_bound = tmp_path / "one-bound.csv"
    one_bound.write_text("task,estimate,ci_low\na,0,-1\nb,1,0\n")
    with pytest.raises(EstimatesError, match="needs both columns 'ci_low' and 'ci_high'"):
        bf.read_estimates(one_bound)


def test_csv_text_column_is_ignored_with_a_note_numeric_ones_stay_covariates(tmp_path):
    path = tmp_path / "regions.csv"
    path.write_text("task,estimate,se,region,notes,latitude\n"
                    "a,0.1,0.1,north,,40\nb,0.2,0.1,south,,35\nc,0.3,0.1,north,,30\n")
    est = bf.read_estimates(path)
    assert list(est.covariates.columns) == ["latitude"]
    assert est.meta["notes"] == ["ignored column(s) 'region', 'notes': they hold no numbers, "
                                 "so they are not task covariates"]
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("task,estimate,se,z\na,0.1,0.1,1\nb,0.2,0.1,big\n")
    with pytest.raises(EstimatesError, match="Column 'z' must be numeric; task 'b' has 'big'"):
        bf.read_estimates(mixed)
    df = pd.DataFrame({"task": ["a", "b"], "estimate": [0.1, 0.2], "se": [0.1, 0.1],
                       "region": ["north", "south"]})
    assert TaskEstimates.from_frame(df).covariates is None  # unnamed columns: ignored
    with pytest.raises(EstimatesError, match="Column 'region' must be numeric; task 'a'"):
        TaskEstimates.from_frame(df, covariates=["region"])


CONTROL = r"Task id 'a\\nb' contains control characters \(a newline, tab or escape\); task " \
          r"ids must be printable text\."


def test_control_characters_in_task_ids_refused_by_every_reader(tmp_path):
    with pytest.raises(EstimatesError, match=CONTROL):
        TaskEstimates(["a\nb", "c"], [1.0, 2.0], [1.0, 1.0])
    frame = pd.DataFrame({"task": ["a\nb", "c"], "estimate": [1.0, 2.0], "se": [1.0, 1.0]})
    with pytest.raises(EstimatesError, match=CONTROL):
        TaskEstimates.from_frame(frame)
    with pytest.raises(EstimatesError, match=CONTROL):
        TaskEstimates.from_frame(frame.assign(param="x"), param="param")
    csv = tmp_path / "ids.csv"
    csv.write_text('task,estimate,se\n"a\nb",1,1\nc,2,1\n')
    with pytest.raises(EstimatesError, match="ids.csv: " + CONTROL):
        bf.read_estimates(csv)
    document = {"schema": "bayesfuse.summary", "version": 1, "tasks": [
        {"task": name, "params": ["theta"], "estimate": [0.1], "covariance": [[0.01]]}
        for name in ("a\nb", "c")]}
    summary = tmp_path / "ids.json"
    summary.write_text(json.dumps(document))
    with pytest.raises(EstimatesError, match="ids.json: task 1: " + CONTROL):
        bf.read_estimates(summary)


def test_cli_fuse_notes_converted_se_and_ignored_columns(tmp_path, capsys):
    from bayesfuse.cli import main

    path = tmp_path / "reported.csv"
    path.write_text("task,estimate,se,p_value,region\n"
                    "a,0.3,0.2,,north\nb,0.5,,0.04,south\nc,-0.1,0.3,,north\n")
    fit = tmp_path / "fit.nc"
    assert main(["fuse", str(path), "-o", str(fit), "--chains", "1", "--draws", "50",
                 "--warmup", "50"]) == 0
    err = capsys.readouterr().err
    assert "note: standard error from the p-value for 1 estimate(s) (task b)" in err
    assert "note: ignored column(s) 'region'" in err
    assert bf.load_fit(fit).estimates.meta["se_from"] == {"b": {"theta": "p-value"}}


def _blp_site(path, task, centre):
    document = {"schema": "bayesfuse.summary", "version": 1, "task": task, "estimand": "blp",
                "params": ["intercept", "age"], "estimate": [0.2, 0.01],
                "covariance": [[0.01, 0.001], [0.001, 0.0004]]}
    if centre is not None:
        document["blp_center"] = centre
    path.write_text(json.dumps(document))
    return path


def test_blp_sites_must_agree_on_the_centres(tmp_path):
    """Site summaries record where the effect modifiers are centred; files that differ are
    refused together (their intercepts are effects at different points)."""
    a = _blp_site(tmp_path / "a.json", "a", {"age": 50})
    b = _blp_site(tmp_path / "b.json", "b", {"age": 50.0})
    old = _blp_site(tmp_path / "old.json", "c", None)  # written before the field existed
    est = bf.read_estimates([a, b, old])
    assert est.meta["blp_center"] == {"age": 50.0}
    other = _blp_site(tmp_path / "other.json", "d", {"age": 40})
    with pytest.raises(EstimatesError, match=r"other.json: the BLP effect modifiers are "
                                             r"centred at \{'age': 40.0\}, but .*a.json"):
        bf.read_estimates([a, b, other])
    for bad, message in (({"age": "fifty"}, "must be a finite number"),
                         ({"age": True}, "must be a finite number"),
                         ({}, "1 to 50 effect modifiers")):
        with pytest.raises(EstimatesError, match=message):
            bf.read_estimates([_blp_site(tmp_path / "bad.json", "e", bad)])
