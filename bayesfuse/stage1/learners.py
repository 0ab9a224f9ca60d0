"""Nuisance learners for stage 1: string aliases or any scikit-learn estimator.

``resolve_learner(spec, kind, seed)`` turns what a user gives (``"gbm"``, ``"rf"``,
``"lasso"``, ``"linear"``, an estimator instance, or ``{"outcome": ..., "propensity": ...}``)
into a fresh, seeded scikit-learn estimator for one nuisance function.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from sklearn.base import BaseEstimator, clone, is_classifier, is_regressor

from bayesfuse._validation import check_choice
from bayesfuse.errors import DataError

__all__ = ["ALIASES", "KINDS", "resolve_learner", "describe_learner"]

ALIASES = ("gbm", "rf", "lasso", "linear")
KINDS = ("regressor", "classifier")
_ROLES = {"regressor": "outcome", "classifier": "propensity"}


def _with_supported(cls: type, **kwargs: Any) -> BaseEstimator:
    """Instantiate ``cls`` with the keyword arguments this scikit-learn version accepts."""
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in kwargs.items() if k in accepted})


def _l1_logistic_cv(seed: int) -> BaseEstimator:
    """Cross-validated L1 logistic regression, across scikit-learn versions.

    scikit-learn >= 1.8 deprecates ``penalty`` (an L1 fit is ``l1_ratios=[1.0]``); older
    versions need ``penalty="l1"``.
    """
    from sklearn.linear_model import LogisticRegressionCV

    params = inspect.signature(LogisticRegressionCV.__init__).parameters
    new_api = "penalty" not in params or params["penalty"].default == "deprecated"
    penalty = {"l1_ratios": [1.0]} if new_api else {"penalty": "l1"}
    return _with_supported(LogisticRegressionCV, Cs=10, cv=5, solver="liblinear",
                           scoring="neg_log_loss", max_iter=1000, random_state=seed,
                           use_legacy_attributes=False, **penalty)


def _alias(name: str, kind: str, seed: int) -> BaseEstimator:
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LassoCV, LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    regressor = kind == "regressor"
    if name == "gbm":
        cls = HistGradientBoostingRegressor if regressor else HistGradientBoostingClassifier
        # shallow, slow and regularised: tasks are often small (tens to hundreds of rows), and
        # an overfitted propensity (near 0/1) inflates the AIPW variance many times over
        return cls(max_iter=100, learning_rate=0.05, max_depth=3, min_samples_leaf=20,
                   l2_regularization=1.0, early_stopping=False, random_state=seed)
    if name == "rf":
        cls = RandomForestRegressor if regressor else RandomForestClassifier
        return cls(n_estimators=200, min_samples_leaf=5, n_jobs=1, random_state=seed)
    if name == "lasso":
        if regressor:
            params = inspect.signature(LassoCV.__init__).parameters
            # scikit-learn >= 1.7 takes the grid size as ``alphas``; older ones as ``n_alphas``
            grid = ({"n_alphas": 30} if "n_alphas" in params
                    and params["n_alphas"].default != "deprecated" else {"alphas": 30})
            model = _with_supported(LassoCV, cv=5, max_iter=5000, random_state=seed, **grid)
        else:
            model = _l1_logistic_cv(seed)
        return make_pipeline(StandardScaler(), model)
    if name == "linear":
        if regressor:
            return LinearRegression()
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    raise DataError(f"Unknown learner '{name}'. Valid aliases: {', '.join(ALIASES)}; or pass "
                    "any scikit-learn estimator.")


def _seeded(model: BaseEstimator, seed: int) -> BaseEstimator:
    """Set every ``random_state`` of ``model`` (nested ones too, e.g. in a Pipeline)."""
    keys = [k for k in model.get_params(deep=True)
            if k == "random_state" or k.endswith("__random_state")]
    if keys:
        model.set_params(**dict.fromkeys(keys, seed))
    return model


def resolve_learner(spec: Any, kind: str, seed: int = 0) -> BaseEstimator:
    """A fresh, seeded estimator for one nuisance function.

    Parameters
    ----------
    spec : str, estimator or mapping
        An alias — ``"gbm"`` (histogram gradient boosting: 100 iterations, learning rate
        0.05, depth 3, 20 rows per leaf, no early stopping), ``"rf"`` (random forest, 200
        trees, ``min_samples_leaf=5``), ``"lasso"`` (standardised ``LassoCV`` / L1
        ``LogisticRegressionCV``), ``"linear"``
        (``LinearRegression`` / standardised ``LogisticRegression``) — or any scikit-learn
        estimator (cloned, never modified), or ``{"outcome": ..., "propensity": ...}`` giving
        the outcome regression and the propensity (or treatment regression, for ``plr``)
        learners separately.
    kind : {"regressor", "classifier"}
        What the nuisance needs: ``"regressor"`` for E[Y | X] (and E[D | X] in ``plr``),
        ``"classifier"`` for the propensity P(D = 1 | X).
    seed : int, default 0
        Sets every ``random_state`` the estimator has (nested ones included).

    Returns
    -------
    sklearn.base.BaseEstimator
        An unfitted estimator.

    Raises
    ------
    DataError
        Unknown alias, a mapping without the ``outcome`` / ``propensity`` keys, an object that
        is not a scikit-learn estimator, or a regressor where a classifier is needed.

    Examples
    --------
    >>> resolve_learner("linear", "regressor")
    LinearRegression()
    >>> type(resolve_learner({"outcome": "gbm", "propensity": "rf"}, "classifier")).__name__
    'RandomForestClassifier'
    """
    check_choice(kind, "kind", KINDS)
    if isinstance(spec, Mapping):
        unknown = sorted(set(map(str, spec)) - {"outcome", "propensity"})
        if unknown or not {"outcome", "propensity"} <= set(spec):
            raise DataError("A learner mapping needs exactly the keys 'outcome' and "
                            f"'propensity'; got {sorted(map(str, spec))}.")
        spec = spec[_ROLES[kind]]
    if isinstance(spec, str):
        return _alias(spec.strip().lower(), kind, seed)
    if not hasattr(spec, "fit") or not hasattr(spec, "get_params"):
        raise DataError(f"A learner must be an alias ({', '.join(ALIASES)}) or a scikit-learn "
                        f"estimator; got {type(spec).__name__}.")
    if kind == "classifier" and is_regressor(spec) and not is_classifier(spec):
        raise DataError(f"The propensity learner must be a classifier (binary treatment); got "
                        f"the regressor {type(spec).__name__}.")
    try:
        model = clone(spec)
    except TypeError as exc:
        raise DataError(f"Learner {type(spec).__name__} cannot be cloned by scikit-learn "
                        f"({exc}).") from None
    return _seeded(model, seed)


def describe_learner(spec: Any) -> str:
    """Short text of a learner spec, for provenance (``"gbm"``, ``"outcome=gbm, ..."``)."""
    if isinstance(spec, Mapping):
        return ", ".join(f"{k}={describe_learner(v)}" for k, v in spec.items())
    if isinstance(spec, str):
        return spec
    return type(spec).__name__
