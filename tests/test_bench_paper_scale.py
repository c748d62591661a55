"""benchmarks/bench_paper_scale.py --scale tiny: the paper-scale benchmark's code path on CPU
(synthesised pool, random OPT model, every pipeline stage), and the JSON it writes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("pool", "embed", "cluster", "target", "select", "train", "evaluate")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    work = tmp_path_factory.mktemp("bench_paper_scale")
    out = work / "out.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_paper_scale.py"), "--scale", "tiny",
         "--workdir", str(work / "work"), "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), work


@pytest.mark.slow
def test_every_stage_reports_seconds_and_peak_memory(tiny):
    result, _ = tiny
    assert result["scale"] == "tiny"
    assert sorted(result["stages"]) == sorted(STAGES)  # the JSON is written with sorted keys
    for name in STAGES:
        stage = result["stages"][name]
        assert stage["seconds"] >= 0, name
        assert stage["peak_rss_mb"] > 0, name
        assert "gpu_peak_mb" in stage, name
    for name in ("synthesise_pool", "build_model"):
        assert result["setup"][name]["seconds"] >= 0
        assert result["setup"][name]["peak_rss_mb"] > 0


@pytest.mark.slow
def test_tokens_per_second_and_shapes(tiny):
    result, _ = tiny
    tokens = result["tokens"]
    for name in ("embed", "train", "evaluate"):
        assert tokens[name]["tokens"] > 0, name
        assert tokens[name]["tokens_per_s"] > 0, name
    pool = result["pool"]
    assert pool["rows"] == result["stages"]["pool"]["rows"] == result["stages"]["embed"][
        "encoded_rows"]
    # 0.5% of the pool, trained for 3 epochs, like the paper
    assert result["stages"]["select"]["selected"] == round(0.005 * pool["rows"])
    assert tokens["train"]["epochs"] == 3
    assert result["model"]["arch"]["num_hidden_layers"] == 2
    assert result["model"]["weights"].startswith("random")


@pytest.mark.slow
def test_gpu_field_says_no_gpu_on_cpu(tiny):
    result, _ = tiny
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    assert isinstance(result["gpu"], str) and result["gpu"].startswith("no GPU: ")
    assert result["host"]["device"] == "cpu"
    for name in STAGES:
        assert result["stages"][name]["gpu"].startswith("no GPU: ")


@pytest.mark.slow
def test_rerun_resumes_every_stage(tiny):
    """A second invocation on the same work folder redoes nothing and keeps the numbers."""
    first, work = tiny
    out = work / "again.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_paper_scale.py"), "--scale", "tiny",
         "--workdir", str(work / "work"), "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads(out.read_text())
    for name in STAGES:
        assert "resumed" in again["stages"][name], name
        assert again["stages"][name]["seconds"] == first["stages"][name]["seconds"]
