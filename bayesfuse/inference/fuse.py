"""`fuse`: stage 2, from ``TaskEstimates`` to a ``FusionResult``."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import replace
from importlib import metadata
from typing import Any

import pandas as pd

from bayesfuse.data.estimates import TaskEstimates
from bayesfuse.errors import (
    BayesfuseError,
    ConvergenceWarning,
    EstimatesError,
    OptionError,
    SpecError,
)
from bayesfuse.families import Family, get_family
from bayesfuse.inference import runtime
from bayesfuse.specs.models import ModelSpec, load_spec
from bayesfuse.specs.priors import prior_strings

__all__ = ["fuse", "prepare"]

BACKENDS = ("numpyro", "pymc")


def _versions() -> dict[str, str]:
    out = {}
    for package in ("bayesfuse", "numpyro", "jax", "arviz", "pymc"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return out


def prepare(
    estimates: TaskEstimates | pd.DataFrame,
    model: str | os.PathLike[str] | Mapping[str, Any] | ModelSpec = "exchangeable",
    priors: Mapping[str, str] | None = None,
    *,
    chains: int | None = None,
    draws: int | None = None,
    warmup: int | None = None,
    target_accept: float | None = None,
    chain_method: str | None = None,
    **options: Any,
) -> tuple[TaskEstimates, ModelSpec, Family]:
    """Validate inputs and build the spec and family of a fit (no sampling)."""
    if isinstance(estimates, pd.DataFrame):
        estimates = TaskEstimates.from_frame(estimates)
    if not isinstance(estimates, TaskEstimates):
        raise EstimatesError(
            f"fuse() needs a TaskEstimates (or a DataFrame with task, estimate, se); got "
            f"{type(estimates).__name__}. Use bf.read_estimates(path) for files."
        )
    spec = load_spec(model)
    overrides = {k: v for k, v in {"chains": chains, "draws": draws, "warmup": warmup,
                                   "target_accept": target_accept,
                                   "chain_method": chain_method}.items() if v is not None}
    sampler = replace(spec.sampler, **overrides).validated() if overrides else spec.sampler
    merged_options = {**spec.options, **options}
    family_cls = get_family(spec.family)
    family = family_cls(estimates, merged_options)
    # a spec's priors for blocks this data does not have (corr when p = 1) are skipped;
    # priors given by the caller are checked strictly
    present = {b.name for b in family.prior_blocks()}
    merged_priors = {k: v for k, v in spec.priors.items() if k.split("[")[0] in present}
    merged_priors.update(dict(priors or {}))
    family.bind_priors(merged_priors)
    spec = ModelSpec(family=family.name, options=dict(family.options), priors=merged_priors,
                     sampler=sampler, source=spec.source)
    return estimates, spec, family


def fuse(
    estimates: TaskEstimates | pd.DataFrame,
    model: str | os.PathLike[str] | Mapping[str, Any] | ModelSpec = "exchangeable",
    priors: Mapping[str, str] | None = None,
    *,
    chains: int | None = None,
    draws: int | None = None,
    warmup: int | None = None,
    target_accept: float | None = None,
    seed: int = 0,
    backend: str = "numpyro",
    method: str = "nuts",
    collapsed: bool = True,
    chain_method: str | None = None,
    prior_draws: int = 500,
    warn: bool = True,
    within_corr: str | float | None = None,
    **options: Any,
):
    """Fit a hierarchical model with a task-similarity prior to per-task estimates.

    Parameters
    ----------
    estimates : TaskEstimates or DataFrame
        Stage-1 estimates θ̂ₖ (K×p) with covariances Vₖ.
    model : str, path, mapping or ModelSpec
        A shipped model name (``"exchangeable"``, ``"pooled"``, ``"independent"``...), the
        path of a TOML spec, or a mapping with the spec's structure.
    priors : mapping, optional
        Prior overrides, e.g. ``{"tau": "halfnormal(2)", "mu[math]": "normal(0, 1)"}``.
        Unnamed hyperparameters get weakly-informative defaults scaled to the data; the
        priors used are in ``result.priors``.
    chains, draws, warmup, target_accept : optional
        NUTS settings (default: the spec's ``[sampler]`` table: 4 chains, 1000 + 1000).
    seed : int
        Random seed; the same seed gives identical draws.
    backend : {"numpyro", "pymc"}
        Sampler backend.
    method : {"nuts", "exact"}
        ``"exact"`` (exchangeable, scalar θ, normal prior on μ): independent draws by
        quadrature over τ instead of MCMC, in numpy with nothing to compile
        (:mod:`bayesfuse.inference.exact`) — no sampler diagnostics to worry about, and a
        check of NUTS. Other models raise a ``SpecError``. It is not the default, even
        where it applies: with ``"nuts"`` as the one default, the method of a fit (and its
        draws for a seed) does not change with the prior on μ or the number of
        parameters, existing seeds reproduce, and ``backend`` and ``collapsed`` keep their
        meaning. Scalar exchangeable fits that want speed ask for ``method="exact"`` (the
        CLI's ``--method exact``).
    collapsed : bool
        Integrate θ out analytically and sample only the hyperparameters (default). With
        ``False`` the plain non-centred model is sampled (for checking).
    chain_method : {"auto", "parallel", "vectorized", "sequential"}, optional
    prior_draws : int
        Draws kept in the ``prior`` group.
    within_corr : {"given", "unknown"} or float, optional
        The correlation between a task's estimates, for vector θ whose Vₖ hold standard
        errors only (diagonal). ``"given"`` (the default, also when ``None`` and the spec
        does not say): use Vₖ as given. ``"unknown"``: one correlation matrix R shared by
        the tasks, R ~ LKJ(2) (prior block ``within_corr``), sampled with the other
        hyperparameters; Vₖ = Sₖ R Sₖ with Sₖ the diagonal of SEs (posterior variable
        ``within_corr``; :mod:`bayesfuse.families.within_corr`). A float ρ in (−1, 1):
        a known common correlation. Needs p ≥ 2, diagonal Vₖ, ``method="nuts"``; with
        ``"unknown"`` also ``backend="numpyro"``.
    warn : bool
        Emit a ``ConvergenceWarning`` when the diagnostics fail (NUTS only: the draws of
        ``method="exact"`` are independent, so there is no chain to diagnose).
    **options
        Family options (e.g. ``robust=True`` for ``exchangeable``).

    Returns
    -------
    FusionResult

    Notes
    -----
    Importing bayesfuse changes no global setting; a fit makes three
    (:mod:`bayesfuse.inference.runtime`). It turns on JAX's 64-bit mode
    (``jax_enable_x64``) for the process, so that every fit computes in double precision.
    Before JAX's first computation it also asks JAX for several CPU devices (4 to 8;
    ``BAYESFUSE_HOST_DEVICES`` sets the number, ``0`` turns this off) so that chains run
    in parallel; it leaves a count the user set (``numpyro.set_host_device_count(n)``,
    ``XLA_FLAGS``) and cannot change it once JAX has computed. Call
    ``numpyro.enable_x64()`` and ``numpyro.set_host_device_count(n)`` yourself to make
    these choices first. Compiled programs are kept in a per-user cache folder
    (``~/.cache/bayesfuse/jax``) and reused by later processes;
    ``BAYESFUSE_COMPILATION_CACHE=0`` turns this off, a path chooses the folder.

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> fit = bf.fuse(est, model="exchangeable", seed=1)          # doctest: +SKIP
    >>> fit.summary()[["task", "mean", "eti_low", "eti_high"]]    # doctest: +SKIP
    """
    runtime.configure_host_devices()  # before JAX's first computation, else no effect
    runtime.configure_compilation_cache()
    runtime.enable_x64()
    from bayesfuse.result import FusionResult

    if method not in ("nuts", "exact"):
        raise SpecError(f"Unknown method '{method}'. Valid methods: nuts, exact.")
    if backend not in BACKENDS:
        raise SpecError(f"Unknown backend '{backend}'. Valid backends: {', '.join(BACKENDS)}.")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise SpecError(f"seed must be a non-negative integer; got {seed!r}.")
    if within_corr is not None:
        options["within_corr"] = within_corr
    estimates, spec, family = prepare(
        estimates, model, priors, chains=chains, draws=draws, warmup=warmup,
        target_accept=target_accept, chain_method=chain_method, **options)
    within = family.options.get("within_corr", "given")
    if within != "given" and method == "exact":
        raise OptionError(f"within_corr={within!r} needs method='nuts' (the exact method is "
                          "for scalar θ); drop method='exact'.")
    if within == "unknown" and backend == "pymc":
        raise OptionError("within_corr='unknown' is available with backend='numpyro' only; "
                          "use backend='numpyro'.")
    if method == "exact":
        from bayesfuse.inference.exact import run_exact

        samples = run_exact(family, spec.sampler, seed, prior_draws=prior_draws)
    elif backend == "pymc":
        from bayesfuse.inference import pymc as pymc_backend

        samples = pymc_backend.run_pymc(family, spec.sampler, seed, collapsed=collapsed,
                                        prior_draws=prior_draws)
    else:
        from bayesfuse.inference.nuts import run_numpyro

        samples = run_numpyro(family, spec.sampler, seed, collapsed=collapsed,
                              prior_draws=prior_draws)
    meta = {
        "family": family.name,
        "spec": spec.to_dict(),
        "priors": prior_strings(family.priors, family.prior_blocks()),
        "seed": seed,
        "backend": backend if method == "nuts" else "exact",
        "method": method,
        "collapsed": bool(collapsed and family.collapsible),
        "chain_method": samples.chain_method,
        "estimand": estimates.estimand,
        "flags": estimates.flags.astype(str).to_dict(orient="records"),
        "estimates_meta": _jsonable(estimates.meta),
        "timings": samples.timings,
        "versions": _versions(),
    }
    from bayesfuse.inference.convert import build_idata

    idata = build_idata(family, estimates, samples, meta)
    result = FusionResult(idata, estimates=estimates, family=family)
    if warn and method == "nuts":
        try:
            diagnostics = result.diagnostics()
        except BayesfuseError:  # pragma: no cover - diagnostics never block a result
            diagnostics = None
        if diagnostics is not None and not diagnostics.ok:
            warnings.warn(
                "Sampler diagnostics failed: " + "; ".join(diagnostics.advice),
                ConvergenceWarning,
                stacklevel=2,
            )
    return result


def _jsonable(value: Any) -> Any:
    import json

    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return str(value)
