"""Stage 1: DoubleML per task, seeding, guards, learners and input validation."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

import bayesfuse as bf
from bayesfuse.errors import DataError, TaskWarning
from bayesfuse.stage1.learners import resolve_learner

COV = ["x1", "x2", "x3"]
BASE = dict(task="site", outcome="y", treatment="d", covariates=COV, learner="linear",
            folds=3, n_jobs=1)


def simulate(n_tasks=6, n=400, effect=1.0, seed=0, confounding=0.8):
    """Confounded treatment: logistic propensity in x1, x2; outcome nonlinear in x."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n_tasks):
        x = rng.normal(size=(n, 3))
        p = 1 / (1 + np.exp(-(confounding * x[:, 0] - 0.4 * x[:, 1])))
        d = rng.binomial(1, p)
        y = effect * d + x[:, 0] + 0.5 * np.sin(x[:, 1]) + 0.3 * x[:, 2] ** 2 \
            + rng.normal(size=n)
        frames.append(pd.DataFrame({"site": f"s{k}", "y": y, "d": d, "x1": x[:, 0],
                                    "x2": x[:, 1], "x3": x[:, 2]}))
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------- estimates
@pytest.mark.parametrize(("estimand", "learner"),
                         [("ate", "linear"), ("atte", "linear"), ("plr", "linear"),
                          ("ate", "lasso"), ("plr", "lasso")])
def test_recovers_known_effect(estimand, learner):
    df = simulate()
    est = bf.estimate_tasks(df, **{**BASE, "learner": learner}, estimand=estimand, seed=1)
    assert est.tasks == [f"s{k}" for k in range(6)] and est.estimand == estimand
    assert est.params == ["theta"] and est.covariances.shape == (6, 1, 1)
    z = (est.estimates[:, 0] - 1.0) / est.se[:, 0]
    assert np.sum(np.abs(z) < 4) >= 5  # most tasks
    w = 1 / est.se[:, 0] ** 2
    pooled = (w * est.estimates[:, 0]).sum() / w.sum()
    assert abs(pooled - 1.0) < 4 / np.sqrt(w.sum())
    np.testing.assert_array_equal(est.n, 400)
    assert len(est.flags) == 0 and est.covariates is None
    assert est.meta["folds"] == 3 and est.meta["learner"] == learner
    assert est.meta["estimand"] == estimand and est.meta["seed"] == 1
    assert est.meta["doubleml_version"] and est.meta["sklearn_version"]
    assert "\n" not in est.meta["learners"]["outcome"]
    if estimand == "plr":
        assert "arms" not in est.meta
    else:
        assert set(est.meta["arms"]) == set(est.tasks)
        assert all(t + c == 400 for t, c in est.meta["arms"].values())


def test_variance_is_doubleml_se_squared():
    import doubleml as dml

    from bayesfuse.stage1.dml import _task_seed

    df = simulate(n_tasks=2, seed=3)
    est = bf.estimate_tasks(df, **BASE, seed=4)
    rows = df[df["site"] == "s0"].drop(columns="site").reset_index(drop=True).astype(float)
    seed = _task_seed(4, "s0")
    np.random.seed(seed)  # noqa: NPY002 - as stage 1 does
    model = dml.DoubleMLIRM(dml.DoubleMLData(rows, "y", "d", COV),
                            ml_g=resolve_learner("linear", "regressor", seed),
                            ml_m=resolve_learner("linear", "classifier", seed), n_folds=3)
    model.fit()
    assert est.estimates[0, 0] == model.coef[0]
    assert est.covariances[0, 0, 0] == model.se[0] ** 2
    psi, j = model.psi[:, 0, 0], model.psi_deriv[:, 0, 0]
    # what DoubleML computes from its score: mean(psi^2) / mean(J)^2 / n
    assert est.covariances[0, 0, 0] == pytest.approx(np.mean(psi**2) / np.mean(j) ** 2
                                                     / len(psi), rel=1e-10)


@pytest.mark.filterwarnings("ignore::bayesfuse.errors.TaskWarning")
def test_same_results_whatever_n_jobs_and_task_order():
    df = simulate(n_tasks=4, n=200, seed=2)
    kwargs = {**BASE, "learner": "gbm", "seed": 9}
    del kwargs["n_jobs"]
    a = bf.estimate_tasks(df, n_jobs=1, **kwargs)
    reordered = pd.concat([df[df["site"] == s] for s in ["s3", "s1", "s0", "s2"]])
    b = bf.estimate_tasks(reordered, n_jobs=2, **kwargs)
    assert b.tasks == ["s3", "s1", "s0", "s2"]  # order of first appearance
    b = b.select(a.tasks)
    np.testing.assert_array_equal(a.estimates, b.estimates)
    np.testing.assert_array_equal(a.covariances, b.covariances)
    c = bf.estimate_tasks(df, n_jobs=1, **{**kwargs, "seed": 10})
    assert not np.array_equal(a.estimates, c.estimates)  # the seed sets the splits


def test_fit_does_not_touch_the_global_random_state():
    np.random.seed(123)  # noqa: NPY002
    expected = np.random.random()  # noqa: NPY002
    np.random.seed(123)  # noqa: NPY002
    bf.estimate_tasks(simulate(n_tasks=2, n=100), **BASE)
    assert np.random.random() == expected  # noqa: NPY002


def test_several_outcomes_give_vector_theta_with_joint_covariance():
    df = simulate(n_tasks=3, n=300, seed=8)
    rng = np.random.default_rng(1)
    df["y2"] = 0.5 * df["y"] - 1.0 * df["d"] + rng.normal(size=len(df))  # correlated outcome
    kwargs = {**BASE, "seed": 2}
    del kwargs["outcome"]
    vec = bf.estimate_tasks(df, outcome=["y", "y2"], **kwargs)
    one = bf.estimate_tasks(df, outcome="y", **kwargs)
    two = bf.estimate_tasks(df, outcome="y2", **kwargs)
    assert vec.params == ["y", "y2"] and vec.covariances.shape == (3, 2, 2)
    # same rows and sample splits: each coordinate is the scalar fit, exactly
    np.testing.assert_array_equal(vec.estimates[:, 0], one.estimates[:, 0])
    np.testing.assert_array_equal(vec.estimates[:, 1], two.estimates[:, 0])
    np.testing.assert_array_equal(vec.covariances[:, 0, 0], one.covariances[:, 0, 0])
    np.testing.assert_array_equal(vec.covariances[:, 1, 1], two.covariances[:, 0, 0])
    corr = vec.covariances[:, 0, 1] / np.sqrt(vec.covariances[:, 0, 0] * vec.covariances[:, 1, 1])
    assert np.all(corr > 0.2)  # y2 carries half of y's noise
    z = (vec.estimates[:, 1] - (0.5 * 1.0 - 1.0)) / vec.se[:, 1]
    assert np.all(np.abs(z) < 4)


# ---------------------------------------------------------------------- guards
def test_small_arm_excluded_and_reported():
    df = simulate(n_tasks=4, n=200, seed=5)
    treated = df.index[(df["site"] == "s2") & (df["d"] == 1)]
    df = df.drop(treated[3:])  # s2 keeps 3 treated units
    progress = []
    with pytest.warns(TaskWarning, match=r"1 task\(s\) excluded.*s2.*3 treated") as record:
        est = bf.estimate_tasks(df, **BASE,
                                progress=lambda done, total: progress.append((done, total)))
    assert len(record) == 1 and record[0].filename == __file__  # one summary, at the caller
    assert est.tasks == ["s0", "s1", "s3"]
    row = est.flags.set_index("task").loc["s2"]
    assert row["status"] == "excluded" and "3 treated" in row["reason"]
    assert est.meta["arms"]["s2"][0] == 3  # counts kept for excluded tasks too
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]  # once per finished task


def test_small_task_excluded():
    df = simulate(n_tasks=3, n=200, seed=5)
    df = df.drop(df.index[(df["site"] == "s1")][15:])
    with pytest.warns(TaskWarning, match="excluded"):
        est = bf.estimate_tasks(df, **BASE)
    assert est.flags.to_dict("records") == [
        {"task": "s1", "status": "excluded", "reason": "n = 15 rows < min_n = 20"}]


def test_poor_overlap_is_a_warning_not_an_exclusion():
    df = simulate(n_tasks=3, n=400, seed=7)
    strong = simulate(n_tasks=1, n=400, seed=8, confounding=5.0).assign(site="s3")
    df = pd.concat([df, strong], ignore_index=True)
    with pytest.warns(TaskWarning, match=r"0 task\(s\) excluded, 1 flagged"):
        est = bf.estimate_tasks(df, **BASE)
    assert est.tasks == ["s0", "s1", "s2", "s3"]  # kept, but flagged
    row = est.flags.set_index("task").loc["s3"]
    assert row["status"] == "warning" and "propensities at or beyond [0.01, 0.99]" in row["reason"]
    assert np.isfinite(est.estimates).all()


class _FailsOnSmallData(ClassifierMixin, BaseEstimator):
    """A classifier that refuses training sets below 250 rows."""

    def fit(self, X, y):
        if len(X) < 250:
            raise ValueError(f"only {len(X)} training rows")
        self.model_ = LogisticRegression().fit(X, y)
        self.classes_ = self.model_.classes_
        return self

    def predict_proba(self, X):
        return self.model_.predict_proba(X)

    def predict(self, X):
        return self.model_.predict(X)


def test_failing_fit_excludes_the_task_with_the_error_text():
    df = simulate(n_tasks=3, n=400, seed=9)
    df = df.drop(df.index[df["site"] == "s1"][150:])
    learner = {"outcome": "linear", "propensity": _FailsOnSmallData()}
    with pytest.warns(TaskWarning, match="DoubleML fit failed"):
        est = bf.estimate_tasks(df, **{**BASE, "learner": learner})
    assert est.tasks == ["s0", "s2"]
    reason = est.flags.set_index("task").loc["s1", "reason"]
    assert "ValueError" in reason and "only 100 training rows" in reason


def test_too_few_tasks_left_is_an_error():
    df = simulate(n_tasks=2, n=200, seed=6)
    df = df.drop(df.index[(df["site"] == "s1") & (df["d"] == 1)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TaskWarning)
        with pytest.raises(DataError, match=r"Only 1 of 2 task.*s1 \(excluded\): 0 treated"):
            bf.estimate_tasks(df, **BASE)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("change", "kwargs", "message"),
    [
        (None, dict(outcome="nope"), "Missing outcome column 'nope'"),
        (None, dict(covariates=["x1", "zz"]), "Missing covariate 'zz'"),
        (lambda df: df.assign(x1=df["x1"].astype(str)), {}, "'x1' must be numeric.*One-hot"),
        (lambda df: df.assign(x2=df["x2"].where(df.index > 5)), {}, "'x2' has 6 missing value"),
        (lambda df: df.assign(d=df["d"] * 2), {}, "must be 0/1 for estimand 'ate'"),
        (None, dict(estimand="late"), "Unknown estimand 'late'. Valid estimands: ate, atte"),
        (None, dict(estimand="blp"), "needs modifiers"),
        (None, dict(learner="xgb"), "Unknown learner 'xgb'. Valid aliases: gbm, rf, lasso"),
        (None, dict(folds=1), "folds must be an integer >= 2"),
        (None, dict(covariates=["x1", "d"]), "also the task, outcome or treatment"),
        (None, dict(backend="spark"), "Unknown backend 'spark'"),
        (None, dict(propensity_bounds=(0.9, 0.1)), "propensity_bounds"),
        (lambda df: df.iloc[:0], {}, "empty: no tasks"),
    ],
)
def test_bad_input(change, kwargs, message):
    df = simulate(n_tasks=2, n=50)
    if change is not None:
        df = change(df)
    with pytest.raises(DataError, match=message):
        bf.estimate_tasks(df, **{**BASE, **kwargs})


def test_bool_columns_are_accepted():
    df = simulate(n_tasks=2, n=200, seed=12)
    df = df.assign(d=df["d"].astype(bool), x4=df["x2"] > 0)
    est = bf.estimate_tasks(df, **{**BASE, "covariates": [*COV, "x4"]})
    assert np.isfinite(est.estimates).all()


# ---------------------------------------------------------------------- learners
def test_learner_aliases_and_seeding():
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    gbm = resolve_learner("gbm", "classifier", seed=3)
    assert isinstance(gbm, HistGradientBoostingClassifier) and gbm.random_state == 3
    assert not gbm.early_stopping
    rf = resolve_learner("RF", "regressor", seed=4)
    assert isinstance(rf, RandomForestRegressor) and rf.n_estimators == 200
    assert rf.min_samples_leaf == 5 and rf.n_jobs == 1
    assert type(resolve_learner("lasso", "regressor")[-1]).__name__ == "LassoCV"
    assert type(resolve_learner("lasso", "classifier")[-1]).__name__ == "LogisticRegressionCV"
    user = make_pipeline(StandardScaler(), RandomForestRegressor(n_estimators=5))
    model = resolve_learner(user, "regressor", seed=7)
    assert model is not user and model[-1].random_state == 7  # cloned, nested seed set
    assert user[-1].random_state is None
    both = {"outcome": "rf", "propensity": "linear"}
    assert isinstance(resolve_learner(both, "regressor"), RandomForestRegressor)
    assert type(resolve_learner(both, "classifier")[-1]).__name__ == "LogisticRegression"


@pytest.mark.parametrize(
    ("spec", "kind", "message"),
    [
        ("xgb", "regressor", "Unknown learner 'xgb'. Valid aliases: gbm, rf, lasso, linear"),
        ({"outcome": "gbm"}, "regressor", "keys 'outcome' and 'propensity'"),
        (42, "regressor", "must be an alias"),
        (object(), "regressor", "must be an alias"),
    ],
)
def test_bad_learner(spec, kind, message):
    with pytest.raises(DataError, match=message):
        resolve_learner(spec, kind)


def test_regressor_as_propensity_learner_is_refused():
    from sklearn.linear_model import LinearRegression

    with pytest.raises(DataError, match="must be a classifier"):
        bf.estimate_tasks(simulate(n_tasks=2, n=50), **{**BASE, "learner": LinearRegression()})


def test_dask_backend_matches_joblib():
    distributed = pytest.importorskip("dask.distributed")
    df = simulate(n_tasks=4, n=200, seed=11)
    kwargs = {**BASE, "seed": 5}
    del kwargs["n_jobs"]
    local = bf.estimate_tasks(df, n_jobs=1, **kwargs)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        done = []
        remote = bf.estimate_tasks(df, backend="dask", client=client,
                                   progress=lambda d, t: done.append(d), **kwargs)
    assert remote.tasks == local.tasks
    np.testing.assert_array_equal(remote.estimates, local.estimates)
    np.testing.assert_array_equal(remote.covariances, local.covariances)
    assert sorted(done) == [1, 2, 3, 4]
