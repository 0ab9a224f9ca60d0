"""No pooling: each θₖ has its own wide normal prior, θₖ ~ N(0, s²) independently.

There are no hyperparameters, so NUTS samples θ directly (the plain form); the posterior
is exactly Gaussian and the similarity matrix is the identity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from bayesfuse.families.base import Family, block_distribution, mvn_logpdf
from bayesfuse.families.registry import register
from bayesfuse.specs.priors import Prior, PriorBlock, stacked_args


@register
class Independent(Family):
    """θₖ ~ N(m, s²) independently per task and parameter (no pooling)."""

    name = "independent"
    description = "no pooling: each task keeps its own estimate, with a wide prior"
    collapsible = False
    similarity_kind = "identity (no pooling)"

    def prior_blocks(self) -> list[PriorBlock]:
        return [PriorBlock("theta", "real", tuple(self.params))]

    def default_priors(self) -> dict[str, str | list[str]]:
        return {"theta": self.scale.normal(10.0)}

    def hyper_dims(self) -> dict[str, list[str]]:
        return {}

    def model(self, priors: Mapping[str, Sequence[Prior]], collapsed: bool,
              theta_hat: Any = None, cov: Any = None, cov_chol: Any = None) -> None:
        with numpyro.plate("task", cov.shape[0]):
            theta = numpyro.sample("theta", block_distribution(priors["theta"]))
            numpyro.sample("theta_hat", dist.MultivariateNormal(theta, scale_tril=cov_chol),
                           obs=theta_hat)

    def draw_theta(self, key, data, draw):
        return draw["theta"]

    def _prior_moments(self):
        priors = self.priors["theta"]
        if priors[0].family != "normal":
            return None
        loc, scale = stacked_args(priors)
        return jnp.asarray(loc), jnp.asarray(scale)

    def pointwise_loglik(self, data, draw):
        # log p(θ̂ₖ) = N(θ̂ₖ; m, diag(s²) + Vₖ): the leave-one-task-out predictive, since
        # tasks share nothing; comparable with the other families' marginals.
        moments = self._prior_moments()
        if moments is None:  # non-normal prior: fall back to the conditional likelihood
            return mvn_logpdf(data["theta_hat"], draw["theta"], data["cov"])
        loc, scale = moments
        total = jnp.diag(scale**2)[None] + data["cov"]
        return mvn_logpdf(data["theta_hat"], loc, total)

    def draw_new_task(self, key, data, draw, covariates):
        priors = self.priors["theta"]
        return priors[0].numpyro([jnp.asarray(a) for a in stacked_args(priors)]).sample(key)

    def similarity(self, result: Any) -> np.ndarray:
        return np.eye(len(result.tasks))
