"""The package layering, read from the source with `ast` (function-level imports included):
every import goes to the same layer or one below, and no module imports itself back through
others. docs/architecture.md describes the layers."""

from __future__ import annotations

import ast

from conftest import ROOT

SRC = ROOT / "src" / "coretune"

# Lowest first. A module belongs to the first layer one of whose names prefixes it.
LAYERS = [
    ("foundation", ["coretune.errors", "coretune.io", "coretune.paths", "coretune.validation",
                    "coretune.registry", "coretune.stats", "coretune.models",
                    "coretune.batching"]),
    ("data", ["coretune.data"]),
    ("library", ["coretune.embed", "coretune.cluster", "coretune.target", "coretune.select",
                 "coretune.train", "coretune.evaluate"]),
    ("backends", ["coretune.backends"]),
    ("config", ["coretune.config"]),
    ("run", ["coretune.run"]),
    ("report", ["coretune.report"]),
    ("cli", ["coretune.cli", "coretune.__main__"]),
]


def _module(path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, set[str]]:
    """Every coretune module and the coretune modules it imports (resolved to modules)."""
    files = {_module(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import sub` imports the submodule pkg.sub when there is one
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files
                           else node.module for a in node.names]
            else:
                continue
            deps.update(t for t in targets if t.startswith("coretune.") and t != name)
        graph[name] = deps
    return graph


def _layer(module: str) -> int:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and docs/architecture.md")


def test_every_module_is_in_a_layer():
    for module in _modules():
        if module != "coretune":  # the package's lazy exports (names, not imports)
            _layer(module)


def test_nothing_imports_upward():
    upward = sorted(f"{m} ({LAYERS[_layer(m)][0]}) imports {d} ({LAYERS[_layer(d)][0]})"
                    for m, deps in _modules().items() if m != "coretune"
                    for d in deps if _layer(d) > _layer(m))
    assert upward == []


def test_no_import_cycles():
    graph = _modules()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph.get(d_ := m, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join([*path[path.index(d):], d]))
            elif d in graph and not state.get(d):
                visit(d, [*path, d])
        state[d_] = 2

    for m in sorted(graph):
        if not state.get(m):
            visit(m, [m])
    assert cycles == []


def test_package_inits_only_re_export():
    """An `__init__` holds a docstring, imports and `__all__`, nothing else."""
    for path in SRC.rglob("__init__.py"):
        if path.parent == SRC:
            continue  # coretune/__init__.py: the lazy public exports
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            ok = (isinstance(node, ast.Import | ast.ImportFrom)
                  or (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
                  or (isinstance(node, ast.Assign) and [t.id for t in node.targets
                                                        if isinstance(t, ast.Name)] == ["__all__"]))
            assert ok, f"{path.relative_to(SRC)}:{node.lineno} is more than a re-export"


def test_the_documented_imports_work():
    """Every `from coretune... import ...` line of the README and docs/ imports."""
    import importlib
    import re

    text = "\n".join(p.read_text(encoding="utf-8")
                     for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    lines = re.findall(r"^from (coretune[\w.]*) import ([\w, ]+)", text, re.M)
    assert len(lines) >= 10
    for module, names in lines:
        mod = importlib.import_module(module)
        for name in names.split(","):
            assert hasattr(mod, name.strip()), f"from {module} import {name.strip()}"
