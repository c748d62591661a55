"""`coretune run`: configs, stage skipping, and a real run killed mid-training that resumes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

from coretune.config import load_config
from coretune.errors import CoretuneError

TINY = """
name: tiny
seeds: [0]
pool: {bigbench: sample, templates: "first:1", max_rows: 400}
embed: {max_tokens: 64}
cluster: {k: 6}
select: {method: kcenter, budget: "24"}
train: {max_steps: 8, batch_size: 3, max_length: 96, save_every: 1}
evaluate: {max_examples: 4, max_templates: 1, tasks: [rte, cb]}
"""


def test_every_shipped_config_validates():
    names = set()
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        if path.name.startswith("_") or path.name == "cpu.yaml":
            continue
        cfg = load_config(path, extra=[ROOT / "configs/cpu.yaml"])
        assert cfg.reproduces, path
        names.add(cfg.name)
    assert {"vanilla", "p3_full", "fixed_instruction_10", "nli_related_5",
            "nli_coreset_0_5"} <= names


def test_overrides_and_errors(tmp_path):
    cfg = load_config(ROOT / "configs/paper/nli_coreset_0_5.yaml",
                      ["select.budget=2%", "train.lr=0.001", "evaluate.max_examples="])
    assert (cfg.select.budget, cfg.train.lr, cfg.evaluate.max_examples) == ("2%", 0.001, None)
    assert cfg.pool.bigbench == "full" and cfg.seeds == [0, 1, 2]  # from _base.yaml
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nselect:\n  method: best\n")
    with pytest.raises(CoretuneError, match=r"bad.yaml:3: field 'select.method'"):
        load_config(bad)
    with pytest.raises(CoretuneError, match="field 'train.nope'"):
        load_config(ROOT / "configs/demo/coreset.yaml", ["train.nope=1"])


def test_cli_bad_config_exits_2(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nselect: {budget: 1%, method: kcenter, oops: 1}\n")
    proc = cli("run", bad, "--runs-dir", tmp_path / "runs")
    assert proc.returncode == 2 and "field 'select.oops'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def _run(cfg, runs):
    return subprocess.Popen(
        [sys.executable, "-m", "coretune", "run", str(cfg), "--runs-dir", str(runs), "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, start_new_session=True)


@pytest.mark.slow
def test_killed_run_resumes_with_the_same_selection(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    runs = tmp_path / "runs"
    proc = _run(cfg, runs)
    checkpoint = runs / "tiny/seed-0/train/model.partial/checkpoint"
    deadline = time.time() + 600
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert proc.poll() is None, proc.stdout.read()
    os.killpg(proc.pid, signal.SIGKILL)  # mid-training, after at least one checkpoint
    proc.wait()
    selection = runs / "tiny/seed-0/select/subset.selection.parquet"
    before = selection.read_bytes()
    assert not (runs / "tiny/seed-0/train/manifest.json").exists()

    again = _run(cfg, runs)
    out, _ = again.communicate(timeout=900)
    assert again.returncode == 0, out
    for stage in ("pool", "embed", "cluster", "target", "select"):
        assert f"[{stage}] up to date, skipped" in out
    assert "[train] resuming" in out
    assert selection.read_bytes() == before
    assert (runs / "tiny/seed-0/evaluate/metrics.json").is_file()
    page = (runs / "tiny/report.html").read_text()
    # run facts and selection quality read as tables, not Python dict literals
    assert "Selection quality" in page and "{'" not in page and "peak memory" in page
    assert "Accuracy vs budget" not in page  # one budget is not a curve
    # a third run has nothing left to do
    third = _run(cfg, runs)
    out3, _ = third.communicate(timeout=600)
    assert third.returncode == 0 and "running" not in out3 and "resuming" not in out3
    log = (runs / "tiny/seed-0/train/model/train_log.jsonl").read_text().splitlines()
    assert len(log) == 8  # every step logged once across the kill


def test_table_needs_runs(cli, tmp_path):
    proc = cli("table", tmp_path)
    assert proc.returncode == 2 and "no runs found" in proc.stderr
    assert Path(tmp_path).is_dir()
