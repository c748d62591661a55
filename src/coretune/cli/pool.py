"""`coretune pool build|info`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

app = typer.Typer(help="Build and inspect instruction pools.", no_args_is_help=True)


@app.command()
def build(
    output: Path = typer.Option(..., "-o", "--output", help="Pool file to write (.parquet)."),
    bigbench: str = typer.Option("full", help="Shipped BIG-bench rows: full, sample or none."),
    templates: str = typer.Option(
        "all", help="Templates per dataset: all, first:N, or fixed[:NAME] (one per dataset)."),
    dataset: list[str] = typer.Option(
        [], help="Extra dataset, NAME:DATA:TEMPLATES[:FAMILY] with DATA a .jsonl file and "
        "TEMPLATES a promptsource .yaml (repeatable)."),
    no_default_datasets: bool = typer.Option(
        False, "--no-default-datasets", help="Leave out the shipped RTE and CB training sets."),
) -> None:
    """Build a pool deterministically from shipped BIG-bench rows + RTE/CB through templates."""
    from coretune.data.sources import (
        build_pool,
        parse_dataset_spec,
        parse_template_mode,
        train_datasets,
    )
    from coretune.errors import CoretuneError

    if output.suffix.lower() not in (".parquet", ".pq"):
        raise CoretuneError("pool output must be a .parquet file", path=output)
    mode, n, fixed = parse_template_mode(templates)
    datasets = [] if no_default_datasets else list(train_datasets().values())
    datasets += [parse_dataset_spec(s) for s in dataset]
    start = time.perf_counter()
    pool = build_pool(bigbench=bigbench, datasets=datasets, template_mode=mode, n_templates=n,
                      fixed_template=fixed)
    pool.save(output)
    typer.echo(f"wrote {output}: {len(pool)} rows in {time.perf_counter() - start:.1f}s")


@app.command()
def info(
    path: Path = typer.Argument(..., help="Pool file (.parquet, .jsonl or .csv)."),
    as_json: bool = typer.Option(False, "--json", help="Print the statistics as JSON."),
    top: int = typer.Option(15, help="How many tasks to list."),
) -> None:
    """Rows, tasks, templates per task, token counts and the share of each task family."""
    from coretune.data.pool import load_pool
    from coretune.data.stats import pool_stats, print_stats

    stats = pool_stats(load_pool(path))
    if as_json:
        typer.echo(json.dumps(stats, indent=2))
    else:
        print_stats(stats, str(path), top=top)
