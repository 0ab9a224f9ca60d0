"""Task-similarity priors ("families"), one module each, found by name in :data:`FAMILIES`.

Every module in this package whose name does not start with an underscore (other than
``base`` and ``registry``) is imported here and registers its family with
:func:`~bayesfuse.families.registry.register`: adding a family is adding a file (or a
subpackage, such as ``cluster``). ``within_corr`` registers no family: it holds the wrapper
that every family's ``within_corr`` option builds (see ``Family.__new__``).
"""

from __future__ import annotations

import importlib
import pkgutil

from bayesfuse.errors import SpecError
from bayesfuse.families.base import Family
from bayesfuse.families.registry import FAMILIES, register

__all__ = ["FAMILIES", "Family", "get_family", "register"]

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "registry") and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")


def get_family(name: str) -> type[Family]:
    """The family class registered as ``name``.

    Raises
    ------
    SpecError
        If no family is registered under ``name`` (the message lists the valid names).
    """
    if name not in FAMILIES:
        raise SpecError(
            f"Unknown model family '{name}'. Valid families: {', '.join(sorted(FAMILIES))}."
        )
    return FAMILIES[name]
