"""Small, fast fits shared by the plot, table and report tests (cached per process)."""

from __future__ import annotations

import functools

import numpy as np

import bayesfuse as bf
from bayesfuse.data.estimates import TaskEstimates

#: true cluster of each task of :func:`cluster_fit`, interleaved so that the data order
#: does not already group them
CLUSTER_TRUTH = np.array([0, 1, 0, 1, 0, 1, 0, 1])


def eight_schools() -> TaskEstimates:
    return TaskEstimates.from_frame(bf.datasets.load_eight_schools())


@functools.cache
def exact_fit():
    """Eight schools, exchangeable, independent draws by quadrature (no MCMC)."""
    return bf.fuse(eight_schools(), method="exact", chains=2, draws=300, seed=0, warn=False)


@functools.cache
def nuts_fit():
    """Eight schools, exchangeable, NUTS (has energy, divergences, prior draws)."""
    return bf.fuse(eight_schools(), chains=2, draws=300, warmup=300, seed=0, warn=False)


@functools.cache
def vector_fit():
    """Six tasks with p = 2 (read, math), exchangeable with an LKJ correlation."""
    rng = np.random.default_rng(3)
    theta_hat = rng.normal([0.2, -0.1], 0.15, size=(6, 2))
    cov = np.stack([np.diag([0.01, 0.02])] * 6)
    est = TaskEstimates([f"s{k}" for k in range(6)], theta_hat, cov, params=["read", "math"])
    return bf.fuse(est, chains=2, draws=300, warmup=300, seed=0, warn=False)


@functools.cache
def cluster_fit():
    """Eight scalar tasks in two well-separated clusters (-2 and 2.5), interleaved."""
    rng = np.random.default_rng(0)
    theta = np.array([-2.0, 2.5])[CLUSTER_TRUTH] + 0.1 * rng.standard_normal(8)
    se = rng.uniform(0.25, 0.35, 8)
    est = TaskEstimates([f"c{k}" for k in range(8)], theta + se * rng.standard_normal(8),
                        se**2)
    return bf.fuse(est, model="cluster", max_clusters=3, chains=2, draws=300, warmup=300,
                   seed=1, warn=False)
