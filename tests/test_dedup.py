"""Near-duplicate removal: first of each group kept, deterministic, bad thresholds refused."""

from __future__ import annotations

import numpy as np
import pytest

from coretune.errors import CoretuneError
from coretune.select.dedup import dedup, similar_pairs


def unit(rows) -> np.ndarray:
    x = np.asarray(rows, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_keeps_the_first_of_each_group():
    a, b = [1, 0, 0], [0, 1, 0]
    x = unit([b, a, [1, 0.05, 0], b, [0, 0, 1], a, [0.05, 1, 0]])
    d = dedup(x, 0.99)
    assert d.kept.tolist() == [0, 1, 4]
    assert d.duplicate_of.tolist() == [-1, -1, 1, 0, -1, 1, 0]
    assert d.removed == 4 and d.summary()["kept"] == 3
    texts = [f"t{i}" for i in range(7)]
    ex = d.examples(texts, n=2)
    assert ex[0] == {"row": 2, "duplicate_of": 1, "cosine": pytest.approx(0.9988, abs=1e-4),
                     "text": "t2", "kept_text": "t1"}
    # threshold 1: only exact copies (float32 rounding tolerated)
    assert dedup(x, 1.0).kept.tolist() == [0, 1, 2, 4, 6]


def test_a_dropped_row_does_not_drop_its_own_neighbours():
    # 0 and 1 at 0.995, 1 and 2 at 0.995, 0 and 2 at 0.98: 1 goes, 2 stays (its only
    # neighbour above 0.99 was dropped)
    ang = np.radians([0, 5.7, 11.4])
    x = unit(np.stack([np.cos(ang), np.sin(ang)], 1))
    assert dedup(x, 0.99).kept.tolist() == [0, 2]


def test_deterministic_and_blocks_do_not_matter():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((300, 24)).astype(np.float32)
    x = np.concatenate([base, base[:100] + 0.02 * rng.standard_normal((100, 24)),
                        base[50:80]]).astype(np.float32)
    rng.shuffle(x)
    one = dedup(x, 0.95)
    again = dedup(x, 0.95, block=37)
    assert np.array_equal(one.keep, again.keep)
    assert np.array_equal(one.duplicate_of, again.duplicate_of)
    assert one.removed == 130
    # brute force: same pairs as a dense similarity matrix
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = u @ u.T
    want = {(i, j) for i, j in zip(*np.nonzero(np.triu(sim >= 0.95 - 1e-6, 1)), strict=True)}
    i, j, _ = similar_pairs(x, 0.95, block=64)
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == want


@pytest.mark.parametrize("bad", [0, -0.5, 1.01, float("nan"), "high"])
def test_threshold_outside_zero_one_is_refused(bad):
    with pytest.raises(CoretuneError, match=r"dedup threshold must be .*in \(0, 1\]"):
        dedup(unit([[1, 0]]), bad)
