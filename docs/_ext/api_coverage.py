"""Fail the build (a warning under ``-W``) when a public name has no API entry.

The public names are read from the package itself: ``bayesfuse.__all__``, the ``__all__`` of
every public namespace (``bf.plot``, ``bf.tables``, ``bf.sensitivity``, ``bf.baselines``,
``bf.datasets``, ``bf.report``), the public classes' own methods and properties, and the
classes in ``bf.errors``. A name added to one of these without a docstring (autodoc skips
it) or without an entry in ``docs/api/`` is reported here. A name documented where it is
defined (``bayesfuse.errors.BayesfuseError`` for ``bf.BayesfuseError``) counts.

Every public function, class and method must also have an ``Examples`` section (numpydoc);
properties, data and the error classes need none.
"""

from __future__ import annotations

import importlib
import inspect
import re

from sphinx.util import logging

logger = logging.getLogger(__name__)

_MODULES = {"errors", "baselines", "datasets", "__version__"}
_EXAMPLES = re.compile(r"^Examples\n-{8}", re.MULTILINE)


def _canonical(obj) -> str | None:
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}.{qualname}" if module and qualname else None


def public_names(needs_example: set[str] | None = None) -> dict[str, str | None]:
    """Public names (``bayesfuse.plot.forest``) mapped to where each object is defined.

    Names whose object must have an Examples section are added to ``needs_example``.
    """
    import bayesfuse

    names: dict[str, str | None] = {}
    classes: list[tuple[str, type]] = []
    examples = needs_example if needs_example is not None else set()

    def add(qualified: str, obj) -> None:
        names[qualified] = _canonical(obj) if inspect.isclass(obj) else None
        if inspect.isfunction(obj) or (inspect.isclass(obj)
                                       and not issubclass(obj, BaseException | Warning)):
            if not _EXAMPLES.search(inspect.getdoc(obj) or ""):
                examples.add(qualified)
        if inspect.isclass(obj) and not issubclass(obj, BaseException | Warning):
            classes.append((qualified, obj))

    for name in bayesfuse.__all__:
        if name not in _MODULES:
            add(f"bayesfuse.{name}", getattr(bayesfuse, name))
    for space, module_name in bayesfuse._NAMESPACES.items():
        module = importlib.import_module(module_name)
        for name in module.__all__:
            add(f"bayesfuse.{space}.{name}", getattr(module, name))
    for qualified, cls in classes:  # methods and properties; data fields are "Attributes"
        for member, value in vars(cls).items():
            if not member.startswith("_") and (callable(value) or isinstance(
                    value, property | classmethod | staticmethod)):
                names[f"{qualified}.{member}"] = None
                method = value.__func__ if isinstance(value, classmethod | staticmethod) else value
                if inspect.isfunction(method) and not _EXAMPLES.search(
                        inspect.getdoc(method) or ""):
                    examples.add(f"{qualified}.{member}")
    errors = importlib.import_module("bayesfuse.errors")
    for name in errors.__all__:
        names[f"bayesfuse.errors.{name}"] = None
    return names


def check(app, env) -> None:
    documented = set(env.get_domain("py").objects)
    no_example: set[str] = set()
    names = public_names(no_example)
    for name in sorted(no_example):
        logger.warning("public name %s has no Examples section in its docstring", name,
                       type="bayesfuse", subtype="examples")
    for name, canonical in sorted(names.items()):
        if name not in documented and canonical not in documented:
            logger.warning("public name %s has no API entry (give it a docstring and list it "
                           "in docs/api/)", name, type="bayesfuse", subtype="api")


def setup(app):
    app.connect("env-check-consistency", check)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
