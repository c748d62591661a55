"""The run-folder layout, and the report of a run whose seeds are not 0."""

from __future__ import annotations

import pytest
from conftest import small_pool

from coretune.config import load_config
from coretune.run.layout import RunLayout


def test_layout_paths(tmp_path):
    run = RunLayout(tmp_path)
    assert run.stage("embed") == tmp_path / "shared" / "embed"
    assert run.subset(3) == tmp_path / "seed-3" / "select" / "subset.parquet"
    assert run.metrics(3) == tmp_path / "seed-3" / "evaluate" / "metrics.json"
    with pytest.raises(ValueError, match="needs a seed"):
        run.stage("select")
    with pytest.raises(ValueError, match="unknown stage"):
        run.stage("deploy", 0)
    assert run.evaluated_seeds() == []


@pytest.mark.slow
def test_report_of_seeds_1_and_2_keeps_map_and_radius(tmp_path):
    """`--seeds 1,2`: the summary used to read `seed-0` by name and lost these figures."""
    from coretune.report.summary import write_run_report
    from coretune.run.pipeline import run

    small_pool().save(tmp_path / "pool.parquet")
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        f"name: s12\npool: {{path: {tmp_path / 'pool.parquet'}}}\ncluster: {{k: 12}}\n"
        "target: {threshold: 1.5}\nselect: {method: kcenter, budget: '16'}\n"
        "train: {max_steps: 1, batch_size: 2, max_length: 64}\n"
        "evaluate: {tasks: [rte], max_examples: 2, max_templates: 1}\n")
    cfg = load_config(cfg_file)
    run(cfg, tmp_path / "s12", seeds=[1, 2], quiet=True, log=lambda _: None,
        report=lambda d: write_run_report([d], d))
    assert RunLayout(tmp_path / "s12").evaluated_seeds() == [1, 2]
    report = (tmp_path / "s12" / "report.md").read_text()
    assert "## Pool embeddings by task family" in report
    assert "## K-center coverage radius" in report


def test_probe_set_is_part_of_the_target_key(tmp_path, monkeypatch):
    """The `nli` target probes with the shipped evaluation sets: a changed set must not reuse
    the old targets."""
    import shutil

    from conftest import DATA

    from coretune.config import RunConfig
    from coretune.run.pipeline import plan

    cfg = RunConfig(name="k", select={"method": "kcenter"})

    def target_key() -> str:
        return next(s for s in plan(cfg, tmp_path / "run", 0) if s.name == "target").key()

    before = target_key()
    copy = tmp_path / "data"
    copy.mkdir()
    for sub in ("pool", "templates"):
        (copy / sub).symlink_to(DATA / sub, target_is_directory=True)
    shutil.copytree(DATA / "nli", copy / "nli")
    monkeypatch.setenv("CORETUNE_DATA", str(copy))
    assert target_key() == before  # same files, same key
    with open(copy / "nli" / "cb" / "validation.jsonl", "a", encoding="utf-8") as f:
        f.write('{"premise": "A new probe.", "hypothesis": "It changes.", "label": 0}\n')
    assert target_key() != before
    other = RunConfig(name="k", target={"spec": "tasks:rte"})
    assert next(s for s in plan(other, tmp_path / "r", 0) if s.name == "target").files == {}


def test_target_share_and_by_task_are_in_the_target_key_only_when_set(tmp_path):
    from coretune.config import RunConfig
    from coretune.run.pipeline import plan

    def target(**t):
        cfg = RunConfig(name="k", select={"method": "kcenter"}, target=t)
        return next(s for s in plan(cfg, tmp_path / "run", 0) if s.name == "target")

    plain = target(by_task=False)
    assert "share" not in plain.config  # runs made before `share` existed keep their key
    assert target(share=0.05, by_task=False).config["share"] == 0.05
    assert target(share=0.05, by_task=False).key() != plain.key()
    assert "by_task" not in plain.config and "drop_below" not in plain.config
    on = target()  # the default: the task step, with its drop share in the key
    assert on.config["by_task"] is True and on.config["drop_below"] == 0.3333
    assert on.key() != plain.key()


def test_only_the_cli_imports_the_cli():
    import ast

    from conftest import ROOT

    src = ROOT / "src" / "coretune"
    offenders = []
    for path in src.rglob("*.py"):
        rel = path.relative_to(src)
        if rel.parts[0] == "cli" or rel.name == "__main__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "coretune.cli" or n.startswith("coretune.cli.") for n in names):
                offenders.append(str(rel))
    assert offenders == []
