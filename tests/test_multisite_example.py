"""examples/multisite: per-school site summaries + coordinator fusion reproduce the
single-machine estimate_tasks + fuse path exactly."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "multisite" / "run.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("multisite_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_multisite_example_matches_single_machine(tmp_path):
    example = _load_example()
    result = example.run(tmp_path, schools=3, chains=1, draws=100, warmup=100)
    assert result["schools"] == 3
    assert result["max_abs_diff_estimate"] <= 1e-12
    assert result["max_abs_diff_covariance"] <= 1e-12
    assert result["max_abs_diff_draws"] <= 1e-9
    # each site's folder holds its CSV and a summary without any row of it
    summaries = sorted((tmp_path / "sites").glob("*.json"))
    assert len(summaries) == 3
    for path in summaries:
        document = json.loads(path.read_text())
        assert document["n"] >= 40 and "rows" not in document
        assert document["n_treated"] >= 20 and document["n_control"] >= 20
