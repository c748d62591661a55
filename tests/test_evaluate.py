import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from coretune.data.sources import eval_datasets
from coretune.errors import CoretuneError
from coretune.evaluate import (
    Request,
    build_items,
    evaluate,
    gold_logloss,
    per_example_accuracy,
    per_example_logloss,
    resolve_tasks,
    score_requests,
    score_unbatched,
)
from coretune.models import encode_prompt, encode_target, load_model

TEMPLATES = """dataset: toy
templates:
  a1: !Template
    answer_choices: yes ||| it is not possible to tell ||| no
    id: a1
    jinja: '{{premise}} Question: {{hypothesis}} Yes, no or maybe? ||| {{answer_choices[label]}}'
    name: ynm
  a2: !Template
    answer_choices: null
    id: a2
    jinja: '{{premise}} ||| {{hypothesis}}'
    name: generate
"""


@pytest.fixture(scope="module")
def lm():
    return load_model("default")


def _real_requests(tok, n_per_task=2):
    """Real prompts of RTE (2 one-token options), CB and ANLI (3 options, multi-token)."""
    reqs = []
    for name in ("rte", "cb", "anli_r1"):
        items, _ = build_items(eval_datasets()[name], max_examples=n_per_task, max_templates=2)
        for it in items:
            reqs.append(Request(encode_prompt(tok, it.prompt),
                                [encode_target(tok, c) for c in it.choices]))
    # Options of uneven count and length in one batch.
    opts = ["yes, it is very hot indeed", "no"]
    reqs.append(Request(encode_prompt(tok, "Is fire hot?"), [encode_target(tok, o) for o in opts]))
    return reqs


@pytest.fixture(scope="module")
def reference(lm):
    """Requests and their scores computed one option at a time, without padding."""
    model, tok = lm
    reqs = _real_requests(tok)
    return reqs, [score_unbatched(model, r) for r in reqs]


@pytest.fixture(scope="module")
def batched(lm, reference):
    """The reference requests scored in batches of 8, with each padding side."""
    model, tok = lm
    return {side: score_requests(model, reference[0], pad_id=tok.pad_token_id, batch_size=8,
                                 padding_side=side) for side in ("left", "right")}


@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_scores_match_unbatched_reference(reference, batched, side):
    reqs, expected = reference
    assert len({len(r.prompt_ids) for r in reqs}) > 3  # real padding happens
    assert any(len(o) > 1 for r in reqs for o in r.option_ids)  # multi-token options too
    for got, want in zip(batched[side], expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_token_budget_batches_give_the_same_scores(lm, reference, batched, monkeypatch):
    """Batches of at most 300 padded prompt tokens (more short prompts a batch, fewer long
    ones): the scores of batch_size batches (1e-5 relative: float32 sums over other shapes)
    and of the unbatched reference."""
    from coretune.evaluate import scoring

    model, tok = lm
    reqs, expected = reference
    shapes, real = [], scoring._score_batch

    def spy(model, batch, *args):
        shapes.append([len(r.prompt_ids) for r in batch])
        return real(model, batch, *args)

    monkeypatch.setattr(scoring, "_score_batch", spy)
    budget = score_requests(model, reqs, pad_id=tok.pad_token_id, batch_tokens=300)
    assert sum(map(len, shapes)) == len(reqs) and len({len(b) for b in shapes}) > 1
    assert all(len(b) == 1 or len(b) * max(b) <= 300 for b in shapes)
    for got, same, want in zip(budget, batched["left"], expected, strict=True):
        np.testing.assert_allclose(got, same, rtol=1e-5)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_bootstrap_is_seeded_and_brackets_the_mean():
    from coretune.stats import average_interval, task_interval

    x = (np.random.default_rng(3).random(200) > 0.4).astype(float)
    one = task_interval([x])
    assert one == task_interval([x])
    assert one.lo < 100 * x.mean() < one.hi and one.hi - one.lo < 20
    avg = average_interval([{"a": x, "b": np.ones(50)}], ["a", "b"])
    assert avg.lo < 100 * (x.mean() + 1) / 2 < avg.hi


def test_gold_logloss_by_hand():
    # softmax of (-1, -2, -3): e^-1, e^-2, e^-3 = 0.36788, 0.13534, 0.04979 over their sum
    # 0.55301 -> p(option 1) = 0.24473, -log 0.24473 = 1.40761 nats
    assert gold_logloss(np.array([-1.0, -2.0, -3.0]), 1) == pytest.approx(1.40761, abs=1e-5)
    assert gold_logloss(np.array([-5.0, -5.0]), 0) == pytest.approx(np.log(2))  # a tie: log 2
    assert gold_logloss(np.array([-800.0, -900.0]), 1) == pytest.approx(100.0)  # no underflow


def test_per_example_logloss_averages_templates_and_reads_old_tables(tmp_path):
    import pyarrow as pa

    # example 0 under two templates, example 1 under one; options of 1 and 2 tokens
    rows = {"task": ["rte"] * 3, "example": [0, 0, 1], "label": [0, 1, 0],
            "logprob": [[-1.0, -3.0], [-1.0, -3.0], [-2.0, -2.0]],
            "n_tokens": [[1, 2], [1, 2], [1, 2]]}
    want_sum = [(gold_logloss(np.array([-1.0, -3.0]), 0)
                 + gold_logloss(np.array([-1.0, -3.0]), 1)) / 2, np.log(2)]
    got = per_example_logloss(pa.table(rows), length_norm=False)["rte"]
    np.testing.assert_allclose(got, want_sum)
    # by mean token log-prob the second option scores -1.5 and -1: the ranking the run used
    norm = per_example_logloss(pa.table(rows), length_norm=True)["rte"]
    assert norm[1] == pytest.approx(gold_logloss(np.array([-2.0, -1.0]), 0))
    path = tmp_path / "predictions.parquet"
    import pyarrow.parquet as pq

    pq.write_table(pa.table(rows), path)
    (tmp_path / "metrics.json").write_text(json.dumps({"length_norm": True}))
    np.testing.assert_allclose(per_example_logloss(path)["rte"], norm)  # read beside it
    assert per_example_logloss(pa.table({"task": ["rte"], "example": [0]})) == {}


def test_caps_sample_examples_with_seed_and_take_first_templates():
    ds = eval_datasets()["cb"]
    items, used = build_items(ds, max_examples=5, max_templates=2, seed=1)
    assert used["examples"] == 5 and used["examples_total"] == 56
    assert used["templates"] == ds.load_templates().with_choices().names[:2]
    assert len(items) == 10
    again, _ = build_items(ds, max_examples=5, max_templates=2, seed=1)
    assert [i.example for i in again] == [i.example for i in items]
    other, _ = build_items(ds, max_examples=5, max_templates=2, seed=2)
    assert {i.example for i in other} != {i.example for i in items}


def test_unknown_task_is_a_clear_error():
    with pytest.raises(CoretuneError, match="unknown task 'mnli'"):
        resolve_tasks("rte,mnli")


def _toy_files(tmp_path, label="contradiction"):
    rows = [
        {"premise": "The cat sat on the mat.", "hypothesis": "A cat is sitting.", "label": 0},
        {"premise": "It rained all day.", "hypothesis": "The ground stayed dry.", "label": label},
        {"premise": "He bought a car.", "hypothesis": "He owns a vehicle.", "label": "entailment"},
    ]
    data = tmp_path / "toy.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tpl = tmp_path / "templates.yaml"
    tpl.write_text(TEMPLATES)
    return data, tpl


def test_evaluate_user_file_writes_predictions_and_metrics(lm, tmp_path):
    from coretune.evaluate import parse_eval_file

    data, tpl = _toy_files(tmp_path)
    ds = parse_eval_file(f"toy:{data}:{tpl}:entailment,neutral,contradiction")
    out = tmp_path / "out"
    m = evaluate(lm, [ds], output_dir=out, quiet=True)
    t = m["tasks"]["toy"]
    assert t["templates"] == ["ynm"]  # the template without choices is not scored
    assert t["n_examples"] == 3 and t["n_items"] == 3
    preds = pq.read_table(out / "predictions.parquet").to_pandas()
    assert list(preds["label"]) == [0, 2, 0]
    assert all(len(s) == 3 for s in preds["logprob"])
    assert (preds["pred"] == [int(np.argmax(s)) for s in preds["logprob"]]).all()
    assert t["mean"] == pytest.approx(100 * preds["correct"].mean())
    assert per_example_accuracy(out / "predictions.parquet")["toy"].shape == (3,)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["tasks"]["toy"]["ci95"] == t["ci95"]
    # gold-option log-loss of the scores the prediction ranks by, and its probability
    want = [gold_logloss(np.array(s), y) for s, y in zip(preds["logprob"], preds["label"],
                                                          strict=True)]
    np.testing.assert_allclose(preds["logloss"], want)
    np.testing.assert_allclose(preds["p_gold"], np.exp(-np.array(want)))
    assert t["logloss"] == pytest.approx(np.mean(want)) and saved["avg"]["logloss"] == t["logloss"]
    lo, hi = t["logloss_ci95"]
    assert lo <= t["logloss"] <= hi and t["p_gold"] == pytest.approx(np.exp(-np.array(want)).mean())
    # length normalisation ranks by mean token log-prob of the same scores
    m2 = evaluate(lm, [ds], length_norm=True, quiet=True, output_dir=tmp_path / "norm")
    p2 = pq.read_table(tmp_path / "norm" / "predictions.parquet").to_pandas()
    np.testing.assert_allclose(np.stack(p2["logprob"]), np.stack(preds["logprob"]), atol=1e-4)
    want = [int(np.argmax(np.array(s) / np.array(n)))
            for s, n in zip(p2["logprob"], p2["n_tokens"], strict=True)]
    assert list(p2["pred"]) == want
    assert m2["length_norm"] is True
    normed = [gold_logloss(np.array(s) / np.array(n), y)
              for s, n, y in zip(p2["logprob"], p2["n_tokens"], p2["label"], strict=True)]
    np.testing.assert_allclose(p2["logloss"], normed)
    np.testing.assert_allclose(per_example_logloss(p2.drop(columns="logloss"), True)["toy"],
                               normed)  # recomputed from the scores: the same numbers


def test_cli_eval_file_with_unknown_label_fails_cleanly(cli, tmp_path):
    data, tpl = _toy_files(tmp_path, label="maybe")
    out = tmp_path / "out"
    r = cli("evaluate", "--tasks", "", "--eval-file",
            f"toy:{data}:{tpl}:entailment,neutral,contradiction", "-o", out)
    assert r.returncode == 2
    assert "unknown label 'maybe'" in r.stderr and "toy.jsonl:2" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_unknown_task_fails_cleanly(cli, tmp_path):
    r = cli("evaluate", "--tasks", "rte,boolq", "-o", tmp_path / "out")
    assert r.returncode == 2 and "unknown task 'boolq'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_cli_evaluate_prints_row_and_caps(cli, tmp_path):
    r = cli("evaluate", "--tasks", "cb", "--max-examples", "4", "--max-templates", "1",
            "--quiet", "-o", tmp_path / "ev", check=True)
    assert "max_examples=4" in r.stderr and "max_templates=1" in r.stderr
    assert r.stdout.strip().startswith("CB ") and "Avg" in r.stdout
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["tasks"]["cb"]["n_items"] == 4
    loss = r.stdout.strip().splitlines()[1]  # the second row: log-loss, nats
    assert loss.startswith(f"log-loss | CB {m['tasks']['cb']['logloss']:.3f} [")


def test_cli_eval_file_is_selectable_by_name(cli, tmp_path):
    data, tpl = _toy_files(tmp_path)
    spec = f"toy:{data}:{tpl}:entailment,neutral,contradiction"
    r = cli("evaluate", "--eval-file", spec, "--tasks", "toy,cb", "--max-examples", "2",
            "--max-templates", "1", "--quiet", "-o", tmp_path / "ev", check=True)
    assert r.stdout.strip().startswith("CB ") and "toy" in r.stdout
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert sorted(m["tasks"]) == ["cb", "toy"]


def test_a_sets_own_cap_samples_only_that_set(lm, tmp_path):
    """`max_examples_by_task`: the named set is sampled (the smaller of its cap and
    max_examples), the others keep the global cap; the sample is the same as build_items'."""
    from coretune.evaluate import parse_eval_file

    data, tpl = _toy_files(tmp_path)
    toy = parse_eval_file(f"toy:{data}:{tpl}:entailment,neutral,contradiction")
    cb = eval_datasets()["cb"]
    m = evaluate(lm, [toy, cb], max_examples=3, max_examples_by_task={"cb": 2},
                 max_templates=1, quiet=True, output_dir=tmp_path / "out")
    assert m["tasks"]["toy"]["n_examples"] == 3 and m["tasks"]["cb"]["n_examples"] == 2
    assert m["max_examples_by_task"] == {"cb": 2}
    preds = pq.read_table(tmp_path / "out" / "predictions.parquet").to_pandas()
    items, _ = build_items(cb, max_examples=2, max_templates=1, seed=0)
    assert sorted(preds[preds.task == "cb"].example) == sorted(i.example for i in items)
    m = evaluate(lm, [cb], max_examples=1, max_examples_by_task={"cb": 2}, max_templates=1,
                 quiet=True)
    assert m["tasks"]["cb"]["n_examples"] == 1  # the smaller cap wins
    with pytest.raises(CoretuneError, match="max_examples_by_task.cb"):
        evaluate(lm, [cb], max_examples_by_task={"cb": 0}, quiet=True)


def test_config_caps_must_name_an_evaluated_set():
    from coretune.config import validate

    with pytest.raises(CoretuneError, match="max_examples_by_task'.*names 'mnli'"):
        validate({"name": "t", "evaluate": {"tasks": ["rte"], "max_examples_by_task": {"mnli": 5}}})
    cfg = validate({"name": "t",
                    "evaluate": {"tasks": ["rte", "cb"], "max_examples_by_task": {"cb": 5}}})
    assert cfg.evaluate.caps_text() == "max_examples=all, cb<=5, max_templates=all"


def test_chat_template_scores_each_prompt_as_a_user_turn(lm, tmp_path):
    """`chat_template`: the prompt ids are the user turn through the template with the
    generation prompt, the option ids the assistant content as encode_chat tokenises it, and
    the scores the unbatched reference's on those ids."""
    from coretune.evaluate import encoders, parse_eval_file
    from coretune.evaluate.evaluator import CHAT_JOIN
    from coretune.models import encode_chat

    model, tok = lm
    data, tpl = _toy_files(tmp_path)
    ds = parse_eval_file(f"toy:{data}:{tpl}:entailment,neutral,contradiction")
    items, used = build_items(ds)
    assert used["templates"] == ["ynm"] and len(items) == 3  # one template, 3 examples
    prompt_ids, option_ids = encoders(tok, True, "default")
    for it in items:
        user = [{"role": "user", "content": it.prompt}]
        want = tok.apply_chat_template(user, add_generation_prompt=True)["input_ids"]
        assert prompt_ids(it.prompt) == list(want)
        for c in it.choices:
            reply = encode_chat(tok, [*user, {"role": "assistant", "content": c}])
            assert reply == (list(want), option_ids(c))
    m = evaluate(lm, [ds], chat_template=True, batch_size=2, quiet=True,
                 output_dir=tmp_path / "chat")
    assert m["join"] == CHAT_JOIN
    chat = pq.read_table(tmp_path / "chat" / "predictions.parquet").to_pandas()
    for it, got in zip(items, chat["logprob"], strict=True):
        ref = score_unbatched(model, Request(prompt_ids(it.prompt),
                                             [option_ids(c) for c in it.choices]))
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    plain = evaluate(lm, [ds], quiet=True, output_dir=tmp_path / "plain")
    assert plain["join"] != CHAT_JOIN
    scores = pq.read_table(tmp_path / "plain" / "predictions.parquet").column("logprob")
    assert not np.allclose(np.stack(scores.to_pylist()), np.stack(chat["logprob"]))


def test_chat_template_needs_a_model_with_one():
    from types import SimpleNamespace

    from coretune.evaluate import encoders

    with pytest.raises(CoretuneError, match="field 'chat_template': model 'plain' has no chat "
                                            "template"):
        encoders(SimpleNamespace(chat_template=None), True, "plain")
    encoders(SimpleNamespace(chat_template=None), False, "plain")  # the plain join needs none


def test_chat_template_is_in_the_evaluate_key_only_when_on():
    from coretune.config import EvaluateConfig

    off, on = EvaluateConfig(), EvaluateConfig(chat_template=True)
    assert "chat_template" not in off.key("default")
    assert on.key("default") == {**off.key("default"), "chat_template": True}


def test_batch_tokens_is_in_the_evaluate_key_only_when_set():
    """Unset, the evaluate stage's key is the one runs had before the option existed."""
    from coretune.config import EvaluateConfig

    plain = EvaluateConfig().key("m")
    assert "batch_tokens" not in plain
    assert EvaluateConfig(batch_tokens=4096).key("m") == {**plain, "batch_tokens": 4096}
