"""Rank classification on RTE, CB and ANLI R1-R3 (or a user's own labelled file).

Each (example, template) gives a prompt and its answer options; an option's score is the sum
of its tokens' log-probabilities given the prompt (optionally divided by its token count,
`length_norm`), and the prediction is the best-scoring option. Prompt and option are joined
as in training (see `coretune.models`: prompt ids + ids of `" " + option`).

Scoring runs each prompt ONCE: prompts are batched (sorted by length, longest first), their
key/value cache is kept, and the options are then run against that cache, one option slot
at a time, cropping the cache back after each. The first option token is predicted from the
prompt's last position, so options of one token (most NLI verbalisers) cost no extra
forward at all. Explicit position ids and attention masks make left and right padding give
the same scores (tested against an unbatched reference).

Intervals: 95% percentile bootstrap over EXAMPLES (2,000 replicates, seeded). Each example's
accuracy is first averaged over the evaluated templates, so an interval says how much the
mean-over-templates accuracy would move with another draw of examples. The Avg interval
resamples each task's examples independently and averages the task means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coretune.data.sources import Dataset, check_eval_dataset, eval_datasets
from coretune.errors import CoretuneError

TASKS = ("rte", "cb", "anli_r1", "anli_r2", "anli_r3")
HEADERS = {"rte": "RTE", "cb": "CB", "anli_r1": "ANLI R1", "anli_r2": "ANLI R2",
           "anli_r3": "ANLI R3"}
BOOTSTRAP_REPS = 2000


@dataclass(frozen=True)
class Request:
    """One prompt and its options, already tokenised."""

    prompt_ids: list[int]
    option_ids: list[list[int]]


# ---------------------------------------------------------------- scoring


def score_requests(
    model: Any,
    requests: Sequence[Request],
    *,
    pad_id: int,
    batch_size: int = 16,
    padding_side: str = "left",
    quiet: bool = True,
    desc: str = "scoring",
) -> list[np.ndarray]:
    """Sum of log-probabilities of every option of every request (float64, request order)."""
    import torch
    from tqdm.auto import tqdm

    if padding_side not in ("left", "right"):
        raise ValueError("padding_side must be 'left' or 'right'")
    for r in requests:
        if not r.prompt_ids or not r.option_ids or not all(r.option_ids):
            raise ValueError("every request needs a non-empty prompt and non-empty options")
    order = sorted(range(len(requests)), key=lambda i: (-len(requests[i].prompt_ids), i))
    out: list[np.ndarray | None] = [None] * len(requests)
    device = next(model.parameters()).device
    bar = tqdm(total=len(requests), desc=desc, disable=quiet, unit="prompt")
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            scores = _score_batch(model, [requests[i] for i in idx], pad_id, padding_side,
                                  device)
            for i, s in zip(idx, scores, strict=True):
                out[i] = s
            bar.update(len(idx))
    bar.close()
    return out  # type: ignore[return-value]


def _score_batch(model, batch: list[Request], pad_id: int, side: str, device) -> list[np.ndarray]:
    import torch

    n, width = len(batch), max(len(r.prompt_ids) for r in batch)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    lengths = torch.tensor([len(r.prompt_ids) for r in batch])
    for row, r in enumerate(batch):
        cols = slice(width - len(r.prompt_ids), width) if side == "left" else slice(
            0, len(r.prompt_ids))
        ids[row, cols] = torch.tensor(r.prompt_ids)
        mask[row, cols] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    last = torch.full((n,), width - 1) if side == "left" else lengths - 1
    ids, mask, positions = ids.to(device), mask.to(device), positions.to(device)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                logits_to_keep=last[:, None].to(device))
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # next-token after the prompt
    cache = out.cache
    scores = [np.zeros(len(r.option_ids)) for r in batch]
    for slot in range(max(len(r.option_ids) for r in batch)):
        opts = [r.option_ids[slot] if slot < len(r.option_ids) else None for r in batch]
        for row, o in enumerate(opts):
            if o is not None:
                scores[row][slot] = first[row, o[0]].item()
        # The rest of each option: feed all but its last token on top of the prompt cache.
        span = max(len(o) - 1 if o else 0 for o in opts)
        if span == 0:
            continue
        o_ids = torch.full((n, span), pad_id, dtype=torch.long)
        o_mask = torch.zeros((n, span), dtype=torch.long)
        for row, o in enumerate(opts):
            if o and len(o) > 1:
                o_ids[row, :len(o) - 1] = torch.tensor(o[:-1])
                o_mask[row, :len(o) - 1] = 1
        o_pos = lengths[:, None] + torch.arange(span)[None, :]
        step = model(input_ids=o_ids.to(device),
                     attention_mask=torch.cat([mask, o_mask.to(device)], dim=1),
                     position_ids=o_pos.to(device), cache=cache, use_cache=True)
        logp = torch.log_softmax(step.logits.float(), dim=-1)
        for row, o in enumerate(opts):
            if o and len(o) > 1:
                tgt = torch.tensor(o[1:], device=device)
                scores[row][slot] += logp[row, torch.arange(len(o) - 1, device=device),
                                          tgt].sum().item()
        cache.crop(-span)
        if cache.get_seq_length() != width:
            raise RuntimeError("KV cache crop failed: prompt cache length changed")
    return scores


def score_unbatched(model: Any, request: Request) -> np.ndarray:
    """Reference scorer: each option as its own unpadded prompt+option forward pass."""
    import torch

    device = next(model.parameters()).device
    out = np.zeros(len(request.option_ids))
    with torch.inference_mode():
        for k, opt in enumerate(request.option_ids):
            seq = torch.tensor([request.prompt_ids + opt], device=device)
            logp = torch.log_softmax(model(input_ids=seq).logits[0].float(), dim=-1)
            p = len(request.prompt_ids)
            pos = torch.arange(p - 1, p - 1 + len(opt), device=device)
            out[k] = logp[pos, torch.tensor(opt, device=device)].sum().item()
    return out


# ---------------------------------------------------------------- tasks


def resolve_tasks(tasks: Sequence[str | Dataset] | str) -> list[Dataset]:
    """Task names (`rte,cb,...`) or Dataset objects -> Datasets, with a clear error."""
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    known = eval_datasets()
    out = []
    for t in tasks:
        if isinstance(t, Dataset):
            out.append(t)
        elif t in known:
            out.append(known[t])
        else:
            raise CoretuneError(f"unknown task '{t}' (known: {', '.join(known)})",
                                field="tasks")
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


# ---------------------------------------------------------------- metrics


def bootstrap_ci(per_example: np.ndarray, reps: int = BOOTSTRAP_REPS, seed: int = 0
                 ) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    n = len(per_example)
    means = per_example[rng.integers(0, n, (reps, n))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(100 * lo), float(100 * hi)


def avg_ci(per_task: Sequence[np.ndarray], reps: int = BOOTSTRAP_REPS, seed: int = 0
           ) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = np.mean([x[rng.integers(0, len(x), (reps, len(x)))].mean(axis=1)
                     for x in per_task], axis=0)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(100 * lo), float(100 * hi)


def per_example_accuracy(table: Any) -> dict[str, np.ndarray]:
    """From a predictions table (Arrow/pandas/path): task -> accuracy per example, averaged
    over templates, in example order (what the intervals resample)."""
    import pandas as pd
    import pyarrow.parquet as pq

    if isinstance(table, str | Path):
        table = pq.read_table(table)
    df = table if isinstance(table, pd.DataFrame) else table.to_pandas()
    out = {}
    for task, g in df.groupby("task", sort=False):
        out[str(task)] = (g.groupby("example", sort=True)["correct"].mean()
                          .to_numpy(dtype=np.float64))
    return out


def _task_metrics(items: list[Item], correct: np.ndarray, used: dict, seed: int) -> dict:
    by_template: dict[str, list[bool]] = {}
    by_example: dict[int, list[bool]] = {}
    for it, c in zip(items, correct, strict=True):
        by_template.setdefault(it.template, []).append(bool(c))
        by_example.setdefault(it.example, []).append(bool(c))
    acc = {t: 100 * float(np.mean(v)) for t, v in by_template.items()}
    per_ex = np.array([np.mean(by_example[k]) for k in sorted(by_example)])
    lo, hi = bootstrap_ci(per_ex, seed=seed)
    return {"accuracy_per_template": acc, "mean": float(np.mean(list(acc.values()))),
            "median": float(np.median(list(acc.values()))), "ci95": [lo, hi],
            "n_items": len(items), **{f"n_{k}": v for k, v in used.items()
                                      if k in ("examples", "examples_total", "templates_total")},
            "templates": used["templates"], "_per_example": per_ex}


# ---------------------------------------------------------------- entry point


def evaluate(
    model: Any,
    tasks: Sequence[str | Dataset] | str = TASKS,
    *,
    max_examples: int | None = None,
    max_templates: int | None = None,
    length_norm: bool = False,
    batch_size: int = 16,
    seed: int = 0,
    output_dir: str | Path | None = None,
    padding_side: str = "left",
    quiet: bool = False,
) -> dict:
    """Evaluate `model` (a spec for `load_model`, or a (model, tokenizer) pair) on `tasks`.

    Returns the metrics dict (also written to `output_dir/metrics.json`, with
    `predictions.parquet`, when `output_dir` is given). Accuracies are percentages.
    """
    from coretune.models import encode_prompt, encode_target, load_model

    for name, v in (("max_examples", max_examples), ("max_templates", max_templates)):
        if v is not None and v < 1:
            raise CoretuneError("must be at least 1", field=name)
    datasets = resolve_tasks(tasks)
    if isinstance(model, tuple):
        lm, tok, model_name = model[0], model[1], getattr(model[0], "name_or_path", "<model>")
    else:
        model_name = str(model)
        lm, tok = load_model(model)
    items: list[Item] = []
    used: dict[str, dict] = {}
    for ds in datasets:
        its, used[ds.name] = build_items(ds, max_examples=max_examples,
                                         max_templates=max_templates, seed=seed)
        items += its
    prompt_ids: dict[str, list[int]] = {}
    option_cache: dict[str, list[int]] = {}
    requests = []
    for it in items:
        p = prompt_ids.get(it.prompt) or prompt_ids.setdefault(it.prompt,
                                                                encode_prompt(tok, it.prompt))
        opts = [option_cache.get(c) or option_cache.setdefault(c, encode_target(tok, c))
                for c in it.choices]
        requests.append(Request(p, opts))
    scores = score_requests(lm, requests, pad_id=tok.pad_token_id, batch_size=batch_size,
                            padding_side=padding_side, quiet=quiet, desc="evaluate")
    n_tokens = [np.array([len(o) for o in r.option_ids]) for r in requests]
    ranked = [s / n if length_norm else s for s, n in zip(scores, n_tokens, strict=True)]
    preds = np.array([int(np.argmax(s)) for s in ranked])
    correct = preds == np.array([it.gold for it in items])

    metrics: dict[str, Any] = {
        "model": model_name, "length_norm": length_norm, "seed": seed,
        "max_examples": max_examples, "max_templates": max_templates,
        "join": "prompt ids + ids of ' ' + option (no special tokens)",
        "interval": "95% percentile bootstrap over examples (templates averaged per example), "
                    f"{BOOTSTRAP_REPS} replicates, seed {seed}",
        "tasks": {},
    }
    per_task = []
    for ds in datasets:
        sel = [k for k, it in enumerate(items) if it.task == ds.name]
        m = _task_metrics([items[k] for k in sel], correct[sel], used[ds.name], seed)
        per_task.append(m.pop("_per_example"))
        metrics["tasks"][ds.name] = m
    means = [metrics["tasks"][ds.name]["mean"] for ds in datasets]
    lo, hi = avg_ci(per_task, seed=seed)
    metrics["avg"] = {"mean": float(np.mean(means)), "ci95": [lo, hi]}
    if output_dir is not None:
        _write(Path(output_dir), items, scores, n_tokens, preds, correct, metrics)
    return metrics


def _write(out: Path, items, scores, n_tokens, preds, correct, metrics) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from coretune.io import atomic_path, write_json

    table = pa.table({
        "task": [it.task for it in items], "template": [it.template for it in items],
        "example": pa.array([it.example for it in items], pa.int64()),
        "id": [it.id for it in items],
        "choices": pa.array([it.choices for it in items], pa.list_(pa.string())),
        "label": pa.array([it.gold for it in items], pa.int64()),
        "pred": pa.array(preds.tolist(), pa.int64()),
        "correct": pa.array(correct.tolist(), pa.bool_()),
        "logprob": pa.array([s.tolist() for s in scores], pa.list_(pa.float64())),
        "n_tokens": pa.array([n.tolist() for n in n_tokens], pa.list_(pa.int64())),
    })
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "predictions.parquet") as tmp:
        pq.write_table(table, tmp, compression="zstd")
    write_json(out / "metrics.json", metrics)


def format_row(metrics: dict, name: str = "") -> str:
    """The paper-style table row: each task's mean accuracy with its 95% interval, then Avg."""
    cells = []
    order = {t: i for i, t in enumerate(TASKS)}
    for task in sorted(metrics["tasks"], key=lambda t: order.get(t, len(order))):
        m = metrics["tasks"][task]
        lo, hi = m["ci95"]
        cells.append(f"{HEADERS.get(task, task)} {m['mean']:.1f} [{lo:.1f}, {hi:.1f}]")
    lo, hi = metrics["avg"]["ci95"]
    cells.append(f"Avg {metrics['avg']['mean']:.1f} [{lo:.1f}, {hi:.1f}]")
    return (f"{name} | " if name else "") + " | ".join(cells)
