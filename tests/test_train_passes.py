"""How a step's rows are cut into forward/backward passes (micro-batches, a token budget,
packing) changes neither the step's loss nor its gradients nor the weights after a few steps:
the real default model in float32 on the CPU, against today's loop on the same rows."""

from __future__ import annotations

import contextlib

import pytest

from coretune.batching import budget_batches
from coretune.train import TrainConfig
from coretune.train.data import micro_batches, pack_batch

# Rows of different lengths (12 to 45 tokens), so padded passes pad and budgets bite.
FACTS = [("The sky is blue.", "Yes"),
         ("Fish can fly over the mountains every spring while birds swim.", "No, fish swim."),
         ("Water is wet.", "Yes"),
         ("Stones are soft, warm and taste of honey, say the people who have never touched "
          "one.", "No"),
         ("Snow is cold.", "Yes, it is cold."),
         ("Two and two make five.", "No, four.")]
ROWS = [{"prompt": f"Statement: {s} Is it true? Yes or no?", "target": t} for s, t in FACTS]
# float32 pinned: `auto` is bf16 autocast on a CPU with native bf16
BASE = TrainConfig(batch_size=6, max_length=64, lr=1e-4, warmup_ratio=0.0, save_every=100,
                   precision="float32")


def test_budget_batches_cut_sorted_rows_within_the_budget():
    lengths = [50, 40, 40, 30, 10, 10, 5]
    padded = budget_batches(lengths, 100)
    assert [list(r) for r in padded] == [[0, 1], [2, 3], [4, 5, 6]]  # 2x50, 2x40, 3x10
    packed = budget_batches(lengths, 100, packed=True)
    assert [list(r) for r in packed] == [[0, 1], [2, 3, 4, 5, 6]]  # 90, 95
    assert [list(r) for r in budget_batches([300, 20], 100)] == [[0], [1]]  # over: alone
    for budget in (1, 7, 64, 1000):
        for p in (False, True):
            runs = budget_batches(lengths, budget, packed=p)
            assert [i for r in runs for i in r] == list(range(len(lengths)))
            for r in runs:
                cost = sum(lengths[i] for i in r) if p else len(r) * max(lengths[i] for i in r)
                assert len(r) == 1 or cost <= budget
    assert budget_batches([], 10) == []
    with pytest.raises(ValueError):
        budget_batches(lengths, 0)


def test_token_passes_take_every_row_of_the_step_once():
    lengths = [9, 30, 12, 30, 4, 18, 25, 7]
    picks = [5, 1, 7, 3, 0, 6]
    for packed in (False, True):
        passes = micro_batches(picks, lengths, 2, tokens=40, packed=packed)
        assert sorted(i for c in passes for i in c) == sorted(picks)
        flat = [lengths[i] for c in passes for i in c]
        assert flat == sorted(flat, reverse=True)
    # the step's lengths, longest first: 30 30 25 18 9 7
    assert [len(c) for c in micro_batches(picks, lengths, 2, tokens=40)] == [1, 1, 1, 2, 1]
    assert [len(c) for c in micro_batches(picks, lengths, 2, tokens=40, packed=True)] == [
        1, 1, 1, 3]  # 30 | 30 | 25 | 18+9+7


def test_pack_batch_restarts_positions_and_drops_each_rows_first_label():
    ids, labels, positions = pack_batch([([1, 2, 3], [-100, 2, 3]), ([4, 5], [4, 5])])
    assert ids.tolist() == [[1, 2, 3, 4, 5]]
    assert positions.tolist() == [[0, 1, 2, 0, 1]]
    assert labels.tolist() == [[-100, 2, 3, -100, 5]]


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    from coretune.train.data import load_rows
    from coretune.train.loop import setup

    s = setup(BASE, tmp_path_factory.mktemp("passes") / "m", load_rows(ROWS), key="test")
    assert s.device.type == "cpu" and not s.bf16 and not s.fused  # today's CPU settings
    return s


def _step(s, cfg):
    """The loss and gradients of one step over every row, its passes as `cfg` cuts them."""
    from coretune.train.loop import accumulate

    s.cfg = cfg
    s.lm.zero_grad(set_to_none=True)
    loss, tokens = accumulate(s, list(range(len(s.examples))))
    return loss, tokens, {n: p.grad.detach().clone() for n, p in s.lm.named_parameters()}


def _relative(a, b) -> float:
    """max |a - b| / max |b| over one tensor."""
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


@contextlib.contextmanager
def float64(session):
    """The session's model in float64 for the block (float32 weights converted there and
    back: unchanged), with no gradients left over."""
    session.lm.double()
    try:
        yield
    finally:
        session.lm.zero_grad(set_to_none=True)
        session.lm.float()


@pytest.mark.slow
def test_passes_give_todays_step_loss_and_gradients(session):
    """A step cut into padded passes by a token budget, or packed: the loss of today's one
    padded pass within 1e-6 (the cross-entropy runs in float32) and every parameter's
    gradient within 1e-6 of that tensor's largest entry (measured: 1e-14).

    In float64, so that what is compared is the computation, not float32's rounding: in
    float32 the same gradients differ from float64's by up to 1.5e-4 (L2, relative) and 2e-3
    on the worst tensor (a norm weight, a sum over tokens that nearly cancels), and by as
    much between one padded pass and micro_batch_size=1, today's own options. Rows packed
    without their positions attend to each other and are far off."""
    import torch

    from coretune.train.loss import target_loss

    with float64(session):
        ref_loss, ref_tokens, ref = _step(session, BASE)
        assert ref_tokens == sum(len(x) for x, _ in session.examples)
        for update in ({"pass_tokens": 96}, {"packing": True, "pass_tokens": 80}):
            cfg = BASE.model_copy(update=update)
            lengths = [len(x) for x, _ in session.examples]
            assert len(micro_batches(list(range(6)), lengths, 6, cfg.pass_tokens,
                                     cfg.packing)) == 2
            loss, tokens, grads = _step(session, cfg)
            assert tokens == ref_tokens
            assert loss == pytest.approx(ref_loss, rel=1e-6), update
            worst = max(_relative(grads[n], ref[n]) for n in ref)
            assert worst < 1e-6, (update, worst)
        ids, labels, _ = pack_batch(session.examples)
        n_target = sum(sum(t != -100 for t in y) for _, y in session.examples)
        with torch.no_grad():
            crossed = target_loss(session.lm, ids, labels, None, n_target).item()
        assert abs(crossed - ref_loss) > 1e-2 * ref_loss


@pytest.mark.slow
def test_a_few_optimizer_steps_give_the_same_weights(session):
    """Two optimizer steps of 3 rows from the same start, today's loop against token-budget
    passes, packed ones and AdamW's fused kernel (the GPU's default): the same losses (1e-6)
    and weights, within 1e-6 of how far the steps moved them.

    In float64, as above: AdamW's first steps move each weight by about lr whatever the size
    of its gradient, so in float32 a gradient within rounding of zero moves either way, and
    one padded pass and micro_batch_size=1 (today's options) end 2e-3 apart (measured)."""
    import torch

    from coretune.train.loop import adamw, train_step

    def run(cfg, fused=False):
        with torch.no_grad():
            for p, w in zip(session.lm.parameters(), start, strict=True):
                p.copy_(w)
        session.cfg, session.step = cfg, 0
        session.optimizer = adamw(session.lm, cfg, fused)
        session.scheduler = torch.optim.lr_scheduler.LambdaLR(session.optimizer, lambda _: 1.0)
        losses = [train_step(session)[0] for _ in range(2)]
        return losses, torch.cat([p.detach().flatten() for p in session.lm.parameters()])

    with float64(session):
        start = [p.detach().clone() for p in session.lm.parameters()]
        three = BASE.model_copy(update={"batch_size": 3})
        ref_losses, ref = run(three)
        moved = float((ref - torch.cat([w.flatten() for w in start])).norm())
        assert moved > 1e-3
        for name, update in (("tokens 64", {"pass_tokens": 64}),
                             ("packed tokens 60", {"packing": True, "pass_tokens": 60}),
                             ("fused AdamW", {})):
            losses, weights = run(three.model_copy(update=update),
                                  fused=name.startswith("fused"))
            assert losses == pytest.approx(ref_losses, rel=1e-6), name
            off = float((weights - ref).norm()) / moved
            assert off < 1e-6, (name, off)
        with torch.no_grad():
            for p, w in zip(session.lm.parameters(), start, strict=True):
                p.copy_(w)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_rows_see_only_themselves(session, attention):
    """Under SDPA and eager attention, each packed row's logits are its logits alone; without
    position ids the later rows' are not (transformers' masks read where rows start from
    them, when there is no attention mask and no KV cache)."""
    import torch

    from coretune.train.loss import keeps_packed_rows_apart

    lm = session.lm
    lm.set_attn_implementation(attention)
    try:
        assert lm.config._attn_implementation == attention
        assert keeps_packed_rows_apart(lm)
        rows = [session.examples[i][0] for i in (0, 2, 4)]  # 17, 16, 21 tokens
        ids, _, positions = pack_batch([(x, x) for x in rows])
        lm.eval()
        with torch.no_grad():  # no KV cache: with one, transformers does not look for rows
            packed = lm(input_ids=ids, position_ids=positions, use_cache=False).logits[0]
            crossed = lm(input_ids=ids, use_cache=False).logits[0]
            alone = torch.cat([lm(input_ids=torch.tensor([x]), use_cache=False).logits[0]
                               for x in rows])
        torch.testing.assert_close(packed, alone, rtol=1e-4, atol=1e-4)
        first = len(rows[0])
        torch.testing.assert_close(crossed[:first], alone[:first], rtol=1e-4, atol=1e-4)
        assert (crossed[first:] - alone[first:]).abs().max() > 1.0
    finally:
        lm.train()
        lm.set_attn_implementation("sdpa")


def test_packing_refuses_a_model_that_lets_rows_mix(session, tmp_path, monkeypatch):
    """A model whose forward drops the position ids fails the probe, and training with
    packing stops before any step."""
    import torch

    from coretune.errors import CoretuneError
    from coretune.models import prefer_sdpa
    from coretune.train import loop
    from coretune.train.loss import keeps_packed_rows_apart

    class DropsPositions(torch.nn.Module):
        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def get_input_embeddings(self):
            return self.lm.get_input_embeddings()

        def forward(self, position_ids=None, **kw):
            return self.lm(**kw)

    assert not keeps_packed_rows_apart(DropsPositions(session.lm))
    assert session.lm.config._attn_implementation == "sdpa"
    session.lm.set_attn_implementation("eager")
    prefer_sdpa(session.lm)  # what load_model does after loading
    assert session.lm.config._attn_implementation == "sdpa"
    monkeypatch.setattr(loop, "keeps_packed_rows_apart", lambda lm: False)
    with pytest.raises(CoretuneError, match="packed rows"):
        loop.train(ROWS, "default", BASE.model_copy(update={"packing": True}),
                   tmp_path / "m", quiet=True)
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.partial").exists()


def test_the_packing_probe_tells_architectures_apart():
    """Llama's decoder hands the position ids to transformers' mask builder, OPT's (5.25)
    does not: its packed rows see each other, and the probe says so (random tiny models)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

    from coretune.train.loss import keeps_packed_rows_apart

    torch.manual_seed(0)
    sizes = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
             "vocab_size": 100}
    assert keeps_packed_rows_apart(LlamaForCausalLM(LlamaConfig(**sizes, intermediate_size=64)))
    assert not keeps_packed_rows_apart(OPTForCausalLM(OPTConfig(**sizes, ffn_dim=64)))


def test_new_fields_stay_out_of_the_settings_at_their_defaults():
    """Left at their defaults, the train key is the one runs had before they existed."""
    plain = TrainConfig().settings()
    assert "pass_tokens" not in plain and "packing" not in plain
    on = TrainConfig(pass_tokens=512, packing=True).settings()
    assert (on["pass_tokens"], on["packing"]) == (512, True)
    assert {k: v for k, v in on.items() if k not in ("pass_tokens", "packing")} == plain
