"""select_rows and the budget rules: every method, determinism, errors."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest

from coretune.errors import CoretuneError
from coretune.select import (
    METHODS,
    KCenterGreedy,
    SelectionResult,
    get_method,
    resolve_budget,
    select_rows,
    split_budget,
)
from coretune.select.similarity import rank_by_similarity


@pytest.fixture(scope="module")
def real():
    """Real MiniLM embeddings of 300 pool prompts and k-means-like labels (6 clusters)."""
    from test_kcenter import minilm_embeddings  # same cached array as test_kcenter.py

    x = minilm_embeddings(300)
    # Label by nearest of 6 seeded rows: real, uneven clusters without another dependency.
    anchors = x[np.random.default_rng(0).choice(len(x), 6, replace=False)]
    labels = np.argmax(x @ anchors.T, axis=1).astype(np.int64)
    return x, labels


def table_bytes(result: SelectionResult) -> bytes:
    buf = io.BytesIO()
    pq.write_table(result.to_table([f"u{i}" for i in result.indices]), buf)
    return buf.getvalue()


# --- budgets -------------------------------------------------------------------------------

@pytest.mark.parametrize("budget, pool, expected", [
    ("0.5%", 20000, 100), ("0.5%", 1, 1), ("0.25%", 200, 1), ("1.5%", 100, 2),
    ("0.3%", 1000, 3), (" 2 % ", 50, 1), ("100%", 7, 7), ("120", 500, 120), (120, 500, 120),
    (0.25, 10, 3), (1.0, 9, 9), ("0.45%", 100, 1),
])
def test_resolve_budget(budget, pool, expected):
    assert resolve_budget(budget, pool) == expected


def test_resolve_budget_rounds_half_up_exactly():
    # 0.5% of 300 = 1.5 -> 2; 0.5% of 100 = 0.5 -> 1; floats would drift on these.
    assert resolve_budget("0.5%", 300) == 2
    assert resolve_budget("0.7%", 500) == 4  # 3.5
    assert resolve_budget("0.05%", 134247) == 67  # 67.1235


@pytest.mark.parametrize("budget", ["abc", "5 rows", "-3", "0%", "150%", "0", "1e3", True,
                                    0, -2, 1.5, 0.0, "501", 501, None])
def test_resolve_budget_errors(budget):
    with pytest.raises(CoretuneError) as err:
        resolve_budget(budget, 500)
    assert err.value.field == "budget"


def test_split_budget_largest_remainder_with_ties_by_cluster_id():
    # quotas 10*[3,3,3,1]/10 = 3,3,3,1 exactly
    assert split_budget(10, {0: 3, 1: 3, 2: 3, 3: 1}) == {0: 3, 1: 3, 2: 3, 3: 1}
    # 5 * [2,2,2] / 6 = 1.67 each: floors 1,1,1, two leftovers to the lowest ids (ties)
    assert split_budget(5, {7: 2, 3: 2, 5: 2}) == {3: 2, 5: 2, 7: 1}
    # 4 * [50, 30, 20] / 100 = 2.0, 1.2, 0.8: leftover to the largest remainder (cluster 2)
    assert split_budget(4, {0: 50, 1: 30, 2: 20}) == {0: 2, 1: 1, 2: 1}
    assert split_budget(0, {0: 5}) == {0: 0}
    assert split_budget(3, {0: 0, 1: 3}) == {0: 0, 1: 3}


def test_split_budget_properties_on_many_random_cases():
    rng = np.random.default_rng(0)
    for _ in range(500):
        sizes = {int(c): int(s) for c, s in zip(rng.choice(100, rng.integers(1, 8), replace=False),
                                               rng.integers(0, 40, size=8), strict=False)}
        n = sum(sizes.values())
        if n == 0:
            continue
        total = int(rng.integers(0, n + 1))
        shares = split_budget(total, sizes)
        assert sum(shares.values()) == total
        assert list(shares) == sorted(sizes)
        for c, share in shares.items():
            assert 0 <= share <= sizes[c]
            assert abs(share - total * sizes[c] / n) < 1  # proportional within one row


def test_split_budget_errors():
    with pytest.raises(CoretuneError, match="larger than the target set"):
        split_budget(7, {0: 3, 1: 3})
    with pytest.raises(CoretuneError):
        split_budget(-1, {0: 3})


# --- select_rows -----------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_every_method_selects_exactly_the_budget_inside_the_targets(real, method):
    x, labels = real
    targets = [4, 1, 2]
    queries = x[:5] if get_method(method).reads_queries else None
    res = select_rows(x, labels, targets, 30, method, seed=0, queries=queries)
    assert res.indices.dtype == np.int64 and res.cluster.dtype == np.int64
    assert res.radius.dtype == np.float32
    assert len(np.unique(res.indices)) == len(res.indices)
    assert np.all(np.isin(labels[res.indices], targets))
    assert np.array_equal(labels[res.indices], res.cluster)
    if get_method(method).per_cluster:
        assert np.all(np.diff(res.cluster) >= 0)  # cluster-id order
    sizes = {c: int((labels == c).sum()) for c in targets}
    if method == "all":
        assert len(res) == sum(sizes.values())
        assert np.array_equal(np.sort(res.indices), np.flatnonzero(np.isin(labels, targets)))
    else:
        assert len(res) == 30
    if method != "all" and get_method(method).per_cluster:
        shares = split_budget(30, sizes)
        assert {c: int((res.cluster == c).sum()) for c in targets} == shares
    if method == "kcenter":
        for c in targets:
            r = res.radius[res.cluster == c]
            assert np.all(np.diff(r) <= 0) and np.all(r >= 0)
    else:
        assert np.all(np.isnan(res.radius))


@pytest.mark.parametrize("method", ["kcenter", "random", "topk", "leastk", "mixed", "all"])
def test_same_seed_gives_byte_identical_tables(real, method):
    x, labels = real
    a = select_rows(x, labels, [0, 3, 5], 25, method, seed=7)
    b = select_rows(x.copy(), labels.copy(), [5, 3, 0], 25, method, seed=7)
    assert table_bytes(a) == table_bytes(b)


@pytest.mark.parametrize("method", ["kcenter", "random"])
def test_different_seed_gives_a_different_selection(real, method):
    x, labels = real
    a = select_rows(x, labels, [0, 3], 20, method, seed=0)
    b = select_rows(x, labels, [0, 3], 20, method, seed=1)
    assert not np.array_equal(a.indices, b.indices)


def test_kcenter_per_cluster_is_keycentergreedy_on_the_cluster_rows(real):
    x, labels = real
    res = select_rows(x, labels, [2], 12, "kcenter", seed=4)
    rows = np.flatnonzero(labels == 2)
    fit = KCenterGreedy(12, seed=[4, 2]).fit(x[rows])
    assert np.array_equal(res.indices, rows[fit.indices_])
    assert res.radius.tobytes() == fit.radii_.tobytes()


def test_clusters_are_selected_independently(real):
    """A cluster's rows depend on its own share and the seed only (one task per cluster)."""
    x, labels = real
    sizes = {c: int((labels == c).sum()) for c in range(6)}
    both = select_rows(x, labels, [1, 3], 20, "kcenter", seed=2)
    share = split_budget(20, {1: sizes[1], 3: sizes[3]})[3]
    alone = select_rows(x, labels, [3], share, "kcenter", seed=2)
    assert np.array_equal(both.indices[both.cluster == 3], alone.indices)


def test_similarity_samplers_against_brute_force(real):
    x, labels = real
    rows = np.flatnonzero(labels == 0)
    centre = x[rows].astype(np.float64).mean(axis=0)
    cos = x[rows] @ (centre / np.linalg.norm(centre))
    b = min(9, len(rows))
    top = select_rows(x, labels, [0], b, "topk", seed=0).indices
    least = select_rows(x, labels, [0], b, "leastk", seed=0).indices
    mixed = select_rows(x, labels, [0], b, "mixed", seed=0).indices
    # Stable sorts: ties (real duplicates exist: prompts equal in their first 64 tokens) go
    # to the lower row index.
    assert np.array_equal(top, rows[np.argsort(-cos, kind="stable")[:b]])
    assert np.array_equal(least, rows[np.argsort(cos, kind="stable")[:b]])
    assert np.array_equal(mixed, np.concatenate([top[:(b + 1) // 2], least[:b // 2]]))


def test_given_centroids_are_used(real):
    x, labels = real
    centroids = np.zeros((6, x.shape[1]), np.float32)
    target = np.flatnonzero(labels == 1)
    centroids[1] = x[target[-1]]  # a centre sitting on one row: that row is the most similar
    res = select_rows(x, labels, [1], 3, "topk", seed=0, centroids=centroids)
    assert res.indices[0] == target[-1]
    with pytest.raises(CoretuneError, match="centroids"):
        select_rows(x, labels, [1], 3, "topk", seed=0, centroids=centroids[:1])


def test_ties_go_to_the_lower_index_and_mixed_never_repeats():
    sim = np.zeros(6, np.float32)
    assert rank_by_similarity(sim, 3, "topk").tolist() == [0, 1, 2]
    assert rank_by_similarity(sim, 3, "leastk").tolist() == [0, 1, 2]
    assert rank_by_similarity(sim, 5, "mixed").tolist() == [0, 1, 2, 3, 4]
    sim = np.array([0.1, 0.9, 0.5, 0.9, 0.1], np.float32)
    assert rank_by_similarity(sim, 3, "mixed").tolist() == [1, 3, 0]  # ceil(3/2) top first


def test_random_is_numpy_choice_without_replacement(real):
    x, labels = real
    rows = np.flatnonzero(labels == 5)
    res = select_rows(x, labels, [5], 10, "random", seed=3)
    expected = np.random.default_rng([3, 5]).choice(rows, size=10, replace=False)
    assert np.array_equal(res.indices, expected)


def test_to_table_schema_and_alignment(real):
    x, labels = real
    res = select_rows(x, labels, [0, 1], 10, "kcenter", seed=0)
    uids = [f"row-{i}" for i in res.indices]
    t = res.to_table(uids)
    assert t.schema.names == ["uid", "order", "cluster", "radius"]
    assert [str(f.type) for f in t.schema] == ["string", "int64", "int64", "float"]
    assert t.column("uid").to_pylist() == uids
    assert t.column("order").to_pylist() == list(range(10))
    with pytest.raises(ValueError):
        res.to_table(uids[:-1])


def test_exact_duplicates_inside_a_cluster():
    base = np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32)
    x = np.concatenate([base, base, base])  # 24 rows, 8 distinct
    labels = np.zeros(24, np.int64)
    res = select_rows(x, labels, [0], 12, "kcenter", seed=0)
    assert len(np.unique(x[res.indices[:8]], axis=0)) == 8
    assert np.all(res.radius[7:] == 0)


@pytest.mark.parametrize("kwargs, message", [
    ({"budget": 10_000}, "larger than the target set"),
    ({"method": "coreset"}, "unknown method"),
    ({"target_clusters": []}, "no target clusters"),
    ({"target_clusters": [99]}, "have no rows"),
    ({"budget": 0}, "positive row count"),
    ({"seed": -1}, "non-negative"),
    ({"labels": np.zeros(3, np.int64)}, "labels must be"),
])
def test_user_errors(real, kwargs, message):
    x, labels = real
    args = {"embeddings": x, "labels": labels, "target_clusters": [0, 1], "budget": 5,
            "method": "kcenter", "seed": 0, **kwargs}
    with pytest.raises(CoretuneError, match=message):
        select_rows(**args)


def test_nan_or_zero_rows_name_the_pool_row(real):
    x, labels = real
    bad = x.copy()
    bad[17] = np.nan
    with pytest.raises(CoretuneError, match="row 17") as err:
        select_rows(bad, labels, [0], 3, "random", seed=0)
    assert err.value.row == 17
    bad = x.copy()
    bad[5] = 0
    with pytest.raises(CoretuneError, match="row 5 is all zeros"):
        select_rows(bad, labels, [0], 3, "topk", seed=0)
