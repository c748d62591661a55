"""Chat rows: a pool row may hold a conversation, `messages`, in place of a prompt and target.

A conversation is a list of turns `{"role", "content"}`; ShareGPT's `{"from", "value"}` is
read too (`human` -> user, `gpt` -> assistant). Roles are `system` (first turn only), `user`
and `assistant`; tool turns are refused, since their calls and results sit in fields a pool
does not keep, and so is any other key that holds a value (null ones are ignored). Every
content is non-blank text. The last turn is the assistant's: it is the row's target; the
turns before it, with at least one user turn among them, are its prompt.

The pool keeps the turns (column `messages`, type MESSAGES) and fills `prompt` and `target` as
text, so that embedding, clustering, selection and reports read a chat row like any other.
`render_prompt` is that text: one line per prompt turn, `System: ...`, `User: ...`,
`Assistant: ...`, then a last line `Assistant:`. A row that gives a prompt or target beside
its messages must give exactly these (as every pool coretune writes does).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from coretune.errors import CoretuneError
from coretune.errors import row_location as _where

MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}
SHAREGPT = {"human": "user", "gpt": "assistant"}  # `from` values; the roles themselves too


def check_turns(value: Any, **where) -> list[dict[str, str]]:
    """One row's messages as `[{"role", "content"}, ...]`, or a CoretuneError naming `where`
    (path and line or row) and the field."""
    def bad(reason: str) -> CoretuneError:
        return CoretuneError(reason, **where, field="messages")

    if not isinstance(value, list):
        raise bad(f"must be a list of {{role, content}} turns, got {_kind(value)}")
    if not value:
        raise bad("no turns")
    turns = []
    for n, turn in enumerate(value, start=1):
        if not isinstance(turn, dict):
            raise bad(f"turn {n} is not an object {{role, content}} (got {_kind(turn)})")
        sharegpt = turn.get("role") is None and turn.get("content") is None
        keys = ("from", "value") if sharegpt else ("role", "content")
        extra = next((k for k, v in turn.items() if v is not None and k not in keys), None)
        if extra is not None:
            raise bad(f"turn {n} has '{extra}' besides {keys[0]} and {keys[1]}, and a pool "
                      "keeps only those")
        role, content = turn.get(keys[0]), turn.get(keys[1])
        if not isinstance(role, str):
            raise bad(f"turn {n} has no {keys[0]}")
        role = SHAREGPT.get(role, role) if sharegpt else role
        if role not in LABELS:
            raise bad(f"turn {n}: unknown role '{role}' (system, user or assistant)")
        if role == "system" and n > 1:
            raise bad(f"turn {n}: a system turn can only be the first")
        if not isinstance(content, str):
            raise bad(f"turn {n}: {keys[1]} must be text, got {_kind(content)}")
        if not content.strip():
            raise bad(f"turn {n}: empty {keys[1]}")
        turns.append({"role": role, "content": content})
    if not any(t["role"] == "assistant" for t in turns):
        raise bad("no assistant turn: the last turn, the assistant's reply, is the target")
    if turns[-1]["role"] != "assistant":
        raise bad(f"the last turn is the {turns[-1]['role']}'s; a conversation must end with "
                  "the assistant's reply (the target)")
    if not any(t["role"] == "user" for t in turns):
        raise bad("no user turn before the assistant's reply")
    return turns


def render_prompt(turns: list[dict[str, str]]) -> str:
    """The plain-text prompt of a conversation (see the module docstring)."""
    lines = [f"{LABELS[t['role']]}: {t['content']}" for t in turns[:-1]]
    return "\n".join([*lines, "Assistant:"])


def with_chat_columns(table: pa.Table, path, line_of: list[int] | None) -> pa.Table:
    """`table` with its `messages` checked and typed MESSAGES, and the prompt and target of
    each chat row made from them; a row without messages (null) keeps its own."""
    turns = [None if v is None else check_turns(v, path=path, **_where(i, line_of))
             for i, v in enumerate(table.column("messages").to_pylist())]
    table = table.set_column(table.column_names.index("messages"), "messages",
                             pa.array(turns, MESSAGES))
    made = {"prompt": [None if t is None else render_prompt(t) for t in turns],
            "target": [None if t is None else t[-1]["content"] for t in turns]}
    for name, values in made.items():
        ours = pa.array(values, pa.string())
        if name not in table.column_names:
            table = table.append_column(name, ours)
            continue
        given = table.column(name)
        if pa.types.is_null(given.type):
            given = given.cast(pa.string())
        elif not (pa.types.is_string(given.type) or pa.types.is_large_string(given.type)):
            continue  # not text: refused by the pool's own check of the column
        given = given.cast(pa.string()).combine_chunks()
        bad = pc.index(pc.fill_null(pc.not_equal(given, ours), False), True).as_py()
        if bad >= 0:
            raise CoretuneError(f"differs from the {name} this row's messages give; a chat "
                                f"row's prompt and target are made from its messages (leave "
                                f"the column out, or drop it with --columns {name}=-)",
                                path=path, **_where(bad, line_of), field=name)
        table = table.set_column(table.column_names.index(name), name, pc.coalesce(ours, given))
    return table


def _kind(value: Any) -> str:
    """A value's JSON kind, for messages."""
    kinds = {bool: "a boolean", int: "a number", float: "a number", str: "text",
             list: "a list", dict: "an object"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)
