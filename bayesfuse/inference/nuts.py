"""NUTS with NumPyro, then the exact per-draw computations, for any family.

:func:`run_numpyro` samples the family's (collapsed) model and returns a
:class:`~bayesfuse.inference.draws.Draws`: hyperparameter draws grouped by chain, θ drawn
exactly from its conditional per draw, per-task log-likelihoods, pooling weights and
posterior-predictive θ̂ (:mod:`bayesfuse.inference.draws`), plus sampler statistics.

Compiled samplers are cached by (family, options, priors, data shapes, settings), so a
refit with new data of the same shapes does not recompile: each cache entry keeps its
``MCMC`` with the data as an argument, its parallel-chain program (:class:`_ReusablePmap`)
and its jitted sampling loops (:class:`_JitReuse`). Families that relabel their components
run :class:`RelabellingNUTS`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import MCMC, NUTS, init_to_median
from numpyro.primitives import Messenger

from bayesfuse.families import Family
from bayesfuse.inference import draws as per_draw
from bayesfuse.inference.runtime import enable_x64
from bayesfuse.specs.models import SamplerConfig
from bayesfuse.specs.priors import prior_arguments, prior_strings, with_arguments

__all__ = ["run_numpyro", "chain_method_for", "clear_cache", "RelabellingNUTS",
           "relabel_adaptation"]

_EXTRA_FIELDS = ("diverging", "energy", "num_steps", "accept_prob", "adapt_state.step_size",
                 "potential_energy")
_CACHE: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
_CACHE_SIZE = 16


def clear_cache() -> None:
    """Forget compiled samplers."""
    _CACHE.clear()


def chain_method_for(config: SamplerConfig) -> str:
    """Resolve ``"auto"``: parallel over devices when there are enough, else vectorised."""
    if config.chain_method != "auto":
        return config.chain_method
    if config.chains == 1:
        return "sequential"
    return "parallel" if jax.local_device_count() >= config.chains else "vectorized"


def _cache_key(family: Family, collapsed: bool, data: Mapping[str, np.ndarray],
               config: SamplerConfig, chain_method: str) -> tuple:
    priors = tuple(sorted(prior_strings(family.priors, family.prior_blocks()).items()))
    shapes = tuple(sorted((k, np.shape(v)) for k, v in data.items()))
    options = tuple(sorted((k, repr(v)) for k, v in family.options.items()))
    return (family.name, type(family).__qualname__, options, priors, collapsed, shapes,
            config, chain_method)


def _compiled(family: Family, collapsed: bool, data: Mapping[str, np.ndarray],
              config: SamplerConfig) -> dict[str, Any]:
    chain_method = chain_method_for(config)
    key = _cache_key(family, collapsed, data, config, chain_method)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        entry = _CACHE[key]
        entry["family"].__dict__.update(family.__dict__)  # same structure, new data-derived state
        return entry
    holder = family  # the model closes over this instance; updated on reuse (above)

    def model(prior_args: Any, task_mask: Any = None, **kwargs: Any) -> None:
        # the priors' numbers are inputs, not constants: the compiled program (and its
        # entry in the persistent compilation cache) does not depend on them
        priors = with_arguments(holder.priors, prior_args)
        if task_mask is None:
            holder.model(priors, collapsed, **kwargs)
            return
        with _MaskPaddedTasks(task_mask):
            holder.model(priors, collapsed, **kwargs)

    settings = dict(target_accept_prob=config.target_accept,
                    max_tree_depth=config.max_tree_depth, init_strategy=init_to_median())
    relabels = family.relabels_in_warmup or family.relabels_in_sampling
    kernel = RelabellingNUTS(model, holder, **settings) if relabels else NUTS(model, **settings)
    # parallel chains go through a pmap that takes the data as an argument (see
    # _ReusablePmap), so that a refit with new data of the same shapes does not recompile
    method: Any = chain_method
    if chain_method == "parallel":
        # NumPyro runs "parallel" chains in turn when there are too few devices; so do we
        enough = jax.local_device_count() >= config.chains
        method = _ReusablePmap() if enough else "sequential"
    mcmc = MCMC(kernel, num_warmup=config.warmup, num_samples=config.draws,
                num_chains=config.chains, chain_method=method, thinning=config.thinning,
                progress_bar=False, jit_model_args=True)
    entry = {"mcmc": mcmc, "family": holder, "chain_method": chain_method, "post": None,
             "jit_memo": {}}
    _CACHE[key] = entry
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return entry


def bucket_size(n_tasks: int) -> int:
    """The padded task count for ``n_tasks``: the smallest of 8, 10, 12, 14, 16, 20, 24,
    28, 32, 40, ... (four sizes per doubling, m·2ᵉ with m in 4..7) that holds them, so that
    padding adds at most a quarter of the work and one compiled program serves every K of
    its bucket."""
    if n_tasks <= 8:
        return 8
    exponent = (n_tasks - 1).bit_length() - 3  # 2ᵉ·4 < n ≤ 2ᵉ·8
    step = 1 << exponent
    return -(-n_tasks // step) * step


def padded_data(family: Family, data: Mapping[str, np.ndarray]
                ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The family's data padded to :func:`bucket_size` tasks, and the task mask.

    Padded tasks repeat the first task's rows of ``family.task_data`` (valid values, so
    every density stays finite); the mask (True for real tasks, shape (K',)) removes their
    ``theta_hat`` terms from the log density. Families that do not pad
    (``Family.pads_tasks``) give the data unchanged and ``None``.
    """
    if not family.pads_tasks:
        return dict(data), None
    n_tasks = data["theta_hat"].shape[0]
    size = bucket_size(n_tasks)
    rows = np.concatenate([np.arange(n_tasks), np.zeros(size - n_tasks, dtype=int)])
    out = {k: (np.asarray(v)[rows] if k in family.task_data else v) for k, v in data.items()}
    return out, np.arange(size) < n_tasks


class _MaskPaddedTasks(Messenger):
    """Give the observed ``theta_hat`` site zero log density at padded tasks."""

    def __init__(self, mask: Any) -> None:
        super().__init__()
        self.mask = mask

    def process_message(self, msg: dict[str, Any]) -> None:
        if msg["type"] == "sample" and msg["name"] == "theta_hat" and msg["is_observed"]:
            msg["fn"] = msg["fn"].mask(self.mask)


def _unpad(draws: per_draw.Draws, family: Family, n_tasks: int) -> per_draw.Draws:
    """Drop the padded tasks from every task axis of ``draws``."""
    def cut(value: np.ndarray, dims: list[str], offset: int) -> np.ndarray:
        index = [slice(None)] * value.ndim
        for axis, dim in enumerate(dims):
            if dim == "task":
                index[offset + axis] = slice(0, n_tasks)
        return value[tuple(index)]

    hyper_dims, extra_dims = family.hyper_dims(), family.extra_dims()
    draws.hyper = {k: cut(v, hyper_dims.get(k, []), 2) for k, v in draws.hyper.items()}
    draws.extras = {k: cut(v, extra_dims.get(k, []), 2) for k, v in draws.extras.items()}
    draws.prior = {k: v[:, :, :n_tasks] if k == "theta" else cut(v, hyper_dims.get(k, []), 2)
                   for k, v in draws.prior.items()}
    draws.prior_predictive = {k: v[:, :, :n_tasks] for k, v in draws.prior_predictive.items()}
    draws.theta = draws.theta[:, :, :n_tasks]
    draws.log_likelihood = draws.log_likelihood[:, :, :n_tasks]
    draws.predictive = draws.predictive[:, :, :n_tasks]
    draws.pooling = draws.pooling[:n_tasks]
    return draws


class RelabellingNUTS(NUTS):
    """NUTS that applies the family's :meth:`Family.warmup_relabel` once in warmup and its
    :meth:`Family.relabel_move` after every transition in sampling.

    NumPyro's warmup (Stan's schedule) adapts the mass matrix in doubling windows after a
    start buffer; the last slow window is the longest, and the mass matrix used for
    sampling comes from it. At the end of the window before it, each chain's state is
    replaced by the family's preferred relabelling, and the mass matrix just adapted (and
    the statistics the next window adapts from) is rearranged with it, so that each
    coordinate keeps its own scale. The last slow window and the end buffer then adapt to
    the final labelling, and sampling is plain NUTS: the chain's stationary law is NUTS's,
    whatever happened in warmup.

    Relabelling once, at that point, passes the diagnostics more often than no
    relabelling or a relabelling at the end of every early window; the failures left are
    chains in a split partition (one group covered by two components), which no
    relabelling changes (measurements: benchmarks/results/design_measurements.md).

    In sampling, each NUTS transition is followed by a Metropolis–Hastings move that
    proposes a relabelled state (for sticks, the components in a random order drawn from
    the family's law of orders) and accepts it by the ratio of the family's density; the
    mass matrix is fixed then, so the composed kernel keeps the posterior invariant, and
    each chain visits the relabellings in their posterior proportions instead of keeping
    the one it settled in.
    """

    def __init__(self, model: Any, family: Family, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self._family = family
        self._relabel_step = -1
        self._num_warmup = 0

    def init(self, rng_key: Any, num_warmup: int, init_params: Any, model_args: Any,
             model_kwargs: Any) -> Any:
        from numpyro.infer.hmc_util import build_adaptation_schedule

        windows = build_adaptation_schedule(num_warmup) if num_warmup >= 20 else []
        # windows: start buffer, slow windows, end buffer; relabel before the last slow one
        has_windows = len(windows) >= 3 and self._family.relabels_in_warmup
        self._relabel_step = windows[-3].end if has_windows else -1
        self._num_warmup = num_warmup
        return super().init(rng_key, num_warmup, init_params, model_args, model_kwargs)

    def sample(self, state: Any, model_args: Any, model_kwargs: Any) -> Any:
        step = state.i  # the adaptation step this transition ends
        state = super().sample(state, model_args, model_kwargs)
        if self._relabel_step < 0 and not self._family.relabels_in_sampling:
            return state
        potential = self.get_potential_fn(model_args, model_kwargs)

        def moved(state: Any, z: dict[str, Any]) -> tuple[Any, Any]:
            energy, grad = jax.value_and_grad(potential)(z)
            return state._replace(z=z, z_grad=grad, potential_energy=energy,
                                  energy=state.energy + energy - state.potential_energy), energy

        def relabel(state: Any) -> Any:
            z, site_order = self._family.warmup_relabel(state.z)
            new, _ = moved(state, z)
            return new._replace(
                adapt_state=relabel_adaptation(state.adapt_state, site_order, state.z))

        def relabel_move(state: Any) -> Any:
            # Metropolis–Hastings over relabellings (Family.relabel_move); the NUTS state's
            # key is left to NUTS, the move draws from a key folded off it
            key = jax.random.fold_in(state.rng_key, 0x5EED)
            k_move, k_accept = jax.random.split(key)
            z, log_correction = self._family.relabel_move(k_move, state.z)
            new, energy = moved(state, z)
            log_ratio = state.potential_energy - energy + log_correction
            accept = jnp.log(jax.random.uniform(k_accept)) < jnp.where(
                jnp.isfinite(log_ratio), log_ratio, -jnp.inf)
            return jax.tree.map(lambda a, b: jnp.where(accept, a, b), new, state)

        def maybe(step: Any, state: Any) -> Any:
            if self._relabel_step >= 0:
                state = jax.lax.cond(step == self._relabel_step, relabel, lambda s: s, state)
            if self._family.relabels_in_sampling:
                state = jax.lax.cond(step >= self._num_warmup, relabel_move, lambda s: s,
                                     state)
            return state

        if jnp.ndim(state.potential_energy):  # chain_method="vectorized": a batch of chains
            return jax.vmap(maybe)(step, state)
        return maybe(step, state)


def relabel_adaptation(adapt: Any, site_order: Mapping[str, jax.Array],
                        z: Mapping[str, jax.Array]) -> Any:
    """NumPyro's adaptation state with its coordinates moved as ``site_order`` says.

    ``site_order[name]`` holds, at each position of site ``name``, the flat index (within
    the site) of the element that moves there; sites not named stay. Mass matrices are
    kept per block of sites, a block's coordinates being its sites raveled in its order.
    """
    def site_index(name: str) -> jax.Array:
        if name in site_order:
            return jnp.ravel(site_order[name])
        return jnp.arange(jnp.size(z[name]))

    def block_order(names: tuple[str, ...]) -> jax.Array:
        sizes = [int(np.size(z[n])) for n in names]
        offsets = np.cumsum([0] + sizes)
        return jnp.concatenate([site_index(n) + offsets[i] for i, n in enumerate(names)])

    def both(matrix: jax.Array, order: jax.Array) -> jax.Array:
        return matrix[order] if matrix.ndim == 1 else matrix[order][:, order]

    orders = {names: block_order(names) for names in adapt.inverse_mass_matrix}
    inverse = {n: both(m, orders[n]) for n, m in adapt.inverse_mass_matrix.items()}
    # M = S Sᵀ: the permuted P M Pᵀ = (P S)(P S)ᵀ, and (P S)⁻¹ = S⁻¹ Pᵀ
    sqrt = {n: m[orders[n]] for n, m in adapt.mass_matrix_sqrt.items()}
    sqrt_inv = {n: m[orders[n]] if m.ndim == 1 else m[:, orders[n]]
                for n, m in adapt.mass_matrix_sqrt_inv.items()}
    welford = {n: (mean[orders[n]], both(m2, orders[n]), count)
               for n, (mean, m2, count) in adapt.mm_state.items()}
    return adapt._replace(inverse_mass_matrix=inverse, mass_matrix_sqrt=sqrt,
                          mass_matrix_sqrt_inv=sqrt_inv, mm_state=welford)


class _ReusablePmap:
    """NumPyro ``chain_method`` callable: parallel chains over devices, compiled once.

    NumPyro's own ``"parallel"`` method pmaps a fresh ``functools.partial`` that holds the
    model's data, so every run traces and compiles again with the data as constants. This
    callable pmaps the chain function once per (function, collected fields) with the data
    as a broadcast argument (``in_axes=None``): the next run with data of the same shapes
    and dtypes reuses the compiled program. The chains' draws are those of ``"parallel"``.
    """

    def __init__(self) -> None:
        self._compiled: dict[Any, Any] = {}

    def __call__(self, chain_fn: Any) -> Any:
        keywords = dict(chain_fn.keywords)
        args, kwargs = keywords.pop("args"), keywords.pop("kwargs")
        key = (chain_fn.func, tuple(sorted(keywords.items())))
        if key not in self._compiled:
            func = chain_fn.func

            def one_chain(map_args: Any, args: Any, kwargs: Any) -> Any:
                return func(map_args, args=args, kwargs=kwargs, **keywords)

            self._compiled[key] = jax.pmap(one_chain, in_axes=(0, None, None))
        compiled = self._compiled[key]
        return lambda map_args: compiled(map_args, args, kwargs)


class _JitReuse:
    """Let a cached ``MCMC`` reuse its jitted sampling loop on the next run.

    NumPyro (0.22, JAX 0.10) wraps the sampling loop (``numpyro.util.fori_collect``) in a
    fresh ``jax.jit`` through ``numpyro.util.maybe_jit`` on every ``MCMC.run``; fresh
    wrappers never compare equal, so the loop would be traced and compiled again on every
    refit. While :meth:`reusing` is active in a thread, ``maybe_jit`` returns one wrapper per
    (function, static arguments), remembered in the given memo (the sampler's cache entry).

    This replaces ``numpyro.util.maybe_jit`` while at least one thread is inside
    :meth:`reusing` and restores NumPyro's function when the last one leaves, also on an
    exception. Threads outside get NumPyro's behaviour unchanged (the memo is per thread),
    so concurrent fits are safe. NumPyro's public API offers no hook for this: running
    ``MCMC.run`` inside a jit of our own reuses the compilation too, but moves the kernel's
    initialisation into the compiled program, which changes the draws at rounding level
    (then chaotically, over a long chain) against the same seed.
    Parallel chains do not need it (:class:`_ReusablePmap`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._local = threading.local()
        self._original: Callable[..., Any] | None = None

    @contextlib.contextmanager
    def reusing(self, memo: dict[Any, Any]) -> Iterator[None]:
        """Within this context, ``maybe_jit`` in this thread reuses the wrappers in ``memo``."""
        import numpyro.util as nutil

        with self._lock:
            if self._active == 0:
                self._original = nutil.maybe_jit
                nutil.maybe_jit = self._maybe_jit
            self._active += 1
        outer = getattr(self._local, "memo", None)
        self._local.memo = memo
        try:
            yield
        finally:
            self._local.memo = outer
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    nutil.maybe_jit = self._original

    def _maybe_jit(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        original = self._original
        assert original is not None  # installed only after it is set
        memo = getattr(self._local, "memo", None)
        if memo is None:  # another thread, outside any bayesfuse run
            return original(fn, *args, **kwargs)
        try:
            key = (fn, args, tuple(sorted(kwargs.items())))
            hash(key)
        except TypeError:
            return original(fn, *args, **kwargs)
        if key not in memo:
            memo[key] = original(fn, *args, **kwargs)
        return memo[key]


_JIT_REUSE = _JitReuse()


def _init_params(family: Family, collapsed: bool, data: Mapping[str, np.ndarray],
                 n_chains: int, seed: int) -> dict[str, np.ndarray] | None:
    """Unconstrained starting points per chain from the family's ``init_values``.

    Sites the family gives start there; the others at their prior median. Returns ``None``
    (NUTS's own initialisation) when the family gives none.
    """
    from numpyro import handlers
    from numpyro.distributions import biject_to

    hints = family.init_values(n_chains, seed)
    if not hints:
        return None
    per_chain = []
    for chain in range(n_chains):
        values = {name: np.asarray(v)[chain] for name, v in hints.items()}
        model = handlers.substitute(
            handlers.seed(lambda **kw: family.model(family.priors, collapsed, **kw), seed),
            substitute_fn=init_to_median(),
        )
        model = handlers.substitute(model, data=values)
        trace = handlers.trace(model).get_trace(**data)
        per_chain.append({
            name: np.asarray(biject_to(site["fn"].support).inv(site["value"]))
            for name, site in trace.items()
            if site["type"] == "sample" and not site["is_observed"]
        })
    if n_chains == 1:
        return per_chain[0]
    return {name: np.stack([p[name] for p in per_chain]) for name in per_chain[0]}


def run_numpyro(family: Family, config: SamplerConfig, seed: int, collapsed: bool = True,
                prior_draws: int = 500) -> per_draw.Draws:
    """Sample ``family`` with NUTS and compute the exact per-draw outputs.

    Turns on JAX's 64-bit mode first (:func:`bayesfuse.inference.runtime.enable_x64`).

    Parameters
    ----------
    family : Family
        A family instance with priors bound (``family.bind_priors``).
    config : SamplerConfig
        Chains, draws, warmup, target_accept, tree depth, chain method.
    seed : int
        Seed of every random number (same seed -> identical draws).
    collapsed : bool
        Sample the collapsed model (θ integrated out) when the family allows it.
    prior_draws : int
        Number of prior (and prior-predictive) draws to keep.

    Returns
    -------
    bayesfuse.inference.draws.Draws
    """
    enable_x64()
    collapsed = collapsed and family.collapsible
    data = {k: np.asarray(v) for k, v in family.data().items()}
    n_tasks = data["theta_hat"].shape[0]
    data, task_mask = padded_data(family, data)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    entry = _compiled(family, collapsed, data, config)
    key_mcmc, key_post, key_prior = jax.random.split(jax.random.PRNGKey(seed), 3)
    init_params = _init_params(entry["family"], collapsed, data, config.chains, seed)
    mcmc: MCMC = entry["mcmc"]
    with _JIT_REUSE.reusing(entry["jit_memo"]):
        mcmc.run(key_mcmc, extra_fields=_EXTRA_FIELDS, init_params=init_params,
                 prior_args=prior_arguments(family.priors), task_mask=task_mask, **data)
    samples = mcmc.get_samples(group_by_chain=True)
    stats = mcmc.get_extra_fields(group_by_chain=True)
    # hyperparameter draws are small: bring them to the host (parallel chains leave them
    # sharded across devices, which would make the per-draw map below slow)
    samples = {k: np.asarray(v) for k, v in samples.items()}
    timings["sampling_s"] = time.perf_counter() - start

    start = time.perf_counter()
    n_chains, n_draws = config.chains, next(iter(samples.values())).shape[1]
    flat = {k: jnp.reshape(v, (n_chains * n_draws,) + v.shape[2:]) for k, v in samples.items()}
    total = n_chains * n_draws
    keys = jax.random.split(key_post, total)
    if entry["post"] is None:
        entry["post"] = per_draw.postprocess_fn(entry["family"], collapsed, data, total)
    theta, loglik, weight, predictive, extras = entry["post"](flat, keys, data)
    jax.block_until_ready((theta, loglik, weight, predictive, extras))

    def by_chain(x):
        return np.asarray(x).reshape((n_chains, n_draws) + x.shape[1:])

    hyper = {name: by_chain(flat[name]) for name in family.hyper_dims() if name in flat}
    timings["postprocess_s"] = time.perf_counter() - start

    num_steps = np.asarray(stats["num_steps"])
    sample_stats = {
        "diverging": np.asarray(stats["diverging"]).astype(bool),
        "energy": np.asarray(stats["energy"]),
        "n_steps": num_steps,
        "tree_depth": np.where(num_steps > 0, np.floor(np.log2(np.maximum(num_steps, 1))) + 1,
                               0).astype(int),
        "acceptance_rate": np.asarray(stats["accept_prob"]),
        "step_size": np.asarray(stats["adapt_state.step_size"]),
        "lp": -np.asarray(stats["potential_energy"]),
    }
    start = time.perf_counter()
    prior, prior_pred = per_draw.prior_draws(family, data, key_prior, prior_draws, entry)
    timings["prior_s"] = time.perf_counter() - start
    draws = per_draw.Draws(
        hyper=hyper,
        theta=by_chain(theta),
        log_likelihood=by_chain(loglik),
        pooling=np.asarray(weight).mean(axis=0),
        predictive=by_chain(predictive),
        extras={name: by_chain(v) for name, v in extras.items()},
        sample_stats=sample_stats,
        prior=prior,
        prior_predictive=prior_pred,
        timings=timings,
        chain_method=entry["chain_method"],
    )
    return draws if task_mask is None or task_mask.all() else _unpad(draws, family, n_tasks)
