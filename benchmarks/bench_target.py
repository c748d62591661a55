"""The target rule on three pools with different target shares: automatic cut vs the old
default and the best cut in hindsight (issue 11).

Pools (`target_pools.py`): the NLI-heavy sample pool, the full pool with RTE/CB through
their first two templates (~5% NLI) and that pool with NLI thinned to <= 1%; seeded
subsamples of --rows rows each, MiniLM at 128 tokens, k=100 spherical k-means, three cluster
seeds, 1000 NLI probes (the shipped evaluation sets through their templates, no labels).

Per pool and seed, against `family == nli` and against the RTE+CB rows alone:
- `auto`: the default rule (density-ranked clusters, cut at the best estimated F1);
- `coverage`: the recall rule (densest clusters until they hold 90% of the probes);
- `known_pi`: the auto cut given the pool's true NLI share instead of its estimate (labels
  used; it tells whether the estimate or the cut model fails);
- `auto+task`: the auto rule with `by_task` (the task step: a task with most of its rows in
  the chosen clusters is kept whole, one with under a third dropped, one in between left as it
  is); `best+task`: the best prefix
  of the density ranking in hindsight with the same task step (labels used),
  `f1_gap_task` = best+task F1 - auto+task F1;
- `old`: the previous default, probe density >= 0.25;
- `best`: the best prefix of the same density ranking in hindsight (labels used), and
  `f1_gap` = best F1 - auto F1; `oracle`: clusters ranked by their true NLI share (an upper
  bound no probe ranking can beat; context only);
- `auto+votes`: the auto rule on 11 clusterings (`target.votes`; seeds 11*seed ...
  11*seed + 10, disjoint between the three seeds), a row kept when most keep it;
  `f1_gap_votes` = best F1 - its F1 (negative: better than any prefix cut of one clustering
  in hindsight); `auto+votes+task`: the same with `by_task`, the default of configs and
  `coretune select`; `f1_gap_default` = best F1 - its F1.

Stability: the same rules on the rows plus isotropic noise of norm 0.001 (cosine ~0.9999996,
as the control of bench_encoder.py), same seeds: the change in NLI recall and precision is
the rule's own instability, with one clustering, with the votes and with the default.

    python benchmarks/bench_target.py [--rows 10000]
writes benchmarks/results/bench_target.json, benchmarks/results/bench_target.md and the
table in docs/target.md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import target_pools  # noqa: E402

from coretune.cluster import KMeansClusters  # noqa: E402
from coretune.io import write_json, write_text  # noqa: E402
from coretune.target import (  # noqa: E402
    VOTES,
    TargetClusters,
    TargetSpec,
    density_order,
    metadata_mask,
    prefix_f1,
)
from coretune.target.cut import auto_cut, task_step  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "bench_target.json"
SEEDS = (0, 1, 2)
K = 100
RULES = ("auto", "auto+votes", "known_pi", "coverage", "old", "best", "oracle", "auto+task",
         "best+task", "auto+votes+task")
NOISE = 1e-3
STABILITY = (("auto", 1, False), ("auto+votes", VOTES, False), ("auto+votes+task", VOTES, True))


def scores(chosen: np.ndarray, labels: np.ndarray, ref: np.ndarray) -> dict:
    """`chosen`: bool [k] clusters, or bool [n] rows."""
    inside = chosen if len(chosen) == len(labels) else chosen[labels]
    tp = float((inside & ref).sum())
    r = tp / max(1, ref.sum())
    p = tp / max(1, inside.sum())
    return {"recall": round(r, 4), "precision": round(p, 4),
            "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0,
            "clusters": len(np.unique(labels[inside])), "rows": int(inside.sum())}


def hindsight_task(order, labels, tasks, ref) -> np.ndarray:
    """Best prefix of `order` by F1 against `ref` after the task step (labels used)."""
    best, best_f1 = None, -1.0
    for j in range(len(order)):
        chosen = np.zeros(K, bool)
        chosen[order[: j + 1]] = True
        rows = task_step(chosen[labels], tasks)[0]
        f1 = 2 * (rows & ref).sum() / max(1, rows.sum() + ref.sum())
        if f1 > best_f1:
            best, best_f1 = rows, f1
    return best


def hindsight(order, sizes, labels, ref, k) -> np.ndarray:
    """Best prefix of `order` by F1 against `ref` (labels used)."""
    rows = np.bincount(labels[ref], minlength=k)
    f1 = prefix_f1(order, sizes, rows, float(ref.sum()))
    chosen = np.zeros(k, bool)
    chosen[order[: int(np.argmax(f1)) + 1]] = True
    return chosen


def one(pool, x, embedder, seed: int) -> dict:
    km = KMeansClusters(K, seed=seed).fit(x)
    labels, k = km.labels_, km.k
    sizes = np.bincount(labels, minlength=k)
    nli = np.asarray(pool.column("family"), dtype=object) == "nli"
    rtecb = metadata_mask(pool, TargetSpec("tasks", ("rte", "cb")))
    auto = TargetClusters("nli", seed=0, votes=1, by_task=False).fit(km, pool, embedder)
    cov = TargetClusters("nli", rule="coverage", seed=0, votes=1,
                         by_task=False).fit(km, pool, embedder)
    old = TargetClusters("nli", rule="density", seed=0, votes=1,
                         by_task=False).fit(km, pool, embedder)
    hits = np.asarray(auto.table_.column("probe_hits").to_pylist())
    known, _ = auto_cut(hits, sizes, pi=float(nli.mean()))
    best = hindsight(density_order(hits, sizes, 1), sizes, labels, nli, k)
    share = np.bincount(labels[nli], minlength=k) / np.maximum(sizes, 1)
    oracle = hindsight(np.lexsort((np.arange(k), -share)), sizes, labels, nli, k)
    tasks = np.asarray(pool.column("task"), dtype=object)
    by_task = TargetClusters("nli", seed=0, votes=1, by_task=True).fit(km, pool, embedder)
    best_task = hindsight_task(density_order(hits, sizes, 1), labels, tasks, nli)
    out = {"seed": seed, "cut": auto.cut_, "tasks": len(by_task.tasks_)}
    for name, chosen in (("auto", auto.chosen_), ("known_pi", known), ("coverage", cov.chosen_),
                         ("old", old.chosen_), ("best", best), ("oracle", oracle),
                         ("auto+task", by_task.mask_), ("best+task", best_task)):
        out[name] = {"nli": scores(chosen, labels, nli), "rte_cb": scores(chosen, labels, rtecb)}
    for name, by_task in (("auto+votes", False), ("auto+votes+task", True)):
        t, vlabels = voted(pool, x, embedder, seed, by_task=by_task)
        out[name] = {"nli": scores(t.mask_, vlabels, nli),
                     "rte_cb": scores(t.mask_, vlabels, rtecb)}
        out.setdefault("votes", t.summary()["votes"])
    out["f1_gap"] = round(out["best"]["nli"]["f1"] - out["auto"]["nli"]["f1"], 4)
    out["f1_gap_votes"] = round(out["best"]["nli"]["f1"] - out["auto+votes"]["nli"]["f1"], 4)
    out["f1_gap_task"] = round(out["best+task"]["nli"]["f1"] - out["auto+task"]["nli"]["f1"], 4)
    out["f1_gap_default"] = round(out["best"]["nli"]["f1"]
                                  - out["auto+votes+task"]["nli"]["f1"], 4)
    return out


def voted(pool, x, embedder, seed: int, votes: int = VOTES, by_task: bool = False
          ) -> tuple[TargetClusters, np.ndarray]:
    """The default `nli` rule with votes over `votes` clusterings, seeds VOTES * seed + i, and
    the first clustering's labels."""
    km = KMeansClusters(K, seed=VOTES * seed).fit(x)
    t = TargetClusters("nli", seed=0, votes=votes, by_task=by_task).fit(km, pool, embedder, x)
    return t, km.labels_


def stability(pool, x, embedder) -> list[dict]:
    """Per seed: NLI recall/precision change when the rows get noise of norm NOISE, with one
    clustering (seed VOTES * seed), with the votes (the same seeds) and with the default
    (votes and the task step)."""
    rng = np.random.default_rng(0)
    noisy = x + rng.normal(0, NOISE / np.sqrt(x.shape[1]), x.shape).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    nli = np.asarray(pool.column("family"), dtype=object) == "nli"
    out = []
    for seed in SEEDS:
        row = {"seed": seed}
        for name, votes, by_task in STABILITY:
            a, b = (voted(pool, z, embedder, seed, votes, by_task)[0].mask_ for z in (x, noisy))
            sa, sb = (scores(m, np.zeros(len(m), np.int64), nli) for m in (a, b))
            row[name] = {"recall_change": round(sb["recall"] - sa["recall"], 4),
                         "precision_change": round(sb["precision"] - sa["precision"], 4),
                         "rows_changed": int((a != b).sum())}
        out.append(row)
    return out


def method_table(pool, x, embedder, budget: int) -> list[dict]:
    """Selection quality of each method at the same budget inside the auto rule's clusters
    (cluster seed 0), probe coverage from held-out NLI examples (probe seed 1, minus any
    prompt the rule's probes used)."""
    from coretune.select.quality import compare_methods
    from coretune.target import nli_probe_prompts

    km = KMeansClusters(K, seed=0).fit(x)
    auto = TargetClusters("nli", seed=0, votes=1, by_task=False).fit(km, pool, embedder)
    used = set(nli_probe_prompts(1000, 0)[0])
    held = [p for p in nli_probe_prompts(1000, 1)[0] if p not in used]
    return compare_methods(pool, x, km.labels_, auto.clusters_, budget, seed=0,
                           centroids=km.centroids_, probes=embedder.embed(held))


def markdown(res: dict) -> str:
    g = res["goals"]
    lines = [f"**The default of configs and `coretune select` (`auto+votes+task`: 11 votes and "
             f"the task step)**: f1_gap <= 0.05 on every pool and seed: "
             f"**{g['f1_gap_default_ok']}** (max {g['max_f1_gap_default']:.3f}; negative: above "
             f"the hindsight-best cluster cut); RTE+CB recall >= 0.95: "
             f"**{g['rte_cb_recall_default_ok']}** (min {g['min_rte_cb_recall_votes_task']:.3f});"
             f" F1 never below the old default: **{g['never_worse_default_ok']}** (min "
             f"{g['min_f1_votes_task_vs_old']:+.3f}). Against the hindsight-best cut *with* the "
             f"task step (`best+task`) its F1 is at worst "
             f"{g['min_f1_votes_task_vs_best_task']:+.3f}.", "",
             "| pool | rows | NLI share | seed | rule | clusters | NLI recall | NLI precision "
             "| NLI F1 | RTE+CB recall | RTE+CB precision | f1_gap |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, p in res["pools"].items():
        for r in p["runs"]:
            for rule in RULES:
                a, b = r[rule]["nli"], r[rule]["rte_cb"]
                gap = (f"{r['best']['nli']['f1'] - a['f1']:.3f}"
                       if rule in ("auto", "known_pi", "auto+votes", "auto+votes+task") else
                       f"{r['f1_gap_task']:.3f} (task)" if rule == "auto+task" else "")
                lines.append(f"| {name} | {p['rows']} | {p['nli_share']:.1%} | {r['seed']} | "
                             f"{rule} | {a['clusters']} | {a['recall']:.3f} | "
                             f"{a['precision']:.3f} | {a['f1']:.3f} | {b['recall']:.3f} | "
                             f"{b['precision']:.3f} | {gap} |")
    lines += ["", f"The rule alone (`auto`, one clustering, no task step; the Python class's "
              f"defaults): f1_gap <= 0.05 on every pool and seed: **{g['f1_gap_ok']}** (max "
              f"{g['max_f1_gap']:.3f}); RTE+CB recall >= 0.95: **{g['rte_cb_recall_ok']}** (min "
              f"{g['min_rte_cb_recall']:.3f}); auto F1 never below the old default: "
              f"**{g['never_worse_ok']}** (min auto - old {g['min_f1_vs_old']:+.3f}).",
              "", f"The hindsight-best cut itself reaches RTE+CB recall only "
              f"{g['min_rte_cb_recall_best']:.3f} at worst: on these pools no cluster cut has "
              "both. The `coverage` rule reaches RTE+CB recall "
              f"{g['min_rte_cb_recall_coverage']:.3f} at worst, F1 gap up to "
              f"{g['max_f1_gap_coverage']:.3f}, F1 vs old at worst "
              f"{g['min_f1_coverage_vs_old']:+.3f}. Given the true NLI share in place of "
              f"its estimate (`known_pi`), the same cut is at most "
              f"{g['max_f1_gap_known_pi']:.3f} F1 below the hindsight cut.",
              "", "With the task step (`by_task`, rows of a task kept or dropped together): "
              f"RTE+CB recall >= {g['min_rte_cb_recall_task']:.3f} on every pool and seed; "
              f"F1 vs the old default at worst {g['min_f1_task_vs_old']:+.3f}; vs the "
              f"hindsight-best cluster cut (without the task step) at worst "
              f"{g['min_f1_task_vs_best']:+.3f}; vs the hindsight-best cut with the task step, "
              f"F1 gap up to {g['max_f1_gap_task']:.3f}.",
              "", f"With votes alone (`auto+votes`): "
              f"F1 gap to the hindsight-best cut of one clustering up to "
              f"{g['max_f1_gap_votes']:.3f} (goal 0.05: **{g['f1_gap_votes_ok']}**); F1 vs "
              f"the single-clustering auto cut at worst {g['min_f1_votes_vs_auto']:+.3f}; vs the "
              f"old default at worst {g['min_f1_votes_vs_old']:+.3f}; RTE+CB recall at worst "
              f"{g['min_rte_cb_recall_votes']:.3f}. With votes and the task step "
              f"(`auto+votes+task`): RTE+CB recall at worst {g['min_rte_cb_recall_votes_task']:.3f}"
              f"; F1 vs the old default at worst {g['min_f1_votes_task_vs_old']:+.3f}; vs the "
              f"hindsight-best cluster cut at worst {g['min_f1_votes_task_vs_best']:+.3f}; vs "
              f"the task step on one clustering (`auto+task`) at worst "
              f"{g['min_f1_votes_task_vs_task']:+.3f}.",
              "", f"Stability: NLI recall and precision change when every row gets noise of "
              f"norm {NOISE:g} (cosine ~0.9999996), same seeds:", "",
              "| pool | seed | rule | recall change | precision change | rows changed |",
              "|---|---:|---|---:|---:|---:|"]
    for name, p in res["pools"].items():
        for r in p["stability"]:
            for rule, *_ in STABILITY:
                c = r[rule]
                lines.append(f"| {name} | {r['seed']} | {rule} | {c['recall_change']:+.3f} | "
                             f"{c['precision_change']:+.3f} | {c['rows_changed']} |")
    lines += ["", f"Largest change, one clustering: recall {g['max_noise_recall_auto']:.3f}, "
              f"precision {g['max_noise_precision_auto']:.3f}; with votes: recall "
              f"{g['max_noise_recall_votes']:.3f}, precision "
              f"{g['max_noise_precision_votes']:.3f}; the default (votes and the task step): "
              f"recall {g['max_noise_recall_default']:.3f}, precision "
              f"{g['max_noise_precision_default']:.3f}."]
    from coretune.select.quality import quality_table

    for name, p in res["pools"].items():
        lines += ["", f"Selection quality at the same budget ({p['budget']} rows) inside the "
                  f"auto rule's clusters, pool `{name}`, seed 0 (no training; distances "
                  "Euclidean between unit vectors; probe_* from held-out NLI examples):", "",
                  quality_table(p["methods"]).rstrip()]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10000)
    args = ap.parse_args()
    import torch

    from coretune.embed import Embedder

    torch.set_num_threads(1)
    start = time.perf_counter()
    pools = target_pools.build_pools(args.rows)
    embedder = Embedder(target_pools.encoder(), quiet=True)
    res = {"rows_requested": args.rows, "k": K, "seeds": list(SEEDS), "encoder": "minilm",
           "max_tokens": target_pools.MAX_TOKENS, "probes": 1000,
           "python": platform.python_version(), "pools": {}}
    for name in ("full2", "low", "sample"):
        pool = pools[name]
        x = embedder.embed(pool.prompts)
        nli = np.asarray(pool.column("family"), dtype=object) == "nli"
        runs = [one(pool, x, embedder, s) for s in SEEDS]
        budget = max(50, round(0.005 * len(pool)))
        res["pools"][name] = {"rows": len(pool), "nli_share": round(float(nli.mean()), 5),
                              "nli_rows": int(nli.sum()), "runs": runs, "budget": budget,
                              "methods": method_table(pool, x, embedder, budget),
                              "stability": stability(pool, x, embedder)}
        print(name, [(r["auto+votes+task"]["nli"], r["f1_gap_default"]) for r in runs],
              flush=True)
    runs = [r for p in res["pools"].values() for r in p["runs"]]
    res["goals"] = {
        "max_f1_gap": max(r["f1_gap"] for r in runs),
        "max_f1_gap_known_pi": round(max(r["best"]["nli"]["f1"] - r["known_pi"]["nli"]["f1"]
                                         for r in runs), 4),
        "min_rte_cb_recall": min(r["auto"]["rte_cb"]["recall"] for r in runs),
        "min_rte_cb_recall_coverage": min(r["coverage"]["rte_cb"]["recall"] for r in runs),
        "min_rte_cb_recall_best": min(r["best"]["rte_cb"]["recall"] for r in runs),
        "max_f1_gap_coverage": round(max(r["best"]["nli"]["f1"] - r["coverage"]["nli"]["f1"]
                                         for r in runs), 4),
        "min_f1_coverage_vs_old": round(min(r["coverage"]["nli"]["f1"] - r["old"]["nli"]["f1"]
                                            for r in runs), 4),
        "min_f1_vs_old": round(min(r["auto"]["nli"]["f1"] - r["old"]["nli"]["f1"]
                                   for r in runs), 4),
        "max_f1_gap_task": max(r["f1_gap_task"] for r in runs),
        "min_rte_cb_recall_task": min(r["auto+task"]["rte_cb"]["recall"] for r in runs),
        "min_f1_task_vs_old": round(min(r["auto+task"]["nli"]["f1"] - r["old"]["nli"]["f1"]
                                        for r in runs), 4),
        "min_f1_task_vs_best": round(min(r["auto+task"]["nli"]["f1"] - r["best"]["nli"]["f1"]
                                         for r in runs), 4)}
    stab = [r for p in res["pools"].values() for r in p["stability"]]
    res["goals"].update({
        "max_f1_gap_votes": max(r["f1_gap_votes"] for r in runs),
        "min_f1_votes_vs_auto": round(min(r["auto+votes"]["nli"]["f1"] - r["auto"]["nli"]["f1"]
                                          for r in runs), 4),
        "min_f1_votes_vs_old": round(min(r["auto+votes"]["nli"]["f1"] - r["old"]["nli"]["f1"]
                                         for r in runs), 4),
        "min_rte_cb_recall_votes": min(r["auto+votes"]["rte_cb"]["recall"] for r in runs),
        "min_rte_cb_recall_votes_task": min(r["auto+votes+task"]["rte_cb"]["recall"]
                                            for r in runs),
        **{f"min_f1_votes_task_vs_{k}": round(min(
            r["auto+votes+task"]["nli"]["f1"] - r[rule]["nli"]["f1"] for r in runs), 4)
           for k, rule in (("old", "old"), ("best", "best"), ("task", "auto+task"),
                           ("best_task", "best+task"))},
        "max_f1_gap_default": max(r["f1_gap_default"] for r in runs),
        **{f"max_noise_{m}_{k}": max(abs(r[rule][f"{m}_change"]) for r in stab)
           for m in ("recall", "precision") for k, rule in (
               ("auto", "auto"), ("votes", "auto+votes"), ("default", "auto+votes+task"))}})
    g = res["goals"]
    g.update(f1_gap_default_ok=bool(g["max_f1_gap_default"] <= 0.05),
             rte_cb_recall_default_ok=bool(g["min_rte_cb_recall_votes_task"] >= 0.95),
             never_worse_default_ok=bool(g["min_f1_votes_task_vs_old"] >= 0),
             f1_gap_votes_ok=bool(g["max_f1_gap_votes"] <= 0.05),
             f1_gap_ok=bool(g["max_f1_gap"] <= 0.05),
             rte_cb_recall_ok=bool(g["min_rte_cb_recall"] >= 0.95),
             never_worse_ok=bool(g["min_f1_vs_old"] >= 0))
    res["seconds"] = round(time.perf_counter() - start, 1)
    write_json(OUT, res)
    md = markdown(res)
    write_text(OUT.with_suffix(".md"), md)
    doc = ROOT / "docs" / "target.md"
    text = doc.read_text() if doc.is_file() else ""
    head = text.split("<!-- bench_target -->")[0] if text else "# Target rule\n\n"
    write_text(doc, head + "<!-- bench_target -->\n" + md)
    print(md)


if __name__ == "__main__":
    main()
