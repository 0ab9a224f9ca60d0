"""Shared nuisance learning (``estimate_tasks(..., nuisance="shared")``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

import bayesfuse as bf
from bayesfuse.cli import main
from bayesfuse.errors import DataError, TaskWarning
from bayesfuse.stage1 import shared

COV = ["x1", "x2", "x3"]
BASE = dict(task="site", outcome="y", treatment="d", covariates=COV, learner="linear",
            folds=3, n_jobs=1, nuisance="shared")


def simulate(n_tasks=4, n=150, seed=0, binary=True):
    """Alike tasks: logistic propensity in x1, x2; outcome nonlinear in x; effect 1."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_tasks * n, 3))
    task = np.repeat(np.arange(n_tasks), n)
    if binary:
        d = rng.binomial(1, 1 / (1 + np.exp(-(0.6 * x[:, 0] - 0.4 * x[:, 1]))))
    else:
        d = 0.6 * x[:, 0] + rng.normal(size=task.size)
    y = 1.0 * d + x[:, 0] + 0.5 * x[:, 1] ** 2 + 0.2 * task + rng.normal(size=task.size)
    frame = pd.DataFrame(x, columns=COV)
    frame.insert(0, "site", [f"s{k}" for k in task])
    frame["d"] = d
    frame["y"] = y
    frame["y2"] = 0.5 * y + rng.normal(size=task.size)
    return frame


# ---------------------------------------------------------------------- estimates
@pytest.mark.parametrize("estimand", ["ate", "atte", "plr"])
def test_shapes_meta_and_known_effect(estimand):
    df = simulate(binary=estimand != "plr", seed=1)
    est = bf.estimate_tasks(df, **BASE, estimand=estimand)
    assert est.tasks == ["s0", "s1", "s2", "s3"] and est.estimand == estimand
    assert est.estimates.shape == (4, 1) and est.covariances.shape == (4, 1, 1)
    assert np.all(est.covariances > 0) and est.meta["nuisance"] == "shared"
    np.testing.assert_array_equal(est.n, 150)
    z = (est.estimates[:, 0] - 1.0) / est.se[:, 0]
    assert np.all(np.abs(z) < 4.5)
    per_task = bf.estimate_tasks(df, **{**BASE, "nuisance": "task"}, estimand=estimand)
    assert "nuisance" not in per_task.meta
    assert not np.allclose(per_task.estimates, est.estimates)


def test_vector_outcomes_share_the_splits():
    df = simulate(binary=False, seed=2)
    est = bf.estimate_tasks(df, **{**BASE, "outcome": ["y", "y2"]}, estimand="plr")
    assert est.params == ["y", "y2"] and est.covariances.shape == (4, 2, 2)
    assert np.all(np.linalg.eigvalsh(est.covariances) > 0)
    corr = est.covariances[:, 0, 1] / np.sqrt(est.covariances[:, 0, 0]
                                              * est.covariances[:, 1, 1])
    assert np.all(corr > 0.3)  # y2 = y / 2 + noise: strongly correlated errors
    single = bf.estimate_tasks(df, **BASE, estimand="plr")
    np.testing.assert_allclose(est.estimates[:, 0], single.estimates[:, 0], rtol=1e-12)


def test_guarded_task_is_excluded_not_pooled():
    df = simulate(n_tasks=4, seed=3)
    df = pd.concat([df, simulate(n_tasks=1, n=10, seed=4).assign(site="tiny")],
                   ignore_index=True)
    with pytest.warns(TaskWarning, match="1 task"):
        est = bf.estimate_tasks(df, **BASE)
    assert "tiny" not in est.tasks and est.n_tasks == 4
    assert est.flags.set_index("task").loc["tiny", "status"] == "excluded"


# ---------------------------------------------------------------------- out-of-fold property
class _Memory(BaseEstimator):
    """Remembers its training rows; predicts 1 for a row it saw, 0 otherwise."""

    def fit(self, x, y):
        self.seen_ = {tuple(row) for row in np.round(x, 12)}
        self.n_fit_ = len(x)
        return self

    def _seen(self, x):
        return np.array([tuple(row) in self.seen_ for row in np.round(x, 12)], dtype=float)


class _MemoryRegressor(RegressorMixin, _Memory):
    def predict(self, x):
        return self._seen(x)


class _MemoryClassifier(ClassifierMixin, _Memory):
    def fit(self, x, y):
        self.classes_ = np.unique(y)
        return super().fit(x, y)

    def predict_proba(self, x):
        p = 0.3 + 0.6 * self._seen(x)
        return np.column_stack([1 - p, p])


@pytest.mark.parametrize("estimand", ["ate", "plr"])
def test_no_prediction_comes_from_a_model_trained_on_that_row(estimand):
    df = simulate(n_tasks=3, n=40, seed=5, binary=estimand == "ate")
    codes = np.repeat(np.arange(3), 40)
    fold = shared.fold_ids(codes, np.array([11, 12, 13]), 4)
    # each task's rows spread evenly over the folds: 40 rows -> 10 per fold
    counts = np.zeros((3, 4), int)
    np.add.at(counts, (codes, fold), 1)
    np.testing.assert_array_equal(counts, 10)
    design = shared.shared_design(df[COV].to_numpy(), codes, 3)
    learner = {"outcome": _MemoryRegressor(),
               "propensity": _MemoryClassifier() if estimand == "ate" else _MemoryRegressor()}
    preds = shared.cross_fit(design, df[["y"]].to_numpy(), df["d"].to_numpy(float), fold,
                             estimand, learner, seed=0)
    np.testing.assert_array_equal(preds["ml_m"], 0.3 if estimand == "ate" else 0.0)
    for role in ("ml_g0", "ml_g1") if estimand == "ate" else ("ml_l",):
        np.testing.assert_array_equal(preds[role], 0.0)
    # a model that saw the row would have said so: the learner does remember
    model = _MemoryRegressor().fit(design[fold != 0], df["y"][fold != 0])
    assert model.predict(design[fold != 0]).min() == 1.0


def test_pooled_models_train_on_every_task():
    codes = np.repeat(np.arange(3), 40)
    fold = shared.fold_ids(codes, np.array([1, 2, 3]), 4)
    design = shared.shared_design(np.random.default_rng(0).normal(size=(120, 2)), codes, 3)
    assert design.shape == (120, 2 + 3 + 6)
    sizes, heads = [], []

    class Counting(_MemoryRegressor):
        def fit(self, x, y):
            tasks = np.argmax(x[:, 2:5], axis=1)
            sizes.append(np.bincount(tasks, minlength=3))
            heads.append(np.unique(tasks[:30]).size)
            return super().fit(x, y)

    shared.cross_fit(design, np.zeros((120, 1)), np.arange(120.0), fold, "plr", Counting(),
                     seed=0)
    assert len(sizes) == 8  # 4 folds x (ml_l, ml_m)
    np.testing.assert_array_equal(np.array(sizes), 30)  # 3/4 of each task's 40 rows
    # rows arrive shuffled, so a learner's inner (unshuffled) CV folds mix the tasks
    assert min(heads) == 3


# ---------------------------------------------------------------------- DoubleML agreement
@pytest.mark.filterwarnings("ignore:The estimated nu2")  # DoubleML's sensitivity notice
@pytest.mark.parametrize("estimand", ["ate", "atte", "plr"])
def test_scores_match_doubleml_given_the_same_predictions(estimand):
    import doubleml as dml

    from bayesfuse.stage1.dml import _trimming

    binary = estimand != "plr"
    df = simulate(n_tasks=3, n=120, seed=6, binary=binary)
    codes = np.repeat(np.arange(3), 120)
    fold = shared.fold_ids(codes, np.array([1, 2, 3]), 3)
    y, d = df[["y"]].to_numpy(), df["d"].to_numpy(float)
    preds = shared.cross_fit(shared.shared_design(df[COV].to_numpy(), codes, 3), y, d, fold,
                             estimand, "linear", seed=0)
    if binary:  # push some propensities past the clipping threshold
        preds["ml_m"][:5] = [0.001, 0.999, 0.002, 0.5, 0.995]
    out = shared.task_scores(y, d, codes, 3, preds, estimand, 0.01)
    for k in range(3):
        rows = df[codes == k].drop(columns="site").reset_index(drop=True)
        data = dml.DoubleMLData(rows, y_col="y", d_cols="d", x_cols=COV)
        roles = ("ml_g0", "ml_g1", "ml_m") if binary else ("ml_l", "ml_m")
        external = {"d": {r: (preds[r][codes == k].reshape(-1, 1) if r == "ml_m"
                              else preds[r][codes == k][:, :1]) for r in roles}}
        if binary:
            model = dml.DoubleMLIRM(data, ml_g=_MemoryRegressor(), ml_m=_MemoryClassifier(),
                                    n_folds=3, score=estimand.upper(), **_trimming(0.01))
        else:
            model = dml.DoubleMLPLR(data, ml_l=_MemoryRegressor(), ml_m=_MemoryRegressor(),
                                    n_folds=3)
        model.fit(external_predictions=external)
        assert out["estimate"][k, 0] == pytest.approx(model.coef[0], rel=1e-10, abs=1e-12)
        assert out["se"][k, 0] == pytest.approx(model.se[0], rel=1e-10)


# ---------------------------------------------------------------------- errors
def test_errors():
    df = simulate(n_tasks=2, n=60)
    with pytest.raises(DataError, match="Unknown nuisance 'pooled'"):
        bf.estimate_tasks(df, **{**BASE, "nuisance": "pooled"})
    with pytest.raises(DataError, match="supports the estimands ate, atte and plr"):
        bf.estimate_tasks(df, **BASE, estimand="blp", modifiers=["x1"])
    with pytest.raises(DataError, match="backend='joblib'"):
        bf.estimate_tasks(df, **BASE, backend="dask")


def test_too_large_design_is_refused(monkeypatch):
    monkeypatch.setattr(shared, "MAX_DESIGN_CELLS", 1000)
    with pytest.raises(DataError, match="use nuisance='task'"):
        bf.estimate_tasks(simulate(n_tasks=2, n=60), **BASE)


def test_failing_learner_is_one_clear_error():
    class Broken(RegressorMixin, BaseEstimator):
        def fit(self, x, y):
            raise RuntimeError("boom")

    with pytest.raises(DataError, match="shared nuisance fit failed: RuntimeError: boom"):
        bf.estimate_tasks(simulate(n_tasks=2, n=60, binary=False),
                          **{**BASE, "learner": Broken()}, estimand="plr")


# ---------------------------------------------------------------------- CLI
def test_cli_flag(tmp_path, capsys):
    data = tmp_path / "rows.csv"
    simulate(n_tasks=3, n=60, seed=7).to_csv(data, index=False)
    out = tmp_path / "est.csv"
    args = ["estimate", str(data), "--task", "site", "--outcome", "y", "--treatment", "d",
            "--covariates", "x1,x2,x3", "--learner", "linear", "--folds", "2", "--n-jobs",
            "1", "-o", str(out)]
    assert main([*args, "--nuisance", "shared"]) == 0
    table = pd.read_csv(out)
    assert len(table) == 3
    assert main([*args, "--nuisance", "pooled", "--force"]) == 2
    assert "Unknown nuisance 'pooled'" in capsys.readouterr().err
    site = ["site", str(data), "--task", "site", "--outcome", "y", "--treatment", "d",
            "--nuisance", "shared", "-o", str(tmp_path / "s.json")]
    assert main(site) == 2
    err = capsys.readouterr().err
    assert "all tasks' rows in one place" in err and "\n" == err[-1] and err.count("\n") == 1
    assert not (tmp_path / "s.json").exists()


def test_cli_help_mentions_the_option(capsys):
    assert main(["estimate", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.replace("│", " ").split())  # unwrap the table
    assert "--nuisance" in text and "one place" in text
