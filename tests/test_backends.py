"""Backends: the local one is today's code; the ray one gives byte-identical artifacts."""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest
from conftest import small_pool

from coretune import backends
from coretune.config import RunConfig, load_config
from coretune.errors import CoretuneError
from coretune.select import select_rows

# Fits a 2-core CI machine: two actors of one thread, a small object store.
RAY = {"num_cpus": 2, "object_store_memory": 200 * 2**20}


def test_unknown_backend_and_missing_ray(monkeypatch):
    with pytest.raises(CoretuneError, match="unknown backend 'spark'"):
        backends.get_backend("spark")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(CoretuneError, match=r"pip install 'coretune\[ray\]'"):
        backends.get_backend("ray", "auto", actors=99)


def test_local_backend_is_select_rows():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = rng.integers(0, 5, 200)
    a = backends.get_backend("local").select(x, labels, [1, 3], 20, "kcenter", 7)
    b = select_rows(x, labels, [1, 3], 20, "kcenter", 7)
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.radius, b.radius)


def test_backend_config(tmp_path):
    assert RunConfig(name="x").backend.name == "local"
    path = tmp_path / "c.yaml"
    path.write_text("name: c\nbackend: {name: ray, address: auto, actors: 4}\n")
    cfg = load_config(path, ["backend.actor_cpus=2"])
    assert (cfg.backend.name, cfg.backend.address, cfg.backend.actors,
            cfg.backend.actor_cpus) == ("ray", "auto", 4, 2)
    with pytest.raises(CoretuneError, match="field 'backend.name'"):
        load_config(path, ["backend.name=spark"])


def test_cli_select_rejects_an_unknown_backend(cli, tmp_path):
    proc = cli("select", "--pool", tmp_path / "p.parquet", "-o", tmp_path / "s.parquet",
               "--backend", "spark")
    assert proc.returncode == 2 and "unknown backend 'spark'" in proc.stderr


def test_cli_run_backend_flag_is_validated(cli, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: c\n")
    proc = cli("run", cfg, "--backend", "spark", "--runs-dir", tmp_path / "runs")
    assert proc.returncode == 2 and "field 'backend.name'" in proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def ray_backend():
    pytest.importorskip("ray")
    from coretune.backends.ray import shutdown

    yield backends.get_backend("ray", **RAY)
    backends.close_all()
    backends.base._open.clear()
    shutdown()


def _run_until_select(cfg, run_dir):
    from coretune.run.pipeline import plan

    for seed in cfg.seeds:
        for stage in plan(cfg, run_dir, seed, quiet=True):
            if stage.name in ("train", "evaluate"):
                break
            stage.run(lambda _: None)
    backends.close_all()


@pytest.mark.slow
def test_ray_backend_gives_byte_identical_artifacts(ray_backend, tmp_path, monkeypatch):
    """A real local Ray cluster: pool -> embed -> cluster -> target (probes embedded on the
    actors again after labelling released them) -> select, for two seeds, on both backends."""
    pool = small_pool()
    pool.save(tmp_path / "pool.parquet")
    nli = [p for p, f in zip(pool.prompts, pool.column("family"), strict=True) if f == "nli"]
    (tmp_path / "probes.jsonl").write_text(
        "".join(json.dumps({"prompt": p}) + "\n" for p in nli[::4]))
    config = {"name": "eq", "seeds": [0, 1], "pool": {"path": str(tmp_path / "pool.parquet")},
              "embed": {"max_tokens": 64, "batch_size": 16}, "cluster": {"k": 6},
              "target": {"spec": f"probe:{tmp_path / 'probes.jsonl'}", "top": 2},
              "select": {"method": "kcenter", "budget": "24"}}
    seconds = {}
    for name in ("local", "ray"):
        monkeypatch.setenv("CORETUNE_CACHE", str(tmp_path / f"cache-{name}"))  # encode anew
        cfg = RunConfig.model_validate({**config, "backend": {"name": name, **RAY}})
        start = time.perf_counter()
        _run_until_select(cfg, tmp_path / name)
        seconds[name] = time.perf_counter() - start
    print(f"local {seconds['local']:.1f}s, ray {seconds['ray']:.1f}s")

    local, remote = tmp_path / "local", tmp_path / "ray"
    x = np.load(local / "shared/embed/embeddings.npy")
    assert np.array_equal(x, np.load(remote / "shared/embed/embeddings.npy"))
    files = ["shared/embed/embeddings.npy", "shared/cluster/clusters.parquet",
             "shared/cluster/centroids.npy", "shared/target/clusters.parquet",
             "shared/target/target.json"]
    for seed in (0, 1):
        files += [f"seed-{seed}/select/subset{ext}"
                  for ext in (".parquet", ".jsonl", ".selection.parquet")]
    for f in files:
        assert (local / f).read_bytes() == (remote / f).read_bytes(), f
    assert len((local / "seed-0/select/subset.jsonl").read_text().splitlines()) == 24
    # the embedding cache: the same shards (content-named by their prompts), same vectors
    shards = {n: sorted(p.name for p in (tmp_path / f"cache-{n}").rglob("*.npy"))
              for n in ("local", "ray")}
    assert shards["local"] == shards["ray"] and shards["local"]

    # Labelling over many blocks and every selection method, on the same cluster.
    km = backends.get_backend("local").fit_clusters(x, 6, seed=3, chunk_size=50)
    km_ray = ray_backend.fit_clusters(x, 6, seed=3, chunk_size=50)
    assert np.array_equal(km.labels_, km_ray.labels_)
    assert np.array_equal(km.distances_, km_ray.distances_)
    for method in ("kcenter", "random", "topk", "leastk", "mixed", "all"):
        a = select_rows(x, km.labels_, [0, 2, 5], 30, method, 1, km.centroids_)
        b = ray_backend.select(x, km.labels_, [0, 2, 5], 30, method, 1, km.centroids_,
                               quiet=True)
        for field in ("indices", "cluster", "radius"):
            assert np.array_equal(getattr(a, field), getattr(b, field), equal_nan=True), method

