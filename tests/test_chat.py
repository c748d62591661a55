"""Chat pools: rows of `messages` built, validated, selected, trained on and exported back."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import small_pool

from coretune.data.chat import MESSAGES, render_prompt
from coretune.data.export import trainer_records
from coretune.data.pool import Pool, load_pool
from coretune.data.stream import scan_pool
from coretune.errors import CoretuneError

SYSTEM = {"role": "system", "content": "Answer in one word."}
CHAT = [SYSTEM,
        {"role": "user", "content": "Is the sky blue on a clear day?"},
        {"role": "assistant", "content": "Yes."},
        {"role": "user", "content": "And at night — is it blue?"},
        {"role": "assistant", "content": "No."}]


def lines(*records) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def test_chat_rows_keep_their_turns_and_get_a_text_prompt_and_target(tmp_path):
    (tmp_path / "p.jsonl").write_text(lines(
        {"task": "chat", "messages": CHAT},
        {"task": "qa", "prompt": "2 + 2 =", "target": "4"}), encoding="utf-8")
    pool = load_pool(tmp_path / "p.jsonl")
    assert pool.table.schema.field("messages").type == MESSAGES
    assert pool.column("prompt") == [
        "System: Answer in one word.\nUser: Is the sky blue on a clear day?\nAssistant: Yes.\n"
        "User: And at night — is it blue?\nAssistant:", "2 + 2 ="]
    assert pool.column("target") == ["No.", "4"]
    assert pool.column("messages") == [CHAT, None]
    # a saved pool (messages beside the prompt and target made from them) loads as it was
    pool.save(tmp_path / "p.parquet")
    assert load_pool(tmp_path / "p.parquet").table.equals(pool.table)
    assert scan_pool(tmp_path / "p.parquet") == {**scan_pool(tmp_path / "p.jsonl"),
                                                 "source": str(tmp_path / "p.parquet")}


def test_sharegpt_turns_from_another_column(tmp_path):
    sharegpt = [{"from": "system", "value": "Be kind."}, {"from": "human", "value": "Hi"},
                {"from": "gpt", "value": "Hello!", "weight": None}]
    (tmp_path / "s.jsonl").write_text(lines({"id": "a", "task": "t",
                                             "conversations": sharegpt}))
    pool = load_pool(tmp_path / "s.jsonl", "uid=id,messages=conversations")
    assert pool.column("messages") == [[
        {"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"}]]
    assert "conversations" not in pool.table.column_names


def test_generated_uids_cover_the_turns():
    """Two conversations with the same text prompt and target are different rows; a row
    without messages keeps the uid it has in a pool without the column."""
    one_turn = [{"role": "user", "content": "Hi\nAssistant: Yo\nUser: Again?"},
                {"role": "assistant", "content": "Yes"}]
    three = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"},
             {"role": "user", "content": "Again?"}, {"role": "assistant", "content": "Yes"}]
    assert render_prompt(one_turn) == render_prompt(three)
    plain = {"task": "t", "prompt": "p", "target": "x"}
    pool = Pool.from_records([{"task": "t", "messages": one_turn},
                              {"task": "t", "messages": three}, plain])
    uids = pool.uids
    assert len({u.split("-")[0] for u in uids}) == 3
    assert uids[2] == Pool.from_records([plain]).uids[0]


def test_ultrachat_shaped_dataset_folder(tmp_path):
    """A `datasets` save_to_disk folder whose turns are {content, role} and whose `prompt`
    column is the first user turn: refused until that column is left out with `prompt=-`."""
    datasets = pytest.importorskip("datasets")
    rows = [{"prompt": f"Question {i}?", "prompt_id": f"id{i}", "source": "ultrachat",
             "messages": [{"content": f"Question {i}?", "role": "user"},
                          {"content": f"Answer {i}.", "role": "assistant"}]}
            for i in range(4)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"), num_shards=2)
    with pytest.raises(CoretuneError, match="row 1: field 'prompt': differs from the prompt"):
        load_pool(tmp_path / "hf", "uid=prompt_id,task=source")
    pool = load_pool(tmp_path / "hf", "uid=prompt_id,task=source,prompt=-,target=-")
    assert pool.column("prompt")[0] == "User: Question 0?\nAssistant:"
    assert pool.column("messages")[3] == [{"role": "user", "content": "Question 3?"},
                                          {"role": "assistant", "content": "Answer 3."}]
    # key order in the export is role, content whatever the source's order was
    rec = next(trainer_records(pool.table, "messages"))
    assert json.dumps(rec) == json.dumps({"messages": [
        {"role": "user", "content": "Question 0?"}, {"role": "assistant", "content": "Answer 0."}]})


def test_chat_join_uses_the_template_and_falls_back_to_the_plain_join():
    from coretune.models import encode_prompt, encode_target, load_tokenizer
    from coretune.train import IGNORE, encode_example

    tok = load_tokenizer("default")
    assert tok.chat_template  # SmolLM2-135M-Instruct has one (ChatML)
    prompt, target = render_prompt(CHAT), CHAT[-1]["content"]
    ids, labels = encode_example(tok, prompt, target, 256, CHAT)
    p = tok.apply_chat_template(CHAT[:-1], add_generation_prompt=True, tokenize=False)
    assert tok.decode(ids) == p + "No.<|im_end|>"
    assert tok.decode([y for y in labels if y != IGNORE]) == "No.<|im_end|>"
    assert labels[:len(ids) - 3] == [IGNORE] * (len(ids) - 3)  # "No", "." and EOS
    short, short_labels = encode_example(tok, prompt, target, 16, CHAT)
    assert short[-3:] == ids[-3:] and len(short) == 16  # the prompt is cut on the left
    tok.chat_template = None
    ids, labels = encode_example(tok, prompt, target, 256, CHAT)
    assert ids == encode_prompt(tok, prompt) + encode_target(tok, target) + [tok.eos_token_id]


def _chat_pool_jsonl(path) -> dict[str, list]:
    """The small real pool as chat rows, without uids: every row's prompt as a user turn and
    its target as the reply; every other row with a system turn, every third with an
    earlier exchange. Returns each row's turns by its generated uid."""
    records = []
    for i, r in enumerate(small_pool().table.to_pylist()):
        turns = [{"role": "user", "content": r["prompt"]},
                 {"role": "assistant", "content": r["target"]}]
        if i % 3 == 0:
            turns = [{"role": "user", "content": "Ready for a question?"},
                     {"role": "assistant", "content": "Yes, go on."}, *turns]
        if i % 2 == 0:
            turns = [SYSTEM, *turns]
        records.append({"task": r["task"], "messages": turns})
    path.write_text(lines(*records), encoding="utf-8")
    return dict(zip(load_pool(path).uids, [r["messages"] for r in records], strict=True))


@pytest.mark.slow
def test_chat_pool_built_selected_trained_and_exported(cli, tmp_path, tmp_path_factory):
    from coretune.train import TrainConfig, train

    turns_of = _chat_pool_jsonl(tmp_path / "chat.jsonl")
    cli("pool", "build", "--from", tmp_path / "chat.jsonl", "-o", tmp_path / "pool.parquet",
        check=True)
    check = json.loads(cli("pool", "validate", tmp_path / "pool.parquet", check=True).stdout)
    assert check["rows"] == len(turns_of) == 320
    out = tmp_path / "sel" / "subset.parquet"
    cli("select", "--pool", tmp_path / "pool.parquet", "-o", out, "--k", 12, "--max-tokens",
        128, "--cache-dir", tmp_path_factory.getbasetemp() / "embed-cache", "--quiet",
        "--target", "tasks:rte,cb", "--budget", 12, "--format", "messages", check=True)
    subset = pq.read_table(out)
    assert subset.num_rows == 12 and subset.schema.field("messages").type == MESSAGES
    chosen = [turns_of[u] for u in subset.column("uid").to_pylist()]
    assert any(len(turns) > 3 for turns in chosen)
    expected = [json.dumps({"messages": turns}, ensure_ascii=False) + "\n" for turns in chosen]
    assert (tmp_path / "sel" / "subset.jsonl").read_text(encoding="utf-8") == "".join(expected)
    cli("pool", "export", out, "--format", "messages", "-o", tmp_path / "m.jsonl", check=True)
    assert (tmp_path / "m.jsonl").read_text(encoding="utf-8") == "".join(expected)
    cli("pool", "export", out, "--format", "prompt-target", "-o", tmp_path / "pt.jsonl",
        check=True)
    assert [json.loads(x) for x in (tmp_path / "pt.jsonl").read_text().splitlines()] == [
        {"prompt": p, "target": t} for p, t in zip(subset.column("prompt").to_pylist(),
                                                   subset.column("target").to_pylist(),
                                                   strict=True)]

    model = train(out, "default", TrainConfig(max_steps=1, batch_size=4, max_length=128),
                  tmp_path / "model", quiet=True)
    state = json.loads((model / "train_state.json").read_text())
    assert (state["steps"], state["rows"], state["done"]) == (1, 12, True)
    log = [json.loads(x) for x in (model / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and log[0]["loss"] > 0


def test_chat_rows_as_training_dicts():
    from coretune.train import load_rows

    rows = load_rows([{"messages": CHAT}, {"prompt": "2 + 2 =", "target": "4"}])
    assert rows == [(render_prompt(CHAT), "No.", CHAT), ("2 + 2 =", "4")]
    with pytest.raises(CoretuneError, match="field 'messages': turn 1: unknown role 'tool'"):
        load_rows([{"messages": [{"role": "tool", "content": "x"}, *CHAT[1:]]}])


def test_prompt_target_rows_unchanged_by_a_messages_column():
    table = pa.table({"uid": ["a"], "task": ["t"], "prompt": ["p"], "target": ["x"],
                      "messages": pa.nulls(1, MESSAGES)})
    pool = Pool(table)
    assert pool.column("prompt") == ["p"] and pool.column("messages") == [None]
    assert list(trainer_records(pool.table, "messages")) == [{"messages": [
        {"role": "user", "content": "p"}, {"role": "assistant", "content": "x"}]}]
