"""A pool source read shard by shard: validate, hash and convert holding one shard at a time.

Generated uids (a pool without a uid column): `h` + the first 16 hex digits of the SHA-256 of
the row's task, template, prompt, target and choices, and of its messages for a chat row (the
prompt text alone does not tell every conversation apart). They depend on the row's content only,
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
import pyarrow.compute as pc
import pyarrow.parquet as pq

from coretune.data.pool import COLUMNS, _validate, _where, read_shard
from coretune.data.shards import Shard, apply_columns, hub_batches, list_shards, parse_columns
from coretune.errors import CoretuneError
from coretune.io import atomic_path


def generated_uids(table: pa.Table, counts: dict[str, int]) -> pa.Array:
    """Content uids for `table` (see the module docstring); `counts` tracks copies so far."""
    cols = [table.column(n).to_pylist() for n in ("task", "template", "prompt", "target")]
    choices = table.column("choices").to_pylist()
    chats = _messages(table)
    out = []
    for *text, options, turns in zip(*cols, choices, chats, strict=True):
        key = "\x1f".join([*text, json.dumps(options or [], ensure_ascii=False),
                           *([] if turns is None else [json.dumps(turns, ensure_ascii=False)])])
        uid = "h" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
        n = counts[uid] = counts.get(uid, 0) + 1
        out.append(uid if n == 1 else f"{uid}-{n}")
    return pa.array(out, pa.string())


def _messages(table: pa.Table) -> list:
    """Each row's turns (None for a row without), for the content a uid or hash covers."""
    if "messages" not in table.column_names:
        return [None] * table.num_rows
    return table.column("messages").to_pylist()


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
    """Validated shards of `source` (pool columns first), uids unique across shards, column
    types that agree across shards (see merge_type; a column may be missing from a shard).

    Every error names the shard file, its line/row and the field."""
    mapping = parse_columns(columns)
    seen: set[str] = set()
    uid_counts: dict[str, int] = {}
    types: dict[str, tuple[pa.DataType, str]] = {}  # column -> (type so far, shard it is from)
    for shard, table, line_of in iter_shards(source):
        raw = apply_columns(table, mapping, shard.name)
        table = _validate(raw, shard.name, line_of, uid_counts)
        _check_types(types, raw, shard.name, line_of)  # as read: an integer uid is not text
        del raw
        uids = table.column("uid").to_pylist()
        if not seen.isdisjoint(uids):
            i = next(i for i, u in enumerate(uids) if u in seen)
            raise CoretuneError(f"duplicate uid '{uids[i]}' (also in an earlier shard)",
                                path=shard.name, **_where(i, line_of), field="uid")
        seen.update(uids)
        yield shard, table
        del table, uids


def merge_type(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The type that holds every value of types `a` and `b` as it is, or None.

    A null column takes any type; integers merge into the wider integer, floats into the
    wider float, text and bytes into their large forms, lists item by item, structs field by
    field. Nothing else merges: not an integer with a float (every integer would become a
    float, and those above 2**53 would lose digits), nor uint64 with a signed integer."""
    if a == b or pa.types.is_null(b):
        return a
    if pa.types.is_null(a):
        return b
    is_list = pa.types.is_list, pa.types.is_large_list
    if any(f(a) for f in is_list) and any(f(b) for f in is_list):
        item = merge_type(a.value_type, b.value_type)
        large = pa.types.is_large_list(a) or pa.types.is_large_list(b)
        return None if item is None else (pa.large_list if large else pa.list_)(item)
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        fields = {f.name: f.type for f in a}
        for f in b:
            fields[f.name] = merge_type(fields[f.name], f.type) if f.name in fields else f.type
        return None if None in fields.values() else pa.struct(list(fields.items()))
    signed = pa.types.is_signed_integer
    if (pa.types.is_uint64(a) and signed(b)) or (pa.types.is_uint64(b) and signed(a)):
        return None  # no integer type holds both
    kinds = (pa.types.is_integer, pa.types.is_floating,
             lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
             lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t))
    if any(kind(a) and kind(b) for kind in kinds):
        return pa.unify_schemas([pa.schema([("x", a)]), pa.schema([("x", b)])],
                                promote_options="permissive").types[0]
    return None


def _check_types(types: dict[str, tuple[pa.DataType, str]], table: pa.Table, where: str,
                 line_of: list[int] | None) -> None:
    """Merge `table`'s column types into `types`; a type that does not merge is refused."""
    for f in table.schema:
        have, origin = types.get(f.name, (pa.null(), where))
        merged = merge_type(have, f.type)
        if merged is None:
            first = pc.index(pc.is_valid(table.column(f.name)), True).as_py()
            raise CoretuneError(f"type {f.type} here, {have} in {origin}; shards must agree "
                                "on each column's type", path=where, **_where(first, line_of),
                                field=f.name)
        types[f.name] = merged, origin if merged == have else where


def unify(schemas: list[pa.Schema]) -> pa.Schema:
    """One schema for tables iter_pool yielded: every column, in order of first appearance,
    in the merge_type of its types (iter_pool has checked that they merge)."""
    types: dict[str, pa.DataType] = {}
    for schema in schemas:
        for f in schema:
            types[f.name] = merge_type(types[f.name], f.type) if f.name in types else f.type
    return pa.schema(list(types.items()))


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` in `schema` (from unify): a column it lacks as nulls, the others widened."""
    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names
            else pa.nulls(table.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


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
        for *values, turns in zip(*cols, _messages(table), strict=True):
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
