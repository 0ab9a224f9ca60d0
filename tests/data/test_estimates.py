"""TaskEstimates: validation at construction, frames and files."""

from __future__ import annotations

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
