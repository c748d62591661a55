"""Split a file into parts under a size limit, and join them back, checked by sha256.

    python scripts/parts.py split FILE FOLDER [--max-bytes N]   # FOLDER/NAME.part-000, ...
    python scripts/parts.py join FOLDER/NAME.parts.json OUT      # verified, written whole

For files larger than what one upload may carry (the lent GPU machine takes 64 MiB a call,
the working tree included): each part goes in its own call and `join` reassembles them on
the other side. `NAME.parts.json` records the size and sha256 of every part and of the
whole file; `join` checks each part as it copies it and the whole before it renames the
result into place, so OUT exists only complete and verified. Standard library only: it runs
where nothing else is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

CHUNK = 1 << 20
DEFAULT_MAX = 30 << 20  # 30 MiB: a part plus a ~30 MB working tree fits one 64 MiB upload


class PartsError(Exception):
    """A part is missing, of the wrong size or content, or the whole does not match."""


def split(path: str | Path, folder: str | Path, max_bytes: int = DEFAULT_MAX) -> Path:
    """`path` as parts of at most `max_bytes` in `folder`, and their manifest; returns the
    manifest's path."""
    path, folder = Path(path), Path(folder)
    if max_bytes < 1:
        raise ValueError("max_bytes must be at least 1")
    folder.mkdir(parents=True, exist_ok=True)
    whole, parts = hashlib.sha256(), []
    with path.open("rb") as src:
        while True:
            name = f"{path.name}.part-{len(parts):03d}"
            h, n = hashlib.sha256(), 0
            with (folder / name).open("wb") as dst:
                while n < max_bytes and (block := src.read(min(CHUNK, max_bytes - n))):
                    h.update(block)
                    whole.update(block)
                    dst.write(block)
                    n += len(block)
            if n == 0 and parts:  # the file ended on a part boundary
                (folder / name).unlink()
                break
            parts.append({"name": name, "bytes": n, "sha256": h.hexdigest()})
            if n < max_bytes:
                break
    manifest = folder / f"{path.name}.parts.json"
    manifest.write_text(json.dumps({
        "file": path.name, "bytes": sum(p["bytes"] for p in parts),
        "sha256": whole.hexdigest(), "max_bytes": max_bytes, "parts": parts}, indent=1))
    return manifest


def join(manifest: str | Path, out: str | Path) -> Path:
    """The file of `manifest`'s parts (in the manifest's folder) at `out`, every part and the
    whole checked against their sha256; nothing is left at `out` when a check fails."""
    manifest, out = Path(manifest), Path(out)
    spec = json.loads(manifest.read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        whole = hashlib.sha256()
        with os.fdopen(fd, "wb") as dst:
            for part in spec["parts"]:
                src = manifest.parent / part["name"]
                if not src.is_file():
                    raise PartsError(f"{src}: part missing")
                h = hashlib.sha256()
                with src.open("rb") as f:
                    while block := f.read(CHUNK):
                        h.update(block)
                        whole.update(block)
                        dst.write(block)
                if src.stat().st_size != part["bytes"] or h.hexdigest() != part["sha256"]:
                    raise PartsError(f"{src}: sha256 or size does not match the manifest")
        if whole.hexdigest() != spec["sha256"]:
            raise PartsError(f"{out}: the joined file's sha256 does not match the manifest")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("split", help="FILE into parts in FOLDER")
    s.add_argument("file", type=Path)
    s.add_argument("folder", type=Path)
    s.add_argument("--max-bytes", type=int, default=DEFAULT_MAX)
    j = sub.add_parser("join", help="the parts of MANIFEST into OUT, verified")
    j.add_argument("manifest", type=Path)
    j.add_argument("out", type=Path)
    args = ap.parse_args(argv)
    try:
        if args.command == "split":
            m = split(args.file, args.folder, args.max_bytes)
            spec = json.loads(m.read_text())
            print(f"{m}: {len(spec['parts'])} parts, sha256 {spec['sha256']}")
        else:
            print(f"{join(args.manifest, args.out)}: verified")
    except (PartsError, OSError, ValueError) as e:
        print(f"parts: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
