"""A setting has one default: every command-line option that gives a config setting defaults
to that setting's default, and the library's defaults are the config's."""

from __future__ import annotations

import inspect

import pytest

from coretune.config import (
    BackendConfig,
    ClusterConfig,
    EmbedConfig,
    EvaluateConfig,
    PoolConfig,
    RunConfig,
    SelectConfig,
)
from coretune.target import TargetConfig
from coretune.train import TrainConfig

# command -> option -> (section, field): written out here, not read from the options, so an
# option whose default is typed in by hand fails.
SETTINGS = {
    "select": {"columns": (PoolConfig, "columns"), "target": (TargetConfig, "spec"),
               "budget": (SelectConfig, "budget"), "method": (SelectConfig, "method"),
               "decontaminate": (SelectConfig, "decontaminate"),
               "eval_file": (EvaluateConfig, "eval_files"),
               "k": (ClusterConfig, "k"), "cluster_seed": (ClusterConfig, "seed"),
               "encoder": (EmbedConfig, "encoder"), "max_tokens": (EmbedConfig, "max_tokens"),
               "batch_size": (EmbedConfig, "batch_size"),
               "batch_tokens": (EmbedConfig, "batch_tokens"), "rule": (TargetConfig, "rule"),
               "threshold": (TargetConfig, "threshold"), "top": (TargetConfig, "top"),
               "share": (TargetConfig, "share"), "by_task": (TargetConfig, "by_task"),
               "votes": (TargetConfig, "votes"), "dedup": (RunConfig, "dedup"),
               "probes": (TargetConfig, "probes"), "backend": (BackendConfig, "name"),
               "address": (BackendConfig, "address")},
    "train": {name: (TrainConfig, name) for name in (
        "model", "lora", "lr", "epochs", "max_steps", "batch_size", "grad_accum",
        "micro_batch_size", "gradient_checkpointing", "pass_tokens", "packing", "max_length",
        "precision", "warmup_ratio", "save_every", "seed")},
    "evaluate": {"model": (TrainConfig, "model"), "eval_file": (EvaluateConfig, "eval_files"),
                 "max_examples": (EvaluateConfig, "max_examples"),
                 "max_templates": (EvaluateConfig, "max_templates"),
                 "length_norm": (EvaluateConfig, "length_norm"),
                 "batch_size": (EvaluateConfig, "batch_size"),
                 "chat_template": (EvaluateConfig, "chat_template"),
                 "batch_tokens": (EvaluateConfig, "batch_tokens")},
}
# Options whose help rewords their field's description (the command reads it its own way).
REWORDED = {"select": {"method", "backend", "eval_file"}, "train": set(), "evaluate": {"model"}}
# Options that are not a config setting, or whose absence means "the config's".
NOT_SETTINGS = {
    "select": {"pool", "output", "fmt", "seed", "device", "cache_dir", "quiet", "overwrite"},
    "train": {"data", "output", "quiet"},
    "evaluate": {"tasks", "seed", "output", "quiet", "overwrite"},
}


def _commands():
    from coretune.cli import lm
    from coretune.cli.select import select

    return {"select": select, "train": lm.train, "evaluate": lm.evaluate}


@pytest.mark.parametrize("command", sorted(SETTINGS))
def test_every_option_defaults_to_its_config_field(command):
    params = inspect.signature(_commands()[command]).parameters
    assert set(params) == set(SETTINGS[command]) | NOT_SETTINGS[command]
    for name, (section, field) in SETTINGS[command].items():
        option = params[name].default
        want = section.model_fields[field].default
        assert option.default == want, f"{command} --{name}: {option.default!r} != {want!r}"
        description = section.model_fields[field].description
        if description and name not in REWORDED[command]:
            assert option.help.startswith(description), f"{command} --{name}"


def test_options_whose_absence_means_the_configs():
    from coretune.cli import lm, run

    for fn, name in ((run.run, "backend"), (run.run, "address"), (lm.evaluate, "tasks")):
        assert inspect.signature(fn).parameters[name].default.default is None
    from coretune.config import EVAL_SEED

    assert inspect.signature(lm.evaluate).parameters["seed"].default.default == EVAL_SEED
    select = inspect.signature(_commands()["select"]).parameters["seed"].default
    assert select.default == RunConfig.model_fields["seeds"].default[0]


def test_library_defaults_are_the_configs():
    from coretune.embed import (
        DEFAULT_BATCH_SIZE,
        DEFAULT_ENCODER,
        DEFAULT_MAX_TOKENS,
        Embedder,
        make_encoder,
    )
    from coretune.evaluate import TASKS, evaluate
    from coretune.target import TargetClusters

    e = EmbedConfig()
    assert (e.encoder, e.max_tokens, e.batch_size) == (DEFAULT_ENCODER, DEFAULT_MAX_TOKENS,
                                                      DEFAULT_BATCH_SIZE)
    make = inspect.signature(make_encoder).parameters
    assert (make["spec"].default, make["max_tokens"].default) == (e.encoder, e.max_tokens)
    assert inspect.signature(Embedder).parameters["batch_size"].default == e.batch_size
    t, finder = TargetConfig(), TargetClusters()
    assert (finder.rule, finder.n_probes, finder.by_task, finder.votes, finder.share) == (
        t.rule, t.probes, t.by_task, t.votes, t.share)
    assert list(TASKS) == EvaluateConfig().tasks
    assert inspect.signature(evaluate).parameters["batch_size"].default == \
        EvaluateConfig().batch_size
