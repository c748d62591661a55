"""`coretune select`: pool -> embed (cached) -> cluster -> target clusters -> selected subset."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import typer

from coretune.backends import backend_names
from coretune.cli.options import option
from coretune.config import (
    BackendConfig,
    ClusterConfig,
    EmbedConfig,
    EvaluateConfig,
    PoolConfig,
    RunConfig,
    SelectConfig,
    TargetConfig,
)
from coretune.embed.encoders import encoder_help
from coretune.errors import CoretuneError
from coretune.models import silence_progress_bars
from coretune.select import method_names

_OPTION_NAMES = {"select.budget": "budget", "target.spec": "target"}
EVAL_FILE = ("Your own evaluation set, as coretune evaluate's --eval-file takes it: "
             "NAME:DATA:TEMPLATES:LABELS (a .jsonl file, a .yaml file, the label names). Its "
             "examples are looked for in the pool beside the shipped sets': counted and, with "
             "--decontaminate, dropped. Repeatable.")


def _methods() -> str:
    return ", ".join(method_names())


def _backends() -> str:
    return ", ".join(backend_names())


def select(
    pool: str = typer.Option(..., "--pool", help="Pool: a .parquet/.jsonl/.csv file, a folder "
                             "or glob of shards, a datasets save_to_disk folder, or hf:ID."),
    columns: str = option(PoolConfig, "columns"),
    output: Path = typer.Option(..., "-o", "--output", help="Subset file to write (.parquet)."),
    fmt: str = typer.Option("prompt-target", "--format", help="The .jsonl beside the subset: "
                            "prompt-target | prompt-completion (TRL) | messages (chat turns)."),
    target: str = option(TargetConfig, "spec", "--target"),
    budget: str = option(SelectConfig, "budget"),
    method: str = option(SelectConfig, "method", listed=_methods,
                         help="A registered selection method."),
    seed: int = typer.Option(RunConfig.model_fields["seeds"].default[0],
                             help="Seed for the selection."),
    k: int = option(ClusterConfig, "k", "--k"),
    cluster_seed: int = option(ClusterConfig, "seed", "--cluster-seed"),
    encoder: str = option(EmbedConfig, "encoder", listed=encoder_help),
    max_tokens: int = option(EmbedConfig, "max_tokens"),
    batch_size: int = option(EmbedConfig, "batch_size"),
    batch_tokens: int | None = option(EmbedConfig, "batch_tokens"),
    device: str = typer.Option(None, help="cpu or cuda (default: cuda when available)."),
    cache_dir: Path = typer.Option(None, help="Embedding cache (default: embeddings/ in "
                                   "$CORETUNE_CACHE or ~/.cache/coretune)."),
    rule: str = option(TargetConfig, "rule"),
    threshold: float = option(TargetConfig, "threshold"),
    top: int = option(TargetConfig, "top"),
    share: float = option(TargetConfig, "share"),
    by_task: bool = option(TargetConfig, "by_task", "--by-task/--no-by-task"),
    votes: int = option(TargetConfig, "votes"),
    dedup: float = option(RunConfig, "dedup"),
    decontaminate: bool = option(SelectConfig, "decontaminate", "--decontaminate"),
    eval_file: list[str] = option(EvaluateConfig, "eval_files", "--eval-file", help=EVAL_FILE),
    probes: int = option(TargetConfig, "probes"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the output files "
                                   "(the subset and its .jsonl, .selection.parquet and "
                                   ".quality.json) if they exist."),
    backend: str = option(BackendConfig, "name", "--backend", listed=_backends,
                          help="Where embedding, labelling and selection run (same output)."),
    address: str = option(BackendConfig, "address"),
) -> None:
    """Select a small, representative subset of the target task's rows from a pool.

    The same steps, defaults and bytes as the select path of `coretune run`."""
    from coretune.config import section_config
    from coretune.io import write_json
    from coretune.run import stages
    from coretune.select.output import write_subset

    # before the slow part
    _check_arguments(pool, output, fmt, method, backend, target, overwrite, eval_file)
    if k < 1:
        raise CoretuneError(f"--k {k} must be at least 1", field="k")
    try:
        cfg = section_config(
            name="select", pool={"path": pool, "columns": columns},
            embed={"encoder": encoder, "max_tokens": max_tokens, "batch_size": batch_size,
                   "batch_tokens": batch_tokens},
            cluster={"k": k, "seed": cluster_seed},
            target={"spec": target, "rule": rule, "threshold": threshold, "top": top,
                    "probes": probes, "share": share, "by_task": by_task, "votes": votes},
            select={"method": method, "budget": budget, "decontaminate": decontaminate},
            evaluate=_evaluate_section(eval_file),
            backend={"name": backend, "address": address}, dedup=dedup)
    except CoretuneError as e:  # named as the checks after loading the pool name them
        if e.field in _OPTION_NAMES:
            raise CoretuneError(e.reason, field=_OPTION_NAMES[e.field]) from None
        raise
    b = cfg.backend
    stages.backend(b)  # Ray missing or unreachable: fail now
    finder = stages.make_target_finder(cfg.target, cfg.cluster)
    data = stages.make_pool(cfg.pool)
    stages.check_select_inputs(cfg.cluster, cfg.select, finder, data)

    if quiet:
        silence_progress_bars()
    start = time.perf_counter()
    embedder = stages.make_embedder(cfg.embed, b, quiet=quiet, device=device,
                                    cache_dir=cache_dir)
    data, x, n_cached, n_encoded = _embed(cfg, data, embedder)
    clusters = stages.fit_clusters(cfg.cluster, b, x)
    finder = stages.find_targets(finder, b, clusters, data, embedder, x, quiet=quiet)
    hits, names = stages.contamination_of(data, cfg.evaluate.sets(), quiet)
    clean = ~hits.any(axis=1) if decontaminate else None
    result = stages.select_subset(cfg.select, b, data, seed, x, clusters, quiet=quiet,
                                  embedder=embedder, mask=finder.mask_, finder=finder,
                                  clean=clean)
    stages.backend(b).close()
    paths = write_subset(data, result, output, fmt)
    seconds = time.perf_counter() - start
    q = stages.quality(data, result, x, finder.mask_, embedder, finder,
                       (hits, names, decontaminate))
    write_json(paths["quality"], q)
    _print_summary(finder, clusters, len(data), n_cached, n_encoded, len(result), method, paths,
                   seconds)
    _print_quality(q)


def _embed(cfg, data, embedder):
    """The pool's embeddings, less near-duplicates when `dedup` is set: (pool, x, cached rows,
    encoded rows)."""
    from coretune.run import stages

    # the pool is in memory already; its prompts are not copied out whole (Pool.prompt_batches)
    x = embedder.embed_batches(data.prompt_batches(embedder.chunk_size), len(data))
    n_cached, n_encoded = embedder.n_cached_, embedder.n_encoded_
    data, x, removed = stages.apply_dedup(cfg.dedup, data, x)
    if removed is not None:
        typer.echo(f"dedup at cosine {cfg.dedup}: {removed.removed} near-duplicate rows "
                   f"dropped, {len(data)} kept")
    return data, x, n_cached, n_encoded


def _evaluate_section(eval_file: list[str]) -> dict:
    """The shipped sets and the user's own (`--eval-file`): each one's contamination is
    counted, and dropped with `--decontaminate`."""
    names = [spec.split(":")[0] for spec in eval_file]
    shipped = EvaluateConfig.model_fields["tasks"].default
    return {"eval_files": list(eval_file), "tasks": list(dict.fromkeys([*shipped, *names]))}


def _check_arguments(pool: str, output: Path, fmt: str, method: str, backend: str,
                     target: str, overwrite: bool, eval_file: list[str]) -> None:
    """What a user can get wrong on the command line, checked before anything is loaded."""
    from coretune.backends import check_backend_name
    from coretune.data.export import check_format
    from coretune.evaluate import parse_eval_file
    from coretune.run.outputs import Inputs, check_outputs
    from coretune.select import get_method
    from coretune.select.output import output_paths

    if output.suffix.lower() not in (".parquet", ".pq"):
        raise CoretuneError("subset output must be a .parquet file", path=output)
    get_method(method)
    check_format(fmt)
    check_backend_name(backend)
    inputs = Inputs().pool(pool).eval_sets(parse_eval_file(spec) for spec in eval_file)
    kind, _, probe = target.strip().partition(":")
    if kind == "probe":
        inputs.file(probe)
    check_outputs(output_paths(output).values(), inputs, overwrite=overwrite)


def _print_quality(q: dict) -> None:
    """The selection-quality numbers (coretune.select.quality) as a few plain lines."""
    from rich.console import Console

    out = Console(highlight=False).print
    cov = q["coverage"]
    out(f"quality: coverage radius {cov['radius'][-1]:.3f}, mean distance {cov['mean'][-1]:.3f}"
        f" (target rows to their nearest selected row)")
    if "probe_coverage" in q:
        pc = q["probe_coverage"]
        out(f"  held-out target probes ({pc['n']}) to nearest selected row: mean "
            f"{pc['mean']:.3f}, median {pc['median']:.3f}, p90 {pc['p90']:.3f}")
    if "target" in q:
        t = q["target"]
        out(f"  {t['reference_rows_selected']} of {q['rows']} selected rows are "
            f"family '{t['reference']}' (precision {t['precision']:.2f}); task recall "
            f"{t['task_recall']}")
    ab, tm = q["answer_balance"], q["task_mix"]
    out(f"  answers: {ab['distinct']} distinct, majority '{ab['majority'][:30]}' "
        f"{ab['majority_share']:.0%}, entropy {ab['entropy']:.2f}; tasks: {tm['tasks']}, "
        f"largest {tm['top_task_share']:.0%}")
    if "contamination" in q:
        c = q["contamination"]
        per = ", ".join(f"{k} {v:,}" for k, v in c["pool_rows"].items() if k != "any")
        out(f"  contamination ({c['n']['long']}-grams, {c['n']['short']}-grams for short "
            f"fields): {c['pool_rows']['any']:,} pool rows share text with an evaluation "
            f"example ({per}){', dropped before selecting' if c['dropped'] else ''}; "
            f"{c['selected_rows']['any']:,} of the selected rows")


def _print_summary(finder, clusters, n, n_cached, n_encoded, count, method, paths, seconds
                   ) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=max(Console().width, 110))
    t = finder.table_.to_pylist()
    evidence = "probe_hits" if finder.spec.probing else "target_rows"
    ref = f"{finder.reference_}_share"
    table = Table(title=f"target clusters for '{finder.spec}' ({int(finder.chosen_.sum())} of "
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
    if finder.row_votes_ is not None:
        v = finder.summary()["votes"]
        console.print(f"votes: {v['runs']} clusterings; {v['rows_all']} rows kept by all, "
                      f"{v['rows_majority']} by most, {v['rows_any']} by any")
    if finder.tasks_ is not None:
        steps = Counter(v["step"] for v in finder.task_votes_.values())
        largest = ", ".join(f"{t} {v['inside']:.0%} of {v['rows']} {v['step']}"
                            for t, v in list(finder.task_votes_.items())[:3])
        console.print(f"by task: {steps['kept']} tasks kept whole, {steps['dropped']} dropped, "
                      f"{steps['left']} left as clustered; largest: {largest}")
    if finder.recall_ is not None:
        console.print(f"against family == '{finder.reference_}': recall {finder.recall_:.3f}, "
                      f"precision {finder.precision_:.3f}")
    console.print(f"selected {count} rows with {method} in {seconds:.1f}s -> "
                  f"{paths['subset']}, {paths['jsonl'].name}, {paths['selection'].name}, "
                  f"{paths['quality'].name}")
