"""First fits in new processes: the persistent compilation cache, cold and warm.

Each measurement is a fresh ``python`` process, as a CLI call, a notebook kernel restart or
a pipeline step is:

* **bayesfuse NUTS, cold cache** — ``bf.fuse`` (scalar exchangeable, 4 chains × (1000 +
  1000), the simulated data of ``speed.py``) with an empty compilation-cache folder;
* **bayesfuse NUTS, warm cache** — the same fit on *other* data with as many tasks (other
  data-scaled default priors), the cache filled by the cold run: nothing is compiled;
* **PyMC default NUTS** — ``pm.sample`` on the non-centred model (``speed.py``), first call
  (PyMC compiles into its own cache, ``~/.pytensor``) and a second call;
* **per-fit overhead** — in one warm process, a refit's time outside sampling: the exact
  θ draws and log-likelihood, prior draws and building the ``FusionResult``;
* **CLI** — ``bayesfuse fuse`` on the 8-row eight-schools CSV, cold and warm cache; and
  ``bayesfuse --help`` and ``python -c "import bayesfuse"``.

The fit's own wall time (around ``bf.fuse`` / ``pm.sample``) gives the ESS per second;
process wall time is reported beside it. Medians of ``--repeats`` processes. Prints a
markdown table.

Usage::

    python benchmarks/first_fit.py --k 2000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EIGHT = "task,estimate,se\nA,28,15\nB,8,10\nC,-3,16\nD,7,11\nE,-1,9\nF,1,11\nG,18,10\nH,12,18\n"


def worker(kind: str, n_tasks: int, seed: int) -> dict:
    """Run one fit in this (fresh) process and return its figures."""
    import warnings

    sys.path.insert(0, str(HERE))
    import speed

    settings = {"chains": 4, "draws": 1000, "warmup": 1000, "target_accept": 0.9}
    est = speed.simulate(n_tasks, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "bayesfuse":
            import bayesfuse as bf

            start = time.perf_counter()
            fit = bf.fuse(est, seed=1, warn=False, **settings)  # data-scaled default priors
            wall = time.perf_counter() - start
            post = fit.idata.posterior
            ess = speed.min_ess({v: post[v].values for v in ("mu", "tau", "theta")})
            out = {"wall": wall, "ess": ess, "timings": fit.timings}
            if seed == 0:  # a refit in this warm process: the per-fit overhead
                start = time.perf_counter()
                refit = bf.fuse(speed.simulate(n_tasks, seed=5), seed=2, warn=False,
                                **settings)
                out["refit_wall"] = time.perf_counter() - start
                out["refit_timings"] = refit.timings
            return out
        wall, ess = speed.run_pymc(est, settings)
        return {"wall": wall, "ess": ess}


def process(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, out.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", choices=["bayesfuse", "pymc"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.k, args.seed)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
        env["BAYESFUSE_COMPILATION_CACHE"] = str(Path(tmp) / "cache")
        me = [sys.executable, __file__, "--k", str(args.k)]

        def fit(kind: str, seed: int, label: str) -> dict:
            total, text = process(me + ["--worker", kind, "--seed", str(seed)], env)
            res = json.loads(text.strip().splitlines()[-1])
            rows.append((label, res["wall"], total, res["ess"], res["ess"] / res["wall"]))
            print(rows[-1], flush=True)
            return res

        cold = fit("bayesfuse", 0, f"bayesfuse NUTS, K = {args.k}, cold cache")
        warm = [fit("bayesfuse", 10 + r, f"bayesfuse NUTS, K = {args.k}, warm cache")
                for r in range(args.repeats)]
        pymc = [fit("pymc", 0, f"PyMC default NUTS, K = {args.k}, call {r + 1}")
                for r in range(2)]
        cli_env = dict(env, BAYESFUSE_COMPILATION_CACHE=str(Path(tmp) / "cli-cache"))
        csv = Path(tmp) / "eight.csv"
        csv.write_text(EIGHT)
        bin_dir = Path(sys.executable).parent
        cli = [str(bin_dir / "bayesfuse"), "fuse", str(csv), "-o", str(Path(tmp) / "f.nc"),
               "--force", "--plain"]
        timings = {"CLI fuse, 8 tasks, cold cache": [process(cli, cli_env)[0]]}
        timings["CLI fuse, 8 tasks, warm cache"] = [process(cli, cli_env)[0]
                                                    for _ in range(args.repeats)]
        timings["bayesfuse --help"] = [process([str(bin_dir / "bayesfuse"), "--help"], env)[0]
                                       for _ in range(args.repeats)]
        timings["import bayesfuse"] = [
            process([sys.executable, "-c", "import bayesfuse"], env)[0]
            for _ in range(args.repeats)]

    print("\n| run | fit wall (s) | process wall (s) | min ESS | min ESS/s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, wall, total, ess, rate in rows:
        print(f"| {label} | {wall:.1f} | {total:.1f} | {ess:.0f} | {rate:.0f} |")
    best_pymc = max(r["ess"] / r["wall"] for r in pymc)
    warm_rate = statistics.median(r["ess"] / r["wall"] for r in warm)
    print(f"\nESS/s ratio against PyMC's better call: warm {warm_rate / best_pymc:.1f}, "
          f"cold {cold['ess'] / cold['wall'] / best_pymc:.1f}")
    refit = cold["refit_timings"]
    print(f"refit in a warm process: {cold['refit_wall']:.2f} s, of which sampling "
          f"{refit['sampling_s']:.2f} s; per-fit overhead (θ draws, log-likelihood, prior "
          f"draws, result) {cold['refit_wall'] - refit['sampling_s']:.2f} s "
          f"({', '.join(f'{k} {v:.2f}' for k, v in refit.items())})")
    print("\n| command | median wall (s) | runs |")
    print("| --- | ---: | ---: |")
    for label, walls in timings.items():
        print(f"| {label} | {statistics.median(walls):.2f} | {len(walls)} |")


if __name__ == "__main__":
    main()
