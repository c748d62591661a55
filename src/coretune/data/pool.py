"""The instruction pool: a validated Arrow table of (uid, task, template, prompt, target, choices).

Loaded from Parquet, JSONL or CSV, saved as Parquet. Validation happens once, on load, and
every problem names the file, the line (JSONL) or row (Parquet/CSV) and the field. A row may
give a conversation, `messages`, instead of prompt and target (coretune.data.chat).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from coretune.errors import CoretuneError
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
    checked one at a time (their column types must agree, see stream.merge_type); the pool
    itself is then held in memory."""
    from coretune.data.stream import conform, iter_pool, unify

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


def _where(i: int | None, lines: list[int] | None) -> dict:
    if i is None:
        return {}
    return {"line": lines[i]} if lines is not None else {"row": i + 1}


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
        from coretune.data.stream import generated_uids

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
