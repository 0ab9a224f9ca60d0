"""The contract every registered family fulfils, checked for each name in ``FAMILIES``.

Like scikit-learn's ``parametrize_with_checks``: every test is parametrised over
``sorted(FAMILIES)`` and p ∈ {1, 2}, so that a new family gets them by being registered.
No MCMC: each check works at one point φ drawn from the prior (K = 6 tasks), or with a
few prior draws standing in for a posterior.

The central check compares each family's collapsed likelihood log p(θ̂ | φ) with its own
plain model (θ sampled) integrated over θ, computed independently of the family's algebra:

* Gaussian families (θ Gaussian given φ: every latent site of the plain model is real and
  its log density quadratic): the integral over the latent sites x (non-centred ``z``, or
  ``theta``) is exact by Laplace's formula, log ∫ e^f = f(x*) + n/2 log 2π − ½ log|−∇²f|,
  with x* one Newton step from any point. Differentiating that integral L(θ̂) in θ̂ also
  gives the leave-one-task-out conditionals (``pointwise_loglik``) and, through x*(θ̂),
  E[θ | θ̂, φ], so ``pooling_weight`` (1 − diag ∂E[θₖ]/∂θ̂ₖ) and the moments of
  ``draw_theta`` are checked against the plain model as well.
* Scale mixtures (a latent site with positive support per task, e.g. the Student-t
  ``robust`` family's λₖ): exact Laplace over the real sites given λ, and a fine
  trapezoid rule over each log λₖ in turn (the tasks are conditionally independent given
  φ, so the K-dimensional integral is a product of one-dimensional ones); the family's
  own quadrature is documented to 1e-6, the tolerance is 1e-5.
* Mixtures (a latent site whose law is a ``MixtureSameFamily``, e.g. ``cluster``): for
  each task and component the Gaussian integral is exact by Laplace's formula from the
  plain model's own component and observation densities; the components are then summed
  with the mixing weights (the label summed out), per task.

Per-family inputs (options such as ``car``'s adjacency; the task covariates that
``metareg`` needs, which every family is given) come from :data:`FAMILY_OPTIONS` and
:func:`contract_estimates`.
"""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pandas as pd
import pytest
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.distributions import constraints
from scipy import special

import bayesfuse as bf
from bayesfuse.errors import SpecError
from bayesfuse.families import FAMILIES, get_family
from bayesfuse.specs.priors import PriorBlock, parse_prior

jax.config.update("jax_enable_x64", True)  # as every fit does

N_TASKS = 6
#: options a family cannot be built without, from the estimates
FAMILY_OPTIONS = {
    "car": lambda est: {"adjacency": [[est.tasks[k], est.tasks[(k + 1) % len(est.tasks)]]
                                      for k in range(len(est.tasks))]},  # a ring
}
#: the diagonal of ``similarity()`` where it is not 1 (a correlation or co-clustering)
SIMILARITY_DIAGONAL = {"gmrf": 0.0}  # mean edge weight: no self-loops
#: prior draws standing in for a posterior in the similarity check (chains × draws)
FAKE_CHAINS, FAKE_DRAWS = 2, 20
#: draws of θ | φ, θ̂ for the moment check of ``draw_theta``
N_THETA_DRAWS = 4000
CASES = [pytest.param(name, p, id=f"{name}-p{p}") for name in sorted(FAMILIES) for p in (1, 2)]


def contract_estimates(n_params: int) -> bf.TaskEstimates:
    """K = 6 tasks with random SPD covariances and one task covariate ``x``."""
    rng = np.random.default_rng(20_260 + n_params)
    tasks = [f"t{k}" for k in range(N_TASKS)]
    factor = rng.normal(size=(N_TASKS, n_params, 3 * n_params))
    cov = 0.3 * factor @ np.swapaxes(factor, 1, 2) / (3 * n_params) \
        + 0.05 * np.eye(n_params)
    covariates = pd.DataFrame({"x": np.linspace(-1.0, 2.0, N_TASKS)
                               + 0.3 * rng.normal(size=N_TASKS)}, index=tasks)
    return bf.TaskEstimates(tasks, rng.normal(size=(N_TASKS, n_params)), cov,
                            params=[f"q{j}" for j in range(n_params)], covariates=covariates)


@functools.cache
def built(name: str, n_params: int):
    """The family with its default priors bound, and its model data (JAX arrays)."""
    est = contract_estimates(n_params)
    family = get_family(name)(est, FAMILY_OPTIONS.get(name, lambda _: {})(est))
    family.bind_priors(None)
    data = {key: jnp.asarray(value) for key, value in family.data().items()}
    return family, data


# ---------------------------------------------------------------------- model traces
def model_trace(family, data, collapsed: bool, params=None, seed: int = 0):
    model = handlers.seed(functools.partial(family.model, family.priors, collapsed), seed)
    if params:
        model = handlers.substitute(model, data=params)
    return handlers.trace(model).get_trace(**data)


def quick_jit(fn):
    """``jax.jit`` compiling for a single run (as the sampler's per-draw map does): these
    programs run once, so compile time is what counts."""
    return jax.jit(fn, compiler_options={"xla_backend_optimization_level": 0})


def site_info(family, data, collapsed: bool, params=None) -> dict:
    """The model's sample and deterministic sites, traced abstractly (nothing is computed):
    their ``type``, ``fn`` (laws, to inspect) and ``shape``."""
    sites = {}

    def run():
        for name, site in model_trace(family, data, collapsed, params).items():
            if site["type"] in ("sample", "deterministic"):
                sites[name] = {"type": site["type"], "fn": site.get("fn"),
                               "is_observed": site.get("is_observed", False),
                               "shape": tuple(jnp.shape(site["value"]))}
        return 0.0

    jax.eval_shape(run)
    return sites


def site_values(family, data, collapsed: bool, params=None, seed=0) -> dict:
    """Values of the unobserved sample sites and the deterministic sites (one compiled run)."""
    def run(params):
        return {name: site["value"]
                for name, site in model_trace(family, data, collapsed, params, seed).items()
                if site["type"] == "deterministic"
                or (site["type"] == "sample" and not site["is_observed"])}

    return quick_jit(run)(params or {})


def free_names(family, data, collapsed: bool) -> set[str]:
    return {name for name, site in site_info(family, data, collapsed).items()
            if site["type"] == "sample" and not site["is_observed"]}


def observed_logprob(trace) -> jax.Array:
    """log density of the one observed site (θ̂), per batch element (not summed)."""
    observed = [site for site in trace.values()
                if site["type"] == "sample" and site["is_observed"]]
    assert len(observed) == 1, [site["name"] for site in observed]
    return observed[0]["fn"].log_prob(observed[0]["value"])


def prior_point(family, data, seed: int = 1):
    """One draw from the plain model's prior: φ (the sites the collapsed model samples)
    and the latent sites the collapsed model integrates out."""
    values = site_values(family, data, False, seed=seed)
    free = {name: values[name] for name in free_names(family, data, False)}
    hyper = free_names(family, data, True) if family.collapsible else set()
    phi = {name: value for name, value in free.items() if name in hyper}
    latent = {name: value for name, value in free.items() if name not in hyper}
    return phi, latent


def draw_at(family, data, phi, latent):
    """What the sampler hands the per-draw functions: the sampled and deterministic sites
    of the model it samples (the collapsed one when the family allows it)."""
    if family.collapsible:
        return site_values(family, data, True, params=phi)
    return site_values(family, data, False, params={**phi, **latent})


def unwrap(fn):
    while isinstance(fn, dist.ExpandedDistribution | dist.Independent):
        fn = fn.base_dist
    return fn


def is_real(support) -> bool:
    while hasattr(support, "base_constraint"):
        support = support.base_constraint
    return support is constraints.real


def plain_integrand(family, data, phi, latent) -> jax.Array:
    """log p(θ̂, latent | φ) of the plain model (the φ-only terms left out)."""
    trace = model_trace(family, data, False, params={**phi, **latent})
    total = jnp.sum(observed_logprob(trace))
    for name in latent:
        total = total + jnp.sum(trace[name]["fn"].log_prob(trace[name]["value"]))
    return total


def gaussian_integral(f, x0):
    """log ∫ exp f(x) dx for a concave quadratic f, exactly: (value, x*, ∇²f)."""
    if x0.size == 0:
        return f(x0), x0, jnp.zeros((0, 0))
    hess = jax.hessian(f)(x0)
    x_star = x0 - jnp.linalg.solve(hess, jax.grad(f)(x0))
    log_det = jnp.linalg.slogdet(-hess)[1]
    return f(x_star) + 0.5 * x0.size * math.log(2 * math.pi) - 0.5 * log_det, x_star, hess


def latent_kind(family, data, latent) -> str:
    """``"gaussian"``, ``"scale_mixture"`` or ``"mixture"`` (see the module docstring)."""
    sites = site_info(family, data, False)
    fns = [unwrap(sites[name]["fn"]) for name in latent]
    if any(isinstance(fn, dist.MixtureSameFamily) for fn in fns):
        return "mixture"
    if not all(is_real(fn.support) for fn in fns):
        return "scale_mixture"
    return "gaussian"


def gaussian_exact(family, data, phi, latent) -> dict:
    """The plain model of a Gaussian family integrated over its latent sites x, exactly.

    f(x, θ̂) = log p(θ̂, x | φ) is quadratic in (x, θ̂); from its gradient and Hessian at
    one point: x* = argmax_x f, L(θ̂) = log ∫ e^f dx = f(x*) + n/2 log 2π − ½ log|−f_xx|,
    ∇L = ∂f/∂θ̂ at x*, ∇²L = f_tt − f_tx f_xx⁻¹ f_xt (a Schur complement), and, θ being
    affine in x with Jacobian J, E[θ | θ̂, φ] = θ(x*), Cov = J (−f_xx)⁻¹ Jᵀ and
    ∂E[θ]/∂θ̂ = −J f_xx⁻¹ f_xt.
    """
    theta_hat = data["theta_hat"]
    shape = theta_hat.shape
    x0, unravel = ravel_pytree(latent)
    n = x0.size

    def f(v):
        t = v[n:].reshape(shape)
        return plain_integrand(family, {**data, "theta_hat": t}, phi, unravel(v[:n]))

    v0 = np.concatenate([np.asarray(x0), np.asarray(theta_hat).reshape(-1)])
    grad, hess = (np.asarray(a) for a in
                  quick_jit(lambda v: (jax.grad(f)(v), jax.hessian(f)(v)))(v0))
    f_xx, f_xt, f_tt = hess[:n, :n], hess[:n, n:], hess[n:, n:]
    out = {}
    if n == 0:  # nothing to integrate (θ is a function of φ)
        out["integral"] = float(quick_jit(f)(v0))
        out["grad"], out["hess"] = grad, f_tt
        return out
    step = -np.linalg.solve(f_xx, grad[:n])
    x_star = np.asarray(x0) + step

    def theta_of(x):  # θ (K·p,) at latent x, from the plain model's ``theta`` site
        trace = model_trace(family, data, False, params={**phi, **unravel(x)})
        return trace["theta"]["value"].reshape(-1)

    at_star, theta_mean, jac = (np.asarray(a) for a in quick_jit(lambda x: (
        f(jnp.concatenate([x, v0[n:]])), theta_of(x), jax.jacobian(theta_of)(x)))(x_star))
    out["integral"] = float(at_star + 0.5 * n * math.log(2 * math.pi)
                            - 0.5 * np.linalg.slogdet(-f_xx)[1])
    out["grad"] = grad[n:] + f_xt.T @ step
    out["hess"] = f_tt - f_xt.T @ np.linalg.solve(f_xx, f_xt)
    out["theta_mean"] = theta_mean.reshape(shape)
    out["theta_cov"] = jac @ np.linalg.solve(-f_xx, jac.T)
    d_mean = -jac @ np.linalg.solve(f_xx, f_xt)  # ∂E[θ]/∂θ̂, (K·p, K·p)
    out["pooling"] = 1.0 - np.diagonal(d_mean).reshape(shape)
    return out


@functools.cache
def exact(name: str, n_params: int):
    """Everything the checks compare against, at one prior point φ (cached per case)."""
    family, data = built(name, n_params)
    phi, latent = prior_point(family, data)
    kind = latent_kind(family, data, latent)
    out = SimpleNamespace(kind=kind, phi=phi, latent=latent,
                          draw=draw_at(family, data, phi, latent))
    if family.collapsible:
        out.collapsed = quick_jit(lambda phi: observed_logprob(
            model_trace(family, data, True, params=phi)))(phi)
    if kind == "gaussian":
        gauss = gaussian_exact(family, data, phi, latent)
        out.integral = gauss["integral"]
        # L(θ̂) is quadratic in θ̂: minus its Hessian is the joint precision of θ̂ | φ
        out.loo = leave_one_out(-gauss["hess"], -gauss["grad"], data["theta_hat"].shape)
        for key in ("theta_mean", "theta_cov", "pooling"):
            if key in gauss:
                setattr(out, key, gauss[key])
    elif kind == "scale_mixture":
        out.integral = scale_mixture_integral(family, data, phi, latent)
    else:
        out.per_task = mixture_integral(family, data, phi, latent)
    return out


@functools.cache
def per_draw(name: str, n_params: int) -> dict:
    """The per-draw functions at the prior point, compiled together as the sampler does:
    ``theta``, ``loglik``, ``weight``, ``extras`` and ``new`` (None where the family
    refuses a new task: neither without covariates nor with a task's own)."""
    family, data = built(name, n_params)
    draw = exact(name, n_params).draw
    covariates = None
    refused = False
    try:
        covariates = family.new_task_covariates(None)
    except SpecError:
        try:
            covariates = family.new_task_covariates(family.estimates.covariates.iloc[0])
        except SpecError:
            refused = True

    def run(key, covariates):
        k_theta, k_extra, k_new = jax.random.split(key, 3)
        return {"theta": family.draw_theta(k_theta, data, draw),
                "loglik": family.pointwise_loglik(data, draw),
                "weight": family.pooling_weight(data, draw),
                "extras": family.extra_draws(k_extra, data, draw),
                "new": None if refused else family.draw_new_task(k_new, data, draw,
                                                                 covariates)}

    return quick_jit(run)(jax.random.PRNGKey(0), covariates)


def leave_one_out(precision, grad, shape):
    """log p(θ̂ₖ | θ̂₋ₖ) for θ̂ ~ N(m, Λ⁻¹) from Λ and g = Λ(θ̂ − m), shape (K,)."""
    n_tasks, n_params = shape
    blocks = precision.reshape(n_tasks, n_params, n_tasks, n_params)
    loo = []
    for k in range(n_tasks):
        block = blocks[k, :, k, :]
        g = grad.reshape(shape)[k]
        loo.append(0.5 * np.linalg.slogdet(block)[1] - 0.5 * g @ np.linalg.solve(block, g)
                   - 0.5 * n_params * math.log(2 * math.pi))
    return np.array(loo)


def scale_mixture_integral(family, data, phi, latent) -> float:
    """log ∫ p(θ̂, latent | φ) over the latent sites: exactly over the real ones, by
    the trapezoid rule over the log of each task's positive one (one at a time: the tasks
    are independent given φ)."""
    sites = site_info(family, data, False)
    positive = [name for name in latent if not is_real(unwrap(sites[name]["fn"]).support)]
    assert len(positive) == 1, positive
    scale_site = positive[0]
    real = {name: value for name, value in latent.items() if name != scale_site}
    x0, unravel = ravel_pytree(real)

    def log_integrand(log_scale):  # the real sites integrated out; ds = dλ/λ
        def f(x):
            return plain_integrand(family, data, phi,
                                   {**unravel(x), scale_site: jnp.exp(log_scale)})
        return gaussian_integral(f, x0)[0] + jnp.sum(log_scale)

    start = np.log(np.asarray(latent[scale_site]))
    assert start.shape == (N_TASKS,), start.shape
    tasks = np.arange(N_TASKS)
    coarse = np.linspace(-60.0, 25.0, 341)
    # trapezoid rule on [mode − 80, mode + 12]: the integrand is analytic and its tails
    # decay at least like e^((ν + p) t / 2) below and doubly exponentially above
    step = 0.05
    offsets = np.arange(-80.0, 12.0 + step / 2, step)

    @jax.jit
    def run(start):
        at_start = log_integrand(start)

        def along(k, t):  # task k's log λ moved to t, the others held
            return log_integrand(start.at[k].set(t)) - at_start

        values = jax.vmap(jax.vmap(along, (None, 0)), (0, None))(tasks, coarse)
        mode = jnp.asarray(coarse)[jnp.argmax(values, axis=1)]  # (K,)
        fine = jax.vmap(jax.vmap(along, (None, 0)), (0, 0))(tasks, mode[:, None] + offsets)
        return at_start, fine

    at_start, fine = (np.asarray(a) for a in run(start))
    assert np.all(fine[:, [0, -1]] < fine.max(axis=1, keepdims=True) - 40.0)
    return float(at_start + np.sum(special.logsumexp(fine, axis=1) + math.log(step)))


def mixture_integral(family, data, phi, latent) -> np.ndarray:
    """log ∫ p(θ̂ₖ, θₖ | φ) dθₖ per task, for a plain model whose θ site is a mixture:
    per component exactly (Gaussian), summed with the mixing weights, shape (K,)."""
    sites = site_info(family, data, False)
    (name,) = [n for n in latent if isinstance(unwrap(sites[n]["fn"]), dist.MixtureSameFamily)]
    assert set(latent) == {name}
    theta0 = latent[name]

    def per_component(theta):  # (K, C): log π_c + log N_c(θₖ) + log p(θ̂ₖ | θₖ)
        trace = model_trace(family, data, False, params={**phi, name: theta})
        mixture = unwrap(trace[name]["fn"])
        log_mix = jax.nn.log_softmax(mixture.mixing_distribution.logits)
        return (log_mix + mixture.component_distribution.log_prob(theta[:, None, :])
                + observed_logprob(trace)[:, None])

    def summed(theta):  # Σₖ over the tasks, (C,)
        return jnp.sum(per_component(theta), axis=0)

    def parts(theta):
        return per_component(theta), jax.jacobian(summed)(theta), jax.hessian(summed)(theta)

    value, grad, hess = (np.asarray(a) for a in quick_jit(parts)(theta0))
    # grad (C, K, p), hess (C, K, p, K, p)
    n_tasks, n_params = theta0.shape
    own = np.eye(n_tasks, dtype=bool)
    # task k's terms depend on θₖ only (the tasks are independent given φ)
    assert np.all(np.where(own[None, :, None, :, None], 0.0, hess) == 0.0)
    k = np.arange(n_tasks)
    g = np.swapaxes(grad, 0, 1)  # (K, C, p)
    h = hess[:, k, :, k, :]  # the advanced indices go first: (K, C, p, p)
    newton = np.linalg.solve(h, g[..., None])[..., 0]
    log_det = np.linalg.slogdet(-h)[1]
    per = (value - 0.5 * np.sum(g * newton, axis=-1)
           + 0.5 * n_params * math.log(2 * math.pi) - 0.5 * log_det)
    return special.logsumexp(per, axis=-1)


# ---------------------------------------------------------------------- 1. prior blocks
@pytest.mark.parametrize(("name", "n_params"), CASES)
def test_prior_blocks(name, n_params):
    """Every block is named, labelled per element, backed by a model quantity of a
    matching size, and has a default prior that parses and resolves."""
    family, data = built(name, n_params)
    blocks = family.prior_blocks()
    assert blocks and all(isinstance(b, PriorBlock) for b in blocks)
    names = [b.name for b in blocks]
    assert len(set(names)) == len(names) and all(names), names
    defaults = family.default_priors()
    assert set(names) <= set(defaults), set(names) - set(defaults)
    sites = {name: site["shape"] for collapsed in (False, True)
             for name, site in site_info(family, data, collapsed).items()}
    for block in blocks:
        assert block.support in ("real", "positive", "unit", "correlation"), block
        default = defaults[block.name]
        texts = [default] if isinstance(default, str) else list(default)
        for text in texts:
            parse_prior(text, name=block.name)
        resolved = family.priors[block.name]
        if block.elements is None:
            assert len(resolved) == 1
            assert isinstance(default, str) or len(texts) == 1
        else:
            assert len(block.elements) >= 1
            assert all(isinstance(e, str) and e for e in block.elements)
            assert len(set(block.elements)) == len(block.elements)
            assert len(resolved) == len(block.elements)
            assert isinstance(default, str) or len(texts) == len(block.elements)
        # the block is a model quantity (sampled or deterministic), one prior per element
        assert block.name in sites, (block.name, list(sites))
        shape = sites[block.name]
        if block.elements is not None:
            size = math.prod(shape)
            assert size % len(block.elements) == 0, (block.name, shape, block.elements)
            if block.elements == tuple(family.params):
                assert shape[-1] == n_params, (block.name, shape)


# ---------------------------------------------------------------------- 2. likelihoods
@pytest.mark.parametrize(("name", "n_params"), CASES)
def test_collapsed_likelihood_integrates_plain_model(name, n_params):
    """log p(θ̂ | φ) of the collapsed model equals the plain model integrated over θ (see
    the module docstring for how, per kind of latent site). Families that have no
    collapsed form (``collapsible = False``) report the marginal through
    ``pointwise_loglik``, which is compared instead."""
    family, data = built(name, n_params)
    ref = exact(name, n_params)
    if family.collapsible:
        collapsed = ref.collapsed
    else:
        collapsed = per_draw(name, n_params)["loglik"]
    if ref.kind == "mixture":
        np.testing.assert_allclose(collapsed, ref.per_task, rtol=0, atol=1e-8)
    else:
        tol = 1e-5 if ref.kind == "scale_mixture" else 1e-8  # the family's quadrature rule
        np.testing.assert_allclose(float(np.sum(collapsed)), float(ref.integral),
                                   rtol=0, atol=tol * max(1.0, abs(float(ref.integral))))


@pytest.mark.parametrize(("name", "n_params"), CASES)
def test_pointwise_loglik_is_leave_one_out(name, n_params):
    """``pointwise_loglik`` is log p(θ̂ₖ | θ̂₋ₖ, φ): for Gaussian families from the
    gradient and Hessian in θ̂ of the plain model integrated over θ; otherwise (tasks
    independent given φ) the collapsed model's per-task density."""
    family, data = built(name, n_params)
    ref = exact(name, n_params)
    loo = per_draw(name, n_params)["loglik"]
    assert loo.shape == (N_TASKS,)
    if ref.kind == "gaussian":
        expected = ref.loo
    else:
        expected = ref.collapsed
        assert expected.shape == (N_TASKS,)
    tol = 1e-5 if ref.kind == "scale_mixture" else 1e-8
    np.testing.assert_allclose(loo, expected, rtol=0, atol=tol * max(1.0, float(
        np.max(np.abs(expected)))))


# ---------------------------------------------------------------------- 3. per draw
@pytest.mark.parametrize(("name", "n_params"), CASES)
def test_per_draw_shapes(name, n_params):
    """``draw_theta`` (K, p), ``pointwise_loglik`` (K,), ``draw_new_task`` (p,), all finite;
    a family that cannot predict a new task refuses it with a SpecError."""
    family, _ = built(name, n_params)
    out = per_draw(name, n_params)
    assert out["theta"].shape == (N_TASKS, n_params)
    assert np.all(np.isfinite(out["theta"]))
    assert out["loglik"].shape == (N_TASKS,) and np.all(np.isfinite(out["loglik"]))
    extras = out["extras"]
    assert set(extras) <= set(family.extra_dims()), (set(extras), family.extra_dims())
    for value in extras.values():
        assert np.all(np.isfinite(value))
    if out["new"] is None:
        with pytest.raises(SpecError):  # refused with a clear error (car: off the graph)
            family.new_task_covariates(family.estimates.covariates.iloc[0])
        return
    assert out["new"].shape == (n_params,)
    assert np.all(np.isfinite(out["new"]))


@pytest.mark.parametrize(("name", "n_params"), CASES)
def test_theta_draws_follow_exact_conditional(name, n_params):
    """Gaussian families: ``draw_theta`` draws have the mean and variances of θ | θ̂, φ of
    the plain model (within 5 Monte Carlo standard errors; variances within 15%)."""
    family, data = built(name, n_params)
    ref = exact(name, n_params)
    if not family.collapsible or not hasattr(ref, "theta_mean"):
        pytest.skip("θ | θ̂, φ is not Gaussian, or θ is sampled/degenerate")
    keys = jax.random.split(jax.random.PRNGKey(1), N_THETA_DRAWS)
    draws = quick_jit(lambda k: jax.lax.map(lambda kk: family.draw_theta(kk, data, ref.draw),
                                          k))(keys)
    draws = np.asarray(draws).reshape(N_THETA_DRAWS, -1)
    sd = np.sqrt(np.diag(ref.theta_cov))
    z = (draws.mean(axis=0) - np.asarray(ref.theta_mean).reshape(-1)) / (sd / np.sqrt(
        N_THETA_DRAWS))
    assert np.max(np.abs(z)) < 5.0, z
    ratio = draws.var(axis=0, ddof=1) / sd**2
    assert np.all(np.abs(ratio - 1.0) < 0.15), ratio


# ---------------------------------------------------------------------- 4. pooling
@pytest.mark.parametrize(("name", "n_params"), CASES)
def test_pooling_weight(name, n_params):
    """Pooling weights are in [0, 1], one per task and parameter; for Gaussian families
    that integrate θ out they equal 1 − diag ∂E[θₖ | θ̂, φ]/∂θ̂ₖ of the plain model."""
    family, data = built(name, n_params)
    ref = exact(name, n_params)
    weight = np.asarray(per_draw(name, n_params)["weight"])
    assert weight.shape == (N_TASKS, n_params)
    assert np.all(np.isfinite(weight))
    assert np.all((weight >= -1e-12) & (weight <= 1 + 1e-12)), weight
    if hasattr(ref, "pooling") and family.collapsible:
        np.testing.assert_allclose(weight, ref.pooling, rtol=0, atol=1e-8)


# ---------------------------------------------------------------------- 5. similarity
def fake_result(family, data):
    """A stand-in for a fit: prior draws of φ and the per-draw outputs, laid out as the
    sampler lays out a posterior (``idata.posterior``; ``tasks``)."""
    est = family.estimates
    n_draws = FAKE_CHAINS * FAKE_DRAWS
    def one(key):
        k_prior, k_theta, k_extra = jax.random.split(key, 3)
        draw = {name: site["value"] for name, site in
                model_trace(family, data, family.collapsible, seed=k_prior).items()
                if site["type"] == "deterministic"
                or (site["type"] == "sample" and not site["is_observed"])}
        out = {name: value for name, value in draw.items() if name in family.hyper_dims()}
        out.update(family.extra_draws(k_extra, data, draw))
        out["theta"] = family.draw_theta(k_theta, data, draw) \
            if family.collapsible or "theta" not in draw else draw["theta"]
        return out

    keys = jax.random.split(jax.random.PRNGKey(8), n_draws)
    per_draw = quick_jit(lambda k: jax.lax.map(one, k))(keys)
    posterior = {name: np.asarray(value).reshape((FAKE_CHAINS, FAKE_DRAWS) + value.shape[1:])
                 for name, value in per_draw.items()}
    dims = {**family.hyper_dims(), **family.extra_dims(), "theta": ["task", "param"]}
    for name, value in posterior.items():
        assert value.ndim - 2 == len(dims[name]), (name, value.shape, dims[name])
    coords = {"task": est.tasks, "param": est.params, "param_b": est.params,
              **family.hyper_coords()}
    dataset = az.dict_to_dataset(posterior, coords=coords, dims=dims, library=None)
    return SimpleNamespace(idata=az.InferenceData(posterior=dataset), tasks=list(est.tasks))


@pytest.mark.parametrize(("name", "n_params"), CASES)
def test_similarity_and_structure(name, n_params):
    """``similarity`` is K×K, symmetric, finite, with the documented diagonal;
    ``structure`` is a dict of DataFrames; every sampled hyperparameter and extra output
    has the dims that ``hyper_dims``/``extra_dims`` declare."""
    family, data = built(name, n_params)
    result = fake_result(family, data)
    sim = np.asarray(family.similarity(result))
    assert sim.shape == (N_TASKS, N_TASKS)
    assert np.all(np.isfinite(sim))
    np.testing.assert_allclose(sim, sim.T, atol=1e-12)
    np.testing.assert_allclose(np.diag(sim), SIMILARITY_DIAGONAL.get(family.name, 1.0),
                               atol=1e-9)
    structure = family.structure(result)
    assert isinstance(structure, dict)
    for table in structure.values():
        assert isinstance(table, pd.DataFrame) and len(table) > 0
