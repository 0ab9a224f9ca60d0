"""Wall time of every family at several K on simulated tasks (issue: report K = 20, 100, 500).

Each family fits data simulated from a truth it can represent (clusters for ``cluster``, a
ring graph for ``gmrf``/``car``, a covariate slope for ``metareg``), scalar θ, with the
family's default priors and 4 chains. Wall time includes compilation (first fit of that
shape in the process). Writes ``benchmarks/results/families.md``.

    python benchmarks/families.py --sizes 20,100,500 --draws 1000 --warmup 1000
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import bayesfuse as bf

RESULTS = Path(__file__).parent / "results"


def simulate(family: str, n_tasks: int, seed: int = 0) -> tuple[bf.TaskEstimates, dict]:
    """Scalar estimates with a structure the family can represent, and its options."""
    rng = np.random.default_rng(seed)
    se = rng.uniform(0.15, 0.35, n_tasks)
    tasks = [f"t{k}" for k in range(n_tasks)]
    options: dict = {}
    covariates = None
    if family == "cluster":
        theta = np.array([-1.0, 0.0, 1.5])[rng.integers(0, 3, n_tasks)]
        theta = theta + 0.1 * rng.standard_normal(n_tasks)
    elif family in ("gmrf", "car"):
        pairs = [(k, (k + 1) % n_tasks) for k in range(n_tasks)]
        weights = np.zeros((n_tasks, n_tasks))
        for a, b in pairs:
            weights[a, b] = weights[b, a] = 1.0
        graph = np.diag(weights.sum(1)) - 0.9 * weights
        theta = np.linalg.solve(np.linalg.cholesky(graph).T, rng.standard_normal(n_tasks))
        if family == "car":
            options["adjacency"] = [[tasks[a], tasks[b]] for a, b in pairs]
        else:
            covariates = pd.DataFrame({"position": np.arange(n_tasks) % n_tasks}, index=tasks)
            options["edges"] = "knn" if n_tasks > 40 else "all"
    elif family == "metareg":
        z = rng.standard_normal(n_tasks)
        covariates = pd.DataFrame({"z": z}, index=tasks)
        theta = 0.2 + 0.5 * z + 0.2 * rng.standard_normal(n_tasks)
    else:
        theta = 0.3 + 0.4 * rng.standard_normal(n_tasks)
        if family == "robust":
            theta[0] = 4.0
    est = bf.TaskEstimates(tasks, theta + se * rng.standard_normal(n_tasks), se**2,
                           covariates=covariates)
    return est, options


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="exchangeable,robust,metareg,cluster,car,gmrf")
    parser.add_argument("--sizes", default="20,100,500")
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--out", default=str(RESULTS / "families.md"))
    args = parser.parse_args(argv)
    rows = []
    for family in args.families.split(","):
        for n_tasks in (int(k) for k in args.sizes.split(",")):
            est, options = simulate(family, n_tasks)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = bf.fuse(est, model=family, draws=args.draws, warmup=args.warmup,
                              seed=0, **options)
            wall = time.perf_counter() - start
            diag = fit.diagnostics()
            row = {"family": family, "K": n_tasks, "wall_s": round(wall, 1),
                   "max_r_hat": round(float(diag["r_hat"].max()), 4),
                   "min_ess_bulk": int(diag["ess_bulk"].min()),
                   "divergences": int(fit.idata.sample_stats["diverging"].sum()),
                   "verdict": "pass" if diag.ok else "fail"}
            rows.append(row)
            print(row, flush=True)
    table = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# Wall time per family\n\nScalar θ, simulated, default priors, 4 chains × "
              f"{args.draws} draws after {args.warmup} warmup; wall time includes "
              "compilation. Machine: 2 CPU cores.\n\n")
    from bayesfuse.tables import format_table

    out.write_text(header + format_table(table, fmt="markdown", digits=4) + "\n")
    print(table.to_string())


if __name__ == "__main__":
    main()
