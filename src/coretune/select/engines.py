"""Where the k-center traversal keeps X and its similarity vector: numpy (blocked, threaded,
CPU) or torch (CUDA, or the CPU for testing). Both answer the same questions, so
`coretune.select.kcenter` runs one loop over either.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from coretune.errors import CoretuneError
from coretune.validation import BLOCK_ROWS


class NumpyEngine:
    """Blocked, threaded similarity updates over a (possibly memory-mapped) float32 matrix."""

    def __init__(self, x: np.ndarray, inv_norm: np.ndarray | None, n_jobs: int):
        self.x, self.inv_norm = x, inv_norm
        n = x.shape[0]
        self.sim = np.full(n, -np.inf, np.float32)
        self.buf = np.empty(n, np.float32)
        blocks = [(lo, min(lo + BLOCK_ROWS, n)) for lo in range(0, n, BLOCK_ROWS)]
        jobs = max(1, min(n_jobs, len(blocks)))
        # Contiguous runs of whole blocks per worker.
        self.parts = [blocks[len(blocks) * j // jobs:len(blocks) * (j + 1) // jobs]
                      for j in range(jobs)]
        self.blocks = blocks
        self.block_min = np.full(len(blocks), -np.inf)  # -inf: unknown, scan the block
        self.pool = ThreadPoolExecutor(jobs) if jobs > 1 else None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def row(self, i: int) -> np.ndarray:
        c = np.array(self.x[i], dtype=np.float32)
        return c * self.inv_norm[i] if self.inv_norm is not None else c

    def exclude(self, rows: np.ndarray | int) -> None:
        self.sim[rows] = np.inf  # covered: never the farthest again

    def update(self, c: np.ndarray) -> tuple[float, int]:
        """sim = max(sim, X c); return (min sim, its lowest index)."""
        if self.pool is None:
            results = [self._update_part(self.parts[0], c)]
        else:
            results = list(self.pool.map(lambda part: self._update_part(part, c), self.parts))
        best_val, best_idx = np.inf, 0
        for val, idx in results:  # parts are in row order: strict < keeps the lowest index
            if val < best_val:
                best_val, best_idx = val, idx
        return best_val, best_idx

    def update_many(self, centres: np.ndarray) -> None:
        """Fold in several centres at once (already-selected rows), in chunks of 256."""
        for lo in range(0, len(centres), 256):
            cs = np.stack([self.row(int(i)) for i in centres[lo:lo + 256]], axis=1)
            for lo_r in range(0, self.x.shape[0], BLOCK_ROWS):
                part = slice(lo_r, lo_r + BLOCK_ROWS)
                dots = (self.x[part] @ cs).max(axis=1)
                if self.inv_norm is not None:
                    dots *= self.inv_norm[part]
                np.maximum(self.sim[part], dots, out=self.sim[part])
        self.block_min[:] = -np.inf

    def argmin(self) -> tuple[float, int]:
        i = int(np.argmin(self.sim))
        return float(self.sim[i]), i

    def candidates(self, threshold: float) -> np.ndarray:
        """Rows with sim <= threshold, ascending; only blocks whose minimum can qualify."""
        thr = np.float64(threshold)  # compare in float64: no rounding of the threshold
        found = [lo + np.flatnonzero(self.sim[lo:hi] <= thr)
                 for (lo, hi), bmin in zip(self.blocks, self.block_min, strict=True)
                 if bmin <= thr]
        return np.concatenate(found) if found else np.empty(0, np.int64)

    def _update_part(self, blocks: list[tuple[int, int]], c: np.ndarray) -> tuple[float, int]:
        best_val, best_idx = np.inf, 0
        x, sim, buf, inv = self.x, self.sim, self.buf, self.inv_norm
        for lo, hi in blocks:
            out = buf[lo:hi]
            np.dot(x[lo:hi], c, out=out)
            if inv is not None:
                out *= inv[lo:hi]
            s = sim[lo:hi]
            np.maximum(s, out, out=s)
            j = int(s.argmin())
            self.block_min[lo // BLOCK_ROWS] = s[j]
            if s[j] < best_val:
                best_val, best_idx = float(s[j]), lo + j
        return best_val, best_idx


class TorchEngine:
    """The same algorithm on a torch device (CUDA when there is one; CPU for testing)."""

    def __init__(self, x: np.ndarray, inv_norm: np.ndarray | None, device: str):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        with warnings.catch_warnings():  # a read-only memmap: torch only reads it
            warnings.simplefilter("ignore", UserWarning)
            self.x = torch.as_tensor(np.asarray(x)).to(self.device)
        self.inv_norm = (torch.as_tensor(inv_norm).to(self.device)
                         if inv_norm is not None else None)
        self.sim = torch.full((x.shape[0],), -float("inf"), dtype=torch.float32,
                              device=self.device)

    def close(self) -> None:
        pass

    def row(self, i: int):
        c = self.x[i].clone()
        return c * self.inv_norm[i] if self.inv_norm is not None else c

    def exclude(self, rows: np.ndarray | int) -> None:
        self.sim[self.torch.as_tensor(rows, device=self.device)] = float("inf")

    def update(self, c) -> tuple[float, int]:
        dots = self.torch.mv(self.x, c)
        if self.inv_norm is not None:
            dots *= self.inv_norm
        self.torch.maximum(self.sim, dots, out=self.sim)
        return self.argmin()

    def update_many(self, centres: np.ndarray) -> None:
        for i in centres:
            self.update(self.row(int(i)))

    def argmin(self) -> tuple[float, int]:
        i = int(self.torch.argmin(self.sim))  # first minimum on ties
        return float(self.sim[i]), i

    def candidates(self, threshold: float) -> np.ndarray:
        mask = self.sim.double() <= threshold
        return self.torch.nonzero(mask).flatten().cpu().numpy().astype(np.int64)


def resolve_device(device: str, backend: str | None) -> tuple[str, str]:
    if backend not in (None, "numpy", "torch"):
        raise CoretuneError(f"unknown backend '{backend}' (numpy or torch)", field="backend")
    if device == "auto":
        try:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            device = "cpu"
    if device != "cpu" and not device.startswith("cuda"):
        raise CoretuneError(f"unknown device '{device}' (cpu, cuda or auto)", field="device")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise CoretuneError("device 'cuda' asked for but no CUDA GPU is available",
                                field="device")
        if backend == "numpy":
            raise CoretuneError("the numpy backend runs on the CPU only", field="backend")
        return device, "torch"
    return device, backend or "numpy"


def default_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
