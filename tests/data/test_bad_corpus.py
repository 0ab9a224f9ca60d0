"""The corpus of bad estimates files (tests/data/bad/): `bayesfuse fuse FILE` exits with
status 2 and prints exactly one clear line naming the file and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from bayesfuse.cli import main
from bayesfuse.data.read import read_estimates
from bayesfuse.errors import BayesfuseError

BAD = Path(__file__).parent / "bad"

# file -> what the one error line must say
EXPECTED = {
    "arms_do_not_add_up.json": "n_treated + n_control = 70 differs from n = 50",
    "boolean_n.json": "'n' must be an integer; got bool",
    "ci_not_symmetric.csv": "Task 'a': the confidence interval [1.1, 2.05] is not symmetric",
    "control_characters_in_task_id.csv": "Task id 'a\\nb' contains control characters",
    "control_characters_in_task_id.json": "Task id 'b\\x1b[2J' contains control characters",
    "covariance_not_positive_definite.json": "covariance is not positive definite",
    "covariance_not_square.json": "'covariance' must be a 1x1 list of lists",
    "covariance_not_symmetric.json": "covariance is not symmetric",
    "covariate_varies.csv": "Column 'z' must be constant within a task",
    "deep_nesting.json": "too deeply nested",
    "dp_without_noise_variance.json": "has no 'dp_noise_variance'",
    "duplicate_key.json": "key 'n' appears twice",
    "duplicate_task_ids.json": "Task id 'a' appears twice",
    "duplicate_tasks.csv": "Task ids must be unique; duplicated: a",
    "empty.csv": "file is empty",
    "empty.json": "file is empty",
    "estimate_is_text.csv": "Column 'estimate' must be numeric; task 'b' has 'big'",
    "estimate_is_text.json": "estimate must be a number; got str",
    "estimate_outside_ci.csv": "Task 'b': the estimate 0.9 lies outside its confidence",
    "estimate_too_large.json": "implausibly large",
    "header_only.csv": "table is empty",
    "huge_integer.json": "is too large",
    "huge_number.csv": "Task 'b': estimate is not finite",
    "infinite_estimate.csv": "Task 'a': estimate is not finite",
    "infinite_variance.json": "non-finite number Infinity",
    "missing_covariance.json": "missing field 'covariance'",
    "missing_se_column.csv": "needs an 'se' or 'variance' column",
    "missing_se_value.csv": "Column 'se' has a missing value for task 'b'",
    "missing_task_id.csv": "missing task ids",
    "mixed_estimands.json": "estimand 'plr' differs from 'ate'",
    "mixed_params.json": "has parameters ['effect']",
    "nan_estimate.json": "non-finite number NaN",
    "negative_noise_variance.json": "'dp_noise_variance' must be >= 0",
    "negative_se.csv": "standard error must be a finite number > 0",
    "negative_variance.json": "variance <= 0",
    "not_json.json": "not valid JSON",
    "not_utf8.csv": "not a readable CSV file",
    "not_utf8.json": "not UTF-8 text",
    "one_task.csv": "at least 2 tasks",
    "p_value_with_zero_estimate.csv": "Task 'b': an estimate of 0 with a p-value gives no",
    "p_value_zero.csv": "Task 'b': a two-sided p-value must be in (0, 1); got 0",
    "pickle_payload.json": "not UTF-8 text",
    "ragged_rows.csv": "more fields than the header",
    "single_task.json": "at least 2 tasks",
    "standard_error_too_small.json": "outside the sane range",
    "tasks_not_a_list.json": "'tasks' must be a list",
    "top_level_list.json": "must be a JSON object; got list",
    "truncated.json": "not valid JSON",
    "unbalanced_quotes.csv": "not a readable CSV file",
    "unknown_field_rows.json": "unknown field 'rows'",
    "vector_missing_row.csv": "Task 'b' has 1 rows; each task needs one row per parameter",
    "vector_not_positive_definite.csv": "Task 'a': covariance is not positive definite",
    "version_2.json": "summary version 2 is not supported",
    "version_string.json": "summary version '1' is not supported",
    "wrong_schema.json": "not a bayesfuse summary",
}
FILES = sorted(p.name for p in BAD.iterdir())


def test_corpus_and_expectations_match():
    assert FILES == sorted(EXPECTED), set(FILES) ^ set(EXPECTED)
    assert sum(f.endswith(".json") for f in FILES) >= 25
    assert sum(f.endswith(".csv") for f in FILES) >= 15


@pytest.mark.parametrize("name", FILES)
def test_cli_fuse_refuses_bad_file_with_one_line(name, tmp_path, capsys):
    fit = tmp_path / "fit.nc"
    assert main(["fuse", str(BAD / name), "-o", str(fit)]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    line = lines[0]
    assert line.startswith("error: ") and "Traceback" not in captured.err + captured.out
    assert name in line, line  # the problem is named with its file
    assert EXPECTED[name] in line, line
    assert not fit.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", FILES)
def test_api_raises_bayesfuse_error(name):
    with pytest.raises(BayesfuseError, match=name.replace(".", r"\.")):
        read_estimates(BAD / name)
