import json

import numpy as np
import pytest

from coretune.data.pool import Pool
from coretune.errors import CoretuneError
from coretune.models import encode_prompt, encode_target, load_tokenizer
from coretune.train import IGNORE, TrainConfig, encode_example, epoch_order, train
from coretune.train.data import make_batch, micro_batches, rows_trained, step_rows


def _rows(n=8):
    facts = [("The sky is blue.", "Yes"), ("Fish can fly.", "No"), ("Water is wet.", "Yes"),
             ("Stones are soft.", "No")]
    return [{"prompt": f"Statement: {facts[i % 4][0]} Is it true? Yes or no?",
             "target": facts[i % 4][1]} for i in range(n)]


def test_encode_example_masks_prompt_and_cuts_its_left_side():
    tok = load_tokenizer("default")
    prompt = "word " * 100 + "Question at the end?"
    ids, labels = encode_example(tok, prompt, "Yes", max_length=32)
    target = encode_target(tok, "Yes") + [tok.eos_token_id]
    assert len(ids) == len(labels) == 32
    assert ids[-len(target):] == target and labels[-len(target):] == target
    assert all(x == IGNORE for x in labels[:-len(target)])
    assert ids[:-len(target)] == encode_prompt(tok, prompt)[-(32 - len(target)):]
    short_ids, short_labels = encode_example(tok, "Hi?", "No", max_length=32)
    assert short_ids == encode_prompt(tok, "Hi?") + encode_target(tok, "No") + [tok.eos_token_id]


def test_epoch_order_is_seeded():
    assert (epoch_order(10, 0, 1) == epoch_order(10, 0, 1)).all()
    assert not (epoch_order(10, 0, 1) == epoch_order(10, 0, 2)).all()


def _grad_norms(lm, names):
    params = dict(lm.named_parameters())
    return {n: float(params[n].grad.norm()) for n in names}


@pytest.mark.parametrize("lora", [False, True])
def test_target_logits_give_the_full_logit_loss_and_gradients(lora):
    """Logits only at the target positions: same loss (1e-5) and gradients (1e-4 relative)
    as logits at every position, on one padded batch of the real model."""
    import torch

    from coretune.models import load_model
    from coretune.train.loss import full_logit_loss, supports_target_logits, target_loss

    lm, tok = load_model("default", device="cpu", dtype=torch.float32, for_training=True)
    if lora:
        from peft import LoraConfig, get_peft_model

        lm = get_peft_model(lm, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05,
                                           target_modules="all-linear", task_type="CAUSAL_LM"))
    assert supports_target_logits(lm)
    rows = _rows(4)
    rows[1]["target"] = "No, because fish have no wings."  # rows of different lengths: padding
    examples = [encode_example(tok, r["prompt"], r["target"], 64) for r in rows]
    ids, labels, mask = make_batch(examples, tok.pad_token_id)
    n_target = int((labels != IGNORE).sum())
    # LoRA's A matrices get no gradient at the start (B is zero): look at the others.
    trainable = [n for n, p in lm.named_parameters() if p.requires_grad and "lora_A" not in n]
    names = [trainable[0], trainable[len(trainable) // 2], trainable[-1]]
    results = []
    for loss_fn in (full_logit_loss, target_loss):
        torch.manual_seed(0)  # the same LoRA dropout masks in both passes
        lm.zero_grad(set_to_none=True)
        loss = loss_fn(lm, ids, labels, mask, n_target)
        loss.backward()
        results.append((loss.item(), _grad_norms(lm, names)))
    (full, full_grads), (ours, our_grads) = results
    assert abs(full - ours) <= 1e-5 * max(1.0, abs(full))
    for n in names:
        assert full_grads[n] > 0
        assert abs(our_grads[n] - full_grads[n]) <= 1e-4 * full_grads[n], n


def test_micro_batches_cover_the_step_longest_first():
    picks = step_rows(0, 10, 6, seed=0)
    assert len(picks) == 6 and len(set(picks)) == 6
    assert sorted(step_rows(1, 10, 6, seed=0) + picks) == list(range(10))  # short last step
    lengths = [5, 9, 1, 7, 3, 8, 2, 6, 4, 10]
    chunks = micro_batches(picks, lengths, 4)
    assert [len(c) for c in chunks] == [4, 2] and sorted(sum(chunks, [])) == sorted(picks)
    flat = [lengths[i] for c in chunks for i in c]
    assert flat == sorted(flat, reverse=True)


def test_steps_wrap_epochs_short_or_full():
    """max_steps past an epoch wraps into the next epoch's seeded order. By default each epoch
    ends in a short step: at batch 8, 100 steps over 5, 13, 25 and 392 rows train 500, 650,
    625 and 800 rows (5 a step; 8 then 5; 8, 8, 8 then 1). `full`: every step takes 8, the
    order running straight on into the next epoch's (a row twice in a step when n < 8)."""
    assert [len(step_rows(s, 25, 8, 0)) for s in range(8)] == [8, 8, 8, 1] * 2
    assert [len(step_rows(s, 13, 8, 0)) for s in range(4)] == [8, 5, 8, 5]
    for n in (1, 5, 13, 25, 392):
        stream = np.concatenate([epoch_order(n, 3, e) for e in range(-(-800 // n))]).tolist()
        full = [step_rows(s, n, 8, 3, full=True) for s in range(100)]
        assert sum(full, []) == stream[:800]
        short = [step_rows(s, n, 8, 3) for s in range(100)]
        assert sorted(sum(short[:-(-n // 8)], [])) == list(range(n))  # one epoch, each row once
        assert rows_trained(100, n, 8, full=True) == 800
        assert rows_trained(100, n, 8) == sum(map(len, short))
        assert [rows_trained(s, n, 8) for s in range(1, 7)] == [
            sum(map(len, short[:s])) for s in range(1, 7)]
    assert [rows_trained(100, n, 8) for n in (5, 13, 25, 392)] == [500, 650, 625, 800]


def test_full_steps_is_in_the_settings_only_when_on():
    """Off, the settings (train keys, train_config.json) are those of runs made before it
    (`precision` too, at its default)."""
    off, on = TrainConfig(), TrainConfig(full_steps=True)
    assert off.settings() == {k: v for k, v in off.model_dump().items()
                              if k not in ("full_steps", "precision", "pass_tokens", "packing")}
    assert TrainConfig(precision="float32").settings()["precision"] == "float32"
    assert on.settings(exclude={"seed"})["full_steps"] is True and "seed" not in on.settings(
        exclude={"seed"})


def test_full_steps_train_the_asked_steps_of_full_size(tmp_path):
    """3 rows, batch 2, 2 epochs: 3 full steps (6 rows), not 2 + 2 short ones."""
    cfg = TrainConfig(epochs=2, batch_size=2, max_length=48, full_steps=True, save_every=100)
    out = train(_rows(3), "default", cfg, tmp_path / "m", quiet=True)
    state = json.loads((out / "train_state.json").read_text())
    assert (state["steps"], state["rows"]) == (3, 3)
    assert json.loads((out / "train_config.json").read_text())["full_steps"] is True
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]


def test_bad_rows_and_bad_model_fail_before_writing(tmp_path):
    with pytest.raises(CoretuneError, match="non-empty target"):
        train([{"prompt": "x", "target": ""}], "default", TrainConfig(), tmp_path / "a")
    with pytest.raises(CoretuneError, match="model folder not found"):
        train(_rows(), str(tmp_path / "nope"), TrainConfig(), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_full_finetune_lowers_loss_and_saves_a_loadable_model(tmp_path):
    from coretune.evaluate import Request, score_requests
    from coretune.models import load_model

    cfg = TrainConfig(max_steps=4, batch_size=4, lr=1e-4, max_length=64, warmup_ratio=0.0,
                      save_every=100)
    out = train(_rows(), "default", cfg, tmp_path / "m", quiet=True)
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 5))
    assert log[-1]["loss"] < log[0]["loss"] / 2
    assert all(r["tokens_per_s"] > 0 and r["lr"] >= 0 for r in log)
    assert not (out / "checkpoint").exists()
    model, tok = load_model(out)
    # The tuned model now prefers the trained answer.
    req = Request(encode_prompt(tok, _rows()[1]["prompt"]),
                  [encode_target(tok, "Yes"), encode_target(tok, "No")])
    (scores,) = score_requests(model, [req], pad_id=tok.pad_token_id)
    assert scores[1] > scores[0]
    # Same command again: nothing to do, nothing rewritten.
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    train(_rows(), "default", cfg, out, quiet=True)
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime


def test_precision_auto_is_bf16_on_a_gpu_or_a_cpu_with_native_bf16():
    import torch

    from coretune.train.loop import cpu_has_bf16, uses_bf16

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert [uses_bf16(p, cpu) for p in ("float32", "bf16")] == [False, True]
    assert [uses_bf16(p, gpu) for p in ("float32", "bf16", "auto")] == [False, True, True]
    assert uses_bf16("auto", cpu) is cpu_has_bf16()


def test_bf16_steps_follow_float32_steps(tmp_path):
    """Two steps under bf16 autocast: the precision is recorded, the first step's loss (same
    weights) is the float32 run's to within bf16 rounding, and the step lowers it as much
    (weights, gradients and AdamW stay float32)."""
    losses = {}
    for precision in ("float32", "bf16"):
        cfg = TrainConfig(max_steps=2, batch_size=4, lr=1e-4, max_length=64, save_every=100,
                          precision=precision)
        out = train(_rows(), "default", cfg, tmp_path / precision, quiet=True)
        assert json.loads((out / "train_state.json").read_text())["precision"] == precision
        losses[precision] = [json.loads(x)["loss"]
                             for x in (out / "train_log.jsonl").read_text().splitlines()]
    (a0, a1), (b0, b1) = losses["float32"], losses["bf16"]
    assert b0 == pytest.approx(a0, rel=0.01) and b0 != a0  # it did run in bf16
    assert b1 < b0 / 2 and b1 == pytest.approx(a1, rel=0.25)


class _Stop(Exception):
    pass


@pytest.mark.slow
def test_lora_run_resumes_from_checkpoint_to_the_same_weights(tmp_path):
    from safetensors.torch import load_file

    pool = Pool.from_records([{"uid": str(i), "task": "t", **r} for i, r in enumerate(_rows())])
    cfg = TrainConfig(lora=True, max_steps=4, batch_size=2, grad_accum=2, lr=1e-3,
                      max_length=48, save_every=2, seed=1)
    whole = train(pool, "default", cfg, tmp_path / "whole", quiet=True)

    def stop_at_3(step, loss):
        if step == 3:
            raise _Stop

    with pytest.raises(_Stop):
        train(pool, "default", cfg, tmp_path / "cut", quiet=True, on_step=stop_at_3)
    progress = json.loads((tmp_path / "cut.partial" / "checkpoint" / "progress.json")
                          .read_text())
    assert progress["step"] == 2
    assert not (tmp_path / "cut").exists()  # no model folder until the run is done
    with pytest.raises(CoretuneError, match="different training run"):
        train(pool, "default", cfg.model_copy(update={"lr": 2e-3}), tmp_path / "cut",
              quiet=True)
    resumed = train(pool, "default", cfg, tmp_path / "cut", quiet=True)
    assert (resumed / "adapter_config.json").is_file()
    a = load_file(whole / "adapter_model.safetensors")
    b = load_file(resumed / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a)
    log_a = (whole / "train_log.jsonl").read_text().splitlines()
    log_b = (resumed / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["loss"] for x in log_a] == [json.loads(x)["loss"] for x in log_b]
    assert not (tmp_path / "cut.partial").exists()


def _same_run(a, b):
    from safetensors.torch import load_file

    wa, wb = (load_file(d / "adapter_model.safetensors") for d in (a, b))
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    la, lb = ([json.loads(x)["loss"] for x in (d / "train_log.jsonl").read_text().splitlines()]
              for d in (a, b))
    assert la == lb and len(la) == 4


@pytest.mark.slow
def test_damaged_checkpoints_are_passed_over_to_the_same_weights(tmp_path, capsys):
    """A run stopped after its step-2 checkpoint, then the checkpoint damaged (as by kill -9
    or a full disk): one warning line naming it, and the re-run ends with the weights and
    losses of an uninterrupted run, from the checkpoint before it or from step 0."""
    import shutil

    pool = Pool.from_records([{"uid": str(i), "task": "t", **r} for i, r in enumerate(_rows())])
    cfg = TrainConfig(lora=True, max_steps=4, batch_size=2, grad_accum=2, lr=1e-3,
                      max_length=48, save_every=2, seed=1)
    whole = train(pool, "default", cfg, tmp_path / "whole", quiet=True)

    def stop_at_3(step, loss):
        if step == 3:
            raise _Stop

    with pytest.raises(_Stop):
        train(pool, "default", cfg, tmp_path / "a", quiet=True, on_step=stop_at_3)
    work = tmp_path / "a.partial"
    shutil.copytree(work, tmp_path / "b.partial")
    # a: one flipped byte in the weights (they would still load), and the checkpoint before
    # it kept at .checkpoint.old as a crash while it was replaced leaves it
    shutil.copytree(work / "checkpoint", work / ".checkpoint.old")
    weights = work / "checkpoint" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    # b: state.pt cut short, nothing else to resume from
    state = tmp_path / "b.partial" / "checkpoint" / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    capsys.readouterr()

    for name, damaged, steps_run in (("a", weights, [3, 4]), ("b", state, [1, 2, 3, 4])):
        steps = []
        out = train(pool, "default", cfg, tmp_path / name, quiet=True,
                    on_step=lambda step, loss, seen=steps: seen.append(step))
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert err[0].startswith("coretune: warning: ") and str(damaged.parent) in err[0]
        assert f"{damaged.name} does not match its checksum" in err[0]
        assert steps == steps_run
        _same_run(whole, out)
        assert not (tmp_path / f"{name}.partial").exists()


def test_cli_train_bad_data_fails_cleanly(cli, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"uid": "a", "task": "t", "prompt": "p"}\n')
    r = cli("train", "--data", bad, "-o", tmp_path / "m", "--quiet")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "m").exists()


@pytest.mark.slow
def test_cli_micro_batches_and_checkpointing_keep_the_loss(cli, tmp_path):
    """`coretune train --micro-batch-size 1 --gradient-checkpointing` takes the same steps
    with the same losses as whole batches without checkpointing: memory only."""
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"uid": str(i), "task": "t", **r}) + "\n"
                            for i, r in enumerate(_rows())))
    common = ["--max-steps", "2", "--batch-size", "4", "--max-length", "64", "--quiet",
              "--precision", "float32"]  # exact arithmetic: only the grouping differs
    cli("train", "--data", data, "-o", tmp_path / "a", *common, check=True)
    cli("train", "--data", data, "-o", tmp_path / "b", *common, "--micro-batch-size", "1",
        "--gradient-checkpointing", check=True)
    losses = [[json.loads(x)["loss"] for x in (tmp_path / d / "train_log.jsonl").read_text()
               .splitlines()] for d in ("a", "b")]
    assert len(losses[0]) == 2 and losses[0] == pytest.approx(losses[1], rel=1e-4)
