"""Speed of ``method="exact"`` (numpy, nothing compiled) and of start-up.

On the simulated exchangeable data of ``benchmarks/speed.py`` (θₖ ~ N(1, 0.5²),
seₖ ~ U(0.5, 1.5)), priors μ ~ normal(0, 5), τ ~ halfnormal(1), 4 chains × 1000 draws:

* **sampling part** — :func:`bayesfuse.inference.exact.run_exact` with no prior draws: the
  grid over τ, the draws of τ and μ, θ, the pointwise log-likelihood, pooling weights and
  replicated θ̂ (what the issue's "≤ 50 ms" is about);
* **prior draws** — the 500 prior and prior-predictive draws a fit keeps;
* **InferenceData and FusionResult** — :func:`bayesfuse.inference.convert.build_idata` and
  the result object on those draws;
* **whole fit** — ``bf.fuse(est, method="exact")`` in a warm process (defaults otherwise);
* ``--baseline``: the JAX path that ``method="exact"`` used before (the family's grid over τ,
  the compiled per-draw map and prior draws), run the same way;
* **start-up** — whole processes: ``python -c "import bayesfuse"`` and ``bayesfuse --help``.

In-process figures are medians of ``--repeats`` runs, wall (``time.perf_counter``) and CPU of
the process (``time.process_time``, all threads); whole-process ones are medians of wall
time around ``subprocess.run`` and the children's CPU from ``resource.getrusage``. Prints a
markdown table.

Usage::

    python benchmarks/exact_speed.py                    # K = 2,000
    python benchmarks/exact_speed.py --ks 100,2000,20000 --repeats 9 --baseline
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import bayesfuse as bf
from bayesfuse.data.estimates import TaskEstimates
from bayesfuse.inference import exact
from bayesfuse.inference.convert import build_idata
from bayesfuse.inference.fuse import prepare
from bayesfuse.result import FusionResult

PRIORS = {"mu": "normal(0, 5)", "tau": "halfnormal(1)"}


def simulate(n_tasks: int, seed: int = 0) -> TaskEstimates:
    rng = np.random.default_rng(seed)
    se = rng.uniform(0.5, 1.5, n_tasks)
    theta = 1.0 + 0.5 * rng.standard_normal(n_tasks)
    return TaskEstimates([f"t{k}" for k in range(n_tasks)],
                         theta + se * rng.standard_normal(n_tasks), se**2)


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """Median wall and CPU seconds of ``fn()`` over ``repeats`` runs (after one warm-up)."""
    out = fn()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), out


def whole_process(command: list[str], repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of a whole process (after one warm-up run)."""
    subprocess.run(command, capture_output=True, check=True)
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def baseline_fit(family, config, seed: int, prior_draws: int = 500):
    """The JAX path method="exact" used before: the family's grid over τ (4,000 nodes), the
    compiled per-draw map for θ, log-likelihood, pooling and θ̂, and compiled prior draws."""
    import jax

    from bayesfuse.inference import draws as per_draw

    total = config.chains * config.draws
    hyper = family.exact_hyper_draws(np.random.default_rng(seed), total)
    data = {k: np.asarray(v) for k, v in family.data().items()}
    key_post, key_prior = jax.random.split(jax.random.PRNGKey(seed), 2)
    post = per_draw.postprocess_fn(family, True, data, total)
    out = post(hyper, jax.random.split(key_post, total), data)
    jax.block_until_ready(out)
    per_draw.prior_draws(family, data, key_prior, prior_draws, {"family": family})
    return out


def rows_for(n_tasks: int, repeats: int, baseline: bool) -> list[tuple[str, float, float]]:
    est = simulate(n_tasks)
    _, spec, family = prepare(est, "exchangeable", PRIORS)
    config = spec.sampler
    rows = []
    wall, cpu, draws = timed(lambda: exact.run_exact(family, config, 1, prior_draws=0),
                             repeats)
    rows.append(("sampling part: τ grid, μ, θ, log-lik, pooling, θ̂ rep", wall, cpu))
    y, var, m0, s0, tau_prior, scale = exact.exact_inputs(family)
    wall, cpu, _ = timed(lambda: exact.tau_grid(y, var, m0, s0, tau_prior, scale), repeats)
    rows.append(("  of which the grid over τ", wall, cpu))
    wall, cpu, _ = timed(lambda: exact.draw_prior(np.random.default_rng(1), 500, var, m0, s0,
                                                  tau_prior), repeats)
    rows.append(("prior draws (500)", wall, cpu))
    full = exact.run_exact(family, config, 1)
    meta = {"family": family.name, "method": "exact", "seed": 1, "timings": full.timings}
    wall, cpu, _ = timed(lambda: FusionResult(build_idata(family, est, full, meta),
                                              estimates=est, family=family), repeats)
    rows.append(("InferenceData + FusionResult", wall, cpu))
    wall, cpu, _ = timed(lambda: bf.fuse(est, priors=PRIORS, method="exact", seed=1), repeats)
    rows.append(("whole bf.fuse(method='exact'), warm process", wall, cpu))
    if baseline:
        wall, cpu, _ = timed(lambda: baseline_fit(family, config, 1), max(1, repeats // 3))
        rows.append(("before: JAX path (grid, compiled per-draw map, prior)", wall, cpu))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="2000", help="comma-separated numbers of tasks")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--baseline", action="store_true",
                        help="also time the JAX path that method='exact' used before")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}, Python {platform.python_version()}, "
          f"numpy {np.__version__}; 4 chains x 1000 draws; medians of {args.repeats} runs\n")
    print("| K | step | wall (ms) | CPU (ms) |")
    print("| ---: | --- | ---: | ---: |")
    for n_tasks in (int(k) for k in args.ks.split(",")):
        for label, wall, cpu in rows_for(n_tasks, args.repeats, args.baseline):
            print(f"| {n_tasks:,} | {label} | {wall * 1e3:.0f} | {cpu * 1e3:.0f} |")
    script = Path(sys.executable).with_name("bayesfuse")
    for label, command in (("python -c 'import bayesfuse'", [sys.executable, "-c",
                                                             "import bayesfuse"]),
                           ("bayesfuse --help", [str(script), "--help"])):
        wall, cpu = whole_process(command, args.repeats)
        print(f"| – | whole process: {label} | {wall * 1e3:.0f} | {cpu * 1e3:.0f} |")


if __name__ == "__main__":
    main()
