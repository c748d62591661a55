"""Rank-classification scoring: the sum of each option's token log-probabilities given the
prompt, each prompt run once with its KV cache reused for the options (see
`coretune.evaluate.evaluator`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from coretune.batching import budget_batches


@dataclass(frozen=True)
class Request:
    """One prompt and its options, already tokenised."""

    prompt_ids: list[int]
    option_ids: list[list[int]]


def score_requests(
    model: Any,
    requests: Sequence[Request],
    *,
    pad_id: int,
    batch_size: int = 16,
    batch_tokens: int | None = None,
    padding_side: str = "left",
    quiet: bool = True,
    desc: str = "scoring",
) -> list[np.ndarray]:
    """Sum of log-probabilities of every option of every request (float64, request order).
    Prompts run longest first, `batch_size` a batch or, with `batch_tokens`, as many as keep
    a batch's padded prompts within that many tokens (`coretune.batching`)."""
    import torch
    from tqdm.auto import tqdm

    if padding_side not in ("left", "right"):
        raise ValueError("padding_side must be 'left' or 'right'")
    for r in requests:
        if not r.prompt_ids or not r.option_ids or not all(r.option_ids):
            raise ValueError("every request needs a non-empty prompt and non-empty options")
    order = sorted(range(len(requests)), key=lambda i: (-len(requests[i].prompt_ids), i))
    out: list[np.ndarray | None] = [None] * len(requests)
    device = next(model.parameters()).device
    bar = tqdm(total=len(requests), desc=desc, disable=quiet, unit="prompt")
    if batch_tokens is None:
        runs = [range(m, min(m + batch_size, len(order))) for m in range(0, len(order),
                                                                         batch_size)]
    else:
        runs = budget_batches([len(requests[i].prompt_ids) for i in order], batch_tokens)
    with torch.inference_mode():
        for run in runs:
            idx = order[run.start:run.stop]
            scores = _score_batch(model, [requests[i] for i in idx], pad_id, padding_side,
                                  device)
            for i, s in zip(idx, scores, strict=True):
                out[i] = s
            bar.update(len(idx))
    bar.close()
    return out  # type: ignore[return-value]


def _score_batch(model, batch: list[Request], pad_id: int, side: str, device) -> list[np.ndarray]:
    import torch

    n, width = len(batch), max(len(r.prompt_ids) for r in batch)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    lengths = torch.tensor([len(r.prompt_ids) for r in batch])
    for row, r in enumerate(batch):
        cols = slice(width - len(r.prompt_ids), width) if side == "left" else slice(
            0, len(r.prompt_ids))
        ids[row, cols] = torch.tensor(r.prompt_ids)
        mask[row, cols] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    last = torch.full((n,), width - 1) if side == "left" else lengths - 1
    ids, mask, positions = ids.to(device), mask.to(device), positions.to(device)
    # logits of the last `keep` positions only (an int: 5.17 and 5.24 read it the same way)
    keep = width - int(last.min())
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                logits_to_keep=keep)
    at = (last - (width - keep)).to(device)
    # next-token distribution after each prompt
    first = torch.log_softmax(out.logits[torch.arange(n, device=device), at].float(), dim=-1)
    # transformers 5.2x names the KV cache `cache`; earlier releases `past_key_values`
    cache_arg = "cache" if hasattr(out, "cache") else "past_key_values"
    cache = getattr(out, cache_arg)
    scores = [np.zeros(len(r.option_ids)) for r in batch]
    for slot in range(max(len(r.option_ids) for r in batch)):
        opts = [r.option_ids[slot] if slot < len(r.option_ids) else None for r in batch]
        for row, o in enumerate(opts):
            if o is not None:
                scores[row][slot] = first[row, o[0]].item()
        # The rest of each option: feed all but its last token on top of the prompt cache.
        span = max(len(o) - 1 if o else 0 for o in opts)
        if span == 0:
            continue
        o_ids = torch.full((n, span), pad_id, dtype=torch.long)
        o_mask = torch.zeros((n, span), dtype=torch.long)
        for row, o in enumerate(opts):
            if o and len(o) > 1:
                o_ids[row, :len(o) - 1] = torch.tensor(o[:-1])
                o_mask[row, :len(o) - 1] = 1
        o_pos = lengths[:, None] + torch.arange(span)[None, :]
        step = model(input_ids=o_ids.to(device),
                     attention_mask=torch.cat([mask, o_mask.to(device)], dim=1),
                     position_ids=o_pos.to(device), use_cache=True, **{cache_arg: cache})
        logp = torch.log_softmax(step.logits.float(), dim=-1)
        for row, o in enumerate(opts):
            if o and len(o) > 1:
                tgt = torch.tensor(o[1:], device=device)
                scores[row][slot] += logp[row, torch.arange(len(o) - 1, device=device),
                                          tgt].sum().item()
        cache.crop(-span)
        if cache.get_seq_length() != width:
            raise RuntimeError("KV cache crop failed: prompt cache length changed")
    return scores


def score_unbatched(model: Any, request: Request) -> np.ndarray:
    """Reference scorer: each option as its own unpadded prompt+option forward pass."""
    import torch

    device = next(model.parameters()).device
    out = np.zeros(len(request.option_ids))
    with torch.inference_mode():
        for k, opt in enumerate(request.option_ids):
            seq = torch.tensor([request.prompt_ids + opt], device=device)
            logp = torch.log_softmax(model(input_ids=seq).logits[0].float(), dim=-1)
            p = len(request.prompt_ids)
            pos = torch.arange(p - 1, p - 1 + len(opt), device=device)
            out[k] = logp[pos, torch.tensor(opt, device=device)].sum().item()
    return out
