"""Collect finished runs into the paper-style table and the report (`coretune table`, `run`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from coretune.config import UNTUNED_METHOD
from coretune.embed import load_embeddings
from coretune.errors import CoretuneError
from coretune.evaluate import per_example_accuracy, per_example_logloss
from coretune.io import read_json
from coretune.report.compare import majority_baselines, paired_markdown, paired_rows
from coretune.report.html import (
    ONE_CLASS,
    one_class,
    plot_coverage,
    plot_map,
    plot_radius,
    plot_rows,
    plot_sweep,
    write_report,
)
from coretune.report.table import TASKS, build_rows, write_table
from coretune.run.layout import CONFIG_FILE, SEED_STAGES, SHARED_STAGES, RunLayout, SweepLayout
from coretune.run.manifest import MANIFEST
from coretune.run.stages import load_target_rows
from coretune.select.methods import budgeted_methods, method_labels
from coretune.select.output import output_paths
from coretune.select.quality import flatten
from coretune.stats import ACCURACY, LOGLOSS


def find_runs(paths: list[Path]) -> list[Path]:
    """Run folders (holding config.json) among `paths` and their sub-folders, sorted; a
    sweep folder (coretune sweep) gives its untuned run and its points."""
    runs = set()
    for p in paths:
        if sweep := SweepLayout(p).runs():
            runs.update(sweep)
        elif RunLayout(p).config.is_file():
            runs.add(p)
        elif p.is_dir():
            runs.update(c.parent for c in p.glob(f"*/{CONFIG_FILE}"))
        else:
            raise CoretuneError("not a run folder (no config.json)", path=p)
    if not runs:
        raise CoretuneError("no runs found (folders with config.json)", path=paths[0])
    return sorted(runs)


def collect(runs: list[Path]) -> tuple[dict[str, list[dict]], list[dict], dict[str, list[dict]]]:
    """Row name -> per-seed {task: per-example accuracy}; facts about each run; row name ->
    per-seed {task: per-example log-loss} for the runs whose predictions have option scores."""
    rows, facts, losses = {}, [], {}
    for root in runs:
        run = _read(root / CONFIG_FILE, lambda p: RunLayout.of(p.parent))
        cfg = _read(run.config)
        seeds = run.evaluated_seeds()
        if not seeds:
            continue
        rows[cfg["name"]] = [_read(run.predictions(s), per_example_accuracy) for s in seeds]
        loss = [_read(run.predictions(s), per_example_logloss) for s in seeds]
        if all(loss):
            losses[cfg["name"]] = loss
        facts.append(_facts(run, cfg, seeds))
    if not rows:
        raise CoretuneError("no finished evaluation in these runs", path=runs[0])
    return rows, facts, losses


def _read(path: Path, reader: Callable[[Path], Any] = read_json) -> Any:
    """`reader(path)` for a file of a finished run: one that cannot be read (cut short,
    overwritten) is one line naming it, not a traceback."""
    try:
        return reader(path)
    except json.JSONDecodeError as e:
        raise CoretuneError(f"not valid JSON at column {e.colno} ({e.msg}): the file is cut "
                            "short or damaged; running the run again rewrites it",
                            path=path, line=e.lineno) from e
    except (OSError, ValueError, KeyError) as e:  # Parquet and UTF-8 errors are ValueErrors
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CoretuneError(f"unreadable ({type(e).__name__}: {text}): the file is cut "
                            "short or damaged; running the run again rewrites it",
                            path=path) from e


def _facts(run: RunLayout, cfg: dict, seeds: list[int]) -> dict:
    stage_seconds: dict[str, float] = {}
    stage_peak: dict[str, float] = {}  # peak RSS (MB) of the stage, the largest over seeds
    for m in run.manifests():
        name, manifest = m.parent.name, _read(m)
        stage_seconds[name] = stage_seconds.get(name, 0) + manifest["seconds"]
        if "peak_rss_mb" in manifest:  # manifests from before peaks were recorded have none
            stage_peak[name] = max(stage_peak.get(name, 0), manifest["peak_rss_mb"])
    first = seeds[0]
    sel = run.stage("select", first) / MANIFEST
    sel_m = _read(sel) if sel.is_file() else None
    metrics = _read(run.metrics(first))
    pool_m = run.stage("pool") / MANIFEST
    return {
        "name": cfg["name"], "reproduces": cfg.get("reproduces", ""), "run": str(run.root),
        "seeds": seeds,
        "method": cfg["select"]["method"], "budget": cfg["select"]["budget"],
        "untuned": cfg["select"]["method"] == UNTUNED_METHOD,  # how config.json records it
        "model": cfg["train"]["model"],
        "pool_rows": _read(pool_m).get("rows") if pool_m.is_file() else None,
        "selected": sel_m.get("selected") if sel_m is not None else 0,
        "share_of_pool": sel_m.get("share_of_pool") if sel_m is not None else 0.0,
        "eval_caps": {k: cfg["evaluate"].get(k) for k in ("max_examples", "max_templates",
                                                          "max_examples_by_task",
                                                          "chat_template")},
        "eval_items": sum(t["n_items"] for t in metrics["tasks"].values()),
        "seconds": {k: round(v, 1) for k, v in sorted(stage_seconds.items())},
        "peak_rss_gb": {k: round(v / 1024, 2) for k, v in sorted(stage_peak.items())},
    }


def _first_file(run: RunLayout, path_of: Callable[[int], Path]) -> Path | None:
    """`path_of(seed)` for the run's first evaluated seed that has it (whatever its number)."""
    for seed in run.evaluated_seeds():
        if path_of(seed).is_file():
            return path_of(seed)
    return None


def _map_figure(run: RunLayout):
    """PCA map of (a sample of) the pool's embeddings, if this run clustered its pool."""

    if not run.done("target"):
        return None
    x, _ = load_embeddings(run.embeddings)
    names = pq.read_schema(run.pool_file).names
    pool = pq.read_table(run.pool_file, columns=["uid", "task", "family"]
                         if "family" in names else ["uid", "task"])
    labels = pq.read_table(run.stage("cluster") / "clusters.parquet").column("cluster")
    labels = labels.to_numpy()
    target = load_target_rows(run, pool.column("task").to_pylist(), labels)
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(x), min(len(x), 4000), replace=False))
    sel_file = _first_file(run, run.selection)
    selected = np.zeros(len(x), bool)
    if sel_file is not None:
        chosen = set(pq.read_table(sel_file).column("uid").to_pylist())
        selected = np.array([u in chosen for u in pool.column("uid").to_pylist()])
        idx = np.union1d(idx, np.flatnonzero(selected))
    from sklearn.decomposition import PCA

    pca = PCA(2, random_state=0)
    xy = pca.fit_transform(np.asarray(x[idx], np.float32))
    fam_col = "family" if "family" in pool.column_names else "task"
    families = [pool.column(fam_col)[int(i)].as_py() for i in idx]
    return plot_map(xy, families, target[idx], selected[idx],
                    explained=tuple(pca.explained_variance_ratio_))


def _radius_figure(runs: list[Path]):
    for run in map(RunLayout.of, runs):
        f = _first_file(run, run.selection)
        if f is not None:
            t = pq.read_table(f)
            r = t.column("radius").to_numpy(zero_copy_only=False)
            if len(r) and not np.isnan(r).all():
                return plot_radius(r, t.column("cluster").to_numpy())
    return None


def _reference(per_row: dict, by_name: dict, reference: str | None) -> str | None:
    """`reference`, else the untuned model (`untuned: true`), else None."""
    if reference is not None and reference not in per_row:
        raise CoretuneError(f"no finished run named '{reference}' (runs: "
                            f"{', '.join(sorted(per_row))})", field="reference")
    untuned = [n for n, f in by_name.items() if f["untuned"]]
    return reference or (untuned[0] if untuned else None)


def _baselines(fact: dict) -> dict[str, dict[str, float]]:
    """Each eval set's majority-class, chance and constant-guess log-loss baselines, over the
    examples the run of `fact` scored (its first evaluated seed)."""
    layout = RunLayout.of(Path(fact["run"]))
    preds = _read(layout.predictions(layout.evaluated_seeds()[0]), lambda p: pq.read_table(
        p, columns=["task", "example", "label", "choices"]))
    return majority_baselines(preds)


def _paired(per_row: dict, ref: str | None, losses: dict | None = None
            ) -> tuple[list[str], list[tuple[str, list[dict], object]]] | str:
    """Every row against `ref`, paired on the examples all runs score: the eval sets and
    [(ref, Δ rows, metric)], accuracy then log-loss for the rows in `losses`; no sets and []
    without a reference, the reason as a string when the runs cannot be paired."""
    if ref is None or len(per_row) < 2:
        return [], []
    tasks = [t for t in TASKS if any(t in s for s in per_row[ref])]
    try:
        out = [(ref, paired_rows(per_row, ref, tasks), ACCURACY)]
        loss = [n for n in per_row if n in (losses or {})]
        if ref in loss and len(loss) > 1:
            out.append((ref, paired_rows({n: losses[n] for n in loss}, ref, tasks, LOGLOSS),
                        LOGLOSS))
    except CoretuneError as e:  # runs scored different examples: nothing to pair
        return f"No paired comparison: {e}\n"
    return tasks, out


def _paired_text(paired: tuple | str, base: dict) -> str:
    """table.md's paired Δ tables (the accuracy one with the eval sets' baselines)."""
    if isinstance(paired, str):
        return paired
    tasks, sections = paired
    if not sections:
        return ""
    (ref, deltas, _), *loss = sections
    text = paired_markdown(deltas, ref, tasks, base)
    if loss:
        text += "\n" + paired_markdown(loss[0][1], ref, tasks, metric=LOGLOSS)
    return text


def _one_class_marks(facts: list[dict]) -> dict[str, dict[str, str]]:
    """Row name -> eval set -> marker, for the sets on which a run predicts one option on
    every example (report.one_class)."""
    out = {}
    for f in facts:
        run = RunLayout.of(Path(f["run"]))
        tables = [_read(run.predictions(s), pq.read_table) for s in f["seeds"]]
        out[f["name"]] = one_class(tables)
    return out


CAPTIONS = {
    "rows": "Bars: each row's Avg accuracy (the mean of its eval sets' accuracies), whiskers its "
            "95% interval; dotted line: the eval sets' majority-class accuracy, dashed: chance "
            "(their means). A bar at the dotted line has learned no more than the commonest "
            f"answer; {ONE_CLASS}: the row predicts one class on some set (see the accuracy "
            "table). Compare rows with the paired Δ tables, not by bar heights.",
    "budget": "Avg accuracy against the share of the pool each run trained on (log x), one line "
              "per method with its 95% band; dashed: the untuned model, dotted: the "
              "majority-class average.",
    "map": "Each point is a pool row (a sample of up to 4,000 and every selected row) on the two "
           "main principal components of its embedding, coloured and shaped by task family "
           "(grey: other); rings: rows in the target clusters; stars: the rows selected (first "
           "seed). Rows close together have similar prompts.",
    "radius": "k-center's coverage radius (the largest distance from a row of the cluster to its "
              "nearest chosen centre) after each centre it chose, one line per target cluster; "
              "where a line flattens, more rows add little coverage.",
    "coverage": "Left: the radius, the largest distance from a target row to its nearest selected "
                "row, which k-center minimises; right: the mean distance, which it does not "
                "minimise (random can be lower there). Lower is better in both; x: the first n "
                "rows of each selection (log).",
}


def write_run_report(paths: list[Path], out: Path, title: str | None = None,
                     reference: str | None = None) -> Path:
    """table.md/.csv + report.html/.md for the runs under `paths`, written into `out`; the
    paired Δs are against the run named `reference` (default: the untuned one)."""

    runs = find_runs(paths)
    per_row, facts, losses = collect(runs)
    rows = build_rows(per_row)
    loss_rows = build_rows(losses, metric=LOGLOSS)
    by_name = {f["name"]: f for f in facts}
    ref = _reference(per_row, by_name, reference)
    base = _baselines(by_name[ref or facts[0]["name"]])
    paired = _paired(per_row, ref, losses)
    majority, chance = (float(np.mean([b[k] for b in base.values()])) for k in ("majority",
                                                                                 "chance"))
    marks = _one_class_marks(facts)
    ticks = {name: f" {ONE_CLASS}" for name, m in marks.items() if m}
    figures = {"Average accuracy per row": (plot_rows(rows, "all rows", majority, chance, ticks),
                                            CAPTIONS["rows"])}
    samplers = [r for r in rows if by_name[r["name"]]["method"] in budgeted_methods()]
    budgets = {by_name[r["name"]]["budget"] for r in samplers}
    if len({by_name[r["name"]]["method"] for r in samplers}) > 1 and len(budgets) == 1:
        figures["Samplers at equal budget"] = (plot_rows(samplers, f"budget {budgets.pop()}",
                                                         majority, chance, ticks),
                                               CAPTIONS["rows"])
    points: dict[str, list] = {}
    labels = method_labels()
    for r in rows:
        f = by_name[r["name"]]
        if f["share_of_pool"] and "avg" in r["cells"]:
            c = r["cells"]["avg"]
            label = labels.get(f["method"], f["method"])
            points.setdefault(label, []).append((100 * f["share_of_pool"], c.mean, c.lo,
                                                       c.hi))
    untuned = [r["cells"]["avg"].mean for r in rows
               if by_name[r["name"]]["untuned"] and "avg" in r["cells"]]
    curve = plot_sweep(points, {}, untuned=untuned[0] if untuned else None, majority=majority)
    if curve is not None:  # one budget per method is not a curve
        figures["Accuracy vs budget"] = (curve, CAPTIONS["budget"])
    for run in runs:
        fig = _map_figure(RunLayout.of(run))
        if fig is not None:
            figures["Pool embeddings by task family"] = (fig, CAPTIONS["map"])
            break
    radius = _radius_figure(runs)
    if radius is not None:
        figures["K-center coverage radius"] = (radius, CAPTIONS["radius"])
    quality = {f["name"]: q for f in facts if (q := _quality(RunLayout.of(Path(f["run"]))))}
    curves = {name: q["coverage"] for name, q in quality.items() if "coverage" in q}
    if curves:
        figures["Coverage of the target rows"] = (plot_coverage(curves), CAPTIONS["coverage"])
    tables = {"Run facts": [_fact_row(f) for f in facts],
              "Stage seconds (all seeds) and peak memory": [_stage_row(f) for f in facts],
              "Selection quality (first seed, no training)": [
                  {"run": name, **{QUALITY_LABELS[k]: v for k, v in flatten(q).items()
                                   if k in QUALITY_LABELS}} for name, q in quality.items()]}
    notes = [f"Runs: {', '.join(str(r) for r in runs)}."]
    write_table(rows, out, facts=facts, loss_rows=loss_rows,
                paired=_paired_text(paired, base))  # written once every file was read
    sections = [] if isinstance(paired, str) else paired[1]
    if isinstance(paired, str):
        notes.insert(0, paired.strip())
    lead = [(f"The paired Δ tables compare every row with {ref} on the examples both scored "
             f"(+ = better than {ref}). " if sections else "")
            + f"Baselines: over the examples {ref or facts[0]['name']} scored."]
    html, _ = write_report(out, title or "coretune report", rows, figures, tables, notes,
                           loss_rows=loss_rows, lead=lead, baselines=base, marks=marks,
                           paired=sections)
    return html


QUALITY_LABELS = {
    "rows": "rows", "target_precision": "target precision",
    "target_task_recall": "target-task recall", "probe_mean": "probe distance mean",
    "probe_median": "median", "probe_p90": "p90", "radius": "coverage radius",
    "mean_distance": "mean distance", "tasks": "tasks", "top_task_share": "top task share",
    "majority_answer_share": "majority answer share"}


def _quality(run: RunLayout) -> dict | None:
    """The selection-quality record of the run's first evaluated seed, if any."""
    path = _first_file(run, lambda seed: output_paths(run.subset(seed))["quality"])
    return _read(path) if path is not None else None


def _evaluation_text(caps: dict, items: int) -> str:
    n, t = caps.get("max_examples"), caps.get("max_templates")
    own = "".join(f", {task} ≤{k}" for task, k in (caps.get("max_examples_by_task") or {}).items())
    chat = ", through the chat template" if caps.get("chat_template") else ""
    return (f"{f'≤{n}' if n else 'all'} examples{own} × {f'≤{t}' if t else 'all'} templates per "
            f"set ({items:,} items{chat})")


def _fact_row(f: dict) -> dict:
    selected = (f"{f['selected']:,} ({100 * f['share_of_pool']:.2f}%) by {f['method']}"
                if not f["untuned"] else "none (untuned model)")
    return {"run": f["name"], "reproduces": f["reproduces"], "model": f["model"],
            "pool rows": f"{f['pool_rows']:,}" if f["pool_rows"] else "–",
            "selected": selected, "seeds": _seeds_text(f["seeds"]),
            "evaluation": _evaluation_text(f["eval_caps"], f["eval_items"])}


def _seeds_text(seeds: list[int]) -> str:
    """How many seeds and which: '1 (seed 0)', '3 (seeds 0, 1, 2)'."""
    return f"{len(seeds)} (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})"


def _stage_row(f: dict) -> dict:
    order = [*SHARED_STAGES, *SEED_STAGES]
    stages = sorted(f["seconds"], key=lambda s: order.index(s) if s in order else len(order))
    return {"run": f["name"], **{
        stage: f"{f['seconds'][stage]:,.0f} s" + (f", {f['peak_rss_gb'][stage]:.2f} GiB"
                                                  if stage in f["peak_rss_gb"] else "")
        for stage in stages}}
