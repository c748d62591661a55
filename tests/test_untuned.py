"""The untuned model is a mode of its own (`untuned: true`); `select.method: none`, its old
spelling, still loads as it, plans the same stages and resumes a run made with it."""

from __future__ import annotations

import pytest
from conftest import ROOT

from coretune.config import RunConfig, load_config
from coretune.errors import CoretuneError
from coretune.run.pipeline import plan, run

EVAL = "evaluate: {tasks: [rte], max_examples: 2, max_templates: 1}\n"
OLD = "name: v\nseeds: [0]\nselect: {method: none, budget: 1%}\n" + EVAL
NEW = "name: v\nseeds: [0]\nuntuned: true\nselect: {budget: 1%}\n" + EVAL


def _configs(tmp_path) -> tuple[RunConfig, RunConfig]:
    (tmp_path / "old.yaml").write_text(OLD)
    (tmp_path / "new.yaml").write_text(NEW)
    return load_config(tmp_path / "old.yaml"), load_config(tmp_path / "new.yaml")


def _keys(cfg: RunConfig, run_dir) -> list[tuple[str, str]]:
    return [(s.name, s.key()) for s in plan(cfg, run_dir, 0, quiet=True)]


def test_both_spellings_are_one_mode_with_the_same_keys_and_record(tmp_path):
    old, new = _configs(tmp_path)
    assert old.untuned and new.untuned and not old.needs_clusters
    assert old == new and old.select.method == "kcenter"  # the method is not read
    assert _keys(old, tmp_path / "v") == _keys(new, tmp_path / "v")
    assert [n for n, _ in _keys(new, tmp_path / "v")] == ["evaluate"]
    # config.json records the mode as run folders always have, and reads back as it
    assert new.model_dump()["select"]["method"] == "none" and "untuned" not in new.model_dump()
    assert RunConfig.model_validate(new.model_dump()) == new
    trained = RunConfig(name="t")
    assert not trained.untuned and "untuned" not in trained.model_dump()


def test_shipped_untuned_configs_use_the_new_spelling():
    for path in (ROOT / "configs/demo/vanilla.yaml", ROOT / "configs/paper/vanilla.yaml"):
        assert "untuned: true" in path.read_text() and "none" not in path.read_text()
        assert load_config(path).untuned


def test_override_makes_any_config_untuned():
    cfg = load_config(ROOT / "configs/paper/sampler_random.yaml", ["untuned=true"])
    assert cfg.untuned and not cfg.needs_clusters
    assert [s.name for s in plan(cfg, ROOT / "runs-never-written", 0)] == ["evaluate"]


def test_old_spelling_against_untuned_false_is_refused(tmp_path):
    (tmp_path / "c.yaml").write_text("name: c\nuntuned: false\nselect:\n  method: none\n")
    with pytest.raises(CoretuneError, match=r"c.yaml:4: field 'select.method': 'none' is the "
                                            r"old spelling of the top-level `untuned: true`"):
        load_config(tmp_path / "c.yaml")


def test_none_is_not_listed_as_a_method(tmp_path):
    from coretune.select.methods import method_names

    (tmp_path / "c.yaml").write_text("name: c\nselect:\n  method: nne\n")
    with pytest.raises(CoretuneError) as e:
        load_config(tmp_path / "c.yaml")
    assert e.value.reason.startswith("unknown method 'nne' (one of kcenter")
    assert "none" not in e.value.reason and "none" not in method_names()


def test_a_sweep_of_the_untuned_model_is_refused(tmp_path):
    from coretune.run.sweep import run_sweep

    cfg = _configs(tmp_path)[1]
    with pytest.raises(CoretuneError, match="field 'untuned': a sweep trains every point"):
        run_sweep(cfg, tmp_path / "sweep", quiet=True, log=lambda _: None)
    assert not (tmp_path / "sweep").exists()


def test_run_made_with_the_old_spelling_is_finished_under_the_new(tmp_path):
    """The untuned model scored on 2 RTE examples x 1 template (about 15 s on 2 CPU cores)."""
    old, new = _configs(tmp_path)
    run_dir = tmp_path / "runs/v"
    run(old, run_dir, quiet=True, log=lambda _: None)
    record = (run_dir / "config.json").read_bytes()
    assert all(stage.done() is not None for stage in plan(new, run_dir, 0, quiet=True))
    said = []
    run(new, run_dir, quiet=True, log=said.append)
    assert any("up to date, skipped" in line for line in said)
    assert not any("running" in line for line in said)
    assert (run_dir / "config.json").read_bytes() == record
