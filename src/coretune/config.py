"""Experiment configuration: pydantic models, loaded from YAML with `key=value` overrides.

Each section holds its settings' defaults, rules and help (the CLI's options are built from
them, `coretune.cli.options`) and the key of the stage it configures (`key()`: what a
finished stage is recognised by; a changed key runs the stage again). The sections of the
library's own settings live with it: `train` is `coretune.train.TrainConfig`, `target` is
`coretune.target.TargetConfig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from coretune.backends import BACKEND_REGISTRY
from coretune.data.sources import EVAL_HEADERS
from coretune.embed.encoders import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_ENCODER,
    DEFAULT_MAX_TOKENS,
    RESPONSE,
    check_encoder_spec,
)
from coretune.errors import CoretuneError
from coretune.select.budget import ALL, check_budget
from coretune.select.methods import METHOD_REGISTRY, budgeted_methods, get_method, method_names
from coretune.target import TargetConfig
from coretune.train import TrainConfig

# `select.method: pool` is no selection method: train on every row of the pool.
WHOLE_POOL = "pool"
# The old spelling of `untuned: true`, still read, and how config.json records that mode.
UNTUNED_METHOD = "none"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def key(self) -> dict:
        """The settings as the stage this section configures is keyed by."""
        return self.model_dump()


class PoolConfig(_Section):
    """Where the pool comes from: the shipped BIG-bench rows + RTE/CB, or a file of your own."""

    path: str | None = Field(None, description="A pool file (Parquet/JSONL/CSV), a folder or "
                             "glob of shards, a datasets save_to_disk folder or hf:ID; over "
                             "bigbench.")
    columns: str | dict[str, str] | None = Field(
        None, description="Pool field = source column, comma-separated, e.g. 'uid=id, "
        "prompt=inputs_pretokenized, task=task_name'.")
    bigbench: Literal["full", "sample", "none"] = "sample"
    templates: str = Field("all", description="all | first:N | fixed | fixed:DATASET=NAME,...")
    max_rows: int | None = Field(
        None, description="Seeded uniform sample of at most this many rows (CPU-sized runs).")


class EmbedConfig(_Section):
    encoder: str = Field(DEFAULT_ENCODER, description="The prompts' encoder, a registered "
                         "one (coretune.embed): minilm-int8 is MiniLM with int8 weights under "
                         "ONNX Runtime, the fast CPU default; minilm the float32 model (on a "
                         "GPU); hf:<model id or path> mean-pools any model.")
    max_tokens: int = Field(DEFAULT_MAX_TOKENS, ge=1, description="Tokens per prompt for the "
                            "encoder.")
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, description="Encoder batch size.")
    batch_tokens: int | None = Field(
        None, ge=1, description="Encoder batches by tokens instead of batch_size prompts: "
        "prompts, longest first, fill each batch up to this many tokens, padding included "
        "(a longer prompt runs alone), each chunk tokenised in one call. The same rows up to "
        "float rounding (bit for bit with minilm-int8, which runs each prompt alone). Local "
        "backend only. None: batch_size prompts a batch.")

    def key(self) -> dict:
        """The embed stage's key; without a token budget, the key runs made before it had."""
        return self.model_dump(exclude=set() if self.batch_tokens else {"batch_tokens"})

    @field_validator("encoder")
    @classmethod
    def _known_encoder(cls, v: str) -> str:
        return _value_error(check_encoder_spec, v)

    @field_validator("encoder")
    @classmethod
    def _prompts_only(cls, v: str) -> str:
        if v.partition(":")[0].endswith(RESPONSE):
            raise ValueError(f"'{v}' embeds prompt and response together, for the rows a "
                             "method compares with target examples: set it as select.encoder")
        return v


class ClusterConfig(_Section):
    k: int = Field(100, ge=1, description="Number of K-means clusters.")
    seed: NonNegativeInt = Field(0, description="Seed for clustering and the probe sample.")
    sample_size: int | None = Field(None, ge=1, description="Rows K-means is fitted on (a "
                                    "seeded sample; default: 256 per cluster).")


class SelectConfig(_Section):
    method: str = Field("kcenter", description="A registered selection method "
                        "(coretune.select.methods) or `pool` (every row). `none`, the old "
                        "spelling of the top-level `untuned: true`, still loads as that.")
    budget: str = Field("0.5%", description="Share of the whole pool ('0.5%') or a row count.")
    scope: Literal["target", "pool"] = Field(
        "target", description="Select inside the target clusters, or from the whole pool.")
    encoder: str | None = Field(
        None, description="The encoder of a method that compares rows with target examples "
        "(rds): its candidate rows and the examples are embedded with it (at embed.max_tokens, "
        "through the cache); e.g. smollm2-weighted+response, RDS+'s own. null: the embed "
        "stage's vectors. Other methods ignore it.")
    decontaminate: bool = Field(
        False, description="Drop the pool rows that share a word n-gram with an example of an "
        "evaluation set (evaluate.tasks; 13-grams, 8-grams for fields of 8-12 words) before "
        "selecting. Either way the quality report counts them per set (docs/pools.md).")

    @field_validator("encoder")
    @classmethod
    def _known_encoder(cls, v: str | None) -> str | None:
        return v if v is None else _value_error(check_encoder_spec, v)

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        if v == UNTUNED_METHOD:  # RunConfig maps it to `untuned: true` unless untuned is set
            raise ValueError(f"'{v}' is the old spelling of the top-level `untuned: true`, "
                             "and this config sets untuned otherwise; keep one of them")
        names = (*method_names(), WHOLE_POOL)
        if v not in names:
            raise ValueError(METHOD_REGISTRY.unknown(v, names=names).reason)
        return v

    @field_validator("budget", mode="before")
    @classmethod
    def _budget_text(cls, v):
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v  # YAML `25`

    @field_validator("budget")
    @classmethod
    def _known_budget(cls, v: str) -> str:
        if v.strip() == ALL:
            raise ValueError("'all' is a sweep budget; here use '100%' (every row in scope)")
        check_budget(v)
        return v

    @property
    def own_encoder(self) -> str | None:
        """`encoder` where the method reads it (one that compares rows with target examples);
        None where the embed stage's vectors are used."""
        if self.encoder is None or self.method not in METHOD_REGISTRY:
            return None
        return self.encoder if get_method(self.method).reads_queries else None

    def key(self, seed: int) -> dict:
        """The select stage's key for `seed`. `encoder` is in it only where the method reads
        it, so an unset one, or one a method ignores, leaves the key as before it existed."""
        left = {*(() if self.own_encoder else ("encoder",)),
                *(() if self.decontaminate else ("decontaminate",))}
        return {**self.model_dump(exclude=left), "seed": seed}


EVAL_SEED = 0  # every run evaluates the same examples, so runs compare pairwise


class EvaluateConfig(_Section):
    eval_files: list[str] = Field(
        [], description="Your own sets, each NAME:DATA.jsonl:TEMPLATES.yaml:LABELS, LABELS "
        "the label names in index order, comma-separated; name them in tasks like a shipped "
        "set.")
    tasks: list[str] = Field(list(EVAL_HEADERS), description="Evaluation sets by name: "
                             "shipped, registered or from eval_files.")
    max_examples: int | None = Field(None, ge=1, description="Seeded sample of N examples "
                                     "per set.")
    max_examples_by_task: dict[str, int] = Field(
        {}, description="A set's own cap, e.g. {anli_r1: 50} (the smaller of it and "
        "max_examples applies): evaluate the small sets whole and sample the large ones.")
    max_templates: int | None = Field(None, ge=1, description="First N templates with "
                                      "choices.")
    length_norm: bool = Field(False, description="Rank options by mean, not sum, token "
                              "log-prob.")
    batch_size: int = Field(16, ge=1, description="Prompts per forward pass.")
    batch_tokens: int | None = Field(
        None, ge=1, description="Prompt tokens per forward pass instead of batch_size "
        "prompts: prompts, longest first, fill each batch up to this many tokens, padding "
        "included (a longer prompt runs alone). The same scores up to float rounding. None: "
        "batch_size prompts a batch.")
    chat_template: bool = Field(
        False, description="Score through the model's chat template, as training joins a chat "
        "row: each prompt one user turn with the generation prompt, each option the "
        "assistant's reply (docs/chat-pools.md). For a model trained on chat rows; the model "
        "must have a chat template. Off: the plain join of prompt and option.")

    @field_validator("eval_files")
    @classmethod
    def _readable_eval_files(cls, v: list[str]) -> list[str]:
        from coretune.evaluate.tasks import parse_eval_file

        for spec in v:
            _value_error(parse_eval_file, spec)
        return v

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, v: list[str], info: ValidationInfo) -> list[str]:
        from coretune.evaluate.tasks import EVAL_SET_REGISTRY, eval_sets

        known = list(dict.fromkeys([*eval_sets(), *(s.split(":")[0]
                                                    for s in info.data.get("eval_files", []))]))
        for task in _no_duplicates(v, "evaluation set"):
            if task not in known:
                raise ValueError(EVAL_SET_REGISTRY.unknown(
                    task, names=known, listed=f"known: {', '.join(known)}",
                    hint="; add your own with eval_files").reason)
        return v

    @field_validator("max_examples_by_task")
    @classmethod
    def _caps_name_tasks(cls, v: dict[str, int], info: ValidationInfo) -> dict[str, int]:
        tasks = info.data.get("tasks", [])  # declared above: validated first
        for task, n in v.items():
            if task not in tasks:
                raise ValueError(f"names '{task}', which is not in tasks ({', '.join(tasks)})")
            if n < 1:
                raise ValueError(f"{task} must be at least 1, got {n}")
        return v

    def datasets(self) -> list:
        """The sets of `eval_files` (Datasets), beside the registered ones for this run."""
        from coretune.evaluate.tasks import parse_eval_file

        return [parse_eval_file(spec) for spec in self.eval_files]

    def sets(self) -> list:
        """Every set of `tasks` (Datasets: shipped, registered or from `eval_files`)."""
        from coretune.evaluate.tasks import resolve_tasks

        return resolve_tasks(self.tasks, self.datasets())

    def files(self) -> dict[str, Path]:
        """The files of `eval_files`: part of the evaluate stage's key."""
        return {f"{ds.name}:{kind}": Path(getattr(ds, kind))
                for ds in self.datasets() for kind in ("path", "templates")}

    def key(self, model: str) -> dict:
        """The evaluate stage's key for the base `model`; without per-set caps, with the
        plain join and without a token budget, the key runs made before those settings
        existed."""
        plain = {*(() if self.max_examples_by_task else ("max_examples_by_task",)),
                 *(() if self.chat_template else ("chat_template",)),
                 *(() if self.batch_tokens else ("batch_tokens",))}
        return {**self.model_dump(exclude=plain), "model": model}

    def caps_text(self) -> str:
        own = "".join(f", {t}<={n}" for t, n in self.max_examples_by_task.items())
        return (f"max_examples={self.max_examples or 'all'}{own}, "
                f"max_templates={self.max_templates or 'all'}")


def _value_error(check, value):
    """`check(value)`, its CoretuneError as the ValueError a pydantic validator raises (so the
    config error names the file, line and field); `value` itself when it passes."""
    try:
        check(value)
    except CoretuneError as e:  # the config's field replaces the check's own field name
        raise ValueError(e.reason if e.path is None else str(e)) from None
    return value


def _no_duplicates(values: list, what: str) -> list:
    """`values` unless empty or repeating one (ValueError naming it)."""
    if not values:
        raise ValueError(f"empty list of {what}s")
    seen = set()
    for v in values:
        if v in seen:
            raise ValueError(f"duplicate {what} '{v}'")
        seen.add(v)
    return values


def check_pool_scope(method: str) -> None:
    """From the whole pool a method either samples (random) or reads the embeddings of every
    cluster; the similarity-free rest has nothing to go on there."""
    if method != "random" and not get_method(method).reads_embeddings:
        raise ValueError(f"method '{method}' cannot select from the whole pool")


class SweepConfig(_Section):
    """`coretune sweep`: one point per method x budget x seed, each paired with the untuned
    model on the same evaluation examples (see coretune.run.sweep)."""

    budgets: list[str] = Field(["0.1%", "0.5%", ALL], description="Shares of "
                               "the whole pool ('0.5%'), row counts ('25') or 'all' (every "
                               "row of the target clusters).")
    methods: list[str] = Field(["kcenter", "random"],
                               description="Selection methods that take a budget; "
                               "'METHOD@pool' selects from the whole pool (select.scope pool).")
    seeds: list[NonNegativeInt] | None = Field(None, description="Default: the config's seeds.")
    knee_tolerance: float = Field(1.0, ge=0, description="Accuracy points the knee may trail "
                                  "the best budget by (sweep.metric accuracy).")
    metric: Literal["logloss", "accuracy"] = Field(
        "logloss", description="What decides the knee, the positive control and the ranking: "
        "the gold-option log-loss (the default; it detects differences accuracy cannot, see "
        "docs/measurement.md) or accuracy. Both are reported either way.")
    knee_tolerance_logloss: float = Field(0.02, ge=0, description="Nats of log-loss the knee "
                                          "may trail the best budget by (sweep.metric logloss; "
                                          "0.02: the gold option about 2% less probable).")
    train_steps: int | None = Field(
        None, ge=1, description="Compute-matched design: every point, `all` included, trains "
        "this many optimizer steps of train.batch_size x grad_accum rows (over train.epochs "
        "and train.max_steps), a small budget's rows repeating in seeded epoch order "
        "(train.full_steps), so budgets differ in data, not in compute. None: the epoch "
        "design, each point trains train.epochs over its own rows and larger budgets train "
        "more steps.")

    @field_validator("budgets", mode="before")
    @classmethod
    def _budget_text(cls, v):
        return [str(b) for b in v] if isinstance(v, list) else v  # YAML `25` is a count

    @field_validator("budgets")
    @classmethod
    def _known_budgets(cls, v: list[str]) -> list[str]:
        for b in v:
            check_budget(b)
        return _no_duplicates(["".join(b.split()) for b in v], "budget")  # '1 %' is '1%'

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, v: list[str]) -> list[str]:
        for m in v:
            name, at, scope = m.partition("@")
            if name not in budgeted_methods():
                raise ValueError(f"unknown sweep method '{m}' (one of "
                                 f"{', '.join(budgeted_methods())}, each optionally "
                                 "METHOD@pool; budget 'all' stands for every target row)")
            if at and scope != "pool":
                raise ValueError(f"sweep method '{m}': the only scope suffix is '@pool'")
            if at:
                check_pool_scope(name)
        return _no_duplicates(v, "method")

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int] | None) -> list[int] | None:
        return v if v is None else _no_duplicates(v, "seed")


class BackendConfig(_Section):
    """Where embedding, labelling and selection run; outputs are byte-identical either way,
    so this is not part of any stage's key (a run may switch backends and resume)."""

    name: str = Field("local", description="local | ray | a registered backend.")
    address: str | None = Field(
        None, description="Ray cluster: 'auto', 'ray://head:10001'; none starts a local one.")
    num_cpus: int | None = Field(None, ge=1, description="Local Ray cluster only.")
    num_gpus: int | None = Field(None, ge=0, description="Local Ray cluster only.")
    object_store_memory: int | None = Field(
        None, ge=78_643_200, description="Bytes, local Ray cluster only.")
    actors: int | None = Field(
        None, ge=1, description="Embedding actors (default: one per GPU, else per actor_cpus).")
    actor_cpus: int = Field(1, ge=1, description="CPUs (torch threads) per embedding actor.")

    @field_validator("name")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if v not in BACKEND_REGISTRY:
            raise ValueError(BACKEND_REGISTRY.unknown(v).reason)
        return v


class RunConfig(_Section):
    name: str = Field(description="The run's folder under --runs-dir: a plain folder name.")
    description: str = ""
    reproduces: str = Field("", description="Which row or ablation of the paper "
                            "(docs/method.md) this run stands for.")
    seeds: list[NonNegativeInt] = [0]
    untuned: bool = Field(
        False, description="The untuned model: train.model evaluated as it is, with no pool, "
        "selection or training (those sections are not read). `select.method: none`, the "
        "old spelling, still loads as this.")
    pool: PoolConfig = PoolConfig()
    embed: EmbedConfig = EmbedConfig()
    dedup: float | None = Field(None, gt=0, le=1, description="Drop rows within this cosine "
                                "of an earlier row before clustering (off: null).")
    cluster: ClusterConfig = ClusterConfig()
    target: TargetConfig = TargetConfig()
    select: SelectConfig = SelectConfig()
    train: TrainConfig = TrainConfig()  # its `seed` is set per run from `seeds`
    evaluate: EvaluateConfig = EvaluateConfig()
    backend: BackendConfig = BackendConfig()
    sweep: SweepConfig | None = None  # only `coretune sweep` reads it

    @model_validator(mode="before")
    @classmethod
    def _old_untuned_spelling(cls, data):
        """`select.method: none` is `untuned: true` (the method back at its default). With
        `untuned` set to anything but true it stays, and the select section refuses it."""
        select = data.get("select") if isinstance(data, dict) else None
        if not (isinstance(select, dict) and select.get("method") == UNTUNED_METHOD
                and data.get("untuned", True) is True):
            return data
        rest = {k: v for k, v in select.items() if k != "method"}
        return {**data, "untuned": True, "select": rest}

    @model_serializer(mode="wrap")
    def _record(self, handler):
        """The dump (a run's config.json) records the untuned mode as every run folder has
        since before `untuned` existed, as `select.method: none`, and leaves `untuned` out:
        the same config writes the same bytes, and reading them back gives the same mode."""
        out = handler(self)
        if out.pop("untuned", False) and isinstance(out.get("select"), dict):
            out["select"] = {**out["select"], "method": UNTUNED_METHOD}
        return out

    @property
    def needs_clusters(self) -> bool:
        """Whether the run embeds, clusters and finds target clusters (selection inside them,
        or a method that reads the embeddings of the whole pool)."""
        method = self.select.method
        if self.untuned or method == WHOLE_POOL:
            return False
        return self.select.scope == "target" or get_method(method).reads_embeddings

    def as_untuned(self, name: str) -> RunConfig:
        """This config as the untuned model named `name` (one seed: nothing to vary)."""
        return self.model_copy(update={"name": name, "untuned": True, "sweep": None,
                                       "seeds": [0]})

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not v.strip() or v in (".", "..") or any(c in v for c in "/\\\0") or v != v.strip():
            raise ValueError(f"run name '{v}' must be a plain folder name (no '/', '\\', "
                             "'..' or surrounding spaces): runs are written only inside "
                             "--runs-dir")
        return v


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


def _read_yaml(path: Path, seen: tuple = (), files: list[Path] | None = None) -> dict:
    """A YAML mapping; `extends: other.yaml` (relative to this file) is merged underneath.
    `files` collects every file read, in merge order (a later file's keys win)."""
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
        raw = _merge(_read_yaml(path.parent / parent, (*seen, path.resolve()), files), raw)
    if files is not None:
        files.append(path)
    return raw


def load_config(
    path: str | Path, overrides: list[str] = (), extra: list[str | Path] = ()
) -> RunConfig:
    """Read a YAML config, merge `extra` YAML files over it (e.g. a CPU profile), apply
    `a.b=value` overrides (values parsed as YAML), validate. An error names the file and
    line the bad field came from, or the override that set it."""
    path = Path(path)
    files: list[Path] = []
    raw = _read_yaml(path, files=files)
    raw.setdefault("name", path.stem)
    for more in extra:
        raw = _merge(raw, _read_yaml(Path(more), files=files))
    given: dict[str, str] = {}
    for item in overrides:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise CoretuneError(f"override '{item}' is not key=value", field="overrides")
        _set(raw, key.strip(), yaml.safe_load(value) if value.strip() else None)
        given[key.strip()] = item
    return validate(raw, path, files, given)


def section_config(**sections) -> RunConfig:
    """A RunConfig from keyword sections (how `coretune select` turns its options into the
    config `coretune run` reads); None values fall back to the defaults."""
    raw = {k: {f: v for f, v in s.items() if v is not None} if isinstance(s, dict) else s
           for k, s in sections.items()}
    return validate(raw)


def validate(raw: dict, path: Path | None = None, files: list[Path] = (),
             overrides: dict[str, str] | None = None) -> RunConfig:
    """`RunConfig.model_validate`, its first error as a one-line CoretuneError naming where
    the field was set: an override (`key=value`), else the last of `files` (merge order)
    that holds it, with its line."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")  # our validators' own words
        raise CoretuneError(msg, field=field, **_where(err["loc"], path, files,
                                                       overrides or {})) from e


def _where(loc, path: Path | None, files: list[Path], overrides: dict[str, str]) -> dict:
    field = ".".join(str(p) for p in loc)
    for key, item in overrides.items():
        if field == key or field.startswith(key + ".") or key.startswith(field + "."):
            return {"path": f"override '{item}'"}
    found = [(depth, i, f, line) for i, f in enumerate(files or ([path] if path else []))
             for depth, line in [_line_of(f, loc)] if line is not None]
    if not found:
        return {"path": path}
    _, _, file, line = max(found)  # the deepest match; among equals, the latest file
    return {"path": file, "line": line}


def _line_of(path: Path, loc) -> tuple[int, int | None]:
    """Best-effort (keys matched, line of the deepest) of a nested key in a YAML file."""
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return 0, None
    depth, line = 0, None
    for key in loc:
        if not isinstance(node, yaml.MappingNode):
            break
        for k, v in node.value:
            if k.value == str(key):
                depth, line, node = depth + 1, k.start_mark.line + 1, v
                break
        else:
            break
    return depth, line
