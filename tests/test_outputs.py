"""The output rule (coretune.run.outputs) and the run-folder rule: what a command writes is never
one of its inputs, and a run writes and removes only inside its own folder."""

from __future__ import annotations

import json
import os

import pytest

from coretune.cli import main
from coretune.errors import CoretuneError
from coretune.run.manifest import Stage
from coretune.run.outputs import Inputs, check_outputs

ROWS = "".join(json.dumps({"uid": f"u{i}", "task": "t", "prompt": f"q {i}?", "target": "yes"})
               + "\n" for i in range(5))


def _run(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    return e.value.code, capsys.readouterr().err


def test_hard_link_and_symlink_to_an_input_are_the_input(tmp_path):
    src = tmp_path / "a.jsonl"
    src.write_text(ROWS)
    os.link(src, tmp_path / "hard.jsonl")
    os.symlink(src, tmp_path / "soft.jsonl")
    for out in ("hard.jsonl", "soft.jsonl"):
        with pytest.raises(CoretuneError, match="overwrite the pool source"):
            check_outputs([tmp_path / out], Inputs().pool(src), overwrite=True)


def test_overwrite_replaces_an_existing_output(tmp_path, capsys):
    (tmp_path / "p.jsonl").write_text(ROWS)
    out = tmp_path / "o.jsonl"
    out.write_text("old\n")
    code, err = _run(["pool", "export", tmp_path / "p.jsonl", "-o", out], capsys)
    assert code == 2 and "--overwrite" in err and out.read_text() == "old\n"
    main(["pool", "export", str(tmp_path / "p.jsonl"), "-o", str(out), "--overwrite"])
    assert len(out.read_text().splitlines()) == 5


def test_overwrite_never_replaces_an_input(tmp_path, capsys):
    shards = tmp_path / "s"
    shards.mkdir()
    (shards / "a.jsonl").write_text(ROWS)
    code, err = _run(["pool", "export", f"{shards}/*.jsonl", "-o", shards / "a.jsonl",
                      "--overwrite"], capsys)
    assert code == 2 and "overwrite the pool source" in err
    assert (shards / "a.jsonl").read_text() == ROWS


def test_a_stage_outside_its_run_is_neither_written_nor_removed(tmp_path):
    victim = tmp_path / "users-files"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    (victim / ".key").write_text("another run's key")  # looks like stale stage work
    stage = Stage("pool", victim, {}, lambda d: {}, root=tmp_path / "runs" / "r")
    with pytest.raises(CoretuneError, match="outside its run folder"):
        stage.run(lambda _: None)
    assert (victim / "keep.txt").read_text() == "mine"


def test_run_checks_the_pool_against_the_settings_before_embedding(tmp_path, capsys,
                                                                   monkeypatch):
    """A target task the pool lacks is only knowable once the pool is read: the run stops
    right after the pool stage, before the (slow) embedding."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.jsonl").write_text(ROWS)
    (tmp_path / "c.yaml").write_text(f"name: c\npool: {{path: {tmp_path / 'p.jsonl'}}}\n"
                                     "cluster: {k: 2}\ntarget: {spec: 'tasks:nope'}\n")
    code, err = _run(["run", tmp_path / "c.yaml", "--quiet"], capsys)
    assert code == 2 and "nope" in err, err
    shared = tmp_path / "runs" / "c" / "shared"
    assert (shared / "pool" / "manifest.json").is_file()
    assert not (shared / "embed").exists()
