"""Subsets out in the JSONL shapes other trainers read.

- `prompt-target`: {"prompt", "target"} (coretune's own JSONL);
- `prompt-completion`: TRL's prompt-completion format, {"prompt", "completion"}. TRL trains on
  `prompt + completion` as one string, so the completion starts with the same single space
  coretune puts between prompt and target (models.JOIN): the tokens match coretune's training;
- `messages`: TRL's conversational format, {"messages": [{"role": "user", "content": prompt},
  {"role": "assistant", "content": target}]}; the chat template supplies the separation.

A chat row (one with `messages`, coretune.data.chat) is written in `messages` as its own turns,
unchanged (keys `role`, `content`); in the other two formats as its text prompt and target,
the text coretune embeds and trains on when a model has no chat template.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from coretune.errors import CoretuneError
from coretune.io import atomic_path

TRAINER_FORMATS = ("prompt-target", "prompt-completion", "messages")
JOIN = " "  # the same as coretune.models.JOIN (not imported: that module loads torch)


def check_format(fmt: str) -> str:
    if fmt not in TRAINER_FORMATS:
        raise CoretuneError(f"unknown format '{fmt}' (one of {', '.join(TRAINER_FORMATS)})",
                            field="format")
    return fmt


def trainer_records(table: pa.Table, fmt: str = "prompt-target") -> Iterator[dict]:
    """One dict per row of `table` (which has `prompt` and `target` columns) in `fmt`."""
    check_format(fmt)
    for name in ("prompt", "target"):
        if name not in table.column_names:
            raise CoretuneError("missing column", field=name)
    prompts = table.column("prompt").to_pylist()
    targets = table.column("target").to_pylist()
    chats = (table.column("messages").to_pylist() if "messages" in table.column_names
             else [None] * table.num_rows)
    for prompt, target, turns in zip(prompts, targets, chats, strict=True):
        if fmt == "prompt-target":
            yield {"prompt": prompt, "target": target}
        elif fmt == "prompt-completion":
            yield {"prompt": prompt, "completion": JOIN + target}
        elif turns is not None:
            yield {"messages": [{"role": t["role"], "content": t["content"]} for t in turns]}
        else:
            yield {"messages": [{"role": "user", "content": prompt},
                                {"role": "assistant", "content": target}]}


def write_trainer_jsonl(table: pa.Table, path: str | Path, fmt: str = "prompt-target") -> Path:
    """Write `table`'s rows as JSONL in `fmt`, atomically (a failure leaves no file)."""
    path = Path(path)
    check_format(fmt)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for rec in trainer_records(table, fmt):
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path
