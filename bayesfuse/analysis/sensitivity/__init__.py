"""Sensitivity analysis of a fusion fit (``bf.sensitivity``): how much do the conclusions
depend on the priors, on single tasks, on the stage-1 standard errors and on the family?

Five analyses (design §5), each returning a DataFrame:

* :func:`power_scaling` — prior and likelihood power-scaling sensitivity, importance
  weighted, no refits (Kallioinen et al. 2023; priorsense); :func:`power_scaling_sequence`
  the power-scaled means over a grid of α. In :mod:`.importance`.
* :func:`prior_sweep` — refits over a grid of prior strings.
* :func:`loo_influence` — leave-one-task-out influence (PSIS-LOO, exact refits where
  Pareto k > 0.7).
* :func:`inflation` — refits with every stage-1 covariance Vₖ multiplied by c.
* :func:`compare_families` — other families compared by PSIS-LOO with stacking weights.
  These four refit; in :mod:`.refit`.

:func:`sensitivity_analysis` runs them all into a :class:`SensitivityResult`;
:func:`sensitivity_report` writes it as one self-contained HTML file (:mod:`.analysis`).
"""

from __future__ import annotations

from bayesfuse.analysis.sensitivity import importance, refit
from bayesfuse.analysis.sensitivity.analysis import (
    SensitivityResult,
    sensitivity_analysis,
    sensitivity_report,
)
from bayesfuse.analysis.sensitivity.importance import (
    SensitivityError,
    SensitivityWarning,
    cjs_distance,
    log_likelihood_draws,
    log_prior_draws,
    power_scaling,
    power_scaling_sequence,
    powerscale_weights,
)
from bayesfuse.analysis.sensitivity.refit import (
    compare_families,
    inflation,
    loo_influence,
    prior_sweep,
)

__all__ = [
    "SensitivityError",
    "SensitivityWarning",
    "SensitivityResult",
    "log_prior_draws",
    "log_likelihood_draws",
    "powerscale_weights",
    "cjs_distance",
    "power_scaling",
    "power_scaling_sequence",
    "prior_sweep",
    "loo_influence",
    "inflation",
    "compare_families",
    "sensitivity_analysis",
    "sensitivity_report",
]

# public names outside ``__all__``, kept as before the split
COMPONENTS = importance.COMPONENTS
DIAGNOSES = importance.DIAGNOSES
K_THRESHOLD = importance.K_THRESHOLD
SENSITIVITY_THRESHOLD = importance.SENSITIVITY_THRESHOLD
default_sweep = refit.default_sweep
