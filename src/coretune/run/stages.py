"""What each pipeline stage does.

Each step of the select path is a function over in-memory objects (`make_pool`,
`make_embedder`, `fit_clusters`, `find_targets`, `select_subset`): `coretune select` calls them
one after the other, and the run's file stages below (`*_stage`) call the same functions on
inputs read from the run folder, so both give the same bytes. Each takes the config sections
it reads, not the whole config; a stage's key is its own section's (`pipeline.plan`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from coretune.backends import Backend, get_backend
from coretune.cluster import KMeansClusters
from coretune.config import (
    EVAL_SEED,
    WHOLE_POOL,
    BackendConfig,
    ClusterConfig,
    EmbedConfig,
    EvaluateConfig,
    PoolConfig,
    SelectConfig,
)
from coretune.data import decontam
from coretune.data.pool import Pool, load_pool, prompt_batches
from coretune.data.sources import build_pool, parse_template_mode, sample_rows
from coretune.embed import RESPONSE, Embedder, load_embeddings, with_response
from coretune.errors import CoretuneError
from coretune.evaluate import encoders, evaluate
from coretune.io import atomic_path, read_json, write_json
from coretune.paths import cache_dir as coretune_cache
from coretune.run.layout import RunLayout
from coretune.select import SelectionResult, get_method, resolve_budget
from coretune.select.dedup import DedupResult, dedup
from coretune.select.output import write_subset
from coretune.select.quality import answer_balance, flatten, selection_quality, task_mix
from coretune.select.sampling import random_rows
from coretune.target import (
    TargetClusters,
    TargetConfig,
    metadata_mask,
    nli_probe_prompts,
    target_mask,
)
from coretune.train import TrainConfig, train

# ---------------------------------------------------------------- the select path, in memory


def make_pool(p: PoolConfig) -> Pool:
    """The pool of a config: its file, or the shipped rows; then the `max_rows` sample."""
    if p.path:
        pool = load_pool(p.path, p.columns)
    else:
        mode, n, fixed = parse_template_mode(p.templates)
        pool = build_pool(bigbench=p.bigbench, template_mode=mode, n_templates=n,
                          fixed_template=fixed)
    return sample_rows(pool, p.max_rows)


def make_target_finder(t: TargetConfig, c: ClusterConfig) -> TargetClusters:
    """The target finder of a config; the clustering's seed draws its probes and votes."""
    return TargetClusters.from_config(t, seed=c.seed)


def check_select_inputs(c: ClusterConfig, s: SelectConfig, finder: TargetClusters,
                        pool: Pool) -> None:
    """What a user can get wrong about a selection, checked before the slow part."""
    n = len(pool)
    if not 1 <= c.k <= n:
        raise CoretuneError(f"--k {c.k} must be between 1 and the pool size ({n})", field="k")
    resolve_budget(s.budget, n)
    if not finder.spec.probing:
        metadata_mask(pool, finder.spec)  # unknown task/family/keyword: fail now


def backend(b: BackendConfig) -> Backend:
    """The backend of a config's `backend` section (one per setting and process)."""
    return get_backend(b.name, b.address, **b.model_dump(exclude={"name", "address"}))


def make_embedder(e: EmbedConfig, b: BackendConfig, *, quiet: bool = False,
                  device: str | None = None, cache_dir: str | Path | None = None) -> Embedder:
    """The embed stage's embedder, running on the backend."""
    return backend(b).embedder(e.encoder, max_tokens=e.max_tokens, batch_size=e.batch_size,
                               device=device, cache_dir=cache_dir, quiet=quiet,
                               batch_tokens=e.batch_tokens)


def apply_dedup(threshold: float | None, pool: Pool, x: np.ndarray
                ) -> tuple[Pool, np.ndarray, DedupResult | None]:
    """Drop rows within cosine `threshold` of an earlier row (the first of each group stays):
    the kept pool, its embeddings and what was done; unchanged when dedup is off (None)."""
    if threshold is None:
        return pool, x, None
    d = dedup(x, threshold)
    return pool.take(d.kept), np.ascontiguousarray(x[d.kept]), d


def fit_clusters(c: ClusterConfig, b: BackendConfig, x: np.ndarray) -> KMeansClusters:
    return backend(b).fit_clusters(x, c.k, seed=c.seed, sample_size=c.sample_size)


def find_targets(finder: TargetClusters, b: BackendConfig, clusters: KMeansClusters,
                 pool: Pool, embedder: Embedder, x: np.ndarray, *, quiet: bool = True
                 ) -> TargetClusters:
    """`finder` fitted; its votes' further clusterings run on the backend (a progress bar
    counts them: on a large pool they take minutes)."""
    from tqdm.auto import tqdm

    fit = backend(b).fit_clusters
    with tqdm(total=finder.votes - 1, desc="target votes", unit="k-means",
              disable=quiet or finder.votes < 2) as bar:
        def counted(*args, **kwargs) -> KMeansClusters:
            km = fit(*args, **kwargs)
            bar.update(1)
            return km

        return finder.fit(clusters, pool, embedder, x, fit_clusters=counted)


def select_subset(s: SelectConfig, b: BackendConfig, pool: Pool, seed: int,
                  x: np.ndarray | None = None, clusters: KMeansClusters | None = None,
                  targets: list[int] | None = None, *, quiet: bool = True,
                  embedder: Embedder | None = None, mask: np.ndarray | None = None,
                  finder: TargetClusters | None = None,
                  clean: np.ndarray | None = None) -> SelectionResult:
    """The rows a config selects for `seed`: inside the target clusters (the backend runs the
    method per cluster), or from the whole pool (`scope: pool`: random, all and pool without
    embeddings, a method that reads them over every cluster). A method that reads the target
    examples (rds) gets them from `finder`, embedded with `embedder`; with `select.encoder`
    that method compares the candidate rows and examples under its own encoder instead
    (`own_vectors`). The target rows are those of the clusters `targets`, or `mask` (bool
    [n], `TargetClusters.mask_`: whole clusters, or whole tasks with `target.by_task`); rows
    outside them are never picked, nor the rows where `clean` (bool [n], `select.decontaminate`)
    is False."""
    n = len(pool)
    method, scope = s.method, s.scope
    allowed = np.arange(n, dtype=np.int64) if clean is None else np.flatnonzero(clean)
    if method == WHOLE_POOL or (method == "all" and scope == "pool"):
        m = len(allowed)
        return SelectionResult(allowed, np.full(m, -1, np.int64), np.full(m, np.nan, np.float32))
    budget = resolve_budget(s.budget, n)
    if clean is not None and mask is not None:
        mask = mask & clean
    if scope == "pool" and x is not None:
        targets = list(range(clusters.k))
    elif scope == "pool":
        if method != "random":
            raise CoretuneError("scope 'pool' supports the methods random, all, pool and those "
                                "that read embeddings", field="select.method")
        if budget > len(allowed):
            raise CoretuneError(f"budget {budget} is more than the {len(allowed)} rows left "
                                "after decontamination", field="select.budget")
        idx = random_rows(allowed, budget, np.random.default_rng([seed, 0]))
        return SelectionResult(idx.astype(np.int64), np.full(len(idx), -1, np.int64),
                               np.full(len(idx), np.nan, np.float32))
    extra = {}  # only such methods pass queries: a backend written before them still works
    own = s.own_encoder
    if get_method(method).reads_queries:
        if embedder is None or finder is None:
            raise ValueError("a method that reads target examples needs the embedder and "
                             "the target finder")
        if own is None:
            extra["queries"] = finder.probe_vectors(clusters, embedder)[0]
    labels = clusters.labels_
    if clean is not None:
        labels = np.where(clean, labels, -1)
    if mask is not None and scope == "target":
        labels = np.where(mask, labels, -1)  # no target cluster is -1
        targets = np.unique(labels[mask]).tolist()
    if own is not None:
        rows, xs, queries = own_vectors(own, b, finder, pool, np.isin(labels, targets),
                                        embedder, quiet)
        r = backend(b).select(xs, labels[rows], targets, budget, method, seed, quiet=quiet,
                              queries=queries)
        return SelectionResult(rows[r.indices], r.cluster, r.radius)
    return backend(b).select(x, labels, targets, budget, method, seed,
                             centroids=clusters.centroids_, quiet=quiet, **extra)


def own_vectors(spec: str, b: BackendConfig, finder: TargetClusters, pool: Pool,
                candidates: np.ndarray, embedder: Embedder, quiet: bool = True
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For `select.encoder` (`spec`): the candidate rows (bool [n] -> their ascending
    indices), their vectors and the target examples' under that encoder, at `embedder`'s
    settings and through the embedding cache in its folder; only the candidates are
    embedded. An encoder `...+response` reads a row as its prompt and target, a target
    example as its prompt and answer (`nli`: none)."""
    own = backend(b).embedder(spec, max_tokens=embedder.encoder.max_tokens,
                              batch_size=embedder.batch_size, cache_dir=embedder.cache_root,
                              quiet=quiet, batch_tokens=embedder.batch_tokens)
    rows = np.flatnonzero(candidates).astype(np.int64)
    prompts = pool.table.column("prompt").take(rows).to_pylist()
    queries = finder.probe_prompts()[0]
    if spec.partition(":")[0].endswith(RESPONSE):
        targets = pool.table.column("target").take(rows).to_pylist()
        prompts = [with_response(p, t) for p, t in zip(prompts, targets, strict=True)]
        queries = [with_response(p, a) for p, a in
                   zip(queries, finder.probe_answers(), strict=True)]
    return rows, own.embed(prompts), own.embed(queries)


def held_out_probes(finder: TargetClusters, embedder: Embedder) -> np.ndarray | None:
    """For the `nli` target: evaluation prompts the target rule did not probe with (another
    seed's sample, less any prompt it shares with the rule's), embedded with the pool's
    encoder; they measure how close the selection comes to the target task."""
    if finder.spec.kind != "nli":
        return None
    n, seed = finder.n_probes, finder.seed
    used = set(nli_probe_prompts(n, seed)[0])
    fresh = [p for p in nli_probe_prompts(n, seed + 1)[0] if p not in used]
    return embedder.embed(fresh) if fresh else None


def quality(pool: Pool, result: SelectionResult, x: np.ndarray | None,
            candidates: np.ndarray | None, embedder: Embedder | None,
            finder: TargetClusters | None, contamination: tuple | None = None) -> dict:
    """Selection quality without training (coretune.select.quality): task mix, answer
    balance, where there are embeddings the coverage curve and held-out probe coverage, and
    with `contamination` ((hits, set names, dropped?) of `contamination_of`) the pool and
    selected rows that share an n-gram with each evaluation set."""
    if x is None:  # whole-pool selections: no embeddings were made
        t = pool.table.take(result.indices)
        q = {"rows": len(result), "task_mix": task_mix(t.column("task").to_pylist()),
             "answer_balance": answer_balance(t.column("target").to_pylist())}
    else:
        probes = held_out_probes(finder, embedder) if embedder is not None else None
        q = selection_quality(pool, x, result.indices, candidates=candidates, probes=probes)
    if contamination is not None:
        hits, names, dropped = contamination
        q["contamination"] = {**decontam.summary(hits, names, result.indices),
                              "dropped": dropped}
    return q


def contamination_of(pool: Pool, sets: list, quiet: bool = True
                     ) -> tuple[np.ndarray, list[str]]:
    """bool [rows, sets]: the pool rows that share an n-gram with an example of each
    evaluation set (coretune.data.decontam), cached by the rows' text and the sets' files."""
    return decontam.pool_hits(pool.column("prompt"), pool.column("target"), sets,
                              coretune_cache() / "decontam", quiet)


def load_target_rows(run: RunLayout, tasks, labels: np.ndarray) -> np.ndarray:
    """The target rows (bool [n]) a run's target stage decided (`RunLayout.target_rows`); for
    a run made before that file existed, from target.json (clusters or tasks)."""
    if run.target_rows.is_file():
        return np.load(run.target_rows, allow_pickle=False)
    return target_mask(read_json(run.target_json), tasks, labels)


# ---------------------------------------------------------------- the run's file stages


def pool_stage(p: PoolConfig, out: Path) -> dict:
    pool = make_pool(p)
    pool.save(out / "pool.parquet")
    return {"rows": len(pool)}


def embed_stage(e: EmbedConfig, b: BackendConfig, run: RunLayout, out: Path,
                quiet: bool) -> dict:
    """Streamed: the pool file's prompts are read `chunk_size` rows at a time and each row's
    vector goes to `embeddings.npy` as it is made (see Embedder.embed_batches_to)."""
    embedder = make_embedder(e, b, quiet=quiet)
    rows, batches = prompt_batches(run.source_pool, embedder.chunk_size)
    embedder.embed_batches_to(batches, rows, out)
    return {"encoded_rows": embedder.n_encoded_, "cached_rows": embedder.n_cached_,
            "encode_seconds": round(embedder.seconds_, 2)}


def dedup_stage(threshold: float, run: RunLayout, out: Path) -> dict:
    """The pool and its embeddings less near-duplicates (`dedup.json` says which and why)."""
    x, meta = load_embeddings(run.stage("embed"))
    pool, kept, d = apply_dedup(threshold, load_pool(run.source_pool), x)
    pool.save(out / "pool.parquet")
    with atomic_path(out / "embeddings.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, kept, allow_pickle=False)
    write_json(out / "meta.json", meta)
    write_json(out / "dedup.json", d.summary(load_pool(run.source_pool).prompts))
    return {"kept": int(d.keep.sum()), "removed": d.removed}


def cluster_stage(c: ClusterConfig, b: BackendConfig, run: RunLayout, out: Path) -> dict:
    pool = load_pool(run.pool_file)
    x, _ = load_embeddings(run.embeddings)
    km = fit_clusters(c, b, x)
    km.save(out, pool.uids)
    families = pool.column("family") if "family" in pool.table.column_names else None
    with atomic_path(out / "report.parquet") as tmp:
        pq.write_table(km.report(pool.column("task"), families), tmp)
    return {"k": c.k}


def target_stage(finder: TargetClusters, e: EmbedConfig, b: BackendConfig, run: RunLayout,
                 out: Path, quiet: bool) -> dict:
    x, _ = load_embeddings(run.embeddings)
    finder = find_targets(finder, b, KMeansClusters.load(run.stage("cluster")),
                          load_pool(run.pool_file), make_embedder(e, b, quiet=quiet), x,
                          quiet=quiet)
    with atomic_path(out / "clusters.parquet") as tmp:
        pq.write_table(finder.table_, tmp)
    with atomic_path(out / "rows.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, finder.mask_, allow_pickle=False)
    summary = finder.summary()
    write_json(out / "target.json", summary)
    return {"clusters": summary["clusters"], "rows": summary["rows"],
            "recall": summary["recall"], "precision": summary["precision"]}


def select_stage(s: SelectConfig, finder: TargetClusters | None, e: EmbedConfig,
                 b: BackendConfig, run: RunLayout, seed: int, out: Path, quiet: bool,
                 sets: list = ()) -> dict:
    """`finder`: the run's target finder when it clusters (None: whole-pool selections);
    `sets`: the evaluation sets whose contamination is counted (and dropped with
    `select.decontaminate`)."""
    pool = load_pool(run.pool_file)
    hits, names = contamination_of(pool, list(sets), quiet) if sets else (None, [])
    clean = ~hits.any(axis=1) if hits is not None and s.decontaminate else None
    x = clusters = mask = embedder = None
    if finder is not None:
        x, _ = load_embeddings(run.embeddings)
        clusters = KMeansClusters.load(run.stage("cluster"))
        mask = load_target_rows(run, pool.table.column("task").to_pylist(), clusters.labels_)
        embedder = make_embedder(e, b, quiet=quiet)
    result = select_subset(s, b, pool, seed, x, clusters, quiet=False, embedder=embedder,
                           mask=mask, finder=finder, clean=clean)
    paths = write_subset(pool, result, out / "subset.parquet")
    q = quality(pool, result, x, mask, embedder, finder,
                None if hits is None else (hits, names, s.decontaminate))
    write_json(paths["quality"], q)
    return {"selected": len(result), "share_of_pool": round(len(result) / len(pool), 6),
            "quality": flatten(q)}


def train_stage(t: TrainConfig, run: RunLayout, seed: int, out: Path, quiet: bool) -> dict:
    """`t`: the train section with this seed."""
    train(run.subset(seed), config=t, output_dir=out / "model", quiet=quiet)
    return {}


def evaluate_stage(ev: EvaluateConfig, model: str | Path, out: Path, quiet: bool) -> dict:
    """`ev`: the evaluate section; its own sets are passed to `evaluate`, not registered."""
    metrics = evaluate(str(model), ev.tasks, max_examples=ev.max_examples,
                       max_examples_by_task=ev.max_examples_by_task,
                       max_templates=ev.max_templates, length_norm=ev.length_norm,
                       batch_size=ev.batch_size, batch_tokens=ev.batch_tokens,
                       seed=EVAL_SEED, output_dir=out, quiet=quiet, extra=ev.datasets(),
                       chat_template=ev.chat_template)
    return {"avg": metrics["avg"]["mean"]}


def check_evaluate_inputs(ev: EvaluateConfig, model: str) -> None:
    """Before the first stage: a chat-template evaluation needs a `model` (the base; a
    fine-tune keeps its tokenizer) with a chat template."""
    if ev.chat_template:
        from coretune.models import load_tokenizer

        encoders(load_tokenizer(model), True, model)
