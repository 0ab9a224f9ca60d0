"""Sphinx configuration of the bayesfuse documentation (``make docs``).

The site is built offline: the PyData theme ships its own fonts and icons, MathJax is served
from the build (``sphinx-mathjax-offline``), and the notebooks are rendered with the outputs
stored in them (MyST-NB, nothing is executed).
"""

from __future__ import annotations

import filecmp
import shutil
import sys
from pathlib import Path

import bayesfuse

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))

project = "bayesfuse"
author = "the bayesfuse authors"
copyright = "the bayesfuse authors"  # noqa: A001 (Sphinx's name)
version = release = bayesfuse.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # serves MathJax 3 from _static/mathjax: no CDN
    "numpydoc",
    "myst_nb",
    "cli_reference",  # docs/_ext: the CLI reference, generated from the typer app
    "api_coverage",  # docs/_ext: fails the build when a public name has no API page
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
templates_path = ["_templates"]

# -- API reference (autosummary + numpydoc) --------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "inherited-members": False}
autodoc_typehints = "none"  # the numpydoc "Parameters" sections say the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = False
numpydoc_xref_param_type = False
# numpydoc's own checks: a docstring without a summary or with unknown sections fails -W
numpydoc_validation_checks = {"GL08"}
numpydoc_validation_exclude = {r"\._[a-z]", r"\.__", r"^bayesfuse\.errors\."}

# -- notebooks and Markdown --------------------------------------------------------------------
nb_execution_mode = "off"  # the gallery shows the outputs stored in the notebooks
nb_output_stderr = "remove"  # progress bars and compiler chatter
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
suppress_warnings = ["mystnb.unknown_mime_type"]

# -- HTML ------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"bayesfuse {release}"
html_static_path = ["_static"]
html_css_files = ["bayesfuse.css"]
html_show_sourcelink = False
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 6,
    "navbar_end": ["theme-switcher", "navbar-icon-links"],
    "icon_links": [],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
    "secondary_sidebar_items": ["page-toc"],
}
html_context = {"default_mode": "light"}


def _copy_notebooks() -> None:
    """Copy ``notebooks/*.ipynb`` into ``docs/gallery/`` (generated, not committed).

    Only changed files are copied, so an unchanged notebook is not rebuilt; a notebook
    removed from ``notebooks/`` is removed from the gallery.
    """
    gallery = DOCS / "gallery"
    gallery.mkdir(exist_ok=True)
    sources = {path.name: path for path in sorted((ROOT / "notebooks").glob("*.ipynb"))}
    for stale in gallery.glob("*.ipynb"):
        if stale.name not in sources:
            stale.unlink()
    for name, source in sources.items():
        target = gallery / name
        if not target.exists() or not filecmp.cmp(source, target, shallow=False):
            shutil.copyfile(source, target)


_copy_notebooks()
