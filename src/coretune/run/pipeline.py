"""`coretune run`: pool -> embed -> cluster -> target -> select -> train -> evaluate.

Each stage writes into its own folder (see `coretune.run.layout`) with a manifest (see
`manifest`); a stage whose manifest matches is skipped, so re-running a finished run is free
and a killed run resumes at the first unfinished stage. Embeddings are also shared between
runs through the embedding cache. A stage's key is its config section's (`key()` in
`coretune.config`) plus the keys of the stages before it and the files it reads. The report
is `coretune.report`'s (`run(..., report=)`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from coretune.backends import close_all
from coretune.config import RunConfig
from coretune.data.pool import load_pool
from coretune.data.stream import scan_pool
from coretune.errors import CoretuneError
from coretune.io import write_json
from coretune.run import stages
from coretune.run.layout import SHARED_STAGES, RunLayout
from coretune.run.lock import run_lock
from coretune.run.manifest import Stage
from coretune.run.outputs import Inputs, check_output_folder, first_missing

Log = Callable[[str], None]


def pool_inputs(cfg: RunConfig) -> tuple[dict, dict[str, Path]]:
    """(key, files) of the pool stage. A pool file is known by its bytes; shards, a
    `datasets` folder or a hub id by the content hash of their validated rows (streamed)."""
    path = cfg.pool.path
    if not path:
        return cfg.pool.key(), {}
    if Path(path).is_file():
        return cfg.pool.key(), {"pool": Path(path)}
    return {**cfg.pool.key(), "content_sha256": scan_pool(path, cfg.pool.columns)["sha256"]}, {}


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

    def finder():
        return stages.make_target_finder(cfg.target, cfg.cluster) if cfg.needs_clusters else None

    model: str | Path = cfg.train.model
    e, b = cfg.embed, cfg.backend
    if not cfg.untuned:
        key, files = pool_inputs(cfg)
        add("pool", key, lambda d: stages.pool_stage(cfg.pool, d), files)
        if cfg.needs_clusters:
            add("embed", e.key(), lambda d: stages.embed_stage(e, b, run, d, quiet))
            if cfg.dedup is not None:
                add("dedup", {"threshold": cfg.dedup},
                    lambda d: stages.dedup_stage(cfg.dedup, run, d))
            add("cluster", cfg.cluster.key(),
                lambda d: stages.cluster_stage(cfg.cluster, b, run, d))
            add("target", cfg.target.key(),
                lambda d: stages.target_stage(finder(), e, b, run, d, quiet), cfg.target.files())
        sets = cfg.evaluate.sets()
        decontam = {f"decontaminate:{ds.name}": Path(ds.path) for ds in sets
                    } if cfg.select.decontaminate else {}
        add("select", cfg.select.key(seed),
            lambda d: stages.select_stage(cfg.select, finder(), e, b, run, seed, d, quiet,
                                          sets), decontam)
        t = cfg.train.model_copy(update={"seed": seed})
        add("train", t.key(), lambda d: stages.train_stage(t, run, seed, d, quiet))
        model = run.model(seed)
    add("evaluate", cfg.evaluate.key(cfg.train.model),
        lambda d: stages.evaluate_stage(cfg.evaluate, model, d, quiet), cfg.evaluate.files())
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
        log: Log = print, report: Callable[[Path], Path] | None = None) -> Path | None:
    """Run every stage for every seed, then `report(run_dir)` (e.g. the run report of
    `coretune.report.summary`) while the run folder is still locked; returns its result.
    Before the slow stages, the pool is checked against the settings (k, budget, target)."""
    layout = RunLayout(run_dir)
    check_output_folder(run_dir, config_inputs(cfg))  # stages may remove their own folders
    stages.check_evaluate_inputs(cfg.evaluate, cfg.train.model)
    made = first_missing(run_dir)  # the folder this run creates, if any
    try:
        return _run(cfg, run_dir, layout, seeds, quiet, log, report)
    except CoretuneError:  # bad input found by the first stage: leave no run folder behind
        if made is not None and not layout.manifests():
            shutil.rmtree(made, ignore_errors=True)
        raise


def _run(cfg: RunConfig, run_dir: Path, layout: RunLayout, seeds: list[int] | None,
         quiet: bool, log: Log, report: Callable[[Path], Path] | None) -> Path | None:
    with run_lock(run_dir):  # a second run on this folder exits 2 naming this pid
        write_json(layout.config, cfg.model_dump())
        try:
            for i, seed in enumerate(seeds or cfg.seeds):
                log(f"== {cfg.name}, seed {seed}")
                for stage in plan(cfg, run_dir, seed, quiet):
                    stage.run(log)
                    if stage.name == "pool" and i == 0 and cfg.needs_clusters:
                        stages.check_select_inputs(
                            cfg.cluster, cfg.select,
                            stages.make_target_finder(cfg.target, cfg.cluster),
                            load_pool(layout.source_pool))
        finally:
            close_all()  # embedding actors hold cluster resources
        return report(run_dir) if report else None
