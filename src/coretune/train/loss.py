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


def target_loss(lm, ids, labels, mask, n_target: int):
    """Summed cross-entropy over the target positions of this micro-batch, / `n_target`."""
    import torch

    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE
    logits = lm(input_ids=ids, attention_mask=mask, logits_to_keep=keep, use_cache=False).logits
    # Hidden states are gathered row by row, position by position: the same order as here.
    return torch.nn.functional.cross_entropy(
        logits.float(), labels[:, 1:][keep[:, :-1]], reduction="sum") / n_target


def full_logit_loss(lm, ids, labels, mask, n_target: int):
    """The same loss from logits at every position (what training did before)."""
    import torch

    logits = lm(input_ids=ids, attention_mask=mask, use_cache=False).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
        ignore_index=IGNORE, reduction="sum") / n_target
