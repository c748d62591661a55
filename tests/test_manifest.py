"""Stage manifests: skip when nothing changed, resume partial work, start clean on change."""

import pytest

from coretune.run.manifest import MANIFEST, Stage


def _stage(tmp_path, calls, config, fail=False):
    def fn(folder):
        calls.append(config)
        (folder / "partial").touch()
        if fail:
            raise RuntimeError("killed")
        (folder / "out.txt").write_text(str(config))
        return {"rows": 1}

    return Stage("demo", tmp_path / "demo", {"x": config}, fn)


def test_skip_resume_and_restart(tmp_path):
    calls = []
    try:
        _stage(tmp_path, calls, 1, fail=True).run(log=lambda _: None)
    except RuntimeError:
        pass
    assert not (tmp_path / "demo" / MANIFEST).exists()  # no completion marker after a crash
    # same config: partial work is kept for the stage to resume from
    m = _stage(tmp_path, calls, 1).run(log=lambda _: None)
    assert (tmp_path / "demo" / "partial").exists() and m["rows"] == 1
    assert set(m["outputs"]) == {"out.txt", "partial"} and m["key"]
    _stage(tmp_path, calls, 1).run(log=lambda _: None)
    assert calls == [1, 1]  # third run skipped
    # another config: the old folder is cleared first
    (tmp_path / "demo" / "stale").touch()
    _stage(tmp_path, calls, 2).run(log=lambda _: None)
    assert calls == [1, 1, 2] and not (tmp_path / "demo" / "stale").exists()


@pytest.mark.parametrize("kernel_reset", [True, False])
def test_each_stage_records_its_own_peak_memory(tmp_path, monkeypatch, kernel_reset):
    import numpy as np

    from coretune.run import memory

    if not kernel_reset:  # as on a kernel without clear_refs: the sampling thread measures
        monkeypatch.setattr(memory, "_CLEAR", tmp_path / "missing" / "clear_refs")

    def big(folder):
        a = np.ones(300 << 17)  # 300 MiB, touched
        a.sum()
        del a

    def small(folder):
        pass

    m_big = Stage("big", tmp_path / "big", {}, big).run(log=lambda _: None)
    m_small = Stage("small", tmp_path / "small", {}, small).run(log=lambda _: None)
    # The second stage starts from a reset high-water mark: the first one's 300 MiB is not its.
    assert m_big["peak_rss_mb"] > m_small["peak_rss_mb"] + 250
    assert m_big["rss_method"] in (("kernel-hwm", "sampled-10ms") if kernel_reset
                                   else ("sampled-10ms",))


def test_stage_table_shows_seconds_and_peak_memory():
    from coretune.report.table import stage_table

    facts = [{"run": "runs/demo", "seeds": [0, 1], "selected": 25, "pool_rows": 5000,
              "seconds": {"embed": 150.2, "train": 60.0}, "peak_rss_gb": {"train": 3.12}}]
    text = stage_table(facts)
    assert "| `demo` | 2 | 25 (of 5,000) | 210: embed 150, train 60 | train 3.1 |" in text


def test_freed_heap_memory_is_not_the_next_stages(tmp_path):
    """Many small freed allocations stay in the C heap (resident) until trimmed: the next
    stage starts after `malloc_trim`, so its peak is its own."""
    import numpy as np
    import psutil

    from coretune.run.memory import release_free_memory

    def scattered(folder):
        parts = [np.ones(1000) for _ in range(50_000)]  # 400 MB in 8 kB heap blocks
        del parts

    scattered(None)  # here and now, does the trim return freed heap pages that were resident?
    before = psutil.Process().memory_info().rss
    release_free_memory()
    if before - psutil.Process().memory_info().rss < 250 << 20:
        pytest.skip("freed heap pages were not held resident until trimmed here (the allocator "
                    "returned them itself, or the platform keeps them): nothing to show")

    m_a = Stage("a", tmp_path / "a", {}, scattered).run(log=lambda _: None)
    m_b = Stage("b", tmp_path / "b", {}, lambda folder: None).run(log=lambda _: None)
    assert m_a["peak_rss_mb"] > m_b["peak_rss_mb"] + 250
