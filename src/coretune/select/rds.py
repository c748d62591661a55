"""RDS+ round-robin selection (Ivison et al. 2025, "Large-Scale Data Selection for
Instruction Tuning", arXiv 2503.01807), the rule of the authors' code (`--selection_method
max`): the target examples take turns; on its turn an example pops the next row of its own
ranking (most similar first) and takes it if it is free. A popped row that another example
took already is spent: that example's turn ends without a row, and its next turn pops the row
after. So round r offers every example's r-th nearest row, and the rounds go on until the
budget is filled. This always ends: after n rounds every example has popped all n rows. The
last round stops at the pick that fills the budget (the authors finish it and keep the first
picks, the same rows). Ties rank by row index, lowest first, as their stable sort does.

The order is a prefix order: the first b rows of a selection at budget B are the selection at
budget b (the budget only says where to stop).

Similarity is the inner product of L2-normalised embeddings (cosine). The paper embeds pool
rows as prompt + response, and its queries as prompt + gold answer, with the LM's hidden
states under a position-weighted mean pool; `select.encoder` picks that encoder for this
method (`smollm2-weighted+response`: rows as prompt + response, joined as training joins
them). coretune's `nli` target examples are evaluation prompts without their labels, so they
are embedded as prompts alone: using the gold answers of the sets a run is scored on would
leak them into the selection. A `probe:FILE.jsonl` whose records have a `target` gives
queries as prompt + target, as in the paper; keep such a file apart from the evaluation sets.
"""

from __future__ import annotations

import numpy as np

from coretune.errors import CoretuneError

CHUNK = 256  # queries scored at once: CHUNK x n float32 similarities in memory


def rds_order(x: np.ndarray, queries: np.ndarray, budget: int) -> np.ndarray:
    """Indices into `x` (n x d) in selection order, `budget` of them, no duplicates.

    Each query's ranking is computed `depth` rows deep (first the budget, doubled whenever
    the rounds reach it): a query can spend more turns than the budget on rows others took."""
    n = len(x)
    if queries.ndim != 2 or len(queries) == 0:
        raise CoretuneError("rds needs at least one target example embedding")
    if queries.shape[1] != x.shape[1]:
        raise CoretuneError(f"rds: target embeddings have {queries.shape[1]} dimensions, "
                            f"the pool's have {x.shape[1]}; embed both with the same encoder")
    if not 0 < budget <= n:
        raise CoretuneError(f"rds: budget {budget} must be between 1 and the {n} pool rows")
    taken = np.zeros(n, dtype=bool)
    picks: list[np.ndarray] = []
    left, depth, ranked = budget, 0, None
    for r in range(n):  # by round n - 1 every row is taken, so budget <= n is filled
        if r == depth:
            depth = min(n, max(budget, 2 * depth))
            ranked = _top_rows(x, queries, depth)
        offered = ranked[:, r]  # each query's r-th row, in query order
        _, first = np.unique(offered, return_index=True)  # a row offered twice: the first
        fresh = offered[np.sort(first)]  # query gets it, the later ones spend their turn
        fresh = fresh[~taken[fresh]][:left]
        taken[fresh] = True
        picks.append(fresh)
        left -= len(fresh)
        if not left:
            break
    return np.concatenate(picks).astype(np.int64)


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
