"""Stage 2: from a family and estimates to posterior draws and an ``InferenceData``.

* :mod:`bayesfuse.inference.fuse` — :func:`~bayesfuse.fuse`: validate, build the family,
  dispatch to a sampler, convert;
* :mod:`bayesfuse.inference.nuts` — NumPyro NUTS (compile cache, relabelling moves);
* :mod:`bayesfuse.inference.exact` — ``method="exact"``: independent draws by quadrature;
* :mod:`bayesfuse.inference.pymc` — ``backend="pymc"``, with its model building blocks in
  :mod:`bayesfuse.inference.pymc_blocks`;
* :mod:`bayesfuse.inference.draws` — the exact per-draw computations (θ | φ, log-likelihood,
  predictive) and prior draws, shared by every sampler;
* :mod:`bayesfuse.inference.convert` — draws to ``arviz.InferenceData``;
* :mod:`bayesfuse.inference.runtime` — the JAX settings a fit makes when it runs.
"""
