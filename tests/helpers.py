"""Simulators shared by the tests."""

from __future__ import annotations

import numpy as np

from bayesfuse.estimates import TaskEstimates


def simulate_exchangeable(n_tasks: int, mu: float, tau: float, seed: int) -> TaskEstimates:
    """θₖ ~ N(mu, tau²), θ̂ₖ ~ N(θₖ, seₖ²) with seₖ uniform on [0.5, 1.5]."""
    rng = np.random.default_rng(seed)
    se = rng.uniform(0.5, 1.5, n_tasks)
    theta = mu + tau * rng.standard_normal(n_tasks)
    return TaskEstimates([f"t{k}" for k in range(n_tasks)],
                         theta + se * rng.standard_normal(n_tasks), se**2)
