"""Faults survived: a second run on a busy run folder, a full disk, a read-only folder, a
folder or a file in the way of an output; and outputs get the user's umask."""

from __future__ import annotations

import json
import os
import resource
import shutil
import stat
import subprocess
import sys
import time

import pytest

from coretune.errors import CoretuneError
from coretune.io import atomic_dir, atomic_path, make_dir, write_json
from coretune.run.lock import run_lock

HOLD = """
import sys, time
from coretune.run.lock import run_lock
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
        code = ("import sys\nfrom coretune.run.lock import run_lock\nfrom coretune.errors import "
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
    assert f"{tmp_path / 'out' / 'm.jsonl'}: cannot write: File too large" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert _tree(tmp_path / "out") == []


POOL = "".join(json.dumps({"uid": f"u{i}", "task": "t", "prompt": f"q {i}?", "target": "yes"})
               + "\n" for i in range(20))


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_and_folders_get_the_users_umask(tmp_path, umask):
    """As open() and mkdir do: 0666 & ~umask for files, 0777 & ~umask for folders."""
    from coretune.data.export import write_trainer_jsonl
    from coretune.data.pool import Pool

    old = os.umask(umask)
    try:
        pool = Pool.from_records([json.loads(x) for x in POOL.splitlines()])
        files = [pool.save(tmp_path / "pool.parquet"),
                 write_trainer_jsonl(pool.table, tmp_path / "sub" / "rows.jsonl")]
        write_json(tmp_path / "metrics.json", {"a": 1})
        with atomic_dir(tmp_path / "model") as tmp:
            write_json(tmp / "config.json", {})
        files += [tmp_path / "metrics.json", tmp_path / "model" / "config.json"]
        folders = [tmp_path / "sub", tmp_path / "model", make_dir(tmp_path / "a" / "b")]
    finally:
        os.umask(old)
    assert {_mode(f) for f in files} == {0o666 & ~umask}
    assert {_mode(d) for d in folders} == {0o777 & ~umask}


def test_cli_outputs_get_the_users_umask(tmp_path):
    (tmp_path / "p.jsonl").write_text(POOL)
    proc = subprocess.run(
        [sys.executable, "-m", "coretune", "pool", "build", "--from", str(tmp_path / "p.jsonl"),
         "-o", str(tmp_path / "out" / "pool.parquet")], capture_output=True, text=True,
        preexec_fn=lambda: os.umask(0o027))
    assert proc.returncode == 0, proc.stderr
    assert _mode(tmp_path / "out") == 0o750
    assert _mode(tmp_path / "out" / "pool.parquet") == 0o640


def test_library_write_errors_name_the_output(tmp_path):
    (tmp_path / "folder.json").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(CoretuneError, match="folder.json: cannot write: Is a directory"):
        write_json(tmp_path / "folder.json", {})
    with pytest.raises(CoretuneError, match=r"file/a/x.json: cannot write: Not a directory "
                                            r"\(.*file is a file\)"):
        write_json(tmp_path / "file" / "a" / "x.json", {})
    with pytest.raises(CoretuneError, match="file: cannot write: Not a directory"):
        with atomic_dir(tmp_path / "file"):
            pass
    with pytest.raises(CoretuneError, match=r"x.bin: cannot write: No space left on device "
                                            r"\(free some space"):
        with atomic_path(tmp_path / "x.bin"):
            raise OSError(28, "No space left on device")
    with pytest.raises(KeyError):  # not a write failure: left as it is
        with atomic_path(tmp_path / "y.bin"):
            raise KeyError("bug")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder.json"]


@pytest.fixture
def small_fs(tmp_path):
    """A real 1 MiB filesystem (tmpfs). Mounting needs root and a container that allows it;
    elsewhere the tests that need it are skipped."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def _one_error(proc, path, reason):
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"coretune: error: {path}: cannot write: {reason}"


def test_full_and_read_only_filesystems_are_one_line_and_leave_nothing(cli, tmp_path, small_fs):
    (tmp_path / "p.jsonl").write_text(POOL)
    out = small_fs / "pool.parquet"
    _one_error(cli("pool", "build", "--bigbench", "sample", "-o", out), out,
               "No space left on device (free some space or move the output)")
    assert _tree(small_fs) == []
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    out = small_fs / "sub" / "rows.jsonl"
    _one_error(cli("pool", "export", tmp_path / "p.jsonl", "-o", out), out,
               "Read-only file system")
    out = small_fs / "pool.parquet"
    _one_error(cli("pool", "build", "--from", tmp_path / "p.jsonl", "-o", out), out,
               "Read-only file system")
    assert _tree(small_fs) == []


def test_short_writes_without_an_errno_are_named(small_fs):
    """numpy and torch report a full disk as a short write, with no errno."""
    import numpy as np
    import torch

    def np_save(p):
        with open(p, "wb") as f:
            np.save(f, np.zeros(1 << 18))

    for write in (np_save, lambda p: torch.save({"w": torch.zeros(1 << 18)}, p)):
        with pytest.raises(CoretuneError, match="x.bin: cannot write: No space left"):
            with atomic_path(small_fs / "x.bin") as tmp:
                write(tmp)
    with pytest.raises(RuntimeError, match="not a write"):  # a bug stays a bug
        with atomic_path(small_fs / "x.bin"):
            raise RuntimeError("not a write")
    assert _tree(small_fs) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders anyway")
def test_read_only_folder_is_one_line(cli, tmp_path):
    (tmp_path / "p.jsonl").write_text(POOL)
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    try:
        out = tmp_path / "ro" / "rows.jsonl"
        _one_error(cli("pool", "export", tmp_path / "p.jsonl", "-o", out), out,
                   "Permission denied")
        assert _tree(tmp_path / "ro") == []
    finally:
        (tmp_path / "ro").chmod(0o755)


def _limit_1mb():
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


@pytest.mark.slow
def test_train_into_a_full_disk_leaves_no_model_folder(tmp_path):
    """The adapter (about 19 MB) cannot be written: one line naming the model folder, and
    neither it nor its work folder nor a temporary file is left."""
    (tmp_path / "p.jsonl").write_text(POOL)
    out = tmp_path / "out" / "m"
    proc = subprocess.run(
        [sys.executable, "-m", "coretune", "train", "--data", str(tmp_path / "p.jsonl"),
         "-o", str(out), "--lora", "--max-steps", "1", "--batch-size", "2", "--max-length",
         "32", "--quiet"], capture_output=True, text=True, preexec_fn=_limit_1mb,
        env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    # (peft's FutureWarning from transformers may come first)
    assert proc.stderr.strip().splitlines()[-1] == (
        f"coretune: error: {out}: cannot write: File too large (free some space or move the "
        "output)")
    assert _tree(tmp_path / "out") == []
