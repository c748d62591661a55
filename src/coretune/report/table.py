"""The paper-style table: accuracy per eval set, mean ± 95% interval over seeds and examples;
the same for the gold-option log-loss (nats, lower is better) in table.md, not table.csv.

The interval is a two-level bootstrap: resample seeds (runs) with replacement and the evaluation
examples with replacement (one draw shared by all seeds, since every run scores the same
examples), and take the mean accuracy; 2.5th and 97.5th percentiles of 2,000 replicates. A
single seed, or seeds that agree exactly, give the usual example bootstrap.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coretune.stats import ACCURACY, Metric, replicates

TASKS = ["rte", "cb", "anli_r1", "anli_r2", "anli_r3"]
HEADERS = {"rte": "RTE", "cb": "CB", "anli_r1": "ANLI R1", "anli_r2": "ANLI R2",
           "anli_r3": "ANLI R3", "avg": "Avg"}

# PAPER.md headline table (Galactica-1.3b on P3), for side-by-side comparison.
PAPER = {
    "Vanilla model": [54.51, 41.07, 33.40, 33.40, 33.58, 39.19],
    "P3 100%": [76.17, 75.00, 44.00, 35.70, 39.42, 54.06],
    "Fixed instruction 10%": [71.11, 66.07, 43.60, 38.90, 42.17, 52.37],
    "NLI-related 5%": [79.06, 82.14, 60.40, 46.50, 46.67, 62.95],
    "NLI coreset 0.5%": [74.73, 73.21, 49.60, 41.90, 43.75, 56.64],
}


@dataclass
class Cell:
    mean: float
    lo: float
    hi: float
    n_seeds: int
    n_examples: int
    digits: int = 1

    def text(self) -> str:
        d = self.digits
        return f"{self.mean:.{d}f} [{self.lo:.{d}f}, {self.hi:.{d}f}]"


def bootstrap(per_seed: list[np.ndarray], reps: int = 2000, seed: int = 0,
              metric: Metric = ACCURACY) -> Cell:
    """`per_seed`: for each seed, per-example accuracy in [0, 1] (templates averaged), or the
    per-example values of `metric`."""
    means = replicates([[{"x": x} for x in per_seed]], ["x"], reps,
                       np.random.default_rng(seed))[:, 0]
    point = float(np.mean([x.mean() for x in per_seed]))
    lo, hi = np.percentile(means, [2.5, 97.5])
    f = metric.scale
    return Cell(f * point, f * lo, f * hi, len(per_seed),
                int(np.mean([len(x) for x in per_seed])), metric.digits)


def build_rows(runs: dict[str, list[dict[str, np.ndarray]]], tasks=TASKS,
               metric: Metric = ACCURACY) -> list[dict]:
    """`runs`: row name -> one dict per seed of {task: per-example accuracy} (or `metric`'s
    values). Avg = mean of the task means (over the tasks the row was evaluated on); its
    interval resamples the same way, task by task."""
    rows = []
    for name, seeds in runs.items():
        row = {"name": name, "cells": {}}
        for t in tasks:
            per_seed = [s[t] for s in seeds if t in s]
            if per_seed:
                row["cells"][t] = bootstrap(per_seed, metric=metric)
        present = [t for t in tasks if t in row["cells"]]
        if present:
            row["cells"]["avg"] = _avg_cell(seeds, present, metric=metric)
        rows.append(row)
    return rows


def _avg_cell(seeds: list[dict[str, np.ndarray]], tasks, reps: int = 2000,
              metric: Metric = ACCURACY) -> Cell:
    means = replicates([seeds], tasks, reps, np.random.default_rng(1))[:, 0]
    point = float(np.mean([np.mean([s[t].mean() for t in tasks]) for s in seeds]))
    lo, hi = np.percentile(means, [2.5, 97.5])
    f = metric.scale
    return Cell(f * point, f * lo, f * hi, len(seeds), 0, metric.digits)


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
        out.write("\nPAPER.md (Galactica-1.3b on P3), for comparison:\n\n")
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
