"""KCenterGreedy: greedy farthest-point traversal over L2-normalised embeddings.

Each step adds the row farthest (Euclidean on unit rows, i.e. cosine) from every centre chosen
so far. The whole algorithm keeps one float32 vector of length n: the largest cosine
similarity of each row to any centre (``sim``; distance^2 = 2 - 2 sim, so "farthest" = the
smallest ``sim``). A step streams X once: per block of rows, one BLAS gemv against the new
centre, ``np.maximum`` into ``sim`` and an argmin while the block's results are still in cache.
It never builds an n x k or n x n matrix, so memory is X (which may be an ``np.memmap``) plus
a few n-length vectors. The step is memory-bound: its floor is n*d*4 bytes / bandwidth.

Exactness: float32 similarities cannot order rows closer than their rounding error, and such
near-ties do occur (two rows 2e-9 apart at step 253 of a 100k x 384 run). So the rows whose
float32 value lies within a proven error band of the best (usually one or two) are re-measured
in float64 against every centre (`_Exact`), and the farthest by that measure is taken, ties to
the lowest row index. The selection is therefore that of exact (float64) arithmetic: identical
to a float64 reference, to the torch/CUDA path and across thread counts. Radii are float64
distances rounded to float32. Cost: O(candidates x centres x d) per step, about 1% of a step.

Determinism: blocks have fixed boundaries and BLAS runs single-threaded inside each of our
worker threads, so every row's similarity is computed by the same call whatever the number of
threads. Same input + seed => the same selection.

Exact duplicates: when a centre is chosen, every exact duplicate of it is marked covered
(distance 0) and is not picked again while any other row is left. If the budget is larger than
the number of distinct rows, the traversal goes on with the unselected rows in increasing
index order (all at distance 0, radius 0) rather than failing: duplicates are legitimate rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np

from coretune.errors import CoretuneError
from coretune.select.engines import NumpyEngine, TorchEngine, default_jobs, resolve_device
from coretune.validation import BLOCK_ROWS, embeddings_with_norm_error

# Show a progress bar only for work that takes more than a moment (k * n * d multiply-adds).
PROGRESS_MIN_WORK = 5e9


def duplicate_groups(x: np.ndarray) -> list[np.ndarray]:
    """Groups (sorted row indices, at least 2 each) of rows with exactly equal values.

    One streaming pass computes a 64-bit fingerprint per row; only rows whose fingerprints
    collide are compared value by value, so the answer is exact. -0.0 equals 0.0.
    """
    n, d = x.shape
    weights = np.random.default_rng(0x5EED).integers(1, 2**63, size=d, dtype=np.uint64) | 1
    fp = np.empty(n, np.uint64)
    for lo in range(0, n, BLOCK_ROWS):
        block = x[lo:lo + BLOCK_ROWS] + np.float32(0.0)  # + 0.0 turns -0.0 into 0.0
        fp[lo:lo + len(block)] = block.view(np.uint32).astype(np.uint64) @ weights
    order = np.argsort(fp, kind="stable")
    same = fp[order][1:] == fp[order][:-1]
    if not same.any():
        return []
    groups = []
    # Runs of equal fingerprints: starts where a run begins, ends where it stops.
    edges = np.diff(np.concatenate(([0], same.astype(np.int8), [0])))
    for start, stop in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
        rows = np.sort(order[start:stop + 1])
        _, inverse = np.unique(x[rows] + np.float32(0.0), axis=0, return_inverse=True)
        for g in np.unique(inverse):
            members = rows[inverse.ravel() == g]
            if len(members) > 1:
                groups.append(members)
    groups.sort(key=lambda g: int(g[0]))
    return groups


class _Coverage:
    """Covered-row bookkeeping shared by both engines: chosen rows and their duplicates."""

    def __init__(self, n: int, groups: list[np.ndarray]):
        self.chosen = np.zeros(n, bool)
        self.group_of = np.full(n, -1, np.int64) if groups else None
        self.groups = groups
        for g, members in enumerate(groups):
            self.group_of[members] = g

    def covered_by(self, row: int) -> np.ndarray | int:
        """Rows at distance 0 from `row`: itself and its exact duplicates."""
        if self.group_of is None or self.group_of[row] < 0:
            return row
        return self.groups[self.group_of[row]]

    def next_by_index(self) -> int:
        """Everything left is a duplicate of a centre: take the lowest unselected row."""
        return int(np.argmin(self.chosen))


class _Exact:
    """float64 distances of a few candidate rows to every centre so far.

    The float32 pass can only rank rows up to its rounding error; rows whose float32 value is
    within a proven error band of the best are re-measured here, so the choice (and the radius)
    is that of exact arithmetic: |x|^2 + |c|^2 - 2 x.c in float64 on the rows as given (unit
    rows) or on the normalised rows. This is what makes the selection identical to a float64
    reference rather than to whichever way float32 rounding breaks near-ties.
    """

    def __init__(self, x: np.ndarray, scaled: bool, capacity: int):
        self.x, self.scaled = x, scaled
        self.centres = np.empty((capacity, x.shape[1]), np.float64)
        self.sq = np.empty(capacity, np.float64)
        self.m = 0

    def rows(self, rows: np.ndarray) -> np.ndarray:
        r = np.asarray(self.x[np.asarray(rows)], np.float64).reshape(-1, self.x.shape[1])
        if self.scaled:
            r /= np.linalg.norm(r, axis=1, keepdims=True)
        return r

    def add(self, row: int) -> None:
        self.centres[self.m] = self.rows(np.array([row]))[0]
        self.sq[self.m] = self.centres[self.m] @ self.centres[self.m]
        self.m += 1

    def min_d2(self, rows: np.ndarray) -> np.ndarray:
        best = np.full(len(rows), np.inf)
        for lo in range(0, len(rows), 256):
            r = self.rows(rows[lo:lo + 256])
            rsq = np.einsum("ij,ij->i", r, r)
            out = best[lo:lo + 256]
            for c in range(0, self.m, 4096):
                d2 = rsq[:, None] + self.sq[None, c:min(c + 4096, self.m)] \
                    - 2.0 * (r @ self.centres[c:min(c + 4096, self.m)].T)
                np.minimum(out, d2.min(axis=1), out=out)
        return best


class KCenterGreedy:
    """Greedy k-center (farthest-point traversal) coreset, in the scikit-learn manner.

    ``KCenterGreedy(k, seed=0).fit(X)`` picks `k` rows of X. The first centre is drawn with
    ``numpy.random.default_rng(seed)`` unless `already_selected` rows are given, in which case
    the traversal continues from them (they are not part of the result). After `fit`:

    - ``indices_`` (int64 [k]): the rows chosen, in selection order;
    - ``radii_`` (float32 [k]): coverage radius after adding each centre, i.e. the largest
      distance of any row to its nearest centre (already-selected rows count as centres);
      non-increasing.

    Distances are Euclidean between L2-normalised rows (sqrt(2 - 2 cos)); rows that are not unit
    norm are normalised on the fly, X is never copied when it is float32 and C-contiguous (an
    ``np.memmap`` works). `device`: "cpu" (numpy, blocked and threaded over `n_jobs` threads,
    default: the usable CPUs), "cuda" (torch) or "auto". `backend="torch"` with device "cpu"
    runs the torch path on the CPU (for testing it without a GPU). Both give the same selection
    (near-ties are settled in float64, see the module docstring). `quiet` silences the progress
    bar, which shows only for long runs anyway. Memory: X, a few n-length vectors and the
    float64 centres (k + len(already_selected)) x d.
    """

    def __init__(self, k: int, seed: int | Sequence[int] = 0,
                 already_selected: np.ndarray | Sequence[int] | None = None,
                 device: str = "cpu", *, backend: str | None = None, n_jobs: int | None = None,
                 quiet: bool = False):
        self.k = k
        self.seed = seed
        self.already_selected = already_selected
        self.device = device
        self.backend = backend
        self.n_jobs = n_jobs
        self.quiet = quiet

    def fit(self, x: np.ndarray) -> KCenterGreedy:
        self.indices_, self.radii_ = kcenter_greedy(
            x, self.k, self.seed, self.already_selected, device=self.device,
            backend=self.backend, n_jobs=self.n_jobs, quiet=self.quiet)
        return self


class _Traversal:
    """The state of one farthest-first traversal: the engine holding X and the similarity
    vector, the exact re-check, the covered rows. A context manager: on entry BLAS runs
    single-threaded for the numpy engine (our threads split the rows: determinism, and
    OpenBLAS' own threads stall badly on a busy machine); on exit the engine's threads stop."""

    def __init__(self, x, k, seed, already_selected, device, backend, n_jobs, quiet):
        x, inv_norm, norm_dev = embeddings_with_norm_error(x)
        n = x.shape[0]
        self.seeds = _check_rows(already_selected, n)
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise CoretuneError(f"k must be a positive integer, got {k!r}", field="k")
        if k > n - len(self.seeds):
            raise CoretuneError(f"k={k} is larger than the {n - len(self.seeds)} rows left to "
                                "select", field="k")
        device, self.kind = resolve_device(device, backend)
        self.quiet = quiet or k * n * x.shape[1] < PROGRESS_MIN_WORK
        self.cover = _Coverage(n, duplicate_groups(x))
        self.rng = np.random.default_rng(seed)
        self.exact = _Exact(x, inv_norm is not None, int(k) + len(self.seeds))
        self.band = _error_band(x.shape[1], norm_dev, inv_norm is not None)
        self.n = n
        self.engine = (TorchEngine(x, inv_norm, device) if self.kind == "torch"
                       else NumpyEngine(x, inv_norm, n_jobs or default_jobs()))

    def __enter__(self) -> _Traversal:
        from threadpoolctl import threadpool_limits

        self._limits = (threadpool_limits(limits=1, user_api="blas") if self.kind == "numpy"
                        else contextlib.nullcontext())
        self._limits.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._limits.__exit__(*exc)
        finally:
            self.engine.close()

    def first_centre(self) -> int:
        """Drawn from the seed, or the farthest row from the already-selected ones."""
        if not len(self.seeds):
            return int(self.rng.integers(self.n))
        self.engine.update_many(self.seeds)
        for s in self.seeds:
            self.cover.chosen[s] = True
            self.engine.exclude(self.cover.covered_by(int(s)))
            self.exact.add(int(s))
        return self.pick(self.engine.argmin()[0])[0]

    def add(self, centre: int) -> float:
        """Make `centre` a centre; the new float32 minimum similarity over the rows left."""
        self.cover.chosen[centre] = True
        self.engine.exclude(self.cover.covered_by(centre))
        self.exact.add(centre)
        return self.engine.update(self.engine.row(centre))[0]

    def pick(self, best: float) -> tuple[int, float]:
        """The exact farthest row and its squared distance, given the float32 minimum."""
        if best == np.inf:  # every row left is a duplicate of a centre
            return self.cover.next_by_index(), 0.0
        cands = self.engine.candidates(best + self.band)
        d2 = self.exact.min_d2(cands)
        j = int(np.argmax(d2))  # candidates ascend: ties go to the lowest row index
        return int(cands[j]), float(d2[j])


def kcenter_greedy(x: np.ndarray, k: int, seed: int | Sequence[int] = 0,
                   already_selected: np.ndarray | Sequence[int] | None = None, *,
                   device: str = "cpu", backend: str | None = None, n_jobs: int | None = None,
                   quiet: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(indices, radii) of the traversal; see `KCenterGreedy` for the arguments."""
    from tqdm.auto import tqdm

    indices = np.empty(k, np.int64)
    radii = np.empty(k, np.float32)
    with _Traversal(x, k, seed, already_selected, device, backend, n_jobs, quiet) as t, \
            tqdm(total=k, desc="k-center", unit="centre", disable=t.quiet, leave=False) as bar:
        centre = t.first_centre()
        for step in range(k):
            indices[step] = centre
            best = t.add(centre)
            if step + 1 < k or best != np.inf:
                centre, d2 = t.pick(best)
            else:
                d2 = 0.0
            radii[step] = np.sqrt(max(d2, 0.0))
            bar.update()
    return indices, radii


def _check_rows(rows, n: int) -> np.ndarray:
    if rows is None:
        return np.empty(0, np.int64)
    arr = np.asarray(rows)
    if arr.size == 0:
        return np.empty(0, np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise CoretuneError("already_selected must be a 1-D array of row indices",
                            field="already_selected")
    if arr.min() < 0 or arr.max() >= n:
        raise CoretuneError(f"already_selected has a row index outside 0..{n - 1}",
                            field="already_selected")
    if len(np.unique(arr)) != len(arr):
        raise CoretuneError("already_selected repeats a row", field="already_selected")
    return arr.astype(np.int64)


def _error_band(d: int, norm_dev: float, scaled: bool) -> float:
    """How far above the float32 minimum similarity the exact farthest row can hide.

    A float32 dot of two (near-)unit vectors is within eps = (d + 4) u of the exact one
    (u = 2^-24; the classic gamma_d bound, loose for blocked BLAS sums), and the exact squared
    distance |x|^2 + |c|^2 - 2 x.c differs from 2 - 2 sim by at most 2 nu + 2 eps, nu the
    largest | |x|^2 - 1 |. Rows within 2 nu + 2 eps of the minimum are re-checked exactly.
    """
    u = float(np.finfo(np.float32).eps) / 2
    eps = (d + 4) * u * 1.01
    nu = 2 * eps if scaled else norm_dev + (d + 2) * u
    return 2 * nu + 2 * eps
