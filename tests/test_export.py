"""Trainer-ready subsets out: TRL's prompt-completion and conversational JSONL, read back with
the real `datasets` library."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from coretune.data.export import TRAINER_FORMATS, trainer_records, write_trainer_jsonl
from coretune.errors import CoretuneError

datasets = pytest.importorskip("datasets")

TABLE = pa.table({
    "uid": ["a", "b", "c"],
    "prompt": ["Is the sky blue?", "2 + 2 =", 'Quote "this" \u00e9\n and go'],
    "target": ["yes", "4", "done"],
    "order": [0, 1, 2],
})


def _load(path, tmp_path):
    return datasets.load_dataset("json", data_files=str(path), split="train",
                                 cache_dir=str(tmp_path / "cache"))


def test_prompt_completion_loads_with_datasets(tmp_path):
    path = write_trainer_jsonl(TABLE, tmp_path / "s.jsonl", "prompt-completion")
    ds = _load(path, tmp_path)
    assert ds.column_names == ["prompt", "completion"] and ds.num_rows == 3
    assert ds["prompt"] == TABLE.column("prompt").to_pylist()
    # TRL trains on prompt + completion: the completion carries coretune's prompt/target join.
    assert [p + c for p, c in zip(ds["prompt"], ds["completion"], strict=True)] == [
        p + " " + t for p, t in zip(TABLE.column("prompt").to_pylist(),
                                    TABLE.column("target").to_pylist(), strict=True)]


def test_messages_loads_with_datasets(tmp_path):
    path = write_trainer_jsonl(TABLE, tmp_path / "m.jsonl", "messages")
    ds = _load(path, tmp_path)
    assert ds.column_names == ["messages"] and ds.num_rows == 3
    for msgs, p, t in zip(ds["messages"], TABLE.column("prompt").to_pylist(),
                          TABLE.column("target").to_pylist(), strict=True):
        assert msgs == [{"role": "user", "content": p}, {"role": "assistant", "content": t}]


def test_prompt_target_is_coretunes_own_jsonl(tmp_path):
    path = write_trainer_jsonl(TABLE, tmp_path / "p.jsonl")
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    assert lines == [{"prompt": p, "target": t} for p, t in zip(
        TABLE.column("prompt").to_pylist(), TABLE.column("target").to_pylist(), strict=True)]


def test_join_matches_training():
    from coretune.data import export
    from coretune.models import JOIN

    assert export.JOIN == JOIN


def test_bad_format_and_missing_column_write_nothing(tmp_path):
    with pytest.raises(CoretuneError, match="unknown format 'alpaca'"):
        write_trainer_jsonl(TABLE, tmp_path / "x.jsonl", "alpaca")
    with pytest.raises(CoretuneError, match="field 'target': missing column"):
        write_trainer_jsonl(TABLE.drop_columns(["target"]), tmp_path / "x.jsonl", "messages")
    assert list(tmp_path.iterdir()) == []
    assert set(TRAINER_FORMATS) == {"prompt-target", "prompt-completion", "messages"}
    assert len(list(trainer_records(TABLE, "messages"))) == 3


def test_cli_export(cli, tmp_path):
    rows = [{"uid": u, "task": "t", "prompt": p, "target": t} for u, p, t in zip(
        *(TABLE.column(c).to_pylist() for c in ("uid", "prompt", "target")), strict=True)]
    (tmp_path / "subset.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for fmt in ("prompt-completion", "messages"):
        out = tmp_path / f"{fmt}.jsonl"
        proc = cli("pool", "export", tmp_path / "subset.jsonl", "-o", out, "--format", fmt,
                   check=True)
        assert f"3 rows as {fmt}" in proc.stdout
        assert _load(out, tmp_path).num_rows == 3


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["prompt-completion", "messages"])
def test_trl_sft_trainer_trains_on_the_export(tmp_path, fmt):
    """The README's three lines: the exported subset into TRL's SFTTrainer (real small model,
    two optimizer steps on CPU)."""
    trl = pytest.importorskip("trl")
    from coretune.models import default_model_dir

    path = write_trainer_jsonl(TABLE, tmp_path / "s.jsonl", fmt)
    ds = _load(path, tmp_path)
    args = trl.SFTConfig(str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2,
                         report_to=[], save_strategy="no", use_cpu=True, logging_steps=1,
                         max_length=64)
    trainer = trl.SFTTrainer(model=str(default_model_dir()), train_dataset=ds, args=args)
    result = trainer.train()
    assert result.global_step == 2 and result.training_loss > 0
    if fmt == "prompt-completion":  # TRL's default: loss on the completion only
        batch = trainer.data_collator([trainer.train_dataset[0]])
        assert (batch["labels"] != -100).sum() < (batch["attention_mask"] == 1).sum()
