"""What each pipeline stage does.

Each step of the select path is a function over in-memory objects (`make_pool`,
`make_embedder`, `fit_clusters`, `find_targets`, `select_subset`): `coretune select` calls them
one after the other, and the run's file stages below (`*_stage`) call the same functions on
inputs read from the run folder, so both give the same bytes. Imports: config, layout, the
library modules; never the CLI.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from coretune.backends import Backend, from_config
from coretune.cluster import KMeansClusters
from coretune.config import RunConfig
from coretune.data.pool import Pool, load_pool, prompt_batches
from coretune.data.sources import build_pool, parse_template_mode, sample_rows
from coretune.embed import RESPONSE, Embedder, load_embeddings, with_response
from coretune.errors import CoretuneError
from coretune.evaluate import evaluate, parse_eval_file, register_eval_set
from coretune.io import atomic_path, write_json
from coretune.run.layout import RunLayout
from coretune.select import SelectionResult, get_method, method_names, resolve_budget
from coretune.select.dedup import DedupResult, dedup
from coretune.select.output import write_subset
from coretune.select.quality import answer_balance, flatten, selection_quality, task_mix
from coretune.select.sampling import random_rows
from coretune.target import TargetClusters, load_target_rows, metadata_mask, nli_probe_prompts
from coretune.train import train

EVAL_SEED = 0  # every run evaluates the same examples, so rows compare pairwise


# ---------------------------------------------------------------- the select path, in memory


def make_pool(cfg: RunConfig) -> Pool:
    """The pool of a config: its file, or the shipped rows; then the `max_rows` sample."""
    if cfg.pool.path:
        pool = load_pool(cfg.pool.path, cfg.pool.columns)
    else:
        mode, n, fixed = parse_template_mode(cfg.pool.templates)
        pool = build_pool(bigbench=cfg.pool.bigbench, template_mode=mode, n_templates=n,
                          fixed_template=fixed)
    return sample_rows(pool, cfg.pool.max_rows)


def make_target_finder(cfg: RunConfig) -> TargetClusters:
    t = cfg.target
    return TargetClusters(t.spec, rule=t.rule, threshold=t.threshold, top=t.top, n_probes=t.probes,
                          seed=cfg.cluster.seed, share=t.share, by_task=t.by_task,
                          votes=t.votes)


def needs_clusters(cfg: RunConfig) -> bool:
    """Whether the run embeds, clusters and finds target clusters (selection inside them)."""
    method = cfg.select.method
    if method in ("none", "pool"):
        return False
    # From the whole pool, only a method that reads embeddings needs them (over every cluster).
    return cfg.select.scope == "target" or get_method(method).reads_embeddings


def check_select_inputs(cfg: RunConfig, pool: Pool) -> None:
    """What a user can get wrong about a selection, checked before the slow part."""
    n = len(pool)
    if not 1 <= cfg.cluster.k <= n:
        raise CoretuneError(f"--k {cfg.cluster.k} must be between 1 and the pool size ({n})",
                            field="k")
    resolve_budget(cfg.select.budget, n)
    finder = make_target_finder(cfg)
    if not finder.spec.probing:
        metadata_mask(pool, finder.spec)  # unknown task/family/keyword: fail now


def backend(cfg: RunConfig) -> Backend:
    return from_config(cfg)


def make_embedder(cfg: RunConfig, *, quiet: bool = False, device: str | None = None,
                  cache_dir: str | Path | None = None, encoder: str | None = None) -> Embedder:
    """The embed stage's embedder, or with `encoder` another at the same settings."""
    e = cfg.embed
    return backend(cfg).embedder(encoder or e.encoder, max_tokens=e.max_tokens,
                                 batch_size=e.batch_size, device=device, cache_dir=cache_dir,
                                 quiet=quiet)


def select_encoder(cfg: RunConfig) -> str | None:
    """`select.encoder` where the method reads it (one that compares rows with target
    examples); None where the embed stage's vectors are used."""
    method = cfg.select.method
    if cfg.select.encoder is None or method not in method_names():
        return None
    return cfg.select.encoder if get_method(method).reads_queries else None


def apply_dedup(cfg: RunConfig, pool: Pool, x: np.ndarray
                ) -> tuple[Pool, np.ndarray, DedupResult | None]:
    """Drop rows within cosine `cfg.dedup` of an earlier row (the first of each group stays):
    the kept pool, its embeddings and what was done; unchanged when dedup is off."""
    if cfg.dedup is None:
        return pool, x, None
    d = dedup(x, cfg.dedup)
    return pool.take(d.kept), np.ascontiguousarray(x[d.kept]), d


def fit_clusters(cfg: RunConfig, x: np.ndarray) -> KMeansClusters:
    c = cfg.cluster
    return backend(cfg).fit_clusters(x, c.k, seed=c.seed, sample_size=c.sample_size)


def find_targets(cfg: RunConfig, clusters: KMeansClusters, pool: Pool,
                 embedder: Embedder, x: np.ndarray) -> TargetClusters:
    return make_target_finder(cfg).fit(clusters, pool, embedder, x)


def select_subset(cfg: RunConfig, pool: Pool, seed: int, x: np.ndarray | None = None,
                  clusters: KMeansClusters | None = None, targets: list[int] | None = None,
                  *, quiet: bool = True, embedder: Embedder | None = None,
                  mask: np.ndarray | None = None) -> SelectionResult:
    """The rows a config selects for `seed`: inside the target clusters (the backend runs the
    method per cluster), or from the whole pool (`scope: pool`: random, all and pool without
    embeddings, a method that reads them over every cluster). `embedder` embeds the target
    examples of a method that reads them (rds); with `select.encoder` that method compares
    the candidate rows and examples under its own encoder instead (`own_vectors`). The target
    rows are those of the clusters `targets`, or `mask` (bool [n], `TargetClusters.mask_`:
    whole clusters, or whole tasks with `target.by_task`); rows outside them are never
    picked."""
    n = len(pool)
    method, scope = cfg.select.method, cfg.select.scope
    if method == "pool" or (method == "all" and scope == "pool"):
        idx = np.arange(n, dtype=np.int64)
        return SelectionResult(idx, np.full(n, -1, np.int64), np.full(n, np.nan, np.float32))
    budget = resolve_budget(cfg.select.budget, n)
    if scope == "pool" and x is not None:
        targets = list(range(clusters.k))
    elif scope == "pool":
        if method != "random":
            raise CoretuneError("scope 'pool' supports the methods random, all, pool and those "
                                "that read embeddings", field="select.method")
        idx = random_rows(np.arange(n), budget, np.random.default_rng([seed, 0]))
        return SelectionResult(idx.astype(np.int64), np.full(len(idx), -1, np.int64),
                               np.full(len(idx), np.nan, np.float32))
    extra = {}  # only such methods pass queries: a backend written before them still works
    own = select_encoder(cfg)
    if get_method(method).reads_queries:
        if embedder is None:
            raise ValueError("a method that reads target examples needs the embedder")
        if own is None:
            extra["queries"] = make_target_finder(cfg).probe_vectors(clusters, embedder)[0]
    labels = clusters.labels_
    if mask is not None and scope == "target":
        labels = np.where(mask, labels, -1)  # no target cluster is -1
        targets = np.unique(labels[mask]).tolist()
    if own is not None:
        rows, xs, queries = own_vectors(cfg, pool, np.isin(labels, targets), embedder, quiet)
        r = backend(cfg).select(xs, labels[rows], targets, budget, method, seed, quiet=quiet,
                                queries=queries)
        return SelectionResult(rows[r.indices], r.cluster, r.radius)
    return backend(cfg).select(x, labels, targets, budget, method, seed,
                               centroids=clusters.centroids_, quiet=quiet, **extra)


def own_vectors(cfg: RunConfig, pool: Pool, candidates: np.ndarray, embedder: Embedder,
                quiet: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For `select.encoder`: the candidate rows (bool [n] -> their ascending indices), their
    vectors and the target examples' under that encoder, through the embedding cache in
    `embedder`'s folder; only the candidates are embedded. An encoder `...+response` reads a
    row as its prompt and target, a target example as its prompt and answer (`nli`: none)."""
    spec = select_encoder(cfg)
    own = make_embedder(cfg, quiet=quiet, cache_dir=embedder.cache_root, encoder=spec)
    rows = np.flatnonzero(candidates).astype(np.int64)
    finder = make_target_finder(cfg)
    prompts = pool.table.column("prompt").take(rows).to_pylist()
    queries = finder.probe_prompts()[0]
    if spec.partition(":")[0].endswith(RESPONSE):
        targets = pool.table.column("target").take(rows).to_pylist()
        prompts = [with_response(p, t) for p, t in zip(prompts, targets, strict=True)]
        queries = [with_response(p, a) for p, a in
                   zip(queries, finder.probe_answers(), strict=True)]
    return rows, own.embed(prompts), own.embed(queries)


def held_out_probes(cfg: RunConfig, embedder: Embedder) -> np.ndarray | None:
    """For the `nli` target: evaluation prompts the target rule did not probe with (another
    seed's sample, less any prompt it shares with the rule's), embedded with the pool's
    encoder; they measure how close the selection comes to the target task."""
    if make_target_finder(cfg).spec.kind != "nli":
        return None
    n, seed = cfg.target.probes, cfg.cluster.seed
    used = set(nli_probe_prompts(n, seed)[0])
    fresh = [p for p in nli_probe_prompts(n, seed + 1)[0] if p not in used]
    return embedder.embed(fresh) if fresh else None


def quality(cfg: RunConfig, pool: Pool, result: SelectionResult, x: np.ndarray | None,
            candidates: np.ndarray | None, embedder: Embedder | None) -> dict:
    """Selection quality without training (coretune.select.quality): task mix, answer
    balance, and where there are embeddings the coverage curve and held-out probe coverage."""
    if x is None:  # whole-pool selections: no embeddings were made
        t = pool.table.take(result.indices)
        return {"rows": len(result), "task_mix": task_mix(t.column("task").to_pylist()),
                "answer_balance": answer_balance(t.column("target").to_pylist())}
    probes = held_out_probes(cfg, embedder) if embedder is not None else None
    return selection_quality(pool, x, result.indices, candidates=candidates, probes=probes)


# ---------------------------------------------------------------- the run's file stages


def pool_stage(cfg: RunConfig, run: RunLayout, out: Path) -> dict:
    pool = make_pool(cfg)
    pool.save(out / "pool.parquet")
    return {"rows": len(pool)}


def embed_stage(cfg: RunConfig, run: RunLayout, out: Path, quiet: bool) -> dict:
    """Streamed: the pool file's prompts are read `chunk_size` rows at a time and each row's
    vector goes to `embeddings.npy` as it is made (see Embedder.embed_batches_to)."""
    embedder = make_embedder(cfg, quiet=quiet)
    rows, batches = prompt_batches(run.source_pool, embedder.chunk_size)
    embedder.embed_batches_to(batches, rows, out)
    return {"encoded_rows": embedder.n_encoded_, "cached_rows": embedder.n_cached_,
            "encode_seconds": round(embedder.seconds_, 2)}


def dedup_stage(cfg: RunConfig, run: RunLayout, out: Path) -> dict:
    """The pool and its embeddings less near-duplicates (`dedup.json` says which and why)."""
    x, meta = load_embeddings(run.stage("embed"))
    pool, kept, d = apply_dedup(cfg, load_pool(run.source_pool), x)
    pool.save(out / "pool.parquet")
    with atomic_path(out / "embeddings.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, kept, allow_pickle=False)
    write_json(out / "meta.json", meta)
    write_json(out / "dedup.json", d.summary(load_pool(run.source_pool).prompts))
    return {"kept": int(d.keep.sum()), "removed": d.removed}


def cluster_stage(cfg: RunConfig, run: RunLayout, out: Path) -> dict:
    pool = load_pool(run.pool_file)
    x, _ = load_embeddings(run.embeddings)
    km = fit_clusters(cfg, x)
    km.save(out, pool.uids)
    families = pool.column("family") if "family" in pool.table.column_names else None
    with atomic_path(out / "report.parquet") as tmp:
        pq.write_table(km.report(pool.column("task"), families), tmp)
    return {"k": cfg.cluster.k}


def target_stage(cfg: RunConfig, run: RunLayout, out: Path, quiet: bool) -> dict:
    x, _ = load_embeddings(run.embeddings)
    finder = find_targets(cfg, KMeansClusters.load(run.stage("cluster")),
                          load_pool(run.pool_file), make_embedder(cfg, quiet=quiet), x)
    with atomic_path(out / "clusters.parquet") as tmp:
        pq.write_table(finder.table_, tmp)
    with atomic_path(out / "rows.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, finder.mask_, allow_pickle=False)
    summary = finder.summary()
    write_json(out / "target.json", summary)
    return {"clusters": summary["clusters"], "rows": summary["rows"],
            "recall": summary["recall"], "precision": summary["precision"]}


def select_stage(cfg: RunConfig, run: RunLayout, seed: int, out: Path, quiet: bool) -> dict:
    pool = load_pool(run.pool_file)
    x = clusters = mask = embedder = None
    if needs_clusters(cfg):
        x, _ = load_embeddings(run.embeddings)
        clusters = KMeansClusters.load(run.stage("cluster"))
        mask = load_target_rows(run, pool.table.column("task").to_pylist(), clusters.labels_)
        embedder = make_embedder(cfg, quiet=quiet)
    result = select_subset(cfg, pool, seed, x, clusters, quiet=False, embedder=embedder, mask=mask)
    paths = write_subset(pool, result, out / "subset.parquet")
    q = quality(cfg, pool, result, x, mask, embedder)
    write_json(paths["quality"], q)
    return {"selected": len(result), "share_of_pool": round(len(result) / len(pool), 6),
            "quality": flatten(q)}


def train_stage(cfg: RunConfig, run: RunLayout, seed: int, out: Path, quiet: bool) -> dict:
    train(run.subset(seed), config=cfg.train.model_copy(update={"seed": seed}),
          output_dir=out / "model", quiet=quiet)
    return {}


def register_eval_files(cfg: RunConfig) -> list:
    """The config's own evaluation sets, registered as peers of the shipped ones."""
    return [register_eval_set(parse_eval_file(spec)) for spec in cfg.evaluate.eval_files]


def evaluate_stage(cfg: RunConfig, model: str | Path, out: Path, quiet: bool) -> dict:
    e = cfg.evaluate
    register_eval_files(cfg)
    metrics = evaluate(str(model), e.tasks, max_examples=e.max_examples,
                       max_examples_by_task=e.max_examples_by_task,
                       max_templates=e.max_templates, length_norm=e.length_norm,
                       batch_size=e.batch_size, seed=EVAL_SEED, output_dir=out, quiet=quiet)
    return {"avg": metrics["avg"]["mean"]}
