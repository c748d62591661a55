"""`train()`: setting up (model, optimizer, resume), the step loop, and finishing."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coretune.data.pool import Pool
from coretune.errors import CoretuneError
from coretune.io import make_dir, sha256_text
from coretune.train.checkpoint import load_checkpoint, save_checkpoint, save_final, work_dir
from coretune.train.data import (
    IGNORE,
    TrainConfig,
    encode_example,
    load_rows,
    make_batch,
    micro_batches,
    pack_batch,
    step_rows,
)
from coretune.train.loss import (
    full_logit_loss,
    keeps_packed_rows_apart,
    supports_target_logits,
    target_loss,
)


@dataclass
class Session:
    """Everything the step loop needs, built by `setup`."""

    cfg: TrainConfig
    out: Path
    key: str
    rows: int
    examples: list[tuple[list[int], list[int]]]
    lm: Any
    tok: Any
    device: Any
    optimizer: Any
    scheduler: Any
    total: int
    step: int = 0
    log: list[dict] = field(default_factory=list)
    loss_fn: Callable = target_loss
    bf16: bool = False  # forward and backward under bfloat16 autocast (TrainConfig.precision)
    fused: bool = False  # AdamW's fused kernel (on a GPU)

    @property
    def params(self) -> list:
        return [p for p in self.lm.parameters() if p.requires_grad]

    @property
    def work(self) -> Path:
        return work_dir(self.out)


def train(
    data: Pool | str | Path | Sequence[dict],
    model: str | None = None,
    config: TrainConfig | None = None,
    output_dir: str | Path = "model",
    *,
    quiet: bool = False,
    on_step: Callable[[int, float], None] | None = None,
) -> Path:
    """Fine-tune `model` (default: config.model) on `data`; write the model or adapter with its
    tokenizer, `train_log.jsonl` and `train_config.json` into `output_dir`; return it. Until
    it is done, the work (checkpoints) is in `<output_dir>.partial` and `output_dir` does not
    exist: it appears whole at the end.

    `on_step(step, loss)` is called after each optimizer step (after any checkpoint), e.g.
    for a pipeline's own progress report or to stop early by raising."""
    cfg = (config or TrainConfig()).model_copy(update={"model": model} if model else {})
    out = Path(output_dir)
    rows = load_rows(data)
    key = sha256_text(json.dumps([cfg.settings(exclude={"log_every", "save_every"}), rows],
                                 ensure_ascii=False))
    if _finished(out, key, quiet):
        return out
    work = make_dir(work_dir(out), output=out)  # before the model loads: fail fast
    try:
        session = setup(cfg, out, rows, key)
        run_steps(session, quiet=quiet, on_step=on_step)
        finish(session)
    finally:
        with contextlib.suppress(OSError):
            work.rmdir()  # a failure before the first checkpoint leaves nothing
    return out


def _finished(out: Path, key: str, quiet: bool) -> bool:
    """True when `out` holds this very run, finished; an error when it holds another."""
    if (out / "train_state.json").is_file():
        state = json.loads((out / "train_state.json").read_text())
        if state.get("key") == key and state.get("done"):
            shutil.rmtree(work_dir(out), ignore_errors=True)  # a crash just after the rename
            if not quiet:
                print(f"{out}: already trained with these data and settings")
            return True
        raise CoretuneError("output folder holds a model trained on other data or settings; "
                            "choose another output or remove it", path=out)
    if out.exists() and not out.is_dir():
        raise CoretuneError("output exists and is not a folder", path=out)
    if out.is_dir() and any(out.iterdir()):
        raise CoretuneError("output folder holds files but no trained model; choose another "
                            "output or remove it", path=out)
    return False


def setup(cfg: TrainConfig, out: Path, rows: list[tuple], key: str,
          full_logits: bool = False) -> Session:
    """Load the model (LoRA-wrapped if asked), encode the rows, build AdamW and the schedule,
    and resume from the newest intact checkpoint of `out`'s work folder if it holds this run.
    `full_logits` selects the old loss (logits at every position), for the benchmark."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    from coretune.models import device_and_dtype, load_model

    dev, _ = device_and_dtype()
    torch.manual_seed(cfg.seed)
    lm, tok = load_model(cfg.model, device=str(dev), dtype=torch.float32, for_training=True)
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        lm = get_peft_model(lm, LoraConfig(
            r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules="all-linear", task_type="CAUSAL_LM"))
    if cfg.gradient_checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lm.train()
    if cfg.packing and not keeps_packed_rows_apart(lm):
        raise CoretuneError("this model's attention lets packed rows see each other (it "
                            "ignores packed position ids); train without packing",
                            field="train.packing")
    examples = [encode_example(tok, p, t, cfg.max_length, *chat) for p, t, *chat in rows]

    steps_per_epoch = len(examples) / cfg.rows_per_step  # full steps: no short last step
    if not cfg.full_steps:
        steps_per_epoch = math.ceil(steps_per_epoch)
    total = cfg.max_steps or max(1, math.ceil(steps_per_epoch * cfg.epochs))
    optimizer = adamw(lm, cfg, fused=dev.type == "cuda")
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total)

    step, log = load_checkpoint(work_dir(out), lm, optimizer, scheduler, key)
    # a resumed run keeps its checkpoint's setting: torch restores a group's `fused` flag
    fused = bool(optimizer.param_groups[0].get("fused"))
    use_target = not full_logits and supports_target_logits(lm)
    return Session(cfg, out, key, len(rows), examples, lm, tok, dev, optimizer, scheduler,
                   total, step, log, target_loss if use_target else full_logit_loss,
                   uses_bf16(cfg.precision, dev), fused)


def adamw(lm, cfg: TrainConfig, fused: bool = False):
    """AdamW over the trainable parameters, no weight decay on vectors (biases, norms).
    `fused`: torch's fused kernel, one launch for every parameter instead of a few per tensor
    (the GPU's default here); the same update up to float rounding."""
    import torch

    params = [p for p in lm.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
         {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=cfg.lr,
        fused=fused or None)  # None: torch's default (foreach), as before


def uses_bf16(precision: str, device) -> bool:
    """Whether `precision` means bfloat16 autocast on `device` (see TrainConfig.precision)."""
    if precision != "auto":
        return precision == "bf16"
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX); elsewhere bf16
    autocast is emulated and slower than float32. torch's probes are private: absent means no."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def train_step(s: Session) -> tuple[float, int]:
    """One optimizer step over its rows, in micro-batches; returns (loss, real tokens)."""
    import torch

    picks = step_rows(s.step, len(s.examples), s.cfg.rows_per_step, s.cfg.seed,
                      s.cfg.full_steps)
    loss_sum, n_tokens = accumulate(s, picks)
    torch.nn.utils.clip_grad_norm_(s.params, 1.0)
    s.optimizer.step()
    s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    s.step += 1
    return loss_sum, n_tokens


def accumulate(s: Session, picks: list[int]) -> tuple[float, int]:
    """The forward and backward passes of one step's rows `picks`, their gradients summed
    into the parameters: (the step's loss, its real tokens)."""
    import torch

    n_target = sum(sum(y != IGNORE for y in s.examples[i][1]) for i in picks)
    lengths = [len(x) for x, _ in s.examples]
    autocast = torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=s.bf16)
    loss_sum, n_tokens = 0.0, 0
    for chunk in micro_batches(picks, lengths, s.cfg.rows_per_pass, s.cfg.pass_tokens,
                               s.cfg.packing):
        ids, labels, mask, positions = (t if t is None else t.to(s.device)
                                        for t in pass_inputs(s, chunk))
        with autocast:
            loss = s.loss_fn(s.lm, ids, labels, mask, n_target, positions)
        loss.backward()
        loss_sum += loss.item()
        n_tokens += sum(lengths[i] for i in chunk)
    return loss_sum, n_tokens


def pass_inputs(s: Session, chunk: list[int]) -> tuple:
    """(ids, labels, attention mask, position ids) of one pass: padded rows with a mask, or
    (`packing`) one sequence with each row's positions and no mask."""
    rows = [s.examples[i] for i in chunk]
    if s.cfg.packing:
        ids, labels, positions = pack_batch(rows)
        return ids, labels, None, positions
    return (*make_batch(rows, s.tok.pad_token_id), None)


def run_steps(s: Session, quiet: bool = False,
              on_step: Callable[[int, float], None] | None = None) -> None:
    """Steps until `s.total`: log, checkpoint every `save_every` steps, report each step."""
    from tqdm.auto import tqdm

    bar = tqdm(total=s.total, initial=s.step, desc="train", unit="step", disable=quiet)
    while s.step < s.total:
        t0 = time.perf_counter()
        loss, n_tokens = train_step(s)
        dt = time.perf_counter() - t0
        if s.step % s.cfg.log_every == 0 or s.step == s.total:
            s.log.append({"step": s.step, "loss": round(loss, 6),
                          "lr": s.scheduler.get_last_lr()[0],
                          "tokens_per_s": round(n_tokens / dt, 1), "tokens": n_tokens})
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{n_tokens / dt:.0f}")
        if s.step % s.cfg.save_every == 0 and s.step < s.total:
            save_checkpoint(s.work, s.lm, s.optimizer, s.scheduler, s.step, s.key, s.log)
        if on_step is not None:
            on_step(s.step, loss)
    bar.close()


def finish(s: Session) -> None:
    """The model folder (model or adapter, the log, the done marker) at once; the work goes."""
    save_final(s.out, s.work, s.lm, s.tok, s.cfg.settings(), s.log,
               {"key": s.key, "done": True, "steps": s.total, "rows": s.rows,
                "precision": "bf16" if s.bf16 else "float32",
                "optimizer": "AdamW, fused" if s.fused else "AdamW"})
