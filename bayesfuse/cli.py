"""The ``bayesfuse`` command line: a thin layer over the public API.

Errors in the input are printed as one line on stderr (``error: ...``) with exit code 2,
never a traceback (set ``BAYESFUSE_DEBUG=1`` to see one).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from bayesfuse._validation import check_choice, check_probability
from bayesfuse.errors import BayesfuseError, CliUsageError

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Bayesian late fusion of per-task debiased estimates.",
)
# soft_wrap: a message is one line whatever the terminal width, so a path in it can be
# copied or grepped by a pipeline (tables still fit the width). markup=False: text is
# printed as it is (names like mu[read] or a task "site[3]" are not rich tags); colour
# comes from style= and Text, never from markup in a string
out = Console(soft_wrap=True, markup=False)
err = Console(stderr=True, soft_wrap=True, markup=False)


CliError = CliUsageError


def _parse_pairs(values: list[str] | None, what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in values or []:
        if "=" not in item:
            raise CliError(
                f"{what} must look like name=value (e.g. tau=halfnormal(2)); got {item!r}."
            )
        key, value = item.split("=", 1)
        if not key.strip():
            raise CliError(f"{what} needs a name before '=': {item!r}.")
        pairs[key.strip()] = value.strip()
    return pairs


def _option_value(text: str):
    """Family option values from the command line: bool, int, float or string."""
    lowered = text.lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text


def _parse_modifiers(text: str | None):
    """``--modifiers``: ``a,b`` (a list of names) or ``a=0,b=50`` (names and centres)."""
    if text is None:
        return None
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise CliError("--modifiers needs column names, e.g. --modifiers age,score.")
    with_centre = ["=" in item for item in items]
    if not any(with_centre):
        return items
    if not all(with_centre):
        raise CliError(f"--modifiers takes names (a,b) or names with centres (a=0,b=50), not "
                       f"a mix; got {text!r}.")
    pairs = _parse_pairs(items, "--modifiers")
    centres = {}
    for name, value in pairs.items():
        try:
            centres[name] = float(value)
        except ValueError:
            raise CliError(f"--modifiers: the centre of '{name}' must be a number; got "
                           f"{value!r}.") from None
    return centres


def _check_output(path: Path, force: bool) -> Path:
    if path.exists() and not force:
        raise CliError(f"{path} exists; add --force to overwrite it.")
    if path.parent and not path.parent.exists():
        raise CliError(f"Cannot write {path}: folder {path.parent} does not exist.")
    return path


def _read_table(path: Path):
    import pandas as pd

    if not path.is_file():
        raise CliError(f"Data file not found: {path}")
    import warnings

    try:
        with warnings.catch_warnings():
            # rows longer than the header would silently become an index: refuse them
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(path, index_col=False, float_precision="round_trip")
    except pd.errors.ParserWarning:
        raise CliError(f"{path}: some rows have more fields than the header; check the "
                       "commas (quote text that contains commas).") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CliError(f"{path}: not a readable CSV file ({first}).") from None


def _print_fit(fit, ci_prob: float = 0.95, max_rows: int = 100) -> None:
    summary = fit.summary(ci_prob)
    pct = f"{ci_prob:.0%}"
    table = Table(title=f"Fused estimates ({fit.model}, {pct} equal-tailed intervals)")
    for column in ("task", "param", "stage 1 (se)", "fused mean", f"{pct} interval", "shrinkage"):
        table.add_column(column, justify="right" if column != "task" else "left")
    show_param = len(fit.params) > 1
    for row in summary.head(max_rows).itertuples():
        table.add_row(
            str(row.task), str(row.param) if show_param else "",
            f"{row.estimate:.3f} ({row.se:.3f})", f"{row.mean:.3f}",
            f"[{row.eti_low:.3f}, {row.eti_high:.3f}]", f"{row.shrinkage:.2f}",
        )
    out.print(table)
    if len(summary) > max_rows:
        out.print(f"... {len(summary) - max_rows} more rows (use --summary FILE.csv)")
    _print_borrowing(fit, summary, max_rows)
    hyper = fit.hyper_summary(ci_prob)
    if len(hyper):
        max_hyper = 40
        htable = Table(title="Hyperparameters")
        # names and intervals never wrap or truncate (corr[read_k,math_k] must stay whole);
        # the priors, one per block rather than one per entry, follow the table
        htable.add_column("name", no_wrap=True, min_width=max(len(n) for n in hyper.index))
        for column in ("mean", "sd", f"{pct} interval", "r_hat", "ess_bulk"):
            htable.add_column(column, justify="right", no_wrap=True)
        for name, row in hyper.head(max_hyper).iterrows():
            htable.add_row(name, f"{row['mean']:.3f}", f"{row['sd']:.3f}",
                           f"[{row['eti_low']:.3f}, {row['eti_high']:.3f}]",
                           f"{row['r_hat']:.3f}", f"{row['ess_bulk']:.0f}")
        out.print(htable)
        if len(hyper) > max_hyper:
            out.print(f"... {len(hyper) - max_hyper} more hyperparameters (see "
                      "fit.hyper_summary() or the report)")
        if fit.priors:
            out.print("Priors: " + "; ".join(f"{name} ~ {prior}" for name, prior
                                             in fit.priors.items()))
    _print_diagnostics(fit)


def _print_borrowing(fit, summary, max_rows: int) -> None:
    """How much each task borrows (columns of ``fit.summary()``), in a table of its own."""
    has_n = fit.estimates.n is not None
    show_param = len(fit.params) > 1
    table = Table(title="How much each task borrows")
    columns = ["task", *(["param"] if show_param else []), "pooling", "variance reduction",
               *(["effective n", "n gained"] if has_n else [])]
    for column in columns:
        table.add_column(column, justify="left" if column == "task" else "right")
    for row in summary.head(max_rows).itertuples():
        cells = [str(row.task), *([str(row.param)] if show_param else []),
                 f"{row.shrinkage:.2f}", f"{row.variance_reduction:.0%}"]
        if has_n:
            cells += [f"{row.effective_n:.0f}", f"{row.n_gained:+.0f}"]
        table.add_row(*cells)
    out.print(table)
    out.print("pooling: the shrinkage (0 = the task alone, 1 = complete pooling); variance "
              "reduction: 1 - posterior variance / stage-1 variance"
              + ("; effective n: n x stage-1 variance / posterior variance." if has_n
                 else "; effective n needs the tasks' sample sizes (an n column)."))


def _print_diagnostics(fit) -> None:
    diag = fit.diagnostics()
    if diag.ok:
        out.print(Text.assemble(("Diagnostics: PASS", "green"),
                                " (R-hat < 1.01, ESS >= 400, no divergences, E-BFMI > 0.3, "
                                "no tree-depth saturation)"))
    else:
        out.print("Diagnostics: FAIL", style="red")
        for advice in diag.advice:
            out.print(f"  - {advice}")


@app.command()
def estimate(
    data: Annotated[Path, typer.Argument(help="Individual-level CSV (one row per unit).")],
    task: Annotated[str, typer.Option(help="Column with the task id (site, school...).")],
    outcome: Annotated[str, typer.Option(help="Outcome column.")],
    treatment: Annotated[str, typer.Option(help="Treatment column (0/1 for ate/atte).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Estimates CSV to write.")],
    covariates: Annotated[str | None, typer.Option(help="Comma-separated covariates.")] = None,
    estimand: Annotated[str, typer.Option(
        help="ate | atte | plr | blp (best linear predictor of the CATE on --modifiers)")] = "ate",
    modifiers: Annotated[str | None, typer.Option(
        help="For --estimand blp: effect modifiers (covariates) the CATE is projected on, "
             "a,b (centred at their pooled mean) or a=0,b=50 (centred there).")] = None,
    learner: Annotated[str, typer.Option(help="gbm | rf | lasso | linear")] = "gbm",
    folds: Annotated[int, typer.Option(help="Cross-fitting folds.")] = 5,
    n_jobs: Annotated[int, typer.Option(help="Parallel tasks (-1: all cores).")] = -1,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    min_n: Annotated[int, typer.Option(help="Exclude tasks with fewer rows.")] = 20,
    nuisance: Annotated[str, typer.Option(
        help="task: nuisance models fitted per task | shared: fitted once on all tasks' rows "
             "(task indicators and interactions as features), cross-fitted, θ still per "
             "task. shared needs all rows in one place; never across sites that cannot "
             "share rows.")] = "task",
    force: Annotated[bool, typer.Option(help="Overwrite the output file.")] = False,
) -> None:
    """Stage 1: per-task double/debiased ML estimates -> estimates CSV."""
    _check_output(output, force)
    frame = _read_table(data)
    from bayesfuse.stage1.dml import estimate_tasks

    columns = [c.strip() for c in covariates.split(",") if c.strip()] if covariates else None
    est = _run_stage1(estimate_tasks, frame, task=task, outcome=outcome, treatment=treatment,
                      covariates=columns, estimand=estimand, learner=learner, folds=folds,
                      n_jobs=n_jobs, seed=seed, min_n=min_n, nuisance=nuisance,
                      modifiers=_parse_modifiers(modifiers))
    est.to_csv(output)
    out.print(f"Wrote {est.n_tasks} task estimates to {output}")


def _run_stage1(estimate_tasks, frame, **kwargs):
    import warnings

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from bayesfuse.errors import TaskWarning

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=True) as progress:
        bar = progress.add_task("Stage 1 (DoubleML per task)", total=None)

        def update(done: int, total: int) -> None:
            progress.update(bar, completed=done, total=total)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TaskWarning)
            est = estimate_tasks(frame, progress=update, **kwargs)
    flags = est.flags
    if len(flags):
        for row in flags.itertuples():
            err.print(Text.assemble((str(row.status), "yellow"),
                                    f": task {row.task}: {row.reason}"))
    return est


@app.command()
def site(
    data: Annotated[Path, typer.Argument(help="This site's individual-level CSV (stays here).")],
    outcome: Annotated[str, typer.Option(help="Outcome column (comma-separated: vector θ).")],
    treatment: Annotated[str, typer.Option(help="Treatment column (0/1 for ate/atte).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Summary JSON to write.")],
    task: Annotated[str | None, typer.Option(help="Column with the task id (a site with "
                                                  "several tasks).")] = None,
    task_id: Annotated[str | None, typer.Option(help="Task id of all rows (a one-task "
                                                     "site).")] = None,
    covariates: Annotated[str | None, typer.Option(help="Comma-separated covariates.")] = None,
    estimand: Annotated[str, typer.Option(
        help="ate | atte | plr | blp (best linear predictor of the CATE on --modifiers)")] = "ate",
    modifiers: Annotated[str | None, typer.Option(
        help="For --estimand blp: effect modifiers with the centres agreed by all sites, "
             "a=0,b=50 (the intercept is the CATE at that point).")] = None,
    learner: Annotated[str, typer.Option(help="gbm | rf | lasso | linear")] = "gbm",
    propensity_learner: Annotated[str | None, typer.Option(
        help="Learner of the propensity / treatment model (default: --learner).")] = None,
    folds: Annotated[int, typer.Option(help="Cross-fitting folds.")] = 5,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    min_n: Annotated[int, typer.Option(help="Small-cell protection: refuse when a task or a "
                                            "treatment arm has fewer rows.")] = 20,
    task_covariate: Annotated[list[str] | None, typer.Option(
        help="Task-level covariate name=value (one-task site); repeatable.")] = None,
    dp_epsilon: Annotated[float | None, typer.Option(help="Differential privacy: epsilon.")] =
    None,
    dp_delta: Annotated[float | None, typer.Option(help="Differential privacy: delta.")] = None,
    dp_sensitivity: Annotated[float | None, typer.Option(
        help="Differential privacy: L2 sensitivity of θ̂, a bound you state and are "
             "responsible for.")] = None,
    dp_seed: Annotated[int | None, typer.Option(help="Seed of the privacy noise (keep it "
                                                     "secret; default: OS entropy).")] = None,
    created_at: Annotated[str | None, typer.Option(
        help="Time stamp to record (default: SOURCE_DATE_EPOCH if set, else now).")] = None,
    n_jobs: Annotated[int, typer.Option(help="Parallel tasks (-1: all cores).")] = -1,
    nuisance: Annotated[str, typer.Option(
        help="Only 'task': a site sees its own rows, and shared nuisance learning needs all "
             "tasks' rows in one place (bayesfuse estimate --nuisance shared).")] = "task",
    force: Annotated[bool, typer.Option(help="Overwrite the output file.")] = False,
) -> None:
    """Stage 1 on this site's rows -> summary JSON to send to the coordinator (no rows)."""
    if nuisance != "task":
        raise CliUsageError(
            f"--nuisance {nuisance} is not available for a site summary: it fits on this "
            "site's rows only; shared nuisance learning needs all tasks' rows in one place "
            "(bayesfuse estimate --nuisance shared), never across sites that cannot share rows.")
    _check_output(output, force)
    frame = _read_table(data)
    from bayesfuse.stage1.site import site_summary

    columns = [c.strip() for c in covariates.split(",") if c.strip()] if covariates else None
    outcomes = [c.strip() for c in outcome.split(",") if c.strip()]
    zs = {k: _option_value(v) for k, v in _parse_pairs(task_covariate,
                                                       "--task-covariate").items()}
    spec = learner if propensity_learner is None else {"outcome": learner,
                                                        "propensity": propensity_learner}
    document = site_summary(
        frame, outcome=outcomes[0] if len(outcomes) == 1 else outcomes, treatment=treatment,
        covariates=columns, task=task, task_id=task_id, estimand=estimand,
        modifiers=_parse_modifiers(modifiers), learner=spec,
        folds=folds, seed=seed, min_n=min_n, n_jobs=n_jobs, task_covariates=zs or None,
        dp_epsilon=dp_epsilon, dp_delta=dp_delta, dp_sensitivity=dp_sensitivity,
        dp_seed=dp_seed, created_at=created_at, output=output, force=force)
    entries = document.get("tasks", [document])
    for entry in entries:
        for warning in entry.get("warnings", []):
            err.print(Text.assemble(("warning", "yellow"), f": task {entry['task']}: {warning}"))
    privacy = " with differential privacy" if "dp" in document else ""
    out.print(f"Wrote the summary of {len(entries)} task(s){privacy} to {output}; "
              "it holds no row of the data.")


@app.command()
def fuse(
    estimates: Annotated[list[Path], typer.Argument(help="Estimates CSV or summary JSON file(s).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Fit file to write (.nc).")],
    model: Annotated[str, typer.Option(help="Shipped model name or a spec .toml.")] =
    "exchangeable",
    prior: Annotated[list[str] | None, typer.Option(help="Prior override, e.g. "
                                                     "tau=halfnormal(2); repeatable.")] = None,
    option: Annotated[list[str] | None, typer.Option(help="Family option, e.g. "
                                                      "robust=true; repeatable.")] = None,
    chains: Annotated[int | None, typer.Option(help="Number of chains.")] = None,
    draws: Annotated[int | None, typer.Option(help="Draws per chain.")] = None,
    warmup: Annotated[int | None, typer.Option(help="Warmup iterations per chain.")] = None,
    target_accept: Annotated[float | None, typer.Option(help="NUTS target acceptance.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    backend: Annotated[str, typer.Option(help="numpyro | pymc")] = "numpyro",
    method: Annotated[str, typer.Option(
        help="nuts | exact: independent draws by quadrature over tau, no compilation "
             "(exchangeable model, scalar estimates, normal prior on mu).")] = "nuts",
    summary: Annotated[Path | None, typer.Option(help="Also write the summary CSV.")] = None,
    ci_prob: Annotated[float, typer.Option(help="Credible interval probability.")] = 0.95,
    force: Annotated[bool, typer.Option(help="Overwrite output files.")] = False,
    plain: Annotated[bool, typer.Option(
        help="Sample θ itself (collapsed=False) instead of integrating it out; for car "
             "with hundreds of tasks this avoids a K×K factor per gradient.")] = False,
    within_corr: Annotated[str | None, typer.Option(
        help="given | unknown | a correlation in (-1, 1): the correlation between a task's "
             "estimates when the files give standard errors only (vector θ). unknown "
             "samples one correlation matrix shared by the tasks (prior within_corr = "
             "lkj(2)); default: given (use the covariances as they are).")] = None,
) -> None:
    """Stage 2: fuse per-task estimates with a task-similarity prior -> fit file.

    Prints the fused estimates and how much each task borrows (pooling, variance
    reduction, effective n)."""
    import warnings

    from bayesfuse.data.read import read_estimates
    from bayesfuse.errors import ConvergenceWarning
    from bayesfuse.inference.fuse import fuse as fuse_api

    check_probability(ci_prob, "--ci-prob")
    check_choice(method, "--method", ("nuts", "exact"))
    _check_output(output, force)
    if summary is not None:
        _check_output(summary, force)
    est = read_estimates([str(p) for p in estimates])
    for note in est.meta.get("notes", []):  # converted standard errors, ignored columns
        err.print(Text.assemble(("note", "cyan"), f": {note}"))
    options = {k: _option_value(v) for k, v in _parse_pairs(option, "--option").items()}
    if within_corr is not None:
        from bayesfuse.families.within_corr import check_within_corr

        options["within_corr"] = check_within_corr(within_corr)
    start = time.perf_counter()
    with err.status(f"Sampling {model} model (K = {est.n_tasks})..."):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fit = fuse_api(est, model=model, priors=_parse_pairs(prior, "--prior"),
                           chains=chains, draws=draws, warmup=warmup,
                           target_accept=target_accept, seed=seed, backend=backend,
                           method=method, collapsed=not plain, **options)
    elapsed = time.perf_counter() - start
    _print_fit(fit, ci_prob)
    fit.save(output)
    out.print(f"Wrote {output} ({elapsed:.1f} s)")
    if summary is not None:
        from bayesfuse._io import atomic_write_text

        atomic_write_text(summary, fit.summary(ci_prob).to_csv(index=False))
        out.print(f"Wrote {summary}")


@app.command("predict-population")
def predict_population(
    fit_path: Annotated[Path, typer.Argument(help="Fit file written by 'bayesfuse fuse' (a "
                                                  "model with task covariates: metareg).")],
    target: Annotated[Path, typer.Argument(help="Target population CSV: one row per target "
                                                "task, a column per covariate of the model.")],
    weights: Annotated[str | None, typer.Option(help="Column of TARGET with the rows' weights "
                                                     "(default: equal).")] = None,
    predictive: Annotated[bool, typer.Option(
        help="Average of new tasks' effects drawn at the rows (adds the between-task "
             "variation) instead of the average conditional mean.")] = False,
    ci_prob: Annotated[float, typer.Option(help="Credible interval probability.")] = 0.95,
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="Also write the summary CSV.")] = None,
    draws_output: Annotated[Path | None, typer.Option(
        help="Also write the posterior draws CSV (one row per draw).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of --predictive draws.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite output files.")] = False,
) -> None:
    """Transport: the average effect in a target population of task-covariate rows.

    The posterior of the weighted average effect over the rows (fit.predict_population)."""
    import warnings

    from bayesfuse.errors import BayesfuseWarning
    from bayesfuse.result import load_fit, summarize_draws

    check_probability(ci_prob, "--ci-prob")
    for path in (output, draws_output):
        if path is not None:
            _check_output(path, force)
    frame = _read_table(target)
    fit = load_fit(fit_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BayesfuseWarning)
        draws = fit.predict_population(frame, weights=weights, seed=seed,
                                       kind="predictive" if predictive else "mean")
    for warning in caught:
        if issubclass(warning.category, BayesfuseWarning):
            err.print(Text.assemble(("warning", "yellow"), f": {warning.message}"))
    summary = summarize_draws(draws, ci_prob)
    pct = f"{ci_prob:.0%}"
    what = "average of the target tasks' effects" if predictive else "average effect"
    table = Table(title=f"Target population ({len(frame)} rows): {what}, {fit.model} fit")
    for column in ("param", "mean", "sd", f"{pct} interval"):
        table.add_column(column, justify="right" if column != "param" else "left",
                         no_wrap=True)
    for name, row in summary.iterrows():
        table.add_row(str(name), f"{row['mean']:.3f}", f"{row['sd']:.3f}",
                      f"[{row['eti_low']:.3f}, {row['eti_high']:.3f}]")
    out.print(table)
    from bayesfuse._io import atomic_write_text

    if output is not None:
        atomic_write_text(output, summary.reset_index().to_csv(index=False))
        out.print(f"Wrote {output}")
    if draws_output is not None:
        atomic_write_text(draws_output, draws.to_csv(index=False))
        out.print(f"Wrote {draws_output}")


@app.command()
def models() -> None:
    """List the shipped model specs."""
    from bayesfuse.families import FAMILIES
    from bayesfuse.specs.models import load_spec, shipped_models

    table = Table(title="Shipped models (bayesfuse fuse --model NAME)")
    table.add_column("name")
    table.add_column("description")
    for name in shipped_models():
        spec = load_spec(name)
        table.add_row(name, FAMILIES[spec.family].description)
    out.print(table)


@app.command()
def demo(
    outdir: Annotated[Path, typer.Option(help="Folder for fit.nc and estimates.csv.")] =
    Path("."),
    learner: Annotated[str, typer.Option(help="Stage-1 learner.")] = "gbm",
    folds: Annotated[int, typer.Option(help="Cross-fitting folds.")] = 5,
    draws: Annotated[int, typer.Option(help="Draws per chain.")] = 1000,
    warmup: Annotated[int, typer.Option(help="Warmup per chain.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    n_jobs: Annotated[int, typer.Option(help="Parallel stage-1 tasks.")] = -1,
    model: Annotated[str, typer.Option(help="exchangeable (scalar θ), or cluster, gmrf... "
                                            "(vector θ: reading and math per grade)")] =
    "exchangeable",
    grades: Annotated[str, typer.Option(help="Grades for vector θ, e.g. k or k,1,2,3.")] = "k",
    force: Annotated[bool, typer.Option(
        help="Overwrite estimates.csv, fit.nc and report.html.")] = False,
) -> None:
    """STAR end to end: stage 1 per school, fusion, tables and fit file."""
    from bayesfuse.demo import run_demo

    if outdir.is_dir():
        for name in ("estimates.csv", "fit.nc", "report.html"):
            _check_output(outdir / name, force)

    run_demo(outdir=outdir, learner=learner, folds=folds, draws=draws, warmup=warmup,
             seed=seed, n_jobs=n_jobs, console=out, err_console=err, stage1=_run_stage1,
             print_fit=_print_fit, model=model, grades=grades)


def _parse_floats(text: str, what: str) -> list[float]:
    values = []
    for item in text.split(","):
        try:
            values.append(float(item))
        except ValueError:
            raise CliError(f"{what} must be comma-separated numbers, e.g. 1,1.5,2,4; "
                           f"got {text!r}.") from None
    return values


@app.command()
def sensitivity(
    fit_path: Annotated[Path, typer.Argument(help="Fit file written by 'bayesfuse fuse'.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML report to write.")],
    sweep: Annotated[list[str] | None, typer.Option(
        help="Prior to try, e.g. tau=halfcauchy(5); repeatable (default: a data-scaled "
             "grid for the scale priors; 'none' skips the sweep).")] = None,
    factors: Annotated[str, typer.Option(
        help="Stage-1 covariance inflation factors c, or 'none'.")] = "1,1.5,2,4",
    families: Annotated[str, typer.Option(
        help="Families to compare with by LOO (comma-separated), or 'none'.")] =
    "pooled,exchangeable,independent",
    loo: Annotated[bool, typer.Option(help="Leave-one-task-out influence.")] = True,
    draws: Annotated[int | None, typer.Option(help="Draws per chain of the refits "
                                                   "(default: as the fit).")] = None,
    ci_prob: Annotated[float, typer.Option(help="Credible interval probability.")] = 0.95,
    csv_dir: Annotated[Path | None, typer.Option(help="Also write the tables as CSV "
                                                      "files to this folder.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite the output file.")] = False,
) -> None:
    """Sensitivity analysis of a fit (priors, single tasks, stage-1 SEs, family) -> HTML."""
    import warnings

    from bayesfuse.analysis import sensitivity as sens
    from bayesfuse.result import load_fit

    check_probability(ci_prob, "--ci-prob")
    _check_output(output, force)
    if csv_dir is not None and not csv_dir.is_dir():
        raise CliError(f"--csv-dir {csv_dir} is not an existing folder.")
    factor_values = None if factors.strip().lower() == "none" else _parse_floats(
        factors, "--factors")
    family_names = [] if families.strip().lower() == "none" else [
        f.strip() for f in families.split(",") if f.strip()]
    fit = load_fit(fit_path)
    grid: dict[str, list[str]] | None | bool = None
    if sweep and [s.strip().lower() for s in sweep] == ["none"]:
        grid = False
    elif sweep:
        grid = {}
        for item in sweep:
            key, value = next(iter(_parse_pairs([item], "--sweep").items()))
            grid.setdefault(key, []).append(value)
    overrides = {"draws": draws} if draws is not None else {}
    start = time.perf_counter()
    with err.status(f"Sensitivity analysis of the {fit.model} fit (K = {len(fit.tasks)})..."):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sens.SensitivityWarning)
            result = sens.sensitivity_analysis(
                fit, sweep=grid, loo=loo, factors=factor_values, families=family_names,
                ci_prob=ci_prob, **overrides)
    result.to_html(output)
    flagged = result.flagged
    if len(flagged):
        out.print(Text.assemble(
            (f"Power-scaling flags {len(flagged)} quantit"
             f"{'y' if len(flagged) == 1 else 'ies'}:", "yellow"),
            " " + ", ".join(f"{v} ({d})" for v, d in zip(flagged["variable"],
                                                         flagged["diagnosis"], strict=True))))
    else:
        out.print("Power-scaling: no prior or likelihood sensitivity flagged.", style="green")
    for message in result.messages:
        out.print(f"  - {message}")
    if result.loo_influence is not None:
        top = result.loo_influence.sort_values("rank").iloc[0]
        out.print(f"Most influential task: {top['task']} (influence "
                  f"{top['influence']:.2f} posterior sd, {top['method']})")
    if csv_dir is not None:
        from bayesfuse._io import atomic_write_text

        tables = {"power_scaling": result.power_scaling, "prior_sweep": result.prior_sweep,
                  "loo_influence": result.loo_influence, "inflation": result.inflation,
                  "comparison": result.comparison}
        for name, table in tables.items():
            if table is not None:
                atomic_write_text(csv_dir / f"{name}.csv",
                                  table.to_csv(index=name == "comparison"))
    out.print(f"Wrote {output} ({time.perf_counter() - start:.1f} s)")


@app.command()
def report(
    fit_path: Annotated[Path, typer.Argument(help="Fit file written by 'bayesfuse fuse'.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML report to write.")],
    ci_prob: Annotated[float, typer.Option(help="Credible interval probability.")] = 0.95,
    interval: Annotated[str, typer.Option(help="eti (equal-tailed) | hdi (highest "
                                               "density)")] = "eti",
    force: Annotated[bool, typer.Option(help="Overwrite the output file.")] = False,
) -> None:
    """Self-contained HTML report of a fit (figures inline, no network requests).

    Data, model and priors, diagnostics, fused estimates, hyperparameters, similarity."""
    from bayesfuse.reporting.report import write_report
    from bayesfuse.result import load_fit

    check_probability(ci_prob, "--ci-prob")
    check_choice(interval, "--interval", ("eti", "hdi"))
    _check_output(output, force)
    fit = load_fit(fit_path)
    start = time.perf_counter()
    with err.status(f"Writing the report of the {fit.model} fit..."):
        path = write_report(fit, output, ci_prob=ci_prob, interval=interval, force=True,
                            source=fit_path.name)
    _print_diagnostics(fit)
    out.print(f"Wrote {path} ({time.perf_counter() - start:.1f} s)")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning every input error into one line and exit 2."""
    command = typer.main.get_command(app)
    args = sys.argv[1:] if argv is None else list(argv)
    debug = os.environ.get("BAYESFUSE_DEBUG") == "1"
    try:
        result = command.main(args=args, prog_name="bayesfuse", standalone_mode=False)
    except BayesfuseError as exc:
        if debug:
            raise
        _error_line(str(exc))
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        if debug:
            raise
        _error_line(f"{exc.strerror or exc}: {exc.filename}")
        return 2
    except KeyboardInterrupt:
        _error_line("interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001
        # Typer's Click (vendored in recent Typer) signals exit, abort and usage errors by
        # exceptions; they are recognised by their interface, not their module.
        kind = type(exc).__name__
        if kind == "Exit":
            return int(getattr(exc, "exit_code", 0) or 0)
        if kind == "Abort":
            _error_line("aborted")
            return 130
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            ctx = getattr(exc, "ctx", None)
            path = getattr(ctx, "command_path", "bayesfuse") or "bayesfuse"
            _error_line(f"{exc.format_message()} (see '{path} --help')")
            return 2
        if debug:
            raise
        _error_line(f"internal error: {kind}: {exc} "
                    "(set BAYESFUSE_DEBUG=1 for the traceback and please report it)")
        return 1
    if isinstance(result, int):
        return result
    return 0


def _error_line(message: str) -> None:
    text = " ".join(str(message).split())
    sys.stderr.write(f"error: {text}\n")
    sys.stderr.flush()


def run() -> None:  # pragma: no cover - console script shim
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
