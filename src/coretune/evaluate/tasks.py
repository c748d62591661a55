"""Evaluation sets: a registry of the shipped sets (RTE, CB, ANLI R1-R3) and any a user
adds (`register_eval_set`), the sets of a file spec (`--eval-file`, `evaluate.eval_files` in a
config: passed to `evaluate` directly, not registered), and the rendered (example, template)
items of a set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coretune.data.sources import Dataset, check_eval_dataset, eval_datasets
from coretune.errors import CoretuneError
from coretune.registry import Registry

# The shipped sets (looked up on every access: $CORETUNE_DATA may move them), then any added.
EVAL_SET_REGISTRY: Registry[Dataset] = Registry("evaluation set", field="tasks",
                                                builtin=eval_datasets)


def register_eval_set(dataset: Dataset) -> Dataset:
    """Make `dataset` selectable by name (`--tasks NAME`, `evaluate.tasks: [NAME]`), a peer of
    the shipped sets (a shipped name is replaced)."""
    return EVAL_SET_REGISTRY.register(dataset.name, dataset)


def eval_sets(extra: Sequence[Dataset] = ()) -> dict[str, Dataset]:
    """Every evaluation set by name: the shipped ones, the registered ones, then `extra`."""
    return {**EVAL_SET_REGISTRY.items(), **{ds.name: ds for ds in extra}}


def resolve_tasks(tasks: Sequence[str | Dataset] | str, extra: Sequence[Dataset] = ()
                  ) -> list[Dataset]:
    """Task names (`rte,cb,...`) or Dataset objects -> Datasets, with a clear error; a name
    may also be one of `extra` (a config's own sets)."""
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    known = eval_sets(extra)
    out = []
    for t in tasks:
        if isinstance(t, Dataset):
            out.append(t)
        elif t in known:
            out.append(known[t])
        else:
            raise EVAL_SET_REGISTRY.unknown(t, names=known, what="task",
                                            listed=f"known: {', '.join(known)}")
    if not out:
        raise CoretuneError("no tasks given", field="tasks")
    return out


def parse_eval_file(spec: str) -> Dataset:
    """`NAME:DATA.jsonl:TEMPLATES.yaml:LABEL0,LABEL1,...` -> Dataset (labels in index order)."""
    parts = spec.split(":")
    if len(parts) != 4 or not all(parts):
        raise CoretuneError(
            f"expected NAME:DATA.jsonl:TEMPLATES.yaml:LABEL0,LABEL1,..., got '{spec}'",
            field="eval-file")
    name, data, templates, labels = parts
    for p in (data, templates):
        if not Path(p).is_file():
            raise CoretuneError("file not found", path=p, field="eval-file")
    ds = Dataset(name, Path(data), Path(templates), tuple(x.strip() for x in labels.split(",")))
    check_eval_dataset(ds)  # validate now: bad rows/labels/templates fail before loading
    return ds


@dataclass
class Item:
    task: str
    template: str
    example: int
    id: str
    prompt: str
    choices: list[str]
    gold: int


def build_items(dataset: Dataset, *, max_examples: int | None = None,
                max_templates: int | None = None, seed: int = 0) -> tuple[list[Item], dict]:
    """Rendered (example, template) items of one dataset, after the caps; plus what was used."""
    rows = dataset.rows()
    templates = dataset.load_templates().with_choices()
    if not len(templates):
        raise CoretuneError("no template with answer choices", path=dataset.templates,
                            field="answer_choices")
    if max_templates is not None:
        templates = templates.choose("first", max_templates)
    picks = np.arange(len(rows))
    if max_examples is not None and max_examples < len(rows):
        picks = np.sort(np.random.default_rng(seed).choice(len(rows), max_examples,
                                                           replace=False))
    items = []
    for t in templates:
        for i in picks.tolist():
            r = t.render(rows[i])
            if not r.target:  # unlabelled row
                continue
            if r.target not in r.choices:
                raise CoretuneError(f"template '{t.name}' renders target '{r.target}' that is "
                                    f"not one of its choices {r.choices}",
                                    path=dataset.templates, field="answer_choices")
            items.append(Item(dataset.name, t.name, i, str(rows[i].get("id", i)), r.prompt,
                              r.choices, r.choices.index(r.target)))
    used = {"examples": len(picks), "examples_total": len(rows), "templates": templates.names,
            "templates_total": len(dataset.load_templates().with_choices())}
    return items, used
