"""Prior sensitivity of the ``cluster`` family in the multi-task simulation study.

The study (``benchmarks/accuracy.py``) misses its 30% target at δ = 1 with the cluster
family's default within-cluster scale τ_c ~ halfnormal(0.5·spread): seven tasks per cluster
say little about τ_c when the truth is τ_c = 0, so τ_c's posterior echoes its prior and the
fused estimates are only partly pulled onto their cluster's centre. This script refits the
cluster family on the study's *stored* stage-1 estimates (the ``no pooling`` rows of
``results/accuracy_raw.csv.gz``: θ̂_j and their standard errors) under alternative priors
for τ_c, so that every variant sees exactly the same data, and reports per design the mean
per-task MSE, its paired difference from the default (± Monte Carlo standard error over
replications) and the 95% interval coverage.

Variants (spread ≈ 0.5 at this study's scale, so 0.5·spread = 0.25):

* ``default``: τ_c ~ halfnormal(0.25), one τ per cluster (the study's prior);
* ``halfcauchy(0.1·spread)`` and ``halfcauchy(0.2·spread)``: more mass near 0, heavy tail;
* ``halfnormal(0.2·spread)``: more mass near 0, light tail;
* ``shared τ``: the default prior on one τ shared by all clusters (``shared_scale=True``).

Writes ``results/cluster_priors.md`` and ``results/cluster_priors.csv``::

    python benchmarks/cluster_priors.py --reps 20
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import bayesfuse as bf

RESULTS = Path(__file__).parent / "results"


@functools.cache
def _study() -> Any:
    """The accuracy study module (its designs, priors and settings)."""
    spec = importlib.util.spec_from_file_location("accuracy_study",
                                                  Path(__file__).parent / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def variants(base: dict[str, str]) -> dict[str, tuple[dict[str, str], dict[str, Any]]]:
    """Name -> (priors, family options), each a change of the study's cluster priors."""
    return {
        "default": (base, {}),
        "halfcauchy(0.1·spread)": ({**base, "tau": "halfcauchy(0.05)"}, {}),
        "halfcauchy(0.2·spread)": ({**base, "tau": "halfcauchy(0.1)"}, {}),
        "halfnormal(0.2·spread)": ({**base, "tau": "halfnormal(0.1)"}, {}),
        "shared τ": (base, {"shared_scale": True}),
    }


def stage1_estimates(raw: pd.DataFrame, design: str, rep: int, estimand: str
                     ) -> tuple[bf.TaskEstimates, np.ndarray]:
    """The stored stage-1 estimates of one replication and the true θ, shape (20,)."""
    rows = raw[(raw["design"] == design) & (raw["rep"] == rep) & (raw["estimand"] == estimand)
               & (raw["method"] == "no pooling")].sort_values("task")
    estimate, se = _study().stored_stage1(rows)
    est = bf.TaskEstimates([f"task{j + 1}" for j in rows["task"]], estimate[:, None],
                           (se ** 2)[:, None, None])
    return est, rows["theta"].to_numpy()


def run(raw: pd.DataFrame, reps: int, estimand: str, study: Any, seed: int = 2024,
        log=print) -> pd.DataFrame:
    """One row per (variant, design, rep): mean per-task squared error and coverage."""
    rows = []
    for name, (priors, options) in variants(study.PRIORS["cluster"]).items():
        start = time.perf_counter()
        # the study's own runner (2 chains × 300 draws after 300 warmup, as there)
        fit_cluster = study._bayes_method("cluster", 2, 300, 300, seed, priors=priors,
                                          options=options)
        for design in study.DESIGNS:
            for rep in range(reps):
                est, theta = stage1_estimates(raw, design, rep, estimand)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    mean, low, high = fit_cluster(est)
                rows.append({"variant": name, "design": design, "rep": rep,
                             "sq_error": float(np.mean((mean - theta) ** 2)),
                             "coverage": float(np.mean((low <= theta) & (theta <= high)))})
        log(f"{name}: {time.perf_counter() - start:.0f} s")
    return pd.DataFrame(rows)


def summarise(per_rep: pd.DataFrame, raw: pd.DataFrame, estimand: str) -> pd.DataFrame:
    """Per (variant, design): MSE ± se, paired difference from the default, coverage."""
    nop = raw[(raw["method"] == "no pooling") & (raw["estimand"] == estimand)
              & (raw["rep"] < per_rep["rep"].max() + 1)]
    nop_mse = nop.assign(sq=(nop["estimate"] - nop["theta"]) ** 2).groupby("design")["sq"].mean()
    default = per_rep[per_rep["variant"] == "default"].set_index(["design", "rep"])["sq_error"]
    out = []
    for (variant, design), part in per_rep.groupby(["variant", "design"], sort=False):
        part = part.set_index(["design", "rep"])
        diff = part["sq_error"] - default.loc[part.index]
        n = len(part)
        out.append({
            "variant": variant, "design": design, "mean_mse": part["sq_error"].mean(),
            "mean_mse_se": part["sq_error"].std(ddof=1) / np.sqrt(n),
            "vs_no_pooling": part["sq_error"].mean() / nop_mse[design],
            "diff_vs_default": diff.mean(), "diff_se": diff.std(ddof=1) / np.sqrt(n),
            "coverage": part["coverage"].mean(),
            "coverage_se": part["coverage"].std(ddof=1) / np.sqrt(n),
        })
    return pd.DataFrame(out)


def markdown(table: pd.DataFrame, reps: int, estimand: str, seconds: float) -> str:
    lines = [
        "# Cluster family: prior sensitivity of the within-cluster scale",
        "",
        f"Generated by `benchmarks/cluster_priors.py --reps {reps}` in {seconds / 60:.0f} min: "
        f"the cluster family refitted on the stored stage-1 estimates ({estimand.upper()}) of "
        f"the first {reps} replications of `accuracy.md` (NUTS 2 chains × 300 draws after "
        "300 warmup, as there). *diff* is the paired difference in mean per-task MSE from "
        "the default prior (negative = better), ± Monte Carlo standard errors over "
        "replications. See the script's docstring for the variants.",
    ]
    designs = list(dict.fromkeys(table["design"]))
    for design in designs:
        part = table[table["design"] == design]
        lines += ["", f"## {design}", "",
                  "| τ prior | mean MSE | vs no pooling | diff vs default | coverage |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for r in part.itertuples():
            diff = ("—" if r.variant == "default"
                    else f"{r.diff_vs_default:+.4f} ± {r.diff_se:.4f}")
            lines.append(f"| {r.variant} | {r.mean_mse:.4f} ± {r.mean_mse_se:.4f} | "
                         f"{r.vs_no_pooling:.2f} | {diff} | "
                         f"{r.coverage:.3f} ± {r.coverage_se:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--estimand", choices=("plr", "ate"), default="plr")
    parser.add_argument("--raw", type=Path, default=RESULTS / "accuracy_raw.csv.gz")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    study = _study()
    raw = pd.read_csv(args.raw)
    available = int(raw["rep"].max()) + 1
    if args.reps > available:
        raise SystemExit(f"--reps {args.reps}: {args.raw} holds {available} replications.")
    start = time.perf_counter()
    per_rep = run(raw, args.reps, args.estimand, study,
                  log=lambda s: print(s, flush=True))
    seconds = time.perf_counter() - start
    table = summarise(per_rep, raw, args.estimand)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "cluster_priors.csv", index=False)
    (args.out / "cluster_priors.md").write_text(markdown(table, args.reps, args.estimand,
                                                         seconds))
    print(f"wrote {args.out / 'cluster_priors.md'} ({seconds / 60:.1f} min)")


if __name__ == "__main__":
    main()
