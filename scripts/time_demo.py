"""Time the demo as a new user meets it and put the numbers into README.md.

    python scripts/time_demo.py        # runs `bash scripts/demo.sh` in a fresh folder

The demo runs with an empty coretune cache (the default model is converted, MiniLM exported,
every prompt embedded), after the install: the seconds from start to the report, the disk its
runs and cache take, and the machine's load around it go to benchmarks/results/demo_time.json
and the README's `demo` block. A number measured on a loaded machine says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from readme_results import README, replace  # noqa: E402

from coretune.io import write_json  # noqa: E402


def disk_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def block(doc: dict) -> str:
    quiet = doc["load_before"] < 0.5 * doc["cpus"]
    return (f"On {doc['cpus']} CPU cores, after the install and with an empty cache, the demo "
            f"took **{doc['seconds'] / 60:.1f} minutes** ({doc['seconds']:.0f} s"
            + ("" if quiet else f"; the machine was busy, load average "
               f"{doc['load_before']:.1f} at the start") + f") and used "
            f"{doc['runs_mb']:.0f} MB for its runs and {doc['cache_mb']:.0f} MB of cache "
            "(the converted default model and the embeddings), measured by "
            "`python scripts/time_demo.py`.")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "CORETUNE_CACHE": f"{tmp}/cache", "CORETUNE_DEMO_DIR": f"{tmp}/runs"}
        load = os.getloadavg()[0]
        start = time.perf_counter()
        subprocess.run(["bash", str(ROOT / "scripts/demo.sh")], env=env, check=True)
        seconds = time.perf_counter() - start
        doc = {"seconds": round(seconds, 1), "cpus": os.cpu_count(), "load_before": load,
               "load_after": os.getloadavg()[0], "runs_mb": round(disk_mb(Path(tmp, "runs")), 1),
               "cache_mb": round(disk_mb(Path(tmp, "cache")), 1)}
    write_json(ROOT / "benchmarks/results/demo_time.json", doc)
    replace(README, "demo", block(doc))
    print(block(doc))


if __name__ == "__main__":
    main()
