"""Registries of what users extend: selection methods, encoders, backends, evaluation sets.

A `Registry` maps names to objects. An entry is registered directly, by decorator, or lazily
as "module:attr" (imported on first use, so an optional dependency costs nothing until asked
for). Config validation and the CLI's help read the names from here, so a registered name is
accepted and listed everywhere at once; an unknown one is a `CoretuneError` naming the known
ones and the closest match.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from coretune.errors import CoretuneError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> objects of one kind. `builtin`, if given, returns entries looked up on every
    access (they may depend on the environment, e.g. the shipped data folder); registered
    entries come after them and replace one of the same name."""

    def __init__(self, kind: str, *, field: str | None = None,
                 builtin: Callable[[], Mapping[str, T]] | None = None):
        self.kind = kind
        self.field = field
        self._builtin = builtin
        self._entries: dict[str, T | str] = {}

    def register(self, name: str, obj: T | str | None = None):
        """`register(name, obj)`, `register(name, "module:attr")` (imported when first
        used), or as a decorator: `@registry.register("name")`."""
        if obj is None:
            def decorate(value: T) -> T:
                self._entries[name] = value
                return value
            return decorate
        self._entries[name] = obj
        return obj

    def _all(self) -> dict[str, T | str]:
        return {**(self._builtin() if self._builtin else {}), **self._entries}

    def names(self) -> tuple[str, ...]:
        return tuple(self._all())

    def __contains__(self, name: object) -> bool:
        return name in self._all()

    def get(self, name: str) -> T:
        entries = self._all()
        if name not in entries:
            raise self.unknown(name)
        obj = entries[name]
        if isinstance(obj, str):  # lazy "module:attr"
            module, _, attr = obj.partition(":")
            obj = getattr(importlib.import_module(module), attr)
            if name in self._entries:
                self._entries[name] = obj
        return obj

    def items(self) -> dict[str, T]:
        return {name: self.get(name) for name in self.names()}

    def unknown(self, name: str, *, names=None, listed: str | None = None,
                what: str | None = None, hint: str = "") -> CoretuneError:
        """The error for a name not registered: 'unknown KIND 'name' (one of a, b, c)' (or
        `listed`; `names` instead of the registered ones) and the closest name."""
        names = tuple(self.names() if names is None else names)
        listed = listed if listed is not None else f"one of {', '.join(names)}"
        return CoretuneError(f"unknown {what or self.kind} '{name}' ({listed}{hint})"
                             + did_you_mean(name, names), field=self.field)

    @contextlib.contextmanager
    def scratch(self) -> Iterator[Registry[T]]:
        """Registrations made inside the block are undone after it (for tests)."""
        saved = dict(self._entries)
        try:
            yield self
        finally:
            self._entries = saved


def did_you_mean(name: str, names) -> str:
    """'; did you mean 'x'?' for the closest of `names`, or ''."""
    close = difflib.get_close_matches(str(name), list(names), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""
