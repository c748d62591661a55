"""`coretune sweep`: a config over many budgets, methods and seeds (coretune.run.sweep)."""

from __future__ import annotations

from pathlib import Path

import typer

from coretune.models import silence_progress_bars


def _items(text: str | None, option: str) -> list[str] | None:
    """A comma-separated option as a list (None when not given); an empty list is an error."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        from coretune.errors import CoretuneError

        raise CoretuneError(f"empty list '{text}'", field=f"sweep.{option}")
    return items


def sweep(
    config: Path = typer.Argument(..., help="Experiment YAML; its `sweep:` block holds the "
                                  "defaults of the options below (see configs/sweep/)."),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. train.epochs=2"),
    budgets: str = typer.Option(None, help="Comma-separated budgets: shares of the pool "
                                "('0.5%'), row counts ('25') or 'all' (every target row)."),
    methods: str = typer.Option(None, help="Comma-separated selection methods, e.g. "
                                "kcenter,random."),
    seeds: str = typer.Option(None, help="Comma-separated seeds (default: the sweep block's, "
                              "else the config's)."),
    out: Path = typer.Option(None, "--out", help="Sweep folder (default: runs/<name>-sweep, "
                             "runs/<name>-quick with --quick)."),
    with_: list[Path] = typer.Option([], "--with", help="YAML merged over the config; "
                                     "repeatable."),
    quick: bool = typer.Option(False, "--quick", help="Tiny preset for a demo or a test: "
                               "4 training steps of 2 rows, 8 examples x 1 template per "
                               "eval set, the first seed only (unless --seeds)."),
    phase: str = typer.Option("all", help="all | select (shared stages and every point's "
                              "selection, no model) | train (untuned evaluation, training, "
                              "evaluation and report from a select phase's selections)."),
    pack: Path = typer.Option(None, "--pack", help="With --phase select: also copy what the "
                              "train phase reads (configs, selections, manifests; no pool or "
                              "embeddings) into this new folder, to carry to a GPU machine."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """A config at many budgets, methods and seeds, each paired with the untuned model.

    One point per budget x method x seed, sharing pool, embeddings, clusters and target;
    writes sweep.json/.md/.csv with paired intervals, the positive control, the knee per
    method and the training-free predictors.

    Resumable: finished stages are skipped, so re-running or adding a budget costs only the
    new points.

    On two machines: `--phase select --pack DIR` where the pool and encoder are, then
    `--phase train --out DIR` with the same config where the GPU is."""
    from coretune.config import load_config, validate
    from coretune.errors import CoretuneError
    from coretune.report.sweep import write_sweep_report
    from coretune.run.layout import SweepLayout
    from coretune.run.sweep import QUICK, QUICK_STEPS, pack as pack_sweep
    from coretune.run.sweep import run_sweep

    if pack is not None and phase != "select":
        raise CoretuneError("--pack goes with --phase select", field="pack")
    if pack is not None and pack.exists():
        raise CoretuneError("the pack folder already exists; name a new one", path=pack)

    if quiet:
        silence_progress_bars()
    cfg = load_config(config, [*(overrides or []), *(QUICK if quick else [])], with_)
    flags = {"budgets": _items(budgets, "budgets"), "methods": _items(methods, "methods")}
    if seeds is not None:
        try:
            flags["seeds"] = [int(s) for s in _items(seeds, "seeds")]
        except ValueError as e:
            raise CoretuneError(f"seeds must be integers, got '{seeds}'",
                                field="sweep.seeds") from e
    raw = cfg.model_dump()
    raw["sweep"] = {**(raw["sweep"] or {}), **{k: v for k, v in flags.items() if v is not None}}
    if quick and seeds is None:  # one seed unless asked for more
        raw["sweep"]["seeds"] = [(raw["sweep"].get("seeds") or cfg.seeds)[0]]
    if quick and raw["sweep"].get("train_steps"):  # compute-matched, and tiny
        raw["sweep"]["train_steps"] = QUICK_STEPS
    cfg = validate(raw)  # flags are checked like the block: one line naming the value
    folder = out or Path("runs") / f"{cfg.name}-{'quick' if quick else 'sweep'}"
    typer.echo(f"sweep {cfg.name} -> {folder} | evaluation caps: {cfg.evaluate.caps_text()}")
    md = run_sweep(cfg, folder, quiet, log=typer.echo, report=write_sweep_report, phase=phase)
    if md is None:  # the select phase
        where = pack_sweep(SweepLayout(folder), pack) if pack is not None else folder
        typer.echo(f"selections ready in {where}: run coretune sweep {config} --phase train "
                   f"--out {where} (same config and options) where the model trains")
        return
    typer.echo(md.read_text())
    typer.echo(f"wrote {md}, {md.with_suffix('.json')}, {md.with_suffix('.csv')}, "
               f"{md.with_name('report.html')}")
