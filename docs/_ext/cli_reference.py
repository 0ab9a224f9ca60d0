"""The ``bayesfuse-cli`` directive: the command-line reference, generated from the CLI.

The typer app (``bayesfuse.cli.app``) is turned into its Click command tree and every
command is written as a section: its help text, its usage line and each argument and option
with its type, default and help. The page therefore cannot drift from the CLI: a new option
appears at the next build, and a command without help text fails the build (``-W``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from docutils import nodes
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)


_TYPE_NAMES = {int: "integer", float: "float", str: "text", bool: "boolean", Path: "path"}


def _is_argument(param: Any) -> bool:
    # works with Click's own classes and with the ones typer >= 0.2x vendors
    return getattr(param, "param_type_name", "") == "argument"


def _type_name(param: Any) -> str:
    if getattr(param, "type", None) is not None:
        return param.type.name
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    name = _TYPE_NAMES.get(annotation, getattr(annotation, "__name__", "text").lower())
    return "text" if name == "list" else name


def _param_names(param: Any) -> str:
    if _is_argument(param):
        return param.name.upper() + ("..." if param.nargs == -1 else "")
    names = ", ".join(param.opts)
    if param.secondary_opts:
        names += " / " + ", ".join(param.secondary_opts)
    return names


def _param_details(param: Any) -> str:
    bits = []
    if not getattr(param, "is_flag", False):
        bits.append(_type_name(param))
    if param.required:
        bits.append("required")
    elif param.default not in (None, (), []) and not callable(param.default):
        bits.append(f"default {param.default!r}" if isinstance(param.default, str)
                    else f"default {param.default}")
    if getattr(param, "multiple", False):
        bits.append("repeatable")
    return ", ".join(bits)


def _usage(name: str, command: Any) -> str:
    arguments = [_param_names(p) for p in command.params if _is_argument(p)]
    return " ".join(["bayesfuse", name, "[OPTIONS]", *arguments])


def _paragraphs(text: str) -> list[nodes.paragraph]:
    blocks = [" ".join(block.split()) for block in text.strip().split("\n\n")]
    return [nodes.paragraph(text=block) for block in blocks if block]


class CliReference(SphinxDirective):
    """Write one section per ``bayesfuse`` command."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from bayesfuse.cli import app

        self.env.metadata[self.env.docname]["bayesfuse_cli"] = True
        group = typer.main.get_command(app)
        out: list[nodes.Node] = [*_paragraphs(group.help or "")]
        for name, command in group.commands.items():
            out.append(self._command(name, command))
        return out

    def _command(self, name: str, command: Any) -> nodes.section:
        title = f"bayesfuse {name}"
        section = nodes.section(ids=[nodes.make_id(f"cli-{name}")],
                                names=[nodes.fully_normalize_name(title)])
        section += nodes.title(text=title)
        if not (command.help or "").strip():
            logger.warning("bayesfuse %s has no help text", name, location=self.get_location())
        section.extend(_paragraphs(command.help or ""))
        section += nodes.literal_block(text=_usage(name, command), language="text")
        items = nodes.definition_list()
        for param in command.params:
            help_text = (getattr(param, "help", None) or "").strip()
            if not help_text:
                logger.warning("bayesfuse %s: %s has no help text", name, param.name,
                               location=self.get_location())
            term = nodes.term()
            term += nodes.literal(text=_param_names(param))
            details = _param_details(param)
            if details:
                term += nodes.Text("  ")
                term += nodes.emphasis(text=f"({details})")
            definition = nodes.definition()
            definition.extend(_paragraphs(help_text) or [nodes.paragraph()])
            item = nodes.definition_list_item()
            item += term
            item += definition
            items += item
        section += items
        self.state.document.note_implicit_target(section)
        return section


def _always_outdated(app, env, added, changed, removed) -> list[str]:
    """Re-read the pages that hold the directive at every build: the CLI is not a file
    Sphinx watches, so an incremental build would keep an old option list."""
    return [name for name, meta in env.metadata.items()
            if meta.get("bayesfuse_cli") and name not in removed]


def setup(app):
    app.add_directive("bayesfuse-cli", CliReference)
    app.connect("env-get-outdated", _always_outdated)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
