"""Ray backend: the same artifacts as the local backend, computed on a Ray cluster.

Byte-identical by construction, not by tolerance:
- embedding: the driver's `Embedder` still decides everything (cache lookups, 4096-row chunks,
  cache shards, `embeddings.npy`); only each batch's forward pass runs on an actor (one model
  per actor, on a GPU when the cluster has them). The batches are exactly those the local
  encoder forms (`length_batches`), so padding and batch shape, hence the floating-point
  sums, are the same; rows are normalised on the driver by the same function.
- labelling: K-means is fitted on its sample on the driver; the rows are labelled by tasks,
  one per `chunk_size` block of the local code (faiss picks its kernel by batch size, so the
  blocks must be the same), then renumbered on the driver as before.
- selection: one task per target cluster running the method's `pick` on that cluster's rows
  only, with the cluster's own generator; results are concatenated in cluster-id order.

Memory is bounded: at most `inflight` batches per actor and one block / cluster per CPU are
in the object store at a time, and a task holds only its block or cluster. Progress bars on
the driver count finished batches, blocks and clusters.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from coretune.backends.base import Backend
from coretune.errors import CoretuneError
from coretune.select import plan_selection

# Workers read models from installed packages only, like the CLI (no hub access).
_WORKER_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}


def import_ray():
    try:
        import ray
    except ImportError as e:
        raise CoretuneError("the ray backend needs Ray: pip install 'coretune[ray]'",
                            field="backend") from e
    return ray


class _EncoderActor:
    """One model per actor; torch threads pinned to the actor's CPUs."""

    def __init__(self, spec: str, max_tokens: int, device: str, threads: int):
        import torch
        from transformers.utils import logging as hf_logging

        from coretune.embed import make_encoder

        torch.set_num_threads(threads)
        hf_logging.disable_progress_bar()
        self.encoder = make_encoder(spec, max_tokens=max_tokens, device=device)

    def info(self) -> dict:
        e = self.encoder
        return {"name": e.name, "dim": e.dim, "pooling": e.pooling, "max_tokens": e.max_tokens}

    def forward(self, texts: list[str]) -> np.ndarray:
        return self.encoder.forward_batch(texts)  # raw rows; the driver normalises


class RayEncoder:
    """The `Encoder` protocol over a pool of actors: same batches as the local encoder."""

    def __init__(self, backend: RayBackend, spec: str, max_tokens: int, device: str | None):
        self._backend, self._key = backend, (spec, max_tokens, device)
        info = backend._encoders(*self._key)[1]
        self.name, self.dim = info["name"], info["dim"]
        self.pooling, self.max_tokens = info["pooling"], info["max_tokens"]

    def encode(self, texts: Sequence[str], batch_size: int = 64,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
        from coretune.embed import length_batches, normalise_rows

        ray = self._backend.ray
        # Actors are (re)started on demand: labelling and selection release them.
        actors = self._backend._encoders(*self._key)[0]
        texts = list(texts)
        out = np.empty((len(texts), self.dim), np.float32)
        slots = deque(a for _ in range(self._backend.inflight) for a in actors)
        running: dict[Any, tuple[Any, np.ndarray]] = {}

        def collect() -> None:
            done, _ = ray.wait(list(running), num_returns=1)
            actor, idx = running.pop(done[0])
            out[idx] = normalise_rows(ray.get(done[0]), idx)
            slots.append(actor)
            if progress is not None:
                progress(len(idx))

        for idx in length_batches(texts, batch_size):
            if not slots:
                collect()
            actor = slots.popleft()
            running[actor.forward.remote([texts[i] for i in idx])] = (actor, idx)
        while running:
            collect()
        return out


def _assign_block(part: np.ndarray, centroids: np.ndarray, spherical: bool, chunk: int):
    from threadpoolctl import threadpool_limits

    from coretune.cluster import assign_rows, faiss_threads

    with faiss_threads(1), threadpool_limits(limits=1):  # one CPU per task
        return assign_rows(part, centroids, spherical, chunk)


def _select_one(method: str, job, **kw):
    from coretune.select import get_method

    return job.cluster, *get_method(method).pick(job, **kw)


class RayBackend(Backend):
    """Connects to `address` ('auto', 'ray://head:10001', 'host:6379'), or starts a local
    cluster with `num_cpus` / `num_gpus` / `object_store_memory` (bytes). `actors`
    embedding actors (default: one per GPU, else one per `actor_cpus` CPUs), each with
    `actor_cpus` CPUs and `inflight` batches queued."""

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None,
                 num_gpus: int | None = None, object_store_memory: int | None = None,
                 actors: int | None = None, actor_cpus: int = 1, inflight: int = 2):
        self.ray = import_ray()
        self.address = address
        self.start = {"num_cpus": num_cpus, "num_gpus": num_gpus,
                      "object_store_memory": object_store_memory}
        if actor_cpus < 1 or inflight < 1 or (actors is not None and actors < 1):
            raise CoretuneError("actors, actor_cpus and inflight must be at least 1",
                                field="backend")
        self.actors, self.actor_cpus, self.inflight = actors, actor_cpus, inflight
        self._pool: tuple[tuple, list, dict] | None = None
        self._remote: dict[str, Any] = {}

    def connect(self):
        """Join (or start) the cluster once per process; returns the `ray` module."""
        ray = self.ray
        if not ray.is_initialized():
            import logging

            kw: dict[str, Any] = {"runtime_env": {"env_vars": _WORKER_ENV},
                                  "logging_level": logging.WARNING, "include_dashboard": False}
            if self.address is None:
                kw.update({k: v for k, v in self.start.items() if v is not None})
            try:
                ray.init(address=self.address, **kw)
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise CoretuneError(f"cannot start or join the Ray cluster at "
                                    f"{self.address or 'a new local cluster'} "
                                    f"({str(e).splitlines()[0]})", field="backend") from e
        return ray

    def _cpus(self) -> int:
        return max(1, int(self.connect().cluster_resources().get("CPU", 1)))

    def _fn(self, name: str):
        if name not in self._remote:
            fn = {"assign": _assign_block, "select": _select_one}[name]
            self._remote[name] = self.ray.remote(num_cpus=1)(fn)
        return self._remote[name]

    # --- embedding ------------------------------------------------------------------------

    def embedder(self, encoder: str, *, max_tokens: int, batch_size: int,
                 device: str | None = None, cache_dir=None, quiet: bool = False,
                 batch_tokens: int | None = None):
        from coretune.embed import Embedder

        # RayEncoder batches by count only (the driver has no tokenizer): Embedder refuses
        # batch_tokens for it
        return Embedder(RayEncoder(self, encoder, max_tokens, device), cache_dir=cache_dir,
                        batch_size=batch_size, quiet=quiet, batch_tokens=batch_tokens)

    def _encoders(self, spec: str, max_tokens: int, device: str | None) -> tuple[list, dict]:
        kind, _, arg = spec.partition(":")
        if arg and Path(arg).exists():  # a local model, for any kind that takes one:
            spec = f"{kind}:{Path(arg).resolve()}"  # workers do not share our working dir
        key = (spec, max_tokens, device)
        if self._pool is not None and self._pool[0] == key:
            return self._pool[1], self._pool[2]
        self.close()
        ray = self.connect()
        res = ray.cluster_resources()
        gpus = int(res.get("GPU", 0))
        if device == "cuda" or (device is None and gpus > 0):
            if gpus < 1:
                raise CoretuneError("device cuda, but the Ray cluster has no GPU",
                                    field="device")
            n, opts, dev = min(self.actors or gpus, gpus), {"num_gpus": 1}, "cuda"
        else:
            fit = max(1, int(res.get("CPU", 1)) // self.actor_cpus)
            n, opts, dev = min(self.actors or fit, fit), {}, device or "cpu"
        cls = ray.remote(_EncoderActor).options(num_cpus=self.actor_cpus,
                                                scheduling_strategy="SPREAD", **opts)
        actors = [cls.remote(spec, max_tokens, dev, self.actor_cpus) for _ in range(n)]
        try:
            infos = ray.get([a.info.remote() for a in actors])
        except ray.exceptions.RayActorError as e:
            raise CoretuneError(f"embedding actors failed to start ({e})",
                                field="encoder") from e
        if any(i != infos[0] for i in infos):  # a node with other weights would give other rows
            raise CoretuneError(f"embedding actors load different models: {infos}",
                                field="encoder")
        self._pool = (key, actors, infos[0])
        return actors, infos[0]

    def close(self) -> None:
        """Kill the embedding actors: the labelling and selection tasks need their CPUs."""
        if self._pool is not None:
            for actor in self._pool[1]:
                self.ray.kill(actor)
            self._pool = None

    # --- labelling and selection ----------------------------------------------------------

    def _bounded(self, items: Iterable, total: int, submit: Callable[[Any], Any], desc: str,
                 quiet: bool) -> list:
        """`submit(item)` for each of the `total` items (taken lazily), at most one per CPU
        running (bounded object store); results in item order."""
        from tqdm.auto import tqdm

        ray, limit = self.ray, self._cpus()
        results: list = [None] * total
        running: dict[Any, int] = {}
        with tqdm(total=total, desc=desc, disable=quiet or total < 2,
                  dynamic_ncols=True) as bar:

            def collect() -> None:
                done, _ = ray.wait(list(running), num_returns=1)
                results[running.pop(done[0])] = ray.get(done[0])
                bar.update()

            for i, item in enumerate(items):
                while len(running) >= limit:
                    collect()
                running[submit(item)] = i
            while running:
                collect()
        return results

    def assign(self, x: np.ndarray, centroids: np.ndarray, spherical: bool, chunk: int
               ) -> tuple[np.ndarray, np.ndarray]:
        self.close()
        ray, task = self.connect(), self._fn("assign")
        c = ray.put(np.ascontiguousarray(centroids, dtype=np.float32))

        def submit(start: int):
            part = np.ascontiguousarray(x[start:start + chunk], dtype=np.float32)
            return task.remote(part, c, spherical, chunk)

        starts = range(0, len(x), chunk)
        parts = self._bounded(starts, len(starts), submit, "assign (ray)", False)
        return (np.concatenate([p[0] for p in parts]).astype(np.int64, copy=False),
                np.concatenate([p[1] for p in parts]).astype(np.float32, copy=False))

    def select(self, x: np.ndarray, labels: np.ndarray, targets, budget: int, method: str,
               seed: int, centroids: np.ndarray | None = None, *, quiet: bool = False,
               queries: np.ndarray | None = None):
        self.close()
        self.connect()
        plan = plan_selection(x, labels, targets, budget, method, seed, centroids, queries)
        task = self._fn("select")

        def submit(job):
            return task.remote(method, job, n_jobs=1, quiet=True)

        return plan.gather(self._bounded(plan.jobs(), len(plan.shares), submit, "select (ray)",
                                    quiet))


def shutdown() -> None:
    """Stop this process' Ray connection (and the local cluster it started)."""
    ray = import_ray()
    if ray.is_initialized():
        ray.shutdown()
