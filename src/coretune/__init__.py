"""coretune: find the small slice of an instruction pool that matters for a task family.

Packages in the order a run goes, each importing only its own layer and those below
(tests/test_layering.py; docs/architecture.md):

    foundation  errors, io, paths, validation, registry, stats, models
    data        data/ (pools, shipped datasets, templates)
    library     embed/, cluster/, target/, select/, train/, evaluate/
    backends    backends/ (where the heavy work runs: local, ray)
    config      config.py (the YAML config; each section owns its defaults and stage key)
    run         run/ (pipeline, stages, run folder, manifests, lock, sweeps)
    report      report/ (table, report.html, paired comparisons, sweep report)
    cli         cli/

What users extend has a `coretune.registry.Registry`: selection methods, encoders, backends,
evaluation sets.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public objects, imported on first use so that `import coretune` (and the CLI) stays fast.
_EXPORTS = {
    "Pool": "coretune.data.pool",
    "CoretuneError": "coretune.errors",
    "Embedder": "coretune.embed",
    "make_encoder": "coretune.embed",
    "KMeansClusters": "coretune.cluster",
    "TargetClusters": "coretune.target",
    "KCenterGreedy": "coretune.select",
    "select_rows": "coretune.select",
    "resolve_budget": "coretune.select",
    "TrainConfig": "coretune.train",
    "load_config": "coretune.config",
    "RunConfig": "coretune.config",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'coretune' has no attribute {name!r}")
