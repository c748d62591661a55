"""Prompt embeddings through an on-disk cache (the encoders are in `coretune.encoders`).

`Embedder` wraps an encoder with a cache keyed by (encoder, pooling, max tokens) + sha256 of
each prompt: a rerun encodes nothing, a grown pool encodes only its new rows. The cache is a
folder of append-only shards (`<id>.npy` float32 + `<id>.keys.npy` sha256 digests); a shard
is written to a temporary name and renamed, keys last, so a crash never leaves a shard that
looks whole. Imports: encoders, io, paths, validation.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from coretune.encoders import (  # noqa: F401  (re-exported: the embedding API in one place)
    DEFAULT_MAX_TOKENS,
    Encoder,
    MeanPoolEncoder,
    SentenceTransformerEncoder,
    encoder_names,
    length_batches,
    make_encoder,
    normalise_rows,
    register_encoder,
    smollm2_path,
)
from coretune.errors import CoretuneError
from coretune.io import atomic_path, read_json, sha256_file, write_json
from coretune.paths import cache_dir as default_cache_dir
from coretune.validation import check_stored_embeddings

_DIGEST = np.dtype("S32")  # raw sha256 of a prompt


def prompt_digests(texts: Sequence[str]) -> np.ndarray:
    """sha256 of each text (UTF-8) as fixed 32-byte records."""
    return np.array([hashlib.sha256(t.encode("utf-8")).digest() for t in texts], _DIGEST)


def cache_key(encoder: Encoder) -> str:
    """Folder name of an encoder's cache: readable prefix + hash of the full key."""
    key = json.dumps({"encoder": encoder.name, "pooling": encoder.pooling,
                      "max_tokens": encoder.max_tokens, "dim": encoder.dim}, sort_keys=True)
    base = Path(re.split(r"[#@]", encoder.name)[0]).name
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", base)[:40]
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{slug}-{encoder.pooling}-{encoder.max_tokens}-{digest}"


class EmbeddingCache:
    """Append-only shards of (sha256 digest -> float32 row) in one folder per encoder key."""

    def __init__(self, folder: str | Path, dim: int):
        self.folder = Path(folder)
        self.dim = dim
        self._shards: list[np.ndarray] = []
        self._index: dict[bytes, tuple[int, int]] = {}
        self._seen: set[str] = set()
        self.refresh()

    def refresh(self) -> None:
        """Pick up shards written since (by this or another process)."""
        if not self.folder.is_dir():
            return
        for keys_path in sorted(self.folder.glob("*.keys.npy")):
            shard_id = keys_path.name[: -len(".keys.npy")]
            if shard_id in self._seen:
                continue
            vec_path = self.folder / f"{shard_id}.npy"
            if not self._intact(shard_id, keys_path, vec_path):
                continue  # truncated or corrupted since written: its rows are encoded again
            try:
                keys = np.load(keys_path, allow_pickle=False)
                vecs = np.load(vec_path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError):
                continue  # not a shard of ours (or unreadable): ignore, never trust it
            if vecs.ndim != 2 or vecs.shape != (len(keys), self.dim) or vecs.dtype != np.float32:
                continue
            self._seen.add(shard_id)
            s = len(self._shards)
            self._shards.append(vecs)
            for row, k in enumerate(keys.tolist()):
                self._index.setdefault(k, (s, row))

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._index

    def get(self, digests: Sequence[bytes], out: np.ndarray, rows: np.ndarray) -> None:
        """Copy the cached vectors of `digests` into `out[rows]` (all must be present)."""
        by_shard: dict[int, tuple[list[int], list[int]]] = {}
        for r, d in zip(rows.tolist(), digests, strict=True):
            s, i = self._index[d]
            dst, src = by_shard.setdefault(s, ([], []))
            dst.append(r)
            src.append(i)
        for s, (dst, src) in by_shard.items():
            order = np.argsort(src)  # sequential reads from the memory map
            out[np.asarray(dst)[order]] = self._shards[s][np.asarray(src)[order]]

    def add(self, digests: np.ndarray, vectors: np.ndarray) -> None:
        """Write one shard: vectors first, keys last (the keys file is the commit marker)."""
        if len(digests) == 0:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        # Content-named: two processes adding the same rows write the same shard name.
        shard_id = hashlib.sha256(digests.tobytes()).hexdigest()[:24]
        vec_path = self.folder / f"{shard_id}.npy"
        with atomic_path(vec_path) as tmp:
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=vectors.shape)
            mm[:] = vectors
            mm.flush()
            del mm
        keys_path = self.folder / f"{shard_id}.keys.npy"
        with atomic_path(keys_path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, digests.astype(_DIGEST), allow_pickle=False)
            # the recorded hashes go in first: the keys file stays the commit marker
            write_json(self.folder / f"{shard_id}.sha256.json",
                       {"keys": sha256_file(tmp), "vectors": sha256_file(vec_path)})
        self._seen.discard(shard_id)  # a rewritten (formerly corrupted) shard is read anew
        self.refresh()

    def _intact(self, shard_id: str, keys_path: Path, vec_path: Path) -> bool:
        """Whether both files of a shard still have the hashes recorded when it was written."""
        try:
            rec = read_json(self.folder / f"{shard_id}.sha256.json")
            return (rec.get("keys") == sha256_file(keys_path)
                    and rec.get("vectors") == sha256_file(vec_path))
        except (OSError, ValueError, AttributeError):
            return False


class Embedder:
    """Embed prompts through the on-disk cache.

    >>> emb = Embedder(make_encoder("minilm", max_tokens=128)).embed(pool.prompts)

    After `embed`, `n_cached_` and `n_encoded_` say how many rows came from the cache and
    how many were encoded, `seconds_` how long encoding took.
    """

    def __init__(self, encoder: Encoder, *, cache_dir: str | Path | None = None,
                 batch_size: int = 64, chunk_size: int = 4096, quiet: bool = False):
        self.encoder = encoder
        self.batch_size = batch_size
        self.chunk_size = chunk_size  # rows encoded between cache commits (crash = lose one)
        self.quiet = quiet
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "embeddings"
        self.cache = EmbeddingCache(root / cache_key(encoder), encoder.dim)
        self.n_cached_ = 0
        self.n_encoded_ = 0
        self.seconds_ = 0.0

    def embed(self, texts: Sequence[str], out: np.ndarray | None = None) -> np.ndarray:
        """Rows for `texts`, in order. `out` (e.g. a memory map) receives them if given."""
        texts = list(texts)
        digests = prompt_digests(texts)
        if out is None:
            out = np.empty((len(texts), self.encoder.dim), np.float32)
        elif out.shape != (len(texts), self.encoder.dim) or out.dtype != np.float32:
            raise ValueError(f"out must be float32 {(len(texts), self.encoder.dim)}")
        self.cache.refresh()
        hit = np.fromiter((d in self.cache for d in digests.tolist()), bool, len(texts))
        hit_rows = np.flatnonzero(hit)
        if len(hit_rows):
            self.cache.get(digests[hit_rows].tolist(), out, hit_rows)
        # Encode each distinct missing prompt once (pools repeat prompts across templates).
        miss_rows = np.flatnonzero(~hit)
        _, first = np.unique(digests[miss_rows], return_index=True)
        todo = miss_rows[np.sort(first)]
        self.n_cached_, self.n_encoded_ = len(hit_rows), len(todo)
        start = time.perf_counter()
        if len(todo):
            self._encode_missing(texts, digests, todo, out)
            dup = miss_rows[~np.isin(miss_rows, todo)]
            if len(dup):  # rows whose prompt equals an earlier missing one
                first_of = {d: r for r, d in zip(todo.tolist(), digests[todo].tolist(),
                                                 strict=True)}
                out[dup] = out[[first_of[d] for d in digests[dup].tolist()]]
        self.seconds_ = time.perf_counter() - start
        return out

    def _encode_missing(self, texts, digests, todo: np.ndarray, out: np.ndarray) -> None:
        from tqdm.auto import tqdm

        with tqdm(total=len(todo), unit="prompt", desc=f"embed ({self.encoder.name[:30]})",
                  disable=self.quiet, dynamic_ncols=True) as bar:
            for start in range(0, len(todo), self.chunk_size):
                rows = todo[start:start + self.chunk_size]
                vecs = self.encoder.encode([texts[i] for i in rows], self.batch_size,
                                           progress=bar.update)
                check_stored_embeddings(vecs)  # an encoder outside this module may not check
                out[rows] = vecs
                self.cache.add(digests[rows], vecs)

    def meta(self, n: int) -> dict:
        return {"encoder": self.encoder.name, "pooling": self.encoder.pooling,
                "max_tokens": self.encoder.max_tokens, "dim": self.encoder.dim, "rows": n,
                "dtype": "float32", "normalised": "l2"}

    def embed_to(self, texts: Sequence[str], folder: str | Path) -> np.ndarray:
        """Embed and write `embeddings.npy` (row i = text i) + `meta.json` into `folder`.
        Rows go straight into a memory-mapped file: a big pool never sits in RAM twice.
        Returns the written array, memory-mapped read-only."""
        texts = list(texts)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "embeddings.npy") as tmp:
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                           shape=(len(texts), self.encoder.dim))
            self.embed(texts, out=mm)
            mm.flush()
            del mm
        x = np.load(folder / "embeddings.npy", mmap_mode="r", allow_pickle=False)
        meta = {**self.meta(len(x)), "prompts_sha256": prompt_digests_sha(texts),
                "cached_rows": self.n_cached_, "encoded_rows": self.n_encoded_,
                "encode_seconds": round(self.seconds_, 3)}
        write_json(folder / "meta.json", meta)
        return x


def prompt_digests_sha(texts: Sequence[str]) -> str:
    """One hash for a whole list of prompts (order matters): identifies what was embedded."""
    return hashlib.sha256(prompt_digests(texts).tobytes()).hexdigest()


def load_embeddings(folder: str | Path) -> tuple[np.ndarray, dict]:
    """`embeddings.npy` (memory-mapped) and `meta.json` of an embed folder."""
    folder = Path(folder)
    path = folder / "embeddings.npy"
    if not path.is_file():
        raise CoretuneError("embeddings file not found", path=path)
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise CoretuneError(f"not a plain .npy array ({e})", path=path) from e
    meta = read_json(folder / "meta.json") if (folder / "meta.json").is_file() else {}
    check_stored_embeddings(x, path=path)
    return x, meta
