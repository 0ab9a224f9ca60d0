"""Shared vs per-task nuisance learning: per-task θ̂ MSE and 95% interval coverage.

Simulates ``--tasks`` tasks × ``--rows`` rows from a partially linear model with a
continuous treatment and ``--p`` covariates x ~ N(0, I):

    d = x'γₖ + v,   y = θₖ d + aₖ + x'βₖ + ε,   v, ε ~ N(0, 1),   θₖ ~ N(1, 0.3²),

with the task intercepts aₖ ~ N(0, 1) and, in two designs,

* ``alike`` — the same dense β, γ for every task (βⱼ, γⱼ ∝ 0.9^j, var(x'β) = 4,
  var(x'γ) = 1);
* ``unlike`` — βₖ, γₖ drawn afresh for every task (entries ~ N(0, ·), the same variances).

Each replication fits :func:`bayesfuse.estimate_tasks` (``estimand="plr"``) twice on the same
rows: ``nuisance="task"`` (one DoubleML fit per task) and ``nuisance="shared"`` (one pooled
cross-fitted fit with task indicators and task × covariate interactions). Both use the same
learner class for both nuisances: a standardised ``LassoCV`` (3-fold, 20 penalties); on the
pooled design it is a data-shared lasso, which can keep or drop the task-specific parts.
``--learner postlasso`` refits least squares on the lasso's support (tried; worse).

Reports, per design, the MSE of θ̂ₖ against the true θₖ (over tasks and replications), the
MSE ratio shared / task with its Monte Carlo error (delta method over replications, which
are independent; tasks within one replication are not), and the coverage of the 95%
intervals θ̂ₖ ± 1.96 seₖ with its Monte Carlo error.

Usage::

    python benchmarks/shared_nuisance.py                 # 20 tasks x 200 rows, 3 folds
    python benchmarks/shared_nuisance.py --folds 5       # the library's default folds
    python benchmarks/shared_nuisance.py --reps 2        # smoke run
"""

from __future__ import annotations

import argparse
import inspect
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin

import bayesfuse as bf

RESULTS = Path(__file__).resolve().parent / "results"
DATE = "2026-12-03"


def _lasso_cv(seed: int = 0):
    from sklearn.linear_model import LassoCV

    params = inspect.signature(LassoCV.__init__).parameters
    grid = ({"n_alphas": 20} if "n_alphas" in params
            and params["n_alphas"].default != "deprecated" else {"alphas": 20})
    return LassoCV(cv=3, max_iter=5000, random_state=seed, **grid)


class PostLasso(RegressorMixin, BaseEstimator):
    """Post-lasso: ``LassoCV`` selects the columns, least squares refits on them.

    The refit removes the lasso's shrinkage of the kept coefficients (Belloni &
    Chernozhukov, 2013), the first-order bias that a cross-validated penalty leaves in
    each nuisance and that the product of the two nuisance errors turns into bias in θ̂.
    """

    def __init__(self, random_state: int = 0):
        self.random_state = random_state

    def fit(self, x, y):
        from sklearn.linear_model import LinearRegression

        self.lasso_ = _lasso_cv(self.random_state).fit(x, y)
        self.support_ = np.flatnonzero(self.lasso_.coef_)
        self.refit_ = LinearRegression().fit(x[:, self.support_], y) if self.support_.size \
            else None
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, x):
        if self.refit_ is None:
            return np.full(x.shape[0], self.mean_)
        return self.refit_.predict(x[:, self.support_])


def learner(kind: str = "lasso", seed: int = 0):
    """Standardised LassoCV (3-fold, 20 penalties) or post-lasso; the same for both methods."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = _lasso_cv(seed) if kind == "lasso" else PostLasso(seed)
    return make_pipeline(StandardScaler(), model)


def simulate(design: str, n_tasks: int, n_rows: int, p: int,
             rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows of all tasks and the true θ (n_tasks,)."""
    decay = 0.9 ** np.arange(p)
    if design == "alike":
        beta = np.tile(decay, (n_tasks, 1))
        gamma = np.tile(decay, (n_tasks, 1))
    else:
        beta = rng.normal(size=(n_tasks, p)) * decay
        gamma = rng.normal(size=(n_tasks, p)) * decay
    beta *= 2.0 / np.linalg.norm(beta, axis=1, keepdims=True)   # var(x'β) = 4
    gamma *= 1.0 / np.linalg.norm(gamma, axis=1, keepdims=True)  # var(x'γ) = 1
    theta = 1.0 + 0.3 * rng.standard_normal(n_tasks)
    intercept = rng.standard_normal(n_tasks)
    task = np.repeat(np.arange(n_tasks), n_rows)
    x = rng.standard_normal((task.size, p))
    d = np.einsum("ij,ij->i", x, gamma[task]) + rng.standard_normal(task.size)
    y = (theta[task] * d + intercept[task] + np.einsum("ij,ij->i", x, beta[task])
         + rng.standard_normal(task.size))
    frame = pd.DataFrame(x, columns=[f"x{j + 1}" for j in range(p)])
    frame.insert(0, "task", [f"t{k:02d}" for k in task])
    frame["d"], frame["y"] = d, y
    return frame, theta


def one_replication(design: str, rep: int, args: argparse.Namespace) -> list[dict]:
    rng = np.random.default_rng([args.seed, rep, 0 if design == "alike" else 1])
    frame, theta = simulate(design, args.tasks, args.rows, args.p, rng)
    covariates = [c for c in frame.columns if c.startswith("x")]
    rows = []
    for nuisance in ("task", "shared"):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = bf.estimate_tasks(frame, task="task", outcome="y", treatment="d",
                                    covariates=covariates, estimand="plr",
                                    learner=learner(args.learner),
                                    folds=args.folds, n_jobs=args.jobs, seed=rep,
                                    nuisance=nuisance)
        seconds = time.perf_counter() - start
        truth = theta[[int(t[1:]) for t in est.tasks]]
        err = est.estimates[:, 0] - truth
        rows.append({"design": design, "rep": rep, "nuisance": nuisance,
                     "n_tasks": est.n_tasks, "sq_err": float(np.mean(err**2)),
                     "bias": float(np.mean(err)), "var": float(np.mean(est.se[:, 0] ** 2)),
                     "cover": float(np.mean(np.abs(err) <= 1.96 * est.se[:, 0])),
                     "seconds": seconds})
    return rows


def summarise(raw: pd.DataFrame) -> pd.DataFrame:
    out = []
    for design, part in raw.groupby("design", sort=False):
        wide = part.pivot(index="rep", columns="nuisance", values="sq_err")
        a, b = wide["shared"].to_numpy(), wide["task"].to_numpy()
        r = len(a)
        ratio = a.mean() / b.mean()
        cov = np.cov(a, b)
        rel_var = (cov[0, 0] / a.mean() ** 2 + cov[1, 1] / b.mean() ** 2
                   - 2 * cov[0, 1] / (a.mean() * b.mean())) / r
        cover = part.pivot(index="rep", columns="nuisance", values="cover")
        means = part.groupby("nuisance")[["seconds", "bias", "var"]].mean()
        out.append({
            "design": design, "reps": r,
            "mse_task": b.mean(), "mse_task_mc": b.std(ddof=1) / np.sqrt(r),
            "mse_shared": a.mean(), "mse_shared_mc": a.std(ddof=1) / np.sqrt(r),
            "ratio": ratio, "ratio_mc": ratio * np.sqrt(rel_var),
            "cover_task": cover["task"].mean(),
            "cover_task_mc": cover["task"].std(ddof=1) / np.sqrt(r),
            "cover_shared": cover["shared"].mean(),
            "cover_shared_mc": cover["shared"].std(ddof=1) / np.sqrt(r),
            "bias_task": means.loc["task", "bias"], "bias_shared": means.loc["shared", "bias"],
            "se_mse_task": np.sqrt(means.loc["task", "var"] / b.mean()),
            "se_mse_shared": np.sqrt(means.loc["shared", "var"] / a.mean()),
            "sec_task": means.loc["task", "seconds"],
            "sec_shared": means.loc["shared", "seconds"],
        })
    return pd.DataFrame(out)


def verdict(row: pd.Series) -> str:
    in_band = all(0.93 <= row[c] <= 0.97 for c in ("cover_task", "cover_shared"))
    if row["design"] == "alike":
        met = row["ratio"] <= 0.80 and in_band
        return (f"target (MSE down >= 20%, coverage 93-97%) {'MET' if met else 'NOT met'}: "
                f"MSE {100 * (1 - row['ratio']):.0f}% lower "
                f"(± {100 * row['ratio_mc']:.1f} MC)")
    met = row["ratio"] <= 1.05
    return (f"target (no more than 5% worse) {'MET' if met else 'NOT met'}: ratio "
            f"{row['ratio']:.3f} ± {row['ratio_mc']:.3f} MC")


def markdown(summary: pd.DataFrame, args: argparse.Namespace, command: str,
             wall: float) -> str:
    lines = [
        "# Shared vs per-task nuisance learning", "",
        f"Date: {DATE}. Command: `{command}` ({wall / 60:.1f} min wall on 2 shared cores).", "",
        f"{args.tasks} tasks × {args.rows} rows, partially linear model (`estimand=\"plr\"`), "
        f"continuous treatment, {args.p} covariates, true θₖ ~ N(1, 0.3²), "
        f"{args.folds}-fold cross-fitting, learner `{args.learner}` (see below) for both "
        "nuisances and both methods. `alike`: the same dense β, γ in "
        "every task (task intercepts differ); `unlike`: βₖ, γₖ drawn afresh per task. "
        "See the docstring of `benchmarks/shared_nuisance.py`.", "",
        "MSE: mean over tasks and replications of (θ̂ₖ − θₖ)²; ratio = shared / task. "
        "Coverage of θ̂ₖ ± 1.96 seₖ. ± is one Monte Carlo standard error "
        "(over independent replications).", "",
        "| design | reps | MSE task | MSE shared | ratio shared/task | coverage task | "
        "coverage shared | s/rep task | s/rep shared |",
        "| :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in summary.itertuples():
        lines.append(
            f"| {row.design} | {row.reps} | {row.mse_task:.4f} ± {row.mse_task_mc:.4f} | "
            f"{row.mse_shared:.4f} ± {row.mse_shared_mc:.4f} | "
            f"{row.ratio:.3f} ± {row.ratio_mc:.3f} | "
            f"{row.cover_task:.3f} ± {row.cover_task_mc:.3f} | "
            f"{row.cover_shared:.3f} ± {row.cover_shared_mc:.3f} | "
            f"{row.sec_task:.1f} | {row.sec_shared:.1f} |")
    lines += ["", "Where the error comes from: mean of θ̂ₖ − θₖ (bias) and √(mean seₖ²) / √MSE "
              "(1 = the standard errors match the actual error).", "",
              "| design | bias task | bias shared | se/√MSE task | se/√MSE shared |",
              "| :--- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {row.design} | {row.bias_task:+.4f} | {row.bias_shared:+.4f} | "
              f"{row.se_mse_task:.3f} | {row.se_mse_shared:.3f} |"
              for row in summary.itertuples()]
    lines += ["", "Verdict:", ""]
    lines += [f"* {row['design']}: {verdict(row)}" for _, row in summary.iterrows()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--p", type=int, default=20)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument("--designs", default="alike,unlike")
    parser.add_argument("--learner", choices=["lasso", "postlasso"], default="lasso")
    parser.add_argument("--out", type=Path, default=RESULTS / "shared_nuisance.md")
    args = parser.parse_args()
    import sys

    command = "python benchmarks/shared_nuisance.py " + " ".join(sys.argv[1:])
    start = time.perf_counter()
    raw = []
    for design in args.designs.split(","):
        for rep in range(args.reps):
            raw += one_replication(design, rep, args)
            done = [r for r in raw if r["design"] == design]
            print(f"{design} rep {rep + 1}/{args.reps} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
            if len(done) >= 4 and (rep + 1) % 5 == 0:
                print(summarise(pd.DataFrame(done)).round(4).to_string(index=False),
                      flush=True)
    summary = summarise(pd.DataFrame(raw))
    text = markdown(summary, args, command.strip(), time.perf_counter() - start)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
