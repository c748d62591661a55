"""`coretune select` on the full default pool, cold cache, 2 CPU cores (issue 11, item 4).

Times the one-line command a laptop user runs,

    coretune select --pool <default pool> --target nli --budget 0.5% -o OUT --quiet

with an empty embedding cache, as a child process (wall time and peak RSS of the child);
`--encoder` and `--batch-size` are passed on to the command when given (e.g. `--encoder
minilm`, the float32 encoder; without it the command's default encoder, minilm-int8).
"Today's time" in the issue is the same command when it embedded with MiniLM at 256 tokens,
batch 64. It is not run again (two hours here); it is estimated from the rates of that
encoder and of the one timed, measured in this run on the same sample of pool prompts, with
the same thread count:

    estimated_256 = measured + rows * (1 / rate_256 - 1 / rate_timed)

The goal is measured <= 0.25 * estimated_256. Ratios only: the machine is shared.

    HF_HUB_OFFLINE=1 python benchmarks/bench_select_full.py [--sample 300] [--encoder E]
writes benchmarks/results/bench_select_full-E.json for encoder E (bench_select_full.json for
minilm).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from coretune.io import read_json, write_json

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "bench_select_full.json"


def coretune(*args: str, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "coretune", *args], check=True, env=env)
    return time.perf_counter() - start


def rate(spec: str, max_tokens: int, batch_size: int, texts: list[str]) -> float:
    from coretune.embed import make_encoder

    enc = make_encoder(spec, max_tokens=max_tokens, device="cpu")
    enc.encode(texts[:32], batch_size)  # warm-up
    start = time.perf_counter()
    enc.encode(texts, batch_size)
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample", type=int, default=300, help="prompts for the encoder rates")
    ap.add_argument("--encoder", help="passed on; default: the command's own default")
    ap.add_argument("--batch-size", type=int, help="passed on; default: the command's own")
    args = ap.parse_args()
    from coretune.config import EmbedConfig

    default = EmbedConfig()
    encoder, batch_size = args.encoder or default.encoder, args.batch_size or default.batch_size
    timed = (*(("--encoder", encoder) if args.encoder else ()),
             *(("--batch-size", str(batch_size)) if args.batch_size else ()))
    out = OUT if encoder == "minilm" else OUT.with_stem(f"{OUT.stem}-{encoder}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pool_s = coretune("pool", "build", "-o", str(tmp / "pool.parquet"), env=env)
        import numpy as np

        from coretune.data.pool import load_pool

        pool = load_pool(tmp / "pool.parquet")
        rng = np.random.default_rng(0)
        texts = [pool.prompts[int(i)] for i in rng.choice(len(pool), args.sample, False)]
        rates = {"minilm-256": rate("minilm", 256, 64, texts),
                 "timed": rate(encoder, 128, batch_size, texts)}
        load_start = os.getloadavg()
        select_s = coretune("select", "--pool", str(tmp / "pool.parquet"), "--target", "nli",
                            "--budget", "0.5%", "-o", str(tmp / "subset.parquet"), "--quiet",
                            "--cache-dir", str(tmp / "cache"), *timed, env=env)
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        quality = read_json(tmp / "subset.quality.json")
        rows = len(pool)
    estimated = select_s + rows * (1 / rates["minilm-256"] - 1 / rates["timed"])
    res = {
        "command": "coretune select --pool <default pool> --target nli --budget 0.5% --quiet"
                   f"{''.join(' ' + a for a in timed)} (empty embedding cache)",
        "encoder": encoder, "batch_size": batch_size,
        "rows": rows, "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "pool_build_seconds": round(pool_s, 1), "select_seconds": round(select_s, 1),
        "peak_rss_child_gb": round(peak_gb, 2),
        "load_average_at_start": [round(x, 2) for x in load_start],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "rate_sample": args.sample,
        "prompts_per_s": {"minilm-256-b64": round(rates["minilm-256"], 2),
                          f"{encoder}-128-b{batch_size}": round(rates["timed"], 2)},
        "estimated_seconds_at_256_tokens": round(estimated, 1),
        "ratio_to_256": round(select_s / estimated, 3),
        "goal_ratio": 0.25, "goal_met": bool(select_s <= 0.25 * estimated),
        "quality": quality,
    }
    write_json(out, res)
    print({k: v for k, v in res.items() if k != "quality"})


if __name__ == "__main__":
    main()
