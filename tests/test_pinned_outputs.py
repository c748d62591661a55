"""The selections (and table) that `configs/demo/*` produce on a small pool, pinned by sha256.

Recorded on the code before the issue-13 redesign: any refactor must keep these bytes. The one
deliberate change since: target.json gained the `rule` and `cut` fields of the target rule
(issue 11); the selections it leads to are the same bytes. The
demo configs are used as shipped; only what a 320-row pool needs is overridden (the pool
file, fewer clusters, a probe-density rule that a 50%-NLI pool can pass, a budget that gives
k-center something to do, tiny training and evaluation caps).
"""

from __future__ import annotations

import hashlib

import pytest
from conftest import ROOT, small_pool

from coretune.config import load_config
from coretune.pipeline import plan

DEMO = ("coreset", "random", "related")
SELECT_FILES = ("subset.parquet", "subset.jsonl", "subset.selection.parquet")

PINNED = {
    "coreset/target.json": "10ab3dfe91300e28850764138bcd8d667c770d4e24fca7ae2bfccc177cda22fc",
    "coreset/seed-0/subset.jsonl":
        "32038bee82857eb6d4aa9b01155fcf5a44a6f1bef41d25ffd324d9a00f635563",
    "coreset/seed-0/subset.parquet":
        "fab52b1fcfeaf238f072a943ad0f7211033ff8237796788fb12083219781caa6",
    "coreset/seed-0/subset.selection.parquet":
        "9f587839d4c1ab99324242ba39939f29f3caf01f2beb7a5c1f66ebb094b3a95f",
    "coreset/seed-1/subset.jsonl":
        "e5564f677dee0a4dee9770b299ecda23a43dee36992f9669e47df143f3c879cf",
    "coreset/seed-1/subset.parquet":
        "03b291b96d2fdd1886f1464c459415b7ccb823f7ea251be06c880cbe2c15e6bc",
    "coreset/seed-1/subset.selection.parquet":
        "16fbf6c5be0e84068fd06aa7b176436db22ccd2b9afef527eef074b94bd711c4",
    "random/target.json": "10ab3dfe91300e28850764138bcd8d667c770d4e24fca7ae2bfccc177cda22fc",
    "random/seed-0/subset.jsonl":
        "805b67178adb7e4d57632118e9ccf60c9a3ca8d3f4568ca1acf628dac8f02371",
    "random/seed-0/subset.parquet":
        "10835cde8886cf8004c6966d605ccb14a77a7d8559a8a2a273cfc0d5103f9131",
    "random/seed-0/subset.selection.parquet":
        "317bebfc8e67c60a9ad225d99a3c73eb6a92c39b273eae5c0d6937de6b799b22",
    "random/seed-1/subset.jsonl":
        "49c672160fc47675c291984ed1996fbf7a6b31b960f9c6919d048cc8786f59c8",
    "random/seed-1/subset.parquet":
        "f52ddd6a5b846fac7b726a00031ef5871f8089361a4ea581de3019a7231c3a77",
    "random/seed-1/subset.selection.parquet":
        "a17f70a6b7383e45795d8ae6b89792c1fd30e68b24e2696f12f35cdf0980b2fc",
    "related/target.json": "10ab3dfe91300e28850764138bcd8d667c770d4e24fca7ae2bfccc177cda22fc",
    "related/seed-0/subset.jsonl":
        "bbd8e318081847b378cba9e31d9ae77010d543fa7f11f32a8b7bc10da685e3bb",
    "related/seed-0/subset.parquet":
        "ad2665641b1f5d393341d9a8cdb52397d6dcccf6ac985d296d75af4ac9d5f2a6",
    "related/seed-0/subset.selection.parquet":
        "65cfea70e55f4b3297ad083bbed008959044d8f3ab3156b4f7f05f8786f856d2",
    "related/seed-1/subset.jsonl":
        "bbd8e318081847b378cba9e31d9ae77010d543fa7f11f32a8b7bc10da685e3bb",
    "related/seed-1/subset.parquet":
        "ad2665641b1f5d393341d9a8cdb52397d6dcccf6ac985d296d75af4ac9d5f2a6",
    "related/seed-1/subset.selection.parquet":
        "65cfea70e55f4b3297ad083bbed008959044d8f3ab3156b4f7f05f8786f856d2",
}
TABLE_CSV = "1fe1172a1cd0d3b715c159e6ab3926145b9f6fbeb7ccb1c75fad37b3c0996e31"


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def pool_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pinned") / "pool.parquet"
    small_pool().save(path)
    return path


def overrides(pool_file) -> list[str]:
    return [f"pool.path={pool_file}", "cluster.k=12", "target.threshold=1.5",
            "select.budget='16'", "seeds=[0, 1]",
            "train.max_steps=2", "train.batch_size=2", "train.max_length=64",
            "evaluate.tasks=[rte, cb]", "evaluate.max_examples=4", "evaluate.max_templates=1"]


def run_until_select(cfg, run_dir) -> None:
    for seed in cfg.seeds:
        for stage in plan(cfg, run_dir, seed, quiet=True):
            if stage.name in ("train", "evaluate"):
                break
            stage.run(lambda _: None)


def selection_hashes(pool_file, tmp_path) -> dict[str, str]:
    out = {}
    for name in DEMO:
        cfg = load_config(ROOT / f"configs/demo/{name}.yaml", overrides(pool_file))
        run_dir = tmp_path / cfg.name
        run_until_select(cfg, run_dir)
        out[f"{name}/target.json"] = _sha(run_dir / "shared/target/target.json")
        for seed in cfg.seeds:
            for f in SELECT_FILES:
                out[f"{name}/seed-{seed}/{f}"] = _sha(run_dir / f"seed-{seed}/select/{f}")
    return out


def test_demo_selections_are_byte_identical(pool_file, tmp_path):
    got = selection_hashes(pool_file, tmp_path)
    assert got == {k: v for k, v in PINNED.items() if k in got}, got
    assert len(got) == len(DEMO) * (1 + 2 * len(SELECT_FILES))


@pytest.mark.slow
def test_demo_table_is_byte_identical(pool_file, tmp_path):
    """vanilla + coreset run end to end (2 training steps, 4 examples x 1 template)."""
    from coretune.pipeline import run
    from coretune.summary import write_run_report

    for name in ("vanilla", "coreset"):
        cfg = load_config(ROOT / f"configs/demo/{name}.yaml",
                          [*overrides(pool_file), "seeds=[0]"])
        run(cfg, tmp_path / cfg.name, quiet=True, log=lambda _: None)
    write_run_report([tmp_path], tmp_path / "table")
    assert _sha(tmp_path / "table" / "table.csv") == TABLE_CSV, (
        (tmp_path / "table" / "table.csv").read_text())
