"""User-facing errors: one line naming file, line/row and field. The CLI exits 2 on them."""

from __future__ import annotations

from pathlib import Path


class CoretuneError(Exception):
    """A problem with the user's input or configuration (not a bug in coretune)."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        row: int | None = None,
        field: str | None = None,
    ):
        self.path, self.line, self.row, self.field = path, line, row, field
        self.reason = message
        where = ""
        if path is not None:
            where = str(path)
            if line is not None:
                where += f":{line}"
            where += ": "
        if row is not None:
            where += f"row {row}: "
        if field is not None:
            where += f"field '{field}': "
        super().__init__(where + message)


def row_location(i: int | None, lines: list[int] | None) -> dict:
    """The `line=` (JSONL: `lines[i]`) or `row=` (1-based) keyword of a CoretuneError for the
    i-th record of a file; {} when no record is to blame."""
    if i is None:
        return {}
    return {"line": lines[i]} if lines is not None else {"row": i + 1}
