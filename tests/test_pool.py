"""Pool loading and validation: every bad input names file, line/row and field, CLI exits 2."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import DATA

from coretune.data.pool import Pool, load_pool
from coretune.errors import CoretuneError

GOOD = [
    {"uid": "a", "task": "t1", "template": "x", "prompt": "Is it? yes or no", "target": "yes",
     "choices": ["yes", "no"], "note": 1},
    {"uid": "b", "task": "t2", "template": "x", "prompt": "2+2=", "target": "4", "choices": [],
     "note": 2},
]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_roundtrip_all_formats(tmp_path):
    pool = load_pool(_jsonl(tmp_path / "p.jsonl", GOOD))
    assert len(pool) == 2 and pool.table.column_names[:6] == [
        "uid", "task", "template", "prompt", "target", "choices"]
    assert pool.column("note") == [1, 2]  # metadata kept
    pool.save(tmp_path / "p.parquet")
    again = load_pool(tmp_path / "p.parquet")
    assert again.table.equals(pool.table)
    csv = tmp_path / "p.csv"
    csv.write_text('uid,task,prompt,target,choices\n007,t,"Q, with comma",yes,"[""yes"", ""no""]"\n'
                   "8,t,Q2,4,\n")
    p = load_pool(csv)
    assert p.uids == ["007", "8"]  # CSV columns stay text
    assert p.column("choices") == [["yes", "no"], []]
    assert p.column("template") == ["default", "default"]


def test_byte_order_marks_are_not_data(tmp_path, cli):
    """A UTF-8 byte-order mark (Excel's "CSV UTF-8" writes one) is dropped: uids keep their
    text, and the pool equals the one from the same file without it. In JSONL a mark may also
    start a later line (files joined with `cat`); evaluation files are read the same way."""
    bom = b"\xef\xbb\xbf"
    text = "uid,task,prompt,target\n000,t,q,yes\n007,t,r,no\n"
    (tmp_path / "bom.csv").write_bytes(bom + text.encode())
    (tmp_path / "plain.csv").write_text(text)
    assert load_pool(tmp_path / "bom.csv").uids == ["000", "007"]
    assert load_pool(tmp_path / "bom.csv").table.equals(load_pool(tmp_path / "plain.csv").table)
    lines = [json.dumps(r).encode() + b"\n" for r in GOOD]
    (tmp_path / "bom.jsonl").write_bytes(bom + lines[0] + bom + lines[1])
    (tmp_path / "plain.jsonl").write_bytes(b"".join(lines))
    assert load_pool(tmp_path / "bom.jsonl").table.equals(
        load_pool(tmp_path / "plain.jsonl").table)
    for name in ("bom.csv", "bom.jsonl"):
        r = cli("pool", "info", "--json", tmp_path / name)
        assert r.returncode == 0 and json.loads(r.stdout)["rows"] == 2, r.stderr
    from coretune.data.sources import read_dataset

    nli = {"premise": "A cat sat.", "hypothesis": "A cat exists.", "label": "yes"}
    (tmp_path / "eval.jsonl").write_bytes(bom + json.dumps(nli).encode() + b"\n")
    assert read_dataset(tmp_path / "eval.jsonl", ("yes", "no"))[0]["label"] == 0


def test_save_is_deterministic(tmp_path):
    pool = Pool.from_records(GOOD)
    pool.save(tmp_path / "a.parquet")
    pool.save(tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


BAD_JSONL = [
    ('{"uid": "a", "task": "t", "prompt": "p", "target": "x"}\n{"uid": "b", oops}\n',
     r"p.jsonl:2: malformed JSON"),
    ('{"uid": "a", "task": "t", "prompt": "p"}\n', r"p.jsonl: field 'target': missing column"),
    ('{"uid": "a", "task": "t", "prompt": "p", "target": "x"}\n'
     '{"uid": "b", "task": "t", "prompt": "  ", "target": "x"}\n',
     r"p.jsonl:2: field 'prompt': empty"),
    ('{"uid": "a", "task": "t", "prompt": "p", "target": "x"}\n\n'
     '{"uid": "b", "task": "t", "prompt": "p", "target": ""}\n',
     r"p.jsonl:3: field 'target': empty"),
    ('{"uid": "a", "task": "t", "prompt": "p", "target": "x"}\n'
     '{"uid": "a", "task": "t", "prompt": "q", "target": "y"}\n',
     r"p.jsonl:2: field 'uid': duplicate uid 'a'"),
    ('{"uid": "a", "task": "t", "prompt": "p", "target": "x"}\n'
     '{"uid": "b", "task": "t", "target": "y"}\n',
     r"p.jsonl:2: field 'prompt': missing"),
    ('{"uid": "a", "task": "t", "prompt": "p", "target": "x", "choices": ["y", "z"]}\n',
     r"p.jsonl:1: field 'target': target 'x' is not one of the choices"),
    ("", r"p.jsonl: empty file"),
    ("\n\n", r"p.jsonl: empty file"),
]


@pytest.mark.parametrize("text,message", BAD_JSONL)
def test_bad_jsonl(tmp_path, text, message):
    (tmp_path / "p.jsonl").write_text(text)
    with pytest.raises(CoretuneError, match=message):
        load_pool(tmp_path / "p.jsonl")


def test_bad_parquet_and_csv_rows(tmp_path):
    t = pa.table({"uid": ["a", "b", "a"], "task": ["t"] * 3, "prompt": ["p"] * 3,
                  "target": ["x"] * 3})
    pq.write_table(t, tmp_path / "d.parquet")
    with pytest.raises(CoretuneError, match=r"d.parquet: row 3: field 'uid': duplicate uid 'a'"):
        load_pool(tmp_path / "d.parquet")
    (tmp_path / "c.csv").write_text("uid,task,prompt,target\na,t,p,x\nb,t,,x\n")
    with pytest.raises(CoretuneError, match=r"c.csv: row 2: field 'prompt': empty"):
        load_pool(tmp_path / "c.csv")
    (tmp_path / "n.parquet").write_text("not parquet")
    with pytest.raises(CoretuneError, match=r"n.parquet: not a readable Parquet file"):
        load_pool(tmp_path / "n.parquet")


def test_unknown_format_and_missing_file(tmp_path):
    (tmp_path / "p.txt").write_text("x")
    with pytest.raises(CoretuneError, match=r"p.txt: unknown pool format '.txt'"):
        load_pool(tmp_path / "p.txt")
    with pytest.raises(CoretuneError, match="file not found"):
        load_pool(tmp_path / "nope.parquet")


@pytest.mark.parametrize("text,name,message", [
    ('{"uid": "a", bad\n', "p.jsonl", "p.jsonl:1: malformed JSON"),
    ('{"uid": "a", "task": "t", "prompt": "p"}\n', "p.jsonl", "field 'target': missing column"),
    ('{"uid": "a", "task": "t", "prompt": "", "target": "x"}\n', "p.jsonl",
     "p.jsonl:1: field 'prompt': empty"),
    ('{"uid": "a", "task": "t", "prompt": "p", "target": "x"}\n' * 2, "p.jsonl",
     "p.jsonl:2: field 'uid': duplicate uid"),
    ("", "p.jsonl", "p.jsonl: empty file"),
    ("x", "p.tsv", "unknown pool format"),
])
def test_cli_bad_input_exits_2_and_writes_nothing(cli, tmp_path, text, name, message):
    src = tmp_path / name
    src.write_text(text)
    proc = cli("pool", "info", src)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err
    out = tmp_path / "out.parquet"
    rte_templates = DATA / "templates/super_glue/rte/templates.yaml"
    proc = cli("pool", "build", "--bigbench", "sample", "--dataset", f"mine:{src}:{rte_templates}",
               "-o", out)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()
    assert list(tmp_path.glob(".out.parquet*")) == []
