"""Exceptions raised by bayesfuse.

Every error a user can provoke is a :class:`BayesfuseError`; its message says what was
wrong, what was expected, and how to fix it. The command line prints that message as one
line and exits with status 2.
"""

from __future__ import annotations

__all__ = [
    "BayesfuseError",
    "OptionError",
    "EstimatesError",
    "DataError",
    "PriorError",
    "SpecError",
    "FitError",
    "CliUsageError",
    "ReportError",
    "BayesfuseWarning",
    "TaskWarning",
    "ConvergenceWarning",
]


class BayesfuseError(Exception):
    """Base class of every error bayesfuse raises on bad input or a failed step."""


class OptionError(BayesfuseError, ValueError):
    """An argument outside its allowed values: a probability outside (0, 1), a choice that
    is not one of the options. Raised by :mod:`bayesfuse._validation` wherever it is checked."""


class EstimatesError(BayesfuseError, ValueError):
    """Invalid per-task estimates (θ̂, covariance, task ids, covariates) or estimates files."""


class DataError(BayesfuseError, ValueError):
    """Invalid individual-level data given to stage 1 (missing columns, bad treatment...)."""


class PriorError(BayesfuseError, ValueError):
    """A prior string that cannot be parsed or does not fit the parameter it is given to."""


class SpecError(BayesfuseError, ValueError):
    """An unknown model name or an invalid model specification (TOML)."""


class FitError(BayesfuseError, RuntimeError):
    """A fit that cannot be run or a saved fit that cannot be read."""


class CliUsageError(BayesfuseError, ValueError):
    """Bad command-line input (a flag value, an output path)."""


class ReportError(BayesfuseError, ValueError):
    """A plot, table or report that cannot be made from the given fit or options."""


class BayesfuseWarning(UserWarning):
    """Base class of bayesfuse warnings."""


class TaskWarning(BayesfuseWarning):
    """A task flagged in stage 1 (few treated/controls, extreme propensities, excluded)."""


class ConvergenceWarning(BayesfuseWarning):
    """The sampler diagnostics failed (R-hat, ESS, divergences, BFMI, tree depth)."""
