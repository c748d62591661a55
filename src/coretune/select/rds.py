"""RDS+ round-robin selection (Ivison et al. 2025, "Large-Scale Data Selection for
Instruction Tuning", arXiv 2503.01807): every target example, in turn, takes its most similar
pool row not yet taken, until the budget is filled. The order is a prefix order: the first b
rows of a selection at budget B are the selection at budget b.

Similarity is the inner product of L2-normalised embeddings (cosine). The paper embeds with
the LM's own hidden states under a position-weighted mean pool; any encoder works here.
"""

from __future__ import annotations

import numpy as np

from coretune.errors import CoretuneError

CHUNK = 256  # queries scored at once: CHUNK x n float32 similarities in memory


def rds_order(x: np.ndarray, queries: np.ndarray, budget: int) -> np.ndarray:
    """Indices into `x` (n x d) in selection order, `budget` of them, no duplicates.

    Query q's candidates are its top-`budget` rows by similarity (ties broken by row index),
    which is always enough: when q picks, fewer than `budget` rows are taken, so one of its
    top `budget` is free."""
    n = len(x)
    if queries.ndim != 2 or len(queries) == 0:
        raise CoretuneError("rds needs at least one target example embedding")
    if queries.shape[1] != x.shape[1]:
        raise CoretuneError(f"rds: target embeddings have {queries.shape[1]} dimensions, "
                            f"the pool's have {x.shape[1]}; embed both with the same encoder")
    if not 0 < budget <= n:
        raise CoretuneError(f"rds: budget {budget} must be between 1 and the {n} pool rows")
    ranked = _top_rows(x, queries, budget)
    taken = np.zeros(n, dtype=bool)
    pointer = np.zeros(len(queries), dtype=np.int64)
    order: list[int] = []
    while len(order) < budget:
        for q in range(len(queries)):
            row = ranked[q, pointer[q]]
            while taken[row]:
                pointer[q] += 1
                row = ranked[q, pointer[q]]
            taken[row] = True
            order.append(int(row))
            if len(order) == budget:
                break
    return np.asarray(order, dtype=np.int64)


def _top_rows(x: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """For each query, its k most similar rows of x, most similar first (stable by index)."""
    out = np.empty((len(queries), k), dtype=np.int64)
    x = np.ascontiguousarray(x, dtype=np.float32)
    for start in range(0, len(queries), CHUNK):
        q = np.ascontiguousarray(queries[start:start + CHUNK], dtype=np.float32)
        sims = q @ x.T
        if k < x.shape[0]:
            part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            kth = np.take_along_axis(sims, part, axis=1).min(axis=1, keepdims=True)
            # rows tied with the k-th value may sit either side of the partition: take the
            # lowest-index ones so the result does not depend on argpartition's internals
            for i in range(len(q)):
                above = np.flatnonzero(sims[i] > kth[i])
                tied = np.flatnonzero(sims[i] == kth[i])[: k - len(above)]
                part[i] = np.concatenate([above, tied])
        else:
            part = np.tile(np.arange(x.shape[0]), (len(q), 1))
        scores = np.take_along_axis(sims, part, axis=1)
        idx = np.lexsort((part, -scores), axis=1)
        out[start:start + len(q)] = np.take_along_axis(part, idx, axis=1)
    return out
