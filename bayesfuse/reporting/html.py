"""The one HTML writer behind bayesfuse's pages (the fit report and the sensitivity page).

It holds what every page shares: the document skeleton with its Content-Security-Policy,
the style sheet, figures as ``data:`` URIs at one resolution, escaping, and the table, image
and key-value helpers. A page is one self-contained file: figures are inline base64 PNG
images and the style sheet is inline; the CSP meta tag forbids every request but ``data:``
images and inline styles, so the file can be mailed, archived and opened offline.
"""

from __future__ import annotations

import base64
import html
import io
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from bayesfuse import __version__
from bayesfuse.errors import ReportError
from bayesfuse.reporting.tables import format_table

__all__ = [
    "DPI",
    "CSP",
    "CSS",
    "escape",
    "as_figure",
    "figure_to_data_uri",
    "close_figures",
    "image",
    "table",
    "key_values",
    "document",
]

#: pixels per inch of the embedded PNG figures
DPI = 110
#: the only sources a page may use: inline styles and data: images
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

CSS = """
:root { --ink: #1d1d1f; --muted: #5f6368; --rule: #d9dce1; --accent: #1b4f8a;
        --pass: #1e7b34; --fail: #b3261e; --soft: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
       font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 1.6em; margin: 0.2em 0 0.1em; }
h2 { font-size: 1.25em; margin-top: 2.2em; padding-bottom: 0.25em;
     border-bottom: 2px solid var(--accent); }
h3 { font-size: 1.05em; margin-top: 1.6em; }
p.meta, .note { color: var(--muted); font-size: 0.9em; }
nav { background: var(--soft); padding: 8px 14px; border-radius: 6px; margin: 14px 0; }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; }
table.data { border-collapse: collapse; margin: 0.6em 0 1em; font-size: 0.86em; }
table.data caption { text-align: left; color: var(--muted); padding-bottom: 4px; }
table.data th, table.data td { padding: 3px 10px; border-bottom: 1px solid var(--rule);
                               text-align: left; white-space: nowrap; }
table.data thead th { border-bottom: 2px solid var(--ink); }
table.data .num { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; max-height: 560px; overflow-y: auto; }
dl.kv { display: grid; grid-template-columns: max-content auto; gap: 2px 18px; }
dl.kv dt { color: var(--muted); } dl.kv dd { margin: 0; }
figure { margin: 1em 0 1.4em; } figure img { max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 0.88em; margin-top: 4px; }
.verdict { display: inline-block; padding: 2px 12px; border-radius: 4px; color: #fff;
           font-weight: 600; }
.verdict.pass { background: var(--pass); } .verdict.fail { background: var(--fail); }
.warn { color: var(--fail); }
code { background: var(--soft); padding: 0 4px; border-radius: 3px; }
"""


def escape(text: Any) -> str:
    """``str(text)`` with ``& < > " '`` escaped, for element text and attribute values."""
    return html.escape(str(text), quote=True)


# ---------------------------------------------------------------------- figures
def as_figure(obj: Any) -> Any:
    """The Matplotlib ``Figure`` of a Figure, an Axes (or other artist) or an array of Axes.

    Raises
    ------
    ReportError
        For anything else.
    """
    from matplotlib.artist import Artist
    from matplotlib.figure import Figure

    if isinstance(obj, Figure):
        return obj
    if isinstance(obj, Artist) and obj.figure is not None:  # Axes and other artists
        return obj.figure
    if isinstance(obj, np.ndarray) and obj.size and isinstance(obj.flat[0], Artist):
        return obj.flat[0].figure
    raise ReportError(
        f"Expected a Matplotlib Figure, Axes or array of Axes; got {type(obj).__name__}."
    )


def figure_to_data_uri(figure: Any, dpi: int = DPI) -> str:
    """A Matplotlib figure as a ``data:image/png;base64,...`` URI.

    Parameters
    ----------
    figure : matplotlib Figure, Axes, or array of Axes
    dpi : int
        Resolution (default :data:`DPI`, the same for every page).

    Returns
    -------
    str

    Examples
    --------
    >>> import matplotlib.pyplot as plt
    >>> import bayesfuse as bf
    >>> fig, ax = plt.subplots()
    >>> uri = bf.report.figure_to_data_uri(fig, dpi=80)
    >>> uri.startswith("data:image/png;base64,")
    True
    """
    figure = as_figure(figure)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight",
                       facecolor="white", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def close_figures(figures: Iterable[Any]) -> None:
    """Close figures made with ``pyplot`` once they are embedded (frees their memory)."""
    import matplotlib.pyplot as plt

    for fig in figures:
        plt.close(as_figure(fig))


# ---------------------------------------------------------------------- elements
def image(uri: str, alt: str, caption: str | None = None) -> str:
    """A ``<figure>`` with an inline image and an optional caption.

    Parameters
    ----------
    uri : str
        A ``data:`` URI (:func:`figure_to_data_uri`).
    alt : str
        Text alternative of the image.
    caption : str, optional
    """
    text = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{escape(alt)}">{text}</figure>\n'


def table(frame: pd.DataFrame, digits: int = 3, caption: str | None = None,
          names: Mapping[str, str] | None = None, index: bool = False,
          max_rows: int | None = None) -> str:
    """A DataFrame as a scrollable HTML table (:func:`~bayesfuse.reporting.tables.format_table`).

    Parameters
    ----------
    frame : DataFrame
    digits : int
        Decimals of non-integer numbers.
    caption : str, optional
    names : mapping, optional
        Display names of columns.
    index : bool
        Write the index as the first column.
    max_rows : int, optional
        Show only the first rows, with a note of how many were left out.
    """
    shown = frame if max_rows is None or len(frame) <= max_rows else frame.head(max_rows)
    text = format_table(shown, "html", digits=digits, headers=names, index=index,
                        caption=caption)
    more = ""
    if len(shown) < len(frame):
        more = f'<p class="note">{len(frame) - len(shown)} more rows not shown.</p>\n'
    return f'<div class="scroll">{text}</div>\n{more}'


def key_values(pairs: Iterable[tuple[str, Any]]) -> str:
    """A definition list of (name, value) pairs, two columns."""
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in pairs)
    return f'<dl class="kv">{items}</dl>\n'


def document(title: str, body: str) -> str:
    """A complete HTML5 page: the CSP, the style sheet, ``title`` and ``body`` (in ``<main>``).

    Parameters
    ----------
    title : str
        The ``<title>`` (plain text, escaped here).
    body : str
        HTML of the page's content, headings included.

    Returns
    -------
    str
    """
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="bayesfuse {escape(__version__)}">\n'
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f"{body}"
        "</main>\n</body>\n</html>\n"
    )
