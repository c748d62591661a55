"""The shipped datasets and the default pool: BIG-bench rows + RTE/CB rendered through templates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from coretune.data.pool import Pool
from coretune.data.templates import TemplateSet, load_templates
from coretune.errors import CoretuneError
from coretune.io import read_jsonl
from coretune.paths import data_dir


@dataclass(frozen=True)
class Dataset:
    """A labelled NLI-style dataset file and the promptsource templates that format it."""

    name: str
    path: Path
    templates: Path
    labels: tuple[str, ...] | None
    family: str = "nli"
    fields: tuple[str, ...] = ("premise", "hypothesis")

    def rows(self) -> list[dict]:
        return read_dataset(self.path, self.labels, self.fields)

    def load_templates(self) -> TemplateSet:
        return load_templates(self.templates)


# The shipped evaluation sets, in the paper's order, and how tables head them.
EVAL_HEADERS = {"rte": "RTE", "cb": "CB", "anli_r1": "ANLI R1", "anli_r2": "ANLI R2",
                "anli_r3": "ANLI R3"}
_RTE = ("entailment", "not_entailment")
_CB = ("entailment", "contradiction", "neutral")
_ANLI = ("entailment", "neutral", "contradiction")


def _shipped(name: str, file: str, templates: str, labels: tuple[str, ...]) -> Dataset:
    root = data_dir()
    return Dataset(name, root / "nli" / file, root / "templates" / templates / "templates.yaml",
                   labels)


def eval_datasets() -> dict[str, Dataset]:
    """The paper's evaluation sets, by the names the CLI takes."""
    return {
        "rte": _shipped("rte", "rte/validation.jsonl", "super_glue/rte", _RTE),
        "cb": _shipped("cb", "cb/validation.jsonl", "super_glue/cb", _CB),
        "anli_r1": _shipped("anli_r1", "anli/r1_dev.jsonl", "anli", _ANLI),
        "anli_r2": _shipped("anli_r2", "anli/r2_dev.jsonl", "anli", _ANLI),
        "anli_r3": _shipped("anli_r3", "anli/r3_dev.jsonl", "anli", _ANLI),
    }


def train_datasets() -> dict[str, Dataset]:
    """Training sets that go into the default pool, rendered through every template."""
    return {
        "rte": _shipped("rte", "rte/train.jsonl", "super_glue/rte", _RTE),
        "cb": _shipped("cb", "cb/train.jsonl", "super_glue/cb", _CB),
    }


def read_dataset(
    path: str | Path,
    labels: Sequence[str] | None = None,
    fields: Sequence[str] = ("premise", "hypothesis"),
) -> list[dict]:
    """Rows of a labelled JSONL file: `fields` (non-empty text) and `label`.

    With `labels`, a label may be its name or its index and is stored as the index (what
    promptsource templates expect); anything else is a clear error.
    """
    from coretune.data.pool import check_utf8

    if not Path(path).is_file():
        raise CoretuneError("file not found", path=path)
    check_utf8(Path(path))
    records, lines = read_jsonl(path)
    if not records:
        raise CoretuneError("empty file: no rows", path=path)
    for rec, line in zip(records, lines, strict=True):
        rec.setdefault("_line", line)
        for name in fields:
            if not isinstance(rec.get(name), str) or not rec[name].strip():
                raise CoretuneError("missing or empty", path=path, line=line, field=name)
        if "label" not in rec:
            raise CoretuneError("missing", path=path, line=line, field="label")
        label = rec["label"]
        if labels is not None:
            if isinstance(label, str) and label in labels:
                rec["label"] = labels.index(label)
            elif not (isinstance(label, int) and not isinstance(label, bool)
                      and 0 <= label < len(labels)):
                raise CoretuneError(
                    f"unknown label {label!r} "
                    f"(expected one of {list(labels)} or 0..{len(labels) - 1})",
                    path=path, line=line, field="label",
                )
    return records


# The NLI family of the BIG-bench pool, by reading the tasks (see data/README.md).
BIGBENCH_NLI_TASKS = (
    "analytic_entailment", "entailed_polarity", "entailed_polarity_hindi",
    "presuppositions_as_nli", "international_phonetic_alphabet_nli",
    "vitaminc_fact_verification", "implicatures", "formal_fallacies_syllogisms_negation",
    "logical_fallacy_detection", "logical_args", "conceptual_combinations/contradictions",
)

# Other families from BIG-bench keywords, first match wins (order = priority).
KEYWORD_FAMILIES = (
    ("multilingual", ("non-English", "multilingual", "translation", "low-resource language")),
    ("code", ("computer code", "algorithms")),
    ("math", ("mathematics", "arithmetic", "numerical response")),
    ("social bias", ("social bias", "gender bias", "racial bias", "religious bias")),
    ("reading comprehension", ("reading comprehension", "contextual question-answering")),
    ("commonsense", ("common sense", "commonsense", "causal reasoning", "physical reasoning")),
    ("logic", ("logical reasoning", "deductive reasoning", "analogical reasoning")),
    ("qa", ("context-free question answering",)),
    ("emotion and social", ("emotional understanding", "social reasoning", "theory of mind")),
)


def task_family(task: str, keywords: Sequence[str] = ()) -> str:
    if any(task == t or task.startswith(t + "/") for t in BIGBENCH_NLI_TASKS):
        return "nli"
    kw = set(keywords)
    for family, words in KEYWORD_FAMILIES:
        if kw.intersection(words):
            return family
    return "other"


def bigbench_pool(which: str = "full") -> pa.Table:
    """The shipped BIG-bench rows in pool columns (+ source, keywords, family)."""
    files = {"full": "bigbench_pool.parquet", "sample": "pool_sample.parquet"}
    if which not in files:
        raise CoretuneError(f"unknown BIG-bench pool '{which}' (full, sample, none)",
                            field="bigbench")
    t = pq.read_table(data_dir() / "pool" / files[which])
    families = [task_family(task, kw) for task, kw in
                zip(t.column("task").to_pylist(), t.column("keywords").to_pylist(), strict=True)]
    return pa.table({
        "uid": t.column("uid"),
        "task": t.column("task"),
        "template": pa.array(["bigbench zero-shot"] * t.num_rows),
        "prompt": t.column("input"),
        "target": t.column("target"),
        "choices": t.column("choices"),
        "family": pa.array(families),
        "source": t.column("source"),
        "keywords": t.column("keywords"),
    })


def render_dataset(dataset: Dataset, templates: TemplateSet) -> pa.Table:
    """Every row of `dataset` through every template of `templates`, template by template."""
    rows = dataset.rows()
    cols: dict[str, list] = {k: [] for k in
                             ("uid", "task", "template", "prompt", "target", "choices")}
    for t in templates:
        for row in rows:
            r = render_row(t, row, dataset.path)
            if not r.target:  # unlabelled row (label -1): nothing to learn from
                continue
            row_id = row.get("id", f"line{row['_line']}")
            cols["uid"].append(f"{dataset.name}/{t.id}/{row_id}")
            cols["task"].append(dataset.name)
            cols["template"].append(t.name)
            cols["prompt"].append(r.prompt)
            cols["target"].append(r.target)
            cols["choices"].append(r.choices)
    n = len(cols["uid"])
    return pa.table({
        **{k: pa.array(v, pa.list_(pa.string()) if k == "choices" else pa.string())
           for k, v in cols.items()},
        "family": pa.array([dataset.family] * n, pa.string()),
        "source": pa.array(["promptsource"] * n, pa.string()),
        "keywords": pa.array([[]] * n, pa.list_(pa.string())),
    })


def render_row(template, row: dict, data_path: Path):
    """`template.render(row)`; a failure names the data file and line as well as the field."""
    try:
        return template.render(row)
    except CoretuneError as e:
        raise CoretuneError(f"{e.reason} [template file {e.path}:{e.line or '?'}]",
                            path=data_path, line=row.get("_line"), field=e.field) from e


def check_eval_dataset(dataset: Dataset) -> None:
    """Everything about an evaluation set that can be wrong, checked before a model loads:
    rows and labels, templates with answer choices, and every row through every template."""
    rows = dataset.rows()
    templates = dataset.load_templates().with_choices()
    if not len(templates):
        raise CoretuneError("no template with answer choices (rank classification needs "
                            "them)", path=dataset.templates, field="answer_choices")
    for t in templates:
        for row in rows:
            r = render_row(t, row, dataset.path)
            if r.target and r.target not in r.choices:
                raise CoretuneError(f"template '{t.name}' renders target '{r.target[:40]}', "
                                    f"not one of its choices {r.choices}", path=dataset.path,
                                    line=row.get("_line"), field="label")


def parse_dataset_spec(spec: str) -> Dataset:
    """`NAME:DATA.jsonl:TEMPLATES.yaml[:FAMILY]` -> Dataset (labels are the template's indices)."""
    parts = spec.split(":")
    if len(parts) not in (3, 4) or not all(parts):
        raise CoretuneError(f"expected NAME:DATA.jsonl:TEMPLATES.yaml[:FAMILY], got '{spec}'",
                            field="dataset")
    name, data, templates = parts[:3]
    family = parts[3] if len(parts) == 4 else "user"
    for p in (data, templates):
        if not Path(p).is_file():
            raise CoretuneError("file not found", path=p, field="dataset")
    return Dataset(name, Path(data), Path(templates), labels=None, family=family, fields=())


def build_pool(
    *,
    bigbench: str = "full",
    datasets: Sequence[Dataset] | None = None,
    template_mode: str = "all",
    n_templates: int | None = None,
    fixed_template: dict[str, str] | None = None,
) -> Pool:
    """The default pool: BIG-bench rows, then each dataset through its chosen templates."""
    parts = [] if bigbench == "none" else [bigbench_pool(bigbench)]
    for ds in train_datasets().values() if datasets is None else datasets:
        ts = ds.load_templates().choose(template_mode, n_templates,
                                        (fixed_template or {}).get(ds.name))
        parts.append(render_dataset(ds, ts))
    if not parts:
        raise CoretuneError("nothing to build: no BIG-bench rows and no datasets", field="bigbench")
    return Pool(pa.concat_tables(parts, promote_options="permissive"), source="coretune pool build")


def parse_template_mode(text: str) -> tuple[str, int | None, dict[str, str]]:
    """`all` | `first:N` | `fixed` | `fixed:DATASET=NAME,...` -> (mode, n, fixed names)."""
    mode, _, arg = text.partition(":")
    if mode == "all" and not arg:
        return mode, None, {}
    if mode == "first" and arg.isdigit() and int(arg) >= 1:
        return mode, int(arg), {}
    if mode == "fixed":
        fixed = {}
        for item in filter(None, arg.split(",")):
            name, eq, template = item.partition("=")
            if not eq or not name or not template:
                break
            fixed[name] = template
        else:
            return mode, None, fixed
    raise CoretuneError(
        f"unknown template mode '{text}' (all, first:N, fixed, fixed:DATASET=NAME,...)",
        field="templates",
    )


def sample_rows(pool: Pool, max_rows: int | None, seed: int = 0) -> Pool:
    """A seeded uniform sample of at most `max_rows` rows, in pool order (for CPU-sized runs)."""
    import numpy as np

    if max_rows is None or max_rows >= len(pool):
        return pool
    if max_rows < 1:
        raise CoretuneError("must be at least 1", field="pool.max_rows")
    keep = np.sort(np.random.default_rng(seed).choice(len(pool), max_rows, replace=False))
    return pool.take(keep)
