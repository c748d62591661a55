"""The bad-input corpus: every entry point, every case through the real CLI (`coretune.cli.main`,
the console script's function, in-process for speed; a few also in a subprocess below).

Each case: exit 2, one line `coretune: error: ...` naming the file, the line/row and the field
where there is one, no traceback, and no file left behind (not even a temporary one).
Run them with `pytest -k bad_input`.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import DATA

from coretune.cli import main

RTE_T = DATA / "templates/super_glue/rte/templates.yaml"


def row(i, **kw):
    return {"uid": f"u{i}", "task": "t", "prompt": f"question {i}?", "target": "yes", **kw}


def jsonl(*rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


GOOD = jsonl(*(row(i) for i in range(20)))


# Two clearly separate tasks: with k=2 the 'math' target set is at most its 10 rows.
TWO_TASKS = jsonl(*(row(i, task="math", prompt=f"What is {i} plus {i + 3}?", target=str(2 * i + 3))
                    for i in range(10)),
                  *(row(i, task="poetry", prompt=f"Write a short poem about the colour of "
                        f"autumn leaf number {i}.", target="Leaves fall.") for i in range(10, 20)))


def parquet(table: pa.Table):
    def write(path: Path):
        pq.write_table(table, path)
    return write


def truncated_parquet(path: Path):
    pq.write_table(pa.table({"uid": ["a"] * 50, "prompt": ["p"] * 50}), path)
    path.write_bytes(path.read_bytes()[:-40])


# Shards that disagree on a column's type: `label` is an integer in a.jsonl, text in b.jsonl.
LABEL_TYPES = {"s/a.jsonl": jsonl(*(row(i, label=i) for i in range(10))),
               "s/b.jsonl": jsonl(*(row(i, label=f"l{i}") for i in range(10, 20)))}
LABEL_ERROR = ["b.jsonl:1", "field 'label'", "type string here, int64 in", "a.jsonl",
               "shards must agree"]


def shard(**columns):
    return parquet(pa.table({"task": ["t"] * 2, "prompt": ["p", "q"], "target": ["x"] * 2,
                             **columns}))


def turn(role, content):
    return {"role": role, "content": content}


USER, REPLY = turn("user", "Hi?"), turn("assistant", "Hello.")


def chat(i, *turns, **kw):
    """A chat row: `messages` instead of prompt and target."""
    return {"uid": f"c{i}", "task": "chat", "messages": list(turns or (USER, REPLY)), **kw}


def chat_parquet(**columns):
    from coretune.data.chat import MESSAGES

    return parquet(pa.table({"uid": ["a", "b"], "task": ["t"] * 2,
                             "messages": pa.array([[USER, REPLY]] * 2, MESSAGES), **columns}))


@functools.cache
def _finished_run() -> Path:
    """A real finished run, made once: the untuned model scored on 2 RTE examples x 1
    template (about 15 s on 2 CPU cores)."""
    from coretune.config import load_config
    from coretune.run.pipeline import run

    root = Path(tempfile.mkdtemp(prefix="coretune-finished-run-"))
    atexit.register(shutil.rmtree, root, True)
    (root / "v.yaml").write_text("name: v\nseeds: [0]\nselect: {method: none}\n"
                                 "evaluate: {tasks: [rte], max_examples: 2, max_templates: 1}\n")
    run(load_config(root / "v.yaml"), root / "v", quiet=True, log=lambda _: None)
    return root / "v"


def damaged_run(name: str, data: bytes | None = None):
    """A copy of the finished run with file `name` cut in half (or replaced by `data`)."""
    def write(path: Path):
        shutil.copytree(_finished_run(), path)
        f = path / name
        f.write_bytes(f.read_bytes()[:f.stat().st_size // 2] if data is None else data)
    return write


T_HEAD = "dataset: d\ntemplates:\n"


def template(jinja, choices="yes ||| no", key="t1", extra=""):
    return (T_HEAD + f"  {key}: !Template\n    id: {key}\n    name: n{key}\n"
            f"    jinja: {json.dumps(jinja)}\n"
            + (f"    answer_choices: {json.dumps(choices)}\n" if choices else "") + extra)


NLI = jsonl({"premise": "A cat sat.", "hypothesis": "A cat exists.", "label": 0},
            {"premise": "A dog ran.", "hypothesis": "No dog.", "label": 1})
GOOD_T = template("{{premise}} Is it {{hypothesis}}? ||| {{answer_choices[label]}}")
CFG = "name: c\nseeds: [0]\n"

# id, files {name: text | bytes | writer(path)}, argv ("{name}" -> path), fragments expected
# in the one error line.
CASES = [
    # ---- pool files
    ("pool_non_utf8_jsonl", {"p.jsonl": GOOD.encode() + b'{"uid": "x\xff"}\n'},
     ["pool", "info", "{p.jsonl}"], ["p.jsonl:21", "not valid UTF-8"]),
    ("pool_non_utf8_csv", {"p.csv": b"uid,task,prompt,target\na,t,q,y\nb,t,caf\xe9,y\n"},
     ["pool", "info", "{p.csv}"], ["p.csv:3", "not valid UTF-8"]),
    ("pool_latin1_bom_less_header", {"p.jsonl": b'{"uid": "\xe9", "task": "t"}\n'},
     ["pool", "info", "{p.jsonl}"], ["p.jsonl:1", "UTF-8"]),
    ("pool_malformed_json", {"p.jsonl": GOOD + '{"uid": "x", oops}\n'},
     ["pool", "info", "{p.jsonl}"], ["p.jsonl:21", "malformed JSON"]),
    ("pool_line_not_object", {"p.jsonl": GOOD + '["a", "b"]\n'},
     ["pool", "info", "{p.jsonl}"], ["p.jsonl:21", "JSON object"]),
    ("pool_missing_column", {"p.jsonl": jsonl({"uid": "a", "task": "t", "prompt": "p"})},
     ["pool", "info", "{p.jsonl}"], ["p.jsonl", "field 'target'", "missing column"]),
    ("pool_missing_field_one_row", {"p.jsonl": GOOD + jsonl({"uid": "x", "task": "t",
                                                             "target": "y"})},
     ["pool", "info", "{p.jsonl}"], ["p.jsonl:21", "field 'prompt'", "missing"]),
    ("pool_null_prompt", {"p.jsonl": GOOD + jsonl(row(99, prompt=None))},
     ["pool", "info", "{p.jsonl}"], ["p.jsonl:21", "field 'prompt'", "empty"]),
    ("pool_blank_target", {"p.jsonl": jsonl(row(1), row(2, target="   "))},
     ["pool", "info", "{p.jsonl}"], ["p.jsonl:2", "field 'target'", "empty"]),
    ("pool_number_prompt", {"p.jsonl": jsonl(row(1), row(2, prompt=42))},
     ["pool", "info", "{p.jsonl}"], ["p.jsonl:2", "field 'prompt'"]),
    ("pool_all_number_targets", {"p.jsonl": jsonl(row(1, target=4), row(2, target=5))},
     ["pool", "info", "{p.jsonl}"], ["p.jsonl:1", "field 'target'", "must be text"]),
    ("pool_duplicate_uid", {"p.jsonl": GOOD + jsonl(row(3))},
     ["pool", "info", "{p.jsonl}"], ["p.jsonl:21", "field 'uid'", "duplicate uid 'u3'"]),
    ("pool_empty_file", {"p.jsonl": ""}, ["pool", "info", "{p.jsonl}"],
     ["p.jsonl", "empty file"]),
    ("pool_only_blank_lines", {"p.jsonl": "\n \n\n"}, ["pool", "info", "{p.jsonl}"],
     ["p.jsonl", "empty file"]),
    ("pool_choices_string", {"p.jsonl": jsonl(row(1), row(2, choices="yes|no"))},
     ["pool", "info", "{p.jsonl}"], ["p.jsonl:2", "field 'choices'", "choices must be a list"]),
    ("pool_choices_numbers", {"p.jsonl": jsonl(row(1, choices=["yes", 2]))},
     ["pool", "info", "{p.jsonl}"], ["p.jsonl:1", "field 'choices'", "list of strings"]),
    ("pool_target_not_in_choices", {"p.jsonl": jsonl(row(1, choices=["no", "maybe"]))},
     ["pool", "info", "{p.jsonl}"], ["p.jsonl:1", "field 'target'", "not one of the choices"]),
    ("pool_huge_field", {"p.jsonl": jsonl(row(1), row(2, prompt="x" * 1_000_001))},
     ["pool", "info", "{p.jsonl}"], ["p.jsonl:2", "field 'prompt'", "limit"]),
    ("pool_truncated_parquet", {"p.parquet": truncated_parquet},
     ["pool", "info", "{p.parquet}"], ["p.parquet", "not a readable Parquet file"]),
    ("pool_parquet_not_parquet", {"p.parquet": "uid,task\n"},
     ["pool", "info", "{p.parquet}"], ["p.parquet", "not a readable Parquet file"]),
    ("pool_parquet_null_row", {"p.parquet": parquet(pa.table({
        "uid": ["a", "b", "c"], "task": ["t"] * 3, "prompt": ["p", None, "q"],
        "target": ["x"] * 3}))},
     ["pool", "info", "{p.parquet}"], ["p.parquet", "row 2", "field 'prompt'", "empty"]),
    ("pool_parquet_float_prompt", {"p.parquet": parquet(pa.table({
        "uid": ["a"], "task": ["t"], "prompt": [1.5], "target": ["x"]}))},
     ["pool", "info", "{p.parquet}"], ["p.parquet", "row 1", "field 'prompt'", "must be text"]),
    ("pool_parquet_zero_rows", {"p.parquet": parquet(pa.table({
        "uid": pa.array([], pa.string()), "task": pa.array([], pa.string())}))},
     ["pool", "info", "{p.parquet}"], ["p.parquet", "empty file"]),
    ("pool_csv_bad_choices", {"p.csv": 'uid,task,prompt,target,choices\na,t,q,y,"yes, no"\n'},
     ["pool", "info", "{p.csv}"], ["p.csv", "row 1", "field 'choices'", "JSON list"]),
    ("pool_csv_ragged", {"p.csv": "uid,task,prompt,target\na,t,q,y\nb,t\n"},
     ["pool", "info", "{p.csv}"], ["p.csv", "malformed CSV"]),
    ("pool_unknown_suffix", {"p.txt": "hello"}, ["pool", "info", "{p.txt}"],
     ["p.txt", "unknown pool format '.txt'"]),
    ("pool_not_found", {}, ["pool", "info", "{tmp}/nope.jsonl"], ["nope.jsonl", "not found"]),
    ("pool_empty_folder", {"shards/README.md": "x"}, ["pool", "info", "{shards}"],
     ["shards", "no .parquet, .jsonl or .csv shards"]),
    ("pool_glob_no_match", {}, ["pool", "info", "{tmp}/*.parquet"],
     ["*.parquet", "no files match"]),
    ("pool_shards_mixed_formats", {"s/a.jsonl": GOOD, "s/b.parquet": parquet(pa.table({
        "uid": ["z"], "task": ["t"], "prompt": ["p"], "target": ["x"]}))},
     ["pool", "info", "{s}"], ["s", "mix formats"]),
    ("pool_duplicate_uid_across_shards", {"s/a.jsonl": GOOD, "s/b.jsonl": jsonl(row(7))},
     ["pool", "validate", "{s}"], ["b.jsonl:1", "field 'uid'", "earlier shard"]),
    ("pool_columns_not_key_value", {"p.jsonl": GOOD},
     ["pool", "info", "{p.jsonl}", "--columns", "prompt:question"],
     ["field 'columns'", "FIELD=COLUMN"]),
    ("pool_columns_unknown_field", {"p.jsonl": GOOD},
     ["pool", "info", "{p.jsonl}", "--columns", "question=prompt"],
     ["field 'columns'", "unknown pool field 'question'"]),
    ("pool_columns_missing_source", {"p.jsonl": GOOD},
     ["pool", "validate", "{p.jsonl}", "--columns", "prompt=inputs_pretokenized"],
     ["p.jsonl", "field 'prompt'", "'inputs_pretokenized'", "not found"]),
    ("pool_dataset_dict_root", {"dd/dataset_dict.json": '{"splits": ["train"]}'},
     ["pool", "info", "{dd}"], ["dd", "DatasetDict", "train"]),
    # ---- chat rows (messages)
    ("pool_chat_no_assistant_turn", {"p.jsonl": jsonl(chat(1), chat(2, turn("system", "S"),
                                                                      USER))},
     ["pool", "info", "{p.jsonl}"], ["p.jsonl:2", "field 'messages'", "no assistant turn"]),
    ("pool_chat_last_turn_not_assistant",
     {"p.jsonl": jsonl(chat(1, USER, REPLY, turn("user", "Thanks!")))},
     ["pool", "info", "{p.jsonl}"],
     ["p.jsonl:1", "field 'messages'", "the last turn is the user's", "must end with"]),
    ("pool_chat_unknown_role", {"p.jsonl": jsonl(chat(1, USER, turn("tool", "{}"), REPLY))},
     ["pool", "validate", "{p.jsonl}"],
     ["p.jsonl:1", "field 'messages'", "turn 2: unknown role 'tool'"]),
    ("pool_chat_empty_content", {"p.jsonl": jsonl(chat(1), chat(2, turn("user", "  "), REPLY))},
     ["pool", "info", "{p.jsonl}"], ["p.jsonl:2", "field 'messages'", "turn 1: empty content"]),
    ("pool_chat_messages_not_a_list",
     {"p.jsonl": jsonl(chat(1), {"uid": "c2", "task": "chat", "messages": "Hi? Hello."})},
     ["pool", "info", "{p.jsonl}"],
     ["p.jsonl:2", "field 'messages'", "must be a list of {role, content} turns, got text"]),
    ("pool_chat_turn_not_an_object", {"p.jsonl": jsonl(chat(1, "Hi?", REPLY))},
     ["pool", "info", "{p.jsonl}"],
     ["p.jsonl:1", "field 'messages'", "turn 1 is not an object", "got text"]),
    ("pool_chat_system_not_first", {"p.jsonl": jsonl(chat(1, USER, turn("system", "S"), REPLY))},
     ["pool", "info", "{p.jsonl}"], ["p.jsonl:1", "turn 2: a system turn can only be the first"]),
    ("pool_chat_no_user_turn", {"p.jsonl": jsonl(chat(1, turn("system", "S"), REPLY))},
     ["pool", "info", "{p.jsonl}"], ["p.jsonl:1", "field 'messages'", "no user turn"]),
    ("pool_chat_turn_extra_key",
     {"p.jsonl": jsonl(chat(1, USER, {**REPLY, "tool_calls": [{"name": "f"}]}))},
     ["pool", "info", "{p.jsonl}"],
     ["p.jsonl:1", "field 'messages'", "turn 2 has 'tool_calls' besides role and content"]),
    ("pool_chat_prompt_disagrees", {"p.jsonl": jsonl(chat(1), chat(2, prompt="Hi?"))},
     ["pool", "info", "{p.jsonl}"],
     ["p.jsonl:2", "field 'prompt'", "differs from the prompt", "--columns prompt=-"]),
    ("pool_chat_target_disagrees_parquet", {"p.parquet": chat_parquet(target=["Hello.", "No"])},
     ["pool", "validate", "{p.parquet}"],
     ["p.parquet", "row 2", "field 'target'", "differs from the target"]),
    ("pool_chat_parquet_turns_not_objects", {"p.parquet": parquet(pa.table({
        "uid": ["a"], "task": ["t"], "messages": [["Hi?", "Hello."]]}))},
     ["pool", "info", "{p.parquet}"],
     ["p.parquet", "row 1", "field 'messages'", "turn 1 is not an object"]),
    ("pool_chat_neither_messages_nor_prompt",
     {"p.jsonl": jsonl(chat(1), {"uid": "x", "task": "t", "target": "y"})},
     ["pool", "info", "{p.jsonl}"], ["p.jsonl:2", "field 'prompt'", "missing"]),
    ("pool_chat_sharegpt_unknown_from", {"s.jsonl": jsonl({
        "uid": "a", "task": "t", "conversations": [
            {"from": "human", "value": "Hi"}, {"from": "function_call", "value": "f()"},
            {"from": "gpt", "value": "ok"}]})},
     ["pool", "build", "--from", "{s.jsonl}", "--columns", "messages=conversations",
      "-o", "{tmp}/out.parquet"],
     ["s.jsonl:1", "field 'messages'", "turn 2: unknown role 'function_call'"]),
    ("pool_chat_bad_row_export", {"p.jsonl": jsonl(chat(1), chat(2, USER))},
     ["pool", "export", "{p.jsonl}", "--format", "messages", "-o", "{tmp}/o.jsonl"],
     ["p.jsonl:2", "field 'messages'", "no assistant turn"]),
    ("pool_chat_bad_row_select", {"p.jsonl": jsonl(chat(1), chat(2, USER, USER))},
     ["select", "--pool", "{p.jsonl}", "--format", "messages", "-o", "{tmp}/sel.parquet"],
     ["p.jsonl:2", "field 'messages'", "no assistant turn"]),
    ("pool_chat_bad_row_train", {"p.jsonl": jsonl(chat(1), chat(2, USER, turn("assistant", "")))},
     ["train", "--data", "{p.jsonl}", "-o", "{tmp}/m"],
     ["p.jsonl:2", "field 'messages'", "turn 2: empty content"]),
    ("pool_convert_bad_shard_no_output", {"s/a.jsonl": GOOD, "s/b.jsonl": jsonl(row(50),
                                                                               row(51, prompt=""))},
     ["pool", "build", "--from", "{s}", "-o", "{tmp}/out.parquet"],
     ["b.jsonl:2", "field 'prompt'", "empty"]),
    ("pool_shards_label_type_info", LABEL_TYPES, ["pool", "info", "{s}"], LABEL_ERROR),
    ("pool_shards_label_type_validate", LABEL_TYPES, ["pool", "validate", "{s}"], LABEL_ERROR),
    ("pool_shards_label_type_build_from", LABEL_TYPES,
     ["pool", "build", "--from", "{s}", "-o", "{tmp}/out.parquet"], LABEL_ERROR),
    ("pool_shards_label_type_export", LABEL_TYPES,
     ["pool", "export", "{s}", "-o", "{tmp}/o.jsonl"], LABEL_ERROR),
    ("pool_shards_label_type_select", LABEL_TYPES,
     ["select", "--pool", "{s}", "-o", "{tmp}/sel.parquet"], LABEL_ERROR),
    ("pool_shards_uid_int_and_text", {"s/a.parquet": shard(uid=[1, 2]),
                                      "s/b.parquet": shard(uid=["3", "4"])},
     ["pool", "info", "{s}"],
     ["b.parquet", "row 1", "field 'uid'", "type string here, int64 in", "a.parquet"]),
    ("pool_shards_int_and_float", {"s/a.parquet": shard(uid=["a", "b"], score=[1, 2]),
                                   "s/b.parquet": shard(uid=["c", "d"], score=[None, 0.5])},
     ["pool", "build", "--from", "{s}", "-o", "{tmp}/out.parquet"],
     ["b.parquet", "row 2", "field 'score'", "type double here, int64 in", "a.parquet"]),
    ("pool_choices_duplicate_jsonl", {"p.jsonl": jsonl(row(1), row(2, choices=["yes", "yes",
                                                                                "no"]))},
     ["pool", "info", "{p.jsonl}"], ["p.jsonl:2", "field 'choices'", "'yes' is listed twice"]),
    ("pool_choices_duplicate_csv",
     {"p.csv": 'uid,task,prompt,target,choices\na,t,q,no,"[""yes"", ""no"", "" yes""]"\n'},
     ["pool", "validate", "{p.csv}"], ["p.csv", "row 1", "field 'choices'", "listed twice"]),
    ("pool_choices_duplicate_parquet", {"p.parquet": shard(uid=["a", "b"],
                                                           choices=[["x", "y"], ["x", "x"]])},
     ["pool", "info", "{p.parquet}"],
     ["p.parquet", "row 2", "field 'choices'", "'x' is listed twice"]),
    ("template_duplicate_answer_choices", {"d.jsonl": NLI, "t.yaml": template(
        "{{premise}} ||| {{answer_choices[label]}}", choices="yes ||| no ||| yes")},
     ["pool", "build", "--bigbench", "none", "--no-default-datasets", "--dataset",
      "d:{d.jsonl}:{t.yaml}", "-o", "{tmp}/out.parquet"],
     ["d.jsonl:1", "field 'answer_choices'", "'yes' twice", "t.yaml:3"]),
    ("eval_duplicate_answer_choices", {"d.jsonl": NLI, "t.yaml": template(
        "{{premise}} ||| {{answer_choices[label]}}", choices="yes ||| yes")},
     ["evaluate", "--tasks", "", "--eval-file", "e:{d.jsonl}:{t.yaml}:yes,no"],
     ["d.jsonl:1", "field 'answer_choices'", "'yes' twice", "t.yaml:3"]),
    ("table_metrics_cut_short", {"r": damaged_run("seed-0/evaluate/metrics.json")},
     ["table", "{r}"], ["metrics.json:", "not valid JSON", "cut short"]),
    ("table_manifest_cut_short", {"r": damaged_run("seed-0/evaluate/manifest.json")},
     ["table", "{r}"], ["manifest.json:", "not valid JSON", "cut short"]),
    ("table_predictions_not_parquet", {"r": damaged_run("seed-0/evaluate/predictions.parquet",
                                                        b"not parquet")},
     ["table", "{r}"], ["predictions.parquet", "unreadable", "cut short"]),
    ("table_config_cut_short", {"r": damaged_run("config.json")},
     ["table", "{r}"], ["config.json:", "not valid JSON"]),
    # ---- templates (pool build with a dataset of your own)
    ("template_unsafe_jinja", {"d.jsonl": NLI, "t.yaml": template(
        "{{ premise.__class__.__mro__[1].__subclasses__() }} ||| x")},
     ["pool", "build", "--bigbench", "none", "--no-default-datasets", "--dataset",
      "d:{d.jsonl}:{t.yaml}", "-o", "{tmp}/out.parquet"], ["d.jsonl:1", "unsafe", "t.yaml:3"]),
    ("template_python_yaml_tag", {"d.jsonl": NLI, "t.yaml": T_HEAD +
                                  "  t1: !!python/object/apply:os.system ['true']\n"},
     ["pool", "build", "--bigbench", "none", "--no-default-datasets", "--dataset",
      "d:{d.jsonl}:{t.yaml}", "-o", "{tmp}/out.parquet"], ["t.yaml:3", "invalid YAML"]),
    ("template_unknown_row_field", {"d.jsonl": NLI, "t.yaml": template(
        "{{ sentence1 }} ||| {{ answer_choices[label] }}")},
     ["pool", "build", "--bigbench", "none", "--no-default-datasets", "--dataset",
      "d:{d.jsonl}:{t.yaml}", "-o", "{tmp}/out.parquet"], ["d.jsonl:1", "field 'sentence1'"]),
    ("template_unknown_key", {"d.jsonl": NLI, "t.yaml": template(
        "{{premise}} ||| x", extra="    answer_choice: yes ||| no\n")},
     ["pool", "build", "--bigbench", "none", "--no-default-datasets", "--dataset",
      "d:{d.jsonl}:{t.yaml}", "-o", "{tmp}/out.parquet"],
     ["t.yaml:3", "field 'answer_choice'", "unknown keys"]),
    ("template_jinja_syntax", {"d.jsonl": NLI, "t.yaml": template("{{ premise ||| x")},
     ["pool", "build", "--bigbench", "none", "--no-default-datasets", "--dataset",
      "d:{d.jsonl}:{t.yaml}", "-o", "{tmp}/out.parquet"], ["t.yaml:", "field 'jinja'", "syntax"]),
    ("template_no_jinja", {"d.jsonl": NLI, "t.yaml": T_HEAD + "  t1: !Template\n    name: a\n"},
     ["pool", "build", "--bigbench", "none", "--no-default-datasets", "--dataset",
      "d:{d.jsonl}:{t.yaml}", "-o", "{tmp}/out.parquet"], ["t.yaml:3", "field 'jinja'"]),
    ("template_not_promptsource", {"d.jsonl": NLI, "t.yaml": "- a\n- b\n"},
     ["pool", "build", "--bigbench", "none", "--no-default-datasets", "--dataset",
      "d:{d.jsonl}:{t.yaml}", "-o", "{tmp}/out.parquet"], ["t.yaml", "field 'templates'"]),
    ("template_dataset_spec", {}, ["pool", "build", "--dataset", "only-a-name", "-o",
                                   "{tmp}/out.parquet"], ["field 'dataset'", "NAME:DATA"]),
    # ---- evaluation files (checked before any model loads)
    ("eval_label_out_of_range", {"d.jsonl": jsonl({"premise": "a", "hypothesis": "b",
                                                   "label": 5}), "t.yaml": GOOD_T},
     ["evaluate", "--tasks", "", "--eval-file", "e:{d.jsonl}:{t.yaml}:yes,no"],
     ["d.jsonl:1", "field 'label'", "unknown label 5"]),
    ("eval_string_label_unknown", {"d.jsonl": jsonl({"premise": "a", "hypothesis": "b",
                                                     "label": "maybe"}), "t.yaml": GOOD_T},
     ["evaluate", "--tasks", "", "--eval-file", "e:{d.jsonl}:{t.yaml}:yes,no"],
     ["d.jsonl:1", "field 'label'", "'maybe'"]),
    ("eval_missing_premise", {"d.jsonl": NLI + jsonl({"hypothesis": "b", "label": 0}),
                              "t.yaml": GOOD_T},
     ["evaluate", "--tasks", "", "--eval-file", "e:{d.jsonl}:{t.yaml}:yes,no"],
     ["d.jsonl:3", "field 'premise'"]),
    ("eval_no_answer_choices", {"d.jsonl": NLI, "t.yaml": template(
        "{{premise}} ||| {{hypothesis}}", choices=None)},
     ["evaluate", "--tasks", "", "--eval-file", "e:{d.jsonl}:{t.yaml}:yes,no"],
     ["t.yaml", "field 'answer_choices'", "no template with answer choices"]),
    ("eval_spec_shape", {}, ["evaluate", "--eval-file", "e:x.jsonl"],
     ["field 'eval-file'", "NAME:DATA.jsonl"]),
    ("eval_unknown_task", {}, ["evaluate", "--tasks", "rte,mnli"], ["field 'tasks'", "mnli"]),
    # ---- configs (coretune run)
    ("config_yaml_syntax", {"c.yaml": CFG + "select:\n  budget: [1\n"},
     ["run", "{c.yaml}"], ["c.yaml:", "invalid YAML"]),
    ("config_unknown_key", {"c.yaml": CFG + "select:\n  budjet: 1%\n"},
     ["run", "{c.yaml}"], ["c.yaml:4", "field 'select.budjet'"]),
    ("config_wrong_type", {"c.yaml": CFG + "cluster:\n  k: many\n"},
     ["run", "{c.yaml}"], ["c.yaml:4", "field 'cluster.k'"]),
    ("config_cap_of_unknown_set",
     {"c.yaml": CFG + "evaluate:\n  max_examples_by_task: {mnli: 5}\n"},
     ["run", "{c.yaml}"], ["c.yaml:4", "field 'evaluate.max_examples_by_task'", "names 'mnli'"]),
    ("config_cap_below_one", {"c.yaml": CFG + "evaluate:\n  max_examples_by_task: {rte: 0}\n"},
     ["run", "{c.yaml}"],
     ["c.yaml:4", "field 'evaluate.max_examples_by_task'", "rte must be at least 1"]),
    ("config_share_above_one", {"c.yaml": CFG + "target:\n  share: 1.5\n"},
     ["run", "{c.yaml}"], ["c.yaml:4", "field 'target.share'"]),
    ("config_not_mapping", {"c.yaml": "- 1\n- 2\n"}, ["run", "{c.yaml}"],
     ["c.yaml", "YAML mapping"]),
    ("config_extends_loop", {"c.yaml": "extends: b.yaml\nname: c\n", "b.yaml": "extends: c.yaml\n"},
     ["run", "{c.yaml}"], ["c.yaml", "field 'extends'", "extends itself"]),
    ("config_extends_missing", {"c.yaml": "extends: base.yaml\n"}, ["run", "{c.yaml}"],
     ["base.yaml", "not found"]),
    ("config_negative_seed", {"c.yaml": "name: c\nseeds: [0, -1]\n"}, ["run", "{c.yaml}"],
     ["c.yaml:2", "field 'seeds.1'"]),
    ("config_bad_override", {"c.yaml": CFG}, ["run", "{c.yaml}", "select.budget"],
     ["field 'overrides'", "key=value"]),
    ("config_with_file_missing", {"c.yaml": CFG}, ["run", "{c.yaml}", "--with", "{tmp}/cpu.yaml"],
     ["cpu.yaml", "not found"]),
    ("config_seeds_flag_negative", {"c.yaml": CFG}, ["run", "{c.yaml}", "--seeds", "0,-3"],
     ["field 'seeds'", ">= 0"]),
    # ---- every setting is checked when the config is read, before any stage (no run folder)
    ("config_budget_word", {"c.yaml": CFG + "select:\n  budget: lots\n"}, ["run", "{c.yaml}"],
     ["c.yaml:4", "field 'select.budget'", "'lots'"]),
    ("config_budget_all_outside_sweep", {"c.yaml": CFG + "select:\n  budget: all\n"},
     ["run", "{c.yaml}"], ["c.yaml:4", "field 'select.budget'", "100%"]),
    ("config_encoder_unknown", {"c.yaml": CFG + "embed:\n  encoder: minilm-int9\n"},
     ["run", "{c.yaml}"], ["c.yaml:4", "field 'embed.encoder'", "unknown encoder 'minilm-int9'"]),
    ("config_encoder_needs_model", {"c.yaml": CFG + "embed:\n  encoder: hf\n"},
     ["run", "{c.yaml}"], ["c.yaml:4", "field 'embed.encoder'", "hf:MODEL"]),
    ("config_target_spec_unknown", {"c.yaml": CFG + "target:\n  spec: nli2\n"},
     ["run", "{c.yaml}"], ["c.yaml:4", "field 'target.spec'", "'nli2'"]),
    ("config_target_probe_missing", {"c.yaml": CFG + "target:\n  spec: probe:nope.jsonl\n"},
     ["run", "{c.yaml}"], ["c.yaml:4", "field 'target.spec'", "nope.jsonl", "not found"]),
    ("config_eval_set_unknown", {"c.yaml": CFG + "evaluate:\n  tasks: [rte, nope]\n"},
     ["run", "{c.yaml}"], ["c.yaml:4", "field 'evaluate.tasks'", "'nope'"]),
    ("config_eval_set_twice", {"c.yaml": CFG + "evaluate:\n  tasks: [rte, cb, rte]\n"},
     ["run", "{c.yaml}"], ["c.yaml:4", "field 'evaluate.tasks'", "duplicate"]),
    ("config_eval_file_missing",
     {"c.yaml": CFG + "evaluate:\n  eval_files: ['e:nope.jsonl:t.yaml:yes,no']\n"},
     ["run", "{c.yaml}"], ["c.yaml:4", "field 'evaluate.eval_files'", "not found"]),
    ("config_method_unknown", {"c.yaml": CFG + "select:\n  method: best\n"},
     ["run", "{c.yaml}"], ["c.yaml:4", "field 'select.method'", "'best'"]),
    # the untuned model (`untuned: true`; `select.method: none` is its old spelling)
    ("config_untuned_false_with_method_none",
     {"c.yaml": CFG + "untuned: false\nselect:\n  method: none\n"}, ["run", "{c.yaml}"],
     ["c.yaml:5", "field 'select.method'", "old spelling of the top-level `untuned: true`"]),
    ("config_untuned_override_contradicts_method_none",
     {"c.yaml": CFG + "select:\n  method: none\n"}, ["run", "{c.yaml}", "untuned=false"],
     ["c.yaml:4", "field 'select.method'", "sets untuned otherwise"]),
    ("config_untuned_not_a_bool", {"c.yaml": CFG + "untuned: sometimes\n"},
     ["run", "{c.yaml}"], ["c.yaml:3", "field 'untuned'", "boolean"]),
    ("sweep_untuned", {"c.yaml": CFG + "untuned: true\n"}, ["sweep", "{c.yaml}"],
     ["field 'untuned'", "a sweep trains every point", "remove untuned: true"]),
    ("sweep_untuned_old_spelling", {"c.yaml": CFG + "select: {method: none}\n"},
     ["sweep", "{c.yaml}", "--quick"], ["field 'untuned'", "a sweep trains every point"]),
    ("config_backend_unknown", {"c.yaml": CFG + "backend:\n  name: spark\n"},
     ["run", "{c.yaml}"], ["c.yaml:4", "field 'backend.name'", "'spark'"]),
    ("config_batch_size_zero", {"c.yaml": CFG + "embed:\n  batch_size: 0\n"},
     ["run", "{c.yaml}"], ["c.yaml:4", "field 'embed.batch_size'"]),
    ("config_max_tokens_zero", {"c.yaml": CFG + "embed:\n  max_tokens: 0\n"},
     ["run", "{c.yaml}"], ["c.yaml:4", "field 'embed.max_tokens'"]),
    ("config_k_zero", {"c.yaml": CFG + "cluster:\n  k: 0\n"}, ["run", "{c.yaml}"],
     ["c.yaml:4", "field 'cluster.k'"]),
    ("config_top_zero", {"c.yaml": CFG + "target:\n  top: 0\n"}, ["run", "{c.yaml}"],
     ["c.yaml:4", "field 'target.top'"]),
    ("config_threshold_negative", {"c.yaml": CFG + "target:\n  threshold: -1\n"},
     ["run", "{c.yaml}"], ["c.yaml:4", "field 'target.threshold'"]),
    ("config_max_examples_zero", {"c.yaml": CFG + "evaluate:\n  max_examples: 0\n"},
     ["run", "{c.yaml}"], ["c.yaml:4", "field 'evaluate.max_examples'"]),
    ("config_train_lr_zero", {"c.yaml": CFG + "train:\n  lr: 0\n"}, ["run", "{c.yaml}"],
     ["c.yaml:4", "field 'train.lr'"]),
    ("config_error_in_extended_file", {"c.yaml": "extends: base.yaml\nname: c\n",
                                       "base.yaml": "seeds: [0]\nselect:\n  budget: lots\n"},
     ["run", "{c.yaml}"], ["base.yaml:3", "field 'select.budget'"]),
    ("config_error_in_with_file", {"c.yaml": CFG, "cpu.yaml": "embed:\n  encoder: nope\n"},
     ["run", "{c.yaml}", "--with", "{cpu.yaml}"], ["cpu.yaml:2", "field 'embed.encoder'"]),
    ("config_override_named", {"c.yaml": CFG + "select:\n  budget: 1%\n"},
     ["run", "{c.yaml}", "select.budget=lots"],
     ["override 'select.budget=lots'", "field 'select.budget'"]),
    ("sweep_config_override_named", {"c.yaml": CFG}, ["sweep", "{c.yaml}", "embed.encoder=x"],
     ["override 'embed.encoder=x'", "field 'embed.encoder'"]),
    # ---- a run name is a plain folder name: nothing is written outside --runs-dir
    ("run_name_escapes", {"c.yaml": CFG}, ["run", "{c.yaml}", "name=../escape"],
     ["override 'name=../escape'", "field 'name'", "plain folder name"]),
    ("run_name_absolute", {"c.yaml": "name: /tmp/coretune-escape\nseeds: [0]\n"},
     ["run", "{c.yaml}"], ["c.yaml:1", "field 'name'", "plain folder name"]),
    ("run_name_nested", {"c.yaml": CFG}, ["run", "{c.yaml}", "name=a/b"],
     ["field 'name'", "plain folder name"]),
    ("sweep_name_escapes", {"c.yaml": CFG}, ["sweep", "{c.yaml}", "name=.."],
     ["field 'name'", "plain folder name"]),
    ("run_pool_inside_run_folder", {"c.yaml": CFG + "pool:\n  path: runs/c/mine.jsonl\n",
                                    "runs/c/mine.jsonl": GOOD},
     ["run", "{c.yaml}"], ["runs/c", "mine.jsonl", "inside the output folder"]),
    # ---- select arguments (all checked before the encoder loads)
    ("select_budget_zero", {"p.jsonl": GOOD},
     ["select", "--pool", "{p.jsonl}", "-o", "{tmp}/s.parquet", "--budget", "0", "--k", "2"],
     ["field 'budget'", "at least 1"]),
    ("select_budget_negative_share", {"p.jsonl": GOOD},
     ["select", "--pool", "{p.jsonl}", "-o", "{tmp}/s.parquet", "--budget", "-1%", "--k", "2"],
     ["field 'budget'", "-1%"]),
    ("select_budget_above_pool", {"p.jsonl": GOOD},
     ["select", "--pool", "{p.jsonl}", "-o", "{tmp}/s.parquet", "--budget", "21", "--k", "2"],
     ["field 'budget'", "larger than the pool (20 rows)"]),
    ("select_budget_above_target_set", {"p.jsonl": TWO_TASKS},
     ["select", "--pool", "{p.jsonl}", "-o", "{tmp}/s.parquet", "--target", "tasks:math",
      "--k", "2", "--budget", "15", "--max-tokens", "32", "--quiet"],
     ["field 'budget'", "larger than the target set"]),
    ("select_share_zero", {"p.jsonl": GOOD},
     ["select", "--pool", "{p.jsonl}", "-o", "{tmp}/s.parquet", "--share", "0"],
     ["field 'target.share'", "greater than 0"]),
    ("select_k_above_pool", {"p.jsonl": GOOD},
     ["select", "--pool", "{p.jsonl}", "-o", "{tmp}/s.parquet", "--k", "50"],
     ["field 'k'", "pool size (20)"]),
    ("select_unknown_method", {"p.jsonl": GOOD},
     ["select", "--pool", "{p.jsonl}", "-o", "{tmp}/s.parquet", "--method", "best"],
     ["field 'method'", "best"]),
    ("select_unknown_target", {"p.jsonl": GOOD},
     ["select", "--pool", "{p.jsonl}", "-o", "{tmp}/s.parquet", "--target", "vibes"],
     ["field 'target'", "vibes"]),
    ("select_unknown_target_task", {"p.jsonl": GOOD},
     ["select", "--pool", "{p.jsonl}", "-o", "{tmp}/s.parquet", "--target", "tasks:nope",
      "--k", "2"], ["nope"]),
    ("select_output_not_parquet", {"p.jsonl": GOOD},
     ["select", "--pool", "{p.jsonl}", "-o", "{tmp}/s.csv"], ["s.csv", ".parquet"]),
    ("select_int_option_not_int", {"p.jsonl": GOOD},
     ["select", "--pool", "{p.jsonl}", "-o", "{tmp}/s.parquet", "--k", "ten"],
     ["'--k'", "valid integer"]),
    ("select_batch_size_zero", {"p.jsonl": GOOD},
     ["select", "--pool", "{p.jsonl}", "-o", "{tmp}/s.parquet", "--batch-size", "0"],
     ["field 'embed.batch_size'"]),
    ("select_encoder_unknown", {"p.jsonl": GOOD},
     ["select", "--pool", "{p.jsonl}", "-o", "{tmp}/s.parquet", "--encoder", "minilm-int9"],
     ["field 'embed.encoder'", "minilm-int9"]),
    # ---- an output is never an input, never inside a source folder, never silently replaced
    ("select_companion_is_a_shard", {"s/a.jsonl": GOOD, "s/b.jsonl": jsonl(row(50))},
     ["select", "--pool", "{tmp}/s/*.jsonl", "-o", "{tmp}/s/a.parquet"],
     ["s/a.jsonl", "overwrite the pool source"]),
    ("select_eval_file_malformed", {"p.jsonl": GOOD},
     ["select", "--pool", "{p.jsonl}", "-o", "{tmp}/s.parquet", "--eval-file", "mine:d.jsonl"],
     ["field 'eval-file'", "NAME:DATA.jsonl:TEMPLATES.yaml"]),
    ("select_eval_file_missing", {"p.jsonl": GOOD, "t.yaml": GOOD_T},
     ["select", "--pool", "{p.jsonl}", "-o", "{tmp}/s.parquet", "--eval-file",
      "mine:{tmp}/nope.jsonl:{t.yaml}:yes,no"], ["nope.jsonl", "field 'eval-file'", "not found"]),
    ("select_companion_is_an_eval_file", {"p.jsonl": GOOD, "s.jsonl": NLI, "t.yaml": GOOD_T},
     ["select", "--pool", "{p.jsonl}", "-o", "{tmp}/s.parquet", "--eval-file",
      "mine:{s.jsonl}:{t.yaml}:yes,no"], ["s.jsonl", "input"]),
    ("select_output_exists", {"p.jsonl": GOOD, "s.quality.json": "{}"},
     ["select", "--pool", "{p.jsonl}", "-o", "{tmp}/s.parquet"],
     ["s.quality.json", "exists", "--overwrite"]),
    ("select_output_is_a_folder", {"p.jsonl": GOOD, "s.parquet/x": "x"},
     ["select", "--pool", "{p.jsonl}", "-o", "{tmp}/s.parquet"],
     ["s.parquet", "cannot write: Is a directory"]),
    ("export_output_is_a_shard_of_the_glob", {"s/a.jsonl": GOOD, "s/b.jsonl": jsonl(row(50))},
     ["pool", "export", "{tmp}/s/*.jsonl", "-o", "{tmp}/s/a.jsonl", "--format", "messages"],
     ["s/a.jsonl", "overwrite the pool source"]),
    ("export_output_exists", {"p.jsonl": GOOD, "o.jsonl": "x\n"},
     ["pool", "export", "{p.jsonl}", "-o", "{tmp}/o.jsonl"], ["o.jsonl", "exists", "--overwrite"]),
    ("build_from_glob_output_is_a_shard", {"pq/a.parquet": parquet(pa.table({
        "uid": ["z"], "task": ["t"], "prompt": ["p"], "target": ["x"]}))},
     ["pool", "build", "--from", "{tmp}/pq/*.parquet", "-o", "{tmp}/pq/a.parquet"],
     ["pq/a.parquet", "overwrite the pool source"]),
    ("build_from_glob_output_matches", {"pq/a.parquet": parquet(pa.table({
        "uid": ["z"], "task": ["t"], "prompt": ["p"], "target": ["x"]}))},
     ["pool", "build", "--from", "{tmp}/pq/*.parquet", "-o", "{tmp}/pq/all.parquet"],
     ["pq/all.parquet", "matches the pool source pattern"]),
    ("build_from_folder_output_inside", {"s/a.jsonl": GOOD},
     ["pool", "build", "--from", "{s}", "-o", "{tmp}/s/all.parquet"],
     ["s/all.parquet", "inside the pool source folder"]),
    ("build_output_exists", {"o.parquet": "x"},
     ["pool", "build", "--bigbench", "none", "-o", "{tmp}/o.parquet"],
     ["o.parquet", "exists", "--overwrite"]),
    ("build_output_is_dataset_file", {"d.jsonl": NLI, "t.yaml": GOOD_T},
     ["pool", "build", "--bigbench", "none", "--no-default-datasets", "--dataset",
      "d:{d.jsonl}:{t.yaml}", "-o", "{t.yaml}"], ["t.yaml", ".parquet"]),
    ("train_data_inside_output", {"out/rows.jsonl": GOOD},
     ["train", "--data", "{tmp}/out/rows.jsonl", "-o", "{tmp}/out"],
     ["out", "rows.jsonl", "inside the output folder"]),
    ("train_output_is_a_file", {"rows.jsonl": GOOD, "model": "x"},
     ["train", "--data", "{rows.jsonl}", "-o", "{tmp}/model"], ["model", "not a folder"]),
    ("evaluate_output_exists", {"ev/metrics.json": "{}"},
     ["evaluate", "--tasks", "rte", "-o", "{tmp}/ev"], ["metrics.json", "exists", "--overwrite"]),
    # ---- sweeps (all before any work; budgets against the target set: tests/test_sweep.py)
    ("sweep_budget_malformed", {"c.yaml": CFG}, ["sweep", "{c.yaml}", "--budgets", "1%,0.5pct"],
     ["field 'sweep.budgets'", "'0.5pct'"]),
    ("sweep_budget_duplicate", {"c.yaml": CFG}, ["sweep", "{c.yaml}", "--budgets", "1%,all,1%"],
     ["field 'sweep.budgets'", "duplicate budget '1%'"]),
    ("sweep_budget_above_100_percent", {"c.yaml": CFG},
     ["sweep", "{c.yaml}", "--budgets", "150%"], ["field 'sweep.budgets'", "'150%'"]),
    ("sweep_budget_zero_in_block", {"c.yaml": CFG + "sweep: {budgets: [0, all]}\n"},
     ["sweep", "{c.yaml}"], ["c.yaml:3", "field 'sweep.budgets'", "got 0"]),
    ("sweep_budgets_empty", {"c.yaml": CFG}, ["sweep", "{c.yaml}", "--budgets", " , "],
     ["field 'sweep.budgets'", "empty list"]),
    ("sweep_methods_empty_block", {"c.yaml": CFG + "sweep: {methods: []}\n"},
     ["sweep", "{c.yaml}"], ["c.yaml:3", "field 'sweep.methods'", "empty list of methods"]),
    ("sweep_unknown_method", {"c.yaml": CFG}, ["sweep", "{c.yaml}", "--methods", "kcenter,best"],
     ["field 'sweep.methods'", "unknown sweep method 'best'"]),
    ("sweep_method_without_budget", {"c.yaml": CFG}, ["sweep", "{c.yaml}", "--methods", "all"],
     ["field 'sweep.methods'", "'all'", "budget 'all'"]),
    ("sweep_duplicate_method", {"c.yaml": CFG},
     ["sweep", "{c.yaml}", "--methods", "random,kcenter,random"],
     ["field 'sweep.methods'", "duplicate method 'random'"]),
    ("sweep_duplicate_seed", {"c.yaml": CFG}, ["sweep", "{c.yaml}", "--seeds", "0,1,0"],
     ["field 'sweep.seeds'", "duplicate seed '0'"]),
    ("sweep_seed_not_int", {"c.yaml": CFG}, ["sweep", "{c.yaml}", "--seeds", "0,one"],
     ["field 'sweep.seeds'", "'0,one'"]),
    ("sweep_method_bad_scope", {"c.yaml": CFG},
     ["sweep", "{c.yaml}", "--methods", "random,kcenter@everywhere"],
     ["field 'sweep.methods'", "'kcenter@everywhere'", "'@pool'"]),
    ("sweep_unknown_block_key", {"c.yaml": CFG + "sweep: {budget: [1%]}\n"},
     ["sweep", "{c.yaml}"], ["c.yaml:3", "field 'sweep.budget'"]),
    ("pool_build_bad_template_mode", {}, ["pool", "build", "--templates", "some",
                                          "-o", "{tmp}/o.parquet"], ["field 'templates'"]),
    ("pool_build_output_not_parquet", {}, ["pool", "build", "-o", "{tmp}/o.jsonl"],
     ["o.jsonl", ".parquet"]),
    ("pool_export_unknown_format", {"p.jsonl": GOOD},
     ["pool", "export", "{p.jsonl}", "-o", "{tmp}/o.jsonl", "--format", "alpaca"],
     ["field 'format'", "alpaca"]),
    # ---- outputs the OS refuses (a full disk and read-only folders: tests/test_faults.py)
    ("pool_export_onto_folder", {"p.jsonl": GOOD, "o.jsonl/keep": "x"},
     ["pool", "export", "{p.jsonl}", "-o", "{o.jsonl}"],
     ["o.jsonl: cannot write: Is a directory"]),
    ("pool_export_parent_is_file", {"p.jsonl": GOOD, "f": "x"},
     ["pool", "export", "{p.jsonl}", "-o", "{f}/o.jsonl"],
     ["f/o.jsonl: cannot write: Not a directory", "f is a file"]),
    ("pool_export_grandparent_is_file", {"p.jsonl": GOOD, "f": "x"},
     ["pool", "export", "{p.jsonl}", "-o", "{f}/a/o.jsonl"],
     ["f/a/o.jsonl: cannot write: Not a directory", "f is a file"]),
    ("pool_build_onto_folder", {"s/a.jsonl": GOOD, "o.parquet/keep": "x"},
     ["pool", "build", "--from", "{s}", "-o", "{o.parquet}"],
     ["o.parquet: cannot write: Is a directory"]),
    ("pool_build_parent_is_file", {"d.jsonl": NLI, "t.yaml": GOOD_T, "f": "x"},
     ["pool", "build", "--bigbench", "none", "--no-default-datasets", "--dataset",
      "d:{d.jsonl}:{t.yaml}", "-o", "{f}/o.parquet"],
     ["f/o.parquet: cannot write: Not a directory", "f is a file"]),
    ("run_runs_dir_is_file", {"c.yaml": CFG, "f": "x"}, ["run", "{c.yaml}", "--runs-dir", "{f}"],
     ["f/c: cannot write: Not a directory", "f is a file"]),
    ("train_output_parent_is_file", {"p.jsonl": GOOD, "f": "x"},
     ["train", "--data", "{p.jsonl}", "-o", "{f}/m"],
     ["f/m: cannot write: Not a directory", "f is a file"]),
    ("train_output_folder_holds_other_files", {"p.jsonl": GOOD, "m/notes.txt": "x"},
     ["train", "--data", "{p.jsonl}", "-o", "{m}"], ["m", "holds files but no trained model"]),
    ("cli_unknown_option", {}, ["pool", "info", "--colour", "x.jsonl"], ["--colour"]),
]


def _materialise(tmp: Path, files: dict) -> dict[str, str]:
    paths = {"tmp": str(tmp)}
    for name, content in files.items():
        p = tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if callable(content):
            content(p)
        elif isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")
        paths[name] = str(p)
        paths.setdefault(name.split("/")[0], str(tmp / name.split("/")[0]))
    return paths


def _fill(arg: str, paths: dict[str, str]) -> str:
    for key, value in paths.items():
        arg = arg.replace("{" + key + "}", value)
    return arg


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its bytes (None for a folder): an input left unchanged
    is unchanged byte for byte."""
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
            for p in root.rglob("*")}


SLOW = {"select_budget_above_target_set"}  # embeds 20 rows: only caught after clustering


@pytest.mark.parametrize("case", [
    pytest.param(c, id=f"bad_input-{c[0]}", marks=[pytest.mark.slow] if c[0] in SLOW else [])
    for c in CASES])
def test_bad_input(case, tmp_path, capsys, monkeypatch):
    _, files, argv, fragments = case
    work = tmp_path / "w"
    work.mkdir()
    paths = _materialise(work, files)
    monkeypatch.chdir(work)  # `coretune run` would put runs/ here
    before = _tree(work)
    with pytest.raises(SystemExit) as exit_info:
        main([_fill(a, paths) for a in argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("coretune: error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert _tree(work) == before, "files left behind"


def test_shards_that_disagree_on_a_type_get_one_answer_everywhere(tmp_path, capsys,
                                                                  monkeypatch):
    """Every command that reads the pool, `coretune run` included: the same line, exit 2."""
    _materialise(tmp_path, LABEL_TYPES)
    (tmp_path / "c.yaml").write_text("name: c\nseeds: [0]\npool: {path: s}\n")
    monkeypatch.chdir(tmp_path)
    answers = []
    for argv in (["pool", "info", "s"], ["pool", "validate", "s"],
                 ["pool", "build", "--from", "s", "-o", "out.parquet"],
                 ["pool", "export", "s", "-o", "o.jsonl"],
                 ["select", "--pool", "s", "-o", "sel.parquet"], ["run", "c.yaml", "-q"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        answers.append(capsys.readouterr().err.splitlines()[-1])
    assert len(set(answers)) == 1, answers
    assert all(f in answers[0] for f in LABEL_ERROR)
    assert not (tmp_path / "runs").exists()  # refused before any stage, nothing left


def test_bad_input_corpus_size():
    assert len({c[0] for c in CASES}) == len(CASES) >= 121


@pytest.mark.parametrize("name", ["pool_non_utf8_jsonl", "template_unsafe_jinja",
                                  "config_unknown_key"])
def test_bad_input_subprocess(cli, tmp_path, name):
    """The same cases through the installed console entry point, in a fresh process."""
    _, files, argv, fragments = next(c for c in CASES if c[0] == name)
    paths = _materialise(tmp_path, files)
    before = _tree(tmp_path)
    proc = cli(*[_fill(a, paths) for a in argv])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert all(f in proc.stderr for f in fragments)
    assert _tree(tmp_path) == before
