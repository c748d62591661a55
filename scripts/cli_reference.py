"""Write the generated part of docs/cli.md: `coretune --help` and every command's --help.

    python scripts/cli_reference.py          # rewrite the part between the cli markers
    python scripts/cli_reference.py --check  # exit 1 if docs/cli.md is stale

Each text is what the command prints, in click's plain formatting at a fixed width (not the
terminal's), so the file is the same on every machine; tests/test_docs.py fails when it is out
of date. The prose outside the markers is written by hand and left alone.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from pathlib import Path

# Before typer is imported: plain click help (no boxes or colours), at one width.
os.environ["TYPER_USE_RICH"] = "0"
os.environ["COLUMNS"] = "80"

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "cli.md"
MARKERS = re.compile(r"(<!-- cli:start[^>]*-->\n).*?(<!-- cli:end -->)", re.S)


def command_paths() -> list[list[str]]:
    """Every command and group under `coretune`, in the order `--help` lists them."""
    import typer

    from coretune.cli import app

    out: list[list[str]] = []

    def walk(cmd, path: list[str]) -> None:
        out.append(path)
        for name, sub in getattr(cmd, "commands", {}).items():
            if not sub.hidden:
                walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return out


def help_text(path: list[str]) -> str:
    from coretune.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
        main([*path, "--help"])
    return buf.getvalue().rstrip() + "\n"


def generated() -> str:
    parts = []
    for path in command_paths():
        name = " ".join(["coretune", *path])
        parts += [f"### `{name}`", "", "```text", help_text(path).rstrip(), "```", ""]
    return "\n".join(parts)


def render(text: str) -> str:
    new, n = MARKERS.subn(lambda m: m.group(1) + generated() + m.group(2), text)
    if n != 1:
        sys.exit(f"{OUT} needs one pair of <!-- cli:start --> / <!-- cli:end --> markers")
    return new


def main() -> int:
    old = OUT.read_text(encoding="utf-8")
    text = render(old)
    if sys.argv[1:] == ["--check"]:
        if text != old:
            print(f"{OUT} is stale: run python scripts/cli_reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
