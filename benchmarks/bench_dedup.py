"""Near-duplicate removal on real pool embeddings: rows removed per threshold, and faiss
range search (`coretune.select.dedup`) against a blocked numpy similarity scan, timed in
the same run (ratio), same pairs asserted. semhash is not installed here (it would be a new
dependency): not measured.

    python benchmarks/bench_dedup.py      # the three 10k-row pools of target_pools.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import target_pools  # noqa: E402

from coretune.io import write_json  # noqa: E402
from coretune.select.dedup import dedup, similar_pairs  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "bench_dedup.json"
THRESHOLDS = (0.9, 0.95, 0.98, 0.99, 1.0)


def numpy_pairs(x: np.ndarray, threshold: float, block: int = 2048) -> set:
    from threadpoolctl import threadpool_limits

    pairs = set()
    with threadpool_limits(1):
        for lo in range(0, len(x), block):
            s = x[lo:lo + block] @ x.T
            q, j = np.nonzero(s >= threshold - 1e-6)
            keep = j < lo + q
            pairs.update(zip(j[keep].tolist(), (lo + q[keep]).tolist(), strict=True))
    return pairs


def main() -> None:
    pools = target_pools.build_pools(10000)
    x_of = target_pools.embed_pools(pools)
    out = {"pools": {}}
    for name, pool in pools.items():
        x = np.ascontiguousarray(x_of[name])
        res = {"rows": len(x), "thresholds": {}}
        for t in THRESHOLDS:
            d = dedup(x, t)
            res["thresholds"][str(t)] = {"removed": d.removed,
                                         "examples": d.examples(pool.prompts, 2)}
        t0 = time.perf_counter()
        i, j, _ = similar_pairs(x, 0.95)
        t_faiss = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref = numpy_pairs(x, 0.95)
        t_np = time.perf_counter() - t0
        assert set(zip(i.tolist(), j.tolist(), strict=True)) == ref
        res.update(faiss_s=round(t_faiss, 3), numpy_s=round(t_np, 3),
                   numpy_over_faiss=round(t_np / t_faiss, 2), pairs_at_0_95=len(ref))
        out["pools"][name] = res
        print(name, {t: v["removed"] for t, v in res["thresholds"].items()},
              res["numpy_over_faiss"], flush=True)
    write_json(OUT, out)


if __name__ == "__main__":
    main()
