"""One `coretune run` per run folder at a time.

An exclusive `flock` on `<run>/.lock`, which holds the holder's pid. The kernel drops the lock
when the holder exits, however it exits (kill -9 included), so a stale lock never blocks a
re-run; a second run while the first is alive fails at once, before writing anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from coretune.errors import CoretuneError
from coretune.io import WRITE_ERRORS, cannot_write, make_dir

LOCK_NAME = ".lock"


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold `run_dir`'s lock for the block; CoretuneError naming the holder's pid if taken."""
    path = make_dir(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        if e.errno not in WRITE_ERRORS:
            raise
        raise cannot_write(path, e.errno) from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise CoretuneError(f"another coretune run (pid {holder}) is using this run "
                                "folder; wait for it or use another --runs-dir",
                                path=run_dir) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the flock
