"""Checkpoints, the training log and the final model folder, each written atomically.

Every `save_every` steps a checkpoint (trainable weights, optimizer, scheduler, RNG state,
step) replaces `output/checkpoint/`; running the same command again resumes from it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from coretune.errors import CoretuneError
from coretune.io import write_json, write_text


def _trainable_state(model) -> dict:
    return {k: v.detach().cpu().contiguous() for k, v in model.named_parameters()
            if v.requires_grad}


def save_checkpoint(out: Path, model, optimizer, scheduler, step: int, key: str) -> None:
    import torch
    from safetensors.torch import save_file

    tmp = Path(tempfile.mkdtemp(prefix=".checkpoint.", dir=out))
    try:
        save_file(_trainable_state(model), tmp / "weights.safetensors")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available()
                    else []}, tmp / "state.pt")
        write_json(tmp / "progress.json", {"step": step, "key": key})
        final, old = out / "checkpoint", out / ".checkpoint.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_checkpoint(out: Path, model, optimizer, scheduler, key: str) -> int:
    import torch
    from safetensors.torch import load_file

    ck = out / "checkpoint"
    if not (ck / "progress.json").is_file():
        old = out / ".checkpoint.old"  # crashed between the two renames
        if not (old / "progress.json").is_file():
            return 0
        ck = old
    progress = json.loads((ck / "progress.json").read_text())
    if progress["key"] != key:
        raise CoretuneError("output folder holds a checkpoint of a different training run "
                            "(other data or settings); choose another output or remove it",
                            path=out)
    weights = load_file(ck / "weights.safetensors")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in weights.items():
            params[k].copy_(v)
    state = torch.load(ck / "state.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(progress["step"])


def save_final(out: Path, lm, tok, config: dict) -> None:
    """Model (or adapter) + tokenizer into a temporary folder, then moved in file by file."""
    tmp = Path(tempfile.mkdtemp(prefix=".final.", dir=out))
    try:
        lm.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(tmp / "train_config.json", config)
        for f in sorted(tmp.iterdir()):
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_log(path: Path, upto: int) -> list[dict]:
    if not path.is_file() or upto == 0:
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["step"] <= upto]


def write_log(path: Path, log: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in log))
