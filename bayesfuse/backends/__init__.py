"""Sampler backends other than the default NumPyro one (:mod:`bayesfuse.sampler`).

* :mod:`bayesfuse.backends.pymc` — ``fuse(..., backend="pymc")``: the family's PyMC model,
  sampled with PyMC's NUTS; θ draws, log-likelihoods, pooling and predictive come from the
  same JAX per-draw functions as with NumPyro, so the two backends differ only in how the
  hyperparameters are sampled.

Backends are imported lazily (PyMC is slow to import), so this package imports nothing.
"""

from __future__ import annotations

__all__: list[str] = []
