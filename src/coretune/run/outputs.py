"""The one rule for what a command writes, checked before any work: an output is never one
of the command's inputs, never inside a folder (or matched by a glob) it reads as a pool
source, never a folder where a file goes, and never an existing file unless the user asked
for it (`--overwrite`).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from pathlib import Path

from coretune.errors import CoretuneError

GLOB_CHARS = "*?["


def _same(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)  # hard links and symlinks included
    return a.resolve() == b.resolve()


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


class Inputs:
    """Everything a command reads: plain files, pool sources (a file, every shard of a folder
    or glob, a datasets folder's files) and the folders and patterns they came from."""

    def __init__(self) -> None:
        self.files: list[tuple[Path, str]] = []  # (path, what it is, for the message)
        self.folders: list[Path] = []
        self.patterns: list[str] = []

    def file(self, path: str | Path | None, what: str = "input") -> Inputs:
        if path is not None and str(path):
            self.files.append((Path(path), what))
        return self

    def eval_sets(self, datasets: Iterable) -> Inputs:
        """The data and template files of evaluation sets (coretune.data.sources.Dataset)."""
        for ds in datasets:
            self.file(ds.path).file(ds.templates)
        return self

    def pool(self, source: str | Path | None) -> Inputs:
        """A pool source as `coretune.data.shards.list_shards` reads it (its errors, e.g. a
        glob that matches nothing, are the same the command would give reading it)."""
        from coretune.data.shards import list_shards

        text = str(source or "")
        if not text or text.startswith("hf:"):
            return self
        self.files += [(s.path, "pool source") for s in list_shards(text) if s.path is not None]
        if any(c in text for c in GLOB_CHARS):
            self.patterns.append(text)
        elif Path(text).is_dir():
            self.folders.append(Path(text))
        return self


def check_outputs(outputs: Iterable[str | Path], inputs: Inputs | None = None, *,
                  overwrite: bool = False) -> None:
    """Refuse, in one line naming the output, any file output that breaks the module's rule."""
    inputs = inputs or Inputs()
    for out in map(Path, outputs):
        for src, what in inputs.files:
            if _same(out, src):
                raise CoretuneError(f"output would overwrite the {what} {src}", path=out)
        for folder in inputs.folders:
            if _inside(out, folder):
                raise CoretuneError(f"output is inside the pool source folder {folder} (it "
                                    "would be read as a shard next time); write it elsewhere",
                                    path=out)
        for pattern in inputs.patterns:
            if fnmatch.fnmatch(str(out), pattern) or fnmatch.fnmatch(str(out.resolve()),
                                                                     pattern):
                raise CoretuneError(f"output matches the pool source pattern '{pattern}'",
                                    path=out)
        if out.is_dir():
            raise CoretuneError("cannot write: Is a directory (give a file path)", path=out)
        if out.exists() and not overwrite:
            raise CoretuneError("output exists; pass --overwrite to replace it", path=out)


def check_output_folder(folder: str | Path, inputs: Inputs | None = None) -> None:
    """A folder a command writes into (a model, an evaluation): no input may lie inside it,
    and it may not be an existing file."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CoretuneError("output exists and is not a folder", path=folder)
    for src, _ in (inputs or Inputs()).files:
        if _inside(src, folder):
            raise CoretuneError(f"the input {src} is inside the output folder; write the "
                                "output elsewhere", path=folder)


def first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (None: it all exists): what a
    command that fails on bad input removes again, having created it."""
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path
