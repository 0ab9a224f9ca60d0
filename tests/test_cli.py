"""The command line: thin over the API; bad input gives exit 2 and one line on stderr."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import bayesfuse as bf
from bayesfuse.cli import main
from bayesfuse.data.estimates import TaskEstimates

TINY = ["--chains", "2", "--draws", "200", "--warmup", "200"]


@pytest.fixture
def estimates_csv(tmp_path, eight_schools):
    return eight_schools.to_csv(tmp_path / "estimates.csv")


def _one_error_line(capsys):
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def test_fuse_writes_fit_and_summary(tmp_path, estimates_csv, capsys):
    fit_path, summary_path = tmp_path / "fit.nc", tmp_path / "summary.csv"
    code = main(["fuse", str(estimates_csv), "--model", "exchangeable", "--prior",
                 "tau=halfnormal(5)", "-o", str(fit_path), "--summary", str(summary_path),
                 "--seed", "3", *TINY])
    assert code == 0
    fit = bf.load_fit(fit_path)
    assert fit.priors["tau"] == "halfnormal(5)"
    summary = pd.read_csv(summary_path)
    np.testing.assert_allclose(summary["mean"], fit.summary()["mean"])
    out = capsys.readouterr().out
    assert "Fused estimates" in out and "Hyperparameters" in out
    # an existing output needs --force
    assert main(["fuse", str(estimates_csv), "-o", str(fit_path), *TINY]) == 2
    assert "exists; add --force" in _one_error_line(capsys)
    assert fit.meta["collapsed"]
    # --plain samples θ itself (collapsed=False)
    plain_path = tmp_path / "plain.nc"
    assert main(["fuse", str(estimates_csv), "-o", str(plain_path), "--plain", *TINY]) == 0
    assert not bf.load_fit(plain_path).meta["collapsed"]


def test_fuse_prints_bracketed_names_whole(tmp_path, capsys, monkeypatch):
    """Names like mu[read] and task ids with brackets are text, not rich markup tags."""
    monkeypatch.setenv("COLUMNS", "80")
    rng = np.random.default_rng(5)
    theta_hat = rng.normal([0.2, -0.1], 0.3, size=(8, 2))
    cov = np.tile(np.array([[0.04, 0.01], [0.01, 0.05]]), (8, 1, 1))
    est = TaskEstimates([f"site[{k}]" for k in range(8)], theta_hat, cov,
                        params=["read", "math"])
    csv = est.to_csv(tmp_path / "vector.csv")
    assert main(["fuse", str(csv), "-o", str(tmp_path / "fit.nc"), *TINY]) == 0
    out = capsys.readouterr().out
    for name in ("mu[read]", "mu[math]", "tau[read]", "corr[read,math]", "site[3]"):
        assert name in out, name
    assert "…" not in out.split("Hyperparameters")[1]  # no name cut short
    assert "Priors: mu[read] ~ normal(" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fuse", "{missing}", "-o", "{out}"], "Estimates file not found"),
        (["fuse", "{csv}", "-o", "{out}", "--model", "nope"], "Unknown model 'nope'"),
        (["fuse", "{csv}", "-o", "{out}", "--prior", "tau"], "must look like name=value"),
        (["fuse", "{csv}", "-o", "{out}", "--prior", "tau=halfnormal(-1)"], "must be > 0"),
        (["fuse", "{csv}", "-o", "{out}", "--prior", "sigma=halfnormal(1)"],
         "Unknown prior name 'sigma'"),
        (["fuse", "{csv}", "-o", "{out}", "--chains", "0"], "'chains' must be an integer >= 1"),
        (["fuse", "{csv}", "-o", "{out}", "--backend", "stan"], "Unknown backend 'stan'"),
        (["fuse", "{csv}", "-o", "{out}", "--option", "bogus=1"], "Unknown option"),
        (["fuse", "{bad}", "-o", "{out}"], "needs columns 'task', 'estimate'"),
        (["fuse", "{csv}"], "Missing option"),
        (["fuse", "{csv}", "-o", "{out}", "--draws", "many"], "Invalid value for '--draws'"),
        (["frobnicate"], "No such command"),
        (["estimate", "{missing}", "--task", "t", "--outcome", "y", "--treatment", "d",
          "-o", "{out}"], "Data file not found"),
    ],
)
def test_bad_input_exit_2_one_line(args, message, tmp_path, estimates_csv, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    values = {"missing": str(tmp_path / "nope.csv"), "out": str(tmp_path / "o.nc"),
              "csv": str(estimates_csv), "bad": str(bad)}
    assert main([a.format(**values) for a in args]) == 2
    assert message in _one_error_line(capsys)


def test_console_script_has_no_traceback(tmp_path):
    """The installed entry point, as a user runs it."""
    exe = os.path.join(os.path.dirname(sys.executable), "bayesfuse")
    result = subprocess.run([exe, "fuse", str(tmp_path / "none.csv"), "-o",
                             str(tmp_path / "x.nc")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: Estimates file not found")
    assert "Traceback" not in result.stderr


def test_models_lists_shipped_specs(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("exchangeable", "pooled", "independent", "robust"):
        assert name in out


def test_help_exits_zero(capsys):
    assert main(["--help"]) == 0
    assert "fuse" in capsys.readouterr().out


def test_fuse_vector_estimates(tmp_path, capsys):
    rng = np.random.default_rng(1)
    cov = np.stack([np.array([[0.04, 0.01], [0.01, 0.09]])] * 6)
    est = TaskEstimates([f"s{k}" for k in range(6)], rng.normal(size=(6, 2)), cov,
                        params=["read", "math"])
    path = est.to_csv(tmp_path / "vec.csv")
    assert main(["fuse", str(path), "-o", str(tmp_path / "v.nc"), *TINY]) == 0
    fit = bf.load_fit(tmp_path / "v.nc")
    assert fit.params == ["read", "math"]
    assert "corr[read,math]" in fit.hyper_summary().index
