"""Stage 1 throughput: per-task DoubleML fits with joblib vs a dask.distributed cluster.

Simulates ``--tasks`` tasks × ``--rows`` rows (confounded binary treatment, five covariates,
nonlinear outcome), then times :func:`bayesfuse.estimate_tasks` (ATE, default learner, five
folds) with

* ``joblib`` — local processes, ``n_jobs = --workers``;
* ``dask`` — a ``LocalCluster`` of ``--workers`` single-threaded worker processes, started
  once outside the timed call (its start-up time is reported separately), passed as
  ``client=``.

Both runs must give identical estimates (checked; the script fails otherwise). Reports wall
time and tasks per second, and appends a table to ``benchmarks/results/stage1.md``.

Usage::

    python benchmarks/stage1.py                           # 200 tasks × 2000 rows, 2 workers
    python benchmarks/stage1.py --tasks 20 --rows 500     # quick
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

import bayesfuse as bf

RESULTS = Path(__file__).resolve().parent / "results"


def simulate(n_tasks: int, n_rows: int, seed: int = 0) -> pd.DataFrame:
    """Rows of all tasks: task effects ~ N(1, 0.3²), logistic propensity in x1, x2."""
    rng = np.random.default_rng(seed)
    effects = 1.0 + 0.3 * rng.standard_normal(n_tasks)
    x = rng.normal(size=(n_tasks * n_rows, 5))
    task = np.repeat(np.arange(n_tasks), n_rows)
    p = 1 / (1 + np.exp(-(0.8 * x[:, 0] - 0.4 * x[:, 1])))
    d = rng.binomial(1, p)
    y = (effects[task] * d + x[:, 0] + 0.5 * np.sin(x[:, 1]) + 0.3 * x[:, 2] ** 2
         + 0.2 * x[:, 3] * x[:, 4] + rng.normal(size=task.size))
    frame = pd.DataFrame(x, columns=[f"x{j + 1}" for j in range(5)])
    frame.insert(0, "y", y)
    frame.insert(1, "d", d)
    frame.insert(0, "site", [f"s{k:03d}" for k in task])
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--learner", default="gbm")
    parser.add_argument("--out", type=Path, default=RESULTS / "stage1.md")
    args = parser.parse_args()

    from dask.distributed import Client, LocalCluster

    df = simulate(args.tasks, args.rows)
    common = dict(task="site", outcome="y", treatment="d", estimand="ate",
                  learner=args.learner, folds=5, seed=1)
    rows = []

    start = time.perf_counter()
    local = bf.estimate_tasks(df, n_jobs=args.workers, **common)
    wall = time.perf_counter() - start
    rows.append({"backend": f"joblib (n_jobs={args.workers})", "startup_s": 0.0,
                 "wall_s": wall, "tasks_per_s": args.tasks / wall})
    print(rows[-1], flush=True)

    start = time.perf_counter()
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    client = Client(cluster)
    startup = time.perf_counter() - start
    try:
        start = time.perf_counter()
        remote = bf.estimate_tasks(df, backend="dask", client=client, **common)
        wall = time.perf_counter() - start
    finally:
        client.close()
        cluster.close()
    rows.append({"backend": f"dask LocalCluster ({args.workers} workers × 1 thread)",
                 "startup_s": startup, "wall_s": wall, "tasks_per_s": args.tasks / wall})
    print(rows[-1], flush=True)

    if remote.tasks != local.tasks or not (
            np.array_equal(remote.estimates, local.estimates)
            and np.array_equal(remote.covariances, local.covariances)):
        raise SystemExit("joblib and dask estimates differ")

    table = pd.DataFrame(rows)
    header = (f"\n## {args.tasks} tasks × {args.rows} rows, learner {args.learner!r}, ATE, "
              f"5 folds\n\n`python benchmarks/stage1.py --tasks {args.tasks} --rows "
              f"{args.rows} --workers {args.workers} --learner {args.learner}` on "
              f"{platform.machine()} with {os.cpu_count()} cores; identical estimates from "
              "both backends (checked). Wall time of the `estimate_tasks` call; the dask "
              "cluster's start-up is timed apart.\n\n")
    from bayesfuse.reporting.tables import format_table

    text = header + format_table(table, fmt="markdown", digits=2) + "\n"
    if not args.out.exists():
        text = "# Stage 1 throughput: joblib vs dask\n" + text
    with args.out.open("a") as handle:
        handle.write(text)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
