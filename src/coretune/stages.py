"""What each pipeline stage does: thin wrappers over the library, reading and writing files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from coretune.config import RunConfig
from coretune.io import read_json, write_json

EVAL_SEED = 0  # every run evaluates the same examples, so rows compare pairwise


def build_pool_stage(cfg: RunConfig, out: Path) -> dict:
    from coretune.data.pool import load_pool
    from coretune.data.sources import build_pool, parse_template_mode, sample_rows

    if cfg.pool.path:
        pool = load_pool(cfg.pool.path)
    else:
        mode, n, fixed = parse_template_mode(cfg.pool.templates)
        pool = build_pool(bigbench=cfg.pool.bigbench, template_mode=mode, n_templates=n,
                          fixed_template=fixed)
    pool = sample_rows(pool, cfg.pool.max_rows)
    pool.save(out / "pool.parquet")
    return {"rows": len(pool)}


def _pool(pool_dir: Path):
    from coretune.data.pool import load_pool

    return load_pool(pool_dir / "pool.parquet")


def _backend(cfg: RunConfig):
    from coretune.backends import from_config

    return from_config(cfg)


def _embedder(cfg: RunConfig, quiet: bool):
    return _backend(cfg).embedder(cfg.embed.encoder, max_tokens=cfg.embed.max_tokens,
                                  batch_size=cfg.embed.batch_size, quiet=quiet)


def embed_stage(cfg: RunConfig, pool_dir: Path, out: Path, quiet: bool) -> dict:
    embedder = _embedder(cfg, quiet)
    embedder.embed_to(_pool(pool_dir).prompts, out)
    return {"encoded_rows": embedder.n_encoded_, "cached_rows": embedder.n_cached_,
            "encode_seconds": round(embedder.seconds_, 2)}


def cluster_stage(cfg: RunConfig, pool_dir: Path, embed_dir: Path, out: Path) -> dict:
    import pyarrow.parquet as pq

    from coretune.embed import load_embeddings
    from coretune.io import atomic_path

    pool = _pool(pool_dir)
    x, _ = load_embeddings(embed_dir)
    km = _backend(cfg).fit_clusters(x, cfg.cluster.k, seed=cfg.cluster.seed,
                                    sample_size=cfg.cluster.sample_size)
    km.save(out, pool.uids)
    families = pool.column("family") if "family" in pool.table.column_names else None
    with atomic_path(out / "report.parquet") as tmp:
        pq.write_table(km.report(pool.column("task"), families), tmp)
    return {"k": cfg.cluster.k}


def target_stage(cfg: RunConfig, pool_dir: Path, shared: Path, out: Path, quiet: bool) -> dict:
    from coretune.cluster import KMeansClusters
    from coretune.io import atomic_path
    from coretune.target import TargetClusters

    finder = TargetClusters(cfg.target.spec, threshold=cfg.target.threshold, top=cfg.target.top,
                            seed=cfg.cluster.seed)
    finder.fit(KMeansClusters.load(shared / "cluster"), _pool(pool_dir), _embedder(cfg, quiet))
    import pyarrow.parquet as pq

    with atomic_path(out / "clusters.parquet") as tmp:
        pq.write_table(finder.table_, tmp)
    summary = finder.summary()
    write_json(out / "target.json", summary)
    return {"clusters": summary["clusters"], "rows": summary["rows"],
            "recall": summary["recall"], "precision": summary["precision"]}


def select_stage(cfg: RunConfig, pool_dir: Path, shared: Path, seed: int, out: Path) -> dict:
    from coretune.cli.select import write_subset
    from coretune.select import SelectionResult, resolve_budget
    from coretune.select.sampling import random_rows

    pool = _pool(pool_dir)
    n = len(pool)
    method = cfg.select.method
    if method == "pool" or (method == "all" and cfg.select.scope == "pool"):
        idx = np.arange(n, dtype=np.int64)
        result = SelectionResult(idx, np.full(n, -1, np.int64), np.full(n, np.nan, np.float32))
    elif cfg.select.scope == "pool":
        if method != "random":
            from coretune.errors import CoretuneError

            raise CoretuneError("scope 'pool' supports the methods random, all and pool",
                                field="select.method")
        budget = resolve_budget(_budget(cfg.select.budget), n)
        idx = random_rows(np.arange(n), budget, np.random.default_rng([seed, 0]))
        result = SelectionResult(idx.astype(np.int64), np.full(len(idx), -1, np.int64),
                                 np.full(len(idx), np.nan, np.float32))
    else:
        from coretune.cluster import KMeansClusters
        from coretune.embed import load_embeddings

        x, _ = load_embeddings(shared / "embed")
        km = KMeansClusters.load(shared / "cluster")
        targets = read_json(shared / "target" / "target.json")["clusters"]
        budget = resolve_budget(_budget(cfg.select.budget), n)
        result = _backend(cfg).select(x, km.labels_, targets, budget, method, seed,
                                      centroids=km.centroids_)
    write_subset(pool, result, out / "subset.parquet")
    return {"selected": len(result), "share_of_pool": round(len(result) / n, 6)}


def _budget(text: str) -> str | int:
    text = str(text).strip()
    return int(text) if text.isdigit() else text


def train_stage(cfg: RunConfig, select_dir: Path, seed: int, out: Path, quiet: bool) -> dict:
    from coretune.train import train

    train(select_dir / "subset.parquet", config=cfg.train.model_copy(update={"seed": seed}),
          output_dir=out / "model", quiet=quiet)
    return {}


def evaluate_stage(cfg: RunConfig, model_dir: Path | None, out: Path, quiet: bool) -> dict:
    from coretune.evaluate import evaluate

    e = cfg.evaluate
    model = str(model_dir / "model") if model_dir is not None else cfg.train.model
    metrics = evaluate(model, e.tasks, max_examples=e.max_examples,
                       max_templates=e.max_templates, length_norm=e.length_norm,
                       batch_size=e.batch_size, seed=EVAL_SEED, output_dir=out, quiet=quiet)
    return {"avg": metrics["avg"]["mean"]}


def report_stage(run_dirs: list[Path], out: Path) -> Path:
    from coretune.summary import write_run_report

    return write_run_report(run_dirs, out)
