"""Cosine-similarity samplers around a cluster centre (the paper's RQ3 baselines).

topk: the rows most similar to the centre; leastk: the least similar; mixed: half each.
Similarity is cosine between the (normalised) row and the (normalised) centre. Ties are
broken by row index (lower first), so the order is fully determined by the inputs.
"""

from __future__ import annotations

import numpy as np

from coretune.validation import BLOCK_ROWS

SIMILARITY_METHODS = ("topk", "leastk", "mixed")


def centroid_similarity(x: np.ndarray, inv_norm: np.ndarray | None,
                        centroid: np.ndarray | None = None) -> np.ndarray:
    """float32 cosine of each row of `x` to `centroid` (default: the mean of the unit rows).

    Computed in fixed row blocks with single-threaded BLAS (the caller limits threads), so the
    values do not depend on how many threads the machine has. A zero centroid (rows that
    cancel out) gives similarity 0 everywhere, i.e. index order.
    """
    n = x.shape[0]
    if centroid is None:
        centroid = np.zeros(x.shape[1], np.float64)
        for lo in range(0, n, BLOCK_ROWS):
            block = x[lo:lo + BLOCK_ROWS].astype(np.float64)
            if inv_norm is not None:
                block *= inv_norm[lo:lo + BLOCK_ROWS, None]
            centroid += block.sum(axis=0)
        centroid /= n
    centroid = np.asarray(centroid, np.float64)
    norm = float(np.linalg.norm(centroid))
    c = (centroid / norm if norm > 0 else centroid).astype(np.float32)
    sim = np.empty(n, np.float32)
    for lo in range(0, n, BLOCK_ROWS):
        np.dot(x[lo:lo + BLOCK_ROWS], c, out=sim[lo:lo + BLOCK_ROWS])
    if inv_norm is not None:
        sim *= inv_norm
    return sim


def rank_by_similarity(sim: np.ndarray, budget: int, method: str) -> np.ndarray:
    """Positions (into `sim`) of the `budget` rows a similarity sampler picks, in pick order.

    topk: decreasing similarity; leastk: increasing similarity; mixed: the ceil(budget / 2)
    most similar (decreasing) followed by the floor(budget / 2) least similar (increasing)
    among the rest, so no row is taken twice even when many similarities are equal.
    Ties: lower position first.
    """
    if method not in SIMILARITY_METHODS:
        raise ValueError(f"not a similarity method: {method}")
    if not 0 <= budget <= len(sim):
        raise ValueError(f"budget {budget} outside 0..{len(sim)}")
    # Stable sorts keep equal similarities in position order.
    most = np.argsort(-sim, kind="stable")
    least = np.argsort(sim, kind="stable")
    if method == "topk":
        return most[:budget].astype(np.int64)
    if method == "leastk":
        return least[:budget].astype(np.int64)
    top = most[:(budget + 1) // 2]
    taken = np.zeros(len(sim), bool)
    taken[top] = True  # with ties the two orders can share rows: never take one twice
    bottom = least[~taken[least]][:budget - len(top)]
    return np.concatenate((top, bottom)).astype(np.int64)
