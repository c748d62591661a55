"""Real pools in: P3-shaped Parquet shards, a `datasets` save_to_disk folder, globs, column
mappings and generated uids."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coretune.data.pool import load_pool, merge_type
from coretune.data.shards import parse_columns
from coretune.data.sources import render_dataset, train_datasets
from coretune.data.stream import convert_pool, scan_pool
from coretune.errors import CoretuneError

P3_COLUMNS = ("task=task_name,prompt=inputs_pretokenized,target=targets_pretokenized,"
              "choices=answer_choices")


def p3_rows() -> pa.Table:
    """Real RTE rows through two real promptsource templates, in P3's column layout."""
    rte = train_datasets()["rte"]
    templates = rte.load_templates().choose("first", 2)
    t = render_dataset(rte, templates)
    n = t.num_rows
    return pa.table({
        "inputs": pa.array([[1, 2, 3]] * n, pa.list_(pa.int32())),  # P3 ships token ids too
        "inputs_pretokenized": pa.array([p + "\n" for p in t.column("prompt").to_pylist()]),
        "targets": pa.array([[4]] * n, pa.list_(pa.int32())),
        "targets_pretokenized": pa.array([" " + x for x in t.column("target").to_pylist()]),
        "answer_choices": t.column("choices"),
        "task_name": pa.array([f"super_glue_rte_{x}" for x in t.column("template").to_pylist()]),
    })


def write_p3_shards(folder, table: pa.Table, n_shards: int = 4) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    size = -(-table.num_rows // n_shards)
    paths = []
    for i in range(n_shards):
        p = folder / f"train-{i:05d}-of-{n_shards:05d}.parquet"
        pq.write_table(table.slice(i * size, size), p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def p3():
    return p3_rows()


def test_p3_shards_folder_and_glob(tmp_path, p3):
    write_p3_shards(tmp_path / "p3", p3)
    pool = load_pool(tmp_path / "p3", P3_COLUMNS)
    assert len(pool) == p3.num_rows
    assert pool.table.column_names[:6] == ["uid", "task", "template", "prompt", "target",
                                           "choices"]
    assert pool.column("prompt") == p3.column("inputs_pretokenized").to_pylist()
    assert pool.column("choices") == p3.column("answer_choices").to_pylist()
    assert "inputs" in pool.table.column_names  # unmapped columns stay as metadata
    assert set(pool.column("template")) == {"default"}
    assert len(set(pool.uids)) == len(pool) and all(u.startswith("h") for u in pool.uids)
    by_glob = load_pool(str(tmp_path / "p3" / "train-*.parquet"), P3_COLUMNS)
    assert by_glob.table.equals(pool.table)


def test_generated_uids_are_stable_across_runs_names_and_shard_order(tmp_path, p3):
    write_p3_shards(tmp_path / "a", p3, 4)
    # Same rows, shards in the opposite order and cut differently.
    flipped = pa.concat_tables([p3.slice(p3.num_rows // 2), p3.slice(0, p3.num_rows // 2)])
    write_p3_shards(tmp_path / "b", flipped, 3)
    a = load_pool(tmp_path / "a", P3_COLUMNS)
    again = load_pool(tmp_path / "a", P3_COLUMNS)
    b = load_pool(tmp_path / "b", P3_COLUMNS)
    assert a.uids == again.uids
    assert dict(zip(a.uids, a.prompts, strict=True)) == dict(zip(b.uids, b.prompts,
                                                                 strict=True))


def test_duplicate_content_gets_numbered_uids(tmp_path):
    rows = [{"task": "t", "prompt": "same?", "target": "yes"}] * 3
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    uids = load_pool(tmp_path / "p.jsonl").uids
    assert uids[1:] == [uids[0] + "-2", uids[0] + "-3"]


def test_datasets_save_to_disk_folder(tmp_path, p3):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict(p3.to_pydict())
    ds.save_to_disk(str(tmp_path / "hf"), num_shards=3)
    pool = load_pool(tmp_path / "hf", P3_COLUMNS)
    ref = load_pool(write_p3_shards(tmp_path / "pq", p3)[0].parent, P3_COLUMNS)
    assert pool.table.select(range(6)).equals(ref.table.select(range(6)))
    assert scan_pool(tmp_path / "hf", P3_COLUMNS)["sha256"] == scan_pool(
        tmp_path / "pq", P3_COLUMNS)["sha256"]
    dd = datasets.DatasetDict({"train": ds})
    dd.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(CoretuneError, match="DatasetDict folder: give one split"):
        load_pool(tmp_path / "dd", P3_COLUMNS)
    assert len(load_pool(tmp_path / "dd" / "train", P3_COLUMNS)) == p3.num_rows


def test_hf_id_form_through_datasets_load_dataset(tmp_path, p3, monkeypatch):
    """`hf:ID` goes through datasets.load_dataset; offline, a local data folder stands in
    for a hub id (same code path, minus the download)."""
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    write_p3_shards(tmp_path / "repo" / "data", p3)
    pool = load_pool(f"hf:{tmp_path / 'repo'}", P3_COLUMNS)
    assert pool.column("prompt") == p3.column("inputs_pretokenized").to_pylist()
    with pytest.raises(CoretuneError, match="cannot load dataset"):
        load_pool("hf:no-such-org/no-such-dataset-xyz", P3_COLUMNS)


def test_scan_hash_ignores_file_format_and_sharding(tmp_path, p3):
    write_p3_shards(tmp_path / "four", p3, 4)
    write_p3_shards(tmp_path / "one", p3, 1)
    four, one = scan_pool(tmp_path / "four", P3_COLUMNS), scan_pool(tmp_path / "one",
                                                                    P3_COLUMNS)
    assert (four["rows"], four["shards"], one["shards"]) == (p3.num_rows, 4, 1)
    assert four["sha256"] == one["sha256"]
    targets = p3.column("targets_pretokenized").to_pylist()
    other = next(o for o in p3.column("answer_choices")[0].as_py() if o != targets[0].strip())
    changed = p3.set_column(3, "targets_pretokenized", pa.array([" " + other] + targets[1:]))
    write_p3_shards(tmp_path / "changed", changed, 4)
    assert scan_pool(tmp_path / "changed", P3_COLUMNS)["sha256"] != four["sha256"]


def test_convert_is_atomic_and_equals_load(tmp_path, p3):
    write_p3_shards(tmp_path / "p3", p3)
    done = convert_pool(tmp_path / "p3", tmp_path / "pool.parquet", P3_COLUMNS)
    assert done["rows"] == p3.num_rows and done["shards"] == 4
    assert load_pool(tmp_path / "pool.parquet").table.equals(
        load_pool(tmp_path / "p3", P3_COLUMNS).table)
    bad = tmp_path / "p3" / "train-00003-of-00004.parquet"
    t = pq.read_table(bad)
    pq.write_table(t.set_column(1, "inputs_pretokenized", pa.array([""] * t.num_rows)), bad)
    with pytest.raises(CoretuneError, match=r"train-00003-of-00004.parquet: row 1: field "
                       r"'prompt': empty"):
        convert_pool(tmp_path / "p3", tmp_path / "new.parquet", P3_COLUMNS)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["p3", "pool.parquet"]


def test_shards_may_differ_where_no_value_changes(tmp_path):
    """A metadata column missing from a shard (nulls there, even when the first shard lacks
    it), a column all null in one shard, integers of different widths, string and
    large_string: every reader gives the same pool, and build --from keeps every column."""
    folder = tmp_path / "s"
    folder.mkdir()
    base = {"task": ["t"] * 2, "prompt": ["p", "q"], "target": ["x"] * 2}
    pq.write_table(pa.table({"uid": ["a", "b"], **base, "n": pa.array([1, 2], pa.int32()),
                             "e": pa.nulls(2)}), folder / "1.parquet")
    pq.write_table(pa.table({"uid": pa.array(["c", "d"], pa.large_string()), **base,
                             "note": ["hi", None], "e": [[1], []]}), folder / "2.parquet")
    pq.write_table(pa.table({"uid": ["e", "f"], **base, "n": [2**40, 3]}), folder / "3.parquet")
    pool = load_pool(folder)
    assert pool.table.schema.field("n").type == pa.int64()
    assert pool.column("n") == [1, 2, None, None, 2**40, 3]
    assert pool.column("note") == [None, None, "hi", None, None, None]
    assert pool.column("e") == [None, None, [1], [], None, None]
    assert convert_pool(folder, tmp_path / "pool.parquet")["rows"] == 6
    assert load_pool(tmp_path / "pool.parquet").table.equals(pool.table)
    assert scan_pool(folder)["rows"] == 6
    assert sorted(x.name for x in tmp_path.iterdir()) == ["pool.parquet", "s"]  # no temp files


@pytest.mark.parametrize("a, b, merged", [
    (pa.int32(), pa.int64(), pa.int64()), (pa.float32(), pa.float64(), pa.float64()),
    (pa.null(), pa.string(), pa.string()), (pa.string(), pa.large_string(), pa.large_string()),
    (pa.list_(pa.null()), pa.list_(pa.string()), pa.list_(pa.string())),
    (pa.struct([("a", pa.int8())]), pa.struct([("a", pa.int64()), ("b", pa.string())]),
     pa.struct([("a", pa.int64()), ("b", pa.string())])),
    (pa.int64(), pa.float64(), None), (pa.uint64(), pa.int64(), None),
    (pa.string(), pa.int64(), None), (pa.bool_(), pa.int8(), None),
    (pa.list_(pa.int64()), pa.list_(pa.string()), None),
    (pa.struct([("a", pa.int64())]), pa.struct([("a", pa.string())]), None)])
def test_merge_type_only_where_no_value_changes(a, b, merged):
    assert merge_type(a, b) == merged and merge_type(b, a) == merged


def test_parse_columns():
    assert parse_columns("uid=id, prompt=inputs") == {"uid": "id", "prompt": "inputs"}
    assert parse_columns({"prompt": "inputs"}) == {"prompt": "inputs"}
    assert parse_columns(None) == parse_columns("") == {}
    for bad, msg in [("prompt", "not FIELD=COLUMN"), ("question=x", "unknown pool field"),
                     ("prompt=a,prompt=b", "mapped twice"), ("prompt=a,target=a", "twice"),
                     ("prompt=", "not FIELD=COLUMN")]:
        with pytest.raises(CoretuneError, match=msg):
            parse_columns(bad)


def test_cli_build_from_p3_then_select(cli, tmp_path, p3):
    """A P3-shaped shard set used as is: converted with a column mapping, then selected from
    (the folder also works directly as `select --pool` when its columns are coretune's)."""
    half = p3.num_rows // 2  # 120 rows of each template: a CPU-sized embedding
    p3 = pa.concat_tables([p3.slice(0, 120), p3.slice(half, 120)])
    write_p3_shards(tmp_path / "p3", p3)
    proc = cli("pool", "build", "--from", tmp_path / "p3", "--columns", P3_COLUMNS,
               "-o", tmp_path / "pool.parquet", check=True)
    assert f"{p3.num_rows} rows from 4 shard(s)" in proc.stdout
    info = json.loads(cli("pool", "info", tmp_path / "p3", "--columns", P3_COLUMNS, "--json",
                          check=True).stdout)
    assert info["rows"] == p3.num_rows
    # the shard folder used as is by select: mapped columns, TRL prompt-completion out
    cli("select", "--pool", tmp_path / "p3", "--columns", P3_COLUMNS, "-o", tmp_path / "d.parquet",
        "--format", "prompt-completion", "--target", "tasks:super_glue_rte_MNLI crowdsource",
        "--budget", "10", "--k", "4", "--max-tokens", "64", "--quiet", check=True)
    from datasets import load_dataset

    rows = load_dataset("json", data_files=str(tmp_path / "d.jsonl"), split="train")
    assert rows.num_rows == 10 and set(rows.column_names) == {"prompt", "completion"}
    assert all(c.startswith(" ") for c in rows["completion"])
    shutil.rmtree(tmp_path / "p3")
    cli("select", "--pool", tmp_path / "pool.parquet", "-o", tmp_path / "s.parquet",
        "--target", "tasks:super_glue_rte_MNLI crowdsource", "--budget", "10",
        "--k", "4", "--max-tokens", "64", "--quiet", check=True)
    sub = pq.read_table(tmp_path / "s.parquet")
    assert sub.num_rows == 10
