"""Nuisance learners for stage 1: string aliases or any scikit-learn estimator."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from sklearn.base import clone, is_classifier, is_regressor

from bayesfuse.errors import DataError

__all__ = ["ALIASES", "resolve_learner", "describe_learner"]

ALIASES = ("gbm", "rf", "lasso", "linear")


def _with_supported(cls: type, **kwargs: Any):
    """Instantiate ``cls`` with the keyword arguments this scikit-learn version accepts."""
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in kwargs.items() if k in accepted})


def _alias(name: str, kind: str, seed: int):
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import (
        LassoCV,
        LinearRegression,
        LogisticRegression,
        LogisticRegressionCV,
    )
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    regressor = kind == "regressor"
    if name == "gbm":
        cls = HistGradientBoostingRegressor if regressor else HistGradientBoostingClassifier
        return cls(max_iter=100, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=10,
                   early_stopping=False, random_state=seed)
    if name == "rf":
        cls = RandomForestRegressor if regressor else RandomForestClassifier
        return cls(n_estimators=200, min_samples_leaf=5, n_jobs=1, random_state=seed)
    if name == "lasso":
        if regressor:
            model = _with_supported(LassoCV, cv=5, alphas=30, random_state=seed, max_iter=5000)
        else:
            params = inspect.signature(LogisticRegressionCV.__init__).parameters
            l1 = {"l1_ratios": [1.0]} if "l1_ratios" in params else {"penalty": "l1"}
            model = _with_supported(LogisticRegressionCV, Cs=10, cv=5, solver="liblinear",
                                    scoring="neg_log_loss", random_state=seed,
                                    use_legacy_attributes=False, **l1)
        return make_pipeline(StandardScaler(), model)
    if name == "linear":
        if regressor:
            return LinearRegression()
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    raise DataError(f"Unknown learner '{name}'. Valid aliases: {', '.join(ALIASES)}; or pass "
                    "any scikit-learn estimator.")


def resolve_learner(spec: Any, kind: str, seed: int = 0):
    """A fresh estimator for one nuisance function.

    Parameters
    ----------
    spec : str, estimator or mapping
        An alias (``"gbm"``, ``"rf"``, ``"lasso"``, ``"linear"``), any scikit-learn
        estimator (cloned), or ``{"outcome": ..., "propensity": ...}`` giving the outcome
        regression and the propensity (or treatment regression) learners separately.
    kind : {"regressor", "classifier"}
        What the nuisance needs.
    seed : int
        Sets ``random_state`` where the estimator has one.
    """
    if isinstance(spec, Mapping):
        key = "outcome" if kind == "regressor" else "propensity"
        unknown = set(spec) - {"outcome", "propensity"}
        if unknown or key not in spec:
            raise DataError("A learner mapping needs the keys 'outcome' and 'propensity'; "
                            f"got {sorted(spec)}.")
        spec = spec[key]
    if isinstance(spec, str):
        return _alias(spec.lower(), kind, seed)
    if not hasattr(spec, "fit") or not hasattr(spec, "get_params"):
        raise DataError(f"A learner must be an alias ({', '.join(ALIASES)}) or a scikit-learn "
                        f"estimator; got {type(spec).__name__}.")
    if kind == "classifier" and is_regressor(spec) and not is_classifier(spec):
        raise DataError(f"The propensity learner must be a classifier (binary treatment); got "
                        f"the regressor {type(spec).__name__}.")
    model = clone(spec)
    if "random_state" in model.get_params():
        model.set_params(random_state=seed)
    return model


def describe_learner(spec: Any) -> str:
    """Short text of a learner spec, for the output's provenance."""
    if isinstance(spec, Mapping):
        return ", ".join(f"{k}={describe_learner(v)}" for k, v in spec.items())
    if isinstance(spec, str):
        return spec
    return type(spec).__name__
