"""Stage manifests: what a stage read, how it was configured, what it wrote, how long it took
and its peak memory (`peak_rss_mb`, plus `gpu_peak_mb` on a GPU; see coretune.run.memory).

A stage's manifest is written last, atomically: it is the completion marker. A stage whose
manifest key (config slice + upstream keys + input file hashes) matches is skipped; anything
else runs again, and the stage's own resume (training checkpoints, the embedding cache) picks
up partial work.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from coretune.errors import CoretuneError
from coretune.io import make_dir, read_json, sha256_file, write_json, write_text
from coretune.run.memory import peak_memory

MANIFEST = "manifest.json"
_HASH_LIMIT = 256 << 20  # larger files (model weights) are recorded by size, not hashed


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("coretune", "torch", "transformers", "sentence-transformers", "faiss-cpu",
                "numpy", "pyarrow", "peft"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def describe_outputs(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.name == MANIFEST or p.name.startswith("."):
            continue
        rel = p.relative_to(folder).as_posix()
        size = p.stat().st_size
        out[rel] = sha256_file(p) if size <= _HASH_LIMIT else f"size:{size}"
    return out


def stage_key(name: str, config: Any, upstream: dict[str, str], files: dict[str, Path]) -> str:
    doc = {
        "stage": name,
        "config": config,
        "upstream": upstream,
        "files": {k: sha256_file(v) for k, v in sorted(files.items())},
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Stage:
    """One step of a run: `fn(folder)` writes its artifacts into `folder`."""

    name: str
    folder: Path
    config: Any
    fn: Callable[[Path], dict | None]
    upstream: dict[str, str] = field(default_factory=dict)  # name -> key of stages it reads
    files: dict[str, Path] = field(default_factory=dict)    # outside inputs, hashed
    root: Path | None = None  # the run (or shared) folder `folder` must lie inside

    def _check_inside(self) -> None:
        """A stage writes, and removes, only its own folder inside its run."""
        if self.root is not None and not self.folder.resolve().is_relative_to(
                self.root.resolve()):
            raise CoretuneError(f"stage folder {self.folder} is outside its run folder "
                                f"{self.root}; refusing to write or remove it",
                                path=self.folder)

    def key(self) -> str:
        return stage_key(self.name, self.config, self.upstream, self.files)

    def done(self) -> dict | None:
        """The manifest if this stage already finished with the same key, else None."""
        path = self.folder / MANIFEST
        if not path.is_file():
            return None
        try:
            manifest = read_json(path)
        except (OSError, ValueError):  # truncated or corrupted manifest: run the stage again
            return None
        if not isinstance(manifest, dict) or manifest.get("key") != self.key():
            return None
        # an output changed since it was recorded (truncated, corrupted): not done
        return manifest if describe_outputs(self.folder) == manifest.get("outputs") else None

    def run(self, log: Callable[[str], None] = print) -> dict:
        key = self.key()
        finished = self.done()
        if finished is not None:
            log(f"[{self.name}] up to date, skipped ({self.folder})")
            return finished
        self._check_inside()
        marker = self.folder / ".key"
        resuming = marker.is_file() and marker.read_text() == key
        if self.folder.exists() and not resuming:  # another config's work: start clean
            shutil.rmtree(self.folder)
        make_dir(self.folder)
        write_text(marker, key)
        log(f"[{self.name}] {'resuming' if resuming else 'running'} -> {self.folder}")
        start = time.time()
        with peak_memory() as peak:
            extra = self.fn(self.folder) or {}
        manifest = {
            "stage": self.name,
            "key": key,
            "config": self.config,
            "upstream": self.upstream,
            "inputs": {k: str(v) for k, v in self.files.items()},
            "input_sha256": {k: sha256_file(v) for k, v in self.files.items()},
            "outputs": describe_outputs(self.folder),
            "versions": versions(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
            "seconds": round(time.time() - start, 3),
            **peak,
            **extra,
        }
        write_json(self.folder / MANIFEST, manifest)
        log(f"[{self.name}] done in {manifest['seconds']:.1f}s, peak RSS "
            f"{manifest['peak_rss_mb'] / 1024:.2f} GiB")
        return manifest
