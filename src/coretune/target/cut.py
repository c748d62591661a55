"""Where to cut a ranking of clusters (see `coretune.target`): no per-pool threshold."""

from __future__ import annotations

import numpy as np

PI_PROBE_SHARE = 0.5  # auto_cut: the densest clusters holding this share of probes set pi
COVERAGE = 0.9  # coverage_cut: share of the evidence the chosen clusters hold
DROP_BELOW = 1 / 3  # task_step: a task with fewer of its rows inside is dropped whole


def density_order(hits: np.ndarray, sizes: np.ndarray, min_hits: int = 1) -> np.ndarray:
    """Cluster ids with at least `min_hits` hits, densest first (probe share / row share);
    ties: more hits first, then lower id (deterministic)."""
    density = hits / np.maximum(sizes, 1)  # proportional to probe density: same order
    ids = np.flatnonzero((hits >= min_hits) & (sizes > 0))
    return ids[np.lexsort((ids, -hits[ids], -density[ids]))]


def prefix_f1(order: np.ndarray, sizes: np.ndarray, target_rows: np.ndarray,
              total_target: float) -> np.ndarray:
    """F1 of taking the first j+1 clusters of `order` (for each j), given the target rows in
    each cluster and the total: 2 TP / (rows taken + total target rows)."""
    tp = np.cumsum(target_rows[order], dtype=np.float64)
    rows = np.cumsum(sizes[order], dtype=np.float64)
    return 2 * tp / np.maximum(rows + total_target, 1e-12)


def auto_cut(hits: np.ndarray, sizes: np.ndarray, *, min_hits: int = 2,
             pi_share: float = PI_PROBE_SHARE, pi: float | None = None
             ) -> tuple[np.ndarray, dict]:
    """The `auto` probe rule: chosen clusters (bool [k]) and the estimate behind the cut.

    Model: the pool's target rows are spread over clusters like the probes, so cluster c
    holds about pi * n * hits_c / P of them (at most its size), pi the target share of the
    pool. pi comes from the data: the densest clusters holding `pi_share` of the probes are
    taken as pure target (pi = their row share / their probe share), an upper bound under the
    model; overestimating pi only moves the cut towards recall. The density-ranked prefix
    with the best estimated F1 is chosen. No threshold is tuned per pool. A known target
    share `pi` replaces the estimate (measured: the estimate, not the cut, is what fails on
    the NLI-heavy pool; benchmarks/bench_target.py, rule `known_pi`)."""
    k, n, p = len(sizes), float(sizes.sum()), float(hits.sum())
    order = density_order(hits, sizes, min_hits)
    if not len(order):
        return np.zeros(k, bool), {"pi": None, "estimated_f1": None}
    given = {} if pi is None else {"pi_given": True}  # absent when estimated: outputs unchanged
    if pi is None:
        probe_cum = np.cumsum(hits[order]) / p
        top = order[: int(np.searchsorted(probe_cum, pi_share)) + 1]
        pi = min(1.0, (sizes[top].sum() / n) / (hits[top].sum() / p))
    target = np.minimum(sizes, pi * n * hits / p)
    f1 = prefix_f1(order, sizes, target, pi * n)
    j = int(np.argmax(f1))
    chosen = np.zeros(k, bool)
    chosen[order[: j + 1]] = True
    est_tp = float(target[order[: j + 1]].sum())
    return chosen, {"pi": round(float(pi), 6), "estimated_f1": round(float(f1[j]), 4),
                    "estimated_recall": round(float(est_tp / (pi * n)), 4),
                    "estimated_precision": round(float(est_tp / sizes[chosen].sum()), 4), **given}


def coverage_cut(hits: np.ndarray, sizes: np.ndarray, *, min_hits: int = 2,
                 coverage: float = COVERAGE) -> np.ndarray:
    """The `coverage` rule: the densest clusters (`density_order`) until they hold
    `coverage` of all hits (probes, or matching rows). Bool [k]."""
    order = density_order(hits, sizes, min_hits)
    chosen = np.zeros(len(sizes), bool)
    if len(order):
        held = np.cumsum(hits[order]) / max(1, hits.sum())
        chosen[order[: int(np.searchsorted(held, coverage - 1e-12)) + 1]] = True
    return chosen


def task_step(inside: np.ndarray, tasks) -> tuple[np.ndarray, dict[str, dict]]:
    """The `by_task` step. A task's templates land in different clusters; deciding per task
    undoes that split: a task with most of its rows inside (a strict majority) is kept whole,
    one with fewer than `DROP_BELOW` of them inside is dropped whole, and one in between is
    left as the clusters put it; the task with the most rows inside is never dropped. Dropping
    at one half was a cliff: a target task just under half inside lost all its rows (measured:
    benchmarks/bench_target.py, bench_cascade.py); a hand-set cut on a small pool kept 31% of
    its dominant target task's rows and dropping it left 7 rows of 55.
    Returns the new rows (bool [n]) and, per task with rows inside (most rows inside first),
    its rows, the share inside and the step taken (kept, dropped, left)."""
    names, inv = np.unique(np.asarray(tasks, dtype=object).astype(str), return_inverse=True)
    held = np.bincount(inv, weights=inside.astype(np.float64), minlength=len(names))
    rows = np.bincount(inv, minlength=len(names))
    keep, drop = held * 2 > rows, held < DROP_BELOW * rows
    drop[np.argmax(held)] = False  # the task with most target rows is never dropped
    out = (inside | keep[inv]) & ~drop[inv]
    ids = np.flatnonzero(held)
    ids = ids[np.lexsort((names[ids], -held[ids]))]  # ties: name
    record = {str(names[i]): {"rows": int(rows[i]), "inside": round(float(held[i] / rows[i]), 4),
                              "step": "kept" if keep[i] else "dropped" if drop[i] else "left"}
              for i in ids}
    return out, record
