"""How the cluster family's posterior partition is summarised.

From the per-draw membership probabilities and sampled labels of a fit: the Rao-Blackwellised
co-clustering matrix (:func:`coclustering`), the posterior of the number of occupied
clusters, and a point clustering that minimises the posterior expected Binder loss
(:func:`point_clustering`, :func:`binder_loss`), numbered by decreasing cluster size and
tabulated with the probabilities that support it (:func:`summarise_partitions`). All are
invariant to relabelling the components.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "binder_loss",
    "canonical_labels",
    "coclustering",
    "membership_draws",
    "point_clustering",
    "posterior_coclustering",
    "summarise_partitions",
]

#: sampled partitions scored as candidate point clusterings (evenly thinned)
MAX_CANDIDATES = 500


def membership_draws(posterior: Any) -> np.ndarray:
    """Membership probabilities of a fit, shape (chain, draw, K, C), float64.

    Parameters
    ----------
    posterior : xarray.Dataset
        The posterior group of a cluster fit (variable ``membership``).
    """
    membership = posterior["membership"]
    return membership.transpose("chain", "draw", "task", "cluster").values.astype(float)


def posterior_coclustering(posterior: Any) -> np.ndarray:
    """Co-clustering matrix P(zᵢ = zⱼ | data) of a fit, shape (K, K).

    :func:`coclustering` of the membership draws of all chains together.

    Parameters
    ----------
    posterior : xarray.Dataset
        The posterior group of a cluster fit (variable ``membership``).
    """
    membership = membership_draws(posterior)
    return coclustering(membership.reshape((-1,) + membership.shape[2:]))


def summarise_partitions(posterior: Any, tasks: Sequence[str], sim: np.ndarray,
                         max_groups: int) -> dict[str, pd.DataFrame]:
    """The posterior of the number of occupied clusters and a point clustering.

    Parameters
    ----------
    posterior : xarray.Dataset
        The posterior group of a cluster fit (variables ``n_clusters`` and ``label``).
    tasks : sequence of str
        Task names, in the order of the ``task`` dim.
    sim : array of shape (K, K)
        Co-clustering matrix (:func:`posterior_coclustering`).
    max_groups : int
        The number of components (the most clusters any draw can occupy).

    Returns
    -------
    dict
        ``"n_clusters"``: DataFrame with columns ``n_clusters, probability`` (the
        posterior pmf, from the sampled labels). ``"clustering"``: one row per task with
        ``task, cluster`` (1..m, largest cluster first), ``size``, ``p_with_mates``
        (mean co-clustering probability with its cluster-mates; for a task alone in its
        cluster, the posterior probability that no other task shares its label) and
        ``p_max_outside`` (largest co-clustering probability with a task of another
        cluster). The partition minimises the posterior expected Binder loss among the
        sampled partitions and the average-linkage cuts of 1 − co-clustering
        (:func:`point_clustering`); its expected loss is in ``attrs["binder_loss"]``.
    """
    counts = posterior["n_clusters"].values.reshape(-1)
    values, freq = np.unique(counts, return_counts=True)
    pmf = pd.DataFrame({"n_clusters": values.astype(int), "probability": freq / counts.size})
    labels = posterior["label"].transpose("chain", "draw", "task").values
    labels = labels.reshape(-1, labels.shape[-1])
    partition, loss = point_clustering(sim, labels, max_groups=max_groups)
    table = _clustering_table(tasks, partition, sim, labels)
    table.attrs["binder_loss"] = loss
    return {"n_clusters": pmf, "clustering": table}


def coclustering(membership: np.ndarray) -> np.ndarray:
    """Rao-Blackwellised co-clustering probabilities from membership draws.

    Given φ the labels are independent across tasks, so P(zᵢ = zⱼ | φ) = Σ_c r_ic r_jc; the
    posterior probability is its mean over draws. Invariant to relabelling the components.

    Parameters
    ----------
    membership : array of shape (S, K, C)
        r_kc per draw.

    Returns
    -------
    array of shape (K, K)
        Symmetric, in [0, 1], ones on the diagonal.
    """
    n_draws, n_tasks, _ = membership.shape
    flat = np.moveaxis(membership, 1, 0).reshape(n_tasks, -1)  # (K, S·C)
    sim = np.clip(flat @ flat.T / n_draws, 0.0, 1.0)
    np.fill_diagonal(sim, 1.0)
    return sim


def canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Relabel each partition 0..m−1 in order of first appearance, shape (N, K).

    Two label vectors describe the same partition exactly when their canonical forms are
    equal.
    """
    labels = np.asarray(labels)
    n_tasks = labels.shape[1]
    values = np.arange(labels.max() + 1)
    hit = labels[:, :, None] == values[None, None]  # (N, K, L)
    first = np.where(hit, np.arange(n_tasks)[None, :, None], n_tasks).min(axis=1)  # (N, L)
    rank = np.argsort(np.argsort(first, axis=1, kind="stable"), axis=1, kind="stable")
    return np.take_along_axis(rank, labels, axis=1)


def binder_loss(partitions: np.ndarray, sim: np.ndarray) -> np.ndarray:
    """Posterior expected Binder loss (equal costs) of partitions, shape (N,).

    E[loss(c)] = Σ_{i<j} |1(cᵢ = cⱼ) − P(zᵢ = zⱼ | data)|.

    Parameters
    ----------
    partitions : int array of shape (N, K)
        Labels 0..m−1 (e.g. from :func:`canonical_labels`).
    sim : array of shape (K, K)
        Co-clustering matrix.
    """
    partitions = np.asarray(partitions)
    n_labels = int(partitions.max()) + 1
    onehot = (partitions[:, :, None] == np.arange(n_labels)).astype(float)  # (N, K, m)
    weight = 1.0 - 2.0 * sim
    np.fill_diagonal(weight, 0.0)
    together = np.einsum("nkc,nkc->n", onehot, np.matmul(weight, onehot))
    upper = np.triu_indices(sim.shape[0], k=1)
    return 0.5 * together + sim[upper].sum()


def point_clustering(sim: np.ndarray, sampled: np.ndarray | None = None,
                     max_groups: int | None = None,
                     max_candidates: int = MAX_CANDIDATES) -> tuple[np.ndarray, float]:
    """A point partition: the minimiser of the expected Binder loss among candidates.

    Candidates are the sampled partitions (thinned to ``max_candidates``, duplicates
    removed) and the cuts of the average-linkage tree of 1 − ``sim`` into 1..``max_groups``
    groups.

    Parameters
    ----------
    sim : array of shape (K, K)
        Co-clustering matrix.
    sampled : int array of shape (S, K), optional
        Sampled labels.
    max_groups : int, optional
        Largest number of groups cut from the tree (default K; a fit passes its number of
        components, the most clusters any draw can occupy).

    Returns
    -------
    labels : int array of shape (K,)
        Cluster 1..m, numbered by decreasing size (ties: first task first).
    loss : float
        Its expected Binder loss.
    """
    from scipy.cluster.hierarchy import cut_tree, linkage
    from scipy.spatial.distance import squareform

    n_tasks = sim.shape[0]
    candidates = [np.zeros((1, n_tasks), dtype=int)]
    if n_tasks > 1:
        distance = squareform(np.clip(1.0 - sim, 0.0, None), checks=False)
        tree = linkage(distance, method="average")
        n_cuts = n_tasks if max_groups is None else min(n_tasks, max_groups)
        candidates.append(cut_tree(tree, n_clusters=np.arange(1, n_cuts + 1)).T)
    if sampled is not None and len(sampled):
        step = max(1, int(np.ceil(len(sampled) / max_candidates)))
        candidates.append(np.asarray(sampled)[::step])
    partitions = np.unique(canonical_labels(np.concatenate(candidates)), axis=0)
    losses = binder_loss(partitions, sim)
    best = int(np.argmin(losses))
    return _number_by_size(partitions[best]), float(losses[best])


def _number_by_size(labels: np.ndarray) -> np.ndarray:
    """Relabel 1..m by decreasing cluster size (ties: the cluster of the earlier task)."""
    labels = canonical_labels(labels[None])[0]
    sizes = np.bincount(labels)
    order = np.lexsort((np.arange(sizes.size), -sizes))  # by size, then first appearance
    new = np.empty_like(order)
    new[order] = np.arange(1, sizes.size + 1)
    return new[labels]


def _clustering_table(tasks: Sequence[str], labels: np.ndarray, sim: np.ndarray,
                      sampled: np.ndarray) -> pd.DataFrame:
    """Per-task point clustering with the probabilities that support it."""
    same = labels[:, None] == labels[None]
    np.fill_diagonal(same, False)
    sizes = np.bincount(labels)[labels]
    with np.errstate(invalid="ignore", divide="ignore"):
        with_mates = np.where(same, sim, 0.0).sum(axis=1) / same.sum(axis=1)
    # a singleton: the posterior probability that no other task shares its label
    n_draws, n_labels = sampled.shape[0], int(sampled.max()) + 1
    offset = sampled + n_labels * np.arange(n_draws)[:, None]
    counts = np.bincount(offset.ravel(), minlength=n_draws * n_labels)
    alone = (counts[offset] == 1).mean(axis=0)  # (K,)
    with_mates = np.where(sizes > 1, with_mates, alone)
    outside = np.where(labels[:, None] != labels[None], sim, 0.0).max(axis=1)
    return pd.DataFrame({
        "task": list(tasks),
        "cluster": labels.astype(int),
        "size": sizes.astype(int),
        "p_with_mates": with_mates,
        "p_max_outside": outside,
    })
