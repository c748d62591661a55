"""Selection engine: pick a budget of rows inside the target clusters.

The budget is shared between the target clusters in proportion to their sizes
(`split_budget`) and each cluster is selected on its own, with its own generator
``numpy.random.default_rng([seed, cluster])``, so a cluster's selection depends only on its own
rows, the seed and its share (one task per cluster is what a parallel backend runs). Results
are concatenated in cluster-id order and numbered by a global `order`.

Methods: "kcenter" (`KCenterGreedy`), "random" (uniform without replacement), "topk" /
"leastk" / "mixed" (cosine to the cluster centre, see `similarity`), "all" (every row of the
target clusters, in row order; the budget is ignored).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from coretune.errors import CoretuneError
from coretune.select.budget import resolve_budget, split_budget
from coretune.select.kcenter import KCenterGreedy, check_embeddings
from coretune.select.sampling import random_rows
from coretune.select.similarity import (
    SIMILARITY_METHODS,
    centroid_similarity,
    rank_by_similarity,
)

METHODS = ("kcenter", "random", "topk", "leastk", "mixed", "all")

__all__ = ["METHODS", "ClusterTask", "KCenterGreedy", "SelectionPlan", "SelectionResult",
           "check_embeddings", "gather", "plan_selection", "resolve_budget", "select_cluster",
           "select_rows", "split_budget"]


@dataclass(frozen=True)
class SelectionResult:
    """Selected pool rows in selection order.

    `indices` (int64): pool row indices; `cluster` (int64): the cluster of each; `radius`
    (float32): k-center coverage radius of the row's cluster after adding it (NaN for the
    other methods).
    """

    indices: np.ndarray
    cluster: np.ndarray
    radius: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)

    def to_table(self, uids: Sequence[str]):
        """pa.Table(uid: string, order: int64, cluster: int64, radius: float32).

        `uids` are the uids of the selected rows, aligned with `indices` (e.g.
        ``pool_uids.take(result.indices)``).
        """
        import pyarrow as pa

        uid = pa.array(uids, pa.string()) if not isinstance(uids, pa.Array) else uids
        if len(uid) != len(self.indices):
            raise ValueError(f"{len(uid)} uids for {len(self.indices)} selected rows")
        return pa.table({
            "uid": uid.cast(pa.string()),
            "order": pa.array(np.arange(len(self.indices), dtype=np.int64)),
            "cluster": pa.array(self.cluster, pa.int64()),
            "radius": pa.array(self.radius, pa.float32()),
        })


@dataclass(frozen=True)
class ClusterTask:
    """One target cluster's share of a selection: its pool rows and how many to pick."""

    cluster: int
    rows: np.ndarray  # int64 pool rows of the cluster, ascending
    share: int


@dataclass(frozen=True)
class SelectionPlan:
    """A validated selection, split into independent per-cluster tasks (cluster-id order)."""

    x: np.ndarray  # float32 embeddings (may be a memory map)
    inv_norm: np.ndarray | None  # inverse row norms when the rows are not unit length
    tasks: list[ClusterTask]
    method: str
    seed: int
    centroids: np.ndarray | None

    def inputs(self, task: ClusterTask) -> tuple[np.ndarray | None, np.ndarray | None,
                                                  np.ndarray | None]:
        """The cluster's own rows, inverse norms and centre: all `select_cluster` reads (a
        remote task gets only these, never the whole matrix)."""
        if self.method in ("all", "random"):
            return None, None, None
        sub_inv = self.inv_norm[task.rows] if self.inv_norm is not None else None
        centre = self.centroids[task.cluster] if self.centroids is not None else None
        return np.asarray(self.x[task.rows]), sub_inv, centre


def plan_selection(embeddings: np.ndarray, labels: np.ndarray, target_clusters: Sequence[int],
                   budget: int, method: str, seed: int, centroids: np.ndarray | None = None
                   ) -> SelectionPlan:
    """Validate the arguments of `select_rows` and split the budget between the clusters."""
    if method not in METHODS:
        raise CoretuneError(f"unknown method '{method}' (one of {', '.join(METHODS)})",
                            field="method")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise CoretuneError(f"seed must be a non-negative integer, got {seed!r}", field="seed")
    x, inv_norm = check_embeddings(embeddings)
    labels = np.asarray(labels)
    if labels.shape != (x.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise CoretuneError(f"labels must be {x.shape[0]} integers (one per embedding row), got "
                            f"shape {labels.shape} dtype {labels.dtype}", field="labels")
    targets = sorted({int(c) for c in target_clusters})
    if not targets:
        raise CoretuneError("no target clusters to select from", field="target")
    rows_of = {c: np.flatnonzero(labels == c) for c in targets}
    if not any(len(r) for r in rows_of.values()):
        raise CoretuneError(f"the target clusters {targets} have no rows", field="target")
    if method == "all":
        shares = {c: len(r) for c, r in rows_of.items()}
    else:
        if isinstance(budget, bool) or not isinstance(budget, int | np.integer) or budget < 1:
            raise CoretuneError(f"budget must be a positive row count, got {budget!r}",
                                field="budget")
        shares = split_budget(int(budget), {c: len(r) for c, r in rows_of.items()})
    if method in SIMILARITY_METHODS and centroids is not None:
        centroids = np.asarray(centroids)
        if centroids.ndim != 2 or centroids.shape[1] != x.shape[1] \
                or centroids.shape[0] <= max(targets) or min(targets) < 0:
            raise CoretuneError(f"centroids of shape {centroids.shape} do not cover clusters "
                                f"{targets} of {x.shape[1]}-d embeddings", field="centroids")
    else:
        centroids = None  # only the similarity samplers read them
    tasks = [ClusterTask(c, rows_of[c].astype(np.int64), shares[c]) for c in targets
             if shares[c]]
    return SelectionPlan(x, inv_norm, tasks, method, int(seed), centroids)


def select_cluster(method: str, seed: int, cluster: int, rows: np.ndarray, share: int,
                   x_rows: np.ndarray | None = None, inv_norm_rows: np.ndarray | None = None,
                   centre: np.ndarray | None = None, *, device: str = "cpu",
                   n_jobs: int | None = None, quiet: bool = False
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pool rows, their cluster, radius) picked in one cluster; reads only that cluster's
    rows (`x_rows` = embeddings[rows]), so any backend may run it anywhere."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng([int(seed), cluster])
    radius = np.full(share, np.nan, np.float32)
    if method == "all":
        chosen = rows
    elif method == "random":
        chosen = random_rows(rows, share, rng)
    elif method == "kcenter":
        fit = KCenterGreedy(share, seed=[int(seed), cluster], device=device, n_jobs=n_jobs,
                            quiet=quiet).fit(x_rows)
        chosen, radius = rows[fit.indices_], fit.radii_
    else:
        with threadpool_limits(limits=1, user_api="blas"):  # thread-count-proof values
            sim = centroid_similarity(x_rows, inv_norm_rows, centre)
        chosen = rows[rank_by_similarity(sim, share, method)]
    return (np.asarray(chosen, np.int64), np.full(len(chosen), cluster, np.int64),
            np.asarray(radius, np.float32))


def gather(parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> SelectionResult:
    """Per-cluster results (in cluster-id order) as one SelectionResult."""
    return SelectionResult(*(np.concatenate([p[i] for p in parts]) for i in range(3)))


def select_rows(embeddings: np.ndarray, labels: np.ndarray, target_clusters: Sequence[int],
                budget: int, method: str, seed: int, centroids: np.ndarray | None = None, *,
                device: str = "cpu", n_jobs: int | None = None, quiet: bool = False
                ) -> SelectionResult:
    """Select `budget` rows of the target clusters with `method` (see the module docstring).

    `embeddings` [n, d] (float32 preferred; any float is converted), `labels` [n] the cluster
    of each row, `centroids` [n_clusters, d] for the similarity samplers (default: the mean of
    each cluster's normalised rows). A budget larger than the target set, unknown methods,
    bad shapes and NaN/zero rows raise `CoretuneError`.
    """
    plan = plan_selection(embeddings, labels, target_clusters, budget, method, seed, centroids)
    return gather([select_cluster(method, plan.seed, t.cluster, t.rows, t.share,
                                  *plan.inputs(t), device=device, n_jobs=n_jobs, quiet=quiet)
                   for t in plan.tasks])
