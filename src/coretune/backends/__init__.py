"""Where the heavy work runs: `local` (this process) or `ray` (a Ray cluster).

A backend does the three operations that grow with the pool: embedding (`embedder`),
labelling every row with its nearest centroid (`assign`) and the per-cluster selection
(`select`). The stages call only this interface, and both backends produce byte-identical
artifacts for the same config and seed (see `coretune.backends.ray`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from coretune.errors import CoretuneError

NAMES = ("local", "ray")


class Backend:
    """The local backend, and the interface every backend implements."""

    name = "local"

    def embedder(self, encoder: str = "minilm", *, max_tokens: int = 256, batch_size: int = 64,
                 device: str | None = None, cache_dir: str | Path | None = None,
                 quiet: bool = False):
        """An `Embedder` (same cache, same rows) whose encoding runs on this backend."""
        from coretune.embed import Embedder, make_encoder

        return Embedder(make_encoder(encoder, max_tokens=max_tokens, device=device),
                        cache_dir=cache_dir, batch_size=batch_size, quiet=quiet)

    def embed(self, texts, folder: str | Path, encoder: str = "minilm", **kw):
        """Embed `texts` into `folder` (embeddings.npy + meta.json); returns the Embedder,
        whose `n_cached_` / `n_encoded_` / `seconds_` describe the work."""
        embedder = self.embedder(encoder, **kw)
        embedder.embed_to(texts, folder)
        return embedder

    def assign(self, x: np.ndarray, centroids: np.ndarray, spherical: bool, chunk: int
               ) -> tuple[np.ndarray, np.ndarray]:
        """Nearest centroid and distance of every row (a `KMeansClusters.fit` assign hook)."""
        from coretune.cluster import assign_rows

        return assign_rows(x, centroids, spherical, chunk)

    def fit_clusters(self, x: np.ndarray, k: int, **kw):
        """`KMeansClusters(k, **kw)` fitted on its sample here, every row labelled by `assign`."""
        from coretune.cluster import KMeansClusters

        return KMeansClusters(k, **kw).fit(x, assign=self.assign)

    def select(self, x: np.ndarray, labels: np.ndarray, targets, budget: int, method: str,
               seed: int, centroids: np.ndarray | None = None, *, quiet: bool = False):
        """The same `SelectionResult` as `coretune.select.select_rows`."""
        from coretune.select import select_rows

        return select_rows(x, labels, targets, budget, method, seed, centroids, quiet=quiet)

    def close(self) -> None:
        """Release workers (actors); the backend stays usable."""


_open: dict[tuple, Backend] = {}


def get_backend(name: str = "local", address: str | None = None, **resources: Any) -> Backend:
    """`local`, or `ray` on the cluster at `address` (None: start a local one with
    `resources`: num_cpus, num_gpus, object_store_memory; actors, actor_cpus for embedding).
    One backend per distinct setting is kept for the process (actors are reused)."""
    if name not in NAMES:
        raise CoretuneError(f"unknown backend '{name}' (one of {', '.join(NAMES)})",
                            field="backend")
    key = (name, address, tuple(sorted((k, v) for k, v in resources.items() if v is not None)))
    if key not in _open:
        if name == "local":
            _open[key] = Backend()
        else:
            from coretune.backends.ray import RayBackend

            _open[key] = RayBackend(address, **dict(key[2]))
    return _open[key]


def from_config(cfg) -> Backend:
    """The backend of a RunConfig (its `backend` section)."""
    b = cfg.backend
    return get_backend(b.name, b.address, **b.model_dump(exclude={"name", "address"}))


def close_all() -> None:
    for backend in _open.values():
        backend.close()
