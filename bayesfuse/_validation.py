"""One place that checks the simple arguments every public function shares.

Each checker names the argument, what was expected and what came, and raises
:class:`~bayesfuse.errors.OptionError` (one class for this kind of mistake, whichever
function was called). The pattern follows scikit-learn's ``utils/_param_validation.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from bayesfuse.errors import OptionError

__all__ = ["check_probability", "check_choice"]


def check_probability(value: Any, name: str = "ci_prob", example: float = 0.95) -> float:
    """Return ``value`` as a float strictly inside (0, 1), or raise :class:`OptionError`.

    Parameters
    ----------
    value : float
        The probability given by the user.
    name : str
        The argument's name, used in the message.
    example : float
        A typical value, shown in the message.

    Examples
    --------
    >>> check_probability(0.9)
    0.9
    """
    try:
        prob = float(value)
    except (TypeError, ValueError):
        prob = math.nan
    if isinstance(value, bool) or not 0.0 < prob < 1.0:
        raise OptionError(f"{name} must be a number in (0, 1), e.g. {example:g}; got {value!r}.")
    return prob


def check_choice(value: Any, name: str, options: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``options``, else raise :class:`OptionError`.

    Parameters
    ----------
    value : str
        The choice given by the user.
    name : str
        The argument's name, used in the message.
    options : iterable of str
        The valid choices, listed in the message in this order.

    Examples
    --------
    >>> check_choice("hdi", "interval", ("eti", "hdi"))
    'hdi'
    """
    options = tuple(options)
    if not isinstance(value, str) or value not in options:
        raise OptionError(f"{name} must be one of {', '.join(map(repr, options))}; "
                          f"got {value!r}.")
    return value
