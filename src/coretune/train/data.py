"""Training settings and data: rows in, (input ids, labels) out, batches and their order."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from coretune.batching import budget_batches
from coretune.data.chat import check_turns, render_prompt
from coretune.data.pool import Pool, load_pool
from coretune.errors import CoretuneError

IGNORE = -100


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field("default", description="default | local folder | hub id")
    lora: bool = Field(False, description="Train a LoRA adapter, not all weights.")
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lr: float = Field(5e-5, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.0, ge=0)
    epochs: float = Field(1.0, gt=0, description="Passes over the data (fractions allowed).")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps (overrides epochs).")
    full_steps: bool = Field(
        False, description="Every optimizer step takes batch_size x grad_accum rows, the "
        "seeded order running on into the next epoch's; off: each epoch ends with a short "
        "step of its leftover rows (with 5 rows and batch_size 8 every step takes 5). A "
        "compute-matched sweep (sweep.train_steps) turns it on.")
    batch_size: int = Field(8, ge=1, description="Rows per batch; a step takes grad_accum batches.")
    grad_accum: int = Field(1, ge=1, description="Batches per optimizer step.")
    micro_batch_size: int | None = Field(
        None, ge=1, description="Rows per forward/backward pass, for memory only: an optimizer "
        "step still takes batch_size x grad_accum rows and the same loss. None: batch_size.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, slower "
        "(off by default: it recomputes each layer's forward during backward; its CPU cost is "
        "the after_micro2_checkpointing row of benchmarks/bench_train.py).")
    pass_tokens: int | None = Field(
        None, ge=8, description="Tokens per forward/backward pass instead of "
        "micro_batch_size rows: a step's rows, longest first, fill each pass up to this many "
        "tokens (padded: rows x the longest; with packing: their sum); a longer row gets a "
        "pass of its own. Speed and memory only: a step takes the same rows and the same "
        "loss, up to float rounding. None: micro_batch_size rows a pass.")
    packing: bool = Field(
        False, description="Concatenate each pass's rows into one sequence without padding, "
        "position ids restarting at every row, so that no row attends to another "
        "(transformers' packed-sequence masks; checked on the model when training starts). "
        "The same loss and gradients as padded passes up to float rounding; dropout, if the "
        "model has any, draws other masks.")
    max_length: int = Field(256, ge=8, description="Tokens per row; the prompt is cut on the left.")
    precision: Literal["auto", "float32", "bf16"] = Field(
        "auto", description="Weights stay float32; bf16: the forward and backward passes under "
        "bfloat16 autocast. auto: bf16 on a GPU and on a CPU with native bf16 (AVX512-BF16 or "
        "AMX: 1.43x per step at the same loss, docs/performance.md), float32 elsewhere.")
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="Share of steps with linear warmup.")
    seed: int = Field(0, description="Seed for data order and initialisation.")
    save_every: int = Field(50, ge=1, description="Checkpoint every N optimizer steps.")
    log_every: int = Field(1, ge=1)

    def settings(self, exclude: set[str] = frozenset()) -> dict:
        """The settings as keys and train_config.json record them: a field newer than the
        first runs only when it is not at its default (`NEWER`), so runs made before it
        existed keep their keys."""
        left = {name for name, default in NEWER.items() if getattr(self, name) == default}
        return self.model_dump(exclude={*exclude, *left})

    def key(self) -> dict:
        """The train stage's key: the settings less checkpointing and logging."""
        return self.settings(exclude={"save_every", "log_every"})

    @property
    def rows_per_step(self) -> int:
        return self.batch_size * self.grad_accum

    @property
    def rows_per_pass(self) -> int:
        return self.micro_batch_size or self.batch_size


# Fields added after the first runs, and the defaults at which `settings` leaves them out.
NEWER = {"full_steps": False, "precision": "auto", "pass_tokens": None, "packing": False}


def load_rows(data: Pool | str | Path | Sequence[dict]) -> list[tuple]:
    """(prompt, target) pairs from a Pool, a pool/subset file, or dicts with those keys; a chat
    row is (prompt, target, turns), from a pool's `messages` or a dict's."""
    if isinstance(data, str | Path):
        data = load_pool(data)
    if isinstance(data, Pool):
        pairs = zip(data.column("prompt"), data.column("target"), strict=True)
        if "messages" not in data.table.column_names:
            return list(pairs)
        return [(p, t) if m is None else (p, t, m)
                for (p, t), m in zip(pairs, data.column("messages"), strict=True)]
    rows = []
    for i, r in enumerate(data):
        if r.get("messages") is not None:
            turns = check_turns(r["messages"], row=i)
            rows.append((render_prompt(turns), turns[-1]["content"], turns))
            continue
        if not isinstance(r.get("prompt"), str) or not isinstance(r.get("target"), str) \
                or not r["target"].strip():
            raise CoretuneError("needs string prompt and non-empty target", row=i,
                                field="prompt/target")
        rows.append((r["prompt"], r["target"]))
    if not rows:
        raise CoretuneError("no training rows", field="data")
    return rows


def encode_example(tok: Any, prompt: str, target: str, max_length: int,
                   turns: list[dict] | None = None) -> tuple[list[int], list[int]]:
    """(input ids, labels): prompt cut on the left to fit, loss on target + EOS only. A chat
    row's `turns` go through the chat template when `tok` has one (coretune.models)."""
    from coretune.models import encode_chat, encode_prompt, encode_target

    chat = None if turns is None else encode_chat(tok, turns)
    p, t = chat or (encode_prompt(tok, prompt), encode_target(tok, target))
    t = (t + [tok.eos_token_id])[:max_length - 1]
    p = p[max(0, len(p) + len(t) - max_length):]
    return p + t, [IGNORE] * len(p) + t


def make_batch(examples: list[tuple[list[int], list[int]]], pad_id: int):
    """Right-padded (ids, labels, attention mask) tensors."""
    import torch

    width = max(len(x) for x, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        ids[i, :len(x)], labels[i, :len(y)], mask[i, :len(x)] = (
            torch.tensor(x), torch.tensor(y), 1)
    return ids, labels, mask


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def step_rows(step: int, n: int, per_step: int, seed: int, full: bool = False) -> list[int]:
    """Rows of optimizer step `step`: positions [step*per_step, (step+1)*per_step) of the
    epoch-by-epoch seeded order, wrapping into the next epoch: after a short last step per
    epoch, or (`full`) straight on, so every step takes `per_step` rows (a row may come
    twice in one step when there are fewer rows than that)."""
    period = n if full else -(-n // per_step) * per_step  # positions per epoch
    picks, orders = [], {}
    for pos in range(step * per_step, (step + 1) * per_step):
        epoch, k = divmod(pos, period)
        if k < n:
            if epoch not in orders:
                orders[epoch] = epoch_order(n, seed, epoch)
            picks.append(int(orders[epoch][k]))
    return picks


def rows_trained(steps: int, n: int, per_step: int, full: bool = False) -> int:
    """How many rows `steps` optimizer steps over `n` rows take in all (`step_rows` summed):
    divided by `n`, the epochs the rows were seen."""
    if full:
        return steps * per_step
    epochs, left = divmod(steps, -(-n // per_step))
    return epochs * n + min(n, left * per_step)


def micro_batches(picks: list[int], lengths: list[int], size: int, tokens: int | None = None,
                  packed: bool = False) -> list[list[int]]:
    """The step's rows in passes of `size`, longest first so each pass pads little; with
    `tokens`, passes of at most that many tokens instead (`coretune.batching`: padded or
    `packed`). The step's loss is a sum over its target tokens, so how rows are grouped into
    passes doesn't change it."""
    ordered = sorted(picks, key=lambda i: -lengths[i])
    if tokens is not None:
        return [ordered[r.start:r.stop] for r in
                budget_batches([lengths[i] for i in ordered], tokens, packed)]
    return [ordered[m:m + size] for m in range(0, len(ordered), size)]


def pack_batch(examples: list[tuple[list[int], list[int]]]):
    """One (1, total) sequence of the rows back to back: (ids, labels, position ids), the
    positions restarting at 0 on each row. That is what tells transformers' masks where rows
    start (`masking_utils.find_packed_sequence_indices`), but only when the forward gets no
    attention mask and no KV cache (`use_cache=False`). A row's first label is dropped: in a
    padded batch nothing predicts it either, and here the row before would."""
    import torch

    ids = torch.tensor([t for x, _ in examples for t in x]).unsqueeze(0)
    labels = torch.tensor([t for _, y in examples for t in [IGNORE, *y[1:]]]).unsqueeze(0)
    positions = torch.cat([torch.arange(len(x)) for x, _ in examples]).unsqueeze(0)
    return ids, labels, positions
