"""`coretune sweep`: one config, many budgets and methods, every point paired with the untuned
model on the same evaluation examples.

A sweep expands a config into points (budget x method x seed). A point is a run of the
pipeline's own stages (`pipeline.plan`) whose seed-independent stages (pool, embed, [dedup,]
cluster, target) are the sweep's, computed once in `<sweep>/shared/`; the untuned model is
evaluated once in `<sweep>/untuned/`. Manifests make it resumable like `coretune run`: a
finished sweep re-runs for free, a killed one resumes, and a new budget runs only its points.
Budget `all` is one point (every target row; the same rows whatever the method). Each point
trains train.epochs over its own rows (the epoch design), or with `sweep.train_steps` the same
number of full optimizer steps as every other point (compute-matched: budgets differ in data,
not in compute).

Points are not cut from one large selection: each selects on its own (cheap next to training).
k-center picks each cluster's rows in a prefix order, so a smaller budget's selection is the
per-cluster prefix of a larger one wherever the per-cluster split of the budget does not shrink
a cluster's share (tests/test_sweep.py shows both). The report is `coretune.report.sweep`'s.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from coretune.backends import close_all
from coretune.config import RunConfig, SweepConfig, check_pool_scope
from coretune.errors import CoretuneError
from coretune.io import atomic_dir, make_dir, read_json, write_json
from coretune.run import stages
from coretune.run.layout import (CONFIG_FILE, SEED_STAGES, SHARED_STAGES, RunLayout,
                                 SweepLayout, point_name)
from coretune.run.lock import run_lock
from coretune.run.manifest import MANIFEST
from coretune.run.outputs import check_output_folder, first_missing
from coretune.run.pipeline import config_inputs, plan
from coretune.select import resolve_budget
from coretune.select.budget import ALL

Log = Callable[[str], None]

# `--quick`: the same sweep, tiny (a demo or a test in minutes, not a result); a
# compute-matched sweep trains QUICK_STEPS steps too (cli/sweep.py).
QUICK_STEPS = 4
# `--phase`: all stages here, or split between a machine that selects and one that trains
PHASES = ("all", "select", "train")
SELECT_STAGES = (*SHARED_STAGES, "select")  # what the select phase runs

QUICK = [f"train.max_steps={QUICK_STEPS}", "train.batch_size=2", "train.micro_batch_size=",
         "evaluate.max_examples=8", "evaluate.max_templates=1"]


@dataclass(frozen=True)
class Point:
    """One point of a sweep: a method at a budget with one seed."""

    method: str  # `all` for the budget that takes every target row
    budget: str
    seed: int

    @property
    def label(self) -> str:
        return ALL if self.budget == ALL else f"{self.method} {self.budget}"


def spec_of(cfg: RunConfig) -> SweepConfig:
    """The config's sweep block (defaults where it has none), its seeds filled in."""
    spec = cfg.sweep or SweepConfig()
    return spec.model_copy(update={"seeds": spec.seeds or list(cfg.seeds)})


def check_scope(cfg: RunConfig, spec: SweepConfig) -> None:
    """With `scope: pool` every method selects from the whole pool (as `METHOD@pool` does):
    refuse one that cannot before any work rather than at its first point."""
    if cfg.select.scope != "pool":
        return
    for m in spec.methods:
        try:
            check_pool_scope(m.partition("@")[0])
        except ValueError as e:
            raise CoretuneError(f"{e} (select.scope is 'pool')", field="sweep.methods") from None


def point_config(cfg: RunConfig, method: str, budget: str) -> RunConfig:
    """The run config of one point: the base config with its method and budget
    (`METHOD@pool`: the method over the whole pool); with `sweep.train_steps`, that many
    full optimizer steps whatever the budget."""
    is_all = budget == ALL
    name, at, _ = method.partition("@")
    select = cfg.select.model_copy(update={"method": ALL if is_all else name,
                                           "budget": "100%" if is_all else budget,
                                           "scope": "pool" if at else cfg.select.scope})
    train, steps = cfg.train, spec_of(cfg).train_steps
    if steps is not None:
        train = train.model_copy(update={"max_steps": steps, "full_steps": True})
    return cfg.model_copy(update={"name": f"{cfg.name}/{point_name(method, budget)}",
                                  "select": select, "train": train, "sweep": None})


def untuned_config(cfg: RunConfig) -> RunConfig:
    return cfg.as_untuned(f"{cfg.name}/untuned")


def resolve_budgets(budgets: list[str], pool_rows: int, target_rows: int) -> dict[str, int]:
    """Budget -> rows, smallest first (`all` = the target rows). A budget above the target
    set, or two budgets that come to the same rows, is a CoretuneError naming them."""
    counts: dict[str, int] = {}
    for b in budgets:
        n = target_rows if b == ALL else resolve_budget(b, pool_rows)
        if n > target_rows:
            raise CoretuneError(f"budget '{b}' is {n} rows, more than the target clusters "
                                f"hold ({target_rows} rows; 'all' takes every one)",
                                field="sweep.budgets")
        same = [o for o, m in counts.items() if m == n]
        if same:
            raise CoretuneError(f"budgets '{same[0]}' and '{b}' are both {n} rows of this pool",
                                field="sweep.budgets")
        counts[b] = n
    return dict(sorted(counts.items(), key=lambda kv: kv[1]))


def expand(spec: SweepConfig, counts: dict[str, int]) -> list[Point]:
    """The points, smallest budget first (then method, then seed): early results first."""
    return [Point(m, b, s) for b in counts for m in ([ALL] if b == ALL else spec.methods)
            for s in spec.seeds]


def _shared_sizes(run: RunLayout) -> tuple[int, int]:
    """(rows of the pool the selection works on, rows of the target clusters)."""
    pool_rows = pq.read_metadata(run.pool_file).num_rows
    if not run.done("target"):  # `scope: pool`: no target clusters, the pool is the target
        return pool_rows, pool_rows
    return pool_rows, int(read_json(run.target_json)["rows"])


# (layout, config, sweep block, budget -> rows, points) -> the report's path
Report = Callable[[SweepLayout, RunConfig, SweepConfig, dict[str, int], list[Point]], Path]


def run_sweep(cfg: RunConfig, out: Path, quiet: bool = False, log: Log = print,
              report: Report | None = None, phase: str = "all") -> Path | None:
    """Shared stages, then the budget checks, the untuned evaluation and every point; then
    `report` (`coretune.report.sweep.write_sweep_report`: sweep.json/.md/.csv) while the
    sweep's folder is still locked. Returns what `report` returns.

    `phase` splits a sweep between machines: "select" runs the shared stages and every
    point's selection and writes selections.json (no model is loaded); "train" runs the
    untuned evaluation, every point's training and evaluation and the report from selections
    made by a "select" phase (carried with `pack`), never the stages before them."""
    if phase not in PHASES:
        raise CoretuneError(f"unknown phase '{phase}' (one of {', '.join(PHASES)})",
                            field="phase")
    if cfg.untuned:
        raise CoretuneError("a sweep trains every point and evaluates the untuned model "
                            "itself (<sweep>/untuned/); remove untuned: true (or "
                            "select.method: none, its old spelling)", field="untuned")
    spec = spec_of(cfg)
    check_scope(cfg, spec)
    layout = SweepLayout(out, dedup=cfg.dedup is not None)
    check_output_folder(out, config_inputs(cfg))  # stages may remove their own folders
    if phase != "select":
        stages.check_evaluate_inputs(cfg.evaluate, cfg.train.model)
    made = first_missing(out)
    try:
        return _sweep(cfg, spec, layout, quiet, log, report, phase)
    except CoretuneError:  # bad input found by the first stage: leave no sweep folder behind
        if made is not None and not any(layout.shared.glob(f"*/{MANIFEST}")):
            shutil.rmtree(made, ignore_errors=True)
        raise


def _sweep(cfg: RunConfig, spec: SweepConfig, layout: SweepLayout, quiet: bool,
           log: Log, report: Report | None, phase: str) -> Path | None:
    out = layout.root
    with run_lock(out):  # a second sweep on this folder exits 2 naming this pid
        write_json(layout.config, cfg.model_dump())
        try:
            counts = (_selected_counts(layout, spec) if phase == "train"
                      else _shared(cfg, spec, layout, quiet, log))
            points = expand(spec, counts)
            if phase == "train":
                _check_selected(cfg, layout, points)
            if phase != "select":
                base = untuned_config(cfg)
                write_json(layout.untuned.config, base.model_dump())
                for stage in plan(base, layout.untuned.root, 0, quiet):
                    stage.run(lambda m: log(f"[untuned] {m}"))
            for i, p in enumerate(points, 1):
                _run_point(cfg, layout, p, quiet, lambda m, i=i, p=p: log(
                    f"[{i}/{len(points)}] {p.label} seed {p.seed}: {m}"), phase)
            if phase == "select":  # written last: it says every selection finished
                write_json(layout.selections, {"budgets": counts})
        finally:
            close_all()  # embedding actors hold cluster resources
        if phase == "select":
            return None
        return report(layout, cfg, spec, counts, points) if report else None


def _shared(cfg: RunConfig, spec: SweepConfig, layout: SweepLayout, quiet: bool,
            log: Log) -> dict[str, int]:
    """The shared stages of a point inside the target (a METHOD@pool point may need no
    clusters), so the budget check sees the target clusters; budget -> rows."""
    method = next((m for m in spec.methods if "@" not in m), spec.methods[0])
    first = layout.point(method, spec.budgets[0])
    for stage in plan(point_config(cfg, method, spec.budgets[0]), first.root,
                      spec.seeds[0], quiet, shared=layout.shared):
        if stage.name in SHARED_STAGES:
            stage.run(lambda m: log(f"[shared] {m}"))
    return resolve_budgets(spec.budgets, *_shared_sizes(first))


def _selected_counts(layout: SweepLayout, spec: SweepConfig) -> dict[str, int]:
    """budget -> rows as the "select" phase resolved them; every budget asked for must be
    there (its points' selections are checked point by point)."""
    if not layout.selections.is_file():
        raise CoretuneError("no selections here: run this sweep with --phase select first "
                            "(where the pool and the encoder are) and carry its --pack "
                            "folder here", path=layout.selections)
    known = read_json(layout.selections)["budgets"]
    missing = [b for b in spec.budgets if b not in known]
    if missing:
        raise CoretuneError(f"budget(s) {', '.join(missing)} were not selected by the select "
                            "phase", path=layout.selections, field="sweep.budgets")
    return {b: int(n) for b, n in known.items() if b in spec.budgets}


def _check_selected(cfg: RunConfig, layout: SweepLayout, points: list[Point]) -> None:
    """Before any work of the "train" phase: every point's selection is there, made with
    this config (its select stage's key and files match)."""
    for p in points:
        select = next(s for s in plan(point_config(cfg, p.method, p.budget),
                                      layout.point(p.method, p.budget).root, p.seed,
                                      shared=layout.shared) if s.name == "select")
        if select.done() is None:
            raise CoretuneError(f"{p.label} seed {p.seed} has no selection made with this "
                                "config; run --phase select with it first", path=select.folder)


def _run_point(cfg: RunConfig, layout: SweepLayout, p: Point, quiet: bool, log: Log,
               phase: str = "all") -> None:
    pc = point_config(cfg, p.method, p.budget)
    run = layout.point(p.method, p.budget)
    write_json(run.config, pc.model_dump())
    for stage in plan(pc, run.root, p.seed, quiet, shared=layout.shared):
        if phase == "train" and stage.name in SELECT_STAGES:
            continue  # _check_selected found its selection
        if stage.name in SEED_STAGES or stage.done() is None:  # _shared ran the shared ones
            stage.run(log)
        if phase == "select" and stage.name == "select":
            return


def pack(layout: SweepLayout, dest: Path) -> Path:
    """Copy what the "train" phase reads into the new folder `dest`: the sweep's and points'
    configs, selections.json, every point's select folder and the shared stages' manifests
    (their seconds go into the cost table); not the pool, embeddings or clusters."""
    if not layout.selections.is_file():
        raise CoretuneError("nothing to pack: the select phase has not finished here",
                            path=layout.selections)
    if dest.exists():
        raise CoretuneError("the pack folder already exists; name a new one", path=dest)
    files = [layout.config, layout.selections, *layout.shared.glob(f"*/{MANIFEST}"),
             *layout.points.glob(f"*/{CONFIG_FILE}"),
             *(f for f in layout.points.glob("*/seed-*/select/**/*") if f.is_file())]
    with atomic_dir(dest) as tmp:
        for f in files:
            target = tmp / f.relative_to(layout.root)
            make_dir(target.parent)
            shutil.copy2(f, target)
    return dest
