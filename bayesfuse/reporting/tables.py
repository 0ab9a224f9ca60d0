"""Result tables of a fit as a DataFrame, CSV, Markdown, LaTeX or HTML.

:func:`results_table` gives one row per (task, parameter): the stage-1 estimate and SE
next to the fused posterior mean, SD and a credible interval of a chosen kind (equal-tailed
or highest density) and probability. :func:`hyper_table` does the same for the
hyperparameters, and :func:`format_table` writes any such DataFrame as text. The text
writers are part of bayesfuse (no ``tabulate`` or ``jinja2`` needed); LaTeX output uses
the ``booktabs`` rules.

Examples
--------
>>> import bayesfuse as bf
>>> fit = bf.fuse(bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools()),
...               method="exact", seed=0)                                  # doctest: +SKIP
>>> print(bf.tables.results_table(fit, ci_prob=0.9, interval="hdi",
...                               fmt="markdown", digits=2))              # doctest: +SKIP
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from bayesfuse._validation import check_choice, check_probability
from bayesfuse.errors import ReportError

__all__ = ["results_table", "hyper_table", "format_table", "FORMATS"]

FORMATS = ("dataframe", "csv", "markdown", "latex", "html")
INTERVALS = ("eti", "hdi")
#: decimals of the text formats when ``digits`` is not given
DEFAULT_DIGITS = 3
#: columns always written as whole numbers
COUNT_COLUMNS = ("ess_bulk", "ess_tail", "n", "effective_n", "n_gained")
#: the columns of :func:`results_table` with ``borrowing=True`` (see ``FusionResult.summary``)
BORROWING_COLUMNS = ("variance_reduction", "effective_n", "n_gained")


def _check(ci_prob: float, interval: str, fmt: str, digits: int | None) -> float:
    """Check the options every table shares; return ``ci_prob`` as a float."""
    ci_prob = check_probability(ci_prob)
    check_choice(interval, "interval", INTERVALS)
    check_choice(fmt, "fmt", FORMATS)
    if digits is not None and (isinstance(digits, bool) or not isinstance(digits, int)
                               or not 0 <= digits <= 15):
        raise ReportError(f"digits must be an integer from 0 to 15 (decimals); got {digits!r}.")
    return ci_prob


def headers(ci_prob: float, interval: str) -> dict[str, str]:
    """Readable column headers of the text formats."""
    pct = f"{100 * ci_prob:g}%"
    kind = interval.upper()
    return {
        "task": "Task", "param": "Parameter", "name": "Hyperparameter",
        "estimate": "Stage-1 estimate", "se": "Stage-1 SE", "n": "n",
        "mean": "Posterior mean", "sd": "Posterior SD",
        f"{interval}_low": f"{pct} {kind} lower", f"{interval}_high": f"{pct} {kind} upper",
        "shrinkage": "Shrinkage", "variance_reduction": "Variance reduction",
        "effective_n": "Effective n", "n_gained": "n gained", "r_hat": "R-hat",
        "ess_bulk": "ESS bulk",
        "ess_tail": "ESS tail", "prior": "Prior",
    }


def results_table(fit: Any, ci_prob: float = 0.95, interval: str = "eti",
                  fmt: str = "dataframe", digits: int | None = None,
                  diagnostics: bool = False, borrowing: bool = False) -> pd.DataFrame | str:
    """Per-task fused estimates with stage-1 estimates and credible intervals.

    Parameters
    ----------
    fit : FusionResult
    ci_prob : float
        Credible interval probability, in (0, 1).
    interval : {"eti", "hdi"}
        Equal-tailed or highest-density interval.
    fmt : {"dataframe", "csv", "markdown", "latex", "html"}
        Output format. Text formats use readable headers (``"95% ETI lower"``) and leave
        out the ``param`` column when θ is scalar.
    digits : int, optional
        Decimals. Default: full precision for ``dataframe``/``csv``, 3 for the others.
    diagnostics : bool
        Add ``r_hat, ess_bulk, ess_tail`` per row.
    borrowing : bool
        Add how much each task borrows: ``variance_reduction, effective_n, n_gained``
        (defined in ``FusionResult.summary``; the last two are left out when the estimates
        carry no sample sizes).

    Returns
    -------
    DataFrame or str
        DataFrame with K·p rows, columns ``task, param, estimate, se, mean, sd,
        {interval}_low, {interval}_high, shrinkage`` (the pooling factor), then the
        borrowing and diagnostics columns asked for (``attrs``: ``ci_prob``,
        ``interval``); or its text.

    Examples
    --------
    >>> print(results_table(fit, fmt="markdown", borrowing=True))       # doctest: +SKIP
    """
    ci_prob = _check(ci_prob, interval, fmt, digits)
    summary = fit.summary(ci_prob)
    columns = ["task", "param", "estimate", "se", "mean", "sd", f"{interval}_low",
               f"{interval}_high", "shrinkage"]
    if borrowing:
        columns += list(BORROWING_COLUMNS if fit.estimates.n is not None
                        else BORROWING_COLUMNS[:1])
    if diagnostics:
        columns += ["r_hat", "ess_bulk", "ess_tail"]
    table = summary[columns].reset_index(drop=True)
    table.attrs = {"ci_prob": float(ci_prob), "interval": interval}
    drop = ["param"] if len(fit.params) == 1 else []
    return _output(table, fmt, digits, headers(ci_prob, interval), drop)


def hyper_table(fit: Any, ci_prob: float = 0.95, interval: str = "eti",
                fmt: str = "dataframe", digits: int | None = None) -> pd.DataFrame | str:
    """Posterior summary of the hyperparameters with the priors used.

    Parameters
    ----------
    fit : FusionResult
    ci_prob, interval, fmt, digits
        As in :func:`results_table`.

    Returns
    -------
    DataFrame or str
        One row per hyperparameter element, columns ``name, mean, sd, {interval}_low,
        {interval}_high, r_hat, ess_bulk, ess_tail, prior``; or its text.

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> fit = bf.fuse(est, model="exchangeable", seed=0)                   # doctest: +SKIP
    >>> print(bf.tables.hyper_table(fit, fmt="latex", digits=2))          # doctest: +SKIP
    """
    ci_prob = _check(ci_prob, interval, fmt, digits)
    hyper = fit.hyper_summary(ci_prob).reset_index()
    if "name" not in hyper.columns:  # an empty summary (independent, pooled...)
        hyper.insert(0, "name", pd.Series(dtype=str))
    columns = ["name", "mean", "sd", f"{interval}_low", f"{interval}_high", "r_hat",
               "ess_bulk", "ess_tail", "prior"]
    table = hyper[columns].reset_index(drop=True)
    table.attrs = {"ci_prob": float(ci_prob), "interval": interval}
    return _output(table, fmt, digits, headers(ci_prob, interval), [])


def _output(table: pd.DataFrame, fmt: str, digits: int | None, names: Mapping[str, str],
            drop: list[str]) -> pd.DataFrame | str:
    if fmt == "dataframe":
        return table if digits is None else _rounded(table, digits)
    if fmt == "csv":
        return (table if digits is None else _rounded(table, digits)).to_csv(index=False)
    shown = table.drop(columns=drop)
    return format_table(shown, fmt, DEFAULT_DIGITS if digits is None else digits,
                        headers=names)


def _rounded(table: pd.DataFrame, digits: int) -> pd.DataFrame:
    out = table.copy()
    for column in out.columns:
        if pd.api.types.is_float_dtype(out[column]):
            out[column] = out[column].round(0 if column in COUNT_COLUMNS else digits)
    out.attrs = dict(table.attrs)
    return out


# ---------------------------------------------------------------------- text writers
def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _cell(value: Any, digits: int, count: bool) -> str:
    """One value as text: fixed decimals, whole numbers for counts, '–' for missing."""
    if value is None or (isinstance(value, float | np.floating) and math.isnan(value)):
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if not math.isfinite(value):
            return "∞" if value > 0 else "−∞"
        if count:
            return f"{value:.0f}"
        text = f"{value:.{digits}f}"
        return "0" + text[2:] if text.startswith("-0") and float(text) == 0 else text
    return str(value)


def _cells(frame: pd.DataFrame, digits: int) -> list[list[str]]:
    columns = list(frame.columns)
    return [[_cell(v, digits, str(c) in COUNT_COLUMNS) for c, v in zip(columns, row,
                                                                      strict=True)]
            for row in frame.itertuples(index=False, name=None)]


def format_table(frame: pd.DataFrame, fmt: str = "markdown", digits: int = DEFAULT_DIGITS,
                 headers: Mapping[str, str] | None = None, index: bool = False,
                 caption: str | None = None) -> pd.DataFrame | str:
    """Write a DataFrame as Markdown, LaTeX, HTML or CSV text.

    Parameters
    ----------
    frame : DataFrame
    fmt : {"markdown", "latex", "html", "csv", "dataframe"}
    digits : int
        Decimals of non-integer numbers (counts such as ``ess_bulk`` are whole numbers).
    headers : mapping, optional
        Display names of columns (others keep their names).
    index : bool
        Write the index as the first column.
    caption : str, optional
        LaTeX: wraps the tabular in a ``table`` environment with this caption; HTML: a
        ``<caption>``; Markdown: a line above the table.

    Returns
    -------
    str (DataFrame for ``fmt="dataframe"``)

    Examples
    --------
    >>> import pandas as pd
    >>> import bayesfuse as bf
    >>> frame = pd.DataFrame({"task": ["a", "b"], "mean": [0.123, 0.456]})
    >>> print(bf.tables.format_table(frame, fmt="markdown", digits=2))
    | task | mean |
    | :--- | ---: |
    | a | 0.12 |
    | b | 0.46 |
    """
    check_choice(fmt, "fmt", FORMATS)
    if not isinstance(frame, pd.DataFrame):
        raise ReportError(f"format_table() needs a DataFrame; got {type(frame).__name__}.")
    if index:
        frame = frame.reset_index()
    if fmt == "dataframe":
        return frame
    if fmt == "csv":
        return frame.to_csv(index=False)
    names = [str((headers or {}).get(c, c)) for c in frame.columns]
    numeric = [_is_numeric(frame[c]) for c in frame.columns]
    rows = _cells(frame, digits)
    if fmt == "markdown":
        return _markdown(names, numeric, rows, caption)
    if fmt == "latex":
        return _latex(names, numeric, rows, caption)
    return _html(names, numeric, rows, caption)


def _markdown(names: list[str], numeric: list[bool], rows: list[list[str]],
              caption: str | None) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    rule = "| " + " | ".join("---:" if num else ":---" for num in numeric) + " |"
    body = [line(names), rule] + [line(r) for r in rows]
    return "\n".join(([caption, ""] if caption else []) + body) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "–": "--", "−": "$-$",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters in plain text."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _latex_number(text: str) -> str:
    return "$-$" + text[1:] if text.startswith("-") else latex_escape(text)


def _latex(names: list[str], numeric: list[bool], rows: list[list[str]],
           caption: str | None) -> str:
    spec = "".join("r" if num else "l" for num in numeric)
    lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(n) for n in names) + r" \\", r"\midrule"]
    for row in rows:
        cells = [_latex_number(c) if num else latex_escape(c)
                 for c, num in zip(row, numeric, strict=True)]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines = [r"\begin{table}[htbp]", r"\centering", rf"\caption{{{latex_escape(caption)}}}",
                 *lines, r"\end{table}"]
    return "\n".join(lines) + "\n"


def _html(names: list[str], numeric: list[bool], rows: list[list[str]],
          caption: str | None) -> str:
    def cell(tag: str, text: str, num: bool) -> str:
        return f'<{tag} class="num">{html.escape(text)}</{tag}>' if num \
            else f"<{tag}>{html.escape(text)}</{tag}>"

    head = "".join(cell("th", n, num) for n, num in zip(names, numeric, strict=True))
    body = "\n".join(
        "<tr>" + "".join(cell("td", c, num) for c, num in zip(r, numeric, strict=True))
        + "</tr>" for r in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (f'<table class="data">{cap}<thead><tr>{head}</tr></thead>\n'
            f"<tbody>\n{body}\n</tbody></table>\n")
