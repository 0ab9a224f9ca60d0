"""bayesfuse: Bayesian late fusion of per-task semiparametric estimates.

Stage 1 (:func:`estimate_tasks`) fits double/debiased ML per task and yields a
:class:`TaskEstimates`; stage 2 (:func:`fuse`) fits a hierarchical Bayesian model with a
task-similarity prior and returns a :class:`FusionResult`.
"""

from __future__ import annotations

from bayesfuse import errors  # noqa: F401  (bf.errors, a light module)
from bayesfuse.errors import BayesfuseError

__version__ = "0.1.0"

__all__ = [
    "BayesfuseError",
    "TaskEstimates",
    "read_estimates",
    "site_summary",
    "estimate_tasks",
    "fuse",
    "load_fit",
    "compare",
    "FusionResult",
    "baselines",
    "datasets",
    "__version__",
]

_LAZY = {
    "TaskEstimates": ("bayesfuse.data.estimates", "TaskEstimates"),
    "read_estimates": ("bayesfuse.data.read", "read_estimates"),
    "estimate_tasks": ("bayesfuse.stage1.dml", "estimate_tasks"),
    "fuse": ("bayesfuse.inference.fuse", "fuse"),
    "load_fit": ("bayesfuse.result", "load_fit"),
    "compare": ("bayesfuse.result", "compare"),
    "FusionResult": ("bayesfuse.result", "FusionResult"),
    "site_summary": ("bayesfuse.stage1.site", "site_summary"),
}

# The public namespaces (``bf.plot.forest``, ``bf.baselines.random_effects``, ...) and the
# subpackage that holds each.
_NAMESPACES = {
    "baselines": "bayesfuse.analysis.baselines",
    "datasets": "bayesfuse.data.datasets",
    "plot": "bayesfuse.reporting.figures",
    "sensitivity": "bayesfuse.analysis.sensitivity",
    "tables": "bayesfuse.reporting.tables",
    "report": "bayesfuse.reporting.report",
}


def __getattr__(name: str):
    """Import submodules (pandas, JAX, DoubleML) only when a name is first used, so that
    ``import bayesfuse`` and ``bayesfuse --help`` stay fast."""
    import importlib

    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name in _NAMESPACES:
        return importlib.import_module(_NAMESPACES[name])
    raise AttributeError(f"module 'bayesfuse' has no attribute {name!r}")
