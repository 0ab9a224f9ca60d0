"""Compilation reused across fits and processes (bayesfuse.inference.nuts, .runtime).

Three mechanisms: the tasks are padded to a size bucket (masked copies of the first task,
zero log density), the priors' numbers are inputs of the compiled program rather than
constants, and JAX's persistent compilation cache keeps the programs in a per-user folder.
The tests check that padding leaves the posterior unchanged (the log density exactly, the
draws within Monte Carlo error) and that a second process compiles nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numpyro.infer.util import log_density

import bayesfuse as bf
from bayesfuse.inference.fuse import prepare
from bayesfuse.inference.nuts import _MaskPaddedTasks, bucket_size, padded_data
from bayesfuse.specs.priors import prior_arguments, with_arguments


def test_bucket_sizes_hold_the_tasks_with_at_most_a_quarter_more():
    sizes = np.array([bucket_size(n) for n in range(1, 5000)])
    n = np.arange(1, 5000)
    assert (sizes >= n).all() and (np.diff(sizes) >= 0).all()
    assert sizes[:8].tolist() == [8] * 8
    assert (sizes[8:] / n[8:] <= 1.25).all()
    # four sizes per doubling: few distinct programs for a wide range of K
    assert len(set(sizes.tolist())) <= 4 * int(np.log2(5000 / 8)) + 5


def _estimates(n_tasks, n_params=1, seed=0, covariates=False):
    rng = np.random.default_rng(seed)
    se = rng.uniform(0.5, 1.5, (n_tasks, n_params))
    theta = rng.normal(0.3, 0.6, (n_tasks, n_params)) + rng.normal(0, se)
    cov = np.einsum("ki,kj->kij", se, se) * np.where(np.eye(n_params), 1.0, 0.3)
    extra = {"covariates": {"x": rng.normal(size=n_tasks)}} if covariates else {}
    params = [f"p{j}" for j in range(n_params)]
    return bf.TaskEstimates([f"t{k}" for k in range(n_tasks)], theta, cov, params=params,
                            **extra)


@pytest.mark.parametrize("model, n_params, options, covariates", [
    ("exchangeable", 1, {}, False),
    ("exchangeable", 2, {}, False),
    ("exchangeable", 1, {"robust": True}, False),
    ("pooled", 2, {}, False),
    ("metareg", 1, {}, True),
])
@pytest.mark.parametrize("collapsed", [True, False])
def test_padded_log_density_equals_the_unpadded_one(model, n_params, options, covariates,
                                                    collapsed):
    """At the same parameter values, the masked padded model has the same log density."""
    est, _, family = prepare(_estimates(11, n_params, covariates=covariates), model, **options)
    collapsed = collapsed and family.collapsible
    data = {k: np.asarray(v) for k, v in family.data().items()}
    padded, mask = padded_data(family, data)
    assert padded["theta_hat"].shape[0] == bucket_size(11) == 12 and mask.sum() == 11
    # traced-style priors: the arguments as arrays, as the sampler passes them
    priors = with_arguments(family.priors, prior_arguments(family.priors))

    def model_fn(**kw):
        family.model(priors, collapsed, **kw)

    def masked_fn(**kw):
        with _MaskPaddedTasks(mask):
            family.model(priors, collapsed, **kw)

    from numpyro import handlers
    trace = handlers.trace(handlers.seed(model_fn, 1)).get_trace(**data)
    values = {name: site["value"] for name, site in trace.items()
              if site["type"] == "sample" and not site["is_observed"]}
    # per-task latent sites (non-collapsed) get values for the padded tasks too
    pad_values = {}
    for name, value in values.items():
        value = np.asarray(value)
        if value.ndim and value.shape[0] == 11:
            value = np.concatenate([value, value[:1]])
        pad_values[name] = value
    plain, _ = log_density(model_fn, (), data, values)
    masked, _ = log_density(masked_fn, (), padded, pad_values)
    latent_extra = 0.0
    for site in trace.values():  # the padded tasks' own prior terms (latent sites)
        if site["type"] == "sample" and not site["is_observed"] and \
                np.ndim(site["value"]) and np.shape(site["value"])[0] == 11:
            latent_extra += float(np.sum(site["fn"].log_prob(site["value"])[..., :1]))
    np.testing.assert_allclose(float(masked), float(plain) + latent_extra, rtol=1e-12,
                               atol=1e-9)


def test_padded_fit_gives_the_unpadded_posterior(monkeypatch):
    """K = 13 (padded to 14) against the same fit without padding: hyperparameters and θ
    within Monte Carlo error, every task axis of the result back to K."""
    from bayesfuse.families.exchangeable import Exchangeable

    est = _estimates(13, seed=4)
    settings = dict(chains=2, draws=1000, warmup=500, seed=3, warn=False)
    padded = bf.fuse(est, **settings)
    monkeypatch.setattr(Exchangeable, "pads_tasks", False)
    plain = bf.fuse(est, **settings)
    idata = padded.idata
    assert idata.posterior["theta"].shape[2] == 13
    assert idata.log_likelihood["theta_hat"].shape[-1] == 13
    assert idata.prior["theta"].shape[2] == 13
    assert idata.prior_predictive["theta_hat"].shape[2] == 13
    assert idata.posterior_predictive["theta_hat"].shape[2] == 13
    assert idata.constant_data["pooling"].shape[0] == 13
    for name in ("mu", "tau", "theta"):
        a = padded.idata.posterior[name].values.reshape(2000, -1)
        b = plain.idata.posterior[name].values.reshape(2000, -1)
        # Monte Carlo error of each mean from its ESS (at least 200 of 2,000 draws)
        se = np.sqrt(a.var(0) / 200 + b.var(0) / 200)
        assert (np.abs(a.mean(0) - b.mean(0)) < 4 * se).all(), name


_SCRIPT = textwrap.dedent("""
    import collections, json, sys
    import numpy as np
    from jax import monitoring
    events = collections.Counter()
    monitoring.register_event_listener(lambda name, **kw: events.update([name]))
    import bayesfuse as bf
    n_tasks, seed = int(sys.argv[1]), int(sys.argv[2])
    rng = np.random.default_rng(seed)
    se = rng.uniform(0.5, 1.5, n_tasks)
    est = bf.TaskEstimates([f"t{k}" for k in range(n_tasks)],
                           rng.normal(0, 1, n_tasks) * (1 + seed), se**2)
    fit = bf.fuse(est, chains=2, draws=200, warmup=200, seed=seed, warn=False)
    from bayesfuse.inference.runtime import configure_compilation_cache
    print(json.dumps({"misses": events["/jax/compilation_cache/cache_misses"],
                      "hits": events["/jax/compilation_cache/cache_hits"],
                      "priors": fit.priors, "folder": configure_compilation_cache()}))
""")


def _run(tmp_path, *args, **env_extra):
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env.update(env_extra)
    script = tmp_path / "fit_once.py"
    script.write_text(_SCRIPT)
    out = subprocess.run([sys.executable, str(script), *map(str, args)], env=env,
                         capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_second_process_compiles_nothing(tmp_path):
    """Two processes, other data (other data-scaled priors), K = 13 and 14 (one bucket):
    the first fills the cache folder, the second only reads it."""
    folder = tmp_path / "cache"
    first = _run(tmp_path, 13, 0, BAYESFUSE_COMPILATION_CACHE=str(folder))
    second = _run(tmp_path, 14, 1, BAYESFUSE_COMPILATION_CACHE=str(folder))
    assert first["folder"] == second["folder"] == str(folder)
    assert first["misses"] > 0 and any(folder.iterdir())
    assert first["priors"] != second["priors"]  # the numbers differ, the program does not
    assert second["misses"] == 0 and second["hits"] > 0, second


def test_cache_folder_default_and_off(tmp_path):
    code = ("from bayesfuse.inference.runtime import configure_compilation_cache as c; "
            "import jax; print(c(), jax.config.jax_compilation_cache_dir)")
    env = {k: v for k, v in os.environ.items()
           if k not in ("JAX_COMPILATION_CACHE_DIR", "BAYESFUSE_COMPILATION_CACHE")}

    def run(**extra):
        return subprocess.run([sys.executable, "-c", code], env={**env, **extra},
                              capture_output=True, text=True, timeout=120,
                              check=True).stdout.split()

    default = run(XDG_CACHE_HOME=str(tmp_path))
    assert default == [str(tmp_path / "bayesfuse" / "jax")] * 2
    assert run(XDG_CACHE_HOME=str(tmp_path), BAYESFUSE_COMPILATION_CACHE="0") == ["None",
                                                                                  "None"]
    chosen = run(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "mine"))
    assert chosen == [str(tmp_path / "mine")] * 2
