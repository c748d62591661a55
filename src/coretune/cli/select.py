"""`coretune select`: pool -> embed (cached) -> cluster -> target clusters -> selected subset."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from coretune.errors import CoretuneError


def output_paths(output: Path) -> dict[str, Path]:
    """subset.parquet -> subset.jsonl (prompt/target) and subset.selection.parquet."""
    return {"subset": output, "jsonl": output.with_suffix(".jsonl"),
            "selection": output.with_name(f"{output.stem}.selection.parquet")}


def select(
    pool: Path = typer.Option(..., "--pool", help="Pool file (.parquet, .jsonl or .csv)."),
    output: Path = typer.Option(..., "-o", "--output", help="Subset file to write (.parquet)."),
    target: str = typer.Option("nli", help="nli | tasks:A,B | family:NAME | keywords:W,... | "
                               "probe:FILE.jsonl"),
    budget: str = typer.Option("0.5%", help="Share of the whole pool ('0.5%') or a row count."),
    method: str = typer.Option("kcenter", help="kcenter | random | topk | leastk | mixed | all."),
    seed: int = typer.Option(0, help="Seed for clustering, probes and selection."),
    k: int = typer.Option(100, "--k", help="Number of K-means clusters."),
    encoder: str = typer.Option("minilm", help="minilm | smollm2 | hf:MODEL | st:MODEL."),
    max_tokens: int = typer.Option(256, help="Tokens per prompt for the encoder (CPU: 128)."),
    batch_size: int = typer.Option(64, help="Encoder batch size."),
    device: str = typer.Option(None, help="cpu or cuda (default: cuda when available)."),
    cache_dir: Path = typer.Option(None, help="Embedding cache (default: "
                                   "$CORETUNE_CACHE/embeddings or ~/.cache/coretune/embeddings)."),
    threshold: float = typer.Option(None, help="Target rule: probe density (probe share / "
                                    "row share, default 0.25) for nli/probe targets; share of "
                                    "matching rows (default 0.5) for metadata targets."),
    top: int = typer.Option(None, help="Keep the top M clusters by target evidence instead."),
    probes: int = typer.Option(1000, help="Probe prompts for --target nli."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    backend: str = typer.Option("local", help="local | ray: where embedding, labelling and "
                                "selection run (same output either way)."),
    address: str = typer.Option(None, help="Ray cluster address ('auto', 'ray://head:10001'); "
                                "none starts a local Ray cluster."),
) -> None:
    """Select a small, representative subset of the target task's rows from a pool."""
    from coretune.backends import get_backend
    from coretune.data.pool import load_pool
    from coretune.select import METHODS, resolve_budget
    from coretune.target import TargetClusters, parse_target

    # Everything a user can get wrong is checked before the slow part.
    if output.suffix.lower() not in (".parquet", ".pq"):
        raise CoretuneError("subset output must be a .parquet file", path=output)
    if method not in METHODS:
        raise CoretuneError(f"unknown method '{method}' (one of {', '.join(METHODS)})",
                            field="method")
    for out in output_paths(output).values():
        if pool.exists() and out.exists() and out.resolve() == pool.resolve():
            raise CoretuneError("output would overwrite the pool file", path=out)
    runner = get_backend(backend, address)  # unknown backend / Ray missing: fail now
    spec = parse_target(target)
    finder = TargetClusters(spec, threshold=threshold, top=top, n_probes=probes, seed=seed)
    data = load_pool(pool)
    n = len(data)
    if not 1 <= k <= n:
        raise CoretuneError(f"--k {k} must be between 1 and the pool size ({n})", field="k")
    count = resolve_budget(budget, n)
    if spec.kind in ("tasks", "family", "keywords"):
        from coretune.target import metadata_mask

        metadata_mask(data, spec)  # unknown task/family/keyword: fail now, not after embedding

    if quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" bars
    start = time.perf_counter()
    embedder = runner.embedder(encoder, max_tokens=max_tokens, batch_size=batch_size,
                               device=device, cache_dir=cache_dir, quiet=quiet)
    x = embedder.embed(data.prompts)
    n_cached, n_encoded = embedder.n_cached_, embedder.n_encoded_
    clusters = runner.fit_clusters(x, k, seed=seed)
    finder.fit(clusters, data, embedder)
    result = runner.select(x, clusters.labels_, finder.clusters_, count, method, seed,
                           centroids=clusters.centroids_, quiet=quiet)
    runner.close()
    paths = write_subset(data, result, output)
    _print_summary(finder, clusters, n, n_cached, n_encoded, len(result), method, paths,
                   time.perf_counter() - start)


def write_subset(data, result, output: Path) -> dict[str, Path]:
    """Write the selected rows as `output` (pool columns + order/cluster/radius), the
    prompt/target JSONL and the selection table, each atomically; return their paths."""
    paths = output_paths(output)
    _write(paths, _outputs(data, result))
    return paths


def _outputs(data, result) -> dict:
    import pyarrow as pa

    sel = result.to_table(data.table.column("uid").take(pa.array(result.indices)).to_pylist())
    subset = data.table.take(pa.array(result.indices, pa.int64()))
    for name in ("order", "cluster", "radius"):
        if name in subset.column_names:  # ours win: they describe this selection
            subset = subset.drop_columns([name])
        subset = subset.append_column(name, sel.column(name))
    lines = [json.dumps({"prompt": p, "target": t}, ensure_ascii=False)
             for p, t in zip(subset.column("prompt").to_pylist(),
                             subset.column("target").to_pylist(), strict=True)]
    return {"subset": subset, "selection": sel, "jsonl": "".join(line + "\n" for line in lines)}


def _write(paths: dict[str, Path], tables: dict) -> None:
    import pyarrow.parquet as pq

    from coretune.io import atomic_path, write_text

    for key in ("subset", "selection"):
        with atomic_path(paths[key]) as tmp:
            pq.write_table(tables[key], tmp, compression="zstd")
    write_text(paths["jsonl"], tables["jsonl"])


def _print_summary(finder, clusters, n, n_cached, n_encoded, count, method, paths, seconds
                   ) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=max(Console().width, 110))
    t = finder.table_.to_pylist()
    evidence = "probe_hits" if finder.spec.probing else "target_rows"
    ref = f"{finder.reference_}_share"
    table = Table(title=f"target clusters for '{finder.spec}' ({len(finder.clusters_)} of "
                        f"{clusters.k})", title_justify="left")
    for col in ("cluster", "size", "top tasks", evidence.replace("_", " "),
                *([ref.replace("_", " ")] if ref in finder.table_.column_names else []), "why"):
        table.add_column(col, overflow="fold")
    for row in (r for r in t if r["chosen"]):
        table.add_row(str(row["cluster"]), str(row["size"]), ", ".join(row["top_tasks"][:2]),
                      str(row[evidence]),
                      *([f"{row[ref]:.0%}"] if ref in row else []), row["why"])
    console.print(table)
    rows = int(finder.mask_.sum())
    console.print(f"embedded {n} prompts ({n_cached} cached, {n_encoded} encoded); "
                  f"{clusters.k} clusters; target rows {rows} ({rows / n:.1%} of the pool)")
    if finder.recall_ is not None:
        console.print(f"against family == '{finder.reference_}': recall {finder.recall_:.3f}, "
                      f"precision {finder.precision_:.3f}")
    console.print(f"selected {count} rows with {method} in {seconds:.1f}s -> "
                  f"{paths['subset']}, {paths['jsonl'].name}, {paths['selection'].name}")
