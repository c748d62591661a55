"""Peak memory of the embed step: streamed from the pool file (what `coretune run`'s embed
stage does now) against the whole-pool path (what it did before: `load_pool(...).prompts`
into `Embedder.embed` writing a memory-mapped `embeddings.npy`), for pools of several sizes
and two chunk sizes, cold cache then warm cache.

    python benchmarks/bench_embed_stream.py [--rows 2000,8000,32000] [--chunks 256,4096]

The encoder is `hash3`, registered here: character-trigram counts hashed into 384 buckets,
L2-normalised. It is a real encoder (same protocol, same cache, same files) that costs
microseconds, so the numbers are the embed step's own memory, not a model's. Every
measurement runs in a fresh process (`coretune.run.memory.peak_memory` around the step; RSS
before the step is reported too, and `delta_mib` = peak - before; `index_mib` is the
cache's digest index, rebuilt under tracemalloc). Writes
benchmarks/results/bench_embed_stream.json with the ratios of the deltas to the smallest pool.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "bench_embed_stream.json"
DIM = 384


class HashEncoder:
    """Character trigrams hashed into DIM buckets (a cheap, deterministic, real encoder)."""

    name, pooling, dim = "hash3-bench", "hash", DIM

    def __init__(self, max_tokens: int):
        self.max_tokens = max_tokens

    def encode(self, texts, batch_size=64, progress=None) -> np.ndarray:
        from coretune.embed.encoders import length_batches, normalise_rows

        out = np.empty((len(texts), DIM), np.float32)
        for idx in length_batches(texts, batch_size):
            out[idx] = normalise_rows(np.stack([self._one(texts[i]) for i in idx]), idx)
            if progress is not None:
                progress(len(idx))
        return out

    def _one(self, text: str) -> np.ndarray:
        b = np.frombuffer(text.encode()[: self.max_tokens * 8], np.uint8).astype(np.int64)
        return np.bincount((b[:-2] * 961 + b[1:-1] * 31 + b[2:]) % DIM,
                           minlength=DIM).astype(np.float32)


def write_pool(path: Path, rows: int) -> None:
    """A pool of `rows` distinct ~1.2 kB prompts, saved as the pool stage saves it."""
    from coretune.data.pool import Pool

    rng = np.random.default_rng(rows)
    vocab = np.array([f"w{i}" for i in range(2000)])
    prompts = [f"{i} " + " ".join(vocab[rng.integers(0, 2000, 240)]) for i in range(rows)]
    Pool.from_records([{"uid": f"u{i}", "task": f"t{i % 7}", "prompt": p, "target": "yes"}
                       for i, p in enumerate(prompts)]).save(path)


def probe(mode: str, pool: str, chunk: int, cache: str, out: str) -> dict:
    """One process: the embed step on `pool`, cold then warm, each inside peak_memory."""
    import pyarrow.parquet  # noqa: F401  (one-time imports are not the step's memory)
    import tqdm.auto  # noqa: F401

    from coretune.data.pool import load_pool, prompt_batches
    from coretune.embed import Embedder, make_encoder, register_encoder
    from coretune.run.memory import peak_memory, rss_peak_mb

    register_encoder("hash3", lambda arg, max_tokens, device: HashEncoder(max_tokens))
    result = {}
    for run in ("cold", "warm"):
        emb = Embedder(make_encoder("hash3", max_tokens=128), cache_dir=cache, chunk_size=chunk,
                       quiet=True)
        folder = Path(out) / run
        folder.mkdir(parents=True)
        before = _rss_mb()
        with peak_memory() as peak:
            if mode == "stream":  # stages.embed_stage
                rows, batches = prompt_batches(pool, chunk)
                emb.embed_batches_to(batches, rows, folder)
            else:  # the stage before: the whole prompt list, a writable memory map
                texts = load_pool(pool).prompts
                mm = np.lib.format.open_memmap(folder / "embeddings.npy", mode="w+",
                                               dtype=np.float32, shape=(len(texts), DIM))
                emb.embed(texts, out=mm)
                mm.flush()
                del mm, texts
        assert rss_peak_mb() is not None
        result[run] = {"rss_before_mib": before, "peak_rss_mib": peak["peak_rss_mb"],
                       "delta_mib": round(peak["peak_rss_mb"] - before, 1),
                       "rss_method": peak["rss_method"], "encoded": emb.n_encoded_,
                       "cached": emb.n_cached_}
    result["sha256"] = _sha(Path(out) / "cold" / "embeddings.npy")
    result["index_mib"] = _index_mib(emb)
    return result


def _index_mib(emb) -> float:
    """What the cache's digest index takes (Python allocations while it is rebuilt): the one
    part of the embed step that grows with the pool."""
    import tracemalloc

    from coretune.embed import EmbeddingCache

    tracemalloc.start()
    cache = EmbeddingCache(emb.cache.folder, emb.cache.dim)
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(cache) == emb.n_cached_
    return round(size / 2**20, 2)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return round(kb / 1024, 1)


def _sha(path: Path) -> str:
    from coretune.io import sha256_file

    return sha256_file(path)


def measure(mode: str, pool: Path, chunk: int, tmp: Path) -> dict:
    work = Path(tempfile.mkdtemp(dir=tmp))
    cmd = [sys.executable, __file__, "--probe", mode, str(pool), str(chunk),
           str(work / "cache"), str(work / "out")]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ.copy())
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="2000,8000,32000")
    ap.add_argument("--chunks", default="256,4096")
    ap.add_argument("--probe", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        mode, pool, chunk, cache, out = args.probe
        print(json.dumps(probe(mode, pool, int(chunk), cache, out)))
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for rows in map(int, args.rows.split(",")):
            pool = Path(tmp) / f"pool{rows}.parquet"
            write_pool(pool, rows)
            for chunk in map(int, args.chunks.split(",")):
                mib = round(pool.stat().st_size / 2**20, 2)
                r = {"rows": rows, "chunk": chunk, "pool_mib": mib,
                     **{m: measure(m, pool, chunk, Path(tmp)) for m in ("whole", "stream")}}
                r["same_bytes"] = r["whole"].pop("sha256") == r["stream"].pop("sha256")
                results.append(r)
                print(json.dumps(r), flush=True)
    for r in results:  # growth against the smallest pool at the same chunk size
        base = next(b for b in results if b["chunk"] == r["chunk"])
        r["rows_ratio"] = round(r["rows"] / base["rows"], 2)
        for m in ("whole", "stream"):
            for run in ("cold", "warm"):
                r[m][run]["delta_ratio"] = round(r[m][run]["delta_mib"]
                                                 / max(base[m][run]["delta_mib"], 0.1), 2)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"encoder": "hash3 (trigram hashing, dim 384)",
                                   "results": results}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
