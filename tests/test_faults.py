"""Faults survived: a second run on a busy run folder, a full disk."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

from coretune.lock import run_lock

HOLD = """
import sys, time
from coretune.lock import run_lock
with run_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_second_run_on_a_busy_folder_exits_2_naming_folder_and_pid(cli, tmp_path):
    (tmp_path / "c.yaml").write_text("name: busy\nseeds: [0]\npool: {bigbench: sample}\n")
    run_dir = tmp_path / "runs" / "busy"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = _tree(run_dir)
        proc = cli("run", tmp_path / "c.yaml", "--runs-dir", tmp_path / "runs")
        assert proc.returncode == 2, proc.stderr
        err = proc.stderr.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        assert str(run_dir) in err and f"pid {holder.pid}" in err
        assert _tree(run_dir) == before == [".lock"]  # nothing written by the second run
    finally:
        holder.kill()  # SIGKILL: the kernel releases the flock with the process
        holder.wait()
    # The lock of a killed holder never goes stale.
    with run_lock(run_dir) as path:
        assert path.read_text().strip() == str(os.getpid())


def test_lock_is_exclusive_within_and_across_processes(tmp_path):
    with run_lock(tmp_path / "r"):
        code = ("import sys\nfrom coretune.lock import run_lock\nfrom coretune.errors import "
                "CoretuneError\ntry:\n    run_lock(sys.argv[1]).__enter__()\nexcept CoretuneError"
                " as e:\n    print(e)")
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r")],
                             capture_output=True, text=True, check=True).stdout
        assert f"pid {os.getpid()}" in out
    time.sleep(0)
    with run_lock(tmp_path / "r"):  # released on exit
        pass


def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


def test_full_disk_is_one_clear_line_and_leaves_no_partial_output(tmp_path):
    """A file-size limit (RLIMIT_FSIZE) stands in for a full disk: writes fail with EFBIG."""
    out = tmp_path / "out" / "pool.parquet"
    proc = subprocess.run(
        [sys.executable, "-m", "coretune", "pool", "build", "--bigbench", "sample",
         "-o", str(out)], capture_output=True, text=True, preexec_fn=_limit_file_size,
        env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "cannot write" in err and "File too large" in err
    assert _tree(tmp_path / "out") == []  # no pool, no temporary file


def test_full_disk_export_leaves_nothing(tmp_path):
    rows = "".join(f'{{"uid": "u{i}", "task": "t", "prompt": "{"x" * 500}", "target": "y"}}\n'
                   for i in range(1000))
    (tmp_path / "p.jsonl").write_text(rows)
    proc = subprocess.run(
        [sys.executable, "-m", "coretune", "pool", "export", str(tmp_path / "p.jsonl"),
         "--format", "messages", "-o", str(tmp_path / "out" / "m.jsonl")],
        capture_output=True, text=True, preexec_fn=_limit_file_size)
    assert proc.returncode == 2 and "cannot write" in proc.stderr, proc.stderr
    assert _tree(tmp_path / "out") == []
