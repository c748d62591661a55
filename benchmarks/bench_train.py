"""Training speed and peak memory: logits at every position (before) vs at the target
positions only (after), micro-batch sizes and gradient checkpointing, on the same data in the
same run, against a memory floor computed from the model config.

Each variant runs in its own process (a fresh allocator, so peak RSS is its own), on the same
optimizer steps of the same rows; the variants are interleaved and repeated, since other jobs
may share the cores. Reported per variant: tokens/s (real tokens, padding not counted, the
first step dropped as warm-up), the peak RSS of the training steps (kernel high-water mark,
coretune.run.memory) and of the whole process (model load included), and ratios vs `before`.

Floor (computed from the config, float32): weights + gradients + AdamW's two states
(16 bytes per trainable parameter, 4 per frozen one) + the activations autograd keeps for one
micro-batch: per token and layer the two RMSNorm inputs and outputs, q, k, v (k and v
expanded to the query heads), the attention output, and the MLP's gate, up, act(gate) and
product: 8*hidden + 4*intermediate floats (gradient checkpointing: the layer inputs only).

    HF_HUB_OFFLINE=1 python benchmarks/bench_train.py [--data subset.parquet] [--steps 3]
    HF_HUB_OFFLINE=1 python benchmarks/bench_train.py --precision-ab 5 --steps 2  # bf16 vs fp32

Default data: 25 rows of the shipped RTE/CB training sets through their first two templates
(the demo trains on 25 NLI-like rows). Demo settings: full fine-tuning, batch 8, 256 tokens.
Writes benchmarks/results/bench_train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

GB = 1 << 30
# variant -> (loss over all positions?, micro-batch rows, gradient checkpointing, LoRA r=16,
# precision: TrainConfig.precision)
VARIANTS = {
    "before": (True, 8, False, False, "float32"),
    "after": (False, 8, False, False, "float32"),
    "after_micro4": (False, 4, False, False, "float32"),
    "after_micro2": (False, 2, False, False, "float32"),
    "after_micro1": (False, 1, False, False, "float32"),
    "after_micro2_checkpointing": (False, 2, True, False, "float32"),
    "after_micro2_lora": (False, 2, False, True, "float32"),
    "after_micro2_bf16": (False, 2, False, False, "bf16"),
}
GRAD_SAMPLE = 4096  # gradient coordinates kept per parameter tensor for the comparison
# facebook/galactica-1.3b (the paper's model; OPT layout, plain 4x MLP) for docs/performance.md.
GALACTICA_1_3B = {"hidden_size": 2048, "num_hidden_layers": 24, "intermediate_size": 8192,
                  "vocab_size": 50000, "gated_mlp": False, "tie_word_embeddings": True}


def param_count(c: dict) -> int:
    """Parameters of a decoder-only LM from its config (attention, MLP, norms, embeddings)."""
    h, i, layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    kv = h // c.get("num_attention_heads", 1) * c.get("num_key_value_heads",
                                                        c.get("num_attention_heads", 1))
    mlp = (3 if c.get("gated_mlp", True) else 2) * h * i
    per_layer = h * h * 2 + 2 * h * kv + mlp + 2 * h
    embed = c["vocab_size"] * h * (1 if c.get("tie_word_embeddings", True) else 2)
    return layers * per_layer + embed + h


def floor_bytes(c: dict, tokens: int, trainable: int | None = None,
                checkpointing: bool = False) -> dict:
    """Memory floor of one training step (float32), in bytes, by part."""
    p = param_count(c)
    t = p if trainable is None else trainable
    h, i, layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    per_token_layer = h if checkpointing else 8 * h + (4 if c.get("gated_mlp", True) else 2) * i
    parts = {"weights": 4 * p, "gradients": 4 * t, "adamw_states": 8 * t,
             "activations": 4 * tokens * layers * per_token_layer}
    parts["total"] = sum(parts.values())
    return parts


def default_rows(n: int = 25) -> list[dict]:
    from coretune.data.sources import build_pool, sample_rows

    pool = sample_rows(build_pool(bigbench="none", template_mode="first", n_templates=2), n)
    return [{"prompt": p, "target": t}
            for p, t in zip(pool.column("prompt"), pool.column("target"), strict=True)]


def child(variant: str, rows_file: str, steps: int) -> dict:
    """One variant in this process: setup, `steps` optimizer steps, timings and peaks."""
    import torch

    from coretune.run.memory import peak_memory, rss_peak_mb
    from coretune.train.data import TrainConfig
    from coretune.train.loop import setup, train_step

    full, micro, ckpt, lora, precision = VARIANTS[variant]
    rows = [(r["prompt"], r["target"]) for r in json.loads(Path(rows_file).read_text())]
    cfg = TrainConfig(lr=1e-4, batch_size=8, max_length=256, max_steps=steps,
                      micro_batch_size=micro, gradient_checkpointing=ckpt, save_every=10_000,
                      lora=lora, precision=precision)
    with tempfile.TemporaryDirectory() as d:
        s = setup(cfg, Path(d), rows, key="bench", full_logits=full)
        grads = _snapshot_first_step_grads(s)
        loaded_rss = rss_peak_mb()
        times, tokens, losses = [], [], []
        with peak_memory() as peak:
            for _ in range(steps):
                t0 = time.perf_counter()
                loss, n = train_step(s)
                times.append(time.perf_counter() - t0)
                tokens.append(n)
                losses.append(round(loss, 6))
        picks = [len(s.examples[i][0]) for i in range(len(s.examples))]
    np.savez(Path(rows_file).with_name(f"grads-{variant}.npz"), **grads)
    return {"variant": variant, "step_seconds": [round(t, 2) for t in times],
            "tokens": tokens, "losses": losses, "loss_fn": s.loss_fn.__name__,
            "tokens_per_s": round(sum(tokens[1:]) / sum(times[1:]), 1),
            "peak_rss_train_mb": peak["peak_rss_mb"], "peak_rss_process_mb": rss_peak_mb(),
            "rss_after_setup_mb": loaded_rss, "threads": torch.get_num_threads(),
            "row_lengths": picks, "model_config": s.lm.config.to_dict()}


def _snapshot_first_step_grads(s) -> dict:
    """Fills a dict, when the first optimizer step is taken, with every trainable tensor's
    clipped-gradient norm and a fixed seeded sample of its coordinates (name -> array)."""
    out: dict = {}
    step = s.optimizer.step

    def snap(*args, **kwargs):
        if not out:
            for i, (name, p) in enumerate(s.lm.named_parameters()):
                if p.grad is not None:
                    g = p.grad.detach().float().flatten().numpy()
                    idx = np.random.default_rng(i).choice(len(g), min(len(g), GRAD_SAMPLE),
                                                          replace=False)
                    out[f"{name}|norm"] = np.array([np.linalg.norm(g)])
                    out[f"{name}|sample"] = g[np.sort(idx)]
        return step(*args, **kwargs)

    s.optimizer.step = snap
    return out


def compare_grads(folder: Path, a: str, b: str) -> dict | None:
    """First-step gradients of variant `b` against `a` (same rows, same weights): cosine of
    the sampled coordinates, all tensors together and worst tensor, and the largest relative
    difference of a tensor's norm."""
    fa, fb = folder / f"grads-{a}.npz", folder / f"grads-{b}.npz"
    if not (fa.is_file() and fb.is_file()):
        return None
    ga, gb = np.load(fa), np.load(fb)
    names = sorted(k.removesuffix("|sample") for k in ga.files if k.endswith("|sample"))
    xa = np.concatenate([ga[f"{n}|sample"] for n in names])
    xb = np.concatenate([gb[f"{n}|sample"] for n in names])

    def cos(u, v):
        return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-30))

    per = {n: cos(ga[f"{n}|sample"], gb[f"{n}|sample"]) for n in names}
    norms = {n: abs(float(gb[f"{n}|norm"][0] / ga[f"{n}|norm"][0]) - 1) for n in names
             if ga[f"{n}|norm"][0] > 0}
    worst = min(per, key=per.get)
    return {"cosine_all": round(cos(xa, xb), 6), "cosine_worst_tensor": round(per[worst], 6),
            "worst_tensor": worst, "norm_rel_diff_max": round(max(norms.values()), 6),
            "tensors": len(names), "coordinates": int(len(xa))}


def bf16_summary(result: dict, work: Path) -> dict:
    """bf16 autocast against float32 on the same steps of the same rows (micro-batch 2):
    speed ratio of the best repeats, the per-step losses and the first step's gradients."""
    a, b = result["variants"]["after_micro2"], result["variants"]["after_micro2_bf16"]
    diffs = [abs(x - y) for x, y in zip(a["losses"], b["losses"], strict=True)]
    return {"speed_ratio_best": round(b["tokens_per_s_best"] / a["tokens_per_s_best"], 3),
            "speed_ratio_per_repeat": [round(y / x, 3) for x, y in zip(
                a["tokens_per_s"], b["tokens_per_s"], strict=True)],
            "loss_float32": a["losses"], "loss_bf16": b["losses"],
            "loss_abs_diff_max": round(max(diffs), 6),
            "loss_rel_diff_max": round(max(d / x for d, x in zip(diffs, a["losses"],
                                                                 strict=True)), 6),
            "first_step_grads": compare_grads(work, "after_micro2", "after_micro2_bf16")}


def precision_ab(rows: list[dict], blocks: int, steps: int) -> dict:
    """float32 vs bf16 autocast on one loaded model (the demo's settings, micro-batch 2): the
    same first optimizer step's rows, forward and backward only (no update, so every pass sees
    the same weights), `steps` passes per block, blocks alternating A, B, A, B... so that other
    load on the machine falls on both alike. Loss and gradients of each precision compared."""
    import torch

    from coretune.train.data import TrainConfig, make_batch, micro_batches, step_rows
    from coretune.train.loop import setup

    cfg = TrainConfig(lr=1e-4, batch_size=8, max_length=256, micro_batch_size=2)
    with tempfile.TemporaryDirectory() as d:
        s = setup(cfg, Path(d), [(r["prompt"], r["target"]) for r in rows], key="bench")
    picks = step_rows(0, len(s.examples), cfg.rows_per_step, cfg.seed)
    n_target = sum(sum(y != -100 for y in s.examples[i][1]) for i in picks)
    chunks = micro_batches(picks, [len(x) for x, _ in s.examples], cfg.rows_per_pass)
    batches = [make_batch([s.examples[i] for i in c], s.tok.pad_token_id) for c in chunks]
    tokens = sum(int(m.sum()) for _, _, m in batches)

    def step(bf16: bool) -> tuple[float, np.ndarray]:
        loss_sum = 0.0
        for ids, labels, mask in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = s.loss_fn(s.lm, ids, labels, mask, n_target)
            loss.backward()
            loss_sum += loss.item()
        g = torch.cat([p.grad.flatten() for p in s.params]).float().numpy().copy()
        s.optimizer.zero_grad(set_to_none=True)
        return loss_sum, g

    times: dict[str, list[float]] = {"float32": [], "bf16": []}
    out: dict[str, tuple] = {}
    for block in range(2 * blocks):
        name = ("float32", "bf16")[block % 2]
        for _ in range(steps):
            t0 = time.perf_counter()
            out[name] = step(name == "bf16")
            times[name].append(time.perf_counter() - t0)
    (la, ga), (lb, gb) = out["float32"], out["bf16"]
    rate = {k: tokens / float(np.median(v)) for k, v in times.items()}
    return {"tokens_per_step": tokens, "passes_per_precision": blocks * steps,
            "tokens_per_s_median": {k: round(v, 1) for k, v in rate.items()},
            "speed_ratio_bf16_over_float32": round(rate["bf16"] / rate["float32"], 3),
            "step_seconds": {k: [round(t, 2) for t in v] for k, v in times.items()},
            "loss": {"float32": round(la, 6), "bf16": round(lb, 6),
                     "rel_diff": round(abs(lb - la) / la, 6)},
            "grad_cosine": round(float(ga @ gb / (np.linalg.norm(ga) * np.linalg.norm(gb))), 6),
            "grad_norm_rel_diff": round(abs(float(np.linalg.norm(gb) / np.linalg.norm(ga)) - 1),
                                        6),
            "threads": torch.get_num_threads()}


def run_child(variant: str, rows_file: str, steps: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", variant, "--rows", rows_file,
                          "--steps", str(steps)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict], args) -> dict:
    by = {v: [r for r in runs if r["variant"] == v] for v in VARIANTS}
    best = {v: max(rs, key=lambda r: r["tokens_per_s"]) for v, rs in by.items() if rs}
    base = runs[0]["variant"]  # ratios are against the first variant run ("before" by default)
    c = best[base]["model_config"]
    lengths = best[base]["row_lengths"]
    widest = sorted(lengths, reverse=True)
    rows = {}
    for v, r in best.items():
        _, micro, ckpt, lora, precision = VARIANTS[v]
        tokens = micro * widest[0]  # the widest pass: `micro` rows padded to the longest
        floor = floor_bytes(c, tokens, lora_count(c) if lora else None, checkpointing=ckpt)
        rows[v] = {
            "micro_batch_size": micro, "gradient_checkpointing": ckpt, "lora": lora,
            "precision": precision,
            "loss": "all positions" if VARIANTS[v][0] else "target positions",
            "tokens_per_s": [x["tokens_per_s"] for x in by[v]],
            "tokens_per_s_best": r["tokens_per_s"],
            f"speed_vs_{base}": round(r["tokens_per_s"] / best[base]["tokens_per_s"], 3),
            "peak_rss_train_gb": round(r["peak_rss_train_mb"] / 1024, 2),
            "peak_rss_process_gb": round(r["peak_rss_process_mb"] / 1024, 2),
            "rss_after_setup_gb": round(r["rss_after_setup_mb"] / 1024, 2),
            "floor_gb": round(floor["total"] / GB, 2),
            "floor_parts_gb": {k: round(b / GB, 3) for k, b in floor.items()},
            "peak_over_floor": round(r["peak_rss_train_mb"] * (1 << 20) / floor["total"], 2),
            "losses": r["losses"], "step_seconds": r["step_seconds"]}
    return {"variants": rows, "rows": len(lengths), "row_tokens_mean": sum(lengths) / len(lengths),
            "row_tokens_max": widest[0], "steps": args.steps, "repeats": args.repeats,
            "params_from_config": param_count(c), "model_config_used": {
                k: c[k] for k in ("hidden_size", "num_hidden_layers", "intermediate_size",
                                  "num_attention_heads", "num_key_value_heads", "vocab_size")}}


def lora_count(c: dict, r: int = 16) -> int:
    """Parameters of rank-r LoRA adapters on every linear layer of the decoder blocks."""
    h, i = c["hidden_size"], c["intermediate_size"]
    kv = h // c.get("num_attention_heads", 1) * c.get("num_key_value_heads",
                                                        c.get("num_attention_heads", 1))
    attn = (h + h) + 2 * (h + kv) + (h + h)
    mlp = (3 if c.get("gated_mlp", True) else 2) * (h + i)
    return c["num_hidden_layers"] * r * (attn + mlp)


def memory_table(c: dict) -> dict:
    """Floors (GiB, float32) of full fine-tuning and LoRA (r=16) with and without gradient
    checkpointing, per micro-batch of rows x 256 tokens: which settings fit 4 GB / 16 GB."""
    out = {}
    for name, cfg in (("SmolLM2-135M", c), ("galactica-1.3b", GALACTICA_1_3B)):
        for label, trainable, ckpt in (("full", None, False), ("full+ckpt", None, True),
                                       ("lora", lora_count(cfg), False),
                                       ("lora+ckpt", lora_count(cfg), True)):
            for micro in (1, 2, 4, 8):
                f = floor_bytes(cfg, micro * 256, trainable, ckpt)
                out[f"{name} {label} micro={micro} x256"] = round(f["total"] / GB, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", help="subset/pool file (default: 25 shipped RTE/CB rows)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--variants", default="before,after,after_micro2,after_micro2_checkpointing")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_train.json"))
    ap.add_argument("--child"), ap.add_argument("--rows")
    ap.add_argument("--floors-only", action="store_true",
                    help="only recompute the floors table in an existing --out file")
    ap.add_argument("--precision-ab", type=int, metavar="BLOCKS",
                    help="only float32 vs bf16 autocast, BLOCKS alternating blocks of --steps "
                    "passes each, in one process (writes bench_train_bf16.json)")
    args = ap.parse_args()
    if args.precision_ab:
        from coretune.io import write_json

        start = os.getloadavg()
        result = precision_ab(default_rows(), args.precision_ab, args.steps)
        result.update({"data": "25 shipped RTE/CB training rows, first 2 templates (seeded); "
                               "the first optimizer step's 8 rows, micro-batch 2",
                       "load_average_at_start": list(start),
                       "load_average_at_end": list(os.getloadavg()),
                       "cpu_count": os.cpu_count(), "platform": platform.platform()})
        out = Path(args.out).with_name("bench_train_bf16.json")
        write_json(out, result)
        print(json.dumps(result, indent=1))
        return
    if args.floors_only:
        from coretune.io import write_json

        result = json.loads(Path(args.out).read_text())
        result["fits_floor_gb"] = memory_table(result["model_config_used"] | {
            "tie_word_embeddings": True})
        write_json(args.out, result)
        print(json.dumps(result["fits_floor_gb"], indent=1))
        return
    if args.child:
        print(json.dumps(child(args.child, args.rows, args.steps)))
        return
    if args.data:
        from coretune.train.data import load_rows

        rows = [{"prompt": p, "target": t} for p, t in load_rows(args.data)]
    else:
        rows = default_rows()
    load_start = os.getloadavg()
    runs = []
    variants = args.variants.split(",")
    with tempfile.TemporaryDirectory() as work:
        rows_file = Path(work) / "rows.json"
        rows_file.write_text(json.dumps(rows))
        for _ in range(args.repeats):
            for v in variants:
                runs.append(run_child(v, str(rows_file), args.steps))
                print(f"{v}: {runs[-1]['tokens_per_s']} tokens/s, train peak "
                      f"{runs[-1]['peak_rss_train_mb'] / 1024:.2f} GB", file=sys.stderr)
        result = summarise(runs, args)
        if {"after_micro2", "after_micro2_bf16"} <= set(variants):
            result["bf16_vs_float32"] = bf16_summary(result, Path(work))
    from coretune.io import write_json

    result.update({
        "data": args.data or "25 shipped RTE/CB training rows, first 2 templates (seeded)",
        "settings": "full fine-tuning (LoRA r=16 where a variant says so), float32 weights "
                    "(bf16 autocast where a variant says so), CPU, batch 8, max_length 256, "
                    "lr 1e-4",
        "fits_floor_gb": memory_table(runs[0]["model_config"]),
        "load_average_at_start": list(load_start), "load_average_at_end": list(os.getloadavg()),
        "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
        "platform": platform.platform(), "not_measured": "GPU (no GPU on this machine)"})
    write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "fits_floor_gb"}, indent=1))


if __name__ == "__main__":
    main()
