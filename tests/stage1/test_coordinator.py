"""The coordinator: merging site summaries (checks name the file), atomic writes, --force."""

from __future__ import annotations

import json

import numpy as np
import pytest

import bayesfuse as bf
from bayesfuse.cli import main
from bayesfuse.data import summary as summary_module
from bayesfuse.data.summary import read_summaries, summary_dict, write_summary
from bayesfuse.errors import BayesfuseError, EstimatesError


def _task(name, estimate=0.1, variance=0.04, **extra):
    return {"task": name, "estimand": "ate", "params": ["theta"], "estimate": [estimate],
            "covariance": [[variance]], "n": 50, "n_treated": 20, "n_control": 30, **extra}


def _file(path, *tasks, **top):
    head = {"schema": "bayesfuse.summary", "version": 1, "seed": 0, "folds": 5,
            "created_at": "2024-01-01T00:00:00Z", **top}
    document = {**head, **tasks[0]} if len(tasks) == 1 else {**head, "tasks": list(tasks)}
    path.write_text(json.dumps(document))
    return path


def test_merge_keeps_file_order_and_provenance(tmp_path):
    a = _file(tmp_path / "a.json", _task("a", 0.1))
    bc = _file(tmp_path / "bc.json", _task("b", 0.2), _task("c", 0.3))
    d = _file(tmp_path / "d.json", _task("d", 0.4, 0.09), folds=10)
    est = bf.read_estimates([a, bc, d])
    assert est.tasks == ["a", "b", "c", "d"] and est.estimand == "ate"
    np.testing.assert_allclose(est.estimates[:, 0], [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(est.covariances[:, 0, 0], [0.04, 0.04, 0.04, 0.09])
    np.testing.assert_allclose(est.n, [50] * 4)
    assert est.meta["sources"] == [str(a), str(bc), str(d)]
    assert est.meta["provenance"][str(d)]["folds"] == 10


def test_cross_file_problems_name_both_files(tmp_path):
    a = _file(tmp_path / "site-a.json", _task("a"))
    cases = [
        (_task("a"), r"Task id 'a' appears in both .*site-a.json and .*site-x.json"),
        ({**_task("x"), "estimand": "plr"},
         r"site-x.json: estimand 'plr' differs from 'ate' in .*site-a.json"),
        ({**_task("x"), "params": ["effect"]},
         r"site-x.json: task 'x' has parameters \['effect'\], but .*site-a.json has"),
        ({**_task("x"), "covariates": {"urban": 1.0}},
         r"site-(a|x).json: task '(a|x)' has covariates"),
    ]
    for entry, message in cases:
        x = _file(tmp_path / "site-x.json", entry)
        with pytest.raises(EstimatesError, match=message):
            read_summaries([a, x])


def test_noise_variance_is_added_to_v(tmp_path):
    dp = {"mechanism": "analytic-gaussian", "epsilon": 1.0, "delta": 1e-5, "sensitivity": 0.1}
    a = _file(tmp_path / "a.json", _task("a", dp_noise_variance=[0.5]), dp=dp)
    b = _file(tmp_path / "b.json", _task("b"))
    est = bf.read_estimates([a, b])
    np.testing.assert_allclose(est.covariances[:, 0, 0], [0.54, 0.04])
    assert est.meta["provenance"][str(a)]["dp"]["epsilon"] == 1.0
    # vector θ: noise on the diagonal only
    vec = {**_task("v"), "params": ["r", "m"], "estimate": [0.1, 0.2],
           "covariance": [[0.04, 0.01], [0.01, 0.09]], "dp_noise_variance": [1.0, 1.0]}
    w = {**vec, "task": "w", "dp_noise_variance": [0.0, 0.0]}
    est = bf.read_estimates([_file(tmp_path / "vw.json", vec, w, dp=dp)])
    np.testing.assert_allclose(est.covariances[0], [[1.04, 0.01], [0.01, 1.09]])
    np.testing.assert_allclose(est.covariances[1], [[0.04, 0.01], [0.01, 0.09]])


def test_size_limit_and_not_a_file(tmp_path, monkeypatch):
    a = _file(tmp_path / "a.json", _task("a"), _task("b"))
    monkeypatch.setattr(summary_module, "MAX_SUMMARY_BYTES", 100)
    with pytest.raises(EstimatesError, match=r"a.json: summary file is \d+ bytes, above"):
        bf.read_estimates(a)
    monkeypatch.undo()
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(EstimatesError, match="folder.json: not a regular file"):
        bf.read_estimates(tmp_path / "folder.json")
    with pytest.raises(EstimatesError, match="Summary file not found"):
        bf.read_estimates(tmp_path / "none.json")
    with pytest.raises(EstimatesError, match="not both"):
        bf.read_estimates([a, tmp_path / "x.csv"])


def test_write_summary_validates_and_is_atomic(tmp_path, monkeypatch):
    est = bf.TaskEstimates(["a", "b"], [0.1, 0.2], [0.01, 0.04], n=[30, 40], estimand="ate")
    document = summary_dict(est, 1, {"seed": 3})
    path = write_summary(document, tmp_path / "b.json")
    assert json.loads(path.read_text())["task"] == "b"
    # refuses what it could not read back; writes nothing
    with pytest.raises(EstimatesError, match="Cannot write .*bad.json"):
        write_summary({**document, "estimate": [float("nan")]}, tmp_path / "bad.json")
    with pytest.raises(EstimatesError, match="unknown field 'rows'"):
        write_summary({**document, "rows": [1, 2]}, tmp_path / "bad.json")
    with pytest.raises(BayesfuseError, match="exists"):
        write_summary(document, path, force=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json"]

    # an interrupted write leaves neither a half-written file nor a temporary one
    import bayesfuse._io as io_module

    def crash(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(io_module.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_summary(document, tmp_path / "c.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json"]


def _error_line(capsys):
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_every_writing_command_needs_force(tmp_path, capsys):
    existing = tmp_path / "out.json"
    existing.write_text("keep")
    data = tmp_path / "data.csv"
    data.write_text("site,y,d,x\n" + "".join(f"s,{i},{i % 2},{i}\n" for i in range(40)))
    commands = [
        ["site", str(data), "--task-id", "s", "--outcome", "y", "--treatment", "d",
         "-o", str(existing)],
        ["estimate", str(data), "--task", "site", "--outcome", "y", "--treatment", "d",
         "-o", str(existing)],
        ["fuse", str(tmp_path / "any.csv"), "-o", str(existing)],
    ]
    for command in commands:
        assert main(command) == 2
        assert "exists; add --force" in _error_line(capsys)
    est = bf.TaskEstimates(["a", "b"], [0.1, 0.2], [0.01, 0.04])
    csv = est.to_csv(tmp_path / "est.csv")
    assert main(["fuse", str(csv), "-o", str(tmp_path / "fit.nc"), "--summary",
                 str(existing)]) == 2
    assert "exists; add --force" in _error_line(capsys)
    (tmp_path / "estimates.csv").write_text("keep")
    assert main(["demo", "--outdir", str(tmp_path)]) == 2
    assert "estimates.csv exists; add --force" in _error_line(capsys)
    assert existing.read_text() == "keep" and (tmp_path / "estimates.csv").read_text() == "keep"
