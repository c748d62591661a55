"""`coretune run` (the whole pipeline from a config) and `coretune table` (collect runs)."""

from __future__ import annotations

from pathlib import Path

import typer

from coretune.backends import backend_names
from coretune.cli.options import option
from coretune.config import BackendConfig
from coretune.models import silence_progress_bars


def _backends() -> str:
    return ", ".join(backend_names())


def run(
    config: Path = typer.Argument(..., help="Experiment YAML (see configs/)."),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. "
                                          "select.budget=1% train.epochs=2"),
    seeds: str = typer.Option(None, help="Comma-separated seeds, e.g. 0,1,2 (default: config)."),
    with_: list[Path] = typer.Option([], "--with", help="YAML merged over the config "
                                     "(e.g. configs/cpu.yaml); repeatable."),
    runs_dir: Path = typer.Option(Path("runs"), help="Where run folders go."),
    full_eval: bool = typer.Option(False, "--full-eval",
                                   help="Drop the evaluation caps of the config."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    backend: str = option(BackendConfig, "name", "--backend", default=None, listed=_backends,
                          help="Where embedding, labelling and selection run (default: the "
                          "config's backend.name)."),
    address: str = option(BackendConfig, "address", default=None),
) -> None:
    """Run pool -> embed -> cluster -> target -> select -> train -> evaluate -> report.

    Finished stages are skipped; a killed run resumes at the first unfinished stage."""
    from coretune.config import load_config
    from coretune.errors import CoretuneError
    from coretune.evaluate import per_example_accuracy
    from coretune.report.summary import write_run_report
    from coretune.report.table import seed_line
    from coretune.run.layout import RunLayout
    from coretune.run.pipeline import run as run_pipeline

    if quiet:
        silence_progress_bars()
    extra = list(overrides or [])
    if full_eval:
        extra += ["evaluate.max_examples=", "evaluate.max_examples_by_task={}",
                  "evaluate.max_templates="]
    if backend:
        extra.append(f"backend.name={backend}")
    if address:
        extra.append(f"backend.address={address}")
    cfg = load_config(config, extra, with_)
    chosen = None
    if seeds:
        try:
            chosen = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError as e:
            raise CoretuneError(f"seeds must be integers, got '{seeds}'", field="seeds") from e
        if any(s < 0 for s in chosen):
            raise CoretuneError(f"seeds must be >= 0, got '{seeds}'", field="seeds")
    run_dir = runs_dir / cfg.name
    typer.echo(f"run {cfg.name} -> {run_dir} | evaluation caps: {cfg.evaluate.caps_text()}")
    report = run_pipeline(cfg, run_dir, chosen, quiet,
                          report=lambda d: write_run_report([d], d))
    layout = RunLayout(run_dir)
    for seed in chosen or cfg.seeds:  # each seed alone, with the table's intervals
        typer.echo(seed_line(f"{cfg.name} seed {seed}",
                             per_example_accuracy(layout.predictions(seed))))
    typer.echo(layout.table_md.read_text())
    typer.echo(f"report: {report}")


def table(
    paths: list[Path] = typer.Argument(..., help="Run folders, or folders holding runs."),
    output: Path = typer.Option(None, "-o", "--output", help="Folder for table.md/.csv and "
                                "report.html (default: the common parent of the runs)."),
    title: str = typer.Option("coretune results", help="Report title."),
    reference: str = typer.Option(None, help="Run name every row is paired against "
                                  "(default: the untuned run, if any)."),
) -> None:
    """Paper-style table of finished runs, with 95% intervals, and report.html.

    Columns RTE, CB, ANLI R1-R3 and Avg, intervals over seeds and examples, next to
    the paper's numbers (docs/method.md); writes table.md, table.csv and report.html."""
    import os

    from coretune.report.summary import find_runs, write_run_report

    runs = find_runs(paths)
    out = output or Path(os.path.commonpath([str(r.parent) for r in runs]))
    report = write_run_report(paths, out, title, reference)
    typer.echo((out / "table.md").read_text())
    typer.echo(f"wrote {out / 'table.md'}, {out / 'table.csv'}, {report}")
