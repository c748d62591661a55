"""Selection-quality metrics on toy geometries with known answers, and the method table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coretune.data.pool import Pool
from coretune.errors import CoretuneError
from coretune.select.quality import (
    answer_balance,
    compare_methods,
    coverage_curve,
    flatten,
    probe_coverage,
    quality_table,
    selection_quality,
    target_scores,
    task_mix,
)


def circle(degrees) -> np.ndarray:
    a = np.radians(np.asarray(degrees, np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


def chord(degrees: float) -> float:  # Euclidean distance between unit vectors this far apart
    return math.sqrt(2 - 2 * math.cos(math.radians(degrees)))


def test_probe_coverage_known_answer():
    x = circle([0, 90, 180, 270, 10])
    # selected rows at 0 and 90 degrees; probes at 45 (both 45 away), 0 (on a row), 180 (90)
    pc = probe_coverage(x, [0, 1], circle([45, 0, 180, 200]))
    d = sorted([chord(45), 0.0, chord(90), chord(110)])
    assert pc["n"] == 4
    assert pc["mean"] == pytest.approx(np.mean(d), abs=1e-4)
    assert pc["median"] == pytest.approx(np.median(d), abs=1e-4)
    assert pc["p90"] == pytest.approx(np.percentile(d, 90), abs=1e-4)
    assert pc["max"] == pytest.approx(chord(110), abs=1e-4)
    with pytest.raises(CoretuneError, match="size 3 against 2"):
        probe_coverage(x, [0], np.ones((2, 3), np.float32))
    with pytest.raises(CoretuneError, match="no probe"):
        probe_coverage(x, [0], np.empty((0, 2), np.float32))


def test_coverage_curve_known_answer():
    x = circle([0, 90, 180, 270])
    cur = coverage_curve(x, [0, 2, 1, 3], points=4)
    assert cur["n"] == [1, 2, 3, 4]
    assert cur["radius"] == pytest.approx([2.0, chord(90), chord(90), 0.0], abs=1e-4)
    # only candidates 0 and 1 count: after the first row (0) the farthest is 90 degrees
    assert coverage_curve(x, [0, 2], candidates=[0, 1])["radius"][0] == pytest.approx(
        chord(90), abs=1e-4)


def test_answer_balance_on_a_toy_subset():
    b = answer_balance(["yes"] * 9 + [" no"])
    h = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / math.log(2)
    assert b["majority"] == "yes" and b["majority_share"] == 0.9
    assert b["entropy"] == pytest.approx(h, abs=1e-4) and b["top"] == {"yes": 0.9, "no": 0.1}
    even = answer_balance(["a", "b", "c", "a", "b", "c"])
    assert even["entropy"] == pytest.approx(1.0) and even["majority_share"] == pytest.approx(
        1 / 3, abs=1e-4)
    assert answer_balance(["x", "x"])["entropy"] == 0.0


def test_task_mix_and_target_scores():
    m = task_mix(["a", "a", "b", "c"], ["nli", "nli", "qa", "nli"])
    assert m["tasks"] == 3 and m["top_task_share"] == 0.5
    assert m["families"] == {"nli": 0.75, "qa": 0.25}
    ref = np.array([True, True, False, True, False])
    s = target_scores([0, 2], ref, ["rte", "cb", "x", "cb", "y"])
    assert s == {"precision": 0.5, "reference_rows_selected": 1, "task_recall": 0.5}


def toy_pool(n=200, d=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = (x[:, 0] > 0).astype(np.int64)  # two "clusters"
    recs = [{"uid": f"r{i}", "task": f"t{i % 7}", "prompt": f"p{i}",
             "target": "yes" if i % 3 else "no", "family": "nli" if labels[i] else "other"}
            for i in range(n)]
    return Pool.from_records(recs), x, labels


def test_selection_quality_and_method_table():
    pool, x, labels = toy_pool()
    probes = x[:10] + 0.01
    q = selection_quality(pool, x, [1, 5, 9], candidates=labels == 1, probes=probes)
    assert q["rows"] == 3 and q["coverage"]["n"][-1] == 3 and q["probe_coverage"]["n"] == 10
    assert q["target"]["reference"] == "nli"
    rows = compare_methods(pool, x, labels, [1], 20, probes=probes, seed=0)
    assert [r["method"] for r in rows] == ["kcenter", "random", "topk", "leastk", "mixed"]
    assert all(r["rows"] == 20 and r["target_precision"] == 1.0 for r in rows)
    by = {r["method"]: r for r in rows}
    # k-center minimises the coverage radius: no other method covers the candidates better
    assert by["kcenter"]["radius"] <= min(r["radius"] for r in rows)
    assert rows == compare_methods(pool, x, labels, [1], 20, probes=probes, seed=0)
    assert quality_table(rows).count("\n") == 2 + len(rows)


def test_flatten_with_and_without_embeddings():
    pool, x, labels = toy_pool()
    q = selection_quality(pool, x, [1, 5, 9], candidates=labels == 1, probes=x[:10] + 0.01)
    row = flatten(q)
    assert list(row)[:3] == ["rows", "radius", "mean_distance"]
    assert row["radius"] == q["coverage"]["radius"][-1] and "probe_p90" in row
    # a whole-pool selection (no embeddings): the task mix and the answers only
    bare = {k: q[k] for k in ("rows", "task_mix", "answer_balance")}
    assert flatten(bare) == {k: row[k] for k in ("rows", "tasks", "top_task_share",
                                                  "majority_answer_share", "answer_entropy")}
