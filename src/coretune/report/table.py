"""The paper-style table: accuracy per eval set, mean ± 95% interval over seeds and examples;
the same for the gold-option log-loss (nats, lower is better) in table.md, not table.csv.

The intervals are `coretune.stats.task_interval` and `average_interval`: a two-level bootstrap
over seeds and examples (one seed, or seeds that agree exactly, give the example bootstrap).
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path

import numpy as np

from coretune.data.sources import EVAL_HEADERS
from coretune.stats import ACCURACY, Metric, average_interval, task_interval

TASKS = list(EVAL_HEADERS)  # the shipped evaluation sets, in the paper's order
HEADERS = {**EVAL_HEADERS, "avg": "Avg"}

# The paper's headline table (Galactica-1.3b on P3; docs/method.md), for side-by-side comparison.
PAPER = {
    "Vanilla model": [54.51, 41.07, 33.40, 33.40, 33.58, 39.19],
    "P3 100%": [76.17, 75.00, 44.00, 35.70, 39.42, 54.06],
    "Fixed instruction 10%": [71.11, 66.07, 43.60, 38.90, 42.17, 52.37],
    "NLI-related 5%": [79.06, 82.14, 60.40, 46.50, 46.67, 62.95],
    "NLI coreset 0.5%": [74.73, 73.21, 49.60, 41.90, 43.75, 56.64],
}


def build_rows(runs: dict[str, list[dict[str, np.ndarray]]], tasks=TASKS,
               metric: Metric = ACCURACY) -> list[dict]:
    """`runs`: row name -> one dict per seed of {task: per-example accuracy} (or `metric`'s
    values). Each cell is a `coretune.stats.Interval`; Avg = mean of the task means (over the
    tasks the row was evaluated on), its interval resampling the same way, task by task."""
    rows = []
    for name, seeds in runs.items():
        row = {"name": name, "cells": {}}
        for t in tasks:
            per_seed = [s[t] for s in seeds if t in s]
            if per_seed:
                row["cells"][t] = task_interval(per_seed, metric)
        present = [t for t in tasks if t in row["cells"]]
        if present:
            row["cells"]["avg"] = average_interval(seeds, present, metric)
        rows.append(row)
    return rows


def seed_line(name: str, per_task: dict[str, np.ndarray]) -> str:
    """One seed's row as `coretune run` prints it: the table's cells of that seed alone, every
    set it was evaluated on (the shipped ones first)."""
    tasks = [*(t for t in TASKS if t in per_task), *(t for t in per_task if t not in TASKS)]
    cells = build_rows({name: [per_task]}, tasks)[0]["cells"]
    return f"{name} | " + " | ".join(f"{HEADERS.get(c, c)} {cells[c].text()}"
                                     for c in [*tasks, "avg"])


def to_markdown(rows: list[dict], tasks=TASKS, paper: bool = True) -> str:
    cols = [*tasks, "avg"]
    out = io.StringIO()
    out.write("| Row | seeds | " + " | ".join(HEADERS.get(c, c) for c in cols) + " |\n")
    out.write("|---|---|" + "---|" * len(cols) + "\n")
    for row in rows:
        cells = [row["cells"][c].text() if c in row["cells"] else "–" for c in cols]
        n = max((c.n_seeds for c in row["cells"].values()), default=0)
        out.write(f"| {row['name']} | {n} | " + " | ".join(cells) + " |\n")
    if paper and tasks == TASKS:
        out.write("\nThe paper (Galactica-1.3b on P3; docs/method.md), for comparison:\n\n")
        out.write("| Row | " + " | ".join(HEADERS[c] for c in cols) + " |\n")
        out.write("|---|" + "---|" * len(cols) + "\n")
        for name, values in PAPER.items():
            out.write(f"| {name} | " + " | ".join(f"{v:.2f}" for v in values) + " |\n")
    return out.getvalue()


def to_csv(rows: list[dict], tasks=TASKS) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["row", "task", "mean", "ci_low", "ci_high", "seeds", "examples"])
    for row in rows:
        for c in [*tasks, "avg"]:
            if c in row["cells"]:
                cell = row["cells"][c]
                w.writerow([row["name"], c, f"{cell.mean:.2f}", f"{cell.lo:.2f}", f"{cell.hi:.2f}",
                            cell.n_seeds, cell.n_examples])
    return out.getvalue()


def group_runs(entries: list[tuple[str, dict[str, np.ndarray]]]) -> dict[str, list]:
    grouped: dict[str, list] = defaultdict(list)
    for name, per_task in entries:
        grouped[name].append(per_task)
    return dict(grouped)


def stage_table(facts: list[dict]) -> str:
    """Per run: rows trained on, each stage's seconds (summed over seeds) and peak resident
    memory (the largest over seeds), from the stages' manifests (`summary.collect`)."""
    lines = ["| config | seeds | rows trained on (of pool) | stage time, all seeds (s) "
             "| stage peak RSS (GiB) |", "|---|---|---|---|---|"]
    for f in facts:
        pool = f" (of {f['pool_rows']:,})" if f["pool_rows"] else ""
        secs = ", ".join(f"{k} {v:.0f}" for k, v in f["seconds"].items() if v >= 1)
        peaks = ", ".join(f"{k} {v:.1f}" for k, v in f.get("peak_rss_gb", {}).items()) or "–"
        lines.append(f"| `{Path(f['run']).name}` | {len(f['seeds'])} | {f['selected']:,}{pool} "
                     f"| {sum(f['seconds'].values()):.0f}: {secs} | {peaks} |")
    return "\n".join(lines) + "\n"


LOGLOSS_TITLE = ("Gold-option log-loss (nats, lower is better): -log p(gold) under the softmax "
                 "over the options' scores, mean over examples with a 95% interval over seeds "
                 "and examples:")


def write_table(rows: list[dict], out_dir: Path, tasks=TASKS,
                facts: list[dict] = (), paired: str = "",
                loss_rows: list[dict] = ()) -> tuple[Path, Path]:
    """table.md (accuracy, the paper's rows, the log-loss of `loss_rows` when given, the
    `paired` comparison text and the stage table when `facts` are given) and table.csv
    (accuracy)."""
    from coretune.io import write_text

    md, csv_path = out_dir / "table.md", out_dir / "table.csv"
    text = to_markdown(rows, tasks)
    if loss_rows:
        text += "\n" + LOGLOSS_TITLE + "\n\n" + to_markdown(list(loss_rows), tasks, paper=False)
    text += "\n" + paired if paired else ""
    write_text(md, text + ("\n" + stage_table(facts) if facts else ""))
    write_text(csv_path, to_csv(rows, tasks))
    return md, csv_path
