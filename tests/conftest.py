"""Shared fixtures. Every test that samples uses a fixed seed."""

from __future__ import annotations

import os
from pathlib import Path

# One persistent XLA compilation cache for the whole run, set before JAX starts: the xdist
# workers, the notebook kernels and the CLI subprocesses inherit it, so a program that
# several tests build with the same shapes (a sampler, a per-draw map) compiles once per run
# instead of once per test and process. JAX keys each entry on the program, the compiler
# options and its own version, so a hit gives the same executable. Measured 2026-12-02 on
# test_plot.py + test_cli.py, two workers, from an empty cache: 126 s -> 87 s; on the whole
# default run much less (898 s -> 857 s, with the slowest backend test also moved out).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(Path(__file__).resolve().parent.parent / ".pytest_cache" / "jax"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from bayesfuse.data.estimates import TaskEstimates  # noqa: E402
from bayesfuse.inference import runtime  # noqa: E402

# Importing bayesfuse changes no JAX setting; a fit makes two (bayesfuse.inference.runtime).
# The test process makes them up front: many tests call family and sampler functions
# directly and compare with float64 references, and the parallel-chain tests need several
# CPU devices, which JAX fixes at its first computation.
runtime.configure_host_devices()
runtime.enable_x64()

EIGHT_SCHOOLS_Y = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]
EIGHT_SCHOOLS_SE = [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]


@pytest.fixture(scope="session")
def eight_schools() -> TaskEstimates:
    """Rubin (1981) eight schools, written out here so the tests need no dataset module
    (one object for the session: tests read it and never change it)."""
    return TaskEstimates(list("ABCDEFGH"), EIGHT_SCHOOLS_Y, np.square(EIGHT_SCHOOLS_SE))
