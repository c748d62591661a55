"""Paired statistics and the knee, on constructed data with known answers."""

import numpy as np
import pytest

from coretune.errors import CoretuneError
from coretune.stats import (
    LOGLOSS,
    accuracy,
    baselines,
    knee,
    paired_delta,
    replicates,
    sign_flip_p,
)


def _run(*seeds):
    return [{"rte": np.asarray(s, dtype=float)} for s in seeds]


def test_identical_runs_have_zero_width_interval_at_zero():
    rng = np.random.default_rng(1)
    seeds = [rng.integers(0, 2, 200) for _ in range(3)]  # seeds that disagree with each other
    d = paired_delta(_run(*seeds), _run(*seeds))
    assert (d.delta, d.lo, d.hi, d.p) == (0.0, 0.0, 0.0, 1.0)


def test_identical_runs_have_zero_log_loss_delta():
    rng = np.random.default_rng(1)
    seeds = [rng.exponential(0.7, 200) for _ in range(2)]
    d = paired_delta(_run(*seeds), _run(*seeds), metric=LOGLOSS)
    assert (d.delta, d.lo, d.hi, d.p) == (0.0, 0.0, 0.0, 1.0)


def test_log_loss_delta_is_positive_when_lower():
    """Δ log-loss is the reference's minus the row's, in nats: + means better, and it is the
    accuracy Δ's machinery with the runs swapped (same interval, same p)."""
    rng = np.random.default_rng(4)
    worse = rng.exponential(0.7, 300)
    better = worse - rng.uniform(0, 0.2, 300)  # every example 0-0.2 nats lower
    d = paired_delta(_run(better), _run(worse), metric=LOGLOSS)
    assert d.delta == pytest.approx(float((worse - better).mean()))
    assert 0 < d.lo < d.delta < d.hi and d.p < 0.001
    raw = paired_delta(_run(worse), _run(better))  # the plain a - b, in points
    assert (d.lo, d.hi, d.p) == pytest.approx((raw.lo / 100, raw.hi / 100, raw.p))
    assert paired_delta(_run(worse), _run(better), metric=LOGLOSS).delta == -d.delta


def test_knee_by_log_loss_takes_the_lowest_as_best():
    losses = [np.full(50, v) + np.linspace(0, 0.1, 50) for v in (0.7, 0.6, 0.5)]
    k = knee([(f"b{i}", _run(x)) for i, x in enumerate(losses)], tol=0.02, metric=LOGLOSS)
    assert k.best == "b2" and k.budget == "b2"
    flat = knee([(f"b{i}", _run(losses[0])) for i in range(3)], tol=0.02, metric=LOGLOSS)
    assert flat.budget == "b0"


def test_known_shift_of_k_answers():
    rng = np.random.default_rng(2)
    base = rng.integers(0, 2, 100)
    wrong = np.flatnonzero(base == 0)[:12]
    better = base.copy()
    better[wrong] = 1  # 12 of 100 examples fixed, nothing broken
    d = paired_delta(_run(better), _run(base))
    assert d.delta == pytest.approx(12.0)
    assert 0 < d.lo <= 12.0 <= d.hi
    # all 12 differences point the same way: exact p = 2 / 2**12
    assert d.p == pytest.approx(2 / 2**12)


def test_sign_flip_p_on_constructed_example():
    # 3 examples +1, 1 example -1: of 16 sign patterns, |sum| >= 2 in 10 (sum 4: 2, sum 2: 8)
    assert sign_flip_p([np.array([1.0, 1.0, 1.0, -1.0])]) == pytest.approx(10 / 16)
    assert sign_flip_p([np.zeros(5)]) == 1.0


def test_sampled_sign_flip_agrees_with_exact_scale():
    rng = np.random.default_rng(3)
    d = rng.normal(0.1, 1.0, 400)
    p = sign_flip_p([d], flips=4000, rng=np.random.default_rng(0))
    # normal approximation of the same test
    from math import erf, sqrt
    z = abs(d.mean()) / (np.sqrt((d**2).mean()) / sqrt(len(d)))
    assert abs(p - (1 - erf(z / sqrt(2)))) < 0.03


def test_replicates_share_example_draws_across_runs_and_seeds():
    """The one bootstrap behind the table's intervals and the paired Δ."""
    rng = np.random.default_rng(5)
    a = _run(rng.integers(0, 2, 50), rng.integers(0, 2, 50))
    r = replicates([a, a], ["rte"], 200, np.random.default_rng(0))
    assert r.shape == (200, 2) and np.array_equal(r[:, 0], r[:, 1]) and r[:, 0].std() > 0
    # seeds that scored different numbers of examples (other caps) are drawn seed by seed
    ragged = replicates([_run(np.ones(10), np.zeros(20))], ["rte"], 200,
                        np.random.default_rng(0))[:, 0]
    assert set(np.unique(ragged)) == {0.0, 0.5, 1.0}


def test_mismatched_examples_are_refused():
    with pytest.raises(CoretuneError, match="same examples"):
        paired_delta(_run([1, 0, 1]), _run([1, 0]))


def test_baselines():
    b = baselines([0, 0, 0, 1, 2, 0], n_choices=3)
    assert b["majority"] == pytest.approx(100 * 4 / 6)
    assert b["chance"] == pytest.approx(100 / 3)
    # label frequencies 4/6, 1/6, 1/6: the best constant guess's log-loss is their entropy
    p = np.array([4, 1, 1]) / 6
    assert b["prior_logloss"] == pytest.approx(-(p * np.log(p)).sum())
    assert b["uniform_logloss"] == pytest.approx(np.log(3))
    assert b["prior_logloss"] < b["uniform_logloss"]


def _curve(levels, n=400, seeds=2, noise=0.0, seed=0):
    """Per-example accuracy with a given mean per budget; each budget's examples are the
    previous budget's plus some fixed (nested improvements, as a real sweep shows)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    curve = []
    for i, level in enumerate(levels):
        runs = []
        for _ in range(seeds):
            x = np.zeros(n)
            x[order[: int(round(level * n))]] = 1
            flip = rng.random(n) < noise
            x[flip] = 1 - x[flip]
            runs.append(x)
        curve.append((f"b{i}", _run(*runs)))
    return curve


def test_knee_flat_curve_is_the_smallest_budget():
    k = knee(_curve([0.6, 0.6, 0.6, 0.6]))
    assert k.budget == "b0"


def test_knee_monotone_curve_is_the_best_budget():
    k = knee(_curve([0.40, 0.50, 0.60, 0.70]))
    assert k.budget == "b3" and k.best == "b3"


def test_knee_saturating_curve():
    k = knee(_curve([0.40, 0.55, 0.70, 0.705]))
    assert k.budget == "b2" and k.best == "b3"
    assert k.vs_best.delta == pytest.approx(-0.5, abs=0.01)


def test_knee_noisy_plateau_within_tolerance():
    k = knee(_curve([0.30, 0.60, 0.605, 0.60], noise=0.02, seed=4), tol=1.0)
    assert k.budget == "b1"
    assert accuracy(_curve([0.5])[0][1], ["rte"]) == pytest.approx(50.0)


def test_knee_rejects_duplicate_budgets():
    c = _curve([0.5, 0.6])
    with pytest.raises(CoretuneError, match="duplicate"):
        knee([c[0], ("b0", c[1][1])])


def test_paired_rows_and_markdown():
    import pyarrow as pa

    from coretune.report.compare import majority_baselines, paired_markdown, paired_rows

    base = _run([1, 0, 0, 1])
    runs = {"vanilla": base, "tuned": _run([1, 1, 1, 1])}
    rows = paired_rows(runs, "vanilla", ["rte"])
    assert [r["name"] for r in rows] == ["tuned"]
    assert rows[0]["cells"]["rte"].delta == pytest.approx(50.0)
    assert rows[0]["cells"]["avg"].delta == pytest.approx(50.0)
    # 3 examples x 2 templates; gold labels 0, 0, 1 out of 2 choices
    preds = pa.table({"task": ["rte"] * 6, "example": [0, 0, 1, 1, 2, 2],
                      "label": [0, 0, 0, 0, 1, 1], "choices": [["yes", "no"]] * 6})
    b = majority_baselines(preds)
    assert b["rte"]["majority"] == pytest.approx(200 / 3) and b["rte"]["chance"] == 50.0
    md = paired_markdown(rows, "vanilla", ["rte"], b)
    assert "| tuned | +50.0 [" in md and "| majority | 66.7 |" in md
