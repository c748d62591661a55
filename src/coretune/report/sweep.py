"""What a finished sweep found: sweep.json, sweep.md and sweep.csv.

Per point (method x budget, seeds pooled): accuracy per eval set and on average with its 95%
interval (`table`), beside each eval set's majority-class and chance accuracy; Δ vs the
untuned model and Δ vs random at the same budget, each paired on the examples and seeds with a
sign-flip p-value (`coretune.stats`); the knee of each method's curve; the point's selection
quality numbers (the select stage's manifest) and how well each ranks the points by accuracy
(Spearman), i.e. whether the knee could be picked without training. Every number is given
for accuracy and for the gold-option log-loss (nats, lower is better; its Δs are oriented so
that + is better); `sweep.metric` says which one decides the knee and the rankings.

The positive control guards every ranking: budget `all` (every target row) must be
significantly better than the untuned model on the deciding metric (p < 0.01). If it is not,
or the sweep has no `all` budget, the design cannot tell selections apart and the report says
so in one line and gives no knee and no method verdict (`doc["control"]["ranks"]`).
The design (epoch-based or compute-matched), each point's optimizer steps and epochs over its
rows, and its cost in seconds, selecting and training (the stage manifests), are reported too.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from coretune.config import RunConfig, SweepConfig
from coretune.evaluate import per_example_accuracy, per_example_logloss
from coretune.io import read_json, write_json, write_text
from coretune.report.compare import delta_unit, majority_baselines, paired_markdown, paired_rows
from coretune.report.html import _plain_table, one_class, plot_sweep, write_report
from coretune.report.table import HEADERS, build_rows
from coretune.run.layout import SweepLayout
from coretune.run.manifest import MANIFEST
from coretune.run.sweep import Point
from coretune.select.budget import ALL
from coretune.stats import ACCURACY, LOGLOSS, METRICS, Delta, Metric, knee
from coretune.train.data import rows_trained

UNTUNED = "untuned"
# The shared stages a point's selection pays for, counted in full for every point (one user
# running that one selection pays all of them); the pool stage is left out: every point,
# `all` too, needs the pool whether or not it selects.
SELECTION_STAGES = ("embed", "dedup", "cluster", "target")
CONTROL_P = 0.01  # the positive control must beat the untuned model at this level


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
    vs_untuned, vs_random = _compare(everything, groups, tasks, ACCURACY)
    losses = _losses(layout, groups)
    loss_rows = build_rows(losses, tasks, LOGLOSS) if losses else []
    loss_cells = {r["name"]: r["cells"] for r in loss_rows}
    loss_untuned, loss_random = _compare(losses, groups, tasks, LOGLOSS) if losses else ({}, {})
    # log-loss decides unless asked otherwise or the predictions carry no option scores
    metric = METRICS[spec.metric] if losses else ACCURACY
    decide = {LOGLOSS.name: (losses, loss_cells, loss_untuned),
              ACCURACY.name: (everything, cells, vs_untuned)}[metric.name]
    ctrl = control(decide[2], metric, counts)
    quality = {label: _quality(layout.point(m, b), seeds)
               for label, (m, b, seeds) in groups.items()}
    cost = {label: _cost(layout.point(m, b), seeds) for label, (m, b, seeds) in groups.items()}
    doc = {
        "name": cfg.name, "tasks": tasks, "seeds": spec.seeds, "methods": spec.methods,
        "knee_tolerance": spec.knee_tolerance, "budgets": counts,
        "design": design(cfg, spec),
        "metric": metric.name, "metric_requested": spec.metric,
        "knee_tolerance_logloss": spec.knee_tolerance_logloss,
        "control": ctrl,
        "baselines": majority_baselines(ref_preds),
        "untuned": _accuracy(cells[UNTUNED]),
        "untuned_logloss": _accuracy(loss_cells[UNTUNED], 4) if losses else None,
        "points": [{"label": label, "method": m, "budget": b, "rows": counts[b],
                    "seeds": seeds, "accuracy": _accuracy(cells[label]),
                    "vs_untuned": _deltas(vs_untuned[label]),
                    "vs_random": _deltas(vs_random[label]) if label in vs_random else None,
                    "logloss": _accuracy(loss_cells[label], 4) if losses else None,
                    "vs_untuned_logloss": _deltas(loss_untuned[label]) if losses else None,
                    "vs_random_logloss": _deltas(loss_random[label])
                    if label in loss_random else None,
                    "quality": quality[label], **cost[label]}
                   for label, (m, b, seeds) in groups.items()],
        "shared_seconds": _shared_seconds(layout),
        "all_train_seconds": cost[ALL]["cost"]["train_seconds"] if ALL in cost else None,
        "knee": _knees(decide[0], groups, counts, spec, tasks, metric) if ctrl["ranks"] else {},
        "steps": _steps(decide[0], groups, counts, spec, tasks, metric),
        "predictors": predictors(quality, {k: _better(decide[1][k]["avg"].mean, metric)
                                           for k in runs}) if ctrl["ranks"] else {},
        "power": {"vs_untuned": power(vs_untuned), "vs_random": power(vs_random)},
        "power_logloss": {"vs_untuned": power(loss_untuned, 4), "vs_random": power(loss_random, 4)}
        if losses else None,
    }
    write_json(layout.report("json"), doc)
    write_text(layout.report("csv"), _csv(doc))
    md = layout.report("md")
    write_text(md, _markdown(doc, vs_untuned, vs_random, loss_untuned, loss_random) + "\n"
               + _cost_markdown(doc))
    _write_html(layout, doc, rows, cells, loss_rows)
    return md


def _compare(runs: dict, groups: dict, tasks: list[str], metric: Metric) -> tuple[dict, dict]:
    """Every point's Δ cells vs the untuned model and vs random at the same budget."""
    vs_untuned = {r["name"]: r["cells"] for r in paired_rows(runs, UNTUNED, tasks, metric)}
    vs_random = {}
    for label, (_, budget, _) in groups.items():
        rnd = Point("random", budget, 0).label  # random itself and `all` have no reference
        if rnd in runs and rnd != label:
            vs_random[label] = paired_rows({label: runs[label], rnd: runs[rnd]}, rnd,
                                           tasks, metric)[0]["cells"]
    return vs_untuned, vs_random


def _losses(layout: SweepLayout, groups: dict) -> dict:
    """Per-seed per-example log-loss of the untuned model and every point; {} when any of
    their predictions carry no option scores."""
    out = {UNTUNED: [per_example_logloss(layout.untuned.predictions(0))]}
    for label, (m, b, seeds) in groups.items():
        out[label] = [per_example_logloss(layout.point(m, b).predictions(s)) for s in seeds]
    return out if all(all(run) for run in out.values()) else {}


def _better(value: float, metric: Metric) -> float:
    """`value` turned so that larger is better (log-loss negated)."""
    return value if metric.higher_is_better else -value


def control(vs_untuned: dict, metric: Metric, counts: dict[str, int]) -> dict:
    """The positive control: budget `all` (every target row) against the untuned model on
    `metric`. `ranks` is True only when it is better at p < CONTROL_P; `text` is the line
    the reports print."""
    unit = f"{metric.label} {metric.unit}"
    if ALL not in vs_untuned:
        return {"point": None, "metric": metric.name, "status": "missing", "ranks": False,
                "delta": None, "text": "**This design cannot rank selections**: it has no "
                "positive control (budget `all`, every target row, scored against the untuned "
                "model; add `all` to sweep.budgets), so no knee and no method verdict are given."}
    d = vs_untuned[ALL]["avg"]
    status = ("better" if d.delta > 0 else "worse") if d.p < CONTROL_P else "flat"
    said = (f"`all` ({counts[ALL]:,} rows, every target row) vs untuned: Δ {metric.label} "
            f"{d.text(metric.digits)} ({unit}, + = better)")
    if status == "better":
        text = (f"Positive control passed: {said}, significantly better (p < {CONTROL_P}), so "
                f"the budgets and methods below are ranked by {metric.label}.")
    else:
        how = "significantly worse than" if status == "worse" else \
            "not significantly better than"
        text = (f"**This design cannot rank selections**: its positive control is {how} the "
                f"untuned model (p < {CONTROL_P} needed): {said}; no knee and no method verdict "
                "are given.")
    return {"point": ALL, "metric": metric.name, "status": status, "ranks": status == "better",
            "delta": _deltas({"avg": d})["avg"], "text": text}


def _write_html(layout: SweepLayout, doc: dict, rows: list[dict], cells: dict,
                loss_rows: list[dict]) -> None:
    """report.html: the control line first, both tables with each eval set's baselines and
    the one-class markers, the paired Δ tables (vs untuned, vs random at the same budget, in
    accuracy and log-loss), the budget curves per method (bands, knee of the deciding metric,
    untuned and baseline lines), the knees and the training-free predictors."""
    knee_rows = {m: k["rows"] for m, k in doc["knee"].items()}
    base = doc["baselines"]
    mean_base = {k: float(np.mean([b[k] for t, b in base.items() if t in doc["tasks"]]))
                 for k in ("majority", "prior_logloss")}
    figures = {}
    loss_cells = {r["name"]: r["cells"] for r in loss_rows}
    for title, by, metric, line, label in (
            ("Accuracy vs budget", cells, ACCURACY, mean_base["majority"], "majority class"),
            ("Log-loss vs budget", loss_cells, LOGLOSS, mean_base["prior_logloss"],
             "label prior (best constant guess)")):
        if not by:
            continue
        png = plot_sweep(_curves(doc, by), knee_rows if doc["metric"] == metric.name else {},
                         untuned=by[UNTUNED]["avg"].mean, majority=line, majority_label=label,
                         xlabel="training rows (log)", what=metric.label,
                         ylabel=f"avg {metric.label} (95% band)" if metric is LOGLOSS else
                         "avg accuracy % (95% band)")
        if png is not None:
            better = "higher" if metric.higher_is_better else "lower"
            figures[title] = (png, f"Avg {metric.label} ({better} is better) against the rows "
                              "a point trained on (log x), one line per method with its 95% "
                              f"band, `all` the last point of every line; dashed: the untuned "
                              f"model, dotted: the {label}"
                              + ("; ringed: each method's knee." if doc["metric"] == metric.name
                                 and knee_rows else ". Rank points by the paired Δ tables, "
                                 "not by overlapping bands."))
    m = METRICS[doc["metric"]]
    knees = [{"method": name, "knee": f"{k['budget']} ({k['rows']:,} rows)",
              "best": f"{k['best']} ({k['best_rows']:,} rows)",
              f"Δ avg {m.label} vs best [95%]": _interval(k["vs_best"], m.digits)}
             for name, k in doc["knee"].items()]
    preds = [{"quality number": k, f"Spearman ρ with avg {m.label} (+ = better)": v["spearman"],
              "p": v["p"], "points": v["n"]} for k, v in doc["predictors"].items()]
    paired = []
    for key, ref in (("vs_untuned", UNTUNED), ("vs_random", "random at the same budget")):
        for metric, suffix in ((ACCURACY, ""), (LOGLOSS, "_logloss")):
            deltas = [{"name": p["label"], "cells": {t: Delta(**d) for t, d in
                                                     p[key + suffix].items()}}
                      for p in doc["points"] if p.get(key + suffix)]
            if deltas:
                paired.append((ref, deltas, metric))
    marks = {UNTUNED: one_class([pq.read_table(layout.untuned.predictions(0))])}
    for p in doc["points"]:
        run = layout.point(p["method"], p["budget"])
        marks[p["label"]] = one_class([pq.read_table(run.predictions(s)) for s in p["seeds"]])
    loss = doc["untuned_logloss"]
    write_report(layout.root, f"Sweep {doc['name']}", rows, figures,
                 {"Knee per method": knees, "Training-free predictors": preds,
                  "Steps and cost per point": cost_rows(doc)},
                 [f"Untuned model {doc['untuned']['avg']['mean']:.1f}%"
                  + (f", log-loss {loss['avg']['mean']:.3f} nats" if loss else "")
                  + f"; majority-class average {mean_base['majority']:.1f}%.",
                  design_text(doc["design"])],
                 loss_rows=loss_rows, baselines=base, marks=marks, paired=paired,
                 lead=[f"Deciding metric: {m.label}.", _plain(doc["control"]["text"])])


def _plain(text: str) -> str:
    return text.replace("**", "").replace("`", "")


def _interval(d: dict, digits: int) -> str:
    return f"{d['delta']:+.{digits}f} [{d['lo']:+.{digits}f}, {d['hi']:+.{digits}f}]"


def _curves(doc: dict, cells: dict) -> dict[str, list]:
    """Per method, (rows, mean, lo, hi) of its Avg at each budget (`all` on every curve)."""
    curves: dict[str, list] = {}
    for method in doc["methods"]:
        for p in doc["points"]:
            if p["method"] == method or p["budget"] == ALL:
                a = cells[p["label"]]["avg"]
                curves.setdefault(method, []).append((p["rows"], a.mean, a.lo, a.hi))
    return curves


def _accuracy(cells: dict, digits: int = 2) -> dict:
    return {t: {"mean": round(c.mean, digits), "lo": round(c.lo, digits),
                "hi": round(c.hi, digits)} for t, c in cells.items()}


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
           tasks: list[str], metric: Metric = ACCURACY) -> dict:
    """Per method, the paired Δ of each budget against the next smaller one (same method)."""
    out = {}
    for method in spec.methods:
        out[method] = []
        for (lo, a, r_lo), (hi, b, r_hi) in pairwise(_curve(method, runs, groups, counts)):
            d = paired_rows({b: r_hi, a: r_lo}, a, tasks, metric)[0]["cells"]["avg"]
            out[method].append({"from": lo, "to": hi, **_deltas({"avg": d})["avg"]})
    return out


def _knees(runs: dict, groups: dict, counts: dict[str, int], spec: SweepConfig,
           tasks: list[str], metric: Metric = ACCURACY) -> dict:
    """Per method, the knee of its curve (its points in budget order, `all` last)."""
    tol = spec.knee_tolerance if metric is ACCURACY else spec.knee_tolerance_logloss
    out = {}
    for method in spec.methods:
        curve = [(b, run) for b, _, run in _curve(method, runs, groups, counts)]
        k = knee(curve, tol=tol, tasks=tasks, metric=metric)
        out[method] = {"budget": k.budget, "rows": counts[k.budget], "best": k.best,
                       "best_rows": counts[k.best], "vs_best": _deltas({"avg": k.vs_best})["avg"]}
    return out


# z(0.975); z(0.975) + z(0.80): a true Δ this many standard errors away is found 80% of
# the time
_Z95 = 1.959964
_Z_POWER = _Z95 + 0.841621


def power(comparisons: dict[str, dict], digits: int = 2) -> dict:
    """The smallest true Δ the design detects with 80% power (two-sided, 0.05): 2.80 standard
    errors of the paired Δ, each read from its 95% interval (half-width / 1.96). Per eval set
    and on average, the median over the comparisons (each point against its reference), in the
    comparisons' unit, rounded to `digits`."""
    out = {}
    for task in sorted({t for cells in comparisons.values() for t in cells}):
        half = [(c[task].hi - c[task].lo) / 2 for c in comparisons.values() if task in c]
        h = float(np.median(half))
        out[task] = {"half_width": round(h, digits),
                     "detectable": round(h / _Z95 * _Z_POWER, digits), "comparisons": len(half)}
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


WHY = {"logloss": "log-loss is the default because it sees what accuracy cannot: on RTE and CB "
                  "dev, two fine-tunes of a 135M model on 100 target rows each moved accuracy "
                  "by z = -0.25 and -0.61 and log-loss by z = -3.0 and -2.6, + = better; "
                  "docs/measurement.md",
       "accuracy": "set by sweep.metric; log-loss is the default (docs/measurement.md)"}


def _preamble(doc: dict) -> list[str]:
    """What log-loss is, which metric decides and why, and the positive control's line."""
    if doc["metric"] != doc["metric_requested"]:
        why = (f"sweep.metric is {doc['metric_requested']}, but these predictions carry no "
               "option scores to compute log-loss from")
    else:
        why = WHY[doc["metric"]]
    return ["Log-loss: -log p(gold option) under the softmax over the options' scores, nats, "
            "lower is better; a Δ log-loss is the reference's minus the point's, so + is better, "
            "like every Δ here.", "",
            f"Deciding metric: **{METRICS[doc['metric']].label}** ({why}).", "",
            doc["control"]["text"], ""]


def _loss_table(doc: dict, vs_untuned: dict, vs_random: dict) -> list[str]:
    """The points' log-loss per eval set, with Δ Avg vs untuned and vs random."""
    if not doc["untuned_logloss"]:
        return []
    cols, n = [*doc["tasks"], "avg"], LOGLOSS.digits

    def val(a: dict) -> str:
        return " | ".join(f"{a[c]['mean']:.{n}f} [{a[c]['lo']:.{n}f}, {a[c]['hi']:.{n}f}]"
                          if c in a else "–" for c in cols)

    lines = ["", "Log-loss (nats, lower is better):", "",
             "| Point | rows | " + " | ".join(HEADERS.get(c, c) for c in cols)
             + " | Δ Avg vs untuned | Δ Avg vs random |", "|---|---|" + "---|" * (len(cols) + 2),
             f"| {UNTUNED} | 0 | {val(doc['untuned_logloss'])} | – | – |"]
    for p in doc["points"]:
        rnd = vs_random[p["label"]]["avg"].text(n) if p["label"] in vs_random else "–"
        lines.append(f"| {p['label']} | {p['rows']:,} | {val(p['logloss'])} "
                     f"| {vs_untuned[p['label']]['avg'].text(n)} | {rnd} |")
    base = doc["baselines"]
    for kind, what in (("prior_logloss", "label prior"), ("uniform_logloss", "uniform")):
        vals = [f"{base[t][kind]:.{n}f}" if t in base else "–" for t in doc["tasks"]]
        lines.append(f"| {what} | | " + " | ".join(vals) + " | | | |")
    lines += ["", "The label prior is the best constant guess (each set's own label "
              "frequencies): a log-loss below it needs the examples, not calibration alone."]
    return lines


def _loss_paired(tasks: list[str], vs_untuned: dict, vs_random: dict) -> list[str]:
    out = []
    for ref, cells in ((UNTUNED, vs_untuned), ("random at the same budget", vs_random)):
        if cells:
            out.append(paired_markdown([{"name": k, "cells": c} for k, c in cells.items()],
                                       ref, tasks, metric=LOGLOSS))
    return out


def _power_lines(power_doc: dict, metric: Metric) -> list[str]:
    lines, n = [], metric.digits
    what = "" if metric is ACCURACY else f" {metric.label}"
    for ref, pw in power_doc.items():
        if "avg" in pw:
            sets = ", ".join(f"{HEADERS.get(t, t)} {v['detectable']:.{n}f}"
                             for t, v in pw.items() if t != "avg")
            lines.append(f"- Power, Δ{what} {ref.replace('_', ' ')}: 95% paired intervals of ±"
                         f"{pw['avg']['half_width']:.{n}f} {metric.unit} on the Avg (median of "
                         f"{pw['avg']['comparisons']}); the smallest true Δ found 80% of the time "
                         f"at p<0.05 is {pw['avg']['detectable']:.{n}f} {metric.unit} ({sets}).")
    return lines


def _markdown(doc: dict, vs_untuned: dict, vs_random: dict, loss_untuned: dict,
              loss_random: dict) -> str:
    tasks, base = doc["tasks"], doc["baselines"]
    cols = [*tasks, "avg"]
    m = METRICS[doc["metric"]]
    lines = [f"# Sweep `{doc['name']}`", "", design_text(doc["design"]), "",
             f"{len(doc['points'])} points (budgets {', '.join(doc['budgets'])}; methods "
             f"{', '.join(doc['methods'])}; seeds {doc['seeds']}), every one scored on the same "
             "examples as the untuned model. Accuracy % with 95% intervals over examples and "
             "seeds; Δ in points with 95% paired intervals and sign-flip p.", "",
             *_preamble(doc), "| Point | rows | " + " | ".join(HEADERS.get(c, c) for c in cols)
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
    lines += _loss_table(doc, loss_untuned, loss_random)
    if doc["knee"]:
        tol = doc["knee_tolerance"] if m is ACCURACY else doc["knee_tolerance_logloss"]
        lines += ["", f"Knee by {m.label}: the smallest budget whose average is not "
                  "significantly worse than the best budget's (paired sign-flip p ≥ 0.05) and "
                  f"within {tol:g} {m.unit} of it.", ""]
    for method, k in doc["knee"].items():
        d = k["vs_best"]
        lines.append(f"- {method}: **{k['budget']}** ({k['rows']:,} rows); best {k['best']} "
                     f"({k['best_rows']:,} rows); Δ vs best {_interval(d, m.digits)} "
                     f"p={d['p']:.3g}")
    lines += ["", f"Δ Avg {m.label} between budgets (each budget against the next smaller one "
              f"of the same method, paired; {delta_unit(m)}):", ""]
    for method, steps in doc["steps"].items():
        lines.append(f"- {method}: " + "; ".join(
            f"{st['from']} → {st['to']} {_interval(st, m.digits)} p={st['p']:.3g}"
            for st in steps) if steps else f"- {method}: one budget")
    lines += ["", *_power_lines(doc["power"], ACCURACY),
              *_power_lines(doc["power_logloss"] or {}, LOGLOSS)]
    lines += ["", paired_markdown([{"name": n, "cells": c} for n, c in vs_untuned.items()],
                                  UNTUNED, tasks, base)]
    if vs_random:
        lines.append(paired_markdown([{"name": n, "cells": c} for n, c in vs_random.items()],
                                     "random at the same budget", tasks))
    lines += _loss_paired(tasks, loss_untuned, loss_random)
    if not doc["control"]["ranks"]:  # no ranking of the points either
        return "\n".join(lines) + "\n"
    lines += ["Training-free predictors: Spearman rank correlation of each selection-quality "
              f"number (select stage, mean over seeds) with the Avg {m.label} over the points"
              + ("" if m.higher_is_better else ", negated: + means lower log-loss") + ".", ""]
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
                *_LOSS_COLUMNS, "steps", "epochs", "select_seconds", "train_seconds"])
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
            w.writerow(row + _loss_cells(p, t) + cost)
    return out.getvalue()


# log-loss (nats, lower is better) and its Δs (the reference's minus the point's: + is better)
_LOSS_COLUMNS = ["logloss", "logloss_low", "logloss_high",
                 "dlogloss_untuned", "dlogloss_untuned_low", "dlogloss_untuned_high",
                 "p_logloss_untuned", "dlogloss_random", "dlogloss_random_low",
                 "dlogloss_random_high", "p_logloss_random"]


def _loss_cells(p: dict, task: str) -> list:
    a = (p["logloss"] or {}).get(task)
    row = [a["mean"], a["lo"], a["hi"]] if a else ["", "", ""]
    for ref in ("vs_untuned_logloss", "vs_random_logloss"):
        d = (p[ref] or {}).get(task)
        row += [d["delta"], d["lo"], d["hi"], d["p"]] if d else ["", "", "", ""]
    return row
