"""Atomic file writes and hashing: a crash never leaves a half file that looks whole.

Files and folders are created with the user's umask (as `open()` and `mkdir` do), and a write
the operating system refuses (full disk, read-only folder, no permission, a folder or a file
in the way) is a CoretuneError naming the output: one line, nothing half-written left.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import resource
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from coretune.errors import CoretuneError

NO_SPACE = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})
WRITE_ERRORS = NO_SPACE | {errno.EROFS, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR}


def cannot_write(path: str | Path, code: int, detail: str = "") -> CoretuneError:
    reason = os.strerror(code) + detail
    if code in NO_SPACE:
        reason += " (free some space or move the output)"
    return CoretuneError(f"cannot write: {reason}", path=path)


def make_dir(folder: str | Path, *, output: str | Path | None = None) -> Path:
    """`mkdir -p folder`; a refusal is a CoretuneError naming `output` (default: `folder`)."""
    folder = Path(folder)
    output = folder if output is None else output
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (folder, *folder.parents)
                        if p.exists() and not p.is_dir()), None)
        raise cannot_write(output, errno.ENOTDIR,
                           f" ({blocker} is a file)" if blocker else "") from None
    except OSError as e:
        if e.errno not in WRITE_ERRORS:
            raise
        raise cannot_write(output, e.errno) from e
    return folder


def _create_temp(path: Path, where: Path, make: Callable[[Path], None]) -> Path:
    """A new, uniquely named temporary entry in `where` for `path`, made by `make`."""
    for _ in range(100):
        tmp = where / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            make(tmp)
            return tmp
        except FileExistsError:
            continue
        except OSError as e:
            if e.errno not in WRITE_ERRORS:
                raise
            raise cannot_write(path, e.errno) from e
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(where))


def _new_file(p: Path) -> None:
    os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))


def _new_folder(p: Path) -> None:
    os.mkdir(p, 0o777)


def _probe(tmp: Path) -> int | None:
    """Why writing `tmp` (a temporary file or folder) fails right now: a file of it at the
    file-size limit, or a new write refused (full disk, read-only); None when neither. For
    libraries whose failed writes carry no errno."""
    files = [p for p in tmp.rglob("*") if p.is_file()] if tmp.is_dir() else [tmp]
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and any(p.stat().st_size >= limit for p in files):
        return errno.EFBIG
    probe = (tmp if tmp.is_dir() else tmp.parent) / f".probe.{secrets.token_hex(4)}.tmp"
    try:
        with open(probe, "wb") as f:
            f.write(bytes(1 << 20))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        return e.errno if e.errno in WRITE_ERRORS else None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return None


def _write_errno(e: Exception, tmp: Path) -> int | None:
    """The errno behind `e` if it is a failed write into `tmp` (a temporary file or folder)."""
    if isinstance(e, OSError) and e.errno in WRITE_ERRORS:
        mine = e.filename is None or Path(os.fsdecode(e.filename)).is_relative_to(tmp)
        return e.errno if mine else None  # another file (an input) failed: not ours to explain
    # safetensors and pyarrow put the errno in the message; numpy and torch report a short
    # write without it
    if isinstance(e, OSError | RuntimeError) or type(e).__name__ == "SafetensorError":
        code = re.search(r"(?:os error|errno) (\d+)", str(e), re.IGNORECASE)
        if code and int(code[1]) in WRITE_ERRORS:
            return int(code[1])
        return _probe(tmp)
    return None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    if path.is_dir():
        raise cannot_write(path, errno.EISDIR)
    make_dir(path.parent, output=path)
    tmp = _create_temp(path, path.parent, _new_file)
    try:
        yield tmp
        os.replace(tmp, path)
    except CoretuneError:
        raise
    except Exception as e:
        code = _write_errno(e, tmp)
        if code is None:
            raise
        raise cannot_write(path, code) from e
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_dir(path: str | Path, work: str | Path | None = None) -> Iterator[Path]:
    """Yield a new temporary folder (in `work`, default next to `path`); if the block succeeds
    its files are flushed to disk and it takes the place of `path`. A folder already at `path`
    is replaced: it waits at `.<name>.old` until the new one is in place, then goes."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise cannot_write(path, errno.ENOTDIR, " (a file is in the way)")
    make_dir(path.parent, output=path)
    tmp = _create_temp(path, make_dir(work, output=path) if work else path.parent, _new_folder)
    try:
        yield tmp
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                _fsync(p)
        _fsync(tmp)
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            os.rename(path, old)
        os.rename(tmp, path)
        _fsync(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    except CoretuneError as e:  # a file inside: name it where it was going
        if e.path is None or not Path(e.path).is_relative_to(tmp):
            raise
        raise CoretuneError(e.reason, path=path / Path(e.path).relative_to(tmp), line=e.line,
                            row=e.row, field=e.field) from e
    except Exception as e:
        code = _write_errno(e, tmp)
        if code is None:
            raise
        raise cannot_write(path, code) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_jsonl(path: str | Path) -> tuple[list[dict], list[int]]:
    """JSON objects of a JSONL file and their line numbers; blank lines are skipped, and so is
    a byte-order mark starting a line (files joined with `cat` keep one per file)."""
    records, lines = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, text in enumerate(f, start=1):
            text = text.removeprefix("\ufeff")
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise CoretuneError(f"malformed JSON ({e.msg})", path=path, line=lineno) from e
            if not isinstance(obj, dict):
                raise CoretuneError("each line must be a JSON object", path=path, line=lineno)
            records.append(obj)
            lines.append(lineno)
    return records, lines


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)
