"""The result frame of the frequentist baselines and the checks every baseline shares.

:class:`BaselineFrame` is an ordinary DataFrame that also carries ``.per_task`` (random
effects and meta-regression) or ``.centers`` (late fusion), mirrored in ``df.attrs``.
"""

from __future__ import annotations

from collections.abc import Hashable
from copy import deepcopy
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from bayesfuse._validation import check_probability
from bayesfuse.data.estimates import TaskEstimates
from bayesfuse.errors import EstimatesError

__all__ = ["BaselineFrame", "baseline_frame", "check_estimates", "critical_value", "long_index"]


def _same_attr_value(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if isinstance(a, pd.DataFrame | pd.Series) or isinstance(b, pd.DataFrame | pd.Series):
        return type(a) is type(b) and a.equals(b)
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _same_attrs(a: dict[Hashable, Any], b: dict[Hashable, Any]) -> bool:
    return a.keys() == b.keys() and all(_same_attr_value(a[key], b[key]) for key in a)


class BaselineFrame(pd.DataFrame):
    """A DataFrame with the extra results of a baseline attached.

    Attributes
    ----------
    per_task : DataFrame or None
        Per-task estimates that go with a pooled table (the BLUPs of :func:`random_effects`
        and :func:`meta_regression`). Also in ``attrs["per_task"]``.
    centers : DataFrame or None
        The centres γ of :func:`late_fusion` (one row per cluster, one column per
        parameter). Also in ``attrs["centers"]``.

    Notes
    -----
    Concatenating several of these frames (``pd.concat([reml, dl])``) works; the attributes
    are kept only when all the inputs carry the same ones.

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> reml = bf.baselines.random_effects(est, method="reml")
    >>> isinstance(reml, bf.baselines.BaselineFrame)
    True
    >>> reml.per_task.shape                           # the BLUPs, one row per task
    (8, 7)
    """

    _metadata = ["per_task", "centers"]
    per_task: pd.DataFrame | None = None
    centers: pd.DataFrame | None = None

    @property
    def _constructor(self):
        return BaselineFrame

    def __finalize__(self, other, method: str | None = None, **kwargs) -> BaselineFrame:
        # pandas compares ``attrs`` of concatenated inputs with ``==``, which raises for the
        # DataFrames we keep there; compare them with ``.equals`` instead.
        objs = getattr(other, "input_objs", None)
        if objs is not None and not isinstance(other, pd.DataFrame | pd.Series):
            objs = list(objs)
            if objs and all(bool(obj.attrs) for obj in objs):
                first = objs[0].attrs
                if all(_same_attrs(obj.attrs, first) for obj in objs[1:]):
                    self.attrs = deepcopy(first)
            if not all(obj.flags.allows_duplicate_labels for obj in objs):
                self.flags.allows_duplicate_labels = False
            return self
        return super().__finalize__(other, method=method, **kwargs)


def baseline_frame(columns: dict[str, Any], attrs: dict[str, Any] | None = None) -> BaselineFrame:
    """A :class:`BaselineFrame` of ``columns`` with ``attrs`` set."""
    frame = BaselineFrame(columns)
    if attrs:
        frame.attrs.update(attrs)
    return frame


# ---------------------------------------------------------------------------- shared checks
def check_estimates(est: Any) -> TaskEstimates:
    """Return ``est`` if it is a :class:`TaskEstimates`, else raise :class:`EstimatesError`."""
    if not isinstance(est, TaskEstimates):
        raise EstimatesError(
            f"Expected a TaskEstimates; got {type(est).__name__}. Build one with "
            "bf.TaskEstimates(tasks, estimates, covariances) or bf.read_estimates(path)."
        )
    return est


def critical_value(ci_prob: float, df: float | None = None) -> float:
    """Two-sided critical value: normal, or Student t with ``df`` degrees of freedom.

    ``ci_prob`` is checked with :func:`bayesfuse._validation.check_probability`.
    """
    upper = 0.5 + check_probability(ci_prob) / 2.0
    return float(stats.norm.ppf(upper) if df is None else stats.t.ppf(upper, df))


def long_index(est: TaskEstimates) -> tuple[np.ndarray, np.ndarray]:
    """Task and param labels of the (task, param) rows, task-major, each of length K·p."""
    n_tasks, n_params = est.estimates.shape
    tasks = np.repeat(np.asarray(est.tasks, dtype=object), n_params)
    params = np.tile(np.asarray(est.params, dtype=object), n_tasks)
    return tasks, params
