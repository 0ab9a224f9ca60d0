"""What is computed from a fit, after sampling.

* :mod:`bayesfuse.analysis.diagnostics` — R-hat, ESS, divergences, E-BFMI and the verdict;
* :mod:`bayesfuse.analysis.sensitivity` — ``bf.sensitivity``: importance-weighted analyses
  (:mod:`.importance`), analyses that refit (:mod:`.refit`) and the combined run
  (:mod:`.analysis`);
* :mod:`bayesfuse.analysis.baselines` — ``bf.baselines``: frequentist meta-analysis
  (:mod:`.meta_analysis`) and the late-fusion aggregator (:mod:`.late_fusion`);
* :mod:`bayesfuse.analysis.calibration` — simulation-based calibration of any family.

Nothing here draws a figure or writes HTML; that is :mod:`bayesfuse.reporting`.
"""
