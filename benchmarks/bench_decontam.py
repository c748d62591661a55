"""How much of the shipped pools overlaps the evaluation sets, and how long finding out takes.

For the default pool (`coretune pool build`: every BIG-bench row plus RTE and CB training rows
through every template) and the demo's 5,000-row sample, the rows that share a word n-gram
with an RTE, CB or ANLI R1-R3 dev example (coretune.data.decontam: 13-grams, 8-grams for
fields of 8-12 words), per set and per pool task, and the seconds of the scan.

    python benchmarks/bench_decontam.py     # writes benchmarks/results/bench_decontam.json/.md
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from coretune.data.decontam import LONG_N, SHORT_N, pool_hits  # noqa: E402
from coretune.data.sources import build_pool, eval_datasets, sample_rows  # noqa: E402
from coretune.io import write_json, write_text  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def measure(name: str, pool) -> dict:
    sets = list(eval_datasets().values())
    start = time.perf_counter()
    hits, names = pool_hits(pool.column("prompt"), pool.column("target"), sets)
    seconds = time.perf_counter() - start
    tasks = pool.column("task")
    by_set = {}
    for j, s in enumerate(names):
        rows = [t for t, h in zip(tasks, hits[:, j], strict=True) if h]
        by_set[s] = {"rows": len(rows), "by_task": dict(Counter(rows).most_common(5))}
    return {"pool": name, "rows": len(pool), "overlapping_rows": int(hits.any(axis=1).sum()),
            "sets": by_set, "scan_seconds": round(seconds, 1)}


def markdown(doc: dict) -> str:
    lines = [f"Rows of the shipped pools that share a word n-gram ({doc['n']['long']}-grams; "
             f"{doc['n']['short']}-grams for fields of {doc['n']['short']}-"
             f"{doc['n']['long'] - 1} words) with a dev example of each evaluation set "
             "(`python benchmarks/bench_decontam.py`):", "",
             "| pool | rows | " + " | ".join(doc["pools"][0]["sets"]) + " | any | scan |",
             "|---|---|" + "---|" * (len(doc["pools"][0]["sets"]) + 2)]
    for p in doc["pools"]:
        lines.append(f"| {p['pool']} | {p['rows']:,} | "
                     + " | ".join(f"{v['rows']:,}" for v in p["sets"].values())
                     + f" | {p['overlapping_rows']:,} | {p['scan_seconds']:.0f} s |")
    full = doc["pools"][0]["sets"]
    lines += ["", "Where they come from in the default pool: " + "; ".join(
        f"{s}: " + ", ".join(f"{t} {n:,}" for t, n in v["by_task"].items())
        for s, v in full.items() if v["rows"]) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    full = build_pool(bigbench="full")
    demo = sample_rows(build_pool(bigbench="full", template_mode="first", n_templates=2), 5000)
    doc = {"n": {"long": LONG_N, "short": SHORT_N},
           "pools": [measure("default (coretune pool build)", full),
                     measure("demo (5,000 rows, first 2 templates)", demo)],
           "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg())}
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / "bench_decontam.json", doc)
    write_text(RESULTS / "bench_decontam.md", markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    main()
