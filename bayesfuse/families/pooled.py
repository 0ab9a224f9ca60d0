"""Complete pooling: one common effect, θₖ = μ for every task.

θ̂ₖ | μ ~ N(μ, Vₖ); NUTS samples μ only. The similarity matrix is all ones.
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
from bayesfuse.specs.priors import Prior, PriorBlock


@register
class Pooled(Family):
    """θₖ = μ for all tasks (common effect)."""

    name = "pooled"
    pads_tasks = True
    description = "complete pooling: one common effect for all tasks"
    similarity_kind = "all ones (complete pooling)"

    def prior_blocks(self) -> list[PriorBlock]:
        return [PriorBlock("mu", "real", tuple(self.params))]

    def default_priors(self) -> dict[str, str | list[str]]:
        return {"mu": self.scale.normal(5.0)}

    def hyper_dims(self) -> dict[str, list[str]]:
        return {"mu": ["param"]}

    def model(self, priors: Mapping[str, Sequence[Prior]], collapsed: bool,
              theta_hat: Any = None, cov: Any = None, cov_chol: Any = None) -> None:
        mu = numpyro.sample("mu", block_distribution(priors["mu"]))
        with numpyro.plate("task", cov.shape[0]):
            numpyro.sample("theta_hat", dist.MultivariateNormal(mu, scale_tril=cov_chol),
                           obs=theta_hat)

    def draw_theta(self, key, data, draw):
        return jnp.broadcast_to(draw["mu"], data["theta_hat"].shape)

    def pointwise_loglik(self, data, draw):
        return mvn_logpdf(data["theta_hat"], draw["mu"], data["cov"])

    def pooling_weight(self, data, draw):
        return jnp.ones_like(data["theta_hat"])

    def draw_new_task(self, key, data, draw, covariates):
        return draw["mu"]

    def similarity(self, result: Any) -> np.ndarray:
        return np.ones((len(result.tasks), len(result.tasks)))
