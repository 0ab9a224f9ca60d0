"""Differential privacy for site summaries: the Gaussian mechanism on θ̂.

A site may release its estimate θ̂ₖ ∈ ℝᵖ with Gaussian noise, ``θ̃ₖ = θ̂ₖ + N(0, σ² I_p)``.
If ``sensitivity`` Δ bounds the L2 change of θ̂ₖ when one individual's record is changed
(the L2 sensitivity), the release is (ε, δ)-differentially private for

* the **analytic Gaussian mechanism** (Balle & Wang 2018, Theorem 8; what bayesfuse uses):
  the smallest σ with
  ``Φ(Δ/(2σ) − εσ/Δ) − e^ε Φ(−Δ/(2σ) − εσ/Δ) ≤ δ``, valid for every ε > 0;
* the classical bound (Dwork & Roth 2014, Theorem A.1): ``σ = Δ √(2 ln(1.25/δ)) / ε``, valid
  for ε < 1 and never smaller than the analytic σ (:func:`classical_sigma`, for reference).

The noise variance σ² is recorded in the summary and added to Vₖ when the file is read,
so the stage-2 likelihood θ̃ₖ | θₖ ~ N(θₖ, Vₖ + σ² I) stays calibrated.

**The sensitivity is the user's statement.** bayesfuse cannot compute it: it depends on the
estimator and on bounds of the data (e.g. for an AIPW mean with outcomes in [0, B] and
propensities clipped to [c, 1 − c], one record moves θ̂ by at most about B / (c n)).
A wrong Δ voids the guarantee. Only θ̂ is privatised; the covariance Vₖ, n and the arm
sizes are released as computed (aggregates, but not differentially private).

References
----------
Balle, B. & Wang, Y.-X. (2018). Improving the Gaussian mechanism for differential privacy:
analytical calibration and optimal denoising. ICML.
Dwork, C. & Roth, A. (2014). The algorithmic foundations of differential privacy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import log_ndtr, ndtr

from bayesfuse.errors import BayesfuseError

__all__ = ["DPError", "analytic_sigma", "classical_sigma", "gaussian_mechanism", "check_dp"]

MECHANISM = "analytic-gaussian"


class DPError(BayesfuseError, ValueError):
    """Invalid differential-privacy settings (ε, δ, sensitivity)."""


def check_dp(epsilon: Any, delta: Any, sensitivity: Any) -> tuple[float, float, float]:
    """Validate (ε, δ, Δ): ε > 0, 0 < δ < 1, Δ > 0, all finite. Returns them as floats."""
    values = []
    for name, flag, value in (("epsilon", "--dp-epsilon", epsilon),
                              ("delta", "--dp-delta", delta),
                              ("sensitivity", "--dp-sensitivity", sensitivity)):
        if value is None:
            raise DPError(f"Differential privacy needs epsilon, delta and sensitivity; "
                          f"{name} ({flag}) is missing.")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise DPError(f"{name} ({flag}) must be a number; got {value!r}.") from None
        if not math.isfinite(number) or number <= 0:
            raise DPError(f"{name} ({flag}) must be a finite number > 0; got {value!r}.")
        values.append(number)
    eps, delta_, sens = values
    if delta_ >= 1:
        raise DPError(f"delta (--dp-delta) must be < 1 (typically below 1/n, e.g. 1e-5); "
                      f"got {delta!r}.")
    return eps, delta_, sens


def _delta_of_sigma(sigma: float, epsilon: float, sensitivity: float) -> float:
    """δ achieved by Gaussian noise of standard deviation ``sigma`` (Balle & Wang, Thm 8)."""
    a = sensitivity / (2.0 * sigma)
    b = epsilon * sigma / sensitivity
    return float(ndtr(a - b) - math.exp(epsilon + log_ndtr(-a - b)))


def analytic_sigma(epsilon: float, delta: float, sensitivity: float) -> float:
    """Smallest σ giving (ε, δ)-DP for L2 sensitivity Δ (analytic Gaussian mechanism).

    Parameters
    ----------
    epsilon, delta, sensitivity : float
        Privacy budget ε > 0, 0 < δ < 1, and the L2 sensitivity Δ > 0 of the released vector.

    Returns
    -------
    float
        σ, found by bisection on log σ to a relative precision of 1e-12 (δ(σ) decreases in
        σ); rounded up, so the guarantee holds.

    Examples
    --------
    >>> round(analytic_sigma(1.0, 1e-5, 1.0), 4)
    3.7306
    """
    epsilon, delta, sensitivity = check_dp(epsilon, delta, sensitivity)
    low, high = math.log(sensitivity) - 10.0, math.log(sensitivity) + 10.0
    while _delta_of_sigma(math.exp(low), epsilon, sensitivity) <= delta:
        low -= 10.0
    while _delta_of_sigma(math.exp(high), epsilon, sensitivity) > delta:
        high += 10.0
    while high - low > 1e-12:
        mid = 0.5 * (low + high)
        if _delta_of_sigma(math.exp(mid), epsilon, sensitivity) > delta:
            low = mid
        else:
            high = mid
    return math.exp(high)


def classical_sigma(epsilon: float, delta: float, sensitivity: float) -> float:
    """σ = Δ √(2 ln(1.25/δ)) / ε of the classical Gaussian mechanism (valid for ε < 1)."""
    epsilon, delta, sensitivity = check_dp(epsilon, delta, sensitivity)
    if epsilon >= 1:
        raise DPError(f"The classical Gaussian mechanism needs epsilon < 1; got {epsilon}. "
                      "Use analytic_sigma, valid for every epsilon.")
    return sensitivity * math.sqrt(2.0 * math.log(1.25 / delta)) / epsilon


def gaussian_mechanism(estimate: np.ndarray, epsilon: float, delta: float, sensitivity: float,
                       rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Release ``estimate`` (p,) with analytic-Gaussian noise.

    Parameters
    ----------
    estimate : ndarray of shape (p,)
        θ̂ of one task.
    epsilon, delta, sensitivity : float
        Privacy budget and the L2 sensitivity of θ̂ (see the module notes).
    rng : numpy.random.Generator
        Source of the noise. Its seed must stay secret: whoever knows it can remove the noise.

    Returns
    -------
    noisy : ndarray of shape (p,)
        θ̂ + N(0, σ² I_p).
    noise_variance : float
        σ², to be added to the diagonal of Vₖ.
    """
    sigma = analytic_sigma(epsilon, delta, sensitivity)
    values = np.asarray(estimate, dtype=float)
    return values + sigma * rng.standard_normal(values.shape), sigma**2
