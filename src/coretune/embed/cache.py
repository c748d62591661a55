"""Prompt embeddings through an on-disk cache (the encoders are in `encoders`).

`Embedder` wraps an encoder with a cache keyed by (encoder, pooling, max tokens) + sha256 of
each prompt: a rerun encodes nothing, a grown pool encodes only its new rows. The cache is a
folder of append-only shards (`<id>.npy` float32 + `<id>.keys.npy` sha256 digests); a shard
is written to a temporary name and renamed, keys last, so a crash never leaves a shard that
looks whole. A pool is embedded as a stream of prompt batches (`Embedder.embed_batches_to`):
the embed step holds one chunk, never the pool or its array (benchmarks/bench_embed_stream.py).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from coretune.embed.encoders import DEFAULT_BATCH_SIZE, Encoder
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
    """Append-only shards of (sha256 digest -> float32 row) in one folder per encoder key.

    Vectors are read from the shard files on demand (one read per shard and lookup, at
    most one shard's rows), never memory-mapped: a mapped shard's touched pages would stay in
    this process's RSS, so a warm run over a big pool would grow with the cache. The digest
    index (about 160 bytes per cached row, measured) is the one thing here that grows with it.
    """

    def __init__(self, folder: str | Path, dim: int):
        self.folder = Path(folder)
        self.dim = dim
        self._shards: list[tuple[Path, int]] = []  # vectors file, offset of its first row
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
            self._shards.append((vec_path, int(vecs.offset)))
            del vecs  # only its header was read
            for row, k in enumerate(keys.tolist()):
                self._index.setdefault(k, (s, row))

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._index

    @property
    def n_shards(self) -> int:
        return len(self._shards)

    def shard_of(self, digest: bytes) -> int:
        """Position of the shard holding `digest` (in the order shards were found), -1 if none."""
        return self._index.get(digest, (-1, 0))[0]

    def get(self, digests: Sequence[bytes], out: np.ndarray, rows: np.ndarray) -> None:
        """Copy the cached vectors of `digests` into `out[rows]` (all must be present)."""
        by_shard: dict[int, tuple[list[int], list[int]]] = {}
        for r, d in zip(rows.tolist(), digests, strict=True):
            s, i = self._index[d]
            dst, src = by_shard.setdefault(s, ([], []))
            dst.append(r)
            src.append(i)
        width = self.dim * 4
        for s, (dst, src) in by_shard.items():
            path, offset = self._shards[s]
            lo, hi = min(src), max(src) + 1
            with open(path, "rb") as f:  # the span of rows needed: at most one shard
                f.seek(offset + lo * width)
                span = np.frombuffer(f.read((hi - lo) * width), np.float32)
            out[np.asarray(dst)] = span.reshape(hi - lo, self.dim)[np.asarray(src) - lo]

    def add(self, digests: np.ndarray, vectors: np.ndarray) -> None:
        """Write one shard: vectors first, keys last (the keys file is the commit marker)."""
        if len(digests) == 0:
            return
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


Put = Callable[[np.ndarray, np.ndarray], None]  # (rows, their vectors) -> stored


class Embedder:
    """Embed prompts through the on-disk cache.

    >>> emb = Embedder(make_encoder("minilm-int8", max_tokens=128)).embed(pool.prompts)

    `embed_batches` / `embed_batches_to` take the prompts as consecutive batches (e.g. a pool
    file read `chunk_size` rows at a time) and hold one batch, at most `chunk_size` prompts
    waiting to be encoded and their vectors: memory is bounded by the chunk, not the pool
    (plus the cache's digest index). Encoder calls, hence the bytes, are the same however the
    prompts are split: each distinct prompt missing from the cache is encoded once, in chunks
    of `chunk_size` in order of first appearance, and each chunk is committed to the cache
    before the next (a crash loses one chunk). After a call, `n_cached_` and `n_encoded_`
    say how many rows came from the cache and how many were encoded, `seconds_` how long
    encoding took.
    """

    def __init__(self, encoder: Encoder, *, cache_dir: str | Path | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, chunk_size: int = 4096, quiet: bool = False,
                 batch_tokens: int | None = None):
        self.encoder = encoder
        self.batch_size = batch_size
        # batches of at most this many tokens instead (BatchEncoder.encode); an encoder
        # whose encode cannot is refused now, not after the pool is read
        self.batch_tokens = batch_tokens
        if batch_tokens is not None and "batch_tokens" not in inspect.signature(
                encoder.encode).parameters:
            raise CoretuneError(f"encoder {encoder.name} cannot batch by tokens on this "
                                "backend", field="batch_tokens")
        self.chunk_size = chunk_size  # rows encoded between cache commits (crash = lose one)
        self.quiet = quiet
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "embeddings"
        self.cache_root = root  # every encoder's cache folder is in it
        self.cache = EmbeddingCache(root / cache_key(encoder), encoder.dim)
        self.n_cached_ = 0
        self.n_encoded_ = 0
        self.seconds_ = 0.0

    def embed(self, texts: Sequence[str], out: np.ndarray | None = None) -> np.ndarray:
        """Rows for `texts`, in order. `out` (e.g. a memory map) receives them if given."""
        texts = list(texts)
        return self.embed_batches(_slices(texts, self.chunk_size), len(texts), out)

    def embed_batches(self, batches: Iterable[Sequence[str]], rows: int,
                      out: np.ndarray | None = None) -> np.ndarray:
        """Rows for the prompts of `batches` (`rows` in all), in order, in `out` if given."""
        if out is None:
            out = np.empty((rows, self.encoder.dim), np.float32)
        elif out.shape != (rows, self.encoder.dim) or out.dtype != np.float32:
            raise ValueError(f"out must be float32 {(rows, self.encoder.dim)}")

        def put(idx: np.ndarray, vecs: np.ndarray) -> None:
            out[idx] = vecs

        n, _ = self.stream(batches, put)
        _check_rows(n, rows)
        return out

    def stream(self, batches: Iterable[Sequence[str]], put: Put) -> tuple[int, str]:
        """Embed consecutive batches of one list of prompts: `put(rows, vectors)` receives
        every row (its position in the whole list) once, in no particular order. Returns the
        number of rows and `prompt_digests_sha` of the whole list."""
        self.cache.refresh()
        known = self.cache.n_shards  # shards found after this hold rows this call encoded
        todo = _Todo(self, put)
        h = hashlib.sha256()
        n = cached = 0
        try:
            for texts in batches:
                digests = prompt_digests(texts)
                h.update(digests.tobytes())
                keys = digests.tolist()
                shard = np.fromiter(map(self.cache.shard_of, keys), np.int64, len(keys))
                cached += int(((shard >= 0) & (shard < known)).sum())
                hit = np.flatnonzero(shard >= 0)
                if len(hit):
                    todo.copy_cached([keys[i] for i in hit.tolist()], n + hit)
                for i in np.flatnonzero(shard < 0).tolist():
                    todo.add(keys[i], texts[i], n + i)
                n += len(keys)
            todo.flush()
        finally:
            todo.close()
        self.n_cached_, self.n_encoded_, self.seconds_ = cached, todo.encoded, todo.seconds
        return n, h.hexdigest()

    def meta(self, n: int) -> dict:
        return {"encoder": self.encoder.name, "pooling": self.encoder.pooling,
                "max_tokens": self.encoder.max_tokens, "dim": self.encoder.dim, "rows": n,
                "dtype": "float32", "normalised": "l2"}

    def embed_to(self, texts: Sequence[str], folder: str | Path) -> np.ndarray:
        """`embed_batches_to` for a list of prompts."""
        texts = list(texts)
        return self.embed_batches_to(_slices(texts, self.chunk_size), len(texts), folder)

    def embed_batches_to(self, batches: Iterable[Sequence[str]], rows: int,
                         folder: str | Path) -> np.ndarray:
        """Embed and write `embeddings.npy` (row i = prompt i) + `meta.json` into `folder`.
        Rows are written into the file as they are made (atomic: a crash leaves no file), so
        neither the prompts nor the array are ever held whole. Returns the written array,
        memory-mapped read-only (what clustering and selection read)."""
        folder = Path(folder)
        with atomic_path(folder / "embeddings.npy") as tmp:
            writer = _NpyRows(tmp, (rows, self.encoder.dim))
            try:
                n, sha = self.stream(batches, writer)
            finally:
                writer.close()
            _check_rows(n, rows)
        x = np.load(folder / "embeddings.npy", mmap_mode="r", allow_pickle=False)
        meta = {**self.meta(len(x)), "prompts_sha256": sha,
                "cached_rows": self.n_cached_, "encoded_rows": self.n_encoded_,
                "encode_seconds": round(self.seconds_, 3)}
        write_json(folder / "meta.json", meta)
        return x


class _Todo:
    """The prompts waiting to be encoded (at most `chunk_size`, each distinct one once) and
    the rows waiting for them; `flush` encodes, commits to the cache and hands rows on."""

    def __init__(self, embedder: Embedder, put: Put):
        self.emb, self.put = embedder, put
        self.index: dict[bytes, int] = {}  # digest -> position in texts (insertion order)
        self.texts: list[str] = []
        self.rows: list[int] = []
        self.waiting: list[tuple[int, int]] = []  # (row, position of its prompt in texts)
        self.encoded, self.seconds = 0, 0.0
        self.bar = None

    def copy_cached(self, keys: list[bytes], rows: np.ndarray) -> None:
        vecs = np.empty((len(rows), self.emb.encoder.dim), np.float32)
        self.emb.cache.get(keys, vecs, np.arange(len(rows)))
        self.put(rows, vecs)

    def add(self, key: bytes, text: str, row: int) -> None:
        if key in self.index:  # the same prompt earlier in this chunk (pools repeat prompts)
            self.waiting.append((row, self.index[key]))
        elif key in self.emb.cache:  # committed by a flush since its batch was looked up
            self.copy_cached([key], np.array([row]))
        else:
            self.index[key] = len(self.texts)
            self.texts.append(text)
            self.rows.append(row)
            if len(self.texts) >= self.emb.chunk_size:
                self.flush()

    def flush(self) -> None:
        if not self.texts:
            return
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(unit="prompt", desc=f"embed ({self.emb.encoder.name[:30]})",
                            disable=self.emb.quiet, dynamic_ncols=True)
        start = time.perf_counter()
        tokens = {} if self.emb.batch_tokens is None else {"batch_tokens": self.emb.batch_tokens}
        vecs = self.emb.encoder.encode(self.texts, self.emb.batch_size, progress=self.bar.update,
                                       **tokens)
        check_stored_embeddings(vecs)  # an encoder outside this module may not check
        self.emb.cache.add(np.array(list(self.index), _DIGEST), vecs)
        self.put(np.asarray(self.rows, np.int64), vecs)
        if self.waiting:
            rows, src = zip(*self.waiting, strict=True)
            self.put(np.asarray(rows, np.int64), vecs[list(src)])
        self.seconds += time.perf_counter() - start
        self.encoded += len(self.texts)
        self.index, self.texts, self.rows, self.waiting = {}, [], [], []

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _NpyRows:
    """A float32 .npy file of known shape whose rows are written in place, in any order.

    Positioned writes, not a writable memory map: a map's written pages count in this
    process's RSS until it is unmapped, so a big pool's array would look resident. The
    header comes from `np.lib.format.open_memmap` (no page is touched), the same bytes as
    an array written whole."""

    def __init__(self, path: Path, shape: tuple[int, int]):
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
        self.offset, self.width = int(mm.offset), shape[1] * 4
        del mm
        self.fd = os.open(path, os.O_WRONLY)

    def __call__(self, rows: np.ndarray, vecs: np.ndarray) -> None:
        order = np.argsort(rows, kind="stable")
        rows, vecs = rows[order], np.ascontiguousarray(vecs[order], np.float32)
        runs = np.flatnonzero(np.diff(rows) != 1) + 1  # one write per run of adjacent rows
        for r, v in zip(np.split(rows, runs), np.split(vecs, runs), strict=True):
            data, at = memoryview(v).cast("B"), self.offset + int(r[0]) * self.width
            while data:  # a short write is continued
                n = os.pwrite(self.fd, data, at)
                data, at = data[n:], at + n

    def close(self) -> None:
        os.close(self.fd)


def _slices(texts: list[str], size: int) -> Iterator[list[str]]:
    return (texts[i:i + size] for i in range(0, len(texts), size))


def _check_rows(n: int, rows: int) -> None:
    if n != rows:
        raise ValueError(f"the batches held {n} prompts, not the {rows} announced")


def prompt_digests_sha(texts: Sequence[str]) -> str:
    """One hash for a whole list of prompts (order matters): identifies what was embedded."""
    return hashlib.sha256(prompt_digests(texts).tobytes()).hexdigest()


def load_embeddings(folder: str | Path) -> tuple[np.ndarray, dict]:
    """`embeddings.npy` (memory-mapped) and `meta.json` of an embed folder.

    Clustering, targeting and selection need every row, and read them through this map, so
    the array need not fit in memory at once: K-means copies its sample and labels rows in
    blocks, a selection copies the rows of the target clusters."""
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
