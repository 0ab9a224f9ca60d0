"""Frequentist comparators for the Bayesian fusion models (``bf.baselines``).

Every function takes a :class:`~bayesfuse.data.estimates.TaskEstimates` and returns a tidy
:class:`BaselineFrame` (a DataFrame that also carries ``.per_task`` or ``.centers``):

* :func:`no_pooling`, :func:`fixed_effect`, :func:`random_effects` (DL or REML, optional
  Knapp–Hartung) and :func:`meta_regression` -- the metafor port, in :mod:`.meta_analysis`;
* :func:`late_fusion` -- an ARMUL-style adaptive aggregator, in :mod:`.late_fusion`.

:class:`BaselineFrame` and the checks the baselines share are in :mod:`.frame`.
"""

from __future__ import annotations

from bayesfuse.analysis.baselines.frame import BaselineFrame
from bayesfuse.analysis.baselines.late_fusion import late_fusion
from bayesfuse.analysis.baselines.meta_analysis import (
    fixed_effect,
    meta_regression,
    no_pooling,
    random_effects,
)

__all__ = [
    "BaselineFrame",
    "no_pooling",
    "fixed_effect",
    "random_effects",
    "meta_regression",
    "late_fusion",
]
