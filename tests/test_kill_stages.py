"""kill -9 during each stage of `coretune run`, then re-run: the run finishes with a
byte-identical selection and the same metrics as an uninterrupted run (slow, tiny data)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TINY = """
name: tiny
seeds: [0]
pool: {bigbench: sample, templates: "first:1", max_rows: 300}
embed: {max_tokens: 48}
cluster: {k: 5}
select: {method: kcenter, budget: "16"}
train: {max_steps: 4, batch_size: 2, max_length: 64, save_every: 1}
evaluate: {max_examples: 3, max_templates: 1, tasks: [rte, cb]}
"""
STAGES = ("pool", "embed", "cluster", "target", "select", "train", "evaluate", "report")


def _env(cache: Path) -> dict:
    cache.mkdir(parents=True, exist_ok=True)
    shared_models = Path(os.environ.get("CORETUNE_CACHE", Path.home() / ".cache/coretune"))
    if (shared_models / "models").is_dir() and not (cache / "models").exists():
        (cache / "models").symlink_to(shared_models / "models")  # no GGUF re-conversion
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
            "CORETUNE_CACHE": str(cache)}  # a fresh embedding cache per case


def _start(cfg: Path, runs: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "coretune", "run", str(cfg), "--runs-dir", str(runs), "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True)


def _outcome(run: Path) -> tuple[bytes, dict]:
    m = json.loads((run / "seed-0/evaluate/metrics.json").read_text())
    scores = {"avg": m["avg"], **{t: v["mean"] for t, v in m["tasks"].items()}}
    return (run / "seed-0/select/subset.selection.parquet").read_bytes(), scores


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    (tmp / "tiny.yaml").write_text(TINY)
    proc = _start(tmp / "tiny.yaml", tmp / "runs", _env(tmp / "cache"))
    out, _ = proc.communicate(timeout=1800)
    assert proc.returncode == 0, out
    return _outcome(tmp / "runs/tiny")


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_kill_9_during_stage_then_rerun_is_identical(stage, tmp_path, reference):
    (tmp_path / "tiny.yaml").write_text(TINY)
    env, runs = _env(tmp_path / "cache"), tmp_path / "runs"
    proc = _start(tmp_path / "tiny.yaml", runs, env)
    # A stage logs "[name] running" as it starts; the report follows "[evaluate] done".
    mark = "[evaluate] done" if stage == "report" else f"[{stage}] running"
    seen = []
    deadline = time.time() + 1800
    for line in proc.stdout:
        seen.append(line)
        if mark in line or time.time() > deadline:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert any(mark in line for line in seen), "".join(seen)
    folder = {"pool": "shared", "embed": "shared", "cluster": "shared",
              "target": "shared"}.get(stage, "seed-0")
    if stage != "report":  # killed inside the stage: it has not finished
        assert not (runs / "tiny" / folder / stage / "manifest.json").exists()
    else:
        assert not (runs / "tiny/report.html").exists()
    again = _start(tmp_path / "tiny.yaml", runs, env)
    out, _ = again.communicate(timeout=1800)
    assert again.returncode == 0, out
    assert _outcome(runs / "tiny") == reference
    assert (runs / "tiny/report.html").is_file()
