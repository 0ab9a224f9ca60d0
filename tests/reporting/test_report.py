"""``bayesfuse report`` / ``write_report``: contents, self-containment, CLI, sensitivity hook."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import stat
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from report_fits import cluster_fit, exact_fit, nuts_fit  # noqa: E402

from bayesfuse.cli import main  # noqa: E402
from bayesfuse.errors import BayesfuseError, OptionError, ReportError  # noqa: E402
from bayesfuse.reporting.report import render_report, write_report  # noqa: E402
from bayesfuse.reporting.tables import results_table  # noqa: E402

PNG = "data:image/png;base64,"


class Page(HTMLParser):
    """Collects tags with their attributes, tables (caption, rows of cell text), style text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.tables: list[dict] = []
        self.styles: list[str] = []
        self._cell: list[str] | None = None
        self._caption: list[str] | None = None
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append({"caption": "", "rows": []})
        elif tag == "caption":
            self._caption = []
        elif tag == "tr":
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "style":
            self._in_style = True

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1]["rows"][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "caption" and self._caption is not None:
            self.tables[-1]["caption"] = "".join(self._caption).strip()
            self._caption = None
        elif tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._caption is not None:
            self._caption.append(data)
        if self._in_style:
            self.styles.append(data)

    def images(self) -> list[str]:
        return [attrs.get("src") or "" for tag, attrs in self.tags if tag == "img"]

    def table(self, caption_start: str) -> dict:
        found = [t for t in self.tables if t["caption"].startswith(caption_start)]
        assert len(found) == 1, [t["caption"] for t in self.tables]
        return found[0]


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def assert_self_contained(text: str, page: Page) -> None:
    """No resource outside the file: data: images, in-page links, no scripts or links."""
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed", "base"), tag
        for name in ("src", "href", "srcset", "action", "data", "poster"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith(("data:image/png;base64,", "#")), (tag, name, value[:60])
    assert not re.search(r"https?://", text)
    style = "".join(page.styles)
    assert "@import" not in style and "url(" not in style and "@font-face" not in style
    csp = [a for t, a in page.tags if t == "meta" and a.get("http-equiv") ==
           "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]["content"]


def assert_images_decode(sources: list[str]) -> None:
    for src in sources:
        assert src.startswith(PNG)
        pixels = mpimg.imread(io.BytesIO(base64.b64decode(src[len(PNG):])), format="png")
        assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50
        assert pixels.std() > 0.01  # not a blank image


# ---------------------------------------------------------------------- contents
def test_report_holds_the_results_table_and_every_figure(tmp_path):
    fit = exact_fit()
    path = write_report(fit, tmp_path / "report.html", ci_prob=0.9, source="exact.nc")
    text = path.read_text(encoding="utf-8")
    page = parse(text)
    assert_self_contained(text, page)
    # results table: every task's values as in results_table, to 3 decimals
    table = page.table("Fused estimates (90% ETI)")
    header, *rows = table["rows"]
    assert header == ["Task", "Stage-1 estimate", "Stage-1 SE", "Posterior mean",
                      "Posterior SD", "90% ETI lower", "90% ETI upper", "Shrinkage"]
    expected = results_table(fit, ci_prob=0.9)
    assert [r[0] for r in rows] == fit.tasks
    for row, (_, want) in zip(rows, expected.iterrows(), strict=True):
        values = [want[c] for c in ("estimate", "se", "mean", "sd", "eti_low", "eti_high",
                                    "shrinkage")]
        assert row[1:] == [f"{v:.3f}" for v in values]
    # hyperparameters with the priors as used
    hyper = [t for t in page.tables if t["rows"] and t["rows"][0][0] == "Hyperparameter"]
    assert [r[0] for r in hyper[0]["rows"][1:]] == ["mu", "tau"]
    assert hyper[0]["rows"][1][-1] == fit.priors["mu"]
    # figures: rank plots, forest, shrinkage, prior vs posterior, similarity (exact: no energy)
    alts = [attrs.get("alt") for tag, attrs in page.tags if tag == "img"]
    assert alts == ["Rank plots of the hyperparameters", "Forest plot", "Shrinkage plot",
                    "Prior and posterior", "Similarity heatmap"]
    assert_images_decode(page.images())
    assert "note warn" not in text  # every figure was drawn
    for section in ("data", "model", "diagnostics", "results", "hyper", "similarity"):
        assert f'id="{section}"' in text
    assert 'id="sensitivity"' not in text  # none given
    assert "exact.nc" in text
    verdict = "PASS" if fit.diagnostics().ok else "FAIL"
    assert f'class="verdict {verdict.lower()}">{verdict}<' in text


def test_report_of_a_cluster_fit_shows_the_clustering(tmp_path):
    fit = cluster_fit()
    text = render_report(fit, interval="hdi")
    page = parse(text)
    assert_self_contained(text, page)
    assert page.table("Fused estimates (95% HDI)")["rows"][0][5] == "95% HDI lower"
    clustering = [t for t in page.tables if t["rows"] and t["rows"][0][:2] == ["task", "cluster"]]
    assert len(clustering) == 1
    structure = fit.structure()["clustering"]
    assert [r[:2] for r in clustering[0]["rows"][1:]] == [
        [t, str(c)] for t, c in zip(structure["task"], structure["cluster"], strict=True)]
    alts = [attrs.get("alt") for tag, attrs in page.tags if tag == "img"]
    assert alts == ["Rank plots of the hyperparameters", "Energy plot", "Forest plot",
                    "Shrinkage plot", "Prior and posterior", "Similarity heatmap"]
    assert_images_decode(page.images())
    assert "co-clustering probability" in text


def test_sensitivity_hook_adds_a_section():
    fit = nuts_fit()
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [3, 1, 2])
    table = pd.DataFrame({"prior": ["halfnormal(1)", "halfcauchy(5)"], "tau_mean": [4.1, 6.3]})
    text = render_report(fit, sensitivity={"Prior sweep": [table, fig],
                                           "Notes": "tau is prior-sensitive"})
    page = parse(text)
    assert 'id="sensitivity"' in text and '<a href="#sensitivity">' in text
    sweep = [t for t in page.tables if t["rows"] and t["rows"][0] == ["prior", "tau_mean"]]
    assert sweep[0]["rows"][1:] == [["halfnormal(1)", "4.100"], ["halfcauchy(5)", "6.300"]]
    assert "<p>tau is prior-sensitive</p>" in text
    assert len(page.images()) == 7  # six report figures + the sensitivity figure
    assert_images_decode(page.images())
    plt.close(fig)


def test_sensitivity_result_object_plugs_in():
    from bayesfuse.analysis import sensitivity as sens

    fit = nuts_fit()
    result = sens.sensitivity_analysis(fit, sweep=False, loo=False, factors=None)
    page = parse(render_report(fit, sensitivity=result))
    headings = [t for t, _ in page.tags if t == "h3"]
    assert headings  # sections from the result's tables
    rows = [t for t in page.tables if t["rows"] and "variable" in t["rows"][0]]
    assert rows and len(rows[0]["rows"]) - 1 == len(result.power_scaling)


def test_bad_input_fails_before_writing(tmp_path):
    fit = exact_fit()
    target = tmp_path / "r.html"
    with pytest.raises(ReportError, match="cannot put a set"):
        write_report(fit, target, sensitivity={"x": {1, 2}})
    with pytest.raises(OptionError, match="ci_prob"):
        write_report(fit, target, ci_prob=1.5)
    with pytest.raises(OptionError, match="'eti'"):
        write_report(fit, target, interval="central")
    with pytest.raises(ReportError, match="FusionResult"):
        render_report(fit.summary())
    with pytest.raises(ReportError, match="is a folder"):
        write_report(fit, tmp_path, force=True)
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary files left


def test_write_report_refuses_to_overwrite(tmp_path):
    target = tmp_path / "r.html"
    target.write_text("keep me")
    with pytest.raises(BayesfuseError, match="--force"):
        write_report(exact_fit(), target)
    assert target.read_text() == "keep me"
    write_report(exact_fit(), target, force=True)
    assert target.read_text().startswith("<!DOCTYPE html>")
    fresh = write_report(exact_fit(), tmp_path / "new.html")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600


# ---------------------------------------------------------------------- command line
def test_cli_report(tmp_path, capsys):
    fit_path = exact_fit().save(tmp_path / "fit.nc")
    out = tmp_path / "report.html"
    assert main(["report", str(fit_path), "-o", str(out), "--ci-prob", "0.8"]) == 0
    text = out.read_text(encoding="utf-8")
    assert parse(text).table("Fused estimates (80% ETI)")
    assert "fit.nc" in text
    capsys.readouterr()
    assert main(["report", str(fit_path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "--force" in err
    assert main(["report", str(fit_path), "-o", str(out), "--force", "--interval", "hdi"]) == 0
    assert parse(out.read_text(encoding="utf-8")).table("Fused estimates (95% HDI)")
    assert main(["report", str(tmp_path / "missing.nc"), "-o", str(tmp_path / "x.html")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["report", str(fit_path), "-o", str(tmp_path / "y.html"),
                 "--interval", "mode"]) == 2
    assert "'eti'" in capsys.readouterr().err
    assert not (tmp_path / "y.html").exists()


# ---------------------------------------------------------------------- browser
def _browser() -> str | None:
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.mark.skipif(_browser() is None, reason="no headless chromium on this machine")
def test_report_renders_in_a_headless_browser(tmp_path):
    """Every image decodes in a real browser. A copy of the report gets a probe script
    (and a CSP that allows only that inline script) which writes the result into the DOM;
    no network access is allowed by the CSP."""
    text = render_report(nuts_fit())
    n_images = text.count("<img ")
    probe = (
        "<script>window.addEventListener('load', function () {"
        "var imgs = Array.from(document.images);"
        "var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });"
        "var p = document.createElement('p'); p.id = 'probe';"
        "p.textContent = 'decoded ' + ok.length + ' of ' + imgs.length;"
        "document.body.appendChild(p); });</script>"
    )
    copy = text.replace("style-src 'unsafe-inline'",
                        "style-src 'unsafe-inline'; script-src 'unsafe-inline'")
    copy = copy.replace("</body>", probe + "</body>")
    page = tmp_path / "probe.html"
    page.write_text(copy, encoding="utf-8")
    result = subprocess.run(
        [_browser(), "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
         "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert f"decoded {n_images} of {n_images}" in result.stdout, result.stderr[-2000:]
    assert n_images == 6
    original = tmp_path / "report.html"
    original.write_text(text, encoding="utf-8")
    shot = tmp_path / "shot.png"
    subprocess.run([_browser(), "--headless", "--disable-gpu", "--no-sandbox",
                    f"--screenshot={shot}", "--window-size=1200,2000", original.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000
    assert Path(shot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_of_a_graph_fit_draws_the_task_graph():
    """gmrf/car fits get the task-graph figure (edge weights from fit.similarity())."""
    import numpy as np

    import bayesfuse as bf
    from bayesfuse.data.estimates import TaskEstimates
    from bayesfuse.families import FAMILIES, get_family

    get_family("exchangeable")  # fills the registry
    if "gmrf" not in FAMILIES:
        pytest.skip("no gmrf family in this checkout")
    rng = np.random.default_rng(0)
    theta = np.repeat([-1.0, 1.5], 3) + 0.1 * rng.standard_normal(6)
    est = TaskEstimates([f"g{k}" for k in range(6)], theta + 0.3 * rng.standard_normal(6),
                        np.full(6, 0.09))
    fit = bf.fuse(est, model="gmrf", chains=2, draws=200, warmup=200, seed=0, warn=False)
    text = render_report(fit)
    page = parse(text)
    assert_self_contained(text, page)
    alts = [attrs.get("alt") for tag, attrs in page.tags if tag == "img"]
    assert "Task graph" in alts and "Similarity heatmap" in alts
    assert "note warn" not in text
    assert_images_decode(page.images())
