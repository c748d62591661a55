"""The target settings (`target:` in a config, the target options of `coretune select`): one
set of defaults and rules, read by the config, the CLI and `TargetClusters` alike."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from coretune.errors import CoretuneError
from coretune.target.cut import DROP_BELOW

VOTES = 11  # k-means runs that vote on each row (measured: benchmarks/bench_target.py)
METADATA_KINDS = ("tasks", "family", "keywords")
SPEC_HELP = "nli, tasks:NAME,..., family:NAME, keywords:WORD,..., probe:FILE.jsonl"


@dataclass(frozen=True)
class TargetSpec:
    kind: str  # nli | probe | tasks | family | keywords
    values: tuple[str, ...] = ()
    path: Path | None = None

    @property
    def probing(self) -> bool:
        return self.kind in ("nli", "probe")

    def __str__(self) -> str:
        if self.kind == "nli":
            return "nli"
        return f"{self.kind}:{self.path if self.path else ','.join(self.values)}"


def parse_target(spec: str) -> TargetSpec:
    """`nli` | `tasks:a,b` | `family:NAME` | `keywords:a,b` | `probe:FILE.jsonl`."""
    spec = spec.strip()
    if spec == "nli":
        return TargetSpec("nli")
    kind, sep, arg = spec.partition(":")
    values = tuple(v.strip() for v in arg.split(",") if v.strip())
    if sep and kind in METADATA_KINDS and values:
        if kind == "family" and len(values) != 1:
            raise CoretuneError(f"family takes one name, got '{arg}'", field="target")
        return TargetSpec(kind, values)
    if sep and kind == "probe" and arg:
        path = Path(arg)
        if not path.is_file():
            raise CoretuneError("probe file not found", path=path, field="target")
        return TargetSpec("probe", path=path)
    raise CoretuneError(f"unknown target spec '{spec}' (expected {SPEC_HELP})", field="target")


class TargetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: str = Field("nli", description="nli | tasks:A,B | family:NAME | keywords:W,... | "
                      "probe:FILE.jsonl")
    rule: Literal["auto", "coverage", "density"] = Field(
        "auto", description="How many clusters to keep: auto (cut at the best estimated F1, "
        "no tuning) | coverage (clusters holding 90% of the probes) | density (probe density "
        ">= 0.25). See docs/target.md; threshold/top override it.")
    threshold: float | None = Field(None, ge=0, description="Override: keep clusters whose "
                                    "probe density (nli/probe targets) or share of matching "
                                    "rows (metadata targets) is at least this.")
    top: int | None = Field(None, ge=1, description="Keep the top M clusters by target "
                            "evidence instead.")
    probes: int = Field(1000, ge=1, description="Probe prompts for the `nli` target.")
    share: float | None = Field(None, gt=0, le=1, description="The target's share of the pool "
                                "(0, 1], when known: the auto rule uses it instead of its "
                                "estimate.")
    by_task: bool = Field(True, description="A task with most of its rows among the target "
                          "rows is kept whole, one with under a third of them dropped (not the "
                          "one with most target rows), one in between left as it is.")
    votes: int = Field(VOTES, ge=1, description="k-means runs (seeds seed, seed+1, ...) that "
                       "each apply the rule; a row is a target row when most of them keep it. "
                       "1: the cluster stage's clustering alone.")

    @field_validator("spec")
    @classmethod
    def _known_spec(cls, v: str) -> str:
        try:
            parse_target(v)
        except CoretuneError as e:  # the config's field replaces the check's own field name
            raise ValueError(e.reason if e.path is None else str(e)) from None
        return v

    @field_validator("threshold")
    @classmethod
    def _threshold_of_the_spec(cls, v: float | None, info: ValidationInfo) -> float | None:
        metadata = str(info.data.get("spec", "")).strip().partition(":")[0] in METADATA_KINDS
        # (spec is declared above threshold: validated first)
        if v is not None and not (v > 0 and (v <= 1 or not metadata)):
            raise ValueError("must be > 0 (and <= 1 for a metadata target: a share of rows)")
        return v

    def key(self) -> dict:
        """The target stage's settings key. `share` and `by_task` are left out when unset or
        off (the key runs made before they existed); with the task step on, its drop share
        is in it (the step stopped dropping at one half)."""
        unset = {"share"} if self.share is None else set()
        if not self.by_task:
            unset.add("by_task")
        step = {"drop_below": round(DROP_BELOW, 4)} if self.by_task else {}
        return {**self.model_dump(exclude=unset), **step}

    def files(self) -> dict[str, Path]:
        """The files behind the `nli` target's probes (the shipped evaluation sets): part of
        the target stage's key, so a changed probe set never reuses stale targets."""
        if self.spec.strip() != "nli":
            return {}
        from coretune.data.sources import eval_datasets

        files = {}
        for name, ds in sorted(eval_datasets().items()):
            files[f"probe:{name}:data"] = Path(ds.path)
            files[f"probe:{name}:templates"] = Path(ds.templates)
        return files
