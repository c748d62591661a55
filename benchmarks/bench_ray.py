"""Local vs ray backend on the same input: rows/s and what the cluster costs.

The input is a seeded sample of the shipped pool (BIG-bench sample + RTE/CB through their
templates), embedded with MiniLM into a fresh cache for each backend (everything is encoded),
then K-means (k clusters), then k-center selection of `--budget` rows in the 4 largest
clusters. Both backends must produce identical embeddings, labels and selection (asserted).

Timed per backend: start (local: loading the model; ray: `ray.init` of a local cluster, then
starting the embedding actors, which load one model each), embed, cluster, select.
Also local with one torch thread (`local_1_thread`): on a busy machine two one-thread
processes may beat one two-thread model for reasons that are not Ray's.
rows/s = rows / (embed + cluster + select), i.e. steady state; `rows_per_s_with_start` adds
the start (ray: `ray.init` + actors). Best of `--repeats` interleaved runs per phase.
overhead_s = ray's total minus local's, split into start and work.

    HF_HUB_OFFLINE=1 python benchmarks/bench_ray.py                  # 2000 rows, ~7 min here
    HF_HUB_OFFLINE=1 python benchmarks/bench_ray.py --rows 20000 --num-cpus 8
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from coretune.io import write_json

OUT = Path(__file__).resolve().parent / "results" / "bench_ray.json"


def prompts(n: int) -> list[str]:
    from coretune.data.sources import build_pool, sample_rows

    return sample_rows(build_pool(bigbench="sample"), n).prompts


def run(backend, texts: list[str], args, cache: Path) -> tuple[dict, tuple]:
    times = {}
    t = time.perf_counter()
    embedder = backend.embedder("minilm", max_tokens=args.max_tokens,
                                batch_size=args.batch_size, cache_dir=cache, quiet=True)
    times["start"] = time.perf_counter() - t
    t = time.perf_counter()
    x = embedder.embed(texts)
    times["embed"] = time.perf_counter() - t
    t = time.perf_counter()
    km = backend.fit_clusters(x, args.k, seed=0, chunk_size=args.chunk)
    times["cluster"] = time.perf_counter() - t
    t = time.perf_counter()
    sel = backend.select(x, km.labels_, [0, 1, 2, 3], args.budget, "kcenter", 0,
                         km.centroids_, quiet=True)
    times["select"] = time.perf_counter() - t
    backend.close()
    row = {"seconds": {k: round(v, 2) for k, v in times.items()}}
    return row, (np.array(x), km.labels_, sel.indices, sel.radius)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Local with one torch thread: tells Ray's gain from that of one-thread workers."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def best(rows: list[dict], n: int) -> dict:
    """Per phase, the fastest of the repeats."""
    sec = {k: min(r["seconds"][k] for r in rows) for k in rows[0]["seconds"]}
    work = sec["embed"] + sec["cluster"] + sec["select"]
    return {"seconds": sec, "rows_per_s": round(n / work, 1),
            "rows_per_s_with_start": round(n / (work + sec["start"]), 1),
            "repeats": [r["seconds"] for r in rows]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--chunk", type=int, default=500, help="rows per labelling block")
    ap.add_argument("--budget", type=int, default=40)
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count())
    ap.add_argument("--object-store-mb", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    from coretune.backends import get_backend
    from coretune.backends.ray import shutdown

    texts = prompts(args.rows)
    load_before = os.getloadavg()[0]
    t = time.perf_counter()
    ray_backend = get_backend("ray", num_cpus=args.num_cpus,
                              object_store_memory=args.object_store_mb * 2**20)
    ray_backend.connect()
    init = time.perf_counter() - t
    runs: dict[str, list] = {"local": [], "ray": [], "local_1_thread": []}
    outputs = {}
    with tempfile.TemporaryDirectory() as tmp:
        # Interleaved, best of --repeats: the machine is shared, a slow spell hits all.
        for r in range(args.repeats):
            for name in runs:
                backend = ray_backend if name == "ray" else get_backend("local")
                with torch_threads(1 if name == "local_1_thread" else None):
                    row, outputs[name] = run(backend, texts, args, Path(tmp) / f"{name}-{r}")
                runs[name].append(row)
    actors = ray_backend.actors or args.num_cpus
    shutdown()
    local, ray = best(runs["local"], len(texts)), best(runs["ray"], len(texts))
    out_local, out_ray = outputs["local"], outputs["ray"]
    ray["seconds"]["ray_init"] = round(init, 2)
    ray["seconds"]["start"] = round(ray["seconds"]["start"] + init, 2)
    ray["rows_per_s_with_start"] = round(
        len(texts) / sum(ray["seconds"][k] for k in ("start", "embed", "cluster", "select")), 1)
    identical = all(np.array_equal(a, b, equal_nan=True)
                    for other in (out_ray, outputs["local_1_thread"])
                    for a, b in zip(out_local, other, strict=True))
    assert identical, "the ray backend's output differs from the local one"
    total = {n: sum(r["seconds"][k] for k in ("start", "embed", "cluster", "select"))
             for n, r in (("local", local), ("ray", ray))}
    work = {n: total[n] - r["seconds"]["start"] for n, r in (("local", local), ("ray", ray))}
    result = {
        "rows": len(texts), "max_tokens": args.max_tokens, "batch_size": args.batch_size,
        "k": args.k, "label_block_rows": args.chunk, "budget": args.budget,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "processor": platform.processor() or platform.machine(),
                    # other jobs share the machine: 1-min load before / after (2 = both busy)
                    "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]},
        "ray_cluster": {"num_cpus": args.num_cpus, "object_store_mb": args.object_store_mb,
                        "embedding_actors": actors, "threads_per_actor": 1},
        "local": local, "ray": ray, "identical_output": identical,
        "local_1_thread": best(runs["local_1_thread"], len(texts)),
        "overhead_s": {"total": round(total["ray"] - total["local"], 2),
                       "start": round(ray["seconds"]["start"] - local["seconds"]["start"], 2),
                       "work": round(work["ray"] - work["local"], 2)},
        "ray_over_local_rows_per_s": round(ray["rows_per_s"] / local["rows_per_s"], 3),
    }
    write_json(args.out, result)
    print(f"local {local['rows_per_s']} rows/s, ray {ray['rows_per_s']} rows/s "
          f"(x{result['ray_over_local_rows_per_s']}); ray overhead {result['overhead_s']} s "
          f"-> {args.out}")


if __name__ == "__main__":
    main()
