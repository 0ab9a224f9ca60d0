"""The registry of families: :data:`FAMILIES`, filled by :func:`register`.

Each family module decorates its :class:`~bayesfuse.families.base.Family` subclass with
:func:`register`; importing :mod:`bayesfuse.families` imports every family module, so the
registry is complete once that package is imported (look a family up with
:func:`bayesfuse.families.get_family`). This module imports nothing of bayesfuse, so the
family modules and the package can both use it without an import cycle.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FAMILIES", "register"]

#: family name (and each alias) -> its Family subclass
FAMILIES: dict[str, type[Any]] = {}


def register(cls: type[Any]) -> type[Any]:
    """Class decorator adding a family to :data:`FAMILIES` under ``cls.name`` and its
    ``cls.aliases``."""
    FAMILIES[cls.name] = cls
    for alias in cls.aliases:
        FAMILIES[alias] = cls
    return cls
