"""Run a :class:`~nosink.plan.Schedule` on a base model: the final-norm hidden states."""

from __future__ import annotations

import torch
from torch import nn

from nosink.attention import CONTEXT_KWARG, AttentionRecord, CallContext, nosink_attention_enabled
from nosink.families import Family, LayerInputs
from nosink.patterns import CAUSAL, LayerPattern, relative_positions
from nosink.plan import Schedule


def run_schedule(
    base: nn.Module,
    family: Family,
    schedule: Schedule,
    input_ids: torch.Tensor,  # [B, T]
    attention_mask: torch.Tensor,  # [B, T], 1 = real token
    *,
    records: list[AttentionRecord] | None = None,
    segment_ids: torch.Tensor | None = None,  # [B, T]: packed rows (see nosink.inputs.PackedBatch)
) -> torch.Tensor:
    """Final-norm states [B, T, D]; positions count from each text's first real token.

    With ``segment_ids`` every layer, causal ones included, runs with a block-diagonal mask, so
    each text of a packed row sees only itself, exactly as if it had a row of its own.
    """
    position_ids = relative_positions(attention_mask, segment_ids)  # [B, T]
    patterns = schedule.layer_patterns
    plain = records is None and segment_ids is None
    vanilla = patterns is not None and plain and all(p == CAUSAL for p in patterns)
    reference = schedule.reference
    with nosink_attention_enabled(base, switch=not vanilla):
        if vanilla:
            return _model_forward(base, input_ids, attention_mask, position_ids)  # baseline: the model untouched
        if patterns is not None:
            # Causal layers keep the model's own mask (None), unless attention is recorded (eager, with
            # nosink's explicit mask) or rows are packed (the model's mask does not know where texts end).
            own_mask = tuple(None if p == CAUSAL and plain else p for p in patterns)
            context = CallContext(
                attention_mask, segment_ids, layer_patterns=own_mask, records=records, reference=reference
            )
            return _model_forward(base, input_ids, attention_mask, position_ids, **{CONTEXT_KWARG: context})
        context = CallContext(attention_mask, segment_ids, records=records, reference=reference)
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
    """Layer by layer: the main sequence (prefix, then the first branch), then the other branches.

    The other branches start from the main sequence's state where the prefix ends; the released
    code's residual (``schedule.residual``, reference mode) is added along the main sequence only.
    """
    layers = family.decoder_layers(base)
    hidden = family.embed(base, input_ids, position_ids)  # [B, T, D]
    layer_inputs = family.layer_inputs(base, hidden, position_ids)
    residual = schedule.residual
    main = schedule.prefix + schedule.branches[0]
    saved: torch.Tensor | None = None  # [B, T, D]: the last layer input the residual saved
    shared = hidden  # [B, T, D]
    for index, step in enumerate(main):
        if residual is not None and residual.applies(index):
            hidden = hidden if saved is None else hidden + saved  # [B, T, D]
            saved = hidden
        if index == len(schedule.prefix):
            shared = hidden  # the other branches start here (after the residual, as in the released code)
        hidden = _call_layer(layers, layer_inputs, context, step.layer, step.pattern, hidden)  # [B, T, D]
    total = hidden  # [B, T, D]: A
    for branch in schedule.branches[1:]:
        h = shared
        for step in branch:
            h = _call_layer(layers, layer_inputs, context, step.layer, step.pattern, h)  # [B, T, D]
        total = total + h  # [B, T, D]: A + B
    if residual is not None and residual.to_output and saved is not None:
        total = total + saved  # [B, T, D]
    return family.final_norm(base)(total)  # [B, T, D]


def run_schedules(
    base: nn.Module,
    family: Family,
    schedules: list[Schedule],
    input_ids: torch.Tensor,  # [B, T]
    attention_mask: torch.Tensor,  # [B, T], 1 = real token
) -> list[torch.Tensor]:
    """Final-norm states [B, T, D] for many schedules at once, sharing every common prefix.

    Single-pass schedules form a tree by their per-layer patterns: a layer call is made once for
    all schedules that agree on every layer up to it. A k-sweep of ``inplace-bidir`` over k = 1…L
    thus costs L causal layer calls plus the converted tops (L + L(L+1)/2 calls instead of L²).
    Branched schedules (INTER/EXTRA/EXTEND) and reference-mode ones run one by one.
    """
    results: list[torch.Tensor | None] = [None] * len(schedules)
    single = [i for i, s in enumerate(schedules) if s.layer_patterns is not None and not s.reference]
    alone = set(range(len(schedules))) - set(single)
    for i, schedule in enumerate(schedules):
        if i in alone:  # branched, or reference mode (its own window rule and residual)
            results[i] = run_schedule(base, family, schedule, input_ids, attention_mask)
    if single:
        position_ids = relative_positions(attention_mask)  # [B, T]
        context = CallContext(attention_mask)
        with nosink_attention_enabled(base):
            layers = family.decoder_layers(base)
            hidden = family.embed(base, input_ids, position_ids)  # [B, T, D]
            layer_inputs = family.layer_inputs(base, hidden, position_ids)
            patterns = {i: schedules[i].layer_patterns for i in single}

            def descend(members: list[int], depth: int, h: torch.Tensor) -> None:
                if depth == len(layers):
                    out = family.final_norm(base)(h)  # [B, T, D]
                    for i in members:
                        results[i] = out
                    return
                groups: dict[LayerPattern, list[int]] = {}
                for i in members:
                    groups.setdefault(patterns[i][depth], []).append(i)
                ordered = sorted(groups.items(), key=lambda item: len(item[1]))  # widest group last
                for index, (pattern, group) in enumerate(ordered):
                    h_next = _call_layer(layers, layer_inputs, context, depth, pattern, h)  # [B, T, D]
                    if index == len(ordered) - 1:
                        del h  # the last branch does not need the parent state: memory stays O(branches)
                        descend(group, depth + 1, h_next)
                        return
                    descend(group, depth + 1, h_next)

            descend(single, 0, hidden)
    return results  # type: ignore[return-value]


def _call_layer(
    layers: nn.ModuleList,
    layer_inputs: LayerInputs,
    context: CallContext,
    layer: int,
    pattern: LayerPattern,
    hidden: torch.Tensor,  # [B, T, D]
) -> torch.Tensor:
    """One decoder-layer call with ``pattern``: [B, T, D] -> [B, T, D]."""
    call = {CONTEXT_KWARG: context.with_pattern(pattern), **layer_inputs(layer)}
    out = layers[layer](hidden, attention_mask=None, **call)
    return out[0] if isinstance(out, tuple) else out
