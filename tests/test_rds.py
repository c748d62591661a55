"""RDS+ round-robin selection on geometries with a known answer, and against the rule
written out plainly (every query pops its next row in turn; a taken row spends the turn)."""

import numpy as np
import pytest

from coretune.errors import CoretuneError
from coretune.select.rds import rds_order


def _unit(angles_deg):
    a = np.radians(np.asarray(angles_deg, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


def _popping(x, q, budget):
    """The rule, one pop at a time over each query's whole ranking (stable: lowest index
    first on ties)."""
    sims = q.astype(np.float32) @ x.astype(np.float32).T
    queue = [sorted(range(len(x)), key=lambda j, s=s: -s[j]) for s in sims]
    picked = []
    while len(picked) < budget:
        for ranking in queue:
            row = ranking.pop(0)
            if row not in picked:
                picked.append(row)
            if len(picked) == budget:
                break
    return picked


def test_a_taken_row_spends_the_turn():
    # rows at 45, 10, 80 deg; queries at 30 (ranks 45, 10, 80) and 60 (ranks 45, 80, 10):
    # the 60-deg query pops 45, already taken, and its turn ends; 30 then takes 10
    x, q = _unit([45, 10, 80]), _unit([30, 60])
    assert rds_order(x, q, 2).tolist() == [0, 1]
    assert rds_order(x, q, 3).tolist() == [0, 1, 2]


def test_rounds_that_add_nothing_and_exhausted_rankings_end():
    # two queries ranking the same two rows in opposite orders: round 2 offers only taken rows
    x, q = _unit([0, 90, 45]), _unit([-10, 100])
    assert rds_order(x, q, 3).tolist() == [0, 1, 2]
    # identical queries: each round adds one row, the rankings run n deep (past the budget
    # the first ranking covered)
    x = _unit([0, 20, 40, 60, 80])
    assert rds_order(x, _unit([0, 0, 0]), 5).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("kind", ["random", "clustered", "tied"])
def test_same_rows_as_the_rule_written_out(kind):
    rng = np.random.default_rng({"random": 0, "clustered": 1, "tied": 2}[kind])
    if kind == "tied":  # 10 distinct rows, each 6 times: every ranking full of exact ties
        x = np.repeat(rng.normal(size=(10, 4)), 6, axis=0)
    elif kind == "clustered":
        x = np.repeat(rng.normal(size=(4, 8)), 30, axis=0) + 0.05 * rng.normal(size=(120, 8))
    else:
        x = rng.normal(size=(120, 8))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    q = x[rng.choice(len(x), 9, replace=False)] + 0.02 * rng.normal(size=(9, x.shape[1]))
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    for budget in (1, 9, 25, 60):
        assert rds_order(x, q, budget).tolist() == _popping(x, q, budget), budget


def test_round_robin_alternates_between_queries():
    # rows at 0, 5, 10 degrees near query A (0 deg); rows at 90, 85 near query B (90 deg)
    x = _unit([10, 90, 0, 85, 5, 45])
    q = _unit([0, 90])
    assert rds_order(x, q, 5).tolist() == [2, 1, 4, 3, 0]
    # B's third row is 45 deg, free: it takes it
    assert rds_order(x, q, 6).tolist() == [2, 1, 4, 3, 0, 5]


def test_prefix_property_and_no_duplicates():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[rng.choice(500, 7, replace=False)] + 0.1
    full = rds_order(x, q, 120)
    assert len(set(full.tolist())) == 120
    for b in (1, 7, 30, 119):
        assert rds_order(x, q, b).tolist() == full[:b].tolist()


def test_exact_ties_resolve_by_row_index():
    x = np.repeat(_unit([0, 30]), 4, axis=0)  # four copies of each row
    order = rds_order(x, _unit([0]), 5)
    assert order.tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("budget", [0, 7])
def test_budget_out_of_range(budget):
    with pytest.raises(CoretuneError, match="budget"):
        rds_order(_unit([0, 1, 2, 3, 4, 5]), _unit([0]), budget)


def test_dimension_mismatch():
    with pytest.raises(CoretuneError, match="dimensions"):
        rds_order(_unit([0, 1]), np.ones((1, 3), dtype=np.float32), 1)


def test_rds_method_takes_one_job_over_all_target_rows():
    """`method rds` through the selection engine: the target clusters' rows as one
    candidate set (not split per cluster), the target examples as queries."""
    from coretune.select import select_rows

    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = rng.integers(0, 5, 300)
    q = x[[3, 50, 120]] + 0.05
    got = select_rows(x, labels, [1, 3], 20, "rds", seed=0, queries=q)
    rows = np.flatnonzero(np.isin(labels, [1, 3]))
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    assert got.indices.tolist() == rows[rds_order(x[rows], qn, 20)].tolist()
    assert (got.cluster == labels[got.indices]).all() and np.isnan(got.radius).all()
    assert np.isin(labels[got.indices], [1, 3]).all()
    # a prefix order through the engine too
    small = select_rows(x, labels, [1, 3], 7, "rds", seed=0, queries=q)
    assert small.indices.tolist() == got.indices[:7].tolist()
    with pytest.raises(CoretuneError, match="needs target examples"):
        select_rows(x, labels, [1, 3], 20, "rds", seed=0)
    with pytest.raises(CoretuneError, match="dimensions"):
        select_rows(x, labels, [1, 3], 20, "rds", seed=0, queries=q[:, :4])
