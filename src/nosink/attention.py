"""The one mechanism: a registered attention function that picks each call's mask.

transformers dispatches attention through ``ALL_ATTENTION_FUNCTIONS[config._attn_implementation]``
and passes forward kwargs down to it. nosink registers ``nosink:<original>`` (e.g. ``nosink:sdpa``)
in the public attention and mask interfaces. During a nosink forward the model's config names it,
and a :class:`CallContext` travels in the forward kwargs; the function asks the context which
pattern this layer call uses and attends with that pattern's boolean mask. Without a context (any
other caller of the same model) it delegates unchanged to the original implementation, so the
model stays exactly what it was for everyone else. The config is switched back after each call.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from nosink.errors import NosinkError
from nosink.patterns import CAUSAL, LayerPattern, Pattern, additive, build_mask

CONTEXT_KWARG = "nosink_call"
PREFIX = "nosink:"
_switch_lock = threading.RLock()


@dataclass(frozen=True)
class AttentionRecord:
    """Attention weights of one layer call of an eager run: ``weights`` is [B, H, T, T]."""

    layer: int
    pattern: LayerPattern
    weights: torch.Tensor


@dataclass(frozen=True)
class CallContext:
    """Everything one forward pass over one padded batch needs to pick its masks.

    ``layer_patterns[i]`` is layer i's pattern in a single pass (None: the model's own causal
    mask); ``pattern`` overrides it for one layer call of the branch runner. Masks are built
    once per pattern and window and shared by every copy of the context. ``segment_ids`` marks
    packed rows (several texts per row, see :mod:`nosink.inputs`): every mask is then block-diagonal.
    """

    attention_mask: torch.Tensor  # [B, T], 1 = real token
    segment_ids: torch.Tensor | None = None  # [B, T], the text of each token in a packed row; -1 = padding
    layer_patterns: tuple[LayerPattern | None, ...] = ()
    pattern: LayerPattern | None = None
    records: list[AttentionRecord] | None = None
    reference: bool = False  # the released code's masks: converted (non-causal) layers ignore sliding windows
    _masks: dict[tuple[Any, ...], torch.Tensor] = field(default_factory=dict)
    unpadded: bool | None = None  # one text per row and no padding; found once per batch, kept by every copy

    def __post_init__(self) -> None:
        if self.unpadded is None:  # one device sync per batch, not one per layer call; none for packed rows
            unpadded = self.segment_ids is None and bool(self.attention_mask.all())
            object.__setattr__(self, "unpadded", unpadded)

    def with_pattern(self, pattern: LayerPattern) -> CallContext:
        return replace(self, pattern=pattern)

    def pattern_for(self, layer: int) -> LayerPattern | None:
        if self.pattern is not None:
            return self.pattern
        return self.layer_patterns[layer] if layer < len(self.layer_patterns) else None

    def sdpa_shortcut(self, pattern: LayerPattern, window: int | None) -> bool | None:
        """``is_causal`` for SDPA without a mask, when that is exactly the pattern; None when a mask is needed.

        Holds for a batch without padding whose window (if any) covers it: BIDIR is no mask at
        all and CAUSAL is SDPA's own causal mask, both on SDPA's fastest kernels.
        """
        if pattern.kind not in (Pattern.BIDIR, Pattern.CAUSAL) or not self.unpadded:
            return None
        if window is not None and window < self.attention_mask.shape[-1]:
            return None
        return pattern.kind is Pattern.CAUSAL

    def mask(self, pattern: LayerPattern, window: int | None, dtype: torch.dtype | None) -> torch.Tensor:
        """[B, 1, T, T]: boolean for SDPA (dtype None), additive float for eager."""
        key = (pattern, window, dtype)
        if key not in self._masks:
            boolean = self._masks.get((pattern, window, None))
            if boolean is None:
                boolean = build_mask(pattern, self.attention_mask, sliding_window=window, segment_ids=self.segment_ids)
                self._masks[(pattern, window, None)] = boolean
            if dtype is not None:
                self._masks[key] = additive(boolean, dtype)
        return self._masks[key]


def _eager_function(module: nn.Module) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    function = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if function is None:
        raise NosinkError(f"{type(module).__name__} has no eager attention function to record weights with")
    return function


def _original_function(module: nn.Module, original: str) -> Callable[..., Any]:
    if original == "eager":
        return _eager_function(module)
    return ALL_ATTENTION_FUNCTIONS[original]


def nosink_attention(
    module: nn.Module,
    query: torch.Tensor,  # [B, H, T, head_dim]
    key: torch.Tensor,  # [B, H_kv, T, head_dim]
    value: torch.Tensor,  # [B, H_kv, T, head_dim]
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The registered attention function (see the module docstring)."""
    context: CallContext | None = kwargs.pop(CONTEXT_KWARG, None)
    pattern = context.pattern_for(module.layer_idx) if context is not None else None
    if pattern is None:
        original = module.config._attn_implementation.removeprefix(PREFIX)
        return _original_function(module, original)(module, query, key, value, attention_mask, **kwargs)
    window = kwargs.get("sliding_window")
    if context.reference and pattern != CAUSAL:
        window = None  # the released code's bidir, backward and MASK0 masks have no window
    recording = context.records is not None
    if recording or kwargs.get("softcap") is not None:  # SDPA has neither weights nor softcapping
        mask = context.mask(pattern, window, query.dtype)  # [B, 1, T, T] additive
        output, weights = _eager_function(module)(module, query, key, value, mask, **kwargs)
        if recording:
            context.records.append(AttentionRecord(module.layer_idx, pattern, weights.detach()))
        return output, weights
    kwargs.pop("is_causal", None)
    is_causal = context.sdpa_shortcut(pattern, window)
    if is_causal is not None:  # no padding: SDPA's own masks are the pattern
        return sdpa_attention_forward(module, query, key, value, None, is_causal=is_causal, **kwargs)
    mask = context.mask(pattern, window, None)  # [B, 1, T, T] bool
    return sdpa_attention_forward(module, query, key, value, mask, is_causal=False, **kwargs)


def registered_name(original: str | None) -> str:
    """Register ``nosink:<original>`` in the attention and mask interfaces (idempotent)."""
    original = original or "sdpa"
    name = PREFIX + original.removeprefix(PREFIX)
    if name not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(name, nosink_attention)
    if name not in ALL_MASK_ATTENTION_FUNCTIONS:
        base = original.removeprefix(PREFIX)
        mask_function = ALL_MASK_ATTENTION_FUNCTIONS.get(base, sdpa_mask)
        AttentionMaskInterface.register(name, mask_function)
    return name


@contextmanager
def nosink_attention_enabled(model: nn.Module, *, switch: bool = True) -> Iterator[None]:
    """Name the nosink attention in ``model.config`` (if ``switch``) and eval mode for one call; restore both."""
    config = model.config
    with _switch_lock:
        original, training = config._attn_implementation, model.training
        if switch:
            config._attn_implementation = registered_name(original)
        model.eval()
        try:
            yield
        finally:
            config._attn_implementation = original
            model.train(training)
