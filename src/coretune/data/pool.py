"""The instruction pool: a validated Arrow table of (uid, task, template, prompt, target, choices).

Loaded from Parquet, JSONL or CSV, saved as Parquet. Validation happens once, on load, and
every problem names the file, the line (JSONL) or row (Parquet/CSV) and the field. A row may
give a conversation, `messages`, instead of prompt and target (coretune.data.chat). A source of
many shards is read and checked one shard at a time (`iter_pool`).

Generated uids (a pool without a uid column): `h` + the first 16 hex digits of the SHA-256 of
the row's task, template, prompt, target and choices, and of its messages for a chat row (the
prompt text alone does not tell every conversation apart). They depend on the row's content
only, so they are the same in every run, whatever the shards are called or the order they are
listed in. Rows with identical content get `-2`, `-3`, ... on the 2nd, 3rd copy; copies are
indistinguishable, so which copy carries which suffix does not matter.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from coretune.data.shards import Shard, apply_columns, hub_batches, list_shards, parse_columns
from coretune.errors import CoretuneError
from coretune.errors import row_location as _where
from coretune.io import atomic_path, read_jsonl

REQUIRED = ("uid", "task", "prompt", "target")
# Optional columns get these defaults when a file leaves them out.
DEFAULTS = {"template": "default", "choices": []}
COLUMNS = ("uid", "task", "template", "prompt", "target", "choices")
STRING_LIST = pa.list_(pa.string())
# Longer text fields are refused: no prompt is this long; a row this long is a broken file.
MAX_CHARS = 1_000_000


class Pool:
    """A validated instruction pool. `table` is a pyarrow Table whose first columns are COLUMNS."""

    def __init__(self, table: pa.Table, *, source: str | Path = "<table>"):
        self.table = _validate(table, source, line_of=None)
        self.source = str(source)

    @classmethod
    def load(cls, path: str | Path, columns: str | dict | None = None) -> Pool:
        return load_pool(path, columns)

    @classmethod
    def from_records(cls, records: Sequence[dict], *, source: str = "<records>") -> Pool:
        return cls(_records_to_table(records, source, lines=None), source=source)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with atomic_path(path) as tmp:
            pq.write_table(self.table, tmp, compression="zstd")
        return path

    def __len__(self) -> int:
        return self.table.num_rows

    def column(self, name: str) -> list:
        return self.table.column(name).to_pylist()

    @property
    def uids(self) -> list[str]:
        return self.column("uid")

    @property
    def prompts(self) -> list[str]:
        return self.column("prompt")

    def prompt_batches(self, rows: int) -> Iterator[list[str]]:
        """The prompts in order, `rows` at a time (never one list of the whole column)."""
        for batch in self.table.select(["prompt"]).to_batches(max_chunksize=rows):
            yield batch.column(0).to_pylist()

    def take(self, indices: Sequence[int]) -> Pool:
        """Rows at `indices`, in that order (already validated, so no re-check)."""
        new = Pool.__new__(Pool)
        new.table, new.source = self.table.take(pa.array(indices, pa.int64())), self.source
        return new

    def __repr__(self) -> str:
        return f"Pool({len(self)} rows, {len(set(self.column('task')))} tasks, from {self.source})"


def load_pool(source: str | Path, columns: str | dict | None = None) -> Pool:
    """A validated pool from a file, a directory or glob of shards, a `datasets` save_to_disk
    folder, or `hf:ID[:CONFIG][@SPLIT]`; `columns` maps pool fields to source columns
    (`prompt=inputs_pretokenized,...`, see shards.parse_columns). Shards are read and
    checked one at a time (their column types must agree, see merge_type); the pool
    itself is then held in memory."""
    tables = [t for _, t in iter_pool(source, columns)]
    schema = unify([t.schema for t in tables])
    pool = Pool.__new__(Pool)
    pool.table = tables[0] if len(tables) == 1 else pa.concat_tables(
        [conform(t, schema) for t in tables])
    pool.source = str(source)
    return pool


def prompt_batches(path: str | Path, rows: int) -> tuple[int, Iterator[list[str]]]:
    """The row count of a pool Parquet file (as `Pool.save` writes it) and its prompts in
    order, at most `rows` at a time, read without loading the pool: only the prompt column,
    page by page (pyarrow's default pre-buffers a row group's whole column chunk, and
    `Pool.save` writes row groups of a million rows)."""
    path = Path(path)
    n = pq.read_metadata(path).num_rows

    def batches() -> Iterator[list[str]]:
        with pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20) as f:
            for batch in f.iter_batches(batch_size=rows, columns=["prompt"]):
                yield batch.column(0).to_pylist()

    return n, batches()


def read_shard(path: Path, fmt: str) -> tuple[pa.Table, list[int] | None]:
    """One shard file as a table, and the line of each row for JSONL (rows otherwise)."""
    if not path.is_file():
        raise CoretuneError("file not found", path=path)
    if path.stat().st_size == 0:
        raise CoretuneError("empty file: no rows", path=path)
    if fmt == "parquet":
        try:
            return pq.read_table(path), None
        except (pa.ArrowInvalid, OSError) as e:
            raise CoretuneError(f"not a readable Parquet file ({_first_line(e)})", path=path) from e
    if fmt == "arrow":  # datasets' save_to_disk writes Arrow IPC streams
        try:
            with pa.memory_map(str(path)) as source:
                return pa.ipc.open_stream(source).read_all(), None
        except (pa.ArrowInvalid, OSError) as e:
            raise CoretuneError(f"not a readable Arrow file ({_first_line(e)})", path=path) from e
    check_utf8(path)
    if fmt == "csv":
        return _read_csv(path), None
    records, line_of = read_jsonl(path)
    return _records_to_table(records, path, lines=line_of), line_of


def check_utf8(path: Path) -> None:
    """Name the first line that is not UTF-8 (text formats), instead of a decoder traceback."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise CoretuneError(f"not valid UTF-8 (byte {e.start + 1} of the line); "
                                    "re-save the file as UTF-8", path=path, line=lineno) from e


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _read_csv(path: Path) -> pa.Table:
    # utf-8-sig: a byte-order mark is not part of the first column's name (pyarrow drops it
    # too, and a name that does not match would leave that column to type inference)
    with open(path, newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f), [])
    try:
        # Every column as text: uids like "007" must stay as written.
        table = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(header, pa.string())),
        )
    except pa.ArrowInvalid as e:
        raise CoretuneError(f"malformed CSV ({_first_line(e)})", path=path) from e
    if "choices" in table.column_names:
        parsed = []
        for row, text in enumerate(table.column("choices").to_pylist(), start=1):
            parsed.append(_parse_csv_choices(text, path, row))
        table = table.set_column(
            table.column_names.index("choices"), "choices", pa.array(parsed, STRING_LIST)
        )
    return table


def _parse_csv_choices(text: str | None, path: Path, row: int) -> list[str]:
    if text is None or not text.strip():
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise CoretuneError(
            "must be a JSON list of strings, e.g. [\"yes\", \"no\"]", path=path, row=row,
            field="choices",
        ) from e
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise CoretuneError("choices must be a JSON list of strings", path=path, row=row,
                            field="choices")
    return value


def _records_to_table(records: Sequence[dict], path, lines: list[int] | None) -> pa.Table:
    if not records:
        raise CoretuneError("empty file: no rows", path=path)
    names: dict[str, None] = {}
    for r in records:
        names.update(dict.fromkeys(r))
    columns = {}
    for name in names:
        values = [r.get(name) for r in records]
        if name == "choices":
            _check_choices_lists(values, path, lines)
        if name == "messages":  # checked here: turns of mixed shapes have no one Arrow type
            from coretune.data.chat import MESSAGES, check_turns

            columns[name] = pa.array([None if v is None else check_turns(
                v, path=path, **_where(i, lines)) for i, v in enumerate(values)], MESSAGES)
            continue
        try:
            columns[name] = pa.array(values, STRING_LIST if name == "choices" else None)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            i = _first_bad_type(values, name)
            raise CoretuneError(
                f"inconsistent or invalid value type ({_first_line(e)})",
                path=path,
                **_where(i, lines),
                field=name,
            ) from e
    # A required field missing from some record: name the first such record. A chat row's
    # prompt and target come from its messages.
    chat = "messages" in names
    for name in REQUIRED:
        made = chat and name in ("prompt", "target")
        if name in names or made:
            for i, r in enumerate(records):
                if name not in r and not (made and r.get("messages") is not None):
                    raise CoretuneError("missing", path=path, **_where(i, lines), field=name)
    return pa.table(columns)


def _check_choices_lists(values: list, path, lines: list[int] | None) -> None:
    # pyarrow would turn a string into a list of its characters
    for i, v in enumerate(values):
        if v is not None and not isinstance(v, list):
            raise CoretuneError(f"choices must be a list of strings, got {type(v).__name__} "
                                f"{json.dumps(v)[:40]}", path=path, **_where(i, lines),
                                field="choices")
        if v is not None and not all(isinstance(c, str) for c in v):
            raise CoretuneError("choices must be a list of strings", path=path,
                                **_where(i, lines), field="choices")


def _first_bad_type(values: list, name: str) -> int | None:
    if name == "choices":
        for i, v in enumerate(values):
            if v is not None and not (isinstance(v, list) and all(isinstance(c, str) for c in v)):
                return i
        return None
    kinds = [type(v) for v in values if v is not None]
    for i, v in enumerate(values):
        if v is not None and type(v) is not kinds[0]:
            return i
    return None


def _validate(table: pa.Table, path, line_of: list[int] | None,
              uid_counts: dict[str, int] | None = None) -> pa.Table:
    """Check one table (a whole pool or one shard). Without a uid column, uids are generated
    from the row's content (see generated_uids); `uid_counts` carries them across shards."""
    if table.num_rows == 0:
        raise CoretuneError("empty file: no rows", path=path)
    if "messages" in table.column_names:
        from coretune.data.chat import with_chat_columns

        table = with_chat_columns(table, path, line_of)
    for name in REQUIRED:
        if name not in table.column_names and name != "uid":
            raise CoretuneError("missing column", path=path, field=name)
    generate = "uid" not in table.column_names
    if generate:
        table = table.append_column("uid", pa.array([""] * table.num_rows, pa.string()))
    for name, default in DEFAULTS.items():
        if name not in table.column_names:
            typ = STRING_LIST if name == "choices" else pa.string()
            table = table.append_column(name, pa.array([default] * table.num_rows, typ))
    for name in ("uid", "task", "template", "prompt", "target"):
        if name == "uid" and generate:
            continue
        table = table.set_column(table.column_names.index(name), name,
                                 _text_column(table.column(name), name, path, line_of))
    choices = table.column("choices")
    if not pa.types.is_list(choices.type) or not pa.types.is_string(choices.type.value_type):
        try:
            choices = pc.cast(choices, STRING_LIST)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise CoretuneError(f"choices must be a list of strings, found {choices.type}",
                                path=path, **_where(0, line_of), field="choices") from e
    choices = pc.fill_null(choices, pa.scalar([], STRING_LIST))
    table = table.set_column(table.column_names.index("choices"), "choices", choices)
    if generate:
        uids = generated_uids(table, {} if uid_counts is None else uid_counts)
        table = table.set_column(table.column_names.index("uid"), "uid", uids)
    _check_unique(table.column("uid"), path, line_of)
    _check_choices(table, path, line_of)
    rest = [c for c in table.column_names if c not in COLUMNS]
    return table.select(list(COLUMNS) + rest)


def _text_column(col: pa.ChunkedArray, name: str, path, line_of) -> pa.ChunkedArray:
    if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
        if not (pa.types.is_integer(col.type) and name in ("uid", "task", "template")):
            first = pc.index(pc.is_valid(col), True).as_py()
            raise CoretuneError(f"must be text, found {col.type}", path=path,
                                **_where(max(first, 0), line_of), field=name)
    col = pc.cast(col, pa.string())
    empty = pc.or_kleene(pc.is_null(col), pc.equal(pc.utf8_trim_whitespace(col), ""))
    bad = pc.index(pc.fill_null(empty, True), True).as_py()
    if bad >= 0:
        raise CoretuneError("empty", path=path, **_where(bad, line_of), field=name)
    lengths = pc.utf8_length(col)
    longest = pc.max(lengths).as_py()
    if longest > MAX_CHARS:
        bad = pc.index(lengths, longest).as_py()
        raise CoretuneError(f"{longest:,} characters, more than the limit of {MAX_CHARS:,} "
                            "(a broken row or a missing line break?)", path=path,
                            **_where(bad, line_of), field=name)
    return col


def _check_unique(uids: pa.ChunkedArray, path, line_of) -> None:
    counts = pc.value_counts(uids)
    if len(counts) == len(uids):
        return
    seen: set[str] = set()
    for i, uid in enumerate(uids.to_pylist()):
        if uid in seen:
            raise CoretuneError(f"duplicate uid '{uid}'", path=path, **_where(i, line_of),
                                field="uid")
        seen.add(uid)


def _check_choices(table: pa.Table, path, line_of) -> None:
    """Each row's choices are distinct (rank classification could not tell two equal ones
    apart) and hold its target; both compared without surrounding whitespace."""
    choices = table.column("choices")
    has = pc.greater(pc.list_value_length(choices), 0)
    if not pc.any(has).as_py():
        return
    for i, (target, options) in enumerate(
        zip(table.column("target").to_pylist(), choices.to_pylist(), strict=True)
    ):
        if not options:
            continue
        stripped = [o.strip() for o in options]
        if len(set(stripped)) < len(stripped):
            twice = next(o for j, o in enumerate(stripped) if o in stripped[:j])
            raise CoretuneError(f"choice '{twice[:60]}' is listed twice", path=path,
                                **_where(i, line_of), field="choices")
        if target.strip() not in stripped:
            raise CoretuneError(
                f"target '{target[:60]}' is not one of the choices",
                path=path, **_where(i, line_of), field="target",
            )


def generated_uids(table: pa.Table, counts: dict[str, int]) -> pa.Array:
    """Content uids for `table` (see the module docstring); `counts` tracks copies so far."""
    cols = [table.column(n).to_pylist() for n in ("task", "template", "prompt", "target")]
    choices = table.column("choices").to_pylist()
    out = []
    for *text, options, turns in zip(*cols, choices, chat_turns(table), strict=True):
        key = "\x1f".join([*text, json.dumps(options or [], ensure_ascii=False),
                           *([] if turns is None else [json.dumps(turns, ensure_ascii=False)])])
        uid = "h" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
        n = counts[uid] = counts.get(uid, 0) + 1
        out.append(uid if n == 1 else f"{uid}-{n}")
    return pa.array(out, pa.string())


def chat_turns(table: pa.Table) -> list:
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
