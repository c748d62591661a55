"""`coretune run`: pool -> embed -> cluster -> target -> select -> train -> evaluate -> report.

Each stage writes into its own folder (see `coretune.run.layout`) with a manifest (see
manifest.py); a stage whose manifest matches is skipped, so re-running a finished run is free
and a killed run resumes at the first unfinished stage. Embeddings are also shared between
runs through the embedding cache. Imports: config, layout, manifest, stages; never the CLI.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from coretune.backends import close_all
from coretune.config import RunConfig
from coretune.data.pool import load_pool
from coretune.data.sources import eval_datasets
from coretune.data.stream import scan_pool
from coretune.errors import CoretuneError
from coretune.io import write_json
from coretune.report.summary import write_run_report
from coretune.run import stages
from coretune.run.layout import SHARED_STAGES, RunLayout
from coretune.run.lock import run_lock
from coretune.run.manifest import Stage
from coretune.run.outputs import Inputs, check_output_folder, first_missing
from coretune.target.cut import DROP_BELOW

Log = Callable[[str], None]


def probe_files(cfg: RunConfig) -> dict[str, Path]:
    """The files behind the `nli` target's probes (the shipped evaluation sets): part of the
    target stage's key, so a changed probe set never reuses stale targets."""
    if cfg.target.spec.strip() != "nli":
        return {}
    files = {}
    for name, ds in sorted(eval_datasets().items()):
        files[f"probe:{name}:data"] = Path(ds.path)
        files[f"probe:{name}:templates"] = Path(ds.templates)
    return files


def pool_inputs(cfg: RunConfig, fn) -> tuple:
    """(config, fn, files) of the pool stage. A pool file is known by its bytes; shards, a
    `datasets` folder or a hub id by the content hash of their validated rows (streamed)."""
    path = cfg.pool.path
    if not path:
        return cfg.pool.model_dump(), fn, {}
    if Path(path).is_file():
        return cfg.pool.model_dump(), fn, {"pool": Path(path)}
    return {**cfg.pool.model_dump(), "content_sha256": scan_pool(path, cfg.pool.columns)["sha256"]
            }, fn, {}


def plan(cfg: RunConfig, run_dir: Path, seed: int, quiet: bool = False,
         shared: Path | None = None) -> list[Stage]:
    """The stages of one seed of a run, in order; `shared`: where the seed-independent stages
    live when not in the run's own `shared/` (a sweep's points share the sweep's)."""
    run = RunLayout(run_dir, dedup=cfg.dedup is not None, shared_root=shared)
    out: list[Stage] = []

    def add(name: str, config, fn, files=None) -> Stage:
        owner = run.shared if name in SHARED_STAGES else run.root
        st = Stage(name, run.stage(name, seed), config, fn,
                   upstream={s.name: s.key() for s in out}, files=files or {}, root=owner)
        out.append(st)
        return st

    model: str | Path = cfg.train.model
    if cfg.select.method != "none":
        add("pool", *pool_inputs(cfg, lambda d: stages.pool_stage(cfg, run, d)))
        if stages.needs_clusters(cfg):
            add("embed", cfg.embed.model_dump(), lambda d: stages.embed_stage(cfg, run, d, quiet))
            if cfg.dedup is not None:
                add("dedup", {"threshold": cfg.dedup}, lambda d: stages.dedup_stage(cfg, run, d))
            add("cluster", cfg.cluster.model_dump(), lambda d: stages.cluster_stage(cfg, run, d))
            # unset, `share` and `by_task` leave the key runs made before they existed; the
            # task step's drop share is in it since that step stopped dropping at one half
            t = cfg.target
            unset = {"share"} if t.share is None else set()
            step = {"drop_below": round(DROP_BELOW, 4)} if t.by_task else {}
            if not t.by_task:
                unset.add("by_task")
            add("target", {**t.model_dump(exclude=unset), **step},
                lambda d: stages.target_stage(cfg, run, d, quiet), probe_files(cfg))
        # unset, or for a method that does not read it, `encoder` leaves the key as before it
        own = set() if stages.select_encoder(cfg) else {"encoder"}
        add("select", {**cfg.select.model_dump(exclude=own), "seed": seed},
            lambda d: stages.select_stage(cfg, run, seed, d, quiet))
        add("train", {**cfg.train.settings(exclude={"save_every", "log_every"}), "seed": seed},
            lambda d: stages.train_stage(cfg, run, seed, d, quiet))
        model = run.model(seed)
    eval_files = {f"{ds.name}:{kind}": Path(getattr(ds, kind))
                  for ds in stages.register_eval_files(cfg) for kind in ("path", "templates")}
    # without per-set caps the key is the one runs made before those caps existed
    plain = set() if cfg.evaluate.max_examples_by_task else {"max_examples_by_task"}
    add("evaluate", {**cfg.evaluate.model_dump(exclude=plain), "model": cfg.train.model},
        lambda d: stages.evaluate_stage(cfg, model, d, quiet), eval_files)
    return out


def config_inputs(cfg: RunConfig) -> Inputs:
    """The user's files a run reads: the pool source, evaluation files and a probe file."""
    inputs = Inputs().pool(cfg.pool.path)
    for spec in cfg.evaluate.eval_files:
        for part in spec.split(":")[1:3]:
            inputs.file(part)
    kind, _, probe = cfg.target.spec.strip().partition(":")
    return inputs.file(probe) if kind == "probe" else inputs


def run(cfg: RunConfig, run_dir: Path, seeds: list[int] | None = None, quiet: bool = False,
        log: Log = print) -> Path:
    """Run every stage for every seed, then the run's report. Returns the report path.
    Before the slow stages, the pool is checked against the settings (k, budget, target)."""
    layout = RunLayout(run_dir)
    check_output_folder(run_dir, config_inputs(cfg))  # stages may remove their own folders
    made = first_missing(run_dir)  # the folder this run creates, if any
    try:
        return _run(cfg, run_dir, layout, seeds, quiet, log)
    except CoretuneError:  # bad input found by the first stage: leave no run folder behind
        if made is not None and not layout.manifests():
            shutil.rmtree(made, ignore_errors=True)
        raise



def _run(cfg: RunConfig, run_dir: Path, layout: RunLayout, seeds: list[int] | None,
         quiet: bool, log: Log) -> Path:
    with run_lock(run_dir):  # a second run on this folder exits 2 naming this pid
        write_json(layout.config, cfg.model_dump())
        try:
            for i, seed in enumerate(seeds or cfg.seeds):
                log(f"== {cfg.name}, seed {seed}")
                for stage in plan(cfg, run_dir, seed, quiet):
                    stage.run(log)
                    if stage.name == "pool" and i == 0 and stages.needs_clusters(cfg):
                        stages.check_select_inputs(cfg, load_pool(layout.source_pool))
        finally:
            close_all()  # embedding actors hold cluster resources
        return write_run_report([run_dir], run_dir)
