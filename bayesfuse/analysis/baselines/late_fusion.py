"""Late fusion by an ARMUL-style adaptive aggregator (Duan & Wang 2023; Bhattacharya, Chen &
Liang): tasks close to a centre are fused with it exactly, distant tasks move towards it by a
bounded amount; with ``clusters > 1`` several centres.

:func:`late_fusion` is the public entry; the solver (per-task proximal steps, the convex
centre update, k-means-style clustering from several starts) is the rest of this file.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from bayesfuse._validation import check_probability
from bayesfuse.analysis.baselines.frame import (
    BaselineFrame,
    baseline_frame,
    check_estimates,
    critical_value,
    long_index,
)
from bayesfuse.data.estimates import TaskEstimates
from bayesfuse.errors import ConvergenceWarning, SpecError

__all__ = ["late_fusion"]


class _Problem:
    """The late-fusion problem in standardized coordinates, with per-task eigen-decompositions.

    y : (K, p) standardized θ̂ₖ;  e, Q : eigenvalues (K, p) and eigenvectors (K, p, p) of the
    standardized Vₖ;  lam : (K,) penalty weights λₖ.
    """

    def __init__(self, y: np.ndarray, cov: np.ndarray, lam: np.ndarray) -> None:
        self.y = y
        self.cov = cov
        self.e, self.Q = np.linalg.eigh(cov)
        self.lam = lam
        self.lam_e = lam[:, None] * self.e

    def with_y(self, y: np.ndarray) -> _Problem:
        clone = object.__new__(_Problem)
        clone.__dict__.update(self.__dict__)
        clone.y = y
        return clone

    def prox(self, gamma: np.ndarray, rows: np.ndarray | slice = slice(None)) -> dict[str, Any]:
        """Minimise over θₖ for fixed centres γ (shape (p,) or (n, p)) for the tasks ``rows``.

        In the eigenbasis of Vₖ, with c = Qₖᵀ(θ̂ₖ − γ): θₖ − γ = Qₖ (r c/(r + λₖe)), where the
        radius r = ‖θₖ − γ‖ is 0 (fused) if ‖Vₖ⁻¹(θ̂ₖ − γ)‖ = ‖c/e‖ ≤ λₖ and otherwise solves
        the secular equation Σᵢ cᵢ²/(r + λₖeᵢ)² = 1.
        """
        y, e, Q, lam, lam_e = self.y[rows], self.e[rows], self.Q[rows], self.lam[rows], \
            self.lam_e[rows]
        b = y - gamma
        c = np.einsum("kji,kj->ki", Q, b)
        fused = np.sum((c / e) ** 2, axis=1) <= lam**2
        r = np.zeros(len(b))
        free = ~fused
        if free.any():
            if b.shape[1] == 1:
                r[free] = np.abs(c[free, 0]) - lam_e[free, 0]
            else:
                r[free] = _secular(c[free], lam_e[free], np.linalg.norm(b[free], axis=1))
            r = np.maximum(r, 0.0)
        denom = r[:, None] + lam_e
        value = 0.5 * np.sum(c**2 * lam[:, None] * lam_e / denom**2, axis=1) + lam * r
        theta = np.where(
            fused[:, None], gamma, gamma + np.einsum("kij,kj->ki", Q, r[:, None] * c / denom)
        )
        return {"c": c, "r": r, "denom": denom, "fused": fused, "value": value, "theta": theta,
                "lam": lam, "Q": Q}

    def center(
        self, rows: np.ndarray, gamma: np.ndarray, tol: float, max_iter: int
    ) -> tuple[np.ndarray, bool]:
        """Minimise G(γ) = Σ_{k ∈ rows} min_θₖ Fₖ(θₖ, γ): a smooth convex function of γ.

        Newton steps (exact Hessian of the Moreau-type envelope) when the Hessian is
        invertible, otherwise the iteratively reweighted step γ ← (Σ Mₖ)⁻¹ Σ Mₖ θ̂ₖ with
        Mₖ = (Vₖ + (rₖ/λₖ)I)⁻¹ (a preconditioned gradient step); both with Armijo
        backtracking, so G decreases monotonically.
        """
        n_params = self.y.shape[1]
        if n_params == 1:
            return self._center_scalar(rows), True
        gamma = np.asarray(gamma, dtype=float).copy()
        state = self.prox(gamma, rows)
        objective = state["value"].sum()
        for _ in range(max_iter):
            c, r, denom, lam, Q = state["c"], state["r"], state["denom"], state["lam"], state["Q"]
            a = lam[:, None] / denom  # (n, p): weights in the eigenbasis
            grad = -np.einsum("kij,kj->i", Q, a * c)
            irls = np.einsum("kij,kj,klj->il", Q, a, Q)
            free = r > 0
            hess = irls.copy()
            if free.any():
                w = c[free] / denom[free] ** 2
                t = np.sum(c[free] ** 2 / denom[free] ** 3, axis=1)
                qw = np.einsum("kij,kj->ki", Q[free], w)
                hess -= np.einsum("k,ki,kj->ij", lam[free] / t, qw, qw)
            directions = []
            eig = np.linalg.eigvalsh(0.5 * (hess + hess.T))
            if eig[0] > 1e-10 * max(eig[-1], np.finfo(float).tiny):
                directions.append(np.linalg.solve(hess, -grad))
            directions.append(np.linalg.solve(irls, -grad))
            moved = None
            for direction in directions:
                slope = float(grad @ direction)
                step = 1.0
                while step > 1e-12:
                    trial_state = self.prox(gamma + step * direction, rows)
                    value = trial_state["value"].sum()
                    if value <= objective + 1e-4 * step * slope:
                        moved = step * direction
                        break
                    step *= 0.5
                if moved is not None:
                    break
            if moved is None:  # no descent possible at machine precision
                return gamma, True
            gamma = gamma + moved
            state, objective = trial_state, value
            if np.max(np.abs(moved)) <= tol * max(1.0, float(np.max(np.abs(gamma)))):
                return gamma, True
        return gamma, False

    def _center_scalar(self, rows: np.ndarray) -> np.ndarray:
        """Exact minimiser of G for p = 1 (a Huber-type location problem).

        G'(γ) = −Σₖ clip((θ̂ₖ − γ)/vₖ, −λₖ, λₖ) is increasing and piecewise linear with
        breakpoints θ̂ₖ ± λₖvₖ: bisect over the sorted breakpoints for the sign change, then
        solve the linear piece. (Iterative schemes crawl here when few tasks are fused.)
        """
        y = self.y[rows, 0]
        v = self.e[rows, 0]
        lam = self.lam[rows]
        reach = lam * v
        points = np.sort(np.concatenate([y - reach, y + reach]))

        def pull(gamma: float) -> float:  # −G'(γ), decreasing in γ
            return float(np.sum(np.clip((y - gamma) / v, -lam, lam)))

        lo, hi = 0, len(points) - 1  # pull(points[lo]) ≥ 0 ≥ pull(points[hi])
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if pull(points[mid]) >= 0.0:
                lo = mid
            else:
                hi = mid
        left, right = points[lo], points[hi]
        value = pull(left)
        inside = np.abs(y - 0.5 * (left + right)) < reach  # fused on this piece
        slope = float(np.sum(1.0 / v[inside]))
        gamma = left + value / slope if slope > 0 else left
        return np.array([min(max(gamma, left), right)])


def _secular(c: np.ndarray, lam_e: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Root r ∈ (0, upper) of Σᵢ cᵢ²/(r + λeᵢ)² = 1, row-wise (rows with ‖c/(λe)‖ > 1).

    Newton on φ(r) = 1/‖c/(r + λe)‖ − 1, which is increasing and concave in r (Moré &
    Sorensen 1983), so Newton iterates started left of the root increase monotonically to
    it. The start max(0, ‖c‖ − λ·max eᵢ) is such a lower bound (exact when Vₖ ∝ I).
    """
    c2 = c**2
    r = np.minimum(np.maximum(0.0, np.sqrt(c2.sum(axis=1)) - lam_e.max(axis=1)), upper)
    for _ in range(100):
        denom = r[:, None] + lam_e
        terms = c2 / denom**2
        norm2 = terms.sum(axis=1)
        norm = np.sqrt(norm2)
        slope = (terms / denom).sum(axis=1) / (norm2 * norm)
        new = np.clip(r - (1.0 / norm - 1.0) / slope, r, upper)
        done = np.all(new - r <= 4 * np.finfo(float).eps * np.maximum(new, 1.0))
        r = new
        if done:
            break
    return r


def _initial_centers(y: np.ndarray, m: int, n_random: int, rng: np.random.Generator) -> list:
    """Deterministic starts (quantile splits along each coordinate and the first principal
    axis, farthest-point) followed by ``n_random`` k-means++ starts."""
    n_tasks, n_params = y.shape
    starts: list[np.ndarray] = []
    centred = y - np.median(y, axis=0)
    axes = [np.eye(n_params)[j] for j in range(n_params)]
    if n_params > 1:
        axes.insert(0, np.linalg.svd(centred, full_matrices=False)[2][0])
    for axis in axes:
        order = np.argsort(centred @ axis, kind="stable")
        groups = np.array_split(order, m)
        starts.append(np.stack([np.median(y[g], axis=0) for g in groups]))
    # farthest point from the coordinate-wise median
    chosen = [int(np.argmin(np.sum(centred**2, axis=1)))]
    dist = np.sum((y - y[chosen[0]]) ** 2, axis=1)
    for _ in range(m - 1):
        chosen.append(int(np.argmax(dist)))
        dist = np.minimum(dist, np.sum((y - y[chosen[-1]]) ** 2, axis=1))
    starts.append(y[chosen].copy())
    for _ in range(n_random):  # k-means++
        chosen = [int(rng.integers(n_tasks))]
        dist = np.sum((y - y[chosen[0]]) ** 2, axis=1)
        for _ in range(m - 1):
            total = dist.sum()
            pick = int(rng.choice(n_tasks, p=dist / total)) if total > 0 else int(
                rng.integers(n_tasks))
            chosen.append(pick)
            dist = np.minimum(dist, np.sum((y - y[pick]) ** 2, axis=1))
        starts.append(y[chosen].copy())
    return starts


def _fit_clusters(
    problem: _Problem, m: int, starts: list, tol: float, max_iter: int
) -> dict[str, Any]:
    """k-means-style alternation between assignments and centres, best of several starts."""
    n_tasks = problem.y.shape[0]
    best: dict[str, Any] | None = None
    all_rows = np.arange(n_tasks)
    converged_all = True
    for start in starts:
        centers = np.array(start, dtype=float)
        values = np.stack([problem.prox(g)["value"] for g in centers], axis=1)
        assign = np.argmin(values, axis=1)
        for _ in range(200):
            for cluster in range(m):  # re-seed empty clusters at the worst-fitted task
                if not np.any(assign == cluster):
                    counts = np.bincount(assign, minlength=m)
                    current = values[all_rows, assign]
                    current = np.where(counts[assign] > 1, current, -np.inf)
                    worst = int(np.argmax(current))
                    assign[worst] = cluster
                    centers[cluster] = problem.y[worst]
            for cluster in range(m):
                rows = np.flatnonzero(assign == cluster)
                centers[cluster], ok = problem.center(rows, centers[cluster], tol, max_iter)
                converged_all &= ok
            values = np.stack([problem.prox(g)["value"] for g in centers], axis=1)
            current = values[all_rows, assign]
            new_assign = np.where(values.min(axis=1) < current - 1e-12 * (1.0 + current),
                                  np.argmin(values, axis=1), assign)
            if np.array_equal(new_assign, assign):
                break
            assign = new_assign
        objective = float(values[all_rows, assign].sum())
        if best is None or objective < best["objective"] - 1e-10 * (1.0 + abs(objective)):
            best = {"centers": centers.copy(), "assign": assign.copy(), "objective": objective}
    assert best is not None
    # relabel clusters by first appearance so that labels are deterministic
    order = list(dict.fromkeys(best["assign"].tolist()))
    order += [c for c in range(m) if c not in order]
    relabel = np.empty(m, dtype=int)
    relabel[order] = np.arange(m)
    best["assign"] = relabel[best["assign"]]
    best["centers"] = best["centers"][order]
    state = problem.prox(best["centers"][best["assign"]])
    best["theta"] = state["theta"]
    best["fused"] = state["fused"]
    best["converged"] = converged_all
    return best


def late_fusion(
    est: TaskEstimates,
    clusters: int = 1,
    C: float | None = None,
    *,
    fuse_prob: float = 0.9,
    standardize: bool = True,
    n_init: int = 8,
    n_boot: int = 0,
    ci_prob: float = 0.95,
    seed: int = 0,
    tol: float = 1e-10,
    max_iter: int = 1000,
) -> BaselineFrame:
    """ARMUL-style adaptive late fusion: fuse a task with its centre unless the data disagree.

    Solves (Duan & Wang 2023, "Adaptive and robust multi-task learning"; Bhattacharya, Chen &
    Liang, late-fusion multi-task learning, on the stage-1 summaries)

        minimise over θ₁..θ_K, γ₁..γ_m, labels zₖ:
            Σₖ ½(θₖ − θ̂ₖ)ᵀVₖ⁻¹(θₖ − θ̂ₖ) + λₖ‖S⁻¹(θₖ − γ_{zₖ})‖₂

    where S = diag(s₁..s_p) puts the parameters on a common scale (sⱼ = median over tasks of
    the standard errors of parameter j; S = I with ``standardize=False``) and

        λₖ = C·√p · (tr(Ṽₖ)/p)^(-1/2),    Ṽₖ = S⁻¹VₖS⁻¹.

    **Why this λₖ.** ARMUL penalises the averaged loss of task k with C·√(p/nₖ); with the
    summed log-likelihood of θ̂ₖ ~ N(θₖ, Vₖ) and Vₖ ≈ Σ/nₖ this is a penalty weight
    proportional to √nₖ ∝ (tr Vₖ/p)^(-1/2), which is what is used, so nₖ (often not shared)
    is not needed. The objective is then invariant to the units of each parameter (rescaling
    θⱼ and Vₖ consistently rescales the solution) and to translations.

    **Choosing C from summaries alone.** The subgradient condition for θₖ says θₖ = γ exactly
    iff ‖Ṽₖ⁻¹(θ̂ₖ − γ)‖ ≤ λₖ (standardized coordinates). When Ṽₖ = σₖ²I this reads
    ‖θ̂ₖ − γ‖/σₖ ≤ C√p, i.e. a task is fused iff its standardized distance to the centre is at
    most C√p. The default C = √(χ²_{p, fuse_prob}/p) therefore fuses a task whose true θₖ
    equals the centre with probability ≈ ``fuse_prob`` (0.9), ignoring the estimation of γ:
    for p = 1, C = 1.645 and task k is fused iff abs(θ̂ₖ − γ) ≤ 1.645·seₖ. For non-spherical
    Vₖ this calibration is approximate. A task that is not fused moves towards its centre by
    exactly Vₖ·(λₖ S⁻¹uₖ) (uₖ the unit direction), so by at most λₖ‖Vₖ S⁻¹‖ -- for p = 1,
    exactly C·seₖ: the aggregation is robust to outlying tasks.

    **Algorithm.** For fixed γ each θₖ has a closed form (p = 1: soft-thresholding towards
    γ; p > 1: θₖ − γ = (I + (λₖ/r)Ṽₖ)⁻¹(θ̂ₖ − γ) with the radius r from a 1-D secular
    equation, solved by monotone Newton). Minimising θ out leaves a smooth convex
    (Huber-like) function of γ. For p = 1 its minimiser is found exactly (its derivative is
    piecewise linear); for p > 1 by damped Newton / iteratively reweighted steps (whose fixed
    point is the GLS γ = (Σ Mₖ)⁻¹ Σ Mₖ θ̂ₖ with Mₖ = (Ṽₖ + (rₖ/λₖ)I)⁻¹, a random-effects-like
    weighting) to abs(Δγ) ≤ ``tol``. This avoids the stall of naive alternation between θ and
    γ, where the fused tasks (θₖ = γ) pin γ where it is.
    With ``clusters = m > 1`` tasks are assigned to the centre that minimises their
    profiled objective and centres are refitted, k-means style, from several starts
    (quantile splits along each coordinate and the first principal axis, farthest-point,
    plus ``n_init`` seeded k-means++ starts); the best objective is kept. Empty clusters are
    re-seeded at the worst-fitted task. For m = 1 the problem is convex and the solution θ is
    unique (γ may not be, e.g. when no task is fused).

    Parameters
    ----------
    est : TaskEstimates
        K tasks, p parameters, covariances Vₖ (the full Vₖ is used).
    clusters : int, default 1
        Number of centres m (1 ≤ m ≤ K).
    C : float, optional
        Penalty constant (> 0). Default √(χ²_{p, fuse_prob}/p). Larger C fuses more
        (C → ∞: the fixed-effect estimate within each cluster); smaller C fuses less
        (C → 0: no pooling).
    fuse_prob : float, default 0.9
        Sets the default C (ignored when C is given).
    standardize : bool, default True
        Put the parameters on a common scale S before applying the Euclidean penalty.
    n_init : int, default 8
        Number of random (seeded) k-means++ starts added to the deterministic ones when
        ``clusters > 1``.
    n_boot : int, default 0
        Standard errors are **not available** analytically for this estimator (it is
        non-smooth: tasks are fused with probability > 0). With ``n_boot > 0`` a parametric
        bootstrap is run: θ̂ₖ* ~ N(θ̂ₖ, Vₖ), refit with the same λₖ (starting from the fitted
        centres and the deterministic starts), and ``se`` is the standard deviation of θₖ*
        over replicates; ``ci_low, ci_high`` are estimate ± z·se. These
        ignore the shrinkage bias and have no coverage guarantee.
    ci_prob : float, default 0.95
        Coverage of the bootstrap intervals.
    seed : int, default 0
        Seed of the random starts and of the bootstrap.
    tol : float, default 1e-10
        Convergence tolerance on the centres (relative, standardized units; p > 1).
    max_iter : int, default 1000
        Iteration limit of each centre update (p > 1).

    Returns
    -------
    BaselineFrame
        K·p rows (task-major), columns ``task, param, estimate`` (the fused θₖⱼ), ``center``
        (γ of the task's cluster), ``cluster`` (int, 0..m−1, numbered by first appearance),
        ``fused`` (bool: θₖ equals its centre exactly), and with ``n_boot > 0`` also ``se,
        ci_low, ci_high``.
        ``result.centers`` (also ``attrs["centers"]``): DataFrame of the centres, one row per
        cluster, one column per parameter. ``attrs`` also holds ``C``, ``penalty`` (λₖ per
        task, standardized scale), ``scale`` (sⱼ per parameter) and ``objective``.

    Examples
    --------
    >>> est = TaskEstimates(list("abcde"), [0.0, 0.1, -0.1, 0.05, 3.0], [0.01] * 5)
    >>> fit = late_fusion(est)
    >>> fit["fused"].tolist()
    [True, True, True, True, False]
    """
    est = check_estimates(est)
    n_tasks, n_params = est.estimates.shape
    if isinstance(clusters, bool) or not isinstance(clusters, int | np.integer):
        raise SpecError(f"clusters must be a whole number; got {clusters!r}.")
    m = int(clusters)
    if not 1 <= m <= n_tasks:
        raise SpecError(f"clusters must be between 1 and the number of tasks ({n_tasks}); got {m}.")
    if C is None:
        fuse_prob = check_probability(fuse_prob, "fuse_prob", 0.9)
        C = float(np.sqrt(stats.chi2.ppf(fuse_prob, n_params) / n_params))
    try:
        C = float(C)
    except (TypeError, ValueError):
        raise SpecError(f"C must be a positive number; got {C!r}.") from None
    if not (np.isfinite(C) and C > 0):
        raise SpecError(f"C must be a positive finite number; got {C!r}.")
    n_boot = int(n_boot)
    if n_boot < 0 or n_boot == 1:
        raise SpecError(f"n_boot must be 0 (no bootstrap) or at least 2; got {n_boot}.")
    crit = critical_value(ci_prob) if n_boot else None

    cov = est.covariances
    scale = (
        np.sqrt(np.median(np.diagonal(cov, axis1=1, axis2=2), axis=0))
        if standardize
        else np.ones(n_params)
    )
    y = est.estimates / scale
    cov_std = cov / np.outer(scale, scale)
    sigma = np.sqrt(np.trace(cov_std, axis1=1, axis2=2) / n_params)
    lam = C * np.sqrt(n_params) / sigma
    problem = _Problem(y, cov_std, lam)
    rng = np.random.default_rng(seed)

    def solve(prob: _Problem, warm: np.ndarray | None = None) -> dict[str, Any]:
        if m == 1:
            start = np.median(prob.y, axis=0) if warm is None else warm[0]
            center, ok = prob.center(np.arange(n_tasks), start, tol, max_iter)
            state = prob.prox(center)
            return {"centers": center[None, :], "assign": np.zeros(n_tasks, dtype=int),
                    "objective": float(state["value"].sum()), "theta": state["theta"],
                    "fused": state["fused"], "converged": ok}
        if warm is None:
            starts = _initial_centers(prob.y, m, int(n_init), rng)
        else:  # bootstrap refits: the fitted centres plus the deterministic starts
            starts = [warm, *_initial_centers(prob.y, m, 0, rng)]
        return _fit_clusters(prob, m, starts, tol, max_iter)

    fit = solve(problem)
    if not fit["converged"]:
        warnings.warn(
            f"late_fusion: a centre update did not converge in {max_iter} iterations.",
            ConvergenceWarning,
            stacklevel=2,
        )
    theta = fit["theta"] * scale
    centers = fit["centers"] * scale
    assign = fit["assign"]
    tasks, params = long_index(est)
    columns: dict[str, Any] = {
        "task": tasks,
        "param": params,
        "estimate": theta.reshape(-1),
        "center": centers[assign].reshape(-1),
        "cluster": np.repeat(assign, n_params),
        "fused": np.repeat(fit["fused"], n_params),
    }
    if n_boot:
        chol = np.linalg.cholesky(cov_std)
        draws = np.empty((n_boot, n_tasks, n_params))
        for b in range(n_boot):
            noise = np.einsum("kij,kj->ki", chol, rng.standard_normal((n_tasks, n_params)))
            draws[b] = solve(problem.with_y(y + noise), fit["centers"])["theta"] * scale
        se = draws.std(axis=0, ddof=1).reshape(-1)
        columns["se"] = se
        columns["ci_low"] = columns["estimate"] - crit * se
        columns["ci_high"] = columns["estimate"] + crit * se
    centers_frame = pd.DataFrame(
        centers, index=pd.RangeIndex(m, name="cluster"), columns=list(est.params)
    )
    frame = baseline_frame(
        columns,
        {
            "baseline": "late_fusion",
            "C": C,
            "clusters": m,
            "penalty": lam.tolist(),
            "scale": scale.tolist(),
            "objective": fit["objective"],
            "n_boot": n_boot,
            "centers": centers_frame,
        },
    )
    frame.centers = centers_frame
    return frame
