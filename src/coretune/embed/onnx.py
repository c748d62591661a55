"""`minilm-int8` / `st-int8:MODEL`: a mean-pooling sentence-transformers model run by ONNX
Runtime with int8 weights, the fast CPU encoder.

On first use the model's transformer is exported to ONNX (torch's exporter) and its MatMul
weights quantised to int8 per output channel (`onnxruntime.quantization.quantize_dynamic`;
per-tensor scales cost ~0.05 of cosine on MiniLM, per-channel ~0.009). The quantised file is
kept under the coretune cache, keyed by the weights' fingerprint and the tool versions, and
written atomically. Rows are the model's own mean pooling over the prompt's tokens, each
prompt run alone, so they differ from the float32 model's by quantisation error only (mean
cosine ~0.99 on pool prompts); the encoder's name differs, so the embedding cache never
mixes the two.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from coretune.embed.encoders import (
    BatchEncoder,
    SentenceTransformerEncoder,
    needs_model,
    take_rows,
)
from coretune.errors import CoretuneError
from coretune.io import atomic_path
from coretune.paths import cache_dir

OPSET = 17


class OnnxInt8Encoder(BatchEncoder):
    """A sentence-transformers model with mean pooling, int8 weights, ONNX Runtime on CPU."""

    pooling = "mean"

    def __init__(self, model: str | Path | None = None, *, max_tokens: int,
                 device: str | None = None):
        if device not in (None, "cpu"):
            raise CoretuneError(f"int8 ONNX encoders run on the CPU only, not {device!r} "
                                "(on a GPU use the float32 encoder: minilm)", field="encoder")
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise CoretuneError("int8 encoders need onnxruntime and onnx "
                                "(pip install onnxruntime onnx)", field="encoder") from e
        import torch

        st = SentenceTransformerEncoder(model, max_tokens=max_tokens, device="cpu")
        modules = list(st.model)
        pool = modules[1].get_config_dict() if len(modules) > 1 else {}
        if type(modules[0]).__name__ != "Transformer" or pool.get("pooling_mode") != "mean":
            raise CoretuneError(f"{st.name}: int8 needs a transformer with mean pooling",
                                field="encoder")
        self.tokenizer, self.dim, self.max_tokens = st.model.tokenizer, st.dim, st.max_tokens
        self.inputs = list(self.tokenizer(["a"], return_tensors="np").keys())
        path = _int8_file(st, self.inputs)
        self.name = f"{st.name}+onnx-int8/{path.stem}"
        # One prompt is too small a job to split over threads: each runs on one thread, and
        # the project's threads (torch's setting) each run their own prompts (1.2-1.4x over
        # one prompt on two threads, 2 cores; benchmarks/bench_encoder.py).
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.workers = max(1, torch.get_num_threads())
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])

    def features(self, texts: list[str]) -> dict:
        # Tokenised on this thread, not the workers': a fast tokenizer called from several
        # threads can fail.
        return dict(self.tokenizer(texts, padding=True, truncation=True,
                                   max_length=self.max_tokens, return_tensors="np"))

    def forward_features(self, features: dict) -> np.ndarray:
        # One prompt per call, unpadded: dynamic int8 scales a tensor's activations together,
        # so in a batch a prompt's row would depend on its neighbours (up to ~0.02 a
        # coordinate) and on what the cache already held. Alone, it depends on the prompt
        # only, however the prompts are batched.
        inputs = {k: features[k].astype(np.int64) for k in self.inputs}
        feeds = [take_rows(inputs, [i], int(n), self.padding_side)
                 for i, n in enumerate(features["attention_mask"].sum(1))]
        if self.workers == 1 or len(feeds) == 1:
            return np.concatenate([self._one(f) for f in feeds])
        with ThreadPoolExecutor(self.workers) as pool:  # ORT releases the GIL while it runs
            return np.concatenate(list(pool.map(self._one, feeds)))

    def _one(self, feed: dict) -> np.ndarray:
        hidden = self.session.run(None, feed)[0]
        return hidden.mean(1)  # one unpadded prompt: the mean over its tokens


def minilm_int8(arg: str, max_tokens: int, device: str | None) -> OnnxInt8Encoder:
    """The `minilm-int8` encoder: all-MiniLM-L6-v2 from its installed package."""
    return OnnxInt8Encoder(None, max_tokens=max_tokens, device=device)


st_int8 = needs_model("st-int8", OnnxInt8Encoder)  # `st-int8:MODEL`


def _int8_file(st: SentenceTransformerEncoder, inputs: list[str]) -> Path:
    """The cached int8 ONNX file of `st`'s transformer, made once."""
    import onnx
    import onnxruntime as ort
    import torch

    key = f"{st.name}|torch {torch.__version__}|onnx {onnx.__version__}|ort {ort.__version__}" \
          f"|opset {OPSET}|{','.join(inputs)}|int8 per-channel|one prompt per call"
    path = cache_dir() / "models" / f"int8-{hashlib.sha256(key.encode()).hexdigest()[:16]}.onnx"
    if path.is_file():
        return path
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class Hidden(torch.nn.Module):  # positional inputs -> last hidden state
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, *args):
            return self.model(**dict(zip(inputs, args, strict=True))).last_hidden_state

    sample = st.model.tokenizer(["a short text", "a"], padding=True, return_tensors="pt")
    axes = {name: {0: "batch", 1: "tokens"} for name in [*inputs, "hidden"]}
    logging.disable(logging.WARNING)  # the quantiser's advice to pre-process first
    try:
        with tempfile.TemporaryDirectory() as tmp, atomic_path(path) as out, \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on tracing
            fp32 = Path(tmp) / "model.onnx"
            torch.onnx.export(Hidden(st.model[0].auto_model).eval(),
                              tuple(sample[k] for k in inputs), str(fp32), input_names=inputs,
                              output_names=["hidden"], dynamic_axes=axes, opset_version=OPSET,
                              dynamo=False)
            quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8,
                             per_channel=True,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        logging.disable(logging.NOTSET)
    return path
