"""Shared fixtures. Every test that samples uses a fixed seed."""

from __future__ import annotations

import numpy as np
import pytest

from bayesfuse.estimates import TaskEstimates

EIGHT_SCHOOLS_Y = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]
EIGHT_SCHOOLS_SE = [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]


@pytest.fixture
def eight_schools() -> TaskEstimates:
    """Rubin (1981) eight schools, written out here so the tests need no dataset module."""
    return TaskEstimates(list("ABCDEFGH"), EIGHT_SCHOOLS_Y, np.square(EIGHT_SCHOOLS_SE))
