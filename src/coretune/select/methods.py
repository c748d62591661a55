"""Selection methods: one class each, registered by name.

A method picks `job.share` rows of one target cluster (`SelectionMethod.pick`); the engine
(`coretune.select.engine`) splits the budget between clusters and gathers the picks, and a
backend may run the clusters anywhere. The config's allowed `select.method` values, the CLI
help and the report's labels all come from this registry (`METHOD_REGISTRY`), so adding a
method is one class:

    @register_method
    class Longest(SelectionMethod):
        name, label, help = "longest", "longest rows", "the rows with the largest norm"
        def pick(self, job, **_):
            order = np.argsort(-np.linalg.norm(job.x, axis=1), kind="stable")[:job.share]
            return job.rows[order], None
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from coretune.registry import Registry
from coretune.select.kcenter import kcenter_greedy
from coretune.select.rds import rds_order
from coretune.select.sampling import random_rows
from coretune.select.similarity import centroid_similarity, rank_by_similarity


@dataclass(frozen=True)
class ClusterJob:
    """Everything one cluster's selection reads (a remote task gets only this)."""

    cluster: int
    rows: np.ndarray  # int64 pool rows of the cluster, ascending
    share: int  # rows to pick
    seed: tuple[int, int]  # (selection seed, cluster): the cluster's own generator
    x: np.ndarray | None = None  # embeddings[rows], when the method reads them
    inv_norm: np.ndarray | None = None  # their inverse norms when not unit length
    centre: np.ndarray | None = None  # the cluster's centroid, when the method reads it
    queries: np.ndarray | None = None  # target-example embeddings, when the method reads them


class SelectionMethod:
    """The interface: `pick(job)` -> (chosen pool rows in pick order, radius per pick or
    None). Class attributes say what the method reads and how the report names it."""

    name: ClassVar[str]
    label: ClassVar[str]  # how reports and plots name it
    help: ClassVar[str]  # one line for the CLI
    reads_embeddings: ClassVar[bool] = True
    reads_centroid: ClassVar[bool] = False
    uses_budget: ClassVar[bool] = True  # False: takes every row of the target clusters
    per_cluster: ClassVar[bool] = True  # False: one job over all target rows (cluster -1)
    reads_queries: ClassVar[bool] = False  # True: needs the target examples' embeddings

    def pick(self, job: ClusterJob, *, device: str = "cpu", n_jobs: int | None = None,
             quiet: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError


METHOD_REGISTRY: Registry[type[SelectionMethod]] = Registry("method", field="method")


def register_method(cls: type[SelectionMethod]) -> type[SelectionMethod]:
    """Class decorator: make `cls` available as `select.method: <cls.name>`."""
    if not (isinstance(cls, type) and issubclass(cls, SelectionMethod)):
        raise TypeError("a selection method subclasses SelectionMethod")
    return METHOD_REGISTRY.register(cls.name, cls)


def method_names() -> tuple[str, ...]:
    return METHOD_REGISTRY.names()


def get_method(name: str) -> SelectionMethod:
    return METHOD_REGISTRY.get(name)()


def method_labels() -> dict[str, str]:
    """How reports name each method."""
    return {name: cls.label for name, cls in METHOD_REGISTRY.items().items()}


def budgeted_methods() -> tuple[str, ...]:
    """The methods that pick a budget of rows (the samplers a report compares)."""
    return tuple(name for name, cls in METHOD_REGISTRY.items().items() if cls.uses_budget)


@register_method
class KCenter(SelectionMethod):
    name, label = "kcenter", "kcenter"
    help = "greedy k-center coreset (farthest-point traversal)"

    def pick(self, job, *, device="cpu", n_jobs=None, quiet=False):
        chosen, radius = kcenter_greedy(job.x, job.share, list(job.seed), device=device,
                                        n_jobs=n_jobs, quiet=quiet)
        return job.rows[chosen], radius


@register_method
class Random(SelectionMethod):
    name, label, help = "random", "random", "uniform, without replacement"
    reads_embeddings = False

    def pick(self, job, **_):
        return random_rows(job.rows, job.share, np.random.default_rng(list(job.seed))), None


class _Similarity(SelectionMethod):
    reads_centroid = True

    def pick(self, job, **_):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):  # thread-count-proof values
            sim = centroid_similarity(job.x, job.inv_norm, job.centre)
        return job.rows[rank_by_similarity(sim, job.share, self.name)], None


@register_method
class TopK(_Similarity):
    name, label, help = "topk", "topk", "most similar to the cluster centre"


@register_method
class LeastK(_Similarity):
    name, label, help = "leastk", "leastk", "least similar to the cluster centre"


@register_method
class Mixed(_Similarity):
    name, label, help = "mixed", "mixed", "half most, half least similar"


@register_method
class All(SelectionMethod):
    name, label, help = "all", "all", "every row of the target clusters (no budget)"
    reads_embeddings = False
    uses_budget = False

    def pick(self, job, **_):
        return job.rows, None


@register_method
class RDS(SelectionMethod):
    """RDS+ (Ivison et al. 2025): the target examples take their nearest rows round-robin.
    Not per cluster: the budget goes to whichever target rows the examples are nearest."""

    name, label = "rds", "rds"
    help = "target examples take their nearest rows in turn (RDS+; needs a probing target)"
    per_cluster = False
    reads_queries = True

    def pick(self, job, **_):  # plan_selection checked and normalised job.queries
        x = job.x if job.inv_norm is None else job.x * job.inv_norm[:, None]  # cosine
        return job.rows[rds_order(x, job.queries, job.share)], None


METHODS = method_names()  # the shipped methods; `method_names()` adds registered ones
