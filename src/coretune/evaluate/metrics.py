"""The numbers of an evaluation: accuracy and gold-option log-loss per template and per example
(their intervals: `coretune.stats`).

Log-loss of an (example, template): -log of the gold option's probability under the softmax
over the options' ranking scores (the scores the prediction takes the argmax of: summed token
log-probs, or their per-token mean with `length_norm`). In nats; lower is better; uniform over
k options gives log k. Unlike accuracy it moves when the gold option gains probability without
overtaking another, so two runs that differ by little show it on fewer examples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import log_softmax

from coretune.evaluate.tasks import Item
from coretune.io import read_json
from coretune.stats import LOGLOSS, task_interval


def gold_logloss(ranked: np.ndarray, gold: int) -> float:
    """-log p(gold) under the softmax over one item's option scores (nats)."""
    return float(-log_softmax(np.asarray(ranked, dtype=np.float64))[gold])


def _frame(table: Any):
    import pandas as pd
    import pyarrow.parquet as pq

    if isinstance(table, str | Path):
        table = pq.read_table(table)
    return table if isinstance(table, pd.DataFrame) else table.to_pandas()


def _per_example(df, column: str) -> dict[str, np.ndarray]:
    return {str(task): g.groupby("example", sort=True)[column].mean().to_numpy(dtype=np.float64)
            for task, g in df.groupby("task", sort=False)}


def per_example_accuracy(table: Any) -> dict[str, np.ndarray]:
    """From a predictions table (Arrow/pandas/path): task -> accuracy per example, averaged
    over templates, in example order (what the intervals resample)."""
    return _per_example(_frame(table), "correct")


def per_example_logloss(table: Any, length_norm: bool | None = None) -> dict[str, np.ndarray]:
    """Like `per_example_accuracy`, the gold-option log-loss (nats). Tables written before the
    `logloss` column existed are scored from their `logprob` and `n_tokens` columns, ranked as
    the run ranked them: `length_norm`, else the `metrics.json` beside a path. {} when the table
    has no option scores (nothing to compute it from)."""
    df = _frame(table)
    if "logloss" not in df.columns:
        if "logprob" not in df.columns:
            return {}
        if length_norm is None:
            beside = Path(table).with_name("metrics.json") if isinstance(table, str | Path) \
                else None
            length_norm = bool(beside and beside.is_file() and read_json(beside).get(
                "length_norm"))
        df = df.assign(logloss=[
            gold_logloss(np.asarray(s) / np.asarray(n) if length_norm else s, g)
            for s, n, g in zip(df["logprob"], df["n_tokens"], df["label"], strict=True)])
    return _per_example(df, "logloss")


def task_metrics(items: list[Item], correct: np.ndarray, used: dict,
                 logloss: np.ndarray) -> dict:
    """One set's metrics; `logloss` per item; intervals as the table's (`task_interval`). The
    per-example arrays come back under `_per_example` (accuracy) and `_per_example_logloss`."""
    by_template: dict[str, list[bool]] = {}
    by_example: dict[int, list[int]] = {}
    for k, (it, c) in enumerate(zip(items, correct, strict=True)):
        by_template.setdefault(it.template, []).append(bool(c))
        by_example.setdefault(it.example, []).append(k)
    acc = {t: 100 * float(np.mean(v)) for t, v in by_template.items()}
    rows = [by_example[e] for e in sorted(by_example)]
    per_ex = np.array([np.mean(correct[r]) for r in rows])
    per_ex_loss = np.array([np.mean(logloss[r]) for r in rows])
    ci, loss_ci = task_interval([per_ex]), task_interval([per_ex_loss], LOGLOSS)
    return {"accuracy_per_template": acc, "mean": float(np.mean(list(acc.values()))),
            "median": float(np.median(list(acc.values()))), "ci95": [ci.lo, ci.hi],
            "n_items": len(items), **{f"n_{k}": v for k, v in used.items()
                                      if k in ("examples", "examples_total", "templates_total")},
            "templates": used["templates"],
            "logloss": float(per_ex_loss.mean()),
            "logloss_ci95": [loss_ci.lo, loss_ci.hi],
            "p_gold": float(np.mean([np.mean(np.exp(-logloss[r])) for r in rows])),
            "_per_example": per_ex, "_per_example_logloss": per_ex_loss}
