"""`coretune pool build` + `pool info`: deterministic, and the counts data/README.md states."""

import json
import re

import pytest
from conftest import DATA, ROOT

from coretune.data.pool import load_pool


def _readme_counts():
    rows = {}
    for line in (DATA / "README.md").read_text().splitlines():
        m = re.match(r"^\| `coretune pool build (.*)-o pool.parquet`.*?"
                     r"\| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|$", line)
        if m:
            rows[m.group(1).strip()] = [int(x) for x in m.groups()[1:]]
    assert len(rows) == 2
    return rows


@pytest.mark.parametrize("flags", ["", "--bigbench sample"])
def test_build_matches_readme_and_is_deterministic(cli, tmp_path, flags):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    cli("pool", "build", *flags.split(), "-o", a, check=True)
    cli("pool", "build", *flags.split(), "-o", b, check=True)
    assert a.read_bytes() == b.read_bytes()
    stats = json.loads(cli("pool", "info", a, "--json", check=True).stdout)
    got = [stats["rows"], stats["tasks"], stats["templates"], stats["task_rows"]["rte"]["rows"],
           stats["task_rows"]["cb"]["rows"], stats["share"]["nli"]["rows"]]
    assert got == _readme_counts()[flags]
    assert stats["task_rows"]["rte"]["templates"] == 10
    assert stats["task_rows"]["cb"]["templates"] == 15
    text = cli("pool", "info", a, check=True).stdout
    assert f"rows {stats['rows']:,}" in text and "nli" in text


def test_template_modes_and_user_dataset(cli, tmp_path):
    out = tmp_path / "p.parquet"
    cli("pool", "build", "--bigbench", "none", "--templates", "first:2", "-o", out, check=True)
    pool = load_pool(out)
    assert len(pool) == 2490 * 2 + 32 * 2
    cli("pool", "build", "--bigbench", "none", "--templates", "fixed:rte=can we infer", "-o", out,
        "--overwrite", check=True)
    pool = load_pool(out)
    per = {(t, tpl) for t, tpl in zip(pool.column("task"), pool.column("template"), strict=True)}
    assert ("rte", "can we infer") in per and len(per) == 2 and len(pool) == 2490 + 32
    mine = tmp_path / "mine.jsonl"
    mine.write_text('{"premise": "A dog runs.", "hypothesis": "An animal moves.", "label": 0}\n')
    cli("pool", "build", "--bigbench", "none", "--no-default-datasets", "--dataset",
        f"mine:{mine}:{DATA / 'templates/snli/templates.yaml'}:nli", "-o", out, "--overwrite",
        check=True)
    pool = load_pool(out)
    assert len(pool) == 15 and set(pool.column("family")) == {"nli"}
    assert pool.column("uid")[0].startswith("mine/") and pool.column("uid")[0].endswith("/line1")


def test_the_demo_prints_the_pool_its_configs_use(cli, tmp_path):
    """scripts/demo.sh builds and describes a pool before its runs: the very rows the demo
    configs' pool stage makes (configs/demo/_base.yaml)."""
    from coretune.config import load_config
    from coretune.run.stages import make_pool

    script = (ROOT / "scripts/demo.sh").read_text().replace("\\\n", " ")
    flags = re.search(r"coretune pool build (.*?) -o ", script).group(1).split()
    cli("pool", "build", *flags, "-o", tmp_path / "demo.parquet", check=True)
    printed = load_pool(tmp_path / "demo.parquet")
    used = make_pool(load_config(ROOT / "configs/demo/coreset.yaml").pool)
    assert len(printed) == len(used) == 5000
    assert printed.table.equals(used.table)
