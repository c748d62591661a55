"""Peak memory of validating a sharded pool shard by shard (`scan_pool`) against loading it
whole (`load_pool`), for pools of 2..N shards of the same size, in the same run.

    python benchmarks/bench_pool_stream.py [--shards 2,8,32] [--rows 4000]

Writes benchmarks/results/bench_pool_stream.json: per pool size, Arrow's peak allocation and
the process's peak RSS (fresh process per measurement), and the ratios to the smallest pool.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

RESULTS = Path(__file__).parent / "results" / "bench_pool_stream.json"


def write_shards(folder: Path, n: int, rows: int) -> int:
    folder.mkdir()
    for s in range(n):
        ids = range(s * rows, (s + 1) * rows)
        pq.write_table(pa.table({
            "uid": [f"u{i}" for i in ids], "task": [f"t{i % 7}" for i in ids],
            "prompt": [f"{i} " + "lorem ipsum dolor " * 110 for i in ids],
            "target": ["yes"] * rows,
        }), folder / f"part-{s:04d}.parquet")
    return sum(p.stat().st_size for p in folder.iterdir())


def measure(what: str, source: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "coretune.data.memprobe", what, str(source)],
                         capture_output=True, text=True, check=True, env=os.environ.copy())
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", default="2,8,32")
    ap.add_argument("--rows", type=int, default=4000)
    args = ap.parse_args()
    sizes = [int(s) for s in args.shards.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            folder = Path(tmp) / f"pool{n}"
            disk = write_shards(folder, n, args.rows)
            scan, load = measure("scan", folder), measure("load", folder)
            rows.append({"shards": n, "rows": scan["rows"], "disk_mib": round(disk / 2**20, 1),
                         "scan_arrow_peak_mib": scan["arrow_peak_mib"],
                         "scan_rss_peak_mib": scan["rss_peak_mib"],
                         "load_arrow_peak_mib": load["arrow_peak_mib"],
                         "load_rss_peak_mib": load["rss_peak_mib"]})
            print(rows[-1], flush=True)
    base = rows[0]
    for r in rows:
        for k in ("scan_arrow_peak_mib", "load_arrow_peak_mib"):
            r[k.replace("_mib", "_ratio")] = round(r[k] / base[k], 2)
        r["pool_ratio"] = round(r["rows"] / base["rows"], 2)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"rows_per_shard": args.rows, "results": rows}, indent=2)
                       + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
