"""Selection quality you can see without training.

All functions take pool row indices of a selection (`SelectionResult.indices`, in selection
order) and return JSON-able dicts, so they fit in a selection manifest as they are:

- `target_scores`: how much of the selection is the reference family (precision), which of
  its tasks the selection reaches (task recall); needs a label column.
- `coverage_curve`: the k-center objective after the first j selected rows, for a grid of j:
  the largest distance from a candidate row to its nearest selected row.
- `probe_coverage`: distance from each held-out target example to its nearest selected row
  (mean, median, 90th percentile): how well the selection covers the target *task*.
- `answer_balance`: answers of the selected rows (a subset that is 90% "yes" teaches a bias).
- `task_mix`: tasks (and families) of the selected rows.
- `compare_methods`: all of the above for several methods at the same budget, one row each.

Distances are Euclidean between L2-normalised embeddings (sqrt(2 - 2 cos)), the geometry of
k-means and k-center here.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from coretune.errors import CoretuneError


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest_distance(queries: np.ndarray, points: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Euclidean distance from each query row to its nearest point (both L2-normalised)."""
    q, p = _unit(queries), _unit(points)
    if q.shape[1] != p.shape[1]:
        raise CoretuneError(f"embeddings of size {q.shape[1]} against {p.shape[1]}",
                            field="probes")
    best = np.empty(len(q), np.float32)
    for lo in range(0, len(q), chunk):
        best[lo:lo + chunk] = (q[lo:lo + chunk] @ p.T).max(axis=1)
    return np.sqrt(np.clip(2 - 2 * best.astype(np.float64), 0, None)).astype(np.float32)


def _stats(d: np.ndarray) -> dict:
    return {"n": int(len(d)), "mean": round(float(d.mean()), 4),
            "median": round(float(np.median(d)), 4),
            "p90": round(float(np.percentile(d, 90)), 4), "max": round(float(d.max()), 4)}


def probe_coverage(x: np.ndarray, selected: Sequence[int], probes: np.ndarray) -> dict:
    """Distance from each held-out target example (`probes`, embedded with the pool's encoder)
    to its nearest selected row: n, mean, median, p90, max."""
    probes = np.asarray(probes)
    if probes.ndim != 2 or not len(probes):
        raise CoretuneError("no probe embeddings", field="probes")
    if not len(selected):
        raise CoretuneError("empty selection", field="selected")
    return _stats(nearest_distance(probes, np.asarray(x)[np.asarray(selected)]))


def coverage_curve(x: np.ndarray, selected: Sequence[int], candidates: Sequence[int] | None = None,
                   points: int = 20) -> dict:
    """Coverage radius after the first j selected rows, j on a log grid up to all of them:
    max over `candidates` (default: all rows) of the distance to the nearest of those j.
    Returns {"n": [...], "radius": [...], "mean": [...]} (mean distance alongside)."""
    x = np.asarray(x)
    sel = np.asarray(selected, np.int64)
    if not len(sel):
        raise CoretuneError("empty selection", field="selected")
    cand = _unit(x if candidates is None else x[np.asarray(candidates, np.int64)])
    s = _unit(x[sel])
    grid = sorted({int(round(v)) for v in np.geomspace(1, len(sel), min(points, len(sel)))})
    best = np.full(len(cand), -1.0, np.float32)
    out: dict[str, list] = {"n": [], "radius": [], "mean": []}
    done = 0
    for j in grid:
        best = np.maximum(best, (cand @ s[done:j].T).max(axis=1))
        done = j
        d = np.sqrt(np.clip(2 - 2 * best.astype(np.float64), 0, None))
        out["n"].append(j)
        out["radius"].append(round(float(d.max()), 4))
        out["mean"].append(round(float(d.mean()), 4))
    return out


def answer_balance(answers: Sequence[str], top: int = 10) -> dict:
    """Shares of the most common answers, the majority share and the normalised entropy
    (1 = all distinct answers equally often, 0 = one answer)."""
    counts = Counter(a.strip() for a in answers)
    n = sum(counts.values())
    if not n:
        raise CoretuneError("no answers", field="target")
    shares = np.array(sorted(counts.values(), reverse=True), np.float64) / n
    entropy = float(-(shares * np.log(shares)).sum())
    norm = entropy / math.log(len(shares)) if len(shares) > 1 else 0.0
    return {"rows": n, "distinct": len(counts),
            "majority": counts.most_common(1)[0][0],
            "majority_share": round(float(shares[0]), 4), "entropy": round(norm, 4),
            "top": {a: round(c / n, 4) for a, c in counts.most_common(top)}}


def task_mix(tasks: Sequence[str], families: Sequence[str] | None = None, top: int = 10
             ) -> dict:
    """Number of tasks, the share of the largest, the top tasks (and families) by share."""
    counts = Counter(tasks)
    n = sum(counts.values())
    out = {"rows": n, "tasks": len(counts),
           "top_task_share": round(counts.most_common(1)[0][1] / n, 4) if n else 0.0,
           "top": {t: round(c / n, 4) for t, c in counts.most_common(top)}}
    if families is not None:
        fam = Counter(families)
        out["families"] = {f: round(c / n, 4) for f, c in fam.most_common()}
    return out


def target_scores(selected: Sequence[int], reference: np.ndarray, tasks: Sequence[str]) -> dict:
    """Against a boolean reference (e.g. `family == nli`): the share of selected rows that
    are reference rows (precision) and the share of reference tasks with a selected row."""
    ref = np.asarray(reference, bool)
    sel = np.asarray(selected, np.int64)
    tasks = np.asarray(tasks, dtype=object)
    ref_tasks = set(tasks[ref].tolist())
    hit = set(tasks[sel][ref[sel]].tolist())
    return {"precision": round(float(ref[sel].mean()), 4) if len(sel) else 0.0,
            "reference_rows_selected": int(ref[sel].sum()),
            "task_recall": round(len(hit) / len(ref_tasks), 4) if ref_tasks else None}


def selection_quality(pool, x: np.ndarray, selected: Sequence[int], *,
                      candidates: np.ndarray | None = None, probes: np.ndarray | None = None,
                      reference: str | None = "nli") -> dict:
    """Everything above for one selection of `pool` (a `coretune.data.pool.Pool`). `candidates`
    (bool [n] or indices, e.g. `TargetClusters.mask_`) bound the coverage curve; `probes`
    (held-out target examples, embedded) give probe coverage; `reference` names the family
    scored against when the pool has a `family` column."""
    sel = np.asarray(selected, np.int64)
    t = pool.table
    fam = t.column("family").to_pylist() if "family" in t.column_names else None
    tasks = t.column("task").to_pylist()
    take = sel.tolist()
    out = {"rows": len(sel),
           "task_mix": task_mix([tasks[i] for i in take],
                                [fam[i] for i in take] if fam else None),
           "answer_balance": answer_balance(t.column("target").take(sel).to_pylist())}
    cand = None
    if candidates is not None:
        c = np.asarray(candidates)
        cand = np.flatnonzero(c) if c.dtype == bool else c
    out["coverage"] = coverage_curve(x, sel, cand)
    if probes is not None:
        out["probe_coverage"] = probe_coverage(x, sel, probes)
    if fam is not None and reference is not None:
        ref = np.asarray(fam, dtype=object) == reference
        if ref.any():
            out["target"] = {"reference": reference, **target_scores(sel, ref, tasks)}
    return out


def compare_methods(pool, x: np.ndarray, labels: np.ndarray, target_clusters: Sequence[int],
                    budget: int, *, methods: Sequence[str] = ("kcenter", "random", "topk",
                                                               "leastk", "mixed"),
                    seed: int = 0, centroids: np.ndarray | None = None,
                    probes: np.ndarray | None = None, reference: str | None = "nli"
                    ) -> list[dict]:
    """Select `budget` rows of the target clusters with each method (`select_rows`, same
    seed) and score each selection: one flat dict per method (`quality_table` prints them)."""
    from coretune.select.engine import select_rows

    mask = np.isin(labels, np.asarray(target_clusters))
    rows = []
    for m in methods:
        res = select_rows(x, labels, target_clusters, budget, m, seed, centroids, quiet=True)
        q = selection_quality(pool, x, res.indices, candidates=mask, probes=probes,
                              reference=reference)
        rows.append({"method": m, **flatten(q)})
    return rows


def flatten(q: dict) -> dict:
    """The headline numbers of `selection_quality` as one flat row (a whole-pool selection,
    made without embeddings, has no coverage or probe numbers)."""
    row = {"rows": q["rows"]}
    if "coverage" in q:
        row.update(radius=q["coverage"]["radius"][-1], mean_distance=q["coverage"]["mean"][-1])
    row.update(tasks=q["task_mix"]["tasks"], top_task_share=q["task_mix"]["top_task_share"],
               majority_answer_share=q["answer_balance"]["majority_share"],
               answer_entropy=q["answer_balance"]["entropy"])
    if "probe_coverage" in q:
        pc = q["probe_coverage"]
        row.update(probe_mean=pc["mean"], probe_median=pc["median"], probe_p90=pc["p90"])
    if "target" in q:
        row.update(target_precision=q["target"]["precision"],
                   target_task_recall=q["target"]["task_recall"])
    if "contamination" in q:
        row.update(contaminated=q["contamination"]["selected_rows"]["any"])
    return row


def quality_table(rows: list[dict]) -> str:
    """Markdown table of `compare_methods` rows (columns in the first row's order)."""
    cols = list(rows[0])
    fmt = [lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt[0](r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"
