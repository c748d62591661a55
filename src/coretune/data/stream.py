"""A pool source scanned or converted shard by shard, holding one shard at a time (the shards
are read and validated by `coretune.data.pool.iter_pool`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from coretune.data.pool import COLUMNS, chat_turns, conform, iter_pool, unify
from coretune.io import atomic_path


def scan_pool(source: str | Path, columns: str | Mapping[str, str] | None = None) -> dict:
    """Validate `source` shard by shard without holding the pool: rows, shards, tasks and a
    SHA-256 of the validated pool columns and a chat row's messages (independent of the file
    format)."""
    h = hashlib.sha256()
    rows, shards, tasks = 0, 0, set()
    for _, table in iter_pool(source, columns):
        rows += table.num_rows
        shards += 1
        tasks.update(table.column("task").unique().to_pylist())
        # Row by row, so neither the file format nor where shards split changes the hash.
        cols = [table.column(c).to_pylist() for c in COLUMNS]
        for *values, turns in zip(*cols, chat_turns(table), strict=True):
            values += [] if turns is None else [turns]
            h.update(json.dumps(values, ensure_ascii=False).encode("utf-8") + b"\n")
        del table, cols  # before the next shard is read: one shard held at a time
    return {"source": str(source), "rows": rows, "shards": shards, "tasks": len(tasks),
            "sha256": h.hexdigest()}


def convert_pool(source: str | Path, output: str | Path,
                 columns: str | Mapping[str, str] | None = None) -> dict:
    """Write `source` as one coretune pool Parquet file, shard by shard (atomic: a failure
    in any shard leaves no output). Every metadata column is kept; a shard without one has
    nulls there."""
    output = Path(output)
    rows = shards = 0
    with atomic_path(output) as tmp:
        writer, schema = None, None
        try:
            for _, table in iter_pool(source, columns):
                wider = unify([table.schema] if schema is None else [schema, table.schema])
                if schema is None or not wider.equals(schema):
                    writer, schema = _reopen(writer, tmp, wider), wider
                writer.write_table(conform(table, schema))
                rows += table.num_rows
                shards += 1
        finally:
            if writer is not None:
                writer.close()
    return {"rows": rows, "shards": shards, "output": str(output)}


def _reopen(writer: pq.ParquetWriter | None, path: Path, schema: pa.Schema
            ) -> pq.ParquetWriter:
    """A writer of `path` in `schema`. A shard that brings a new column or a wider type
    (rare) has what was written so far copied into the new schema, one row group at a time."""
    if writer is None:
        return pq.ParquetWriter(path, schema, compression="zstd")
    writer.close()
    old = path.with_name(path.name + ".old")
    path.replace(old)
    new = pq.ParquetWriter(path, schema, compression="zstd")
    try:
        with pq.ParquetFile(old) as f:
            for i in range(f.num_row_groups):
                new.write_table(conform(f.read_row_group(i), schema))
    except BaseException:
        new.close()
        raise
    finally:
        old.unlink()
    return new
