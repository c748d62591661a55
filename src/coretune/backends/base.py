"""Where the heavy work runs: `local` (this process), `ray` (a Ray cluster), or a backend a
user registers.

A backend does the three operations that grow with the pool: embedding (`embedder`),
labelling every row with its nearest centroid (`assign`) and the per-cluster selection
(`select`). The stages call only this interface, and every backend must produce
byte-identical artifacts for the same config and seed (see `coretune.backends.ray`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from coretune.cluster import KMeansClusters, assign_rows
from coretune.embed import Embedder, make_encoder
from coretune.registry import Registry
from coretune.select import SelectionResult, plan_selection


class Backend(ABC):
    """The interface every backend implements."""

    name: str

    @abstractmethod
    def embedder(self, encoder: str, *, max_tokens: int, batch_size: int,
                 device: str | None = None, cache_dir: str | Path | None = None,
                 quiet: bool = False, batch_tokens: int | None = None) -> Embedder:
        """An `Embedder` (same cache, same rows) whose encoding runs on this backend."""

    @abstractmethod
    def assign(self, x: np.ndarray, centroids: np.ndarray, spherical: bool, chunk: int
               ) -> tuple[np.ndarray, np.ndarray]:
        """Nearest centroid and distance of every row (a `KMeansClusters.fit` assign hook),
        with the chunk boundaries of `coretune.cluster.assign_rows`."""

    @abstractmethod
    def select(self, x: np.ndarray, labels: np.ndarray, targets, budget: int, method: str,
               seed: int, centroids: np.ndarray | None = None, *, quiet: bool = False,
               queries: np.ndarray | None = None) -> SelectionResult:
        """The same `SelectionResult` as `coretune.select.select_rows`."""

    @abstractmethod
    def close(self) -> None:
        """Release workers (actors); the backend stays usable."""

    def fit_clusters(self, x: np.ndarray, k: int, **kw) -> KMeansClusters:
        """`KMeansClusters(k, **kw)` fitted on its sample here, every row labelled by `assign`
        (the cluster stage's clustering, and the target votes' further ones)."""
        return KMeansClusters(k, **kw).fit(x, assign=self.assign)


class LocalBackend(Backend):
    """Everything in this process."""

    name = "local"

    def embedder(self, encoder: str, *, max_tokens: int, batch_size: int,
                 device: str | None = None, cache_dir: str | Path | None = None,
                 quiet: bool = False, batch_tokens: int | None = None) -> Embedder:
        return Embedder(make_encoder(encoder, max_tokens=max_tokens, device=device),
                        cache_dir=cache_dir, batch_size=batch_size, quiet=quiet,
                        batch_tokens=batch_tokens)

    def assign(self, x, centroids, spherical, chunk):
        return assign_rows(x, centroids, spherical, chunk)

    def select(self, x, labels, targets, budget, method, seed, centroids=None, *, quiet=False,
               queries=None):
        plan = plan_selection(x, labels, targets, budget, method, seed, centroids, queries)
        return plan.gather([(job.cluster, *plan.method.pick(job, quiet=quiet))
                       for job in plan.jobs()])

    def close(self) -> None:
        """Nothing to release."""


BACKEND_REGISTRY: Registry[Callable[..., Backend]] = Registry("backend", field="backend")
BACKEND_REGISTRY.register("local", lambda address=None, **_: LocalBackend())
BACKEND_REGISTRY.register("ray", "coretune.backends.ray:RayBackend")  # Ray only when asked for
_open: dict[tuple, Backend] = {}


def register_backend(name: str, factory: Callable[..., Backend] | str) -> None:
    """Make `factory(address, **resources)` available as `--backend NAME` and
    `backend: {name: NAME}` ("module:attr": imported when first used)."""
    BACKEND_REGISTRY.register(name, factory)


def backend_names() -> tuple[str, ...]:
    return BACKEND_REGISTRY.names()


def check_backend_name(name: str) -> str:
    if name not in BACKEND_REGISTRY:
        raise BACKEND_REGISTRY.unknown(name)
    return name


def get_backend(name: str = "local", address: str | None = None, **resources: Any) -> Backend:
    """`local`, or `ray` on the cluster at `address` (None: start a local one with
    `resources`: num_cpus, num_gpus, object_store_memory; actors, actor_cpus for embedding).
    One backend per distinct setting is kept for the process (actors are reused)."""
    factory = BACKEND_REGISTRY.get(name)
    key = (name, address, tuple(sorted((k, v) for k, v in resources.items() if v is not None)))
    if key not in _open:
        backend = factory(address, **dict(key[2]))
        if not isinstance(backend, Backend):
            raise TypeError(f"backend '{name}' does not implement coretune.backends.Backend")
        _open[key] = backend
    return _open[key]


def close_all() -> None:
    for backend in _open.values():
        backend.close()
