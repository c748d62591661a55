"""Positive controls: does training SmolLM2-135M-Instruct on target rows help it on the target?

A sweep can rank selections only if training on the target beats the untuned model at all.
Each design here trains the default model on a seeded random sample of the shipped pool's
rows of one target (RTE + CB training rows through their promptsource templates), then scores
every RTE and CB dev example through the first `templates` templates and pairs it with the
untuned model on the same items: Δ accuracy (points) and Δ gold-option log-loss (nats, the
log-loss of the gold option under the softmax over the options' scores), each with a paired
bootstrap 95% interval and a paired sign-flip p, and, as everywhere in coretune, + = better
(for log-loss: the untuned model's minus the fine-tune's).

`--target family:NAME` asks the same of a BIG-bench task family instead: the training rows
are the family's rows with answer options in the laptop sweep's pool
(configs/sweep/laptop.yaml), and the evaluation set is up to 300 held-out rows of the same
family that are not in that pool (a seeded sample; each row's prompt as it is, its options
ranked), written under --work.

Resumable: every design's model and predictions stay under --work; a finished design is not
redone. Writes benchmarks/results/bench_control.json (and .md), or
bench_control_family-NAME.json for a family.

    python benchmarks/bench_control.py                 # every design below
    python benchmarks/bench_control.py --designs lr1e-5
    python benchmarks/bench_control.py --target family:logic --designs lr3e-5-400rows-50steps-bf16
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from coretune.config import load_config  # noqa: E402
from coretune.data.pool import Pool  # noqa: E402
from coretune.data.sources import Dataset, bigbench_pool, build_pool, sample_rows  # noqa: E402
from coretune.evaluate import evaluate  # noqa: E402
from coretune.io import write_json, write_text  # noqa: E402
from coretune.run.stages import make_pool  # noqa: E402
from coretune.stats import sign_flip_p  # noqa: E402
from coretune.train import TrainConfig, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
HELDOUT = 300  # evaluation rows of a family target
METRICS = ("accuracy", "logloss", "logloss_norm")
# name -> (rows sampled from the target, TrainConfig fields)
DESIGNS = {
    "lr1e-4-100rows-40steps": (100, {"lr": 1e-4, "max_steps": 40}),
    "lr1e-5-100rows-40steps": (100, {"lr": 1e-5, "max_steps": 40}),
    "lora-lr2e-4-100rows-40steps": (100, {"lr": 2e-4, "max_steps": 40, "lora": True}),
    "lr1e-5-400rows-100steps": (400, {"lr": 1e-5, "max_steps": 100}),
    "lr3e-5-400rows-100steps": (400, {"lr": 3e-5, "max_steps": 100}),
    # bf16 autocast (1.43x per step on this CPU): the first repeats a float32 design above
    "lr1e-5-100rows-40steps-bf16": (100, {"lr": 1e-5, "max_steps": 40, "precision": "bf16"}),
    "lr3e-5-400rows-50steps-bf16": (400, {"lr": 3e-5, "max_steps": 50, "precision": "bf16"}),
    "lr1e-4-400rows-50steps-bf16": (400, {"lr": 1e-4, "max_steps": 50, "precision": "bf16"}),
    "lr3e-5-400rows-100steps-bf16": (400, {"lr": 3e-5, "max_steps": 100, "precision": "bf16"}),
}
BASE = {"batch_size": 8, "micro_batch_size": 2, "max_length": 256, "warmup_ratio": 0.06}


def per_example(pred_file: Path) -> dict[str, dict[str, np.ndarray]]:
    """task -> {'accuracy', 'logloss', 'logloss_norm'} per example (templates averaged),
    example order. `logloss_norm` ranks options by their mean token log-probability instead
    of the sum (what `evaluate.length_norm` does): options of many tokens no longer dominate."""
    t = pq.read_table(pred_file).to_pandas()

    def logloss(r, norm: bool) -> float:
        s = np.asarray(r["logprob"], dtype=np.float64)
        if norm:
            s = s / np.asarray(r["n_tokens"], dtype=np.float64)
        return float(np.logaddexp.reduce(s) - s[r["label"]])

    t["logloss"] = t.apply(logloss, axis=1, norm=False)
    t["logloss_norm"] = t.apply(logloss, axis=1, norm=True)
    out = {}
    for task, g in t.groupby("task", sort=False):
        by = g.groupby("example", sort=True)
        out[str(task)] = {m: by[c].mean().to_numpy(np.float64) for m, c in
                          (("accuracy", "correct"), ("logloss", "logloss"),
                           ("logloss_norm", "logloss_norm"))}
    return out


def paired(a: dict, b: dict, metric: str, seed: int = 0, reps: int = 2000) -> dict:
    """How much better `a` is than `b` on `metric` (accuracy: a - b; log-loss: b - a), the mean
    over eval sets of per-set means (each set weighs the same)."""
    sign = 1.0 if metric == "accuracy" else -1.0
    diffs = [sign * (a[t][metric] - b[t][metric]) for t in a]
    rng = np.random.default_rng(seed)
    boots = np.mean([d[rng.integers(0, len(d), (reps, len(d)))].mean(axis=1) for d in diffs],
                    axis=0)
    scale = 100.0 if metric == "accuracy" else 1.0
    point = float(np.mean([d.mean() for d in diffs]))
    lo, hi = np.percentile(boots, [2.5, 97.5])
    se = float(boots.std(ddof=1))
    return {"delta": scale * point, "ci95": [scale * float(lo), scale * float(hi)],
            "z": point / se if se > 0 else 0.0, "p": sign_flip_p(diffs, rng=rng)}


@dataclass
class Target:
    """Where a design's training rows come from, and what it is scored on."""

    name: str
    tasks: list  # eval set names or Datasets
    rows: Pool

    @property
    def label(self) -> str:
        return "+".join(t if isinstance(t, str) else t.name for t in self.tasks)


def nli_target() -> Target:
    """RTE and CB training rows through every template; RTE and CB dev."""
    return Target("nli", ["rte", "cb"], build_pool(bigbench="none"))


def family_target(family: str, work: Path) -> Target:
    """A BIG-bench family: its rows with options in the laptop sweep's pool to train on, and
    up to HELDOUT rows of it outside that pool (seeded) to score on, one prompt each."""
    pool = make_pool(load_config(ROOT / "configs/sweep/laptop.yaml").pool)
    fam, choices = pool.column("family"), pool.column("choices")
    rows = pool.take(np.flatnonzero([f == family and bool(c) for f, c in
                                     zip(fam, choices, strict=True)]))
    if not len(rows):
        raise SystemExit(f"no rows of family '{family}' with options in the laptop pool")
    inside = set(pool.column("uid"))
    bb = bigbench_pool("full").to_pylist()
    held = [r for r in bb if r["family"] == family and r["uid"] not in inside and r["choices"]
            and r["target"] in r["choices"] and len(set(r["choices"])) == len(r["choices"])]
    rng = np.random.default_rng(0)
    held = [held[i] for i in np.sort(rng.choice(len(held), min(HELDOUT, len(held)),
                                                replace=False))]
    name = f"heldout_{family.replace(' ', '_')}"
    data, templates = work / f"{name}.jsonl", work / f"{name}.templates.yaml"
    write_text(data, "".join(json.dumps({"id": r["uid"], "prompt": r["prompt"],
                                         "choices": r["choices"],
                                         "label": r["choices"].index(r["target"])}) + "\n"
                             for r in held))
    write_text(templates, "dataset: " + name + "\ntemplates:\n  bigbench: !Template\n"
               "    answer_choices: '{{ choices | join(\" ||| \") }}'\n    id: bigbench\n"
               "    jinja: '{{ prompt }} ||| {{ answer_choices[label] }}'\n"
               "    name: bigbench zero-shot\n")
    return Target(f"family:{family}", [Dataset(name, data, templates, None, family,
                                               ("prompt",))], rows)


def score(model, out: Path, target: Target, templates: int) -> dict:
    if not (out / "predictions.parquet").is_file():
        evaluate(str(model), target.tasks, max_templates=templates, seed=0, output_dir=out,
                 quiet=True)
    return per_example(out / "predictions.parquet")


def run_design(name: str, target: Target, work: Path, templates: int, base: dict,
               seed: int) -> dict:
    rows, fields = DESIGNS[name]
    folder = work / f"{name}-seed{seed}"
    data = sample_rows(target.rows, rows, seed=seed)
    cfg = TrainConfig(**{**BASE, **fields, "seed": seed})
    start = time.perf_counter()
    train(data, config=cfg, output_dir=folder / "model", quiet=True)
    train_s = time.perf_counter() - start
    tuned = score(folder / "model", folder / f"eval-{templates}t", target, templates)
    log = [json.loads(x) for x in (folder / "model/train_log.jsonl").read_text().splitlines()]
    return {"design": name, "seed": seed, "rows": len(data), "train": cfg.model_dump(),
            "epochs_seen": round(cfg.max_steps * cfg.batch_size / len(data), 2),
            "train_seconds_this_run": round(train_s, 1),
            "first_loss": log[0]["loss"], "last_loss": log[-1]["loss"],
            **{m: paired(tuned, base, m) for m in METRICS}}


def markdown(doc: dict) -> str:
    lines = [f"# Positive controls on {doc['eval']} ({doc['templates']} template(s), "
             f"{doc['n_examples']} examples, paired with the untuned model)", "",
             "| design | rows | steps x batch | epochs | Δ acc (points) | p | Δ log-loss (nats) "
             "| p | Δ log-loss, length-normalised | p |", "|---" * 10 + "|"]

    def cell(d: dict | None, digits: int) -> str:
        if d is None:
            return "– | –"
        return (f"{d['delta']:+.{digits}f} [{d['ci95'][0]:+.{digits}f}, "
                f"{d['ci95'][1]:+.{digits}f}] | {d['p']:.3g}")

    for r in doc["designs"]:
        lines.append(f"| {r['design']} (seed {r['seed']}) | {r['rows']} | "
                     f"{r['train']['max_steps']} x {r['train']['batch_size']} | "
                     f"{r['epochs_seen']} | {cell(r['accuracy'], 1)} | {cell(r['logloss'], 3)} | "
                     f"{cell(r.get('logloss_norm'), 3)} |")
    lines += ["", "+ = better (log-loss: the untuned model's minus the fine-tune's). A design is "
              "a positive control when its Δ log-loss is > 0 with p < 0.01. Length-normalised: "
              "options ranked by their mean token log-probability, not the sum (– where the "
              "design's predictions are no longer at hand).", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--designs", default=",".join(DESIGNS))
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--templates", type=int, default=1)
    ap.add_argument("--target", default="nli", help="nli, or family:NAME (a BIG-bench family)")
    ap.add_argument("--work", type=Path, default=Path("runs/bench_control"))
    args = ap.parse_args()
    if args.target == "nli":
        target, work, out = nli_target(), args.work, RESULTS / "bench_control.json"
    else:
        family = args.target.removeprefix("family:")
        slug = family.replace(" ", "-")
        work = args.work / f"family-{slug}"
        target, out = family_target(family, work), RESULTS / f"bench_control_family-{slug}.json"
    base = score("default", work / f"untuned-eval-{args.templates}t", target, args.templates)
    doc = json.loads(out.read_text()) if out.is_file() else {}
    if doc.get("templates") != args.templates:
        doc = {"templates": args.templates, "designs": []}
    doc.update({"target": target.name, "eval": target.label, "train_rows": len(target.rows),
                "n_examples": int(sum(len(v["accuracy"]) for v in base.values()))})
    for r in doc["designs"]:  # metrics added since a design ran, from its predictions
        pred = work / f"{r['design']}-seed{r['seed']}" / f"eval-{args.templates}t" / \
            "predictions.parquet"
        if any(m not in r for m in METRICS) and pred.is_file():
            r.update({m: paired(per_example(pred), base, m) for m in METRICS})
    for name in args.designs.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            if any(r["design"] == name and r["seed"] == seed for r in doc["designs"]):
                continue
            r = run_design(name, target, work, args.templates, base, seed)
            doc["designs"].append(r)
            write_json(out, doc)
            write_text(out.with_suffix(".md"), markdown(doc))
            print(json.dumps({k: r[k] for k in ("design", "seed", *METRICS)}))
    write_json(out, doc)
    write_text(out.with_suffix(".md"), markdown(doc))


if __name__ == "__main__":
    main()
