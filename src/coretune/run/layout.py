"""Where a run keeps its files: the one description of a run folder.

    <run>/config.json                 the validated config
    <run>/shared/<stage>/             seed-independent stages: pool, embed, [dedup,] cluster,
                                      target (with dedup on, later stages read its pool and
                                      embeddings instead of the pool's and embed's)
    <run>/seed-<N>/<stage>/           the rest: select, train, evaluate
    <run>/table.md, table.csv, report.html, report.md

A sweep (`coretune sweep`, SweepLayout) shares one set of shared stages between its points:

    <sweep>/config.json, sweep.json, sweep.md, sweep.csv, selections.json (--phase select)
    <sweep>/shared/<stage>/           pool, embed, [dedup,] cluster, target, computed once
    <sweep>/untuned/seed-0/evaluate/  the untuned model, the reference of every point
    <sweep>/points/<method>-<budget>/ one run folder per point (config.json, seed-N/...)
                                      whose shared stages are the sweep's

The pipeline, the stages, the summary and the CLI all ask this object for paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from coretune.io import read_json
from coretune.run.manifest import MANIFEST
from coretune.select.budget import ALL

CONFIG_FILE = "config.json"
SHARED_STAGES = ("pool", "embed", "dedup", "cluster", "target")
SEED_STAGES = ("select", "train", "evaluate")


@dataclass(frozen=True)
class RunLayout:
    root: Path
    dedup: bool = False  # near-duplicates removed after embedding (config `dedup:`)
    shared_root: Path | None = None  # a sweep point reads the sweep's shared stages

    @classmethod
    def of(cls, root: Path) -> RunLayout:
        """The layout of an existing run, as its config.json describes it."""
        cfg = read_json(root / CONFIG_FILE) if (root / CONFIG_FILE).is_file() else {}
        sweep = SweepLayout(root.parent.parent)  # a sweep's point reads its shared stages
        shared = sweep.shared if sweep.holds(root) else None
        return cls(root, dedup=cfg.get("dedup") is not None, shared_root=shared)

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def shared(self) -> Path:
        return self.shared_root or self.root / "shared"

    def seed_dir(self, seed: int) -> Path:
        return self.root / f"seed-{seed}"

    def stage(self, name: str, seed: int | None = None) -> Path:
        """The folder of stage `name` (seed stages need the seed)."""
        if name in SHARED_STAGES:
            return self.shared / name
        if name not in SEED_STAGES or seed is None:
            raise ValueError(f"stage '{name}' needs a seed" if name in SEED_STAGES
                             else f"unknown stage '{name}'")
        return self.seed_dir(seed) / name

    def done(self, name: str, seed: int | None = None) -> bool:
        """Whether the stage finished (its manifest is written last)."""
        return (self.stage(name, seed) / MANIFEST).is_file()

    @property
    def source_pool(self) -> Path:
        """The pool as built, before any dedup."""
        return self.stage("pool") / "pool.parquet"

    @property
    def pool_file(self) -> Path:
        """The pool the selection works on (deduplicated when dedup is on)."""
        return self.stage("dedup") / "pool.parquet" if self.dedup else self.source_pool

    @property
    def embeddings(self) -> Path:
        """The folder of the embeddings aligned with `pool_file`."""
        return self.stage("dedup") if self.dedup else self.stage("embed")

    @property
    def target_json(self) -> Path:
        return self.stage("target") / "target.json"

    @property
    def target_rows(self) -> Path:
        """bool [n]: the target rows (what the rule, votes and by_task decided)."""
        return self.stage("target") / "rows.npy"

    def subset(self, seed: int) -> Path:
        return self.stage("select", seed) / "subset.parquet"

    def selection(self, seed: int) -> Path:
        return self.stage("select", seed) / "subset.selection.parquet"

    def model(self, seed: int) -> Path:
        return self.stage("train", seed) / "model"

    def metrics(self, seed: int) -> Path:
        return self.stage("evaluate", seed) / "metrics.json"

    def predictions(self, seed: int) -> Path:
        return self.stage("evaluate", seed) / "predictions.parquet"

    @property
    def table_md(self) -> Path:
        return self.root / "table.md"

    def manifests(self) -> list[Path]:
        """Every stage manifest of the run (shared first, then the seeds)."""
        return [*self.shared.glob(f"*/{MANIFEST}"), *self.root.glob(f"seed-*/*/{MANIFEST}")]

    def evaluated_seeds(self) -> list[int]:
        """Seeds whose evaluation finished, ascending."""
        seeds = []
        for d in self.root.glob("seed-*"):
            num = d.name.removeprefix("seed-")
            if num.lstrip("-").isdigit() and self.done("evaluate", int(num)):
                seeds.append(int(num))
        return sorted(seeds)


def point_name(method: str, budget: str) -> str:
    """A sweep point's folder: 'kcenter', '0.5%' -> 'kcenter-0.5pct'; budget `all` -> 'all'
    (every target row, whatever the method)."""
    return ALL if budget == ALL else f"{method}-{budget.replace('%', 'pct')}"


@dataclass(frozen=True)
class SweepLayout:
    root: Path
    dedup: bool = False

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def shared(self) -> Path:
        return self.root / "shared"

    @property
    def untuned(self) -> RunLayout:
        return RunLayout(self.root / "untuned")

    @property
    def points(self) -> Path:
        return self.root / "points"

    def point(self, method: str, budget: str) -> RunLayout:
        """The run folder of one point; its shared stages are the sweep's."""
        return RunLayout(self.points / point_name(method, budget), self.dedup, self.shared)

    def holds(self, run_root: Path) -> bool:
        """Whether `run_root` is one of this sweep's point folders."""
        return run_root.parent == self.points and self.config.is_file()

    def runs(self) -> list[Path]:
        """The untuned run and every point folder (empty when this is not a sweep)."""
        if not (self.points.is_dir() and self.untuned.config.is_file()):
            return []
        return [self.untuned.root, *(c.parent for c in self.points.glob(f"*/{CONFIG_FILE}"))]

    @property
    def selections(self) -> Path:
        """Budget -> rows, written by `coretune sweep --phase select` once every selection is made."""
        return self.root / "selections.json"

    def report(self, suffix: str) -> Path:
        return self.root / f"sweep.{suffix}"
