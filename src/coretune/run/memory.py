"""Peak memory of a stretch of code (a pipeline stage): resident set size, and torch's GPU
peak when a GPU is in use.

How RSS is measured: on Linux the kernel keeps the process's resident high-water mark
(`VmHWM` in /proc/self/status) and resets it to the current RSS when "5" is written to
/proc/self/clear_refs. A stage's peak is then exact (every page counts, however short the
spike: a logits tensor can live for milliseconds) and costs nothing while the stage runs.
Where that is not possible (macOS, or a kernel that refuses the write), a thread samples
RSS every 10 ms with psutil: it can miss spikes shorter than that, so the result says which
method measured it. Children (e.g. Ray workers) are not counted.
"""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")
_MB = 1 << 20


def _status_kb(*fields: str) -> list[int | None]:
    found: dict[str, int] = {}
    try:
        for line in _STATUS.read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in fields:
                found[name] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return [found.get(f) for f in fields]


def reset_rss_peak() -> bool:
    """Set the kernel's RSS high-water mark to the current RSS; False where impossible.

    Some kernels and sandboxes (gVisor, for one) accept the write and ignore it, so the
    reset is checked: right after it the mark must sit at the current RSS."""
    try:
        _CLEAR.write_text("5")
    except OSError:
        return False
    hwm, rss = _status_kb("VmHWM", "VmRSS")
    return hwm is not None and rss is not None and hwm - rss <= 4096


def rss_peak_mb() -> float | None:
    """The RSS high-water mark (since the last reset) in MiB, Linux only."""
    (kb,) = _status_kb("VmHWM")
    return None if kb is None else kb / 1024


class _Sampler(threading.Thread):
    def __init__(self, interval: float = 0.01):
        import psutil

        super().__init__(daemon=True)
        self.proc, self.interval = psutil.Process(), interval
        self.peak = self.proc.memory_info().rss
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            self.peak = max(self.peak, self.proc.memory_info().rss)


def release_free_memory() -> None:
    """Collect garbage and hand the C heap's free pages back to the OS (glibc `malloc_trim`),
    so one stage's freed memory does not sit in the next stage's resident set."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass


def _cuda():
    torch = sys.modules.get("torch")  # never import torch only to ask
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda
    return None


@contextmanager
def peak_memory(sample_interval: float = 0.01):
    """`with peak_memory() as peak: ...`; afterwards `peak` holds `peak_rss_mb`,
    `rss_method` ("kernel-hwm" or "sampled-10ms") and, if CUDA was used, `gpu_peak_mb`
    (torch.cuda.max_memory_allocated)."""
    peak: dict = {}
    sampler = None
    release_free_memory()
    if not reset_rss_peak():
        sampler = _Sampler(sample_interval)
        sampler.start()
    cuda = _cuda()
    if cuda is not None:
        cuda.reset_peak_memory_stats()
    try:
        yield peak
    finally:
        if sampler is None:
            peak["peak_rss_mb"] = round(rss_peak_mb(), 1)
            peak["rss_method"] = "kernel-hwm"
        else:
            sampler.halt.set()
            sampler.join()
            peak["peak_rss_mb"] = round(max(sampler.peak, sampler.proc.memory_info().rss)
                                        / _MB, 1)
            peak["rss_method"] = f"sampled-{round(sample_interval * 1000)}ms"
        cuda = _cuda()  # a stage may have started using the GPU
        if cuda is not None:
            peak["gpu_peak_mb"] = round(cuda.max_memory_allocated() / _MB, 1)
