"""Sampler diagnostics with a pass/fail verdict and plain advice.

Checks (Vehtari et al. 2021; Betancourt 2017): rank-normalised split R-hat < 1.01, bulk and
tail ESS ≥ 400, no divergent transitions, E-BFMI > 0.3 in every chain, no transition at the
maximum tree depth. Quantities are the reported ones: hyperparameters and θ.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayesfuse._arviz import az

__all__ = ["Diagnostics", "Thresholds", "diagnose", "flat_names"]


@dataclass(frozen=True)
class Thresholds:
    r_hat: float = 1.01
    ess: float = 400.0
    bfmi: float = 0.3


class Diagnostics(pd.DataFrame):
    """Per-quantity R-hat and ESS (rows), with the verdict attributes.

    Attributes
    ----------
    ok : bool
        Every check passed.
    checks : DataFrame
        One row per check: ``check, value, threshold, passed``.
    advice : list of str
        What to do about each failed check (empty when ``ok``).
    """

    _metadata = ["ok", "checks", "advice"]

    @property
    def _constructor(self):
        return Diagnostics

    def __repr__(self) -> str:  # verdict first, then the table
        verdict = "PASS" if self.ok else "FAIL"
        lines = [f"Diagnostics: {verdict}"]
        lines += [f"  - {a}" for a in self.advice]
        return "\n".join(lines) + "\n" + super().__repr__()


def flat_names(name: str, da) -> tuple[list[str], np.ndarray]:
    """Element names like ``mu[read]`` and the (chain, draw, n) values of a DataArray.

    Symmetric (``param``, ``param_b``) matrices keep their strict upper triangle only.
    """
    dims = [d for d in da.dims if d not in ("chain", "draw")]
    values = da.transpose("chain", "draw", *dims).values
    n_chain, n_draw = values.shape[:2]
    if not dims:
        return [name], values.reshape(n_chain, n_draw, 1)
    labels = [[str(v) for v in da[d].values] for d in dims]
    if dims == ["param", "param_b"]:
        idx = np.triu_indices(len(labels[0]), k=1)
        names = [f"{name}[{labels[0][i]},{labels[1][j]}]" for i, j in zip(*idx, strict=True)]
        return names, values[:, :, idx[0], idx[1]]
    if len(dims) == 1 and dims[0] == "param" and len(labels[0]) == 1:
        return [name], values.reshape(n_chain, n_draw, 1)
    grids = np.meshgrid(*[np.arange(len(lab)) for lab in labels], indexing="ij")
    names = [
        f"{name}[{','.join(labels[d][g.flat[i]] for d, g in enumerate(grids))}]"
        for i in range(grids[0].size)
    ]
    return names, values.reshape(n_chain, n_draw, -1)


def split_chains(values: np.ndarray) -> np.ndarray:
    """(chain, draw, n) -> (2·chain, draw // 2, n): first and last halves of each chain."""
    half = values.shape[1] // 2
    return np.concatenate([values[:, :half], values[:, values.shape[1] - half:]], axis=0)


def _ranks(flat: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) down axis 0 of (N, n), as ``scipy.stats.rankdata``.

    Each quantity's draws are sorted contiguously (much faster than ranking down the
    strided axis); tied values get the mean of their positions, found with running
    maxima and minima over the group boundaries, so ties need no Python loop.
    """
    rows = np.ascontiguousarray(flat.T)  # (n, N)
    n, size = rows.shape
    order = np.argsort(rows, axis=1, kind="stable")
    sorted_rows = np.take_along_axis(rows, order, axis=1)
    position = np.broadcast_to(np.arange(size), (n, size))
    new_group = np.ones((n, size), dtype=bool)
    new_group[:, 1:] = sorted_rows[:, 1:] != sorted_rows[:, :-1]
    first = np.maximum.accumulate(np.where(new_group, position, 0), axis=1)
    group_end = np.ones((n, size), dtype=bool)
    group_end[:, :-1] = new_group[:, 1:]
    last = np.minimum.accumulate(np.where(group_end, position, size - 1)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty((n, size))
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
    return ranks.T


def z_scale(values: np.ndarray) -> np.ndarray:
    """Rank-normalise each quantity over all its draws (Vehtari et al. 2021, eq. 14)."""
    from scipy.special import ndtri

    chains, draws, n = values.shape
    flat = values.reshape(chains * draws, n)
    ranks = _ranks(flat)
    return ndtri((ranks - 0.375) / (flat.shape[0] + 0.25)).reshape(chains, draws, n)


def _basic_rhat(values: np.ndarray) -> np.ndarray:
    draws = values.shape[1]
    between = draws * np.var(values.mean(axis=1), axis=0, ddof=1)
    within = np.mean(np.var(values, axis=1, ddof=1), axis=0)
    return np.sqrt((between / within + draws - 1) / draws)


def _rank_rhat(values: np.ndarray, z_split: np.ndarray | None = None) -> np.ndarray:
    """Rank-normalised split R-hat, max of bulk and folded (tail) versions, per quantity."""
    split = split_chains(values)
    bulk = _basic_rhat(z_scale(split) if z_split is None else z_split)
    folded = np.abs(split - np.median(split.reshape(-1, split.shape[-1]), axis=0))
    return np.maximum(bulk, _basic_rhat(z_scale(folded)))


def _autocov(values: np.ndarray) -> np.ndarray:
    """Autocovariance along the draw axis via FFT, (chain, draw, n)."""
    from scipy.fft import irfft, next_fast_len, rfft

    draws = values.shape[1]
    size = next_fast_len(2 * draws)
    centred = values - values.mean(axis=1, keepdims=True)
    spectrum = rfft(centred, n=size, axis=1)
    return irfft(spectrum * np.conjugate(spectrum), n=size, axis=1)[:, :draws] / draws


def effective_sample_size(values: np.ndarray) -> np.ndarray:
    """Effective sample size with Geyer's initial monotone sequence, per quantity.

    The same estimator as ArviZ's ``_ess`` (Vehtari et al. 2021), vectorised over
    quantities: the autocorrelations are summed in pairs up to the first negative pair,
    the pair sums are made non-increasing, and a positive even term of the stopping pair
    is added.
    """
    chains, draws, n = values.shape
    acov = _autocov(values)
    mean_var = acov[:, 0].mean(axis=0) * draws / (draws - 1.0)
    var_plus = mean_var * (draws - 1.0) / draws
    if chains > 1:
        var_plus = var_plus + np.var(values.mean(axis=1), axis=0, ddof=1)
    rho = 1.0 - (mean_var - acov.mean(axis=0)) / var_plus  # (draw, n)
    rho[0] = 1.0
    last_pair = (draws - 3) // 2  # the last pair index the sequential algorithm reaches
    n_pairs = last_pair + 1
    pair_sums = rho[0: 2 * n_pairs: 2] + rho[1: 2 * n_pairs: 2]  # (n_pairs, n)
    negative = pair_sums[1:] < 0
    any_negative = negative.any(axis=0)
    stop = np.where(any_negative, negative.argmax(axis=0) + 1, last_pair)  # pair index
    index = np.arange(n_pairs)[:, None]
    monotone = np.minimum.accumulate(np.where(index < stop, pair_sums, np.inf), axis=0)
    kept = np.where(index < stop, monotone, 0.0).sum(axis=0)
    even = rho[2 * stop, np.arange(n)]
    extra = np.where(even > 0, even, np.where(any_negative, 0.0, even))
    total = chains * draws
    tau = -1.0 + 2.0 * kept + extra
    tau = np.maximum(tau, 1 / np.log10(total))
    return total / tau


def rhat_ess(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R-hat, bulk and tail ESS of (chain, draw, n) values, vectorised over quantities."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z_split = z_scale(split_chains(values))  # shared by bulk R-hat and bulk ESS
        r_hat = _rank_rhat(values, z_split)
        bulk = effective_sample_size(z_split)
        flat = values.reshape(-1, values.shape[-1])
        low, high = np.quantile(flat, [0.05, 0.95], axis=0)
        tail = np.minimum(effective_sample_size(split_chains((values <= low).astype(float))),
                          effective_sample_size(split_chains((values <= high).astype(float))))
    return r_hat, bulk, tail


def quantity_table(posterior, variables: list[str]) -> pd.DataFrame:
    """R-hat, bulk and tail ESS for every element of ``variables``."""
    rows = []
    for name in variables:
        names, values = flat_names(name, posterior[name])
        constant = np.ptp(values.reshape(-1, values.shape[-1]), axis=0) == 0
        r_hat, bulk, tail = rhat_ess(values)
        r_hat[constant], bulk[constant], tail[constant] = np.nan, np.nan, np.nan
        rows.append(pd.DataFrame({"quantity": names, "variable": name, "r_hat": r_hat,
                                  "ess_bulk": bulk, "ess_tail": tail}))
    return pd.concat(rows, ignore_index=True)


def diagnose(idata, variables: list[str], max_tree_depth: int,
             thresholds: Thresholds = Thresholds(),
             checked: list[str] | None = None) -> Diagnostics:
    """Run every check on a fit's ``InferenceData``.

    Parameters
    ----------
    idata : InferenceData
    variables : list of str
        Posterior variables to tabulate (hyperparameters and ``theta``).
    checked : list of str, optional
        The variables whose R-hat and ESS enter the verdict (default: all ``variables``);
        label-dependent ones (cluster means) are tabulated but not judged.
    max_tree_depth : int
        The sampler's maximum tree depth.
    thresholds : Thresholds
    """
    full_table = quantity_table(idata.posterior, variables)
    judged = set(checked if checked is not None else variables)
    table = full_table[full_table["variable"].isin(judged)]
    stats = idata.sample_stats
    n_chains = idata.posterior.sizes["chain"]
    divergences = int(stats["diverging"].values.sum())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bfmi = np.atleast_1d(az.bfmi(idata)) if "energy" in stats else np.array([np.nan])
    depth_hits = int((stats["tree_depth"].values >= max_tree_depth).sum()) \
        if "tree_depth" in stats else 0
    worst_rhat = table["r_hat"].max(skipna=True)
    min_bulk = table["ess_bulk"].min(skipna=True)
    min_tail = table["ess_tail"].min(skipna=True)
    rhat_ok = n_chains < 2 or not (table["r_hat"] >= thresholds.r_hat).any()
    bulk_ok = not (table["ess_bulk"] < thresholds.ess).any()
    tail_ok = not (table["ess_tail"] < thresholds.ess).any()
    bfmi_ok = bool(np.all(np.isnan(bfmi) | (bfmi > thresholds.bfmi)))
    checks = pd.DataFrame(
        [
            ("r_hat", worst_rhat, f"< {thresholds.r_hat}", rhat_ok),
            ("ess_bulk", min_bulk, f">= {thresholds.ess:g}", bulk_ok),
            ("ess_tail", min_tail, f">= {thresholds.ess:g}", tail_ok),
            ("divergences", divergences, "== 0", divergences == 0),
            ("bfmi", float(np.nanmin(bfmi)) if np.isfinite(bfmi).any() else np.nan,
             f"> {thresholds.bfmi}", bfmi_ok),
            ("max_treedepth_hits", depth_hits, "== 0", depth_hits == 0),
        ],
        columns=["check", "value", "threshold", "passed"],
    )
    advice = []
    if not rhat_ok:
        bad = table.loc[table["r_hat"].idxmax(), "quantity"]
        advice.append(
            f"R-hat {worst_rhat:.3f} >= {thresholds.r_hat} (worst: {bad}): chains disagree; "
            "run more warmup and draws, and check for several modes"
        )
    if n_chains < 2:
        advice.append("only one chain: R-hat cannot be checked; run at least 4 chains")
    if not bulk_ok or not tail_ok:
        kind = "bulk" if not bulk_ok else "tail"
        low = min_bulk if not bulk_ok else min_tail
        advice.append(
            f"{kind} ESS {low:.0f} < {thresholds.ess:g}: increase draws (or chains) for "
            "reliable intervals"
        )
    if divergences:
        advice.append(
            f"{divergences} divergent transitions: raise target_accept (e.g. 0.95-0.99) or "
            "use the collapsed form (collapsed=True)"
        )
    if not bfmi_ok:
        advice.append(
            f"E-BFMI {np.nanmin(bfmi):.2f} <= {thresholds.bfmi}: the sampler explores the "
            "energy poorly (heavy tails or a funnel); use the collapsed form or tighter "
            "priors on scale parameters"
        )
    if depth_hits:
        advice.append(
            f"{depth_hits} transitions hit the maximum tree depth ({max_tree_depth}): raise "
            "max_tree_depth or reparameterise"
        )
    result = Diagnostics(full_table)
    result.ok = bool(checks["passed"].all()) and n_chains >= 2
    result.checks = checks
    result.advice = advice
    return result
