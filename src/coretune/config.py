"""Experiment configuration: pydantic models, loaded from YAML with `key=value` overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError

from coretune.errors import CoretuneError
from coretune.train import TrainConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PoolConfig(_Section):
    """Where the pool comes from: the shipped BIG-bench rows + RTE/CB, or a file of your own."""

    path: str | None = Field(None, description="A pool file (Parquet/JSONL/CSV), over bigbench.")
    bigbench: Literal["full", "sample", "none"] = "sample"
    templates: str = Field("all", description="all | first:N | fixed | fixed:DATASET=NAME,...")
    max_rows: int | None = Field(
        None, description="Seeded uniform sample of at most this many rows (CPU-sized runs).")


class EmbedConfig(_Section):
    encoder: str = Field("minilm", description="minilm | hf:<model id or path> (mean-pooled).")
    max_tokens: int = 128
    batch_size: int = 64


class ClusterConfig(_Section):
    k: int = 100
    seed: NonNegativeInt = 0
    sample_size: int | None = None


class TargetConfig(_Section):
    spec: str = Field("nli", description="nli | family:NAME | tasks:a,b | probe:FILE.jsonl")
    threshold: float | None = None
    top: int | None = None


class SelectConfig(_Section):
    method: Literal["kcenter", "random", "topk", "leastk", "mixed", "all", "pool", "none"] = (
        "kcenter")
    budget: str = Field("0.5%", description="Share of the whole pool ('0.5%') or a row count.")
    scope: Literal["target", "pool"] = Field(
        "target", description="Select inside the target clusters, or from the whole pool.")


class EvaluateConfig(_Section):
    tasks: list[str] = ["rte", "cb", "anli_r1", "anli_r2", "anli_r3"]
    max_examples: int | None = None
    max_templates: int | None = None
    length_norm: bool = False
    batch_size: int = 16


class BackendConfig(_Section):
    """Where embedding, labelling and selection run; outputs are byte-identical either way,
    so this is not part of any stage's key (a run may switch backends and resume)."""

    name: Literal["local", "ray"] = "local"
    address: str | None = Field(
        None, description="Ray cluster: 'auto', 'ray://head:10001'; none starts a local one.")
    num_cpus: int | None = Field(None, ge=1, description="Local Ray cluster only.")
    num_gpus: int | None = Field(None, ge=0, description="Local Ray cluster only.")
    object_store_memory: int | None = Field(
        None, ge=78_643_200, description="Bytes, local Ray cluster only.")
    actors: int | None = Field(
        None, ge=1, description="Embedding actors (default: one per GPU, else per actor_cpus).")
    actor_cpus: int = Field(1, ge=1, description="CPUs (torch threads) per embedding actor.")


class RunConfig(_Section):
    name: str
    description: str = ""
    reproduces: str = Field("", description="Which PAPER.md row or ablation this run stands for.")
    seeds: list[NonNegativeInt] = [0]
    pool: PoolConfig = PoolConfig()
    embed: EmbedConfig = EmbedConfig()
    cluster: ClusterConfig = ClusterConfig()
    target: TargetConfig = TargetConfig()
    select: SelectConfig = SelectConfig()
    train: TrainConfig = TrainConfig()  # its `seed` is set per run from `seeds`
    evaluate: EvaluateConfig = EvaluateConfig()
    backend: BackendConfig = BackendConfig()


def _set(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
        if not isinstance(tree, dict):
            raise CoretuneError(f"'{key}' is not a section", field=dotted)
    tree[leaf] = value


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path: Path, seen: tuple = ()) -> dict:
    """A YAML mapping; `extends: other.yaml` (relative to this file) is merged underneath."""
    if not path.is_file():
        raise CoretuneError("config file not found", path=path)
    if path.resolve() in seen:
        raise CoretuneError("config extends itself", path=path, field="extends")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise CoretuneError(f"invalid YAML ({getattr(e, 'problem', e)})", path=path,
                            line=mark.line + 1 if mark else None) from e
    if not isinstance(raw, dict):
        raise CoretuneError("a config is a YAML mapping", path=path)
    parent = raw.pop("extends", None)
    if parent:
        raw = _merge(_read_yaml(path.parent / parent, (*seen, path.resolve())), raw)
    return raw


def load_config(
    path: str | Path, overrides: list[str] = (), extra: list[str | Path] = ()
) -> RunConfig:
    """Read a YAML config, merge `extra` YAML files over it (e.g. a CPU profile), apply
    `a.b=value` overrides (values parsed as YAML), validate."""
    path = Path(path)
    raw = _read_yaml(path)
    raw.setdefault("name", path.stem)
    for more in extra:
        raw = _merge(raw, _read_yaml(Path(more)))
    for item in overrides:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise CoretuneError(f"override '{item}' is not key=value", field="overrides")
        _set(raw, key.strip(), yaml.safe_load(value) if value.strip() else None)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        line = _line_of(path, err["loc"])
        raise CoretuneError(err["msg"], path=path, line=line, field=field) from e


def _line_of(path: Path, loc) -> int | None:
    """Best-effort line of a (nested) key in the YAML file, for error messages."""
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return None
    line = None
    for key in loc:
        if not isinstance(node, yaml.MappingNode):
            break
        for k, v in node.value:
            if k.value == str(key):
                line, node = k.start_mark.line + 1, v
                break
        else:
            break
    return line
