"""Paired comparison tables of finished runs: every row against a reference run (e.g. the
untuned model), per eval set and on the average, beside the eval sets' majority-class and
chance accuracy (the numbers: `coretune.stats`)."""

from __future__ import annotations

from collections.abc import Sequence

from coretune.stats import ACCURACY, Metric, Run, baselines, paired_delta


def paired_rows(runs: dict[str, Run], reference: str, tasks: Sequence[str],
                metric: Metric = ACCURACY) -> list[dict]:
    """Δ of every row against `reference` (e.g. the untuned model), per task and on the
    average: {"name", "cells": {task | "avg": Delta}}; tasks a row lacks are left out."""
    ref = runs[reference]
    out = []
    for name, run in runs.items():
        if name == reference:
            continue
        cells = {}
        shared = [t for t in tasks if all(t in s for s in (*run, *ref))]
        for t in shared:
            cells[t] = paired_delta(run, ref, [t], metric=metric)
        if shared:
            cells["avg"] = paired_delta(run, ref, shared, metric=metric)
        out.append({"name": name, "cells": cells})
    return out


def majority_baselines(predictions) -> dict[str, dict[str, float]]:
    """Per eval set, from a predictions table (one row per example x template, with `task`,
    `example`, `label`, `choices`): accuracy of always giving the most common gold label over
    the examples that were scored, and of uniform chance."""
    df = predictions.to_pandas() if hasattr(predictions, "to_pandas") else predictions
    out = {}
    for task, g in df.groupby("task", sort=False):
        first = g.groupby("example", sort=True).first()
        out[str(task)] = baselines(first["label"].to_numpy(),
                                   int(first["choices"].map(len).max()))
    return out


def delta_unit(metric: Metric) -> str:
    """What a Δ of `metric` is measured in and which way is better, in words."""
    if metric.higher_is_better:
        return f"{metric.label} {metric.unit}"
    return f"{metric.label} {metric.unit}, reference minus row: + = lower {metric.label}, better"


def paired_markdown(deltas: list[dict], reference: str, tasks: Sequence[str],
                    base: dict[str, dict[str, float]] | None = None,
                    metric: Metric = ACCURACY) -> str:
    """Markdown: Δ accuracy points (or `metric`) vs `reference` with 95% paired intervals and
    p-values, and (when given) each eval set's majority-class and chance accuracy."""
    cols = [*tasks, "avg"]
    what = "" if metric is ACCURACY else f" {metric.label}"
    lines = [f"Paired Δ{what} vs `{reference}` ({delta_unit(metric)}; 95% paired-bootstrap "
             "interval over examples and seeds; p from a paired sign-flip test):", "",
             "| Row | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for row in deltas:
        cells = [row["cells"][c].text(metric.digits) if c in row["cells"] else "–"
                 for c in cols]
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    if base:
        lines += ["", "| baseline | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
        for kind in ("majority", "chance"):
            vals = [f"{base[t][kind]:.1f}" if t in base else "–" for t in tasks]
            lines.append(f"| {kind} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"
