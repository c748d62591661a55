"""Write docs/config.md, the config reference, from the pydantic schema of coretune's configs.

    python scripts/config_reference.py          # rewrite docs/config.md
    python scripts/config_reference.py --check  # exit 1 if docs/config.md is stale

Every field of every section, with its type, default and description, as `coretune run`
validates them; tests/test_docs.py fails when the file is out of date.
"""

from __future__ import annotations

import re
import sys
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "config.md"

HEAD = """# Config reference

Generated from the schema by `python scripts/config_reference.py` (do not edit by hand; the
test suite fails when it is stale). A config is a YAML mapping of the sections below; `extends:
other.yaml` merges another file underneath, `coretune run CONFIG --with more.yaml` merges one
over it, and `key=value` arguments override single fields (`select.budget=1%`). Every field is
checked when the config is read: an error names the file and line, or the override, it came
from.
"""


def _type(field) -> str:
    text = str(field.annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")
    text = re.sub(r"Annotated\[(\w+), Ge\(ge=(\d+)\)\]", r"\1 ≥ \2", text)
    text = text.replace("NoneType", "None").replace("coretune.config.", "")
    bounds = [f"{sym} {getattr(m, attr)}" for m in field.metadata
              for attr, sym in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))
              if getattr(m, attr, None) is not None]
    return text + (f" ({', '.join(bounds)})" if bounds else "")


def _section(annotation) -> type[BaseModel] | None:
    """The section model a field holds (possibly as `Section | None`), or None."""
    for cand in (annotation, *typing.get_args(annotation)):
        if isinstance(cand, type) and issubclass(cand, BaseModel):
            return cand
    return None


def _default(field) -> str:
    if field.default is PydanticUndefined:
        return "required"
    if isinstance(field.default, BaseModel):
        return "(section)"
    return f"`{field.default!r}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def tables(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Markdown: the model's plain fields as one table, then each sub-section's own."""
    rows, subs = [], []
    for name, field in model.model_fields.items():
        sub = _section(field.annotation)
        if sub is not None:
            subs.append((f"{prefix}{name}", sub, field))
            continue
        rows.append(f"| `{prefix}{name}` | {_cell(_type(field))} | "
                    f"{_cell(_default(field))} | {_cell(field.description or '')} |")
    out = []
    if rows:
        out += ["| field | type | default | description |", "|---|---|---|---|", *rows, ""]
    for path, sub, field in subs:
        doc = _cell(field.description or (sub.__doc__ or "").strip())
        out += [f"## `{path}`", "", *([doc, ""] if doc else []), *tables(sub, f"{path}.")]
    return out


def reference() -> str:
    from coretune.config import RunConfig

    return "\n".join([HEAD, "## Top level", "", *tables(RunConfig)]).rstrip() + "\n"


def main() -> int:
    text = reference()
    if sys.argv[1:] == ["--check"]:
        if not OUT.is_file() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is stale: run python scripts/config_reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
