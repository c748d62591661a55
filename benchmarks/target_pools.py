"""The three evaluation pools of issue 11, built deterministically from shipped data, and
their MiniLM (128 tokens) embeddings through the project's Embedder and cache.

- `sample`: the NLI-heavy shipped sample pool (`pool build --bigbench sample`).
- `full2`: the full pool with RTE/CB through their first two templates (~5% NLI).
- `low`: the rows of `full2`'s subsample with NLI rows thinned to <= 1% of the pool.

Each is a seeded subsample of `rows` rows (default 10,000): embedding all 140k rows takes
~40 min per pool on two shared cores. `low` reuses `full2`'s rows, so the cache serves it.

    python benchmarks/target_pools.py [--rows 20000]   # build + embed all three (resumable)
"""

from __future__ import annotations

import argparse
import os

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SEED = 11
MAX_TOKENS = 128
LOW_SHARE = 0.01
POOLS = ("sample", "full2", "low")
K = 100  # clusters for the target rule


def _subsample(pool, rows: int, seed: int):
    # A prefix of one seeded permutation: a larger subsample contains a smaller one, so the
    # embedding cache of a smaller run serves the larger.
    perm = np.random.default_rng(seed).permutation(len(pool))
    return pool.take(np.sort(perm[:rows]).tolist())


def build_pools(rows: int = 10000, seed: int = SEED) -> dict:
    """{name: Pool}: deterministic for (rows, seed)."""
    from coretune.data.sources import build_pool, train_datasets

    ds = list(train_datasets().values())
    sample = _subsample(build_pool(bigbench="sample", datasets=ds), rows, seed)
    full2 = _subsample(build_pool(bigbench="full", datasets=ds, template_mode="first",
                                  n_templates=2), rows, seed)
    fam = np.asarray(full2.column("family"), dtype=object)
    nli, other = np.flatnonzero(fam == "nli"), np.flatnonzero(fam != "nli")
    # keep n NLI rows so that n / (n + len(other)) <= LOW_SHARE
    n = int(LOW_SHARE * len(other) / (1 - LOW_SHARE))
    keep = np.random.default_rng(seed).choice(nli, n, replace=False)
    low = full2.take(np.sort(np.concatenate([other, keep])).tolist())
    return {"sample": sample, "full2": full2, "low": low}


def encoder(max_tokens: int = MAX_TOKENS):
    from coretune.embed import make_encoder

    return make_encoder("minilm", max_tokens=max_tokens, device="cpu")


def embed_pools(pools: dict, enc=None, quiet: bool = True) -> dict:
    """{name: float32 [n, d]} through the shared embedding cache."""
    from coretune.embed import Embedder

    emb = Embedder(enc or encoder(), quiet=quiet)
    return {name: emb.embed(p.prompts) for name, p in pools.items()}


def scores(rows: np.ndarray, ref: np.ndarray) -> dict:
    """Recall, precision and F1 of boolean rows against boolean reference rows."""
    tp = float((rows & ref).sum())
    r, p = tp / max(1, ref.sum()), tp / max(1, rows.sum())
    return {"recall": round(r, 4), "precision": round(p, 4),
            "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0}


def rule_rows(pool, x: np.ndarray, embedder, seed: int, votes: int = 1,
              by_task: bool = False) -> np.ndarray:
    """Rows the `nli` target rule keeps: k=100 k-means of `x` with `seed` (and `votes` - 1
    more, seeds seed+1 ...), probes by `embedder`, the task step when `by_task`."""
    from coretune.cluster import KMeansClusters
    from coretune.target import TargetClusters

    km = KMeansClusters(K, seed=seed).fit(x)
    return TargetClusters("nli", seed=0, votes=votes, by_task=by_task).fit(
        km, pool, embedder, x).mask_


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10000)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    pools = build_pools(args.rows)
    for name, p in pools.items():
        fam = np.asarray(p.column("family"), dtype=object)
        print(f"{name}: {len(p)} rows, nli share {(fam == 'nli').mean():.3%}", flush=True)
    from coretune.embed import Embedder
    from coretune.target import nli_probe_prompts

    emb = Embedder(encoder(), quiet=False, chunk_size=512)
    for name in ("full2", "sample"):  # low is a subset of full2
        emb.embed(pools[name].prompts)
        print(f"{name}: encoded {emb.n_encoded_} in {emb.seconds_:.0f}s", flush=True)
    for seed in (0, 1):  # probes (seed 0) and held-out probes (seed 1)
        emb.embed(nli_probe_prompts(1000, seed)[0])
    print("done", flush=True)


if __name__ == "__main__":
    main()
