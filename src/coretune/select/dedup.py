"""Near-duplicate removal on the embeddings a selection already has.

A row is dropped when its cosine similarity to an earlier *kept* row is at least
`threshold`; the first row of every near-duplicate group is kept, so the result depends only
on the row order and the threshold (deterministic). Pairs come from faiss' exact range search
(inner product of L2-normalised rows) in query blocks on one thread: the same pairs on every
run and machine thread count, and memory bounded by the pairs found, not n^2.

    >>> d = dedup(x, 0.95)       # x: float32 [n, d]
    >>> d.kept, d.removed, d.examples(pool.prompts)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from coretune.errors import CoretuneError

TOLERANCE = 1e-6  # float32 cosines of identical unit vectors can be 1 - 6e-8


@dataclass(frozen=True)
class DedupResult:
    """`keep` (bool [n]); `duplicate_of` (int64 [n]: the kept row a dropped row is a near
    duplicate of, -1 for kept rows); `similarity` (float32 [n], its cosine, NaN if kept)."""

    threshold: float
    keep: np.ndarray
    duplicate_of: np.ndarray
    similarity: np.ndarray

    @property
    def kept(self) -> np.ndarray:
        """Indices of the kept rows, ascending."""
        return np.flatnonzero(self.keep)

    @property
    def removed(self) -> int:
        return int((~self.keep).sum())

    def examples(self, texts: Sequence[str] | None = None, n: int = 5) -> list[dict]:
        """The first `n` dropped rows with the kept row they duplicate (and texts if given)."""
        out = []
        for i in np.flatnonzero(~self.keep)[:n].tolist():
            j = int(self.duplicate_of[i])
            ex = {"row": i, "duplicate_of": j, "cosine": round(float(self.similarity[i]), 4)}
            if texts is not None:
                ex.update(text=texts[i], kept_text=texts[j])
            out.append(ex)
        return out

    def summary(self, texts: Sequence[str] | None = None) -> dict:
        """JSON-able: threshold, rows, kept, removed, examples."""
        return {"threshold": self.threshold, "rows": len(self.keep),
                "kept": int(self.keep.sum()), "removed": self.removed,
                "examples": self.examples(texts)}


def check_threshold(threshold: float) -> float:
    """A cosine threshold in (0, 1], else a one-line CoretuneError."""
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise CoretuneError(f"dedup threshold must be a number in (0, 1], got {threshold!r}",
                            field="dedup") from None
    if not 0 < t <= 1:
        raise CoretuneError(f"dedup threshold must be in (0, 1], got {threshold!r}",
                            field="dedup")
    return t


def similar_pairs(x: np.ndarray, threshold: float, block: int = 4096
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i, j), i < j, with cosine(x_i, x_j) >= threshold: (i, j, cosine), sorted by
    j then i. Exact (faiss IndexFlatIP range search, one thread)."""
    import faiss

    from coretune.cluster import faiss_threads

    x = np.ascontiguousarray(x, np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    radius = threshold - TOLERANCE
    ii, jj, ss = [], [], []
    with faiss_threads(1):
        for lo in range(0, len(x), block):
            lims, sims, idx = index.range_search(x[lo:lo + block], radius)
            lims = lims.astype(np.int64)
            q = lo + np.repeat(np.arange(len(lims) - 1), np.diff(lims))
            earlier = idx < q  # each pair once, from its later row
            ii.append(idx[earlier])
            jj.append(q[earlier])
            ss.append(sims[earlier])
    i, j, s = (np.concatenate(v) for v in (ii, jj, ss))
    order = np.lexsort((i, j))
    return i[order].astype(np.int64), j[order].astype(np.int64), s[order].astype(np.float32)


def dedup(x: np.ndarray, threshold: float, *, block: int = 4096) -> DedupResult:
    """Drop rows within cosine `threshold` of an earlier kept row (see the module doc)."""
    t = check_threshold(threshold)
    x = np.asarray(x)
    if x.ndim != 2 or not len(x):
        raise CoretuneError(f"embeddings must be a non-empty 2-d array, got shape {x.shape}",
                            field="embeddings")
    n = len(x)
    i, j, s = similar_pairs(x, t, block)
    keep = np.ones(n, bool)
    dup = np.full(n, -1, np.int64)
    sim = np.full(n, np.nan, np.float32)
    starts = np.searchsorted(j, np.arange(n + 1))
    for row in np.unique(j).tolist():  # ascending: earlier rows are decided first
        lo, hi = starts[row], starts[row + 1]
        kept = keep[i[lo:hi]]
        if kept.any():  # first kept earlier neighbour (smallest index)
            first = lo + int(np.argmax(kept))
            keep[row], dup[row], sim[row] = False, i[first], s[first]
    return DedupResult(t, keep, dup, sim)
