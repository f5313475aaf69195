"""Run a :class:`~nosink.plan.Schedule` on a base model: the final-norm hidden states."""

from __future__ import annotations

import torch
from torch import nn

from nosink.attention import CONTEXT_KWARG, AttentionRecord, CallContext, nosink_attention_enabled
from nosink.families import Family
from nosink.patterns import CAUSAL, relative_positions
from nosink.plan import Schedule, Step


def run_schedule(
    base: nn.Module,
    family: Family,
    schedule: Schedule,
    input_ids: torch.Tensor,  # [B, T]
    attention_mask: torch.Tensor,  # [B, T], 1 = real token
    *,
    records: list[AttentionRecord] | None = None,
) -> torch.Tensor:
    """Final-norm states [B, T, D]; positions count from each row's first real token."""
    position_ids = relative_positions(attention_mask)  # [B, T]
    patterns = schedule.layer_patterns
    vanilla = patterns is not None and records is None and all(p == CAUSAL for p in patterns)
    context = CallContext(attention_mask, records=records)
    with nosink_attention_enabled(base, switch=not vanilla):
        if vanilla:
            return _model_forward(base, input_ids, attention_mask, position_ids)  # baseline: the model untouched
        if patterns is not None:
            own_mask = tuple(None if p == CAUSAL else p for p in patterns)  # causal layers: model's own mask
            context = CallContext(attention_mask, layer_patterns=own_mask, records=records)
            return _model_forward(base, input_ids, attention_mask, position_ids, **{CONTEXT_KWARG: context})
        return _run_branches(base, family, schedule, input_ids, position_ids, context)


def _model_forward(
    base: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    **kwargs: object,
) -> torch.Tensor:
    output = base(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False, **kwargs
    )
    return output.last_hidden_state  # [B, T, D]


def _run_branches(
    base: nn.Module,
    family: Family,
    schedule: Schedule,
    input_ids: torch.Tensor,
    position_ids: torch.Tensor,
    context: CallContext,
) -> torch.Tensor:
    layers = family.decoder_layers(base)
    hidden = family.embed(base, input_ids, position_ids)  # [B, T, D]
    layer_inputs = family.layer_inputs(base, hidden, position_ids)

    def run(steps: tuple[Step, ...], h: torch.Tensor) -> torch.Tensor:
        for step in steps:
            call = {CONTEXT_KWARG: context.with_pattern(step.pattern), **layer_inputs(step.layer)}
            out = layers[step.layer](h, attention_mask=None, **call)
            h = out[0] if isinstance(out, tuple) else out  # [B, T, D]
        return h

    shared = run(schedule.prefix, hidden)  # [B, T, D]
    total = sum(run(branch, shared) for branch in schedule.branches)  # [B, T, D]: A + B
    return family.final_norm(base)(total)  # [B, T, D]
