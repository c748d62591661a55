"""Statistics of an evaluation: accuracy per template and per example, and 95% percentile
bootstrap intervals over examples. Imports: numpy; pandas and pyarrow lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from coretune.evaluate.tasks import Item

BOOTSTRAP_REPS = 2000


def bootstrap_ci(per_example: np.ndarray, reps: int = BOOTSTRAP_REPS, seed: int = 0
                 ) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    n = len(per_example)
    means = per_example[rng.integers(0, n, (reps, n))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(100 * lo), float(100 * hi)


def avg_ci(per_task: Sequence[np.ndarray], reps: int = BOOTSTRAP_REPS, seed: int = 0
           ) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = np.mean([x[rng.integers(0, len(x), (reps, len(x)))].mean(axis=1)
                     for x in per_task], axis=0)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(100 * lo), float(100 * hi)


def per_example_accuracy(table: Any) -> dict[str, np.ndarray]:
    """From a predictions table (Arrow/pandas/path): task -> accuracy per example, averaged
    over templates, in example order (what the intervals resample)."""
    import pandas as pd
    import pyarrow.parquet as pq

    if isinstance(table, str | Path):
        table = pq.read_table(table)
    df = table if isinstance(table, pd.DataFrame) else table.to_pandas()
    out = {}
    for task, g in df.groupby("task", sort=False):
        out[str(task)] = (g.groupby("example", sort=True)["correct"].mean()
                          .to_numpy(dtype=np.float64))
    return out


def task_metrics(items: list[Item], correct: np.ndarray, used: dict, seed: int) -> dict:
    by_template: dict[str, list[bool]] = {}
    by_example: dict[int, list[bool]] = {}
    for it, c in zip(items, correct, strict=True):
        by_template.setdefault(it.template, []).append(bool(c))
        by_example.setdefault(it.example, []).append(bool(c))
    acc = {t: 100 * float(np.mean(v)) for t, v in by_template.items()}
    per_ex = np.array([np.mean(by_example[k]) for k in sorted(by_example)])
    lo, hi = bootstrap_ci(per_ex, seed=seed)
    return {"accuracy_per_template": acc, "mean": float(np.mean(list(acc.values()))),
            "median": float(np.median(list(acc.values()))), "ci95": [lo, hi],
            "n_items": len(items), **{f"n_{k}": v for k, v in used.items()
                                      if k in ("examples", "examples_total", "templates_total")},
            "templates": used["templates"], "_per_example": per_ex}
