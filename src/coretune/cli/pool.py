"""`coretune pool build|info|validate|export`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

app = typer.Typer(help="Build, inspect and export instruction pools.", no_args_is_help=True)

SOURCE_HELP = ("Pool file (.parquet, .jsonl, .csv), folder or glob of shards, datasets "
               "save_to_disk folder, or hf:ID[:CONFIG][@SPLIT].")
COLUMNS_HELP = ("Map pool fields to source columns, FIELD=COLUMN,... (e.g. prompt=question "
                "or messages=turns); FIELD=- leaves the source's FIELD column out. No uid: "
                "uids from the row content.")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace the output if it exists.")


@app.command()
def build(
    output: Path = typer.Option(..., "-o", "--output", help="Pool file to write (.parquet)."),
    source: str = typer.Option(None, "--from", help="Convert this pool source (file, folder "
                               "or glob of shards, datasets folder, hf:ID) shard by shard."),
    columns: str = typer.Option(None, help=COLUMNS_HELP),
    bigbench: str = typer.Option(None, help="Shipped BIG-bench rows: full (default), sample "
                                 "or none."),
    templates: str = typer.Option(
        None, help="Templates per dataset: all (default), first:N, or fixed[:NAME]."),
    dataset: list[str] = typer.Option(
        [], help="Extra dataset NAME:DATA:TEMPLATES, optionally :FAMILY at the end, with DATA "
        "a .jsonl file and TEMPLATES a promptsource .yaml (repeatable)."),
    no_default_datasets: bool = typer.Option(
        False, "--no-default-datasets", help="Leave out the shipped RTE and CB training sets."),
    max_rows: int = typer.Option(None, "--max-rows", help="Keep a seeded uniform "
                                 "sample of at most this many rows, in pool order (as a "
                                 "config's pool.max_rows does); with --from the source is read "
                                 "into memory."),
    seed: int = typer.Option(0, help="Seed of the --max-rows sample (configs use 0)."),
    overwrite: bool = OVERWRITE,
) -> None:
    """Build the default pool, or convert your own source (--from) to one pool file.

    The default pool: shipped BIG-bench rows + RTE/CB through templates, deterministic."""
    from coretune.errors import CoretuneError
    from coretune.run.outputs import Inputs, check_outputs

    if output.suffix.lower() not in (".parquet", ".pq"):
        raise CoretuneError("pool output must be a .parquet file", path=output)
    if seed < 0:
        raise CoretuneError(f"must be >= 0, got {seed}", field="seed")
    start = time.perf_counter()
    if source is not None:
        if bigbench or templates or dataset or no_default_datasets:
            raise CoretuneError("--from converts a source as it is; leave out --bigbench, "
                                "--templates, --dataset and --no-default-datasets", field="from")
        from coretune.data.stream import convert_pool

        check_outputs([output], Inputs().pool(source), overwrite=overwrite)
        if max_rows is not None:
            from coretune.data.pool import load_pool
            from coretune.data.sources import sample_rows

            pool = sample_rows(load_pool(source, columns), max_rows, seed)
            pool.save(output)
            typer.echo(f"wrote {output}: {len(pool)} rows sampled from {source} in "
                       f"{time.perf_counter() - start:.1f}s")
            return
        done = convert_pool(source, output, columns)
        typer.echo(f"wrote {output}: {done['rows']} rows from {done['shards']} shard(s) in "
                   f"{time.perf_counter() - start:.1f}s")
        return
    if columns:
        raise CoretuneError("--columns goes with --from", field="columns")
    from coretune.data.sources import (
        build_pool,
        parse_dataset_spec,
        parse_template_mode,
        sample_rows,
        train_datasets,
    )

    mode, n, fixed = parse_template_mode(templates or "all")
    datasets = [] if no_default_datasets else list(train_datasets().values())
    datasets += [parse_dataset_spec(s) for s in dataset]
    inputs = Inputs()
    for ds in datasets:
        inputs.file(ds.path).file(ds.templates)
    check_outputs([output], inputs, overwrite=overwrite)
    pool = build_pool(bigbench=bigbench or "full", datasets=datasets, template_mode=mode,
                      n_templates=n, fixed_template=fixed)
    pool = sample_rows(pool, max_rows, seed)
    pool.save(output)
    typer.echo(f"wrote {output}: {len(pool)} rows in {time.perf_counter() - start:.1f}s")


@app.command()
def info(
    source: str = typer.Argument(..., help=SOURCE_HELP),
    columns: str = typer.Option(None, help=COLUMNS_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the statistics as JSON."),
    top: int = typer.Option(15, min=1, help="How many tasks to list."),
) -> None:
    """Rows, tasks, templates per task, token counts and the share of each task family."""
    from coretune.data.pool import load_pool
    from coretune.data.stats import pool_stats, print_stats

    stats = pool_stats(load_pool(source, columns))
    if as_json:
        typer.echo(json.dumps(stats, indent=2))
    else:
        print_stats(stats, str(source), top=top)


@app.command()
def validate(
    source: str = typer.Argument(..., help=SOURCE_HELP),
    columns: str = typer.Option(None, help=COLUMNS_HELP),
) -> None:
    """Check a pool shard by shard; print rows, shards, tasks and a SHA-256 as JSON.

    One shard is in memory at a time; the hash covers the validated pool columns."""
    from coretune.data.stream import scan_pool

    typer.echo(json.dumps(scan_pool(source, columns), indent=2))


@app.command()
def export(
    source: str = typer.Argument(..., help="Subset or pool: " + SOURCE_HELP),
    output: Path = typer.Option(..., "-o", "--output", help="JSONL file to write."),
    fmt: str = typer.Option("prompt-completion", "--format",
                            help="prompt-completion (TRL) | messages (TRL conversational) | "
                            "prompt-target."),
    columns: str = typer.Option(None, help=COLUMNS_HELP),
    overwrite: bool = OVERWRITE,
) -> None:
    """Write a subset (or pool) as JSONL for another trainer, e.g. TRL's SFTTrainer."""
    from coretune.data.export import check_format, write_trainer_jsonl
    from coretune.data.pool import load_pool
    from coretune.errors import CoretuneError
    from coretune.run.outputs import Inputs, check_outputs

    check_format(fmt)
    if output.suffix.lower() != ".jsonl":
        raise CoretuneError("output must be a .jsonl file", path=output)
    check_outputs([output], Inputs().pool(source), overwrite=overwrite)
    pool = load_pool(source, columns)
    write_trainer_jsonl(pool.table, output, fmt)
    typer.echo(f"wrote {output}: {len(pool)} rows as {fmt}")
