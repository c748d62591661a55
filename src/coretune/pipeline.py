"""`coretune run`: pool -> embed -> cluster -> target -> select -> train -> evaluate -> report.

Each stage writes into its own folder with a manifest (see manifest.py); a stage whose manifest
matches is skipped, so re-running a finished run is free and a killed run resumes at the first
unfinished stage. Seed-independent stages live in `<run>/shared/`, the rest in `<run>/seed-N/`.
Embeddings are also shared between runs through the embedding cache.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from coretune.config import RunConfig
from coretune.io import read_json, write_json
from coretune.manifest import Stage

Log = Callable[[str], None]


def needs_clusters(cfg: RunConfig) -> bool:
    return cfg.select.method not in ("none", "pool") and cfg.select.scope == "target"


def plan(cfg: RunConfig, run_dir: Path, seed: int, quiet: bool = False) -> list[Stage]:
    """The stages of one seed of a run, in order."""
    from coretune import stages

    shared, own = run_dir / "shared", run_dir / f"seed-{seed}"
    out: list[Stage] = []

    def add(name: str, folder: Path, config, fn, files=None) -> Stage:
        st = Stage(name, folder / name, config, fn,
                   upstream={s.name: s.key() for s in out}, files=files or {})
        out.append(st)
        return st

    pool_files = {"pool": Path(cfg.pool.path)} if cfg.pool.path else {}
    if cfg.select.method != "none":
        pool = add("pool", shared, cfg.pool.model_dump(),
                   lambda d: stages.build_pool_stage(cfg, d), pool_files)
        if needs_clusters(cfg):
            add("embed", shared, cfg.embed.model_dump(),
                lambda d: stages.embed_stage(cfg, pool.folder, d, quiet))
            add("cluster", shared, cfg.cluster.model_dump(),
                lambda d: stages.cluster_stage(cfg, pool.folder, shared / "embed", d))
            add("target", shared, cfg.target.model_dump(),
                lambda d: stages.target_stage(cfg, pool.folder, shared, d, quiet))
        select = add("select", own, {**cfg.select.model_dump(), "seed": seed},
                     lambda d: stages.select_stage(cfg, pool.folder, shared, seed, d))
        train = add("train", own, {**cfg.train.model_dump(exclude={"save_every", "log_every"}),
                                   "seed": seed},
                    lambda d: stages.train_stage(cfg, select.folder, seed, d, quiet))
        model_dir: Path | None = train.folder
    else:
        model_dir = None
    add("evaluate", own, {**cfg.evaluate.model_dump(), "model": cfg.train.model},
        lambda d: stages.evaluate_stage(cfg, model_dir, d, quiet))
    return out


def run(cfg: RunConfig, run_dir: Path, seeds: list[int] | None = None, quiet: bool = False,
        log: Log = print) -> Path:
    """Run every stage for every seed, then the run's report. Returns the report path."""
    from coretune.backends import close_all
    from coretune.lock import run_lock
    from coretune.stages import report_stage

    with run_lock(run_dir):  # a second run on this folder exits 2 naming this pid
        write_json(run_dir / "config.json", cfg.model_dump())
        try:
            for seed in seeds or cfg.seeds:
                log(f"== {cfg.name}, seed {seed}")
                for stage in plan(cfg, run_dir, seed, quiet):
                    stage.run(log)
        finally:
            close_all()  # embedding actors hold cluster resources
        return report_stage([run_dir], run_dir)


def run_config(run_dir: Path) -> dict:
    return read_json(run_dir / "config.json")
