"""Stage 1: DoubleML per task, seeding, guards and input validation."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import bayesfuse as bf
from bayesfuse.errors import DataError, TaskWarning


def simulate(n_tasks=5, n=400, effect=1.0, seed=0):
    """Confounded treatment: logistic propensity in x1; outcome nonlinear in x."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n_tasks):
        x = rng.normal(size=(n, 3))
        p = 1 / (1 + np.exp(-(0.8 * x[:, 0] - 0.4 * x[:, 1])))
        d = rng.binomial(1, p)
        y = effect * d + x[:, 0] + 0.5 * np.sin(x[:, 1]) + 0.3 * x[:, 2] ** 2 \
            + rng.normal(size=n)
        frames.append(pd.DataFrame({"site": f"s{k}", "y": y, "d": d, "x1": x[:, 0],
                                    "x2": x[:, 1], "x3": x[:, 2]}))
    return pd.concat(frames, ignore_index=True)


COV = ["x1", "x2", "x3"]


@pytest.mark.parametrize("estimand", ["ate", "plr"])
def test_recovers_known_effect(estimand):
    df = simulate()
    est = bf.estimate_tasks(df, task="site", outcome="y", treatment="d", covariates=COV,
                            estimand=estimand, learner="linear", folds=3, n_jobs=1, seed=1)
    assert est.tasks == [f"s{k}" for k in range(5)] and est.estimand == estimand
    z = (est.estimates[:, 0] - 1.0) / est.se[:, 0]
    assert np.all(np.abs(z) < 4)
    w = 1 / est.se[:, 0] ** 2
    pooled = (w * est.estimates[:, 0]).sum() / w.sum()
    assert abs(pooled - 1.0) < 4 / np.sqrt(w.sum())
    np.testing.assert_array_equal(est.n, 400)
    assert est.meta["folds"] == 3 and est.meta["learner"] == "linear"


def test_variance_is_doubleml_score_variance():
    import doubleml as dml

    df = simulate(n_tasks=2, seed=3)
    est = bf.estimate_tasks(df, task="site", outcome="y", treatment="d", covariates=COV,
                            learner="linear", folds=3, n_jobs=1, seed=4)
    rows = df[df["site"] == "s0"].drop(columns="site").reset_index(drop=True)
    from bayesfuse.learners import resolve_learner
    from bayesfuse.stage1 import _task_seed

    seed = _task_seed(4, "s0")
    np.random.seed(seed)  # noqa: NPY002 - as stage 1 does
    model = dml.DoubleMLIRM(dml.DoubleMLData(rows, "y", "d", COV),
                            ml_g=resolve_learner("linear", "regressor", seed),
                            ml_m=resolve_learner("linear", "classifier", seed), n_folds=3)
    model.fit()
    psi, j = model.psi[:, 0, 0], model.psi_deriv[:, 0, 0]
    # DoubleML's variance from its score: mean(psi^2) / mean(J)^2 / n
    var = np.mean(psi**2) / np.mean(j) ** 2 / len(psi)
    assert est.estimates[0, 0] == pytest.approx(model.coef[0], rel=1e-12)
    assert est.covariances[0, 0, 0] == pytest.approx(var, rel=1e-10)


@pytest.mark.filterwarnings("ignore::bayesfuse.errors.TaskWarning")
def test_same_results_whatever_n_jobs_and_task_order():
    df = simulate(n_tasks=4, n=200, seed=2)
    kwargs = dict(task="site", outcome="y", treatment="d", covariates=COV, learner="gbm",
                  folds=3, seed=9)
    a = bf.estimate_tasks(df, n_jobs=1, **kwargs)
    reordered = pd.concat([df[df["site"] == s] for s in ["s3", "s1", "s0", "s2"]])
    b = bf.estimate_tasks(reordered, n_jobs=2, **kwargs)
    b = b.select(a.tasks)
    np.testing.assert_allclose(a.estimates, b.estimates, rtol=1e-9)
    np.testing.assert_allclose(a.covariances, b.covariances, rtol=1e-9)


def test_small_arm_excluded_and_reported():
    df = simulate(n_tasks=4, n=200, seed=5)
    tiny = df["site"] == "s2"
    treated = df.index[tiny & (df["d"] == 1)]
    df = df.drop(treated[3:])  # s2 keeps 3 treated units
    progress = []
    with pytest.warns(TaskWarning, match="excluded"):
        est = bf.estimate_tasks(df, task="site", outcome="y", treatment="d", covariates=COV,
                                learner="linear", folds=3, n_jobs=1,
                                progress=lambda done, total: progress.append((done, total)))
    assert "s2" not in est.tasks and len(est.tasks) == 3
    row = est.flags.set_index("task").loc["s2"]
    assert row["status"] == "excluded" and "3 treated" in row["reason"]
    assert progress[-1] == (4, 4) and len(progress) == 5


def test_too_few_tasks_left_is_an_error():
    df = simulate(n_tasks=2, n=200, seed=6)
    df = df.drop(df.index[(df["site"] == "s1") & (df["d"] == 1)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TaskWarning)
        with pytest.raises(DataError, match="Only 1 task"):
            bf.estimate_tasks(df, task="site", outcome="y", treatment="d", covariates=COV,
                              learner="linear", folds=3, n_jobs=1)


@pytest.mark.parametrize(
    ("change", "kwargs", "message"),
    [
        (None, dict(outcome="nope"), "Missing outcome column 'nope'"),
        (lambda df: df.assign(x1=df["x1"].astype(str)), {}, "One-hot encode"),
        (lambda df: df.assign(x2=df["x2"].where(df.index > 5)), {}, "6 missing value"),
        (lambda df: df.assign(d=df["d"] * 2), {}, "must be 0/1 for estimand 'ate'"),
        (None, dict(estimand="late"), "Unknown estimand 'late'"),
        (None, dict(estimand="blp"), "not available yet"),
        (None, dict(learner="xgb"), "Unknown learner 'xgb'. Valid aliases"),
        (None, dict(folds=1), "folds must be an integer >= 2"),
    ],
)
def test_bad_input(change, kwargs, message):
    df = simulate(n_tasks=2, n=50)
    if change is not None:
        df = change(df)
    args = dict(task="site", outcome="y", treatment="d", covariates=COV, learner="linear",
                n_jobs=1)
    args.update(kwargs)
    with pytest.raises(DataError, match=message):
        bf.estimate_tasks(df, **args)


def test_several_outcomes_give_vector_theta_with_joint_covariance():
    df = simulate(n_tasks=3, n=300, seed=8)
    rng = np.random.default_rng(1)
    df["y2"] = 0.5 * df["y"] - 1.0 * df["d"] + rng.normal(size=len(df))  # correlated outcome
    kwargs = dict(task="site", treatment="d", covariates=COV, learner="linear", folds=3,
                  n_jobs=1, seed=2)
    vec = bf.estimate_tasks(df, outcome=["y", "y2"], **kwargs)
    one = bf.estimate_tasks(df, outcome="y", **kwargs)
    two = bf.estimate_tasks(df, outcome="y2", **kwargs)
    assert vec.params == ["y", "y2"] and vec.covariances.shape == (3, 2, 2)
    # same rows and sample splits: each coordinate is the scalar fit, exactly
    np.testing.assert_allclose(vec.estimates[:, 0], one.estimates[:, 0], rtol=1e-12)
    np.testing.assert_allclose(vec.estimates[:, 1], two.estimates[:, 0], rtol=1e-12)
    np.testing.assert_allclose(vec.covariances[:, 0, 0], one.covariances[:, 0, 0], rtol=1e-10)
    np.testing.assert_allclose(vec.covariances[:, 1, 1], two.covariances[:, 0, 0], rtol=1e-10)
    corr = vec.covariances[:, 0, 1] / np.sqrt(vec.covariances[:, 0, 0] * vec.covariances[:, 1, 1])
    assert np.all(corr > 0.2)  # y2 carries half of y's noise
    z = (vec.estimates[:, 1] - (0.5 * 1.0 - 1.0)) / vec.se[:, 1]
    assert np.all(np.abs(z) < 4)


def test_dask_backend_matches_joblib():
    distributed = pytest.importorskip("dask.distributed")
    df = simulate(n_tasks=4, n=200, seed=11)
    kwargs = dict(task="site", outcome="y", treatment="d", covariates=COV, learner="linear",
                  folds=3, seed=5)
    local = bf.estimate_tasks(df, n_jobs=1, **kwargs)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        done = []
        remote = bf.estimate_tasks(df, backend="dask", client=client,
                                   progress=lambda d, t: done.append(d), **kwargs)
        assert len(client.scheduler_info()["workers"]) == 2
    assert remote.tasks == local.tasks
    np.testing.assert_array_equal(remote.estimates, local.estimates)
    np.testing.assert_array_equal(remote.covariances, local.covariances)
    assert done[-1] == 4
