"""Encoder speed candidates for the CPU path (issue 11, item 4): throughput and agreement
with today's MiniLM, measured in one run on the same prompts (ratios, not absolute times).

Candidates: MiniLM at 256 tokens (what one-line `coretune select` used), at 128 (the
pipeline default, the reference here), at 64, and at 128 with int8 dynamic quantisation of
its Linear layers (`torch.ao.quantization.quantize_dynamic`). Agreement with the reference:
mean cosine between the two embeddings of each prompt, and the share of prompts whose
nearest neighbour (among the sample) is the same. Target-rule recall/precision per
candidate needs each candidate over whole pools; not measured here (see the JSON `missing`).

    python benchmarks/bench_encoder.py [--rows 600] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import target_pools  # noqa: E402

from coretune.io import write_json  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "bench_encoder.json"


def int8(enc):
    import torch

    enc.model = torch.ao.quantization.quantize_dynamic(enc.model, {torch.nn.Linear},
                                                       dtype=torch.qint8)
    enc.name += "+int8-dynamic"
    return enc


def timed(enc, texts, repeats: int) -> tuple[np.ndarray, float]:
    enc.encode(texts[:64])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        x = enc.encode(texts)
        best = min(best, time.perf_counter() - t)
    return x, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=600)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    pool = target_pools.build_pools(10000)["full2"]
    rng = np.random.default_rng(0)
    texts = [pool.prompts[i] for i in np.sort(rng.choice(len(pool), args.rows, replace=False))]
    cands = {"minilm-256": lambda: target_pools.encoder(256),
             "minilm-128": lambda: target_pools.encoder(128),
             "minilm-64": lambda: target_pools.encoder(64),
             "minilm-128-int8": lambda: int8(target_pools.encoder(128))}
    out, ref = {}, None
    for name, make in cands.items():
        x, sec = timed(make(), texts, args.repeats)
        if name == "minilm-128":
            ref = x
        out[name] = {"prompts_per_s": round(len(texts) / sec, 2), "seconds": round(sec, 3),
                     "x": x}
    ref_nn = np.argsort(-(ref @ ref.T), axis=1)[:, 1]
    base = out["minilm-256"]["prompts_per_s"]
    for r in out.values():
        x = r.pop("x")
        nn = np.argsort(-(x @ x.T), axis=1)[:, 1]
        r.update(speedup_vs_256=round(r["prompts_per_s"] / base, 3),
                 mean_cosine_to_128=round(float((x * ref).sum(1).mean()), 4),
                 same_nearest_neighbour=round(float((nn == ref_nn).mean()), 4))
        print(r, flush=True)
    write_json(OUT, {"rows": len(texts), "threads": args.threads, "repeats": args.repeats,
                     "candidates": out,
                     "missing": "target-rule recall/precision per candidate over the three "
                                "pools; model2vec/static cascade (package not installed)"})


if __name__ == "__main__":
    main()
