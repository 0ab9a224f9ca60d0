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
             n_jobs: int, console: Any, err_console: Any, stage1: Any, print_fit: Any,
             model: str = "exchangeable", grades: str = "k") -> None:
    """Run the STAR demo, printing with rich consoles (see ``bayesfuse.cli``).

    ``model="exchangeable"`` fuses the scalar kindergarten effect on the combined score.
    Other models (``cluster``, ``gmrf``...) fuse a vector θ per school: the small-class
    effects on reading and math in each grade of ``grades`` (p = 2 per grade, joint
    covariance from stage 1), and print the similarity structure the model learned.
    """
    from rich.text import Text

    from bayesfuse.data.datasets import STAR_COVARIATES, star_analysis_frame, star_vector_frame
    from bayesfuse.errors import CliUsageError, ConvergenceWarning
    from bayesfuse.inference.fuse import fuse
    from bayesfuse.stage1.dml import estimate_tasks

    if not outdir.is_dir():
        raise CliUsageError(f"Output folder {outdir} does not exist.")
    scalar = model == "exchangeable"
    if scalar:
        frame = star_analysis_frame("k")
        outcome: str | list[str] = "score"
        console.print(Text.assemble(
            ("Tennessee STAR, kindergarten", "bold"),
            f": {len(frame)} students in {frame['school'].nunique()} schools; small class "
            "(treatment = 1) vs regular class; outcome: reading + math score standardised "
            "by the regular classes."))
    else:
        grade_list = [g.strip() for g in grades.split(",") if g.strip()]
        frame = star_vector_frame(grade_list)
        outcome = list(frame.attrs["outcomes"])
        console.print(Text.assemble(
            (f"Tennessee STAR, grades {', '.join(grade_list)}", "bold"),
            f": {len(frame)} students in {frame['school'].nunique()} schools, assigned in "
            f"kindergarten to a small or regular class; θ per school = effects on "
            f"{', '.join(outcome)} (p = {len(outcome)}), standardised by the regular "
            "classes."))
    # class type was randomised within school: a logistic propensity model suffices, and
    # a flexible classifier on ~45 pupils would only add noise to the AIPW weights
    learners = {"outcome": learner, "propensity": "linear"}
    start = time.perf_counter()
    est = stage1(estimate_tasks, frame, task="school", outcome=outcome, treatment="treatment",
                 covariates=STAR_COVARIATES, estimand="ate", learner=learners, folds=folds,
                 n_jobs=n_jobs, seed=seed, min_n=20 if scalar else 10)
    stage1_s = time.perf_counter() - start
    est_path = est.to_csv(outdir / "estimates.csv")
    console.print(f"Stage 1 (outcome: {learner}, propensity: logistic, {folds}-fold "
                  f"cross-fitting): {est.n_tasks} schools in {stage1_s:.1f} s -> {est_path}")
    start = time.perf_counter()
    with err_console.status(f"Stage 2: {model} fusion of {est.n_tasks} schools..."):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fit = fuse(est, model=model, draws=draws, warmup=warmup, seed=seed)
    stage2_s = time.perf_counter() - start
    print_fit(fit)
    for name, table in fit.structure().items():
        _print_structure(console, name, table)
    fit_path = fit.save(outdir / "fit.nc")
    console.print(f"Stage 2 ({model}, NUTS, {fit.idata.posterior.sizes['chain']} chains): "
                  f"{stage2_s:.1f} s -> {fit_path}")
    console.print(f"Total: stage 1 {stage1_s:.1f} s, stage 2 {stage2_s:.1f} s.")
    from bayesfuse.reporting.report import write_report

    report_path = write_report(fit, outdir / "report.html", force=True,
                               source="bayesfuse demo (Tennessee STAR)")
    console.print(f"Report: {report_path}")


def _print_structure(console: Any, name: str, table: Any, max_rows: int = 20) -> None:
    """A family's structure output (clusters, edges...) as a rich table."""
    import pandas as pd
    from rich.table import Table
    from rich.text import Text

    if not isinstance(table, pd.DataFrame) or table.empty:
        return
    if name == "clustering" and {"task", "cluster"} <= set(table.columns):
        console.print(Text.assemble(("Schools that cluster together", "bold"),
                                    " (point clustering minimising the posterior expected "
                                    "Binder loss):"))
        for cluster, members in table.groupby("cluster", sort=True):
            support = members["p_with_mates"].mean()
            console.print(f"  cluster {cluster} ({len(members)} schools, mean co-clustering "
                          f"with mates {support:.2f}): {', '.join(map(str, members['task']))}")
        return
    shown = table.head(max_rows)
    out = Table(title=f"{name} (first {len(shown)} of {len(table)} rows)"
                if len(table) > max_rows else name)
    index_name = shown.index.name or ""
    show_index = not isinstance(shown.index, pd.RangeIndex)
    if show_index:
        out.add_column(str(index_name))
    for column in shown.columns:
        out.add_column(str(column), justify="right")
    for label, row in shown.iterrows():
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.tolist()]
        out.add_row(*([str(label)] if show_index else []), *cells)
    console.print(out)
