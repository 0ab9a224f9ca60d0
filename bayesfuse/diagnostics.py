"""Sampler diagnostics with a pass/fail verdict and plain advice.

Checks (Vehtari et al. 2021; Betancourt 2017): rank-normalised split R-hat < 1.01, bulk and
tail ESS ≥ 400, no divergent transitions, E-BFMI > 0.3 in every chain, no transition at the
maximum tree depth. Quantities are the reported ones: hyperparameters and θ.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import arviz as az
import numpy as np
import pandas as pd

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


def _rhat_ess(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R-hat, bulk and tail ESS of (chain, draw, n) values; constant quantities -> nan."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        moved = np.moveaxis(values, -1, 0)  # (n, chain, draw)
        r_hat = np.array([az.rhat(v) for v in moved], dtype=float)
        bulk = np.array([az.ess(v, method="bulk") for v in moved], dtype=float)
        tail = np.array([az.ess(v, method="tail") for v in moved], dtype=float)
    return r_hat, bulk, tail


def quantity_table(posterior, variables: list[str]) -> pd.DataFrame:
    """R-hat, bulk and tail ESS for every element of ``variables``."""
    rows = []
    for name in variables:
        names, values = flat_names(name, posterior[name])
        constant = np.ptp(values.reshape(-1, values.shape[-1]), axis=0) == 0
        r_hat, bulk, tail = _rhat_ess(values)
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
