"""Encoder speed and quality for the CPU path (issue 11, item 4), measured in one run
(ratios, not absolute times: these machines are noisy).

Speed: prompts/s of each candidate on the same pool prompts, each candidate timed
`--repeats` times interleaved with the others (best of each), `--threads` torch/ORT threads.
The reference for the issue's goal is today's one-line path before it moved to the
pipeline's defaults: MiniLM at 256 tokens, batch 64 (`minilm-256`). Agreement with the
pipeline default (`minilm-128`): mean and minimum cosine between the two rows of a prompt.

Quality: the `nli` target rule, ten seeds, on the three pools of `target_pools.py` with
`minilm-int8` rows (its own probes too) vs with MiniLM-128's: NLI recall/precision and RTE+CB
recall, mean change over seeds with a paired 95% interval, and the largest change of one seed
(the issue's goal: within 0.02). Two rules: `single`, one k=100 k-means clustering (seeds
0-9), and `default`, the default of configs and `coretune select` (11 votes and the task
step; seeds 11s ... 11s+10, disjoint). A control perturbs the MiniLM-128 rows by noise no
encoder would notice (cosine 0.9999996): what it changes is the rule's own instability, the
floor under any per-seed comparison of two encoders.

    python benchmarks/bench_encoder.py [--rows 600] [--threads 2] [--no-quality]
writes benchmarks/results/bench_encoder.json and .md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import target_pools  # noqa: E402
from target_pools import rule_rows, scores  # noqa: E402

from coretune.embed import Embedder, make_encoder  # noqa: E402
from coretune.io import read_json, write_json, write_text  # noqa: E402
from coretune.target import VOTES, TargetSpec, metadata_mask  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "bench_encoder.json"
SEEDS = tuple(range(10))
FAST = "minilm-int8"  # the candidate whose target-rule quality is measured
CONTROL = "minilm-128+noise"
NOISE = 1e-3  # norm of the control's perturbation of each unit row
MEASURES = (("nli", "recall"), ("nli", "precision"), ("rte_cb", "recall"))
RULES = {"single": {"votes": 1, "by_task": False}, "default": {"votes": VOTES, "by_task": True}}


def torch_int8(enc):
    import torch

    enc.model = torch.ao.quantization.quantize_dynamic(enc.model, {torch.nn.Linear},
                                                       dtype=torch.qint8)
    return enc


# name -> (encoder factory, batch size)
CANDIDATES = {
    "minilm-256": (lambda: make_encoder("minilm", max_tokens=256, device="cpu"), 64),
    "minilm-128": (lambda: make_encoder("minilm", max_tokens=128, device="cpu"), 64),
    "minilm-128-b16": (lambda: make_encoder("minilm", max_tokens=128, device="cpu"), 16),
    "minilm-64": (lambda: make_encoder("minilm", max_tokens=64, device="cpu"), 64),
    "minilm-128-torch-int8": (lambda: torch_int8(make_encoder("minilm", max_tokens=128,
                                                              device="cpu")), 64),
    "minilm-int8": (lambda: make_encoder("minilm-int8", max_tokens=128), 64),  # 1 per run
}


def speed(texts: list[str], repeats: int) -> dict:
    encs = {name: (make(), bs) for name, (make, bs) in CANDIDATES.items()}
    best = dict.fromkeys(encs, float("inf"))
    rows = {}
    for enc, bs in encs.values():
        enc.encode(texts[:32], bs)  # warm-up
    for _ in range(repeats):
        for name, (enc, bs) in encs.items():
            t = time.perf_counter()
            rows[name] = enc.encode(texts, bs)
            best[name] = min(best[name], time.perf_counter() - t)
    ref, base = rows["minilm-128"], best["minilm-256"]
    out = {}
    for name, sec in best.items():
        cos = (rows[name] * ref).sum(1)
        out[name] = {"prompts_per_s": round(len(texts) / sec, 2),
                     "speedup_vs_256": round(base / sec, 3),
                     "speedup_vs_128": round(best["minilm-128"] / sec, 3),
                     "cosine_to_128_mean": round(float(cos.mean()), 4),
                     "cosine_to_128_min": round(float(cos.min()), 4)}
    return out


def quality(rows: int) -> dict:
    pools = target_pools.build_pools(rows)
    ref_emb = Embedder(target_pools.encoder(), quiet=True)
    fast_emb = Embedder(make_encoder(FAST, max_tokens=target_pools.MAX_TOKENS), quiet=True)
    rng = np.random.default_rng(0)
    out = {}
    for name in ("full2", "low", "sample"):
        pool = pools[name]
        refs = {"nli": np.asarray(pool.column("family"), dtype=object) == "nli",
                "rte_cb": metadata_mask(pool, TargetSpec("tasks", ("rte", "cb")))}
        xr = ref_emb.embed(pool.prompts)
        noisy = xr + rng.normal(0, NOISE / np.sqrt(xr.shape[1]), xr.shape).astype(np.float32)
        noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
        variants = {"minilm-128": (xr, ref_emb), FAST: (fast_emb.embed(pool.prompts), fast_emb),
                    CONTROL: (noisy, ref_emb)}
        out[name] = {"cosine_to_128": {v: round(float((x * xr).sum(1).mean()), 7)
                                       for v, (x, _) in variants.items()}}
        for rule, kw in RULES.items():
            runs = []
            for seed in SEEDS:
                s = seed * kw["votes"]  # disjoint seeds when voting
                rows = {v: rule_rows(pool, x, e, s, **kw) for v, (x, e) in variants.items()}
                runs.append({v: {ref: scores(r, m) for ref, m in refs.items()} | {
                    "same_rows": round(float((r == rows["minilm-128"]).mean()), 4)}
                    for v, r in rows.items()})
            out[name][rule] = {"seeds": runs, "summary": summary(runs)}
            print(name, rule, "done", flush=True)
    return {"seeds": len(SEEDS), "noise": NOISE, "rules": RULES, "pools": out}


def summary(runs: list[dict]) -> dict:
    """Per variant and measure: mean over seeds; for the other variants, the mean change vs
    MiniLM-128 with a 95% t-interval over seeds (paired by k-means seed), and the largest."""
    from scipy import stats

    out = {}
    for v in runs[0]:
        for ref, m in MEASURES:
            a = np.array([r["minilm-128"][ref][m] for r in runs])
            b = np.array([r[v][ref][m] for r in runs])
            d = b - a
            half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
            out[f"{v}|{ref}_{m}"] = {"mean": round(float(b.mean()), 4),
                                     "sd": round(float(b.std(ddof=1)), 4),
                                     "change": round(float(d.mean()), 4),
                                     "ci95": [round(float(d.mean() - half), 4),
                                              round(float(d.mean() + half), 4)],
                                     "max_abs_change": round(float(np.abs(d).max()), 4)}
    return out


def markdown(res: dict) -> str:
    lines = [f"Speed: {res['rows']} pool prompts, {res['threads']} thread(s), best of "
             f"{res['repeats']}; ratios within this run.", "",
             "| encoder | batch | prompts/s | × 256-token path | × 128-token fp32 "
             "| cosine to fp32-128 mean / min |", "|---|---:|---:|---:|---:|---|"]
    for name in (n for n in CANDIDATES if n in res["speed"]):  # the JSON's keys are sorted
        r = res["speed"][name]
        lines.append(f"| {name} | {CANDIDATES[name][1]} | {r['prompts_per_s']:.1f} | "
                     f"{r['speedup_vs_256']:.2f} | {r['speedup_vs_128']:.2f} | "
                     f"{r['cosine_to_128_mean']:.4f} / {r['cosine_to_128_min']:.4f} |")
    q = res.get("quality")
    if q:
        lines += ["", "Quality: the `nli` target rule on MiniLM-128 rows, on "
                  f"`{FAST}` rows, and on MiniLM-128 rows plus isotropic noise of norm "
                  f"{q['noise']:g} "
                  f"(`{CONTROL}`, a control: mean cosine ~0.9999996 to the clean rows), "
                  f"{q['seeds']} seeds; rule `single`: one clustering (votes 1, no task step), "
                  "`default`: the default of configs and `coretune select` (11 votes and the "
                  "task step). Mean over seeds; change vs MiniLM-128 "
                  "with a 95% interval paired by seed; largest change of any one seed.", "",
                  "| pool | rule | rows | measure | mean | change [95% CI] | largest change |",
                  "|---|---|---|---|---:|---|---:|"]
        order = ("minilm-128", FAST, CONTROL)
        for name, rule, summ in ((n, r, p[r]["summary"]) for n, p in q["pools"].items()
                                 for r in q["rules"]):
            for key, r in sorted(summ.items(),
                                 key=lambda kv: (order.index(kv[0].split("|")[0]), kv[0])):
                v, measure = key.split("|")
                if v == "minilm-128":
                    lines.append(f"| {name} | {rule} | {v} | {measure} | {r['mean']:.3f} ± "
                                 f"{r['sd']:.3f} (sd) | | |")
                else:
                    lo, hi = r["ci95"]
                    lines.append(f"| {name} | {rule} | {v} | {measure} | {r['mean']:.3f} | "
                                 f"{r['change']:+.3f} [{lo:+.3f}, {hi:+.3f}] | "
                                 f"{r['max_abs_change']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=600)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--pool-rows", type=int, default=10000)
    ap.add_argument("--no-quality", action="store_true",
                    help="keep the quality tables of the last run")
    ap.add_argument("--no-speed", action="store_true",
                    help="keep the speed table of the last run (e.g. on a busy machine)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    pool = target_pools.build_pools(args.pool_rows)["full2"]
    rng = np.random.default_rng(0)
    texts = [pool.prompts[i] for i in np.sort(rng.choice(len(pool), args.rows, replace=False))]
    if args.no_speed:
        res = {k: v for k, v in read_json(OUT).items() if k != "quality"}
    else:
        res = {"rows": len(texts), "threads": args.threads, "repeats": args.repeats,
               "python": platform.python_version(), "speed": speed(texts, args.repeats)}
    print(markdown(res), flush=True)
    res["quality"] = read_json(OUT)["quality"] if args.no_quality else quality(args.pool_rows)
    res["seconds"] = round(time.perf_counter() - start, 1)
    write_json(OUT, res)
    write_text(OUT.with_suffix(".md"), markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
