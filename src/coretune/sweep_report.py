"""What a finished sweep found: sweep.json, sweep.md and sweep.csv.

Per point (method x budget, seeds pooled): accuracy per eval set and on average with its 95%
interval (coretune.table), beside each eval set's majority-class and chance accuracy; Δ vs the
untuned model and Δ vs random at the same budget, each paired on the examples and seeds with a
sign-flip p-value (coretune.compare); the knee of each method's curve; the point's selection
quality numbers (the select stage's manifest) and how well each ranks the points by accuracy
(Spearman), i.e. whether the knee could be picked without training; the design (epoch-based
or compute-matched), each point's optimizer steps and epochs over its rows, and its cost in
seconds, selecting and training (the stage manifests).
Imports: compare, config, table, layout, evaluate, io, train; never the CLI.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from coretune.compare import knee, majority_baselines, paired_markdown, paired_rows
from coretune.config import RunConfig, SweepConfig
from coretune.evaluate import per_example_accuracy
from coretune.io import read_json, write_json, write_text
from coretune.layout import SweepLayout
from coretune.manifest import MANIFEST
from coretune.report import _plain_table, plot_sweep, write_report
from coretune.select.budget import ALL
from coretune.table import HEADERS, build_rows
from coretune.train.data import rows_trained

UNTUNED = "untuned"
# The shared stages a point's selection pays for, counted in full for every point (one user
# running that one selection pays all of them); the pool stage is left out: every point,
# `all` too, needs the pool whether or not it selects.
SELECTION_STAGES = ("embed", "dedup", "cluster", "target")


@dataclass(frozen=True)
class Point:
    """One point of a sweep (coretune.sweep): a method at a budget with one seed."""

    method: str  # `all` for the budget that takes every target row
    budget: str
    seed: int

    @property
    def label(self) -> str:
        return ALL if self.budget == ALL else f"{self.method} {self.budget}"


def write_sweep_report(layout: SweepLayout, cfg: RunConfig, spec: SweepConfig,
                       counts: dict[str, int], points: list[Point]) -> Path:
    """sweep.json/.md/.csv into the sweep folder from its finished points; the .md path."""
    groups: dict[str, tuple[str, str, list[int]]] = {}
    for p in points:
        groups.setdefault(p.label, (p.method, p.budget, []))[2].append(p.seed)
    runs = {label: [per_example_accuracy(layout.point(m, b).predictions(s)) for s in seeds]
            for label, (m, b, seeds) in groups.items()}
    ref_preds = pq.read_table(layout.untuned.predictions(0))
    untuned = [per_example_accuracy(ref_preds)]
    tasks = [t for t in cfg.evaluate.tasks if t in untuned[0]]
    everything = {UNTUNED: untuned, **runs}
    rows = build_rows(everything, tasks)
    cells = {r["name"]: r["cells"] for r in rows}
    vs_untuned = {r["name"]: r["cells"] for r in paired_rows(everything, UNTUNED, tasks)}
    vs_random = {}
    for label, (_, budget, _) in groups.items():
        rnd = Point("random", budget, 0).label  # random itself and `all` have no reference
        if rnd in runs and rnd != label:
            vs_random[label] = paired_rows({label: runs[label], rnd: runs[rnd]}, rnd,
                                           tasks)[0]["cells"]
    quality = {label: _quality(layout.point(m, b), seeds)
               for label, (m, b, seeds) in groups.items()}
    cost = {label: _cost(layout.point(m, b), seeds) for label, (m, b, seeds) in groups.items()}
    doc = {
        "name": cfg.name, "tasks": tasks, "seeds": spec.seeds, "methods": spec.methods,
        "knee_tolerance": spec.knee_tolerance, "budgets": counts,
        "design": design(cfg, spec),
        "baselines": majority_baselines(ref_preds),
        "untuned": _accuracy(cells[UNTUNED]),
        "points": [{"label": label, "method": m, "budget": b, "rows": counts[b],
                    "seeds": seeds, "accuracy": _accuracy(cells[label]),
                    "vs_untuned": _deltas(vs_untuned[label]),
                    "vs_random": _deltas(vs_random[label]) if label in vs_random else None,
                    "quality": quality[label], **cost[label]}
                   for label, (m, b, seeds) in groups.items()],
        "shared_seconds": _shared_seconds(layout),
        "all_train_seconds": cost[ALL]["cost"]["train_seconds"] if ALL in cost else None,
        "knee": _knees(runs, groups, counts, spec, tasks),
        "steps": _steps(runs, groups, counts, spec, tasks),
        "predictors": predictors(quality, {k: cells[k]["avg"].mean for k in runs}),
        "power": {"vs_untuned": power(vs_untuned), "vs_random": power(vs_random)},
    }
    write_json(layout.report("json"), doc)
    write_text(layout.report("csv"), _csv(doc))
    md = layout.report("md")
    write_text(md, _markdown(doc, vs_untuned, vs_random) + "\n" + _cost_markdown(doc))
    _write_html(layout, doc, rows, cells)
    return md


def _write_html(layout: SweepLayout, doc: dict, rows: list[dict], cells: dict) -> None:
    """report.html: the budget curve per method (bands, knee, untuned and majority lines),
    the accuracy table, the knees and the training-free predictors."""
    curves: dict[str, list] = {}
    for method in doc["methods"]:
        for p in doc["points"]:
            if p["method"] == method or p["budget"] == ALL:
                a = cells[p["label"]]["avg"]
                curves.setdefault(method, []).append((p["rows"], a.mean, a.lo, a.hi))
    majority = float(np.mean([b["majority"] for t, b in doc["baselines"].items()
                              if t in doc["tasks"]]))
    png = plot_sweep(curves, {m: k["rows"] for m, k in doc["knee"].items()},
                     untuned=doc["untuned"]["avg"]["mean"], majority=majority,
                     xlabel="training rows (log)")
    knees = [{"method": m, "knee": f"{k['budget']} ({k['rows']:,} rows)",
              "best": f"{k['best']} ({k['best_rows']:,} rows)",
              "Δ avg vs best [95%]": f"{k['vs_best']['delta']:+.1f} [{k['vs_best']['lo']:+.1f}, "
                                     f"{k['vs_best']['hi']:+.1f}]"}
             for m, k in doc["knee"].items()]
    preds = [{"quality number": k, "Spearman ρ with avg accuracy": v["spearman"], "p": v["p"],
              "points": v["n"]} for k, v in doc["predictors"].items()]
    write_report(layout.root, f"Sweep {doc['name']}", rows,
                 {"Accuracy vs budget": png} if png is not None else {},
                 {"Knee per method": knees, "Training-free predictors": preds,
                  "Steps and cost per point": cost_rows(doc)},
                 [f"Majority-class average {majority:.1f}%; untuned model "
                  f"{doc['untuned']['avg']['mean']:.1f}%. Paired deltas are in sweep.md.",
                  design_text(doc["design"])])


def _accuracy(cells: dict) -> dict:
    return {t: {"mean": round(c.mean, 2), "lo": round(c.lo, 2), "hi": round(c.hi, 2)}
            for t, c in cells.items()}


def _deltas(cells: dict) -> dict:
    return {t: {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(d).items()}
            for t, d in cells.items()}


def _quality(run, seeds: list[int]) -> dict[str, float]:
    """The numbers of each seed's select manifest (`quality`), averaged over seeds."""
    values: dict[str, list[float]] = {}
    for s in seeds:
        q = read_json(run.stage("select", s) / MANIFEST).get("quality", {})
        for k, v in q.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                values.setdefault(k, []).append(float(v))
    return {k: round(float(np.mean(v)), 6) for k, v in values.items()}


def design(cfg: RunConfig, spec: SweepConfig) -> dict:
    """How the points trained: `steps` (sweep.train_steps, the same steps for every point)
    or `epochs` (train.epochs over each point's rows, or train.max_steps)."""
    t = cfg.train
    if spec.train_steps is not None:
        return {"name": "steps", "train_steps": spec.train_steps, "rows_per_step": t.rows_per_step}
    return {"name": "epochs", "epochs": t.epochs, "max_steps": t.max_steps,
            "rows_per_step": t.rows_per_step}


def design_text(d: dict) -> str:
    if d["name"] == "steps":
        return (f"Design: compute-matched (sweep.train_steps): every point trains "
                f"{d['train_steps']:,} optimizer steps of {d['rows_per_step']} rows, a small "
                "budget's rows repeating in seeded epoch order; budgets differ in data, not in "
                "compute.")
    if d["max_steps"] is not None:
        return (f"Design: epoch-based, capped by train.max_steps: every point trains "
                f"{d['max_steps']:,} steps of up to {d['rows_per_step']} rows (each epoch of a "
                "point's rows ends in a short step, so a small budget may train fewer rows a "
                "step).")
    return (f"Design: epoch-based: every point trains train.epochs={d['epochs']:g} over its own "
            f"rows ({d['rows_per_step']} rows a step), so a larger budget trains more steps.")


def _manifest(folder: Path) -> dict:
    return read_json(folder / MANIFEST) if (folder / MANIFEST).is_file() else {}


def _mean(values: list) -> float | None:
    return None if not values or None in values else round(float(np.mean(values)), 3)


def _one(values: list):
    """The seeds' common value, or the list when they differ."""
    return values[0] if len(set(values)) == 1 else values


def _cost(run, seeds: list[int]) -> dict:
    """`training`: optimizer steps, rows trained and epochs over the point's rows (the train
    stage's train_state.json and config); `cost`: seconds selecting (the SELECTION_STAGES the
    select stage read, in full, plus the select stage) and training (the train stage), each
    a stage manifest's `seconds`, mean over seeds. None where a stage is missing."""
    steps, seen, epochs, select, train = [], [], [], [], []
    for s in seeds:
        sel, tr = _manifest(run.stage("select", s)), _manifest(run.stage("train", s))
        shared = [_manifest(run.stage(n)).get("seconds") for n in sel.get("upstream", {})
                  if n in SELECTION_STAGES]
        select.append(None if None in shared or "seconds" not in sel
                      else sum(shared) + sel["seconds"])
        train.append(tr.get("seconds"))
        state = run.model(s) / "train_state.json"
        if tr and state.is_file():
            st, c = read_json(state), tr["config"]
            n = rows_trained(st["steps"], st["rows"], c["batch_size"] * c["grad_accum"],
                             c.get("full_steps", False))
            steps.append(st["steps"])
            seen.append(n)
            epochs.append(round(n / st["rows"], 2))
    training = {"steps": _one(steps), "rows_trained": _one(seen),
                "epochs": _one(epochs)} if len(steps) == len(seeds) else None
    sel_s, train_s = _mean(select), _mean(train)
    ratio = round(sel_s / train_s, 4) if sel_s is not None and train_s else None
    return {"training": training, "cost": {"select_seconds": sel_s, "train_seconds": train_s,
                                           "select_to_train": ratio}}


def _shared_seconds(layout: SweepLayout) -> dict:
    """Seconds of each shared stage a selection pays for; the embed stage's rows read from
    the embedding cache (a fresh run encodes them, and pays more)."""
    out = {}
    for name in SELECTION_STAGES:
        m = _manifest(layout.shared / name)
        if "seconds" in m:
            out[name] = m["seconds"]
            if name == "embed" and m.get("cached_rows"):
                out["embed_cached_rows"] = m["cached_rows"]
    return out


def _fmt(v, spec: str = ",") -> str:
    if v is None:
        return "–"
    if isinstance(v, list):
        return f"{min(v):{spec}}–{max(v):{spec}}"
    return f"{v:{spec}}"


def cost_rows(doc: dict) -> list[dict]:
    """Per point: rows, steps, epochs over its rows, seconds selecting and training."""
    out = []
    for p in doc["points"]:
        t, c = p["training"] or {}, p["cost"]
        out.append({"point": p["label"], "rows": f"{p['rows']:,}",
                    "steps": _fmt(t.get("steps")), "epochs": _fmt(t.get("epochs"), ".2f"),
                    "select s": _fmt(c["select_seconds"], ".1f"),
                    "train s": _fmt(c["train_seconds"], ".1f"),
                    "select / train": _fmt(c["select_to_train"], ".2f")})
    return out


def _cost_markdown(doc: dict) -> str:
    rows = cost_rows(doc)
    lines = ["## Steps and cost per point", "",
             "Steps: optimizer steps trained; epochs: rows trained / the point's rows (how often "
             "each row was seen). Seconds from the stage manifests, mean over seeds: select = "
             "the shared embed, [dedup,] cluster and target stages the point reads, counted in "
             "full for every point (one selection run alone pays all of them), plus its own "
             "select stage; train = the train stage. The pool stage and evaluation are left "
             "out: every point needs them.", "",
             _plain_table(rows)[1], ""]
    shared = doc["shared_seconds"]
    if shared:
        cached = shared.get("embed_cached_rows")
        lines.append("Shared stages: " + ", ".join(f"{n} {v:.1f} s" for n, v in shared.items()
                                                   if n in SELECTION_STAGES)
                     + (f" (embed read {cached:,} rows from the embedding cache; encoding them "
                        "costs more)" if cached else "") + ".")
    if doc["all_train_seconds"] is not None:
        lines.append(f"Training on every target row (`all`) took {doc['all_train_seconds']:.1f} s:"
                     " a point saves time only where its select s + train s is below that.")
    return "\n".join(lines) + "\n"


def _curve(method: str, runs: dict, groups: dict, counts: dict[str, int]) -> list:
    """(budget, label, run) of one method's points in budget order, `all` last."""
    curve = [(b, label, runs[label]) for label, (m, b, _) in groups.items()
             if m == method or b == ALL]
    return sorted(curve, key=lambda item: counts[item[0]])


def _steps(runs: dict, groups: dict, counts: dict[str, int], spec: SweepConfig,
           tasks: list[str]) -> dict:
    """Per method, the paired Δ of each budget against the next smaller one (same method)."""
    out = {}
    for method in spec.methods:
        out[method] = []
        for (lo, a, r_lo), (hi, b, r_hi) in pairwise(_curve(method, runs, groups, counts)):
            d = paired_rows({b: r_hi, a: r_lo}, a, tasks)[0]["cells"]["avg"]
            out[method].append({"from": lo, "to": hi, **_deltas({"avg": d})["avg"]})
    return out


def _knees(runs: dict, groups: dict, counts: dict[str, int], spec: SweepConfig,
           tasks: list[str]) -> dict:
    """Per method, the knee of its curve (its points in budget order, `all` last)."""
    out = {}
    for method in spec.methods:
        curve = [(b, run) for b, _, run in _curve(method, runs, groups, counts)]
        k = knee(curve, tol=spec.knee_tolerance, tasks=tasks)
        out[method] = {"budget": k.budget, "rows": counts[k.budget], "best": k.best,
                       "best_rows": counts[k.best], "vs_best": _deltas({"avg": k.vs_best})["avg"]}
    return out


# z(0.975); z(0.975) + z(0.80): a true Δ this many standard errors away is found 80% of
# the time
_Z95 = 1.959964
_Z_POWER = _Z95 + 0.841621


def power(comparisons: dict[str, dict]) -> dict:
    """The smallest true Δ the design detects with 80% power (two-sided, 0.05): 2.80 standard
    errors of the paired Δ, each read from its 95% interval (half-width / 1.96). Per eval set
    and on average, the median over the comparisons (each point against its reference)."""
    out = {}
    for task in sorted({t for cells in comparisons.values() for t in cells}):
        half = [(c[task].hi - c[task].lo) / 2 for c in comparisons.values() if task in c]
        h = float(np.median(half))
        out[task] = {"half_width": round(h, 2), "detectable": round(h / _Z95 * _Z_POWER, 2),
                     "comparisons": len(half)}
    return out


def predictors(quality: dict[str, dict[str, float]], accuracy: dict[str, float]) -> dict:
    """Spearman rank correlation of each selection-quality number with the average accuracy
    across the points that have it (at least 3, not all equal)."""
    from scipy.stats import spearmanr

    keys = sorted({k for q in quality.values() for k in q})
    out = {}
    for key in keys:
        have = [p for p in accuracy if key in quality.get(p, {})]
        x = [quality[p][key] for p in have]
        y = [accuracy[p] for p in have]
        if len(have) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
            continue
        rho, p = spearmanr(x, y)
        out[key] = {"spearman": round(float(rho), 4), "p": round(float(p), 4), "n": len(have)}
    return out


def _markdown(doc: dict, vs_untuned: dict, vs_random: dict) -> str:
    tasks, base = doc["tasks"], doc["baselines"]
    cols = [*tasks, "avg"]
    lines = [f"# Sweep `{doc['name']}`", "", design_text(doc["design"]), "",
             f"{len(doc['points'])} points (budgets {', '.join(doc['budgets'])}; methods "
             f"{', '.join(doc['methods'])}; seeds {doc['seeds']}), every one scored on the same "
             "examples as the untuned model. Accuracy % with 95% intervals over examples and "
             "seeds; Δ in points with 95% paired intervals and sign-flip p.", "",
             "| Point | rows | " + " | ".join(HEADERS.get(c, c) for c in cols)
             + " | Δ Avg vs untuned | Δ Avg vs random |", "|---|---|" + "---|" * (len(cols) + 2)]

    def acc(a: dict) -> list[str]:
        return [f"{a[c]['mean']:.1f} [{a[c]['lo']:.1f}, {a[c]['hi']:.1f}]" if c in a else "–"
                for c in cols]

    lines.append(f"| {UNTUNED} | 0 | " + " | ".join(acc(doc["untuned"])) + " | – | – |")
    for p in doc["points"]:
        rnd = vs_random[p["label"]]["avg"].text() if p["label"] in vs_random else "–"
        lines.append(f"| {p['label']} | {p['rows']:,} | " + " | ".join(acc(p["accuracy"]))
                     + f" | {vs_untuned[p['label']]['avg'].text()} | {rnd} |")
    for kind in ("majority", "chance"):
        vals = [f"{base[t][kind]:.1f}" if t in base else "–" for t in tasks]
        lines.append(f"| {kind} | | " + " | ".join(vals) + " | | | |")
    lines += ["", f"Knee: the smallest budget whose average is not significantly below the best "
              f"budget's (paired sign-flip p ≥ 0.05) and within {doc['knee_tolerance']:.1f} "
              "points of it.", ""]
    for method, k in doc["knee"].items():
        d = k["vs_best"]
        lines.append(f"- {method}: **{k['budget']}** ({k['rows']:,} rows); best {k['best']} "
                     f"({k['best_rows']:,} rows); Δ vs best {d['delta']:+.1f} "
                     f"[{d['lo']:+.1f}, {d['hi']:+.1f}] p={d['p']:.3g}")
    lines += ["", "Δ Avg between budgets (each budget against the next smaller one of the "
              "same method, paired):", ""]
    for method, steps in doc["steps"].items():
        lines.append(f"- {method}: " + "; ".join(
            f"{st['from']} → {st['to']} {st['delta']:+.1f} [{st['lo']:+.1f}, {st['hi']:+.1f}] "
            f"p={st['p']:.3g}" for st in steps) if steps else f"- {method}: one budget")
    lines.append("")
    for ref, pw in doc["power"].items():
        if "avg" in pw:
            sets = ", ".join(f"{HEADERS.get(t, t)} {v['detectable']:.1f}"
                             for t, v in pw.items() if t != "avg")
            lines.append(f"- Power, Δ {ref.replace('_', ' ')}: 95% paired intervals of ±"
                         f"{pw['avg']['half_width']:.1f} points on the Avg (median of "
                         f"{pw['avg']['comparisons']}); the smallest true Δ found 80% of the time "
                         f"at p<0.05 is {pw['avg']['detectable']:.1f} points ({sets}).")
    lines += ["", paired_markdown([{"name": n, "cells": c} for n, c in vs_untuned.items()],
                                  UNTUNED, tasks, base)]
    if vs_random:
        lines.append(paired_markdown([{"name": n, "cells": c} for n, c in vs_random.items()],
                                     "random at the same budget", tasks))
    lines += ["Training-free predictors: Spearman rank correlation of each selection-quality "
              "number (select stage, mean over seeds) with the Avg accuracy over the points.", ""]
    if doc["predictors"]:
        lines += ["| quality number | ρ | p | points |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['spearman']:+.2f} | {v['p']:.3g} | {v['n']} |"
                  for k, v in doc["predictors"].items()]
    else:
        lines.append("(fewer than 3 points with distinct values: nothing to rank)")
    return "\n".join(lines) + "\n"


def _csv(doc: dict) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["point", "method", "budget", "rows", "task", "mean", "ci_low", "ci_high",
                "delta_untuned", "delta_untuned_low", "delta_untuned_high", "p_untuned",
                "delta_random", "delta_random_low", "delta_random_high", "p_random",
                "steps", "epochs", "select_seconds", "train_seconds"])
    for p in doc["points"]:
        tr, c = p["training"] or {}, p["cost"]
        cost = ["" if v is None else _fmt(v, "") for v in (
            tr.get("steps"), tr.get("epochs"), c["select_seconds"], c["train_seconds"])]
        for t, a in p["accuracy"].items():
            row = [p["label"], p["method"], p["budget"], p["rows"], t, a["mean"], a["lo"],
                   a["hi"]]
            for ref in ("vs_untuned", "vs_random"):
                d = (p[ref] or {}).get(t)
                row += [d["delta"], d["lo"], d["hi"], d["p"]] if d else ["", "", "", ""]
            w.writerow(row + cost)
    return out.getvalue()
