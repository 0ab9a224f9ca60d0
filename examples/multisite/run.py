"""Multi-site workflow on Tennessee STAR, checked against the single-machine path.

Each school plays a site that cannot share its pupils' records:

1. split STAR (kindergarten) by school into one CSV per site (``OUT/sites/``);
2. every site runs ``bayesfuse site`` on its own CSV and writes a summary JSON;
3. the coordinator runs ``bayesfuse fuse`` on the summaries;
4. the same schools go through ``bf.estimate_tasks`` + ``bf.fuse`` on one machine, and the
   script checks that both paths give the same stage-1 estimates (to 1e-12) and the same
   posterior draws (same seed).

Run ``python examples/multisite/run.py --out /tmp/multisite`` (about a minute on a laptop;
``--subprocess`` runs each ``bayesfuse`` command as a separate process, as a site would).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import bayesfuse as bf
from bayesfuse.data.datasets import STAR_COVARIATES, star_analysis_frame
from bayesfuse.errors import ConvergenceWarning

MIN_N = 20


def pick_schools(frame, count: int) -> list[str]:
    """The first ``count`` schools (in data order) with at least MIN_N pupils per arm."""
    arms = frame.groupby("school", sort=False)["treatment"].agg(["sum", "size"])
    ok = arms[(arms["sum"] >= MIN_N) & (arms["size"] - arms["sum"] >= MIN_N)]
    if len(ok) < count:
        raise SystemExit(f"only {len(ok)} schools have {MIN_N} pupils in each arm")
    return [str(s) for s in ok.index[:count]]


def bayesfuse_cli(args: list[str], use_subprocess: bool) -> None:
    """Run one ``bayesfuse`` command (in this process, or as a separate one)."""
    if use_subprocess:
        command = [sys.executable, "-c", "import sys; from bayesfuse.cli import main; "
                   "sys.exit(main(sys.argv[1:]))", *args]
        subprocess.run(command, check=True, capture_output=True, text=True)
        return
    from bayesfuse.cli import main

    code = main(args)
    if code != 0:
        raise SystemExit(f"bayesfuse {args[0]} failed with exit code {code}")


def run(out: Path, schools: int = 5, learner: str = "linear", folds: int = 5, seed: int = 0,
        chains: int = 2, draws: int = 300, warmup: int = 300,
        use_subprocess: bool = False) -> dict[str, float]:
    """Run both paths and compare them; returns the differences (raises if they differ)."""
    frame = star_analysis_frame("k")
    chosen = pick_schools(frame, schools)
    frame = frame[frame["school"].isin(chosen)].reset_index(drop=True)
    columns = ["school", "score", "treatment", *STAR_COVARIATES]
    sites = out / "sites"
    sites.mkdir(parents=True, exist_ok=True)
    stage1 = ["--outcome", "score", "--treatment", "treatment", "--covariates",
              ",".join(STAR_COVARIATES), "--learner", learner, "--folds", str(folds),
              "--seed", str(seed), "--min-n", str(MIN_N), "--n-jobs", "1",
              "--created-at", "2024-01-01T00:00:00Z", "--force"]

    # 1-2. one CSV per site; each site writes its summary (the CSV never leaves the site)
    start = time.perf_counter()
    summaries = []
    for i, school in enumerate(chosen):
        csv = sites / f"site-{i:02d}-school-{school}.csv"
        frame.loc[frame["school"] == school, columns].to_csv(csv, index=False)
        summary = csv.with_suffix(".json")
        bayesfuse_cli(["site", str(csv), "--task", "school", *stage1, "-o", str(summary)],
                      use_subprocess)
        summaries.append(summary)
    # 3. the coordinator fuses the summaries
    fit_path = out / "fit-multisite.nc"
    sampler = ["--chains", str(chains), "--draws", str(draws), "--warmup", str(warmup),
               "--seed", str(seed)]
    bayesfuse_cli(["fuse", *map(str, summaries), "--model", "exchangeable", *sampler,
                   "-o", str(fit_path), "--summary", str(out / "fused-multisite.csv"),
                   "--force"], use_subprocess)
    multisite_s = time.perf_counter() - start

    # 4. the single-machine path on the same rows
    start = time.perf_counter()
    pooled = bf.estimate_tasks(frame, task="school", outcome="score", treatment="treatment",
                               covariates=STAR_COVARIATES, learner=learner, folds=folds,
                               seed=seed, min_n=MIN_N, n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        single = bf.fuse(pooled, model="exchangeable", chains=chains, draws=draws,
                         warmup=warmup, seed=seed)
    single_s = time.perf_counter() - start

    merged = bf.read_estimates(summaries)
    multisite = bf.load_fit(fit_path)
    if merged.tasks != pooled.tasks:
        raise SystemExit(f"task order differs: {merged.tasks} vs {pooled.tasks}")
    draws_multi = multisite.idata.posterior["theta"].values
    draws_single = single.idata.posterior["theta"].values
    result = {
        "schools": float(len(chosen)),
        "pupils": float(len(frame)),
        "max_abs_diff_estimate": float(np.abs(merged.estimates - pooled.estimates).max()),
        "max_abs_diff_covariance": float(np.abs(merged.covariances
                                                - pooled.covariances).max()),
        "max_abs_diff_draws": float(np.abs(draws_multi - draws_single).max()),
        "multisite_seconds": multisite_s,
        "single_machine_seconds": single_s,
    }
    if result["max_abs_diff_estimate"] > 1e-12 or result["max_abs_diff_covariance"] > 1e-12:
        raise SystemExit(f"stage-1 estimates differ between the paths: {result}")
    if result["max_abs_diff_draws"] > 1e-9:
        raise SystemExit(f"posterior draws differ between the paths: {result}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: a temporary folder)")
    parser.add_argument("--schools", type=int, default=5)
    parser.add_argument("--learner", default="linear")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--subprocess", action="store_true",
                        help="run each bayesfuse command as a separate process")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        result = run(out, schools=args.schools, learner=args.learner, folds=args.folds,
                     seed=args.seed, draws=args.draws, warmup=args.draws,
                     use_subprocess=args.subprocess)
    for key, value in result.items():
        print(f"{key:>26}: {value:.3g}")
    print("OK: the multi-site summaries reproduce the single-machine fit.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
