"""Pooling token states into one vector per text (docs/spec.md §5)."""

from __future__ import annotations

import torch

from nosink.errors import Choice, NosinkError


class Pooling(Choice):
    """How token states become a sentence embedding.

    ``mean`` and ``weighted_mean`` average the text's own tokens (no instruction, no BOS/sink or
    other special token); ``last`` and ``first`` take the last and first real token of the row.
    ``reference_mean`` is the authors' released code's mean: every real token except the first
    ``len(tokenizer(template.strip()).input_ids)`` when there is an instruction (BOS and the
    instruction, and one more where the tokenizer appends EOS, as that count includes it), and every
    real token otherwise; so a text without instruction averages BOS (the sink, whose state is an
    outlier) in, and trailing specials (EOS) count.
    """

    MEAN = "mean"
    WEIGHTED_MEAN = "weighted_mean"
    LAST = "last"
    FIRST = "first"
    REFERENCE_MEAN = "reference_mean"

    @classmethod
    def noun(cls) -> str:
        return "pooling"


def pool(
    states: torch.Tensor,  # [B, T, D]
    attention_mask: torch.Tensor,  # [B, T], 1 = real token
    text_mask: torch.Tensor,  # [B, T], True = a text token
    pooling: Pooling,
    prompt_mask: torch.Tensor | None = None,  # [B, T], True = a prompt token; needed by reference_mean
) -> torch.Tensor:
    """[B, T, D] -> [B, D], computed in float32."""
    states = states.float()
    if pooling is Pooling.REFERENCE_MEAN:
        if prompt_mask is None:
            raise NosinkError("reference_mean pooling needs the prompt mask")
        text_mask = attention_mask.bool() & ~prompt_mask  # [B, T]: every real token after the prompt
    if pooling in (Pooling.MEAN, Pooling.WEIGHTED_MEAN, Pooling.REFERENCE_MEAN):
        weights = text_mask.float()  # [B, T]
        if pooling is Pooling.WEIGHTED_MEAN:
            weights = weights.cumsum(-1) * weights  # [B, T]: 1, 2, …, n over the text tokens
        weights = weights / weights.sum(-1, keepdim=True)  # [B, T], rows sum to 1
        return torch.einsum("bt,btd->bd", weights, states)  # [B, D]
    arange = torch.arange(states.shape[1], device=states.device)  # [T]
    real = attention_mask.bool()  # [B, T]
    if pooling is Pooling.LAST:
        index = torch.where(real, arange, -1).argmax(-1)  # [B]: last real token
    else:
        index = torch.where(real, -arange, -states.shape[1]).argmax(-1)  # [B]: first real token
    return states[torch.arange(states.shape[0], device=states.device), index]  # [B, D]
