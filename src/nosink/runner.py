"""Run a :class:`~nosink.plan.Schedule` on a base model: the final-norm hidden states."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from nosink.attention import CONTEXT_KWARG, AttentionRecord, CallContext, nosink_attention_enabled
from nosink.errors import NosinkError
from nosink.families import Family, LayerInputs
from nosink.patterns import CAUSAL, LayerPattern, relative_positions
from nosink.plan import Schedule
from nosink.recipe import Recipe


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
        return family.final_norm(base)(_run_branches(base, family, schedule, input_ids, position_ids, context))


def run_recipe(
    base: nn.Module,
    family: Family,
    schedule: Schedule,
    recipe: Recipe,
    input_ids: torch.Tensor,  # [B, T]
    attention_mask: torch.Tensor,  # [B, T], 1 = real token
    *,
    segment_ids: torch.Tensor | None = None,  # [B, T]: packed rows
) -> torch.Tensor:
    """The states [B, T, D] that ``recipe`` reads out: its layers' states, each normed if it says so, averaged."""
    if recipe.is_default:
        return run_schedule(base, family, schedule, input_ids, attention_mask, segment_ids=segment_ids)
    norm = family.final_norm(base)
    total: torch.Tensor | None = None
    states = run_layers(
        base, family, schedule, input_ids, attention_mask, recipe.depths(schedule.num_layers), segment_ids=segment_ids
    )
    for state in states:  # [B, T, D] each
        state = norm(state) if recipe.norm else state
        total = state if total is None else total + state
    return total / len(states)  # type: ignore[operator]


def check_readout(schedule: Schedule, depths: list[int]) -> None:
    """A clear error when ``depths`` include a layer that ``schedule`` does not define (see :func:`run_layers`)."""
    if schedule.layer_patterns is None and any(depth != schedule.num_layers for depth in depths):
        raise NosinkError(
            "this plan sums several layer stacks (INTER, EXTRA, EXTEND, or the released code's residual), "
            "so only its output is defined: use a recipe with layer=-1"
        )


def run_layers(
    base: nn.Module,
    family: Family,
    schedule: Schedule,
    input_ids: torch.Tensor,  # [B, T]
    attention_mask: torch.Tensor,  # [B, T], 1 = real token
    depths: list[int],
    *,
    segment_ids: torch.Tensor | None = None,  # [B, T]: packed rows
) -> list[torch.Tensor]:
    """The states [B, T, D] after each of ``depths`` decoder layers (0 = the embeddings), before the final norm.

    A single-pass schedule runs layer by layer, each layer with its pattern given explicitly, and
    stops after the deepest layer asked for. A branched schedule sums several stacks, so only its
    output (depth L, before the norm) is defined.
    """
    position_ids = relative_positions(attention_mask, segment_ids)  # [B, T]
    context = CallContext(attention_mask, segment_ids, reference=schedule.reference)
    patterns = schedule.layer_patterns
    with nosink_attention_enabled(base):
        if patterns is None:
            check_readout(schedule, depths)
            output = _run_branches(base, family, schedule, input_ids, position_ids, context)  # [B, T, D]
            return [output for _ in depths]
        layers = family.decoder_layers(base)
        hidden = family.embed(base, input_ids, position_ids)  # [B, T, D]: depth 0
        layer_inputs = family.layer_inputs(base, hidden, position_ids)
        wanted = set(depths)
        found = {0: hidden} if 0 in wanted else {}
        for layer in range(max(depths)):
            hidden = _call_layer(layers, layer_inputs, context, layer, patterns[layer], hidden)  # [B, T, D]
            if layer + 1 in wanted:
                found[layer + 1] = hidden
        return [found[depth] for depth in depths]


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
    """Layer by layer: the main sequence (prefix, then the first branch), then the other branches; before the norm.

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
    return total  # [B, T, D], before the final norm


def run_schedules(
    base: nn.Module,
    family: Family,
    schedules: list[Schedule],
    input_ids: torch.Tensor,  # [B, T]
    attention_mask: torch.Tensor,  # [B, T], 1 = real token
    *,
    recipe: Recipe | None = None,
) -> list[torch.Tensor]:
    """The states [B, T, D] that ``recipe`` reads out (default: final-norm states) for many schedules at once,
    sharing every common prefix (see :func:`run_readouts`)."""
    readouts = run_readouts(base, family, schedules, input_ids, attention_mask, [recipe or Recipe()])
    return [states[0] for states in readouts]


def run_readouts(
    base: nn.Module,
    family: Family,
    schedules: list[Schedule],
    input_ids: torch.Tensor,  # [B, T]
    attention_mask: torch.Tensor,  # [B, T], 1 = real token
    recipes: list[Recipe],
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[list[torch.Tensor]]:
    """For every schedule, the states [B, T, D] that each of ``recipes`` reads out (their layers and norm).

    ``reduce`` (e.g. a pooling, [B, T, D] -> [B, D]) is applied to every state as it is read, before
    a recipe's layers are averaged; it must be linear, as every pooling is. A sweep over many plans
    and layers then keeps [B, D] per read-out instead of [B, T, D].

    Single-pass schedules form a tree by their per-layer patterns: a layer call is made once for
    all schedules that agree on every layer up to it. A k-sweep of ``inplace-bidir`` over k = 1…L
    thus costs L causal layer calls plus the converted tops (L + L(L+1)/2 calls instead of L²), and
    reading every layer out of it (one recipe per layer) costs no more layer calls than reading one.
    No layer above the deepest one read out is run. Branched schedules (INTER/EXTRA/EXTEND) and
    reference-mode ones run one by one.
    """
    num_layers = len(family.decoder_layers(base))
    wanted = [set(recipe.depths(num_layers)) for recipe in recipes]
    results: list[list[torch.Tensor] | None] = [None] * len(schedules)
    single = [i for i, s in enumerate(schedules) if s.layer_patterns is not None and not s.reference]
    for i, schedule in enumerate(schedules):
        if i not in single:  # branched, or reference mode (its own window rule and residual)
            states = [run_recipe(base, family, schedule, r, input_ids, attention_mask) for r in recipes]
            results[i] = states if reduce is None else [reduce(state) for state in states]
    if not single:
        return results  # type: ignore[return-value]
    position_ids = relative_positions(attention_mask)  # [B, T]
    context = CallContext(attention_mask)
    norm = family.final_norm(base)
    last = max(max(depths) for depths in wanted)
    Totals = tuple[torch.Tensor | None, ...]

    def read(h: torch.Tensor, depth: int, totals: Totals) -> Totals:
        """The running sums [B, T, D] of every recipe's states along one path, with depth ``depth`` added."""
        reading = [depth in depths for depths in wanted]
        if not any(reading):
            return totals
        normed = norm(h) if any(r.norm for r, on in zip(recipes, reading, strict=True) if on) else None
        read_out = {False: h, True: normed}
        if reduce is not None:  # [B, T, D] -> [B, D], once per kind of state, not once per recipe
            read_out = {key: None if state is None else reduce(state) for key, state in read_out.items()}
        out = []
        for on, recipe, total in zip(reading, recipes, totals, strict=True):
            state = read_out[recipe.norm] if on else None  # [B, T, D], or [B, D] reduced
            out.append(total if state is None else state if total is None else total + state)
        return tuple(out)

    with nosink_attention_enabled(base):
        layers = family.decoder_layers(base)
        hidden = family.embed(base, input_ids, position_ids)  # [B, T, D]
        layer_inputs = family.layer_inputs(base, hidden, position_ids)
        patterns = {i: schedules[i].layer_patterns for i in single}

        def descend(members: list[int], depth: int, h: torch.Tensor, totals: Totals) -> None:
            totals = read(h, depth, totals)
            if depth == last:
                out = [total / len(depths) for total, depths in zip(totals, wanted, strict=True)]  # type: ignore[operator]
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
                    descend(group, depth + 1, h_next, totals)
                    return
                descend(group, depth + 1, h_next, totals)

        descend(single, 0, hidden, (None,) * len(recipes))
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
