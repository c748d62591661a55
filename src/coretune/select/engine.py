"""The selection engine: split a budget between target clusters, run a method on each, gather.

The budget is shared between the target clusters in proportion to their sizes
(`split_budget`) and each cluster is selected on its own, with its own generator
``numpy.random.default_rng([seed, cluster])``, so a cluster's selection depends only on its own
rows, the seed and its share (one task per cluster is what a parallel backend runs). Results
are concatenated in cluster-id order and numbered by a global `order`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from coretune.errors import CoretuneError
from coretune.select.budget import split_budget
from coretune.select.methods import ClusterJob, SelectionMethod, get_method
from coretune.validation import check_centroids, check_embeddings, check_labels, check_seed


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
class SelectionPlan:
    """A validated selection, split into independent per-cluster jobs (cluster-id order).
    A job's inputs are cut from X only when it is taken, so a backend that keeps a bounded
    number of jobs in flight never holds all the target rows at once."""

    x: np.ndarray  # float32 embeddings (may be a memory map)
    inv_norm: np.ndarray | None  # inverse row norms when the rows are not unit length
    centroids: np.ndarray | None
    method: SelectionMethod
    seed: int
    shares: list[tuple[int, np.ndarray, int]]  # (cluster, its int64 rows, rows to pick)
    labels: np.ndarray | None = None  # cluster of every row (names a global job's picks)
    queries: np.ndarray | None = None  # target examples, for methods that read them

    def jobs(self) -> Iterator[ClusterJob]:
        reads = self.method.reads_embeddings
        for c, rows, share in self.shares:
            yield ClusterJob(
                c, rows, share, (self.seed, c),
                x=np.asarray(self.x[rows]) if reads else None,
                inv_norm=self.inv_norm[rows] if reads and self.inv_norm is not None else None,
                centre=self.centroids[c] if self.centroids is not None else None,
                queries=self.queries)

    def gather(self, picks: Sequence[tuple[int, np.ndarray, np.ndarray | None]]
               ) -> SelectionResult:
        """`gather` the jobs' picks; a global job's rows get their own clusters."""
        result = gather(picks)
        if self.method.per_cluster or not len(result):
            return result
        return SelectionResult(result.indices, self.labels[result.indices], result.radius)


def plan_selection(embeddings: np.ndarray, labels: np.ndarray, target_clusters: Sequence[int],
                   budget: int, method: str, seed: int, centroids: np.ndarray | None = None,
                   queries: np.ndarray | None = None) -> SelectionPlan:
    """Validate the arguments of `select_rows` and split the budget between the clusters
    (a method that is not per cluster gets one job over all target rows, cluster -1); each
    job carries only the inputs its method reads."""
    chooser = get_method(method)
    seed = check_seed(seed)
    x, inv_norm = check_embeddings(embeddings)
    labels = check_labels(labels, x.shape[0])
    targets = sorted({int(c) for c in target_clusters})
    if not targets:
        raise CoretuneError("no target clusters to select from", field="target")
    rows_of = {c: np.flatnonzero(labels == c) for c in targets}
    if not any(len(r) for r in rows_of.values()):
        raise CoretuneError(f"the target clusters {targets} have no rows", field="target")
    if not chooser.per_cluster:
        rows_of = {-1: np.sort(np.concatenate(list(rows_of.values())))}
        targets = [-1]
    if chooser.reads_queries:
        queries = _check_queries(queries, x.shape[1], method)
    else:
        queries = None
    if not chooser.uses_budget:
        shares = {c: len(r) for c, r in rows_of.items()}
    else:
        if isinstance(budget, bool) or not isinstance(budget, int | np.integer) or budget < 1:
            raise CoretuneError(f"budget must be a positive row count, got {budget!r}",
                                field="budget")
        shares = split_budget(int(budget), {c: len(r) for c, r in rows_of.items()})
    if chooser.reads_centroid and centroids is not None:
        centroids = check_centroids(centroids, targets, x.shape[1])
    else:
        centroids = None  # only the similarity samplers read them
    shares_of = [(c, rows_of[c].astype(np.int64), shares[c]) for c in targets if shares[c]]
    return SelectionPlan(x, inv_norm, centroids, chooser, seed, shares_of, labels, queries)


def _check_queries(queries, dim: int, method: str) -> np.ndarray:
    if queries is None or np.ndim(queries) != 2 or len(queries) == 0:
        raise CoretuneError(f"method {method} needs target examples (a probing target: nli "
                            "or probe:FILE)", field="select.method")
    q = np.asarray(queries, np.float32)
    if q.shape[1] != dim or not np.isfinite(q).all():
        raise CoretuneError(f"method {method}: target examples must be finite and have the "
                            f"pool's {dim} dimensions, got {q.shape[1]}", field="select.method")
    return q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)


def gather(picks: Sequence[tuple[int, np.ndarray, np.ndarray | None]]) -> SelectionResult:
    """Per-cluster picks (cluster, chosen rows, radius or None), in cluster-id order, as one
    SelectionResult."""
    parts = []
    for cluster, chosen, radius in picks:
        n = len(chosen)
        parts.append((np.asarray(chosen, np.int64), np.full(n, cluster, np.int64),
                      np.full(n, np.nan, np.float32) if radius is None
                      else np.asarray(radius, np.float32)))
    if not parts:
        return SelectionResult(np.empty(0, np.int64), np.empty(0, np.int64),
                               np.empty(0, np.float32))
    return SelectionResult(*(np.concatenate([p[i] for p in parts]) for i in range(3)))


def select_rows(embeddings: np.ndarray, labels: np.ndarray, target_clusters: Sequence[int],
                budget: int, method: str, seed: int, centroids: np.ndarray | None = None, *,
                device: str = "cpu", n_jobs: int | None = None, quiet: bool = False,
                queries: np.ndarray | None = None) -> SelectionResult:
    """Select `budget` rows of the target clusters with `method` (see the module docstring).

    `embeddings` [n, d] (float32 preferred; any float is converted), `labels` [n] the cluster
    of each row, `centroids` [n_clusters, d] for the similarity samplers (default: the mean of
    each cluster's normalised rows), `queries` [m, d] the target examples for methods that
    read them (rds). A budget larger than the target set, unknown methods,
    bad shapes and NaN/zero rows raise `CoretuneError`.
    """
    plan = plan_selection(embeddings, labels, target_clusters, budget, method, seed, centroids,
                          queries)
    return plan.gather([(job.cluster, *plan.method.pick(job, device=device, n_jobs=n_jobs,
                                                     quiet=quiet)) for job in plan.jobs()])
