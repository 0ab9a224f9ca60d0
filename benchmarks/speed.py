"""Speed of bayesfuse's samplers against what users would otherwise run.

For each K, on the same simulated exchangeable data (θₖ ~ N(1, 0.5²), seₖ ~ U(0.5, 1.5)):

* ``bayesfuse`` — ``bf.fuse(est, "exchangeable")``: collapsed NUTS (NumPyro) on (μ, τ) and
  exact draws of θ, first fit (with compilation) and a refit of the compiled model;
* ``bayesfuse-exact`` — ``method="exact"``: independent draws by quadrature over τ;
* ``numpyro-plain`` — plain NumPyro NUTS on the textbook non-centred model
  (θₖ = μ + τ zₖ, θ̂ₖ ~ N(θₖ, seₖ)), 4 chains;
* ``pymc`` — PyMC's default NUTS (``pm.sample``) on the same non-centred model;
* ``nutpie`` — nutpie on that PyMC model.

Same priors everywhere: μ ~ normal(0, 5), τ ~ halfnormal(1); 4 chains × 1000 draws after
1000 warmup. Reported per run: wall time (including compilation), min bulk ESS over μ, τ and
all θₖ, and min-ESS per second. Other families (``--families cluster,gmrf``) run through
bayesfuse only. Writes ``benchmarks/results/speed.md`` and ``speed.png`` (log-log time vs K).

Usage::

    python benchmarks/speed.py                       # K = 10, 100, 1000, 10000
    python benchmarks/speed.py --ks 10,100 --methods bayesfuse,pymc --quick
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np

import bayesfuse as bf  # first: sets up host devices before JAX starts
from bayesfuse.analysis.diagnostics import rhat_ess
from bayesfuse.data.estimates import TaskEstimates

RESULTS = Path(__file__).resolve().parent / "results"
PRIOR_MU, PRIOR_TAU = 5.0, 1.0


def simulate(n_tasks: int, seed: int = 0) -> TaskEstimates:
    rng = np.random.default_rng(seed)
    se = rng.uniform(0.5, 1.5, n_tasks)
    theta = 1.0 + 0.5 * rng.standard_normal(n_tasks)
    return TaskEstimates([f"t{k}" for k in range(n_tasks)],
                         theta + se * rng.standard_normal(n_tasks), se**2)


def min_ess(draws: dict[str, np.ndarray]) -> float:
    """Minimum bulk ESS over every element of every (chain, draw, ...) array."""
    lowest = np.inf
    for values in draws.values():
        flat = values.reshape(values.shape[0], values.shape[1], -1)
        lowest = min(lowest, float(np.nanmin(rhat_ess(flat)[1])))
    return lowest


def run_bayesfuse(est, settings, model="exchangeable", refit=False, **options):
    priors = {"mu": f"normal(0, {PRIOR_MU})", "tau": f"halfnormal({PRIOR_TAU})"} \
        if model == "exchangeable" else None
    start = time.perf_counter()
    fit = bf.fuse(est, model=model, priors=priors, seed=1, warn=False, **settings, **options)
    wall = time.perf_counter() - start
    if refit:  # the compiled model, new data of the same shape
        other = simulate(est.n_tasks, seed=99)
        start = time.perf_counter()
        fit = bf.fuse(other, model=model, priors=priors, seed=2, warn=False, **settings,
                      **options)
        wall = time.perf_counter() - start
    post = fit.idata.posterior
    variables = [v for v in fit.family.checked_variables() if v in post] + ["theta"]
    return wall, min_ess({v: post[v].values for v in variables})


def run_numpyro_plain(est, settings):
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    y = jnp.asarray(est.estimates[:, 0])
    sigma = jnp.asarray(est.se[:, 0])

    def model(y, sigma):
        mu = numpyro.sample("mu", dist.Normal(0.0, PRIOR_MU))
        tau = numpyro.sample("tau", dist.HalfNormal(PRIOR_TAU))
        with numpyro.plate("task", y.shape[0]):
            z = numpyro.sample("z", dist.Normal(0.0, 1.0))
            theta = numpyro.deterministic("theta", mu + tau * z)
            numpyro.sample("y", dist.Normal(theta, sigma), obs=y)

    chains = settings["chains"]
    method = "parallel" if jax.local_device_count() >= chains else "vectorized"
    start = time.perf_counter()
    mcmc = MCMC(NUTS(model, target_accept_prob=settings["target_accept"]),
                num_warmup=settings["warmup"], num_samples=settings["draws"],
                num_chains=chains, chain_method=method, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(1), y, sigma)
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    wall = time.perf_counter() - start
    return wall, min_ess({k: samples[k] for k in ("mu", "tau", "theta")})


def _pymc_model(est):
    import pymc as pm

    with pm.Model() as model:
        mu = pm.Normal("mu", 0.0, PRIOR_MU)
        tau = pm.HalfNormal("tau", PRIOR_TAU)
        z = pm.Normal("z", 0.0, 1.0, shape=est.n_tasks)
        theta = pm.Deterministic("theta", mu + tau * z)
        pm.Normal("y", theta, est.se[:, 0], observed=est.estimates[:, 0])
    return model


def run_pymc(est, settings):
    import pymc as pm

    start = time.perf_counter()
    with _pymc_model(est):
        idata = pm.sample(draws=settings["draws"], tune=settings["warmup"],
                          chains=settings["chains"], cores=min(settings["chains"], 2),
                          target_accept=settings["target_accept"], random_seed=1,
                          progressbar=False, compute_convergence_checks=False)
    wall = time.perf_counter() - start
    post = idata.posterior
    return wall, min_ess({k: post[k].values for k in ("mu", "tau", "theta")})


def run_nutpie(est, settings):
    import nutpie

    start = time.perf_counter()
    compiled = nutpie.compile_pymc_model(_pymc_model(est))
    idata = nutpie.sample(compiled, draws=settings["draws"], tune=settings["warmup"],
                          chains=settings["chains"], seed=1, progress_bar=False,
                          target_accept=settings["target_accept"])
    wall = time.perf_counter() - start
    post = idata.posterior
    return wall, min_ess({k: post[k].values for k in ("mu", "tau", "theta")})


METHODS = {
    "bayesfuse": lambda est, s: run_bayesfuse(est, s),
    "bayesfuse-refit": lambda est, s: run_bayesfuse(est, s, refit=True),
    "bayesfuse-exact": lambda est, s: run_bayesfuse(est, s, method="exact"),
    "numpyro-plain": run_numpyro_plain,
    "pymc": run_pymc,
    "nutpie": run_nutpie,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="10,100,1000,10000")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--families", default="", help="e.g. cluster,gmrf (bayesfuse only)")
    parser.add_argument("--family-ks", default="10,100,1000")
    parser.add_argument("--budget", type=float, default=600.0,
                        help="skip a method at larger K once one run took longer (s)")
    parser.add_argument("--quick", action="store_true", help="500 draws, 500 warmup")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    settings = {"chains": 4, "draws": 500 if args.quick else 1000,
                "warmup": 500 if args.quick else 1000, "target_accept": 0.9}
    ks = [int(k) for k in args.ks.split(",") if k]
    rows = []
    slow: set[str] = set()
    for k in ks:
        est = simulate(k)
        for name in [m for m in args.methods.split(",") if m]:
            if name in slow:
                rows.append((name, "exchangeable", k, None, None))
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wall, ess = METHODS[name](est, settings)
            rows.append((name, "exchangeable", k, wall, ess))
            print(f"{name:16s} K={k:6d}  wall {wall:8.1f} s  min ESS {ess:8.0f}  "
                  f"ESS/s {ess / wall:8.1f}", flush=True)
            if wall > args.budget:
                slow.add(name)
    for family in [f for f in args.families.split(",") if f]:
        for k in [int(x) for x in args.family_ks.split(",") if x]:
            est = simulate(k)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wall, ess = run_bayesfuse(est, settings, model=family)
            rows.append(("bayesfuse", family, k, wall, ess))
            print(f"bayesfuse {family:8s} K={k:6d}  wall {wall:8.1f} s  min ESS {ess:8.0f}",
                  flush=True)
    write_results(rows, settings, Path(args.out))


def write_results(rows, settings, out: Path) -> None:
    import jax
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    device = f"{jax.devices()[0].platform} ({jax.device_count()} JAX devices)"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# Sampler speed",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, JAX on {device}; "
        f"load average {load:.1f} at the end of the run. Settings: {settings['chains']} "
        f"chains × {settings['draws']} draws after {settings['warmup']} warmup. Wall time "
        "includes compilation (except `bayesfuse-refit`, a refit of the compiled model on "
        "new data of the same shape). ESS = minimum bulk ESS over μ, τ and every θₖ.",
        "",
        "| method | family | K | wall (s) | min ESS | min ESS / s |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, family, k, wall, ess in rows:
        if wall is None:
            lines.append(f"| {name} | {family} | {k} | skipped (over budget) | | |")
        else:
            lines.append(f"| {name} | {family} | {k} | {wall:.1f} | {ess:.0f} | "
                         f"{ess / wall:.1f} |")
    (out / "speed.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name in dict.fromkeys(r[0] + ("" if r[1] == "exchangeable" else f" ({r[1]})")
                              for r in rows):
        points = [(r[2], r[3]) for r in rows if r[3] is not None
                  and r[0] + ("" if r[1] == "exchangeable" else f" ({r[1]})") == name]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of tasks K")
    ax.set_ylabel("wall time (s)")
    ax.set_title("Time to fit vs K")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "speed.png")
    print(f"wrote {out / 'speed.md'} and {out / 'speed.png'}")


if __name__ == "__main__":
    main()
