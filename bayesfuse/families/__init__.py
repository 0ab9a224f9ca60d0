"""Task-similarity priors ("families"), one module each, found by name in :data:`FAMILIES`.

Every module in this package (other than ``base``) is imported here, and registers its
family with :func:`~bayesfuse.families.base.register`: adding a family is adding a file.
"""

from __future__ import annotations

import importlib
import pkgutil

from bayesfuse.families.base import FAMILIES, Family, get_family, register

__all__ = ["FAMILIES", "Family", "get_family", "register"]

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
