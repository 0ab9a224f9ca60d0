"""Task orderings and graph layouts for the similarity plots: pure array functions.

Every function takes plain NumPy arrays and returns plain NumPy arrays; validation of user
input happens in the figures that call them (:mod:`bayesfuse.reporting.figures.similarity`,
:mod:`bayesfuse.reporting.figures.task_graph`).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "hierarchical_order",
    "cluster_order",
    "circle_layout",
    "spectral_layout",
    "edge_list",
]


def _distance(sim: np.ndarray) -> np.ndarray:
    """A dissimilarity from any similarity: ``max(S) − S``, zero diagonal, shape (K, K).

    Works for correlations (−1..1), co-clustering probabilities (0..1) and nonnegative
    edge weights alike; only the ordering it induces matters.
    """
    sim = 0.5 * (sim + sim.T)
    dist = np.clip(np.nanmax(sim) - sim, 0.0, None)
    np.fill_diagonal(dist, 0.0)
    return np.nan_to_num(dist, nan=float(np.nanmax(dist)) if np.isfinite(dist).any() else 0.0)


def hierarchical_order(sim: np.ndarray) -> np.ndarray:
    """Leaf order of the average-linkage tree of a similarity matrix.

    Parameters
    ----------
    sim : array of shape (K, K)
        Symmetric similarity (larger = more alike).

    Returns
    -------
    int array of shape (K,)
        A permutation of 0..K−1 that puts similar tasks next to each other (optimal leaf
        ordering of the tree).
    """
    from scipy.cluster.hierarchy import leaves_list, linkage, optimal_leaf_ordering
    from scipy.spatial.distance import squareform

    n_tasks = sim.shape[0]
    if n_tasks < 3:
        return np.arange(n_tasks)
    condensed = squareform(_distance(np.asarray(sim, dtype=float)), checks=False)
    tree = linkage(condensed, method="average")
    tree = optimal_leaf_ordering(tree, condensed)
    return leaves_list(tree).astype(int)


def cluster_order(labels: np.ndarray, sim: np.ndarray) -> np.ndarray:
    """Order tasks cluster by cluster (labels ascending), similar tasks adjacent within.

    Parameters
    ----------
    labels : int array of shape (K,)
        A point clustering (e.g. the ``cluster`` column of ``fit.structure()["clustering"]``).
    sim : array of shape (K, K)

    Returns
    -------
    int array of shape (K,)
        A permutation in which each cluster's tasks are contiguous.
    """
    labels = np.asarray(labels)
    within = hierarchical_order(sim)
    position = np.empty_like(within)
    position[within] = np.arange(within.size)
    return np.lexsort((position, labels)).astype(int)


def circle_layout(n_nodes: int) -> np.ndarray:
    """Nodes evenly spaced on the unit circle, the first at the top, clockwise.

    Returns
    -------
    array of shape (n_nodes, 2)
    """
    angle = np.pi / 2 - 2 * np.pi * np.arange(n_nodes) / max(n_nodes, 1)
    return np.column_stack([np.cos(angle), np.sin(angle)])


def spectral_layout(weights: np.ndarray) -> np.ndarray | None:
    """Spectral embedding: the two eigenvectors of the graph Laplacian after the constant one.

    Parameters
    ----------
    weights : array of shape (K, K)
        Symmetric nonnegative edge weights (the diagonal is ignored).

    Returns
    -------
    array of shape (K, 2), scaled to [−1, 1], or None
        None when the embedding is degenerate (fewer than 3 nodes, a disconnected graph,
        or all nodes on one point); the caller falls back to a circle.
    """
    n_nodes = weights.shape[0]
    if n_nodes < 3:
        return None
    adjacency = np.array(weights, dtype=float)
    np.fill_diagonal(adjacency, 0.0)
    degree = adjacency.sum(axis=1)
    if np.any(degree <= 0):
        return None
    laplacian = np.diag(degree) - adjacency
    values, vectors = np.linalg.eigh(laplacian)
    if values[1] <= 1e-10 * max(values[-1], 1e-300):  # disconnected: λ₂ = 0
        return None
    coords = vectors[:, 1:3]
    span = np.ptp(coords, axis=0)
    if np.any(span <= 1e-12):
        return None
    coords = (coords - coords.min(axis=0)) / span
    return 2.0 * coords - 1.0


def edge_list(weights: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Edges (i < j) whose weight exceeds ``threshold``.

    Returns
    -------
    pairs : int array of shape (E, 2)
    values : array of shape (E,)
        Their weights, in the order of ``pairs`` (row-major over the upper triangle).
    """
    rows, cols = np.triu_indices(weights.shape[0], k=1)
    values = weights[rows, cols]
    keep = values > threshold
    return np.column_stack([rows[keep], cols[keep]]), values[keep]
