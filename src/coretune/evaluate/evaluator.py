"""`evaluate`: rank classification on RTE, CB and ANLI R1-R3 (or a user's own labelled file).

Each (example, template) gives a prompt and its answer options; an option's score is the sum
of its tokens' log-probabilities given the prompt (optionally divided by its token count,
`length_norm`), and the prediction is the best-scoring option. Prompt and option are joined
as in training (see `coretune.models`: prompt ids + ids of `" " + option`); with
`chat_template`, as training joins a chat row: the prompt as one user turn through the
model's chat template with the generation prompt, the option as the assistant's reply.

Scoring runs each prompt ONCE: prompts are batched (sorted by length, longest first), their
key/value cache is kept, and the options are then run against that cache, one option slot
at a time, cropping the cache back after each. The first option token is predicted from the
prompt's last position, so options of one token (most NLI verbalisers) cost no extra
forward at all. Explicit position ids and attention masks make left and right padding give
the same scores (tested against an unbatched reference).

Beside accuracy, each item's gold-option log-loss: -log of the gold option's probability under
the softmax over the options' ranking scores (the ones the argmax takes), in nats, lower is
better (`metrics`); and that probability, `p_gold`. Both are averaged over templates per
example, like accuracy.

Intervals: 95% percentile bootstrap over EXAMPLES, the table's (`coretune.stats`). Each
example's accuracy is first averaged over the evaluated templates, so an interval says how
much the mean-over-templates accuracy would move with another draw of examples. The Avg
interval resamples each task's examples independently and averages the task means.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from coretune.data.sources import EVAL_HEADERS, Dataset
from coretune.errors import CoretuneError
from coretune.evaluate.metrics import gold_logloss, task_metrics
from coretune.evaluate.scoring import Request, score_requests
from coretune.evaluate.tasks import Item, build_items, resolve_tasks
from coretune.io import atomic_path, write_json
from coretune.models import (
    encode_prompt,
    encode_reply,
    encode_target,
    encode_user_prompt,
    has_chat_template,
    load_model,
)
from coretune.stats import BOOTSTRAP_REPS, LOGLOSS, average_interval

TASKS = tuple(EVAL_HEADERS)  # the shipped sets, the default
PLAIN_JOIN = "prompt ids + ids of ' ' + option (no special tokens)"
CHAT_JOIN = ("chat template: the prompt as one user turn with the generation prompt, then the "
             "option's ids as the assistant's reply (no special tokens)")

Encode = Callable[[str], list[int]]


def encoders(tok: Any, chat_template: bool, model_name: str) -> tuple[Encode, Encode]:
    """(prompt -> ids, option -> ids): the plain join, or the chat join (`chat_template`; a
    CoretuneError when the model has no chat template)."""
    if not chat_template:
        return partial(encode_prompt, tok), partial(encode_target, tok)
    if not has_chat_template(tok):
        raise CoretuneError(f"model '{model_name}' has no chat template (its tokenizer has "
                            "none); evaluate it with the plain join, chat_template off",
                            field="chat_template")
    return partial(encode_user_prompt, tok), partial(encode_reply, tok)


def example_cap(task: str, max_examples: int | None,
                by_task: Mapping[str, int] | None) -> int | None:
    """The examples one set is capped at: the smaller of `max_examples` and its own cap."""
    caps = [c for c in (max_examples, (by_task or {}).get(task)) if c]
    return min(caps) if caps else None


def evaluate(
    model: Any,
    tasks: Sequence[str | Dataset] | str = TASKS,
    *,
    max_examples: int | None = None,
    max_examples_by_task: Mapping[str, int] | None = None,
    max_templates: int | None = None,
    length_norm: bool = False,
    batch_size: int = 16,
    batch_tokens: int | None = None,
    seed: int = 0,
    output_dir: str | Path | None = None,
    padding_side: str = "left",
    quiet: bool = False,
    extra: Sequence[Dataset] = (),
    chat_template: bool = False,
) -> dict:
    """Evaluate `model` (a spec for `load_model`, or a (model, tokenizer) pair) on `tasks`
    (names of registered sets or of `extra`'s, or Datasets); `seed` draws the examples.

    Returns the metrics dict (also written to `output_dir/metrics.json`, with
    `predictions.parquet`, when `output_dir` is given). Accuracies are percentages. A set named
    in `max_examples_by_task` is capped at the smaller of its own cap and `max_examples`.
    `chat_template`: join prompt and option through the model's chat template (module
    docstring).
    `batch_tokens`: batches of at most that many padded prompt tokens, not `batch_size`
    prompts (`score_requests`).
    """
    by_task = dict(max_examples_by_task or {})
    for name, v in (("max_examples", max_examples), ("max_templates", max_templates),
                    *((f"max_examples_by_task.{t}", n) for t, n in by_task.items())):
        if v is not None and v < 1:
            raise CoretuneError("must be at least 1", field=name)
    datasets = resolve_tasks(tasks, extra)
    if isinstance(model, tuple):
        lm, tok, model_name = model[0], model[1], getattr(model[0], "name_or_path", "<model>")
    else:
        model_name = str(model)
        lm, tok = load_model(model)
    encode_p, encode_o = encoders(tok, chat_template, model_name)
    items: list[Item] = []
    used: dict[str, dict] = {}
    for ds in datasets:
        its, used[ds.name] = build_items(ds, max_examples=example_cap(ds.name, max_examples,
                                                                      by_task),
                                         max_templates=max_templates, seed=seed)
        items += its
    prompt_ids: dict[str, list[int]] = {}
    option_cache: dict[str, list[int]] = {}
    requests = []
    for it in items:
        p = prompt_ids.get(it.prompt) or prompt_ids.setdefault(it.prompt, encode_p(it.prompt))
        opts = [option_cache.get(c) or option_cache.setdefault(c, encode_o(c))
                for c in it.choices]
        requests.append(Request(p, opts))
    scores = score_requests(lm, requests, pad_id=tok.pad_token_id, batch_size=batch_size,
                            batch_tokens=batch_tokens, padding_side=padding_side, quiet=quiet,
                            desc="evaluate")
    n_tokens = [np.array([len(o) for o in r.option_ids]) for r in requests]
    ranked = [s / n if length_norm else s for s, n in zip(scores, n_tokens, strict=True)]
    preds = np.array([int(np.argmax(s)) for s in ranked])
    correct = preds == np.array([it.gold for it in items])
    logloss = np.array([gold_logloss(s, it.gold) for s, it in zip(ranked, items, strict=True)])

    metrics: dict[str, Any] = {
        "model": model_name, "length_norm": length_norm, "seed": seed,
        "max_examples": max_examples, "max_examples_by_task": by_task,
        "max_templates": max_templates,
        "join": CHAT_JOIN if chat_template else PLAIN_JOIN,
        "interval": "95% percentile bootstrap over examples (templates averaged per example), "
                    f"{BOOTSTRAP_REPS} replicates, as in the table (coretune.stats)",
        "tasks": {},
    }
    per_task, per_task_loss = {}, {}
    for ds in datasets:
        sel = [k for k, it in enumerate(items) if it.task == ds.name]
        m = task_metrics([items[k] for k in sel], correct[sel], used[ds.name], logloss[sel])
        per_task[ds.name] = m.pop("_per_example")
        per_task_loss[ds.name] = m.pop("_per_example_logloss")
        metrics["tasks"][ds.name] = m
    means = [metrics["tasks"][ds.name]["mean"] for ds in datasets]
    names = list(per_task)
    ci = average_interval([per_task], names)
    loss_ci = average_interval([per_task_loss], names, LOGLOSS)
    metrics["avg"] = {"mean": float(np.mean(means)), "ci95": [ci.lo, ci.hi],
                      "logloss": float(np.mean([t["logloss"] for t in metrics["tasks"].values()])),
                      "logloss_ci95": [loss_ci.lo, loss_ci.hi],
                      "p_gold": float(np.mean([t["p_gold"] for t in metrics["tasks"].values()]))}
    metrics["logloss_of"] = ("-log p(gold option), p the softmax over the options' ranking "
                             "scores; nats, lower is better; per example the mean over templates")
    if output_dir is not None:
        _write(Path(output_dir), items, scores, n_tokens, preds, correct, logloss, metrics)
    return metrics


def _write(out: Path, items, scores, n_tokens, preds, correct, logloss, metrics) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

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
        "logloss": pa.array(logloss.tolist(), pa.float64()),
        "p_gold": pa.array(np.exp(-logloss).tolist(), pa.float64()),
    })
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "predictions.parquet") as tmp:
        pq.write_table(table, tmp, compression="zstd")
    write_json(out / "metrics.json", metrics)


def format_row(metrics: dict, name: str = "", metric: str = "accuracy") -> str:
    """The paper-style table row: each task's mean accuracy (`metric="logloss"`: gold-option
    log-loss, nats) with its 95% interval, then Avg; "" for a log-loss row of metrics written
    without log-loss."""
    key, ci, digits = ("mean", "ci95", 1) if metric == "accuracy" else ("logloss",
                                                                        "logloss_ci95", 3)
    if key not in metrics["avg"]:
        return ""
    cells = []
    order = {t: i for i, t in enumerate(TASKS)}
    for task in sorted(metrics["tasks"], key=lambda t: order.get(t, len(order))):
        m = metrics["tasks"][task]
        lo, hi = m[ci]
        cells.append(f"{EVAL_HEADERS.get(task, task)} {m[key]:.{digits}f} [{lo:.{digits}f}, "
                     f"{hi:.{digits}f}]")
    lo, hi = metrics["avg"][ci]
    cells.append(f"Avg {metrics['avg'][key]:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]")
    return (f"{name} | " if name else "") + " | ".join(cells)
