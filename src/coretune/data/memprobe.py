"""Peak memory of reading a pool: `python -m coretune.data.memprobe scan|load SOURCE`.

Prints JSON with Arrow's peak allocation and the process's peak RSS (MiB), for the memory
test and benchmarks/bench_pool_stream.py (one fresh process per measurement)."""

from __future__ import annotations

import json
import resource
import sys

import pyarrow as pa


def main(argv: list[str]) -> None:
    from coretune.data.pool import load_pool
    from coretune.data.stream import scan_pool

    what, source = argv
    rows = scan_pool(source)["rows"] if what == "scan" else len(load_pool(source))
    print(json.dumps({
        "what": what, "rows": rows,
        "arrow_peak_mib": round(pa.default_memory_pool().max_memory() / 2**20, 2),
        "rss_peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main(sys.argv[1:])
