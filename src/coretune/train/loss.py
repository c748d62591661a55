"""The training loss: cross-entropy on the target tokens (and EOS) of each row.

The loss needs logits only where the next token is a target token: a few per row of a few
hundred. `target_loss` asks the model for exactly those (transformers' `logits_to_keep` with a
boolean mask gathers the final hidden states there before the LM head), so the
batch x length x vocabulary logits (49,152 words for SmolLM2), their softmax and their
gradient are never built. Same sum, same gradients as the full computation
(`full_logit_loss`, kept as the reference for the test and the benchmark).
"""

from __future__ import annotations

import inspect

from coretune.train.data import IGNORE


def supports_target_logits(lm) -> bool:
    """Whether the model's forward takes a boolean `logits_to_keep` mask (recent transformers;
    a LoRA model forwards it to its base)."""
    try:
        from transformers.modeling_utils import slice_logits_to_keep  # noqa: F401
    except ImportError:
        return False
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def target_loss(lm, ids, labels, mask, n_target: int, positions=None):
    """Summed cross-entropy over the target positions of this micro-batch, / `n_target`.
    A packed pass (`data.pack_batch`) has no `mask` and its rows' `positions` instead."""
    import torch

    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE
    logits = lm(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep,
                use_cache=False).logits
    # Hidden states are gathered row by row, position by position: the same order as here.
    return torch.nn.functional.cross_entropy(
        logits.float(), labels[:, 1:][keep[:, :-1]], reduction="sum") / n_target


def full_logit_loss(lm, ids, labels, mask, n_target: int, positions=None):
    """The same loss from logits at every position (what training did before)."""
    import torch

    logits = lm(input_ids=ids, attention_mask=mask, position_ids=positions,
                use_cache=False).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
        ignore_index=IGNORE, reduction="sum") / n_target


def keeps_packed_rows_apart(lm) -> bool:
    """Whether `lm` scores rows packed into one sequence (`data.pack_batch`) as it scores each
    alone: two short rows of random ids, float32, no dropout. A model whose attention ignores
    packed position ids lets the second row see the first and fails."""
    import torch

    from coretune.train.data import pack_batch

    gen = torch.Generator().manual_seed(0)
    vocab = lm.get_input_embeddings().num_embeddings
    rows = [torch.randint(vocab, (n,), generator=gen).tolist() for n in (5, 7)]
    device = next(lm.parameters()).device
    was_training = lm.training
    lm.eval()
    try:
        with torch.no_grad():
            ids, _, positions = pack_batch([(r, r) for r in rows])
            packed = lm(input_ids=ids.to(device), position_ids=positions.to(device),
                        use_cache=False).logits[0].float()
            alone = torch.cat([lm(input_ids=torch.tensor([r], device=device),
                                  use_cache=False).logits[0].float() for r in rows])
    finally:
        lm.train(was_training)
    return bool(torch.allclose(packed, alone, rtol=1e-3, atol=1e-3))
