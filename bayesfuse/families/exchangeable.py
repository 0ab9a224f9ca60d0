"""Exchangeable tasks: θₖ = μ + uₖ, uₖ ~ N(0, T), T = diag(τ) R diag(τ).

Collapsed likelihood (θ integrated out)::

    θ̂ₖ | μ, T ~ N(μ, T + Vₖ)          # independent over tasks

so NUTS samples only μ (p), τ (p) and, for p > 1, the Cholesky factor of R ~ LKJ(η).
θₖ | μ, T, θ̂ₖ is Gaussian and is drawn exactly per posterior draw. With ``robust=True``
the task effects are Student-t with ν degrees of freedom, written as the normal scale
mixture uₖ | λₖ ~ N(0, T/λₖ), λₖ ~ Gamma(ν/2, ν/2), so θ still collapses given λ; small
posterior λₖ flags an outlying task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from bayesfuse.families.base import (
    Family,
    block_distribution,
    gaussian_conditional_draw,
    mvn_logpdf,
    pooling_weight_gaussian,
    register,
)
from bayesfuse.priors import Prior, PriorBlock


@register
class Exchangeable(Family):
    """θₖ = μ + uₖ with uₖ ~ N(0, T) (or Student-t with ``robust=True``)."""

    name = "exchangeable"
    description = "exchangeable tasks: normal random effects around a common mean"
    option_defaults = {"robust": False}

    def prior_blocks(self) -> list[PriorBlock]:
        blocks = [
            PriorBlock("mu", "real", tuple(self.params)),
            PriorBlock("tau", "positive", tuple(self.params)),
        ]
        if self.n_params > 1:
            blocks.append(PriorBlock("corr", "correlation"))
        if self.options["robust"]:
            blocks.append(PriorBlock("nu", "positive"))
        return blocks

    def default_priors(self) -> dict[str, str | list[str]]:
        defaults: dict[str, str | list[str]] = {
            "mu": self.scale.normal(5.0),
            "tau": self.scale.halfnormal(1.0),
            "corr": "lkj(2)",
        }
        if self.options["robust"]:
            defaults["nu"] = "gamma(2, 0.1)"  # Juárez & Steel (2010)
        return defaults

    def hyper_dims(self) -> dict[str, list[str]]:
        dims = {"mu": ["param"], "tau": ["param"]}
        if self.n_params > 1:
            dims["corr"] = ["param", "param_b"]
        if self.options["robust"]:
            dims["nu"] = []
            dims["task_scale"] = ["task"]
        return dims

    # ------------------------------------------------------------------ model
    def _prior_chol(self, draw: Mapping[str, Any]) -> jax.Array:
        """Cholesky factor of T, shape (p, p)."""
        tau = draw["tau"]
        if self.n_params == 1:
            return tau[:, None]
        return tau[:, None] * draw["corr_chol"]

    def model(self, priors: Mapping[str, Sequence[Prior]], collapsed: bool,
              theta_hat: Any = None, cov: Any = None, cov_chol: Any = None) -> None:
        n_tasks, n_params = cov.shape[0], cov.shape[1]
        mu = numpyro.sample("mu", block_distribution(priors["mu"]))
        tau = numpyro.sample("tau", block_distribution(priors["tau"]))
        site = {"tau": tau}
        if n_params > 1:
            eta = priors["corr"][0].args[0]
            corr_chol = numpyro.sample("corr_chol", dist.LKJCholesky(n_params, eta))
            numpyro.deterministic("corr", corr_chol @ corr_chol.T)
            site["corr_chol"] = corr_chol
        prior_chol = self._prior_chol(site)
        if self.options["robust"]:
            nu = numpyro.sample("nu", priors["nu"][0].numpyro())
            with numpyro.plate("task", n_tasks):
                lam = numpyro.sample("lam", dist.Gamma(nu / 2, nu / 2))
            # task_scale = 1/sqrt(λₖ): how many times wider task k's effect is than τ
            scale = numpyro.deterministic("task_scale", 1 / jnp.sqrt(lam))
        else:
            scale = jnp.ones(n_tasks)
        task_chol = scale[:, None, None] * prior_chol  # (K, p, p)
        if collapsed:
            total = task_chol @ jnp.swapaxes(task_chol, -1, -2) + cov
            with numpyro.plate("task", n_tasks):
                if n_params == 1:
                    numpyro.sample("theta_hat", dist.Normal(mu[0], jnp.sqrt(total[:, 0, 0])),
                                   obs=None if theta_hat is None else theta_hat[:, 0])
                else:
                    numpyro.sample("theta_hat", dist.MultivariateNormal(mu, total), obs=theta_hat)
            return
        with numpyro.plate("task", n_tasks):
            z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([n_params]).to_event(1))
            theta = numpyro.deterministic("theta", mu + jnp.einsum("kij,kj->ki", task_chol, z))
            numpyro.sample("theta_hat", dist.MultivariateNormal(theta, scale_tril=cov_chol),
                           obs=theta_hat)

    def pymc_model(self, priors: Mapping[str, Sequence[Prior]], collapsed: bool,
                   data: Mapping[str, Any]):
        """The same model in PyMC, for ``backend="pymc"``.

        Sites as in :meth:`model`: ``mu`` (p,), ``tau`` (p,), ``corr_chol`` and ``corr``
        (p, p) for p > 1, ``nu``, ``lam`` (K,) and ``task_scale`` (K,) when robust, ``z``
        and ``theta`` (K, p) in the plain form.

        Parameters
        ----------
        priors : mapping
            Resolved priors (``self.priors``).
        collapsed : bool
            Integrate θ out (True) or sample it non-centred.
        data : mapping
            ``self.data()``: ``theta_hat`` (K, p), ``cov`` (K, p, p), ``cov_chol``.

        Returns
        -------
        pymc.Model
        """
        import pymc as pm

        from bayesfuse.backends import pymc as pmb

        n_tasks, n_params = data["theta_hat"].shape
        with pm.Model() as model:
            mu = pmb.block_rv("mu", priors["mu"], (n_params,))
            tau = pmb.block_rv("tau", priors["tau"], (n_params,))
            prior_chol = pmb.scale_corr_chol(tau, priors.get("corr"), n_params)
            scale = None
            if self.options["robust"]:
                nu = priors["nu"][0].pymc("nu")
                lam = pm.Gamma("lam", alpha=nu / 2, beta=nu / 2, shape=(n_tasks,))
                scale = pm.Deterministic("task_scale", 1 / pm.math.sqrt(lam))
            pmb.gaussian_tasks(mu, prior_chol, scale, data, collapsed)
        return model

    # ------------------------------------------------------------------ per draw
    def _task_chol(self, draw: Mapping[str, Any], n_tasks: int) -> jax.Array:
        chol = self._prior_chol(draw)
        if self.options["robust"]:
            return draw["task_scale"][:, None, None] * chol
        return jnp.broadcast_to(chol, (n_tasks,) + chol.shape)

    def draw_theta(self, key, data, draw):
        theta_hat = data["theta_hat"]
        mean = jnp.broadcast_to(draw["mu"], theta_hat.shape)
        chol = self._task_chol(draw, theta_hat.shape[0])
        return gaussian_conditional_draw(key, mean, chol, theta_hat, data["cov_chol"])

    def pointwise_loglik(self, data, draw):
        theta_hat = data["theta_hat"]
        chol = self._task_chol(draw, theta_hat.shape[0])
        total = chol @ jnp.swapaxes(chol, -1, -2) + data["cov"]
        return mvn_logpdf(theta_hat, draw["mu"], total)

    def pooling_weight(self, data, draw):
        chol = self._task_chol(draw, data["theta_hat"].shape[0])
        return pooling_weight_gaussian(chol @ jnp.swapaxes(chol, -1, -2), data["cov"])

    def exact_hyper_draws(self, rng: np.random.Generator, n_draws: int,
                          grid_size: int = 4000) -> dict[str, np.ndarray]:
        """Independent posterior draws of (μ, τ) without MCMC (p = 1, normal prior on μ).

        μ integrates out analytically given τ: θ̂ | τ ~ N(m₀1, diag(seₖ² + τ²) + s₀²11ᵀ).
        The posterior of τ is tabulated on a grid in log τ (4,000 points spanning twelve
        orders of magnitude around the data's scale) and drawn by inverse CDF; then
        μ | τ, θ̂ is Gaussian. This is the semi-analytic route of bayesmeta (Röver 2020).

        Returns
        -------
        dict
            ``mu`` and ``tau``, arrays of shape (n_draws, 1).
        """
        from bayesfuse.errors import SpecError

        if self.n_params != 1 or self.options["robust"]:
            raise SpecError("method='exact' needs scalar θ (p = 1) and the normal "
                            "exchangeable model; use method='nuts'.")
        mu_prior, tau_prior = self.priors["mu"][0], self.priors["tau"][0]
        if mu_prior.family != "normal":
            raise SpecError(f"method='exact' needs a normal prior on mu; got {mu_prior}.")
        m0, s0 = mu_prior.args
        y = self.estimates.estimates[:, 0]
        var_y = self.estimates.covariances[:, 0, 0]
        scale = float(self.scale.spread[0])
        log_tau = np.linspace(np.log(scale) - 14.0, np.log(scale) + 8.0, grid_size)
        tau = np.exp(log_tau)
        total = var_y[None, :] + tau[:, None] ** 2  # (G, K)
        weight = 1 / total
        var_mu = 1 / (1 / s0**2 + weight.sum(axis=1))
        mean_mu = var_mu * (m0 / s0**2 + (weight * y).sum(axis=1))
        # log p(θ̂ | τ) with μ integrated out, up to a constant
        log_lik = (-0.5 * np.log(total).sum(axis=1) + 0.5 * np.log(var_mu)
                   - 0.5 * ((weight * y**2).sum(axis=1) - mean_mu**2 / var_mu))
        # density of log τ: p(τ | θ̂) τ
        log_post = log_lik + tau_prior.logpdf(tau) + log_tau
        density = np.exp(log_post - log_post.max())
        cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1])
                                               * np.diff(log_tau))])
        if density[-1] > 1e-9 * density.max():
            raise SpecError("method='exact': the posterior of tau does not decay within the "
                            "grid (a prior with very heavy tails?); use method='nuts'.")
        cdf /= cdf[-1]
        draws_log_tau = np.interp(rng.uniform(size=n_draws), cdf, log_tau)
        tau_draws = np.exp(draws_log_tau)
        total_draws = var_y[None, :] + tau_draws[:, None] ** 2
        w_draws = 1 / total_draws
        v = 1 / (1 / s0**2 + w_draws.sum(axis=1))
        m = v * (m0 / s0**2 + (w_draws * y).sum(axis=1))
        mu_draws = m + np.sqrt(v) * rng.standard_normal(n_draws)
        return {"mu": mu_draws[:, None], "tau": tau_draws[:, None]}

    def draw_new_task(self, key, data, draw, covariates):
        k_scale, k_z = jax.random.split(key)
        chol = self._prior_chol(draw)
        if self.options["robust"]:
            lam = jax.random.gamma(k_scale, draw["nu"] / 2) / (draw["nu"] / 2)
            chol = chol / jnp.sqrt(lam)
        return draw["mu"] + chol @ jax.random.normal(k_z, draw["mu"].shape)


@register
class Robust(Exchangeable):
    """Exchangeable with Student-t task effects (ν sampled); flags outlying tasks."""

    name = "robust"
    description = "exchangeable tasks with heavy-tailed (Student-t) task effects"
    option_defaults = {"robust": True}

    def setup(self) -> None:
        self.options["robust"] = True
