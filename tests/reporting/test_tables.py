"""``bf.tables``: result tables as DataFrame, CSV, Markdown, LaTeX and HTML."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from report_fits import exact_fit

import bayesfuse as bf
from bayesfuse.errors import OptionError, ReportError
from bayesfuse.reporting.tables import format_table, hyper_table, results_table


def test_dataframe_matches_the_summary_for_both_interval_kinds():
    fit = exact_fit()
    summary = fit.summary(0.8)
    eti = results_table(fit, ci_prob=0.8)
    assert list(eti.columns) == ["task", "param", "estimate", "se", "mean", "sd", "eti_low",
                                 "eti_high", "shrinkage"]
    np.testing.assert_allclose(eti["eti_low"], summary["eti_low"])
    hdi = results_table(fit, ci_prob=0.8, interval="hdi", diagnostics=True)
    np.testing.assert_allclose(hdi["hdi_high"], summary["hdi_high"])
    assert hdi.attrs == {"ci_prob": 0.8, "interval": "hdi"}
    assert list(hdi.columns[-3:]) == ["r_hat", "ess_bulk", "ess_tail"]
    rounded = results_table(fit, digits=1)
    assert (rounded["mean"] * 10 % 1).abs().max() == pytest.approx(0.0, abs=1e-9)
    assert fit.results_table(ci_prob=0.8).equals(eti)


def test_csv_round_trips():
    fit = exact_fit()
    back = pd.read_csv(io.StringIO(results_table(fit, fmt="csv")))
    pd.testing.assert_frame_equal(back, results_table(fit), check_dtype=False,
                                  check_exact=False, rtol=1e-12)


def test_markdown_table():
    fit = exact_fit()
    text = results_table(fit, ci_prob=0.9, fmt="markdown", digits=2)
    lines = text.strip().splitlines()
    assert lines[0] == ("| Task | Stage-1 estimate | Stage-1 SE | Posterior mean | Posterior SD "
                        "| 90% ETI lower | 90% ETI upper | Shrinkage |")
    assert lines[1] == "| :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    assert len(lines) == 2 + len(fit.tasks)
    first = results_table(fit, ci_prob=0.9).iloc[0]
    assert lines[2] == "| A | " + " | ".join(
        f"{first[c]:.2f}" for c in ("estimate", "se", "mean", "sd", "eti_low", "eti_high",
                                    "shrinkage")) + " |"
    hyper = hyper_table(fit, fmt="markdown").splitlines()
    assert hyper[0].startswith("| Hyperparameter | Posterior mean")
    assert hyper[2].startswith("| mu |") and hyper[2].endswith(f"| {fit.priors['mu']} |")


def test_latex_table_escapes_and_uses_booktabs():
    fit = exact_fit()
    text = results_table(fit, fmt="latex", interval="hdi")
    lines = text.strip().splitlines()
    assert lines[0] == r"\begin{tabular}{lrrrrrrr}"
    assert lines[1] == r"\toprule" and lines[3] == r"\midrule" and lines[-2] == r"\bottomrule"
    assert r"95\% HDI lower" in lines[2]
    row_c = next(line for line in lines if line.startswith("C &"))
    assert row_c.startswith(r"C & $-$3.000 & 16.000 &")
    frame = pd.DataFrame({"my_task": ["a&b", "50%"], "value": [-0.5, 1.25]})
    wrapped = format_table(frame, "latex", digits=1, caption="Effects_1")
    assert r"\caption{Effects\_1}" in wrapped and r"\begin{table}[htbp]" in wrapped
    assert r"my\_task & value \\" in wrapped
    assert r"a\&b & $-$0.5 \\" in wrapped and r"50\% & 1.2 \\" in wrapped


def test_html_and_markdown_writers_escape():
    frame = pd.DataFrame({"task": ["<b>x</b>", "a|b"], "n": [3, 4], "x": [np.nan, 2.0]})
    html_text = format_table(frame, "html")
    assert "&lt;b&gt;x&lt;/b&gt;" in html_text and "<b>" not in html_text
    assert '<td class="num">–</td>' in html_text and '<td class="num">3</td>' in html_text
    markdown = format_table(frame, "markdown")
    assert r"a\|b" in markdown


def test_bad_options_are_named():
    fit = exact_fit()
    with pytest.raises(OptionError, match="fmt must be one of 'dataframe', 'csv', 'markdown'"):
        results_table(fit, fmt="xlsx")
    with pytest.raises(ReportError, match="digits"):
        results_table(fit, fmt="markdown", digits=-1)
    with pytest.raises(OptionError, match="'hdi'"):
        hyper_table(fit, interval="central")
    with pytest.raises(ReportError, match="DataFrame"):
        format_table([1, 2], "markdown")
    assert bf.tables.FORMATS == ("dataframe", "csv", "markdown", "latex", "html")


def test_borrowing_columns_follow_the_summary():
    """``borrowing=True`` adds how much each task borrows; effective n only with nₖ."""
    fit = exact_fit()  # eight schools: no sample sizes
    table = results_table(fit, borrowing=True, diagnostics=True)
    assert list(table.columns[8:]) == ["shrinkage", "variance_reduction", "r_hat", "ess_bulk",
                                       "ess_tail"]
    summary = fit.summary()
    np.testing.assert_allclose(table["variance_reduction"], 1 - summary["sd"] ** 2
                               / summary["se"] ** 2, rtol=1e-12)
    text = results_table(fit, fmt="markdown", borrowing=True, digits=2).splitlines()
    assert text[0].endswith("| Shrinkage | Variance reduction |")
    # effective n and n gained are counts: whole numbers in text and rounded tables
    frame = pd.DataFrame({"task": ["a"], "effective_n": [123.456], "n_gained": [23.456]})
    assert format_table(frame, "markdown").splitlines()[2] == "| a | 123 | 23 |"
