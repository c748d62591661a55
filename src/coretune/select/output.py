"""Writing a selection: the subset rows, a prompt/target JSONL and the selection table."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from coretune.data.export import write_trainer_jsonl
from coretune.data.pool import Pool
from coretune.io import atomic_path
from coretune.select.engine import SelectionResult


def output_paths(output: Path) -> dict[str, Path]:
    """subset.parquet -> subset.jsonl (prompt/target), subset.selection.parquet and
    subset.quality.json (selection quality, written by the caller)."""
    output = Path(output)
    return {"subset": output, "jsonl": output.with_suffix(".jsonl"),
            "selection": output.with_name(f"{output.stem}.selection.parquet"),
            "quality": output.with_name(f"{output.stem}.quality.json")}


def write_subset(pool: Pool, result: SelectionResult, output: Path,
                 fmt: str = "prompt-target") -> dict[str, Path]:
    """Write the selected rows as `output` (pool columns + order/cluster/radius), the JSONL
    for a trainer in `fmt` (coretune.data.export) and the selection table, each atomically;
    return their paths."""
    paths = output_paths(output)
    tables = _outputs(pool, result)
    for key in ("subset", "selection"):
        with atomic_path(paths[key]) as tmp:
            pq.write_table(tables[key], tmp, compression="zstd")
    write_trainer_jsonl(tables["subset"], paths["jsonl"], fmt)
    return paths


def _outputs(pool: Pool, result: SelectionResult) -> dict:
    sel = result.to_table(pool.table.column("uid").take(pa.array(result.indices)).to_pylist())
    subset = pool.table.take(pa.array(result.indices, pa.int64()))
    for name in ("order", "cluster", "radius"):
        if name in subset.column_names:  # ours win: they describe this selection
            subset = subset.drop_columns([name])
        subset = subset.append_column(name, sel.column(name))
    return {"subset": subset, "selection": sel}
