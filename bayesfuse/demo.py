"""``bayesfuse demo``: Tennessee STAR end to end.

Stage 1: per school, the effect of a small class (vs regular) in kindergarten on the
standardised reading + math score, by DoubleML (IRM, ATE) with student covariates.
Stage 2: exchangeable fusion of the 79 school effects. Prints the per-school table and the
hyperparameters; writes ``estimates.csv`` and ``fit.nc``.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any


def run_demo(outdir: Path, learner: str, folds: int, draws: int, warmup: int, seed: int,
             n_jobs: int, console: Any, err_console: Any, stage1: Any, print_fit: Any) -> None:
    """Run the STAR demo, printing with rich consoles (see ``bayesfuse.cli``)."""
    from bayesfuse.datasets import STAR_COVARIATES, star_analysis_frame
    from bayesfuse.errors import CliUsageError, ConvergenceWarning
    from bayesfuse.fusion import fuse
    from bayesfuse.stage1 import estimate_tasks

    if not outdir.is_dir():
        raise CliUsageError(f"Output folder {outdir} does not exist.")
    frame = star_analysis_frame("k")
    console.print(
        f"[bold]Tennessee STAR, kindergarten[/bold]: {len(frame)} students in "
        f"{frame['school'].nunique()} schools; small class (treatment = 1) vs regular class; "
        "outcome: reading + math score standardised by the regular classes."
    )
    # class type was randomised within school: a logistic propensity model suffices, and
    # a flexible classifier on ~45 pupils would only add noise to the AIPW weights
    learners = {"outcome": learner, "propensity": "linear"}
    start = time.perf_counter()
    est = stage1(estimate_tasks, frame, task="school", outcome="score", treatment="treatment",
                 covariates=STAR_COVARIATES, estimand="ate", learner=learners, folds=folds,
                 n_jobs=n_jobs, seed=seed)
    stage1_s = time.perf_counter() - start
    est_path = est.to_csv(outdir / "estimates.csv")
    console.print(f"Stage 1 (outcome: {learner}, propensity: logistic, {folds}-fold "
                  f"cross-fitting): {est.n_tasks} schools in "
                  f"{stage1_s:.1f} s -> {est_path}")
    start = time.perf_counter()
    with err_console.status(f"Stage 2: exchangeable fusion of {est.n_tasks} schools..."):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fit = fuse(est, model="exchangeable", draws=draws, warmup=warmup, seed=seed)
    stage2_s = time.perf_counter() - start
    print_fit(fit)
    fit_path = fit.save(outdir / "fit.nc")
    console.print(f"Stage 2 (NUTS, 4 chains, collapsed): {stage2_s:.1f} s -> {fit_path}")
    console.print(f"Total: stage 1 {stage1_s:.1f} s, stage 2 {stage2_s:.1f} s.")
