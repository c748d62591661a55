"""promptsource templates: load `templates.yaml` as shipped, render rows in a sandboxed Jinja.

Rendering follows promptsource's `Template.apply`: the row's fields plus `answer_choices`
(itself a Jinja string, split on `|||`) are passed to the template, the output is split on
`|||` into prompt and target, and each part is stripped. `|||` inside field values is
protected so it cannot split the output. Unknown fields raise instead of rendering blank.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from coretune.errors import CoretuneError

_PIPE = "|||"
_PIPE_GUARD = "\x00PIPE\x00"


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads promptsource's `!Template` / `!TemplateMetadata` tags as mappings."""


def _mapping(loader: yaml.SafeLoader, node: yaml.Node) -> dict:
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor("!Template", _mapping)
_Loader.add_constructor("!TemplateMetadata", _mapping)


def _choice(seq: Sequence):
    # promptsource picks at random; we seed per row (see render) so pools are reproducible.
    return _RNG.choice(list(seq))


_RNG = random.Random(0)
_ENV = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
_ENV.globals.update(zip=zip, enumerate=enumerate)
_ENV.filters["choice"] = _choice


@dataclass(frozen=True)
class Rendered:
    prompt: str
    target: str
    choices: list[str]


@dataclass
class Template:
    id: str
    name: str
    jinja: str
    answer_choices: str | None = None
    metadata: dict = field(default_factory=dict)
    source: str = ""
    line: int | None = None  # where the template starts in its YAML file

    def __post_init__(self):
        self._uses_choice = "choice" in self.jinja.replace("answer_choices", "")
        try:
            self._compiled = _ENV.from_string(self.jinja)
            self._compiled_choices = (
                _ENV.from_string(self.answer_choices) if self.answer_choices else None
            )
        except jinja2.TemplateSyntaxError as e:
            raise CoretuneError(
                f"template '{self.name}' has a Jinja syntax error: {e.message}",
                path=self.source or None,
                line=(self.line or 0) + e.lineno if self.line else e.lineno, field="jinja",
            ) from e

    def choices_for(self, row: Mapping[str, Any]) -> list[str]:
        if self._compiled_choices is None:
            return []
        text = self._render(self._compiled_choices, row, [], "answer_choices")
        choices = [c.strip() for c in text.split(_PIPE)]
        for j, c in enumerate(choices):
            if c in choices[:j]:  # rank classification could not tell the two apart
                raise CoretuneError(f"template '{self.name}' lists answer choice '{c[:60]}' "
                                    "twice", path=self.source or None, line=self.line,
                                    field="answer_choices")
        return choices

    def render(self, row: Mapping[str, Any]) -> Rendered:
        """Render one dataset row to (prompt, target, choices). A row without label -> target ''."""
        choices = self.choices_for(row)
        text = self._render(self._compiled, row, choices, "jinja")
        parts = [p.replace(_PIPE_GUARD, _PIPE).strip() for p in text.split(_PIPE)]
        prompt = parts[0]
        target = parts[1] if len(parts) > 1 else ""
        return Rendered(prompt, target, [c.replace(_PIPE_GUARD, _PIPE) for c in choices])

    def _render(self, compiled, row, choices, what: str) -> str:
        safe = {k: v.replace(_PIPE, _PIPE_GUARD) if isinstance(v, str) else v
                for k, v in row.items()}
        safe["answer_choices"] = choices
        if self._uses_choice:
            _RNG.seed(hashlib.sha256(repr(sorted(safe.items())).encode()).digest())
        try:
            return compiled.render(**safe)
        except jinja2.UndefinedError as e:
            m = re.search(r"'([^']+)' is undefined", e.message or "")
            raise CoretuneError(
                f"template '{self.name}' uses a field the row does not have ({e.message})",
                path=self.source or None, line=self.line, field=m.group(1) if m else what,
            ) from e
        except jinja2.exceptions.SecurityError as e:
            raise CoretuneError(f"template '{self.name}' is unsafe: {e}",
                                path=self.source or None, line=self.line, field=what) from e
        except (TypeError, IndexError, KeyError, ValueError) as e:
            raise CoretuneError(
                f"template '{self.name}' failed to render ({type(e).__name__}: {e})",
                path=self.source or None, line=self.line, field=what,
            ) from e


@dataclass
class TemplateSet:
    """All templates of one dataset, in file order (the order promptsource lists them)."""

    dataset: str
    templates: list[Template]
    path: str = ""

    def __len__(self) -> int:
        return len(self.templates)

    def __iter__(self):
        return iter(self.templates)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.templates]

    def get(self, name: str) -> Template:
        for t in self.templates:
            if t.name == name:
                return t
        raise CoretuneError(f"no template named '{name}' (have: {', '.join(self.names)})",
                            path=self.path or None, field="name")

    def with_choices(self) -> TemplateSet:
        """Only templates with answer choices (the ones rank classification can score)."""
        return TemplateSet(self.dataset, [t for t in self if t.answer_choices], self.path)

    def choose(self, mode: str = "all", n: int | None = None, name: str | None = None
               ) -> TemplateSet:
        """Template selection for RQ2/RQ4: `all`, the `first` n in file order, or one `fixed`
        template (by name, default the first)."""
        if mode == "all":
            chosen = list(self.templates)
        elif mode == "first":
            if not n or n < 1:
                raise CoretuneError("mode 'first' needs n >= 1", field="templates.n")
            chosen = self.templates[:n]
        elif mode == "fixed":
            chosen = [self.get(name) if name else self.templates[0]]
        else:
            raise CoretuneError(f"unknown template mode '{mode}' (all, first, fixed)",
                                field="templates.mode")
        return TemplateSet(self.dataset, chosen, self.path)


# promptsource's Template fields; anything else is most likely a typo.
TEMPLATE_KEYS = {"id", "name", "jinja", "answer_choices", "metadata", "reference"}


def _template_lines(text: str) -> dict[str, int]:
    """Line of each entry under `templates:` (for error messages)."""
    node = yaml.compose(text, Loader=_Loader)
    for k, v in getattr(node, "value", []) if isinstance(node, yaml.MappingNode) else []:
        if k.value == "templates" and isinstance(v, yaml.MappingNode):
            return {str(tk.value): tk.start_mark.line + 1 for tk, _ in v.value}
    return {}


def load_templates(path: str | Path) -> TemplateSet:
    path = Path(path)
    if not path.is_file():
        raise CoretuneError("templates file not found", path=path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[:e.start].count(b"\n") + 1
        raise CoretuneError("not valid UTF-8", path=path, line=line) from e
    try:
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506 (SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise CoretuneError(f"invalid YAML ({getattr(e, 'problem', e)})", path=path,
                            line=mark.line + 1 if mark else None) from e
    if not isinstance(doc, dict) or not isinstance(doc.get("templates"), dict):
        raise CoretuneError("expected a promptsource file with a 'templates' mapping",
                            path=path, field="templates")
    dataset = "/".join(str(doc[k]) for k in ("dataset", "subset") if doc.get(k))
    lines = _template_lines(text)
    templates = []
    for key, t in doc["templates"].items():
        line = lines.get(str(key))
        if not isinstance(t, dict):
            raise CoretuneError(f"template {key} is not a mapping", path=path, line=line,
                                field="templates")
        unknown = sorted(set(t) - TEMPLATE_KEYS)
        if unknown:
            raise CoretuneError(f"template {key} has unknown keys {unknown}", path=path,
                                line=line, field=unknown[0])
        for required in ("jinja", "name"):
            if not isinstance(t.get(required), str) or not t[required].strip():
                raise CoretuneError(f"template {key} has no {required} text", path=path,
                                    line=line, field=required)
        if t.get("answer_choices") is not None and not isinstance(t["answer_choices"], str):
            raise CoretuneError(f"template {key}: answer_choices must be a Jinja string "
                                "like 'yes ||| no'", path=path, line=line,
                                field="answer_choices")
        templates.append(Template(
            id=str(t.get("id", key)), name=str(t["name"]), jinja=t["jinja"],
            answer_choices=t.get("answer_choices"), metadata=t.get("metadata") or {},
            source=str(path), line=line,
        ))
    if not templates:
        raise CoretuneError("no templates", path=path, field="templates")
    return TemplateSet(dataset or path.parent.name, templates, str(path))
