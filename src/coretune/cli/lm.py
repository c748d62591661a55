"""`coretune train` and `coretune evaluate` (registered as top-level commands)."""

from __future__ import annotations

from pathlib import Path

import typer

from coretune.cli.options import option
from coretune.config import EVAL_SEED, EvaluateConfig
from coretune.train import TrainConfig


def train(
    data: Path = typer.Option(..., "--data", help="Subset or pool (.parquet, .jsonl, .csv)."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the model/adapter."),
    model: str = option(TrainConfig, "model"),
    lora: bool = option(TrainConfig, "lora", "--lora"),
    lr: float = option(TrainConfig, "lr"),
    epochs: float = option(TrainConfig, "epochs"),
    max_steps: int | None = option(TrainConfig, "max_steps"),
    batch_size: int = option(TrainConfig, "batch_size"),
    grad_accum: int = option(TrainConfig, "grad_accum"),
    micro_batch_size: int | None = option(TrainConfig, "micro_batch_size"),
    gradient_checkpointing: bool = option(TrainConfig, "gradient_checkpointing",
                                          "--gradient-checkpointing"),
    pass_tokens: int | None = option(TrainConfig, "pass_tokens"),
    packing: bool = option(TrainConfig, "packing", "--packing"),
    max_length: int = option(TrainConfig, "max_length"),
    precision: str = option(TrainConfig, "precision"),
    warmup_ratio: float = option(TrainConfig, "warmup_ratio"),
    save_every: int = option(TrainConfig, "save_every"),
    seed: int = option(TrainConfig, "seed"),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Fine-tune a causal LM on the (prompt, target) rows of a subset, loss on targets only."""
    from pydantic import ValidationError

    from coretune.errors import CoretuneError
    from coretune.run.outputs import Inputs, check_output_folder
    from coretune.train import train as run_train

    check_output_folder(output, Inputs().pool(data))

    try:
        cfg = TrainConfig(model=model, lora=lora, lr=lr, epochs=epochs, max_steps=max_steps,
                          batch_size=batch_size, grad_accum=grad_accum, max_length=max_length,
                          micro_batch_size=micro_batch_size, pass_tokens=pass_tokens,
                          packing=packing, gradient_checkpointing=gradient_checkpointing,
                          warmup_ratio=warmup_ratio, save_every=save_every, seed=seed,
                          precision=precision)
    except ValidationError as e:
        err = e.errors()[0]
        raise CoretuneError(err["msg"], field=str(err["loc"][0])) from None
    out = run_train(data, config=cfg, output_dir=output, quiet=quiet)
    typer.echo(f"wrote {out}")


def evaluate(
    model: str = option(TrainConfig, "model", help="default | trained folder | LoRA adapter | "
                        "hub id."),
    tasks: str = option(EvaluateConfig, "tasks", default=None, help="Comma-separated sets, "
                        "shipped, registered or --eval-file names (default: "
                        f"{','.join(EvaluateConfig.model_fields['tasks'].default)}, or the "
                        "--eval-file sets when given)."),
    eval_file: list[str] = option(EvaluateConfig, "eval_files", "--eval-file"),  # repeatable
    max_examples: int | None = option(EvaluateConfig, "max_examples"),
    max_templates: int | None = option(EvaluateConfig, "max_templates"),
    length_norm: bool = option(EvaluateConfig, "length_norm", "--length-norm"),
    batch_size: int = option(EvaluateConfig, "batch_size"),
    batch_tokens: int | None = option(EvaluateConfig, "batch_tokens"),
    chat_template: bool = option(EvaluateConfig, "chat_template", "--chat-template"),
    seed: int = typer.Option(EVAL_SEED, help="Seed for the example sample."),
    output: Path | None = typer.Option(None, "-o", "--output",
                                       help="Folder for predictions.parquet + metrics.json."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace metrics.json and "
                                   "predictions.parquet in --output if they exist."),
) -> None:
    """Score a model on evaluation sets by rank classification.

    Accuracy per template, mean/median and bootstrap 95% intervals; the gold option's
    log-loss (nats, lower is better) with its interval on a second line."""
    from coretune.evaluate import TASKS, format_row, parse_eval_file
    from coretune.evaluate import evaluate as run_eval
    from coretune.run.outputs import Inputs, check_output_folder, check_outputs

    added = [parse_eval_file(s) for s in eval_file]
    if output is not None:
        inputs = Inputs().eval_sets(added)
        check_output_folder(output, inputs)
        check_outputs([output / "metrics.json", output / "predictions.parquet"], inputs,
                      overwrite=overwrite)
    if tasks is None or (added and not tasks.strip()):  # `--tasks ""`: only the added sets
        tasks = ",".join(ds.name for ds in added) or ",".join(TASKS)
    chosen = [t.strip() for t in tasks.split(",") if t.strip()]
    m = run_eval(model, chosen, max_examples=max_examples, max_templates=max_templates,
                 length_norm=length_norm, batch_size=batch_size, batch_tokens=batch_tokens,
                 seed=seed, output_dir=output, quiet=quiet, extra=added,
                 chat_template=chat_template)
    typer.echo(f"caps: max_examples={max_examples or 'all'} per set (seed {seed}), "
               f"max_templates={max_templates or 'all'}; scoring "
               f"{'mean' if length_norm else 'sum'} of option token log-probs"
               f"{' through the chat template' if chat_template else ''}", err=True)
    for name, t in m["tasks"].items():
        typer.echo(f"{name}: {t['n_examples']}/{t['n_examples_total']} examples x "
                   f"{len(t['templates'])}/{t['n_templates_total']} templates; "
                   f"mean {t['mean']:.1f}, median {t['median']:.1f}; gold-option log-loss "
                   f"{t['logloss']:.3f} nats (lower is better), p(gold) {t['p_gold']:.3f}",
                   err=True)
    typer.echo(format_row(m))
    typer.echo(format_row(m, "log-loss", metric="logloss"))
    if output is not None:
        typer.echo(f"wrote {output / 'metrics.json'} and {output / 'predictions.parquet'}",
                   err=True)
