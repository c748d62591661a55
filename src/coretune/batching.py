"""Batches by a token budget: runs of length-sorted rows that hold at most N tokens each.

Training passes, encoder batches and scoring batches all sort their rows longest first; with a
token budget they cut that order into consecutive runs instead of runs of a fixed count, so a
batch of short rows takes many and one of long rows few, and each holds about the same work.
"""

from __future__ import annotations

from collections.abc import Sequence


def budget_batches(lengths: Sequence[int], budget: int, packed: bool = False) -> list[range]:
    """Consecutive runs of positions of `lengths` (longest first, as the callers sort them),
    each within `budget` tokens: padded (the default) a run costs its rows x its longest row,
    packed (rows concatenated) the sum of its rows. A row longer than `budget` is a run of its
    own. Every position is in exactly one run, in order."""
    if budget < 1:
        raise ValueError("token budget must be at least 1")
    runs, start, width, total = [], 0, 0, 0
    for i, n in enumerate(lengths):
        w, t = max(width, n), total + n
        if i > start and (t if packed else (i - start + 1) * w) > budget:
            runs.append(range(start, i))
            start, w, t = i, n, n
        width, total = w, t
    if len(lengths) > start:
        runs.append(range(start, len(lengths)))
    return runs
