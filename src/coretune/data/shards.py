"""Where a pool comes from: one file, a directory or glob of shards, a `datasets` folder or id.

A source is read shard by shard (one file, or one batch of a hub dataset), so checks that
only need one shard at a time (validation, hashing, conversion) hold one shard in memory.
A column mapping renames the source's columns to coretune's (`prompt=inputs_pretokenized`);
`FIELD=-` leaves out the source's column of that name.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from coretune.errors import CoretuneError

FILE_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".csv": "csv",
                ".arrow": "arrow"}
POOL_FIELDS = ("uid", "task", "template", "prompt", "target", "choices", "messages")
DROP = "-"  # FIELD=- : the source's column FIELD is not read
HUB_BATCH_ROWS = 50_000  # rows per shard when a hub dataset is read through `datasets`


@dataclass
class Shard:
    """One piece of a pool source: a file (`path`), or a batch of a hub dataset."""

    name: str
    path: Path | None = None
    fmt: str = ""
    table: pa.Table | None = field(default=None, repr=False)  # hub batches come as tables


def parse_columns(spec: str | Mapping[str, str] | None) -> dict[str, str]:
    """`uid=id,task=task_name,prompt=inputs_pretokenized` -> {"uid": "id", ...}.

    Keys are coretune's pool fields, values the source's column names or `-` (leave the
    source's column of the field's name out). A dict (from a config) is checked the same way.
    None or "" -> {} (no renaming).
    """
    if not spec:
        return {}
    if isinstance(spec, Mapping):
        items = [(str(k), str(v) if v is not None else "") for k, v in spec.items()]
    elif isinstance(spec, str):
        items = []
        for part in spec.split(","):
            key, eq, value = (s.strip() for s in part.partition("="))
            if not eq or not key or not value:
                raise CoretuneError(f"'{part.strip()}' is not FIELD=COLUMN (e.g. "
                                    "prompt=inputs_pretokenized)", field="columns")
            items.append((key, value))
    else:
        raise CoretuneError(f"expected FIELD=COLUMN,... or a mapping, got {spec!r}",
                            field="columns")
    out: dict[str, str] = {}
    for key, value in items:
        if key not in POOL_FIELDS:
            raise CoretuneError(f"unknown pool field '{key}' (one of {', '.join(POOL_FIELDS)})",
                                field="columns")
        if not value:
            raise CoretuneError(f"no source column given for '{key}'", field="columns")
        if key in out:
            raise CoretuneError(f"'{key}' is mapped twice", field="columns")
        if value != DROP and value in out.values():
            raise CoretuneError(f"source column '{value}' is mapped twice", field="columns")
        out[key] = value
    return out


def apply_columns(table: pa.Table, columns: Mapping[str, str], where: str | Path) -> pa.Table:
    """Rename mapped source columns to pool fields. A source column that has a pool field's
    name but is shadowed by the mapping is dropped (the mapping says which one to use), and so
    is one mapped to `-`."""
    drop = {key for key, src in columns.items() if src == DROP}
    columns = {key: src for key, src in columns.items() if src != DROP}
    if not columns and not drop:
        return table
    have = table.column_names
    for key, src in columns.items():
        if src not in have:
            raise CoretuneError(f"column '{src}' (mapped to '{key}') not found; the source "
                                f"has: {', '.join(have)}", path=where, field=key)
    by_source = {src: key for key, src in columns.items()}
    names, arrays = [], []
    for name in have:
        if name in by_source:
            names.append(by_source[name])
        elif name in columns or name in drop:  # shadowed by a mapped column, or left out
            continue
        else:
            names.append(name)
        arrays.append(table.column(name))
    return pa.table(dict(zip(names, arrays, strict=True)))


def list_shards(source: str | Path) -> list[Shard]:
    """The shards of `source`, in a fixed order (sorted by path), without reading them."""
    text = str(source)
    if text.startswith("hf:"):
        return [Shard(text, fmt="hub")]
    if any(c in text for c in "*?["):
        paths = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not paths:
            raise CoretuneError("no files match this pattern", path=text)
        return _file_shards(paths, text)
    path = Path(text)
    if path.is_dir():
        return _dir_shards(path)
    if not path.exists():
        raise CoretuneError("file not found", path=path)
    return _file_shards([path], text)


def _file_shards(paths: list[Path], where: str) -> list[Shard]:
    shards, formats = [], set()
    for p in paths:
        fmt = FILE_FORMATS.get(p.suffix.lower())
        if fmt is None or fmt == "arrow":
            raise CoretuneError(
                f"unknown pool format '{p.suffix or '(none)'}'; use .parquet, .jsonl or .csv",
                path=p)
        formats.add(fmt)
        shards.append(Shard(str(p), p, fmt))
    if len(formats) > 1:
        raise CoretuneError(f"shards mix formats ({', '.join(sorted(formats))}); use one",
                            path=where)
    return shards


def _dir_shards(path: Path) -> list[Shard]:
    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        raise CoretuneError(f"a DatasetDict folder: give one split, e.g. {path / splits[0]}"
                            if splits else "a DatasetDict folder: give one split's folder",
                            path=path)
    if (path / "state.json").is_file():  # datasets' save_to_disk
        try:
            state = json.loads((path / "state.json").read_text(encoding="utf-8"))
            files = [f["filename"] for f in state["_data_files"]]
        except (ValueError, KeyError, TypeError) as e:
            raise CoretuneError("not a readable save_to_disk folder (bad state.json)",
                                path=path / "state.json", field="_data_files") from e
        return [Shard(str(path / f), path / f, "arrow") for f in files]
    paths = sorted(p for p in path.rglob("*")
                   if p.is_file() and p.suffix.lower() in FILE_FORMATS
                   and p.suffix.lower() != ".arrow" and not p.name.startswith("."))
    if not paths:
        raise CoretuneError("no .parquet, .jsonl or .csv shards in this folder", path=path)
    return _file_shards(paths, str(path))


def hub_batches(spec: str, rows: int = HUB_BATCH_ROWS) -> Iterator[Shard]:
    """`hf:ID[:CONFIG][@SPLIT]` (split default `train`) through `datasets.load_dataset`,
    as batches of `rows` rows. ID may also be a local folder of data files."""
    try:
        import datasets
    except ImportError as e:
        raise CoretuneError("reading a hub dataset needs the `datasets` package "
                            "(pip install datasets)", path=spec) from e
    body, _, split = spec[3:].partition("@")
    name, _, config = body.partition(":") if not Path(body).exists() else (body, "", "")
    try:
        ds = datasets.load_dataset(name, config or None, split=split or "train")
    except Exception as e:  # noqa: BLE001 (hub/network/format errors all mean: cannot read)
        raise CoretuneError(f"cannot load dataset ({type(e).__name__}: "
                            f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})",
                            path=spec) from e
    for start in range(0, len(ds), rows):
        table = ds.data.table.slice(start, rows)
        yield Shard(f"{spec}[{start}:{start + table.num_rows}]", fmt="table", table=table)
