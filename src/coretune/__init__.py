"""coretune: find the small slice of an instruction pool that matters for a task family.

Layers, each importing only those below it: `cli` -> `pipeline` -> `stages` -> the library
(`select`, `backends`, `embed`/`encoders`, `cluster`, `target`, `train`, `evaluate`,
`summary`) -> `data`, `config`, `layout`, `validation`, `io`, `errors`, `paths`. What users
extend has a registry: selection methods, backends, encoders, evaluation sets.
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
