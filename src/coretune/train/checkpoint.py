"""Checkpoints and the final model folder, each written atomically.

While training, `<output>.partial/` holds the work: every `save_every` steps a checkpoint
(trainable weights, optimizer, scheduler, RNG state, the log so far) replaces its
`checkpoint/`; running the same command again resumes from it. Its `progress.json`, written
last, records the sha256 of each of its files: a checkpoint whose files do not match (a crash,
a full disk) is passed over with a warning, for the one before it or step 0. The model folder
itself appears only whole, at the end, renamed from a folder built inside the work folder.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from coretune.errors import CoretuneError
from coretune.io import atomic_dir, read_json, sha256_file, write_json, write_text

FILES = ("weights.safetensors", "state.pt", "log.jsonl")


def work_dir(out: Path) -> Path:
    """Where the training of model folder `out` keeps its checkpoints: `<out>.partial`."""
    out = Path(out)
    if out.name in ("", ".."):  # `-o .`: name the folder
        out = Path(os.path.abspath(out))
    return out.with_name(out.name + ".partial")


def _trainable_state(model) -> dict:
    return {k: v.detach().cpu().contiguous() for k, v in model.named_parameters()
            if v.requires_grad}


def save_checkpoint(work: Path, model, optimizer, scheduler, step: int, key: str,
                    log: list[dict]) -> None:
    import torch
    from safetensors.torch import save_file

    with atomic_dir(work / "checkpoint") as tmp:
        save_file(_trainable_state(model), tmp / "weights.safetensors")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available()
                    else []}, tmp / "state.pt")
        write_log(tmp / "log.jsonl", log)
        write_json(tmp / "progress.json", {"step": step, "key": key,
                                           "sha256": {f: sha256_file(tmp / f) for f in FILES}})


def _damage(ck: Path) -> str | None:
    """What is wrong with checkpoint folder `ck`, or None when its files match their sums."""
    try:
        sums = dict(read_json(ck / "progress.json")["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return "progress.json is missing or unreadable"
    for f in FILES:
        if not (ck / f).is_file():
            return f"{f} is missing"
        if sha256_file(ck / f) != sums.get(f):
            return f"{f} does not match its checksum"
    return None


def load_checkpoint(work: Path, model, optimizer, scheduler, key: str) -> tuple[int, list[dict]]:
    """Restore the newest intact checkpoint in `work`: its step and log; (0, []) if none."""
    import torch
    from safetensors.torch import load_file

    damaged = []
    # `.checkpoint.old` is there only after a crash while a new checkpoint replaced it
    for ck in (work / "checkpoint", work / ".checkpoint.old"):
        if not ck.exists():
            continue
        why = _damage(ck)
        if why is not None:
            damaged.append((ck, why))
            continue
        progress = read_json(ck / "progress.json")
        if progress["key"] != key:
            raise CoretuneError("output folder holds a checkpoint of a different training run "
                                "(other data or settings); choose another output or remove it",
                                path=work)
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
        step = int(progress["step"])
        _warn(damaged, step)
        return step, read_log(ck / "log.jsonl", step)
    _warn(damaged, 0)
    return 0, []


def _warn(damaged: list[tuple[Path, str]], step: int) -> None:
    then = f"resumes from step {step}" if step else "starts again from step 0"
    for ck, why in damaged:
        print(f"coretune: warning: {ck}: damaged checkpoint ({why}), not used; training {then}",
              file=sys.stderr)


def save_final(out: Path, work: Path, lm, tok, config: dict, log: list[dict],
               state: dict) -> None:
    """Model (or adapter), tokenizer, config, log and the done marker, built in a folder
    inside `work` and renamed to `out` in one step."""
    with atomic_dir(out, work=work) as tmp:
        lm.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(tmp / "train_config.json", config)
        write_log(tmp / "train_log.jsonl", log)
        write_json(tmp / "train_state.json", state)
    shutil.rmtree(work, ignore_errors=True)


def read_log(path: Path, upto: int) -> list[dict]:
    if not path.is_file() or upto == 0:
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["step"] <= upto]


def write_log(path: Path, log: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in log))
