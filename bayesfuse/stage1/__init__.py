"""Stage 1: per-task debiased estimates from individual-level rows.

* :mod:`bayesfuse.stage1.dml` — :func:`~bayesfuse.estimate_tasks`: one DoubleML fit per
  task (joblib or Dask), with the small-cell and propensity guards;
* :mod:`bayesfuse.stage1.shared` — ``nuisance="shared"``: one cross-fitted nuisance fit on
  all tasks' rows (task indicators and interactions as features), θ̂ₖ still per task;
* :mod:`bayesfuse.stage1.blp` — the ``blp`` estimand: best linear predictor of the CATE on
  effect modifiers (vector θ = intercept and slopes, HC0 covariance);
* :mod:`bayesfuse.stage1.learners` — learner aliases (``"gbm"``, ``"rf"``, …);
* :mod:`bayesfuse.stage1.site` — :func:`~bayesfuse.site_summary`: one site's summary file;
* :mod:`bayesfuse.stage1.dp` — the analytic Gaussian mechanism for a site's θ̂.
"""
