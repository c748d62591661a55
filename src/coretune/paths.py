"""Where coretune finds its shipped data."""

from __future__ import annotations

import os
from pathlib import Path

from coretune.errors import CoretuneError
from coretune.io import make_dir


def data_dir() -> Path:
    """The shipped `data/` folder: $CORETUNE_DATA, else the repository's `data/`."""
    env = os.environ.get("CORETUNE_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "data")
    for c in candidates:
        if (c / "templates").is_dir():
            return c
    raise CoretuneError(
        "shipped data not found; set CORETUNE_DATA to the folder holding nli/, pool/, templates/",
        path=candidates[0],
    )


def cache_dir() -> Path:
    """Cache for embeddings and converted models: $CORETUNE_CACHE or ~/.cache/coretune."""
    env = os.environ.get("CORETUNE_CACHE")
    path = Path(env) if env else Path.home() / ".cache" / "coretune"
    return make_dir(path)
