"""`coretune select` end to end on a small real pool, and its one-line errors."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest
from conftest import small_pool


@pytest.fixture(scope="module")
def pool_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pool") / "pool.parquet"
    small_pool().save(path)
    return path


@pytest.fixture
def cache(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "embed-cache"  # shared with the other modules


def _args(pool_file, out, cache, *extra):
    return ("select", "--pool", pool_file, "-o", out, "--k", 12, "--max-tokens", 128,
            "--probes", 100, "--cache-dir", cache, "--quiet", *extra)


def test_select_writes_subset_jsonl_and_selection(cli, pool_file, cache, tmp_path):
    out = tmp_path / "a" / "subset.parquet"
    proc = cli(*_args(pool_file, out, cache, "--budget", "5%", "--method", "kcenter"),
               check=True)
    assert "recall" in proc.stdout and "precision" in proc.stdout
    # the task step is on by default and says what it did
    assert re.search(r"by task: \d+ tasks kept whole, \d+ dropped, \d+ left as clustered; "
                     r"largest: \S+ \d+% of \d+ (kept|left|dropped)", proc.stdout), proc.stdout
    subset = pq.read_table(out)
    pool = pq.read_table(pool_file)
    assert subset.num_rows == 16  # 5% of 320
    assert subset.column_names == pool.column_names + ["order", "cluster", "radius"]
    assert subset.column("order").to_pylist() == list(range(16))
    assert len(set(subset.column("uid").to_pylist())) == 16
    sel = pq.read_table(tmp_path / "a" / "subset.selection.parquet")
    assert sel.column_names == ["uid", "order", "cluster", "radius"]
    assert sel.column("uid").to_pylist() == subset.column("uid").to_pylist()
    lines = (tmp_path / "a" / "subset.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["prompt"] for r in records] == subset.column("prompt").to_pylist()
    assert [r["target"] for r in records] == subset.column("target").to_pylist()
    assert set(records[0]) == {"prompt", "target"}
    # Same input + seed => byte-identical outputs (embeddings now come from the cache).
    again = tmp_path / "b" / "subset.parquet"
    cli(*_args(pool_file, again, cache, "--budget", "5%", "--method", "kcenter"), check=True)
    for name in ("subset.parquet", "subset.jsonl", "subset.selection.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_select_by_metadata_target(cli, pool_file, cache, tmp_path):
    out = tmp_path / "subset.parquet"
    proc = cli(*_args(pool_file, out, cache, "--target", "tasks:rte,cb", "--budget", "10",
                      "--method", "random", "--seed", "3", "--cluster-seed", "3", "--no-by-task"),
               check=True)
    assert "by task:" not in proc.stdout
    tasks = pq.read_table(out).column("task").to_pylist()
    assert len(tasks) == 10 and sum(t in ("rte", "cb") for t in tasks) >= 7


@pytest.mark.parametrize("change, message", [
    ({"--pool": "missing.parquet"}, "file not found"),
    ({"--method": "bogus"}, "unknown method"),
    ({"--target": "sentiment"}, "unknown target spec"),
    ({"--target": "tasks:sst2"}, "no pool rows of task"),
    ({"-o": "subset.csv"}, ".parquet"),
    ({"--k": "0"}, "--k"),
    ({"--encoder": "word2vec"}, "unknown encoder"),
    ({"--budget": "300"}, "budget"),  # more rows than the target clusters hold
])
def test_bad_input_exits_2_and_writes_nothing(cli, pool_file, cache, tmp_path, change, message):
    out_dir = tmp_path / "out"
    opts = {"--pool": str(pool_file), "-o": str(out_dir / "subset.parquet"), "--k": "12",
            "--max-tokens": "128", "--probes": "100", "--cache-dir": str(cache),
            "--budget": "10", "--method": "kcenter", "--target": "nli"}
    for key, value in change.items():
        opts[key] = str(out_dir / value) if key == "-o" else value
    args = [a for kv in opts.items() for a in kv]
    proc = cli("select", *args, "--quiet")
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("coretune: error:") and message in err[0], err
    assert "Traceback" not in proc.stderr
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_output_never_overwrites_the_pool(cli, pool_file, tmp_path):
    pool = tmp_path / "pool.parquet"
    pool.write_bytes(pool_file.read_bytes())
    proc = cli("select", "--pool", pool, "-o", pool, "--budget", "5")
    assert proc.returncode == 2 and "overwrite the pool" in proc.stderr
    assert pool.read_bytes() == pool_file.read_bytes()


def test_select_is_the_run_select_stage(cli, pool_file, cache, tmp_path, monkeypatch):
    """`coretune select` and `coretune run` (up to its select stage) read the same config and
    call the same stage functions: the same inputs give the same bytes."""
    from coretune.config import load_config
    from coretune.run.pipeline import plan

    out = tmp_path / "cli" / "subset.parquet"
    cli(*_args(pool_file, out, cache, "--budget", "16", "--method", "kcenter", "--seed", "1",
               "--threshold", "1.5"), check=True)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"name: same\npool: {{path: {pool_file}}}\ncluster: {{k: 12}}\n"
                        "target: {probes: 100, threshold: 1.5}\n"
                        "select: {method: kcenter, budget: '16'}\nseeds: [1]\n")
    cfg = load_config(cfg_file)
    monkeypatch.setenv("CORETUNE_CACHE", str(tmp_path / "cache"))  # the CLI's cache, reused
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "embeddings").symlink_to(cache, target_is_directory=True)
    for stage in plan(cfg, tmp_path / "run", 1, quiet=True):
        if stage.name == "train":
            break
        stage.run(lambda _: None)
    for name in ("subset.parquet", "subset.jsonl", "subset.selection.parquet"):
        ran = tmp_path / "run" / "seed-1" / "select" / name
        assert (tmp_path / "cli" / name).read_bytes() == ran.read_bytes(), name


def test_select_dedup_and_quality_report(cli, pool_file, cache, tmp_path):
    """A pool with every row twice under another uid: --dedup 1.0 drops exactly the copies,
    and the selection-quality report is printed and written."""
    import pyarrow as pa

    t = pq.read_table(pool_file)
    copy = t.set_column(0, "uid", pa.array([u + "-copy" for u in t.column("uid").to_pylist()]))
    doubled = tmp_path / "doubled.parquet"
    pq.write_table(pa.concat_tables([t, copy]), doubled)
    out = tmp_path / "d" / "subset.parquet"
    proc = cli(*_args(doubled, out, cache, "--budget", "16", "--dedup", "1.0"), check=True)

    # every copy goes, and a few originals that match another row in their first 128 tokens
    dropped, kept = map(int, re.search(r"(\d+) near-duplicate rows dropped, (\d+) kept",
                                       proc.stdout).groups())
    assert dropped + kept == 2 * t.num_rows and t.num_rows <= dropped < t.num_rows + 10
    assert "held-out target probes" in proc.stdout and "coverage radius" in proc.stdout
    uids = pq.read_table(out).column("uid").to_pylist()
    assert len(uids) == 16 and not any(u.endswith("-copy") for u in uids)
    q = json.loads((tmp_path / "d" / "subset.quality.json").read_text())
    assert q["rows"] == 16 and q["probe_coverage"]["n"] > 0
    assert q["coverage"]["radius"] == sorted(q["coverage"]["radius"], reverse=True)


@pytest.mark.parametrize("option,value", [("--dedup", "0"), ("--dedup", "1.5"),
                                          ("--dedup", "-0.2"), ("--votes", "0")])
def test_select_bad_dedup_threshold_or_votes(cli, pool_file, tmp_path, option, value):
    proc = cli("select", "--pool", pool_file, "-o", tmp_path / "s.parquet", option, value)
    assert proc.returncode == 2
    assert option[2:] in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s.parquet").exists()


def test_select_rds_over_the_target_and_the_whole_pool(cli, pool_file, cache, tmp_path):
    """rds from the CLI: the nli probes are its target examples, taken round-robin from the
    rows of the target clusters; then over every row of the pool (`select.scope: pool`, the
    paper's RDS+), through the same stage functions."""
    out = tmp_path / "rds" / "subset.parquet"
    cli(*_args(pool_file, out, cache, "--budget", "12", "--method", "rds"), check=True)
    subset = pq.read_table(out)
    assert subset.num_rows == 12
    tasks = subset.column("task").to_pylist()
    assert sum(t in ("rte", "cb") for t in tasks) >= 9  # the probes are RTE/CB/ANLI prompts

    from coretune.config import section_config
    from coretune.run import stages

    cfg = section_config(name="t", pool={"path": str(pool_file)}, cluster={"k": 12},
                         embed={"max_tokens": 128}, target={"probes": 100},
                         select={"method": "rds", "budget": "12", "scope": "pool"})
    assert cfg.needs_clusters
    b = cfg.backend
    data = stages.make_pool(cfg.pool)
    embedder = stages.make_embedder(cfg.embed, b, quiet=True, cache_dir=cache)
    x = embedder.embed(data.prompts)
    clusters = stages.fit_clusters(cfg.cluster, b, x)
    finder = stages.make_target_finder(cfg.target, cfg.cluster)
    whole = stages.select_subset(cfg.select, b, data, 0, x, clusters, None, embedder=embedder,
                                 finder=finder)
    inside = stages.select_subset(
        cfg.select.model_copy(update={"scope": "target"}), b, data, 0, x, clusters,
        embedder=embedder, finder=finder,
        mask=stages.find_targets(finder, b, clusters, data, embedder, x).mask_)
    assert len(whole) == 12 and len(set(whole.indices.tolist())) == 12
    # From the whole pool the probes' nearest rows are at least as near as inside the targets.
    q = finder.probe_vectors(clusters, embedder)[0]
    assert (x[whole.indices] @ q.T).max(1).mean() >= (x[inside.indices] @ q.T).max(1).mean() - 1e-6
