"""The selections (and table) that `configs/demo/*` produce on a small pool, pinned by sha256.

What is pinned is what coretune decides, not the bytes a library version writes: JSON, JSONL
and CSV files by their bytes (coretune writes them), Parquet files by their content (column
names and types, then every row in order, floats rounded to 1e-4: the radii are float32
distances whose last bits move with the torch/numpy build). Parquet bytes also record the
writer's version, so they are not pinned. The demo configs are used as shipped; only what a
320-row pool needs is overridden (the pool file, fewer clusters, a probe-density rule that a
50%-NLI pool can pass, a budget that gives k-center something to do, tiny training and
evaluation caps).
"""

from __future__ import annotations

import hashlib
import json
import math

import pyarrow.parquet as pq
import pytest
from conftest import ROOT, small_pool

from coretune.config import load_config
from coretune.run.pipeline import plan

DEMO = ("coreset", "random", "related")
SELECT_FILES = ("subset.parquet", "subset.jsonl", "subset.selection.parquet")

PINNED = {
    "coreset/target.json": "10ab3dfe91300e28850764138bcd8d667c770d4e24fca7ae2bfccc177cda22fc",
    "coreset/seed-0/subset.jsonl":
        "32038bee82857eb6d4aa9b01155fcf5a44a6f1bef41d25ffd324d9a00f635563",
    "coreset/seed-0/subset.parquet":
        "eed3abe409bdd919715a59b745cca5e16b0f1af23fd4da931ce9553be12d336b",
    "coreset/seed-0/subset.selection.parquet":
        "064e6401e8851951d41371bfdc1a099cba241f0016c544ce09e871810789f8e9",
    "coreset/seed-1/subset.jsonl":
        "e5564f677dee0a4dee9770b299ecda23a43dee36992f9669e47df143f3c879cf",
    "coreset/seed-1/subset.parquet":
        "9cd112442bb7239baef858cb42491c323737e683c5e63d93121b977208960c50",
    "coreset/seed-1/subset.selection.parquet":
        "ca54af4d6bd35210bcaad80a0de91d62f5b1f72cb8128036e1585d605b82c669",
    "random/target.json": "10ab3dfe91300e28850764138bcd8d667c770d4e24fca7ae2bfccc177cda22fc",
    "random/seed-0/subset.jsonl":
        "805b67178adb7e4d57632118e9ccf60c9a3ca8d3f4568ca1acf628dac8f02371",
    "random/seed-0/subset.parquet":
        "4516d27b82fa0fc1076e6f9ca97fea1d6d61c7a74f0107ec0c6ce88b056dc037",
    "random/seed-0/subset.selection.parquet":
        "f8fbf6c4d68af9130f056b3873cfb2f6c767434df30f862da9fdfa648e6a07ef",
    "random/seed-1/subset.jsonl":
        "49c672160fc47675c291984ed1996fbf7a6b31b960f9c6919d048cc8786f59c8",
    "random/seed-1/subset.parquet":
        "503c904366d85db84ea5fc1e59c44b24efa265938ace5479bf17cae807d78363",
    "random/seed-1/subset.selection.parquet":
        "3930005d3cd278574e5c6e3d99d14f44c84aa9a3d294b37760b82d9af8096b19",
    "related/target.json": "10ab3dfe91300e28850764138bcd8d667c770d4e24fca7ae2bfccc177cda22fc",
    "related/seed-0/subset.jsonl":
        "bbd8e318081847b378cba9e31d9ae77010d543fa7f11f32a8b7bc10da685e3bb",
    "related/seed-0/subset.parquet":
        "eb7c1ad580be02580cf9cee33c6112cca235db58ed111671065427cb66270af3",
    "related/seed-0/subset.selection.parquet":
        "a18ef495e0390f44d7404484b4cc2477efe71410357573b200efa67983859b79",
    "related/seed-1/subset.jsonl":
        "bbd8e318081847b378cba9e31d9ae77010d543fa7f11f32a8b7bc10da685e3bb",
    "related/seed-1/subset.parquet":
        "eb7c1ad580be02580cf9cee33c6112cca235db58ed111671065427cb66270af3",
    "related/seed-1/subset.selection.parquet":
        "a18ef495e0390f44d7404484b4cc2477efe71410357573b200efa67983859b79",
}
TABLE_CSV = "1fe1172a1cd0d3b715c159e6ab3926145b9f6fbeb7ccb1c75fad37b3c0996e31"


def _sha(path) -> str:
    """sha256 of a file's bytes, or of a Parquet file's content (see the module docstring)."""
    if path.suffix != ".parquet":
        return hashlib.sha256(path.read_bytes()).hexdigest()
    t = pq.read_table(path)
    doc = {"schema": [[f.name, str(f.type)] for f in t.schema],
           "rows": [[_rounded(v) for v in row.values()] for row in t.to_pylist()]}
    return hashlib.sha256(json.dumps(doc, ensure_ascii=False).encode()).hexdigest()


def _rounded(v):
    return round(v, 4) if isinstance(v, float) and math.isfinite(v) else v


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
    from coretune.report.summary import write_run_report
    from coretune.run.pipeline import run

    for name in ("vanilla", "coreset"):
        cfg = load_config(ROOT / f"configs/demo/{name}.yaml",
                          [*overrides(pool_file), "seeds=[0]"])
        run(cfg, tmp_path / cfg.name, quiet=True, log=lambda _: None)
    write_run_report([tmp_path], tmp_path / "table")
    assert _sha(tmp_path / "table" / "table.csv") == TABLE_CSV, (
        (tmp_path / "table" / "table.csv").read_text())
