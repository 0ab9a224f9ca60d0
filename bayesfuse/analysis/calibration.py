"""Simulation-based calibration (SBC) of the fusion families (Talts et al. 2018).

If hyperparameters φ and task effects θ are drawn from the prior, stage-1 estimates θ̂ from
the likelihood θ̂ₖ ~ N(θₖ, Vₖ), and the model is fitted to θ̂, then the rank of the true
value of any quantity among L independent posterior draws is uniform on {0, …, L}. A
sampler, a collapsed likelihood, an exact conditional draw of θ or a prior that does not
match its model shows up as a rank histogram that is not flat.

:func:`sbc` runs the loop for one family and a *template* of estimates (the tasks, their
covariances Vₖ, covariates): every simulated data set has the template's shapes, so the
compiled sampler is reused (no recompilation after the first fit). Priors must be given
explicitly: data-scaled default priors depend on the data and would make the prior a
moving target.

Ranks are computed for label-invariant quantities: θₖ of a few tasks, the family's
reported hyperparameters (``Family.summary_variables``: μ, τ, ν, slopes, concentration,
the number of occupied clusters, edge scale, ρ …), the mean edge weight of ``gmrf`` and,
for ``cluster``, the co-clustering indicator 1{zᵢ = zⱼ} of fixed task pairs. Discrete
quantities get ranks with random tie-breaking, which are uniform too.

Uniformity is tested per quantity with a chi-square test on binned ranks, and the
smallest p-value is judged after a Bonferroni correction over the quantities.

Examples
--------
>>> import numpy as np, bayesfuse as bf
>>> from bayesfuse.analysis.calibration import sbc
>>> template = bf.TaskEstimates([f"t{k}" for k in range(8)], np.zeros(8),
...                             np.linspace(0.5, 1.5, 8) ** 2)
>>> result = sbc("exchangeable", template, n_sims=200, method="exact",
...              priors={"mu": "normal(0, 1)", "tau": "halfnormal(1)"})  # doctest: +SKIP
>>> result.test()                                                         # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from bayesfuse._validation import check_choice
from bayesfuse.data.estimates import TaskEstimates
from bayesfuse.errors import SpecError

__all__ = ["SBCResult", "sbc", "sbc_ranks", "rank_uniformity", "binomial_band",
           "plot_ranks", "STUDY_SETTINGS", "study_template"]

# ---------------------------------------------------------------------- the study's design
#: tasks of the SBC study (the slow tests and ``benchmarks/sbc.py``)
_STUDY_TASKS = [f"t{k}" for k in range(8)]
#: family -> (priors, options) of the SBC study: explicit priors, small K so it runs fast
STUDY_SETTINGS: dict[str, tuple[dict[str, str], dict[str, Any]]] = {
    "exchangeable": ({"mu": "normal(0, 1)", "tau": "halfnormal(1)"}, {}),
    "robust": ({"mu": "normal(0, 1)", "tau": "halfnormal(1)", "nu": "gamma(2, 0.1)"}, {}),
    "metareg": ({"intercept": "normal(0, 1)", "slope": "normal(0, 1)",
                 "tau": "halfnormal(1)"}, {}),
    "cluster": ({"mu": "normal(0, 2)", "tau": "halfnormal(0.5)",
                 "concentration": "gamma(2, 2)"}, {"max_clusters": 4}),
    "gmrf": ({"mu": "normal(0, 1)", "tau": "halfnormal(1)", "edge_scale": "halfnormal(0.5)"},
             {}),
    "car": ({"mu": "normal(0, 1)", "tau": "halfnormal(1)", "rho": "beta(2, 2)"},
            {"adjacency": [[a, b] for a, b in zip(_STUDY_TASKS,
                                                  _STUDY_TASKS[1:] + _STUDY_TASKS[:1],
                                                  strict=True)]}),
}


def study_template() -> TaskEstimates:
    """The SBC study's template: K = 8 tasks, standard errors 0.4…1.0, one task covariate
    ``z`` (for metareg), a ring graph for ``car`` (in :data:`STUDY_SETTINGS`)."""
    n_tasks = len(_STUDY_TASKS)
    covariates = pd.DataFrame({"z": np.linspace(-1.0, 1.0, n_tasks)}, index=_STUDY_TASKS)
    return TaskEstimates(_STUDY_TASKS, np.zeros(n_tasks),
                         np.linspace(0.4, 1.0, n_tasks) ** 2, covariates=covariates)



# ---------------------------------------------------------------------- pure numerics
def sbc_ranks(truth: np.ndarray, draws: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rank of each true value among its posterior draws, ties broken at random.

    Parameters
    ----------
    truth : ndarray of shape (Q,)
        True values of Q quantities.
    draws : ndarray of shape (L, Q)
        L posterior draws of each quantity.
    rng : numpy Generator
        For the tie-breaking (discrete quantities).

    Returns
    -------
    ndarray of int, shape (Q,)
        #(draws < truth) + U{0, …, #(draws == truth)}, in {0, …, L}.
    """
    below = (draws < truth[None]).sum(axis=0)
    ties = (draws == truth[None]).sum(axis=0)
    return below + rng.integers(0, ties + 1)


def _choose_bins(n_sims: int, n_ranks: int) -> int:
    """The most bins (dividing the number of rank values) with ≥ 5 expected per bin."""
    for bins in (20, 10, 5, 4, 2):
        if n_ranks % bins == 0 and n_sims / bins >= 5:
            return bins
    return 2


def rank_uniformity(ranks: pd.DataFrame, n_draws: int, bins: int | None = None,
                    alpha: float = 0.01) -> pd.DataFrame:
    """Chi-square test of uniform ranks per quantity, Bonferroni-corrected.

    Parameters
    ----------
    ranks : DataFrame of shape (n_sims, Q)
        Ranks in {0, …, ``n_draws``}, one column per quantity.
    n_draws : int
        L, the number of posterior draws ranked against (L + 1 possible ranks).
    bins : int, optional
        Number of equal-width bins of the L + 1 ranks (default: the most of 20, 10, 5, 4, 2
        that divides L + 1 with at least 5 expected counts per bin).
    alpha : float, default 0.01
        Family-wise level: a quantity is rejected when its p-value times Q is below it.

    Returns
    -------
    DataFrame
        One row per quantity: ``quantity, chi2, df, p_value, p_bonferroni, reject``;
        ``attrs`` hold ``bins``, ``alpha`` and ``passed`` (no quantity rejected).
    """
    n_sims, n_quantities = ranks.shape
    n_ranks = n_draws + 1
    bins = _choose_bins(n_sims, n_ranks) if bins is None else int(bins)
    if bins < 2 or bins > n_ranks:
        raise SpecError(f"bins must be in [2, {n_ranks}]; got {bins}.")
    values = ranks.to_numpy(dtype=int)
    if values.min(initial=0) < 0 or values.max(initial=0) > n_draws:
        raise SpecError(f"ranks must lie in [0, {n_draws}].")
    # bin b holds the ranks r with floor(r·bins/(L+1)) = b; expected share = its width
    which = (values * bins) // n_ranks
    counts = (which[None] == np.arange(bins)[:, None, None]).sum(axis=1)  # (bins, Q)
    edges = -(-np.arange(bins + 1) * n_ranks // bins)  # first rank of each bin (ceil)
    expected = n_sims * np.diff(edges) / n_ranks
    chi2 = ((counts - expected[:, None]) ** 2 / expected[:, None]).sum(axis=0)
    p_value = stats.chi2.sf(chi2, bins - 1)
    p_bonf = np.minimum(1.0, p_value * n_quantities)
    table = pd.DataFrame({
        "quantity": list(ranks.columns),
        "chi2": chi2,
        "df": bins - 1,
        "p_value": p_value,
        "p_bonferroni": p_bonf,
        "reject": p_bonf < alpha,
    })
    table.attrs.update({"bins": bins, "alpha": alpha, "passed": bool(~table["reject"].any())})
    return table


def binomial_band(n_sims: int, bins: int, prob: float = 0.99) -> tuple[float, float]:
    """Central ``prob`` interval of one bin's count under uniform ranks, Bin(n, 1/bins)."""
    tail = (1 - prob) / 2
    dist = stats.binom(n_sims, 1 / bins)
    return float(dist.ppf(tail)), float(dist.ppf(1 - tail))


# ---------------------------------------------------------------------- result
@dataclass
class SBCResult:
    """Ranks of an SBC run and per-simulation fit statistics.

    Attributes
    ----------
    family : str
    priors : dict
        The prior strings the data were simulated from and fitted with.
    ranks : DataFrame of shape (n_sims, Q)
        Rank of each quantity's true value among ``n_draws`` posterior draws.
    n_draws : int
        L; ranks lie in {0, …, L}.
    fits : DataFrame of shape (n_sims, ...)
        Per simulation: ``seed``, ``min_ess`` (smallest bulk ESS of the ranked quantities
        in the kept draws' fit), ``divergences``, ``refits`` (draws doubled because the ESS
        was below L), ``seconds``.
    settings : dict
        Method and sampler settings.
    """

    family: str
    priors: dict[str, str]
    ranks: pd.DataFrame
    n_draws: int
    fits: pd.DataFrame
    settings: dict[str, Any] = field(default_factory=dict)

    def test(self, bins: int | None = None, alpha: float = 0.01) -> pd.DataFrame:
        """:func:`rank_uniformity` of the ranks."""
        return rank_uniformity(self.ranks, self.n_draws, bins=bins, alpha=alpha)

    @property
    def passed(self) -> bool:
        """No quantity rejected at the 1% level after Bonferroni correction."""
        return bool(self.test().attrs["passed"])

    def plot(self, bins: int | None = None, ncols: int = 4):
        """Rank histograms with the 99% binomial band (see :func:`plot_ranks`)."""
        return plot_ranks(self, bins=bins, ncols=ncols)


def plot_ranks(result: SBCResult, bins: int | None = None, ncols: int = 4):
    """Rank histograms, one panel per quantity, with the 99% band of a bin count.

    Parameters
    ----------
    result : SBCResult
    bins : int, optional
        As in :func:`rank_uniformity`.
    ncols : int
        Panels per row.

    Returns
    -------
    matplotlib Figure
    """
    from matplotlib.figure import Figure

    table = result.test(bins=bins)
    bins = table.attrs["bins"]
    n_sims, n_quantities = result.ranks.shape
    low, high = binomial_band(n_sims, bins)
    ncols = min(ncols, n_quantities)
    nrows = -(-n_quantities // ncols)
    fig = Figure(figsize=(2.6 * ncols, 2.0 * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    n_ranks = result.n_draws + 1
    for ax, (name, row) in zip(axes.flat, table.set_index("quantity").iterrows(),
                               strict=False):
        which = result.ranks[name].to_numpy() * bins // n_ranks
        counts = np.bincount(which, minlength=bins)
        ax.axhspan(low, high, color="0.85", zorder=0)
        ax.axhline(n_sims / bins, color="0.5", lw=0.8, zorder=1)
        ax.bar(np.arange(bins), counts, width=0.9, color="C3" if row["reject"] else "C0",
               zorder=2)
        ax.set_title(f"{name}\np = {row['p_value']:.3f}", fontsize=8)
        ax.set_xticks([])
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n_quantities:]:
        ax.set_visible(False)
    fig.suptitle(f"SBC rank histograms: {result.family} ({n_sims} simulations, "
                 f"L = {result.n_draws}; band: 99% binomial)", fontsize=9)
    return fig


# ---------------------------------------------------------------------- quantities
def _theta_tasks(n_tasks: int, tasks: Sequence[int] | None) -> list[int]:
    if tasks is not None:
        return [int(t) for t in tasks]
    return sorted({0, n_tasks // 2, n_tasks - 1})


def _quantities(family: Any, values: Mapping[str, np.ndarray], tasks: Sequence[int],
                pairs: Sequence[tuple[int, int]]) -> dict[str, np.ndarray]:
    """Label-invariant scalar quantities from draws with a leading draw axis, each (n,)."""
    params = family.params
    dims = {**family.hyper_dims(), **family.extra_dims()}
    out: dict[str, np.ndarray] = {}
    for name in family.summary_variables():
        if name not in values:
            continue
        value = np.asarray(values[name])
        site_dims = dims.get(name, [])
        if name == "corr":
            for i in range(len(params)):
                for j in range(i + 1, len(params)):
                    out[f"corr[{params[i]},{params[j]}]"] = value[:, i, j]
            continue
        if not site_dims:
            out[name] = value.reshape(value.shape[0])
            continue
        flat = value.reshape(value.shape[0], -1)
        if site_dims == ["param"]:
            labels = list(params)
        elif site_dims == ["param", "regressor"]:
            labels = [f"{p},{c}" for p in params for c in family.hyper_coords()["regressor"]]
        else:  # per-task or per-edge sites are not ranked element-wise
            continue
        for j, label in enumerate(labels):
            out[f"{name}[{label}]"] = flat[:, j]
    if "edge_weight" in values:
        out["mean_edge_weight"] = np.asarray(values["edge_weight"]).mean(axis=-1)
    if "label" in values:
        label = np.asarray(values["label"])
        for a, b in pairs:
            out[f"same_cluster[{a},{b}]"] = (label[:, a] == label[:, b]).astype(float)
    theta = np.asarray(values["theta"])
    for k in tasks:
        for j, p in enumerate(params):
            out[f"theta[{family.estimates.tasks[k]},{p}]"] = theta[:, k, j]
    return out


def _simulate_truth(family: Any, n_sims: int, seed: int) -> dict[str, np.ndarray]:
    """Prior draws of the family's sites and θ, shape (n_sims, ...) each.

    The family's plain model supplies φ and θ (its prior predictive); the family then
    completes them (``Family.complete_prior_truth``: e.g. the cluster labels, which the
    plain model sums out, and θ given them).
    """
    import jax

    from bayesfuse.inference.draws import prior_draws

    data = {k: np.asarray(v) for k, v in family.data().items()}
    prior, _ = prior_draws(family, data, jax.random.PRNGKey(seed), n_sims)
    truth = {k: np.asarray(v)[0] for k, v in prior.items()}
    return family.complete_prior_truth(truth, np.random.default_rng([seed, 7]))


def _missing_priors(family: Any, priors: Mapping[str, str]) -> list[str]:
    given = {k.split("[")[0] for k in priors}
    return [b.name for b in family.prior_blocks() if b.name not in given]


def _thin_index(total: int, n_keep: int) -> np.ndarray:
    return np.round(np.linspace(0, total - 1, n_keep)).astype(int)


# ---------------------------------------------------------------------- driver
def sbc(
    family: str,
    est_template: TaskEstimates,
    n_sims: int,
    priors: Mapping[str, str],
    *,
    fit_priors: Mapping[str, str] | None = None,
    n_draws: int = 99,
    method: str = "nuts",
    chains: int = 2,
    warmup: int = 400,
    draws: int = 250,
    target_accept: float | None = None,
    chain_method: str = "sequential",
    max_refits: int = 2,
    tasks: Sequence[int] | None = None,
    pairs: Sequence[tuple[int, int]] | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> SBCResult:
    """Simulation-based calibration of one family.

    Parameters
    ----------
    family : str
        A family name (``"exchangeable"``, ``"robust"``, ``"metareg"``, ``"cluster"``,
        ``"gmrf"``, ``"car"``…) or shipped model name.
    est_template : TaskEstimates
        Tasks, covariances Vₖ (and covariates, for ``metareg``) of every simulated data set;
        its estimates are not used.
    n_sims : int
        Number of simulated data sets.
    priors : mapping
        A prior string for every prior block of the family (SBC needs fixed, proper priors).
    fit_priors : mapping, optional
        Priors to *fit* with (default: ``priors``). A mismatch is a negative control: SBC
        should then reject.
    n_draws : int, default 99
        L, posterior draws ranked against per simulation (thinned evenly from the fit).
    method : {"nuts", "exact"}
        ``"exact"``: independent draws from ``exact_hyper_draws`` (scalar exchangeable).
    chains, warmup, draws : int
        NUTS settings per fit (draws per chain). When the smallest bulk ESS of the ranked
        quantities is below L the fit is repeated with twice the draws (at most
        ``max_refits`` times), so that the kept draws are close to independent.
    target_accept : float, optional
        NUTS target acceptance (default: the spec's).
    chain_method : str, default "sequential"
        How chains run; sequential chains reuse their compiled loop across simulations
        (the sampler's cache), which on few cores is much faster than recompiling.
    tasks : sequence of int, optional
        Indices of the tasks whose θ is ranked (default: first, middle, last).
    pairs : sequence of (int, int), optional
        Task pairs whose co-clustering is ranked (``cluster``; default (0, 1), (0, K − 1)).
    seed : int
        Seed of the whole study.
    progress : callable, optional
        ``progress(done, total)`` after each simulation.
    **options
        Family options (e.g. ``max_clusters=5``).

    Returns
    -------
    SBCResult
    """
    import jax

    from bayesfuse.inference.fuse import prepare
    from bayesfuse.inference.nuts import run_numpyro

    check_choice(method, "method", ("nuts", "exact"))
    if not isinstance(n_sims, int) or n_sims < 2:
        raise SpecError(f"n_sims must be an integer >= 2; got {n_sims!r}.")
    if not isinstance(n_draws, int) or n_draws < 1:
        raise SpecError(f"n_draws must be a positive integer; got {n_draws!r}.")
    priors = dict(priors)
    fit_priors = dict(priors if fit_priors is None else fit_priors)
    settings = {"method": method, "chains": chains, "warmup": warmup, "draws": draws,
                "n_draws": n_draws, "seed": seed, "options": dict(options)}
    if method == "nuts" and chains * draws < n_draws:
        raise SpecError(f"chains × draws = {chains * draws} is fewer than n_draws = {n_draws}.")
    _, spec, template = prepare(est_template, family, priors, chains=chains, draws=draws,
                                warmup=warmup, target_accept=target_accept,
                                chain_method=chain_method, **options)
    missing = _missing_priors(template, priors)
    if missing:
        raise SpecError(
            f"SBC needs an explicit prior for every hyperparameter block of '{template.name}'; "
            f"missing: {', '.join(missing)} (data-scaled defaults change with the data)."
        )
    n_tasks = est_template.n_tasks
    theta_tasks = _theta_tasks(n_tasks, tasks)
    cluster_pairs = list(pairs) if pairs is not None else sorted({(0, 1), (0, n_tasks - 1)})
    truth = _simulate_truth(template, n_sims, seed)
    rng = np.random.default_rng([seed, 1])
    noise = np.einsum("kij,nkj->nki", np.linalg.cholesky(est_template.covariances),
                      rng.standard_normal((n_sims,) + est_template.estimates.shape))
    theta_hat = truth["theta"] + noise
    true_q = _quantities(template, truth, theta_tasks, cluster_pairs)
    names = list(true_q)
    fit_seeds = rng.integers(0, 2**31 - 1, size=n_sims)
    exact_theta = None
    if method == "exact":
        def _theta(keys, data, hyper):
            return jax.vmap(lambda k, h: template.draw_theta(k, data, h))(keys, hyper)

        exact_theta = jax.jit(_theta)
    ranks = np.empty((n_sims, len(names)), dtype=int)
    rows: list[dict[str, Any]] = []

    def fit_one(i: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Posterior draws (L per quantity) of simulation i and its fit statistics."""
        est = TaskEstimates(est_template.tasks, theta_hat[i], est_template.covariances,
                            n=est_template.n, covariates=est_template.covariates,
                            params=est_template.params)
        _, _, fam = prepare(est, family, fit_priors, chains=chains, draws=draws,
                            warmup=warmup, target_accept=target_accept,
                            chain_method=chain_method, **options)
        fit_seed = int(fit_seeds[i])
        stats_i = {"seed": fit_seed, "min_ess": float("nan"), "divergences": 0, "refits": 0}
        if method == "exact":
            hyper = fam.exact_hyper_draws(np.random.default_rng(fit_seed), n_draws)
            data = {k: np.asarray(v) for k, v in fam.data().items()}
            keys = jax.random.split(jax.random.PRNGKey(fit_seed), n_draws)
            theta = np.asarray(exact_theta(keys, data, hyper))
            stats_i["min_ess"] = float(n_draws)
            return _quantities(fam, {**hyper, "theta": theta}, theta_tasks, cluster_pairs), \
                stats_i
        config = spec.sampler
        while True:
            out = run_numpyro(fam, config, fit_seed, prior_draws=0)
            n_c, n_s = out.theta.shape[:2]
            flat = {k: np.asarray(v).reshape((n_c * n_s,) + np.shape(v)[2:])
                    for k, v in {**out.hyper, **out.extras, "theta": out.theta}.items()}
            full = _quantities(fam, flat, theta_tasks, cluster_pairs)
            stacked = np.stack([full[n] for n in names], axis=-1).reshape(n_c, n_s, -1)
            stats_i["min_ess"] = _min_ess(stacked)
            stats_i["divergences"] = int(out.sample_stats["diverging"].sum())
            if stats_i["min_ess"] >= n_draws or stats_i["refits"] >= max_refits:
                break
            stats_i["refits"] += 1
            config = replace(config, draws=config.draws * 2)
        index = _thin_index(n_c * n_s, n_draws)
        return {n: v[index] for n, v in full.items()}, stats_i

    for i in range(n_sims):
        start = time.perf_counter()
        kept, stats_i = fit_one(i)
        draws_q = np.stack([kept[n] for n in names], axis=-1)
        truth_q = np.array([true_q[n][i] for n in names])
        ranks[i] = sbc_ranks(truth_q, draws_q, rng)
        rows.append({**stats_i, "seconds": time.perf_counter() - start})
        if progress is not None:
            progress(i + 1, n_sims)
    return SBCResult(family=template.name, priors=priors,
                     ranks=pd.DataFrame(ranks, columns=names), n_draws=n_draws,
                     fits=pd.DataFrame(rows), settings=settings)


def _min_ess(values: np.ndarray) -> float:
    """Smallest bulk ESS over quantities of (chain, draw, Q) values (constant ones skipped)."""
    from bayesfuse.analysis.diagnostics import effective_sample_size, split_chains, z_scale

    varying = values.reshape(-1, values.shape[-1]).std(axis=0) > 0
    if not varying.any():
        return float("inf")
    with np.errstate(divide="ignore", invalid="ignore"):
        ess = effective_sample_size(z_scale(split_chains(values[..., varying])))
    ess = ess[np.isfinite(ess)]
    return float(ess.min()) if ess.size else float("inf")
