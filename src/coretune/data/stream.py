"""A pool source read shard by shard: validate, hash and convert holding one shard at a time.

Generated uids (a pool without a uid column): `h` + the first 16 hex digits of the SHA-256 of
the row's task, template, prompt, target and choices. They depend on the row's content only,
so they are the same in every run, whatever the shards are called or the order they are
listed in. Rows with identical content get `-2`, `-3`, ... on the 2nd, 3rd copy; copies are
indistinguishable, so which copy carries which suffix does not matter.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from coretune.data.pool import COLUMNS, _validate, _where, read_shard
from coretune.data.shards import Shard, apply_columns, hub_batches, list_shards, parse_columns
from coretune.errors import CoretuneError
from coretune.io import atomic_path


def generated_uids(table: pa.Table, counts: dict[str, int]) -> pa.Array:
    """Content uids for `table` (see the module docstring); `counts` tracks copies so far."""
    cols = [table.column(n).to_pylist() for n in ("task", "template", "prompt", "target")]
    choices = table.column("choices").to_pylist()
    out = []
    for *text, options in zip(*cols, choices, strict=True):
        key = "\x1f".join([*text, json.dumps(options or [], ensure_ascii=False)])
        uid = "h" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
        n = counts[uid] = counts.get(uid, 0) + 1
        out.append(uid if n == 1 else f"{uid}-{n}")
    return pa.array(out, pa.string())


def iter_shards(source: str | Path) -> Iterator[tuple[Shard, pa.Table, list[int] | None]]:
    """Each shard of `source` read as a table (one at a time), with JSONL line numbers."""
    for shard in list_shards(source):
        if shard.fmt == "hub":
            for batch in hub_batches(shard.name):
                yield batch, batch.table, None
        else:
            table, line_of = read_shard(shard.path, shard.fmt)
            yield shard, table, line_of
            del table, line_of  # the next shard is read with nothing of this one held


def iter_pool(source: str | Path, columns: str | Mapping[str, str] | None = None
              ) -> Iterator[tuple[Shard, pa.Table]]:
    """Validated shards of `source` (pool columns first), uids unique across shards.

    Every error names the shard file, its line/row and the field."""
    mapping = parse_columns(columns)
    seen: set[str] = set()
    uid_counts: dict[str, int] = {}
    schema = None
    for shard, table, line_of in iter_shards(source):
        table = apply_columns(table, mapping, shard.name)
        table = _validate(table, shard.name, line_of, uid_counts)
        uids = table.column("uid").to_pylist()
        if not seen.isdisjoint(uids):
            i = next(i for i, u in enumerate(uids) if u in seen)
            raise CoretuneError(f"duplicate uid '{uids[i]}' (also in an earlier shard)",
                                path=shard.name, **_where(i, line_of), field="uid")
        seen.update(uids)
        core = table.select(list(COLUMNS)).schema
        if schema is not None and not core.equals(schema):
            raise CoretuneError("pool columns differ in type from the first shard's",
                                path=shard.name)
        schema = core
        yield shard, table
        del table, uids


def scan_pool(source: str | Path, columns: str | Mapping[str, str] | None = None) -> dict:
    """Validate `source` shard by shard without holding the pool: rows, shards, tasks and a
    SHA-256 of the validated pool columns (independent of the file format)."""
    h = hashlib.sha256()
    rows, shards, tasks = 0, 0, set()
    for _, table in iter_pool(source, columns):
        rows += table.num_rows
        shards += 1
        tasks.update(table.column("task").unique().to_pylist())
        # Row by row, so neither the file format nor where shards split changes the hash.
        cols = [table.column(c).to_pylist() for c in COLUMNS]
        for values in zip(*cols, strict=True):
            h.update(json.dumps(values, ensure_ascii=False).encode("utf-8") + b"\n")
        del table, cols  # before the next shard is read: one shard held at a time
    return {"source": str(source), "rows": rows, "shards": shards, "tasks": len(tasks),
            "sha256": h.hexdigest()}


def convert_pool(source: str | Path, output: str | Path,
                 columns: str | Mapping[str, str] | None = None) -> dict:
    """Write `source` as one coretune pool Parquet file, shard by shard (atomic: a failure
    in any shard leaves no output). Metadata columns are kept when every shard has them."""
    output = Path(output)
    rows = shards = 0
    with atomic_path(output) as tmp:
        writer = None
        try:
            for shard, table in iter_pool(source, columns):
                if writer is None:
                    schema = table.schema
                    writer = pq.ParquetWriter(tmp, schema, compression="zstd")
                table = _conform(table, schema, shard.name)
                writer.write_table(table)
                rows += table.num_rows
                shards += 1
        finally:
            if writer is not None:
                writer.close()
    return {"rows": rows, "shards": shards, "output": str(output)}


def _conform(table: pa.Table, schema: pa.Schema, where: str) -> pa.Table:
    """`table` in the first shard's schema: missing metadata columns as nulls, extra dropped."""
    cols = []
    for f in schema:
        if f.name in table.column_names:
            try:
                cols.append(table.column(f.name).cast(f.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise CoretuneError(f"type {table.column(f.name).type} differs from the first "
                                    f"shard's {f.type}", path=where, field=f.name) from e
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)
