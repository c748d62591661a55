"""Embedding throughput: coretune's cached Embedder vs the encoder's raw batched forward pass.

On the same real pool prompts, at each --max-tokens setting, in one run:
- raw (input order): tokenise + forward + pool in batches, prompts in pool order;
- raw (length-sorted): the same forward on the batches the Embedder will form;
- sentence-transformers' own `encode` (library reference);
- Embedder, cold cache: hashing, sorting, encoding, cache write;
- Embedder, warm cache: a second run on the same prompts (must call the encoder 0 times).
Each timed pass is repeated (--repeats, interleaved) and the best time kept, so a busy
neighbour on a shared machine inflates neither side alone.

    HF_HUB_OFFLINE=1 python benchmarks/bench_embed.py --n 500 --max-tokens 128 256
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from coretune.embed import Embedder, make_encoder
from coretune.io import write_json

OUT = Path(__file__).resolve().parent / "results" / "bench_embed.json"


class CountingEncoder:
    """Passes through to a real encoder and counts calls and texts."""

    def __init__(self, encoder):
        self.inner = encoder
        self.name, self.dim = encoder.name, encoder.dim
        self.pooling, self.max_tokens = encoder.pooling, encoder.max_tokens
        self.calls = self.texts = 0

    def encode(self, texts, batch_size=64, progress=None):
        self.calls += 1
        self.texts += len(texts)
        return self.inner.encode(texts, batch_size, progress)


def pool_prompts(n: int, seed: int) -> list[str]:
    from coretune.data.sources import build_pool

    pool = build_pool(bigbench="sample")  # 20k BIG-bench + 25k RTE/CB rows, all real
    idx = np.sort(np.random.default_rng(seed).choice(len(pool), n, replace=False))
    prompts = pool.prompts
    return [prompts[i] for i in idx.tolist()]


def raw_forward(encoder, prompts: list[str], batch_size: int, sort: bool) -> float:
    order = (np.argsort(-np.array([len(p) for p in prompts]), kind="stable") if sort
             else np.arange(len(prompts)))
    start = time.perf_counter()
    for i in range(0, len(prompts), batch_size):
        encoder.forward_batch([prompts[j] for j in order[i:i + batch_size]])
    return time.perf_counter() - start


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def bench(max_tokens: int, prompts: list[str], batch_size: int, repeats: int) -> dict:
    enc = make_encoder("minilm", max_tokens=max_tokens, device="cpu")
    enc.encode(prompts[:batch_size], batch_size)  # warm-up (allocator, kernels)
    times: dict[str, list[float]] = {k: [] for k in
                                     ("raw_input_order", "raw_sorted", "st_encode", "embedder")}
    counting = CountingEncoder(enc)
    for _ in range(repeats):
        times["raw_input_order"].append(raw_forward(enc, prompts, batch_size, sort=False))
        times["raw_sorted"].append(raw_forward(enc, prompts, batch_size, sort=True))
        times["st_encode"].append(timed(enc.model.encode, prompts,
                                         batch_size=batch_size, normalize_embeddings=True))
        with tempfile.TemporaryDirectory() as cache:  # cold cache each time
            emb = Embedder(counting, cache_dir=cache, batch_size=batch_size, quiet=True)
            times["embedder"].append(timed(emb.embed, prompts))
            encoded = emb.n_encoded_
            calls_cold = counting.calls
            warm = Embedder(counting, cache_dir=cache, batch_size=batch_size, quiet=True)
            warm_s = timed(warm.embed, prompts)
            calls_warm = counting.calls - calls_cold
            counting.calls = 0
    best = {k: min(v) for k, v in times.items()}
    n = len(prompts)
    return {
        "max_tokens": max_tokens,
        "prompts_per_s": {k: round(n / v, 2) for k, v in best.items()},
        "seconds_best": {k: round(v, 3) for k, v in best.items()},
        "seconds_all": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "ratio_embedder_vs_raw_sorted": round(best["raw_sorted"] / best["embedder"], 4),
        "ratio_embedder_vs_raw_input_order": round(best["raw_input_order"] / best["embedder"], 4),
        "ratio_embedder_vs_st_encode": round(best["st_encode"] / best["embedder"], 4),
        "distinct_prompts_encoded_cold": int(encoded),
        "cached_run": {"encoder_calls": calls_warm, "seconds": round(warm_s, 4),
                       "prompts_per_s": round(n / warm_s, 1)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500, help="real pool prompts (seeded sample)")
    ap.add_argument("--max-tokens", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", type=Path, default=OUT)
    args = ap.parse_args()
    import torch

    prompts = pool_prompts(args.n, args.seed)
    results = []
    for mt in args.max_tokens:
        r = bench(mt, prompts, args.batch_size, args.repeats)
        print(f"max_tokens={mt}: {r['prompts_per_s']} prompts/s; embedder/raw(sorted) "
              f"throughput ratio {r['ratio_embedder_vs_raw_sorted']}, cached run: "
              f"{r['cached_run']['encoder_calls']} encoder calls", flush=True)
        results.append(r)
    write_json(args.output, {
        "benchmark": "bench_embed", "encoder": "minilm (all-MiniLM-L6-v2)", "device": "cpu",
        "n_prompts": args.n, "prompt_chars_mean": round(float(np.mean([len(p) for p in prompts])),
                                                        1),
        "batch_size": args.batch_size, "repeats": args.repeats, "seed": args.seed,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "machine": platform.machine(), "python": platform.python_version(),
        "torch": torch.__version__, "results": results,
        "note": "ratio = raw time / embedder time (1.0 = no overhead; >= 0.9 is the target). "
                "Prompts: seeded sample of the shipped sample pool.",
    })
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
