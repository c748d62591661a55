"""One home for the checks on arrays and numbers that many modules receive: embeddings,
seeds, labels and centroids. Budgets are checked where they are resolved
(`coretune.select.budget`). Every failure is a one-line `CoretuneError` naming the field
(and the row, for a bad embedding).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from coretune.errors import CoretuneError

# Rows per block when scanning a (possibly memory-mapped) matrix: fixed, so that per-row
# results never depend on the machine (see coretune.select.kcenter).
BLOCK_ROWS = 4096
# Rows whose norm is within this of 1 are used as they are; others are scaled on the fly.
UNIT_TOL = 1e-4


def check_embeddings(x: np.ndarray, *, name: str = "embeddings"
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate an [n, d] embedding matrix for selection, like scikit-learn's ``check_array``.

    Returns ``(x32, inv_norm)``: `x` as float32 C-contiguous (copied only when it is not
    already; an ``np.memmap`` of float32 stays a memmap) and either None when every row has
    unit L2 norm (within `UNIT_TOL`), or the float32 inverse row norms to scale by. NaN/inf or
    all-zero rows raise a `CoretuneError` naming the first bad row (0-based).
    """
    x, inv_norm, _ = embeddings_with_norm_error(x, name)
    return x, inv_norm


def embeddings_with_norm_error(x, name: str = "embeddings"
                               ) -> tuple[np.ndarray, np.ndarray | None, float]:
    """`check_embeddings`, plus the largest | |row|^2 - 1 | (k-center's exact-check bound)."""
    if not isinstance(x, np.ndarray):
        raise CoretuneError(f"{name} must be a numpy array, got {type(x).__name__}", field=name)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise CoretuneError(f"{name} must be a non-empty 2-D array [rows, dims], got shape "
                            f"{x.shape}", field=name)
    if not np.issubdtype(x.dtype, np.floating):
        raise CoretuneError(f"{name} must be floating point, got dtype {x.dtype}", field=name)
    if x.dtype != np.float32 or not x.flags.c_contiguous:
        x = np.ascontiguousarray(x, dtype=np.float32)
    sq = np.empty(x.shape[0], np.float32)
    for lo in range(0, x.shape[0], BLOCK_ROWS):
        block = x[lo:lo + BLOCK_ROWS]
        np.einsum("ij,ij->i", block, block, out=sq[lo:lo + BLOCK_ROWS])
    bad = ~np.isfinite(sq)
    if bad.any():
        row = int(np.argmax(bad))
        what = ("has NaN or infinite values" if not np.isfinite(x[row]).all()
                else "has a norm too large for float32")
        raise CoretuneError(f"{name} row {row} {what}", row=row, field=name)
    zero = sq == 0
    if zero.any():
        row = int(np.argmax(zero))
        raise CoretuneError(f"{name} row {row} is all zeros (no direction to compare)",
                            row=row, field=name)
    norm = np.sqrt(sq)
    if float(np.max(np.abs(norm - 1.0))) <= UNIT_TOL:
        return x, None, float(np.max(np.abs(sq.astype(np.float64) - 1.0)))
    return x, (1.0 / norm).astype(np.float32), 0.0


def check_stored_embeddings(x: np.ndarray, *, path: str | Path | None = None) -> None:
    """An embedding file's (or an encoder's) rows as stored: 2-d float32, every row finite
    and non-zero. Never copies; the error names the first bad pool row (1-based)."""
    if x.ndim != 2 or x.dtype != np.float32:
        raise CoretuneError(f"embeddings must be a 2-d float32 array, got {x.ndim}-d {x.dtype}",
                            path=path)
    for start in range(0, len(x), 65536):  # chunked: x may be a memory map of a big pool
        part = np.asarray(x[start:start + 65536])
        bad = ~np.isfinite(part).all(axis=1) | (np.abs(part).sum(axis=1) == 0)
        if bad.any():
            i = start + int(np.argmax(bad))
            what = "zero vector" if np.isfinite(part).all() else "NaN or infinite value"
            raise CoretuneError(f"embedding has a {what} (pool row {i + 1})", path=path,
                                row=i + 1)


def check_float32_matrix(x: np.ndarray, *, name: str = "embeddings") -> tuple[int, int]:
    """A non-empty 2-d float32 array (what faiss takes without a copy); its shape."""
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.dtype != np.float32:
        raise CoretuneError(f"{name} must be a 2-d float32 array", field=name)
    if len(x) == 0:
        raise CoretuneError(f"no {name} (0 rows)", field=name)
    return x.shape


def check_seed(seed, *, field: str = "seed") -> int:
    """A non-negative integer seed (bools refused)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise CoretuneError(f"seed must be a non-negative integer, got {seed!r}", field=field)
    return int(seed)


def check_labels(labels, n: int) -> np.ndarray:
    """One integer cluster label per embedding row."""
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise CoretuneError(f"labels must be {n} integers (one per embedding row), got "
                            f"shape {labels.shape} dtype {labels.dtype}", field="labels")
    return labels


def check_centroids(centroids, clusters: list[int], dim: int) -> np.ndarray:
    """Centroids [n_clusters, dim] that cover every cluster id in `clusters`."""
    centroids = np.asarray(centroids)
    if centroids.ndim != 2 or centroids.shape[1] != dim \
            or centroids.shape[0] <= max(clusters) or min(clusters) < 0:
        raise CoretuneError(f"centroids of shape {centroids.shape} do not cover clusters "
                            f"{clusters} of {dim}-d embeddings", field="centroids")
    return centroids
