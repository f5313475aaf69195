"""Per-layer attention patterns of docs/spec.md §2 and the boolean masks that implement them.

For a query at position i and a key at position j, both counted from the row's first real token:

    causal          j <= i
    backward        j >= i
    bidir           always
    nosink(m)       not (j <= m and j < i)
    nosink_causal   j <= i and not (j <= m and j < i)

Padding keys are never attended; every row keeps itself, so no row is fully masked (padding
rows attend only to themselves and stay finite).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

import torch

from nosink.errors import NosinkError


class Pattern(str, Enum):
    """The five attention patterns a layer can run with."""

    CAUSAL = "causal"
    BACKWARD = "backward"
    BIDIR = "bidir"
    NOSINK = "nosink"
    NOSINK_CAUSAL = "nosink_causal"

    def __str__(self) -> str:
        return self.value


_SINK_PATTERNS = (Pattern.NOSINK, Pattern.NOSINK_CAUSAL)
_LAYER_PATTERN_RE = re.compile(r"^(?P<kind>[a-z_]+)(?:@(?P<m>-?\d+))?$", re.ASCII)  # digits 0-9 only
MAX_SINK_INDEX = 1_000_000  # m >= T - 1 already hides every earlier token (the backward pattern)


@dataclass(frozen=True)
class LayerPattern:
    """One layer's pattern; ``m`` is the sink width index of MASKm (used by the nosink patterns only)."""

    kind: Pattern
    m: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", Pattern(self.kind))
        if self.m < 0:
            raise NosinkError(f"the sink index m must be >= 0, got m={self.m}")
        if self.m > MAX_SINK_INDEX:
            raise NosinkError(
                f"the sink index m must be at most {MAX_SINK_INDEX:,}, got m={self.m} "
                "(any m >= T - 1 already hides every earlier token: that is the backward pattern)"
            )
        if self.m and self.kind not in _SINK_PATTERNS:
            raise NosinkError(f"only nosink patterns take a sink index; got {self.kind.value}@{self.m}")

    @classmethod
    def parse(cls, text: str) -> LayerPattern:
        """Parse ``causal``, ``bidir``, ``backward``, ``nosink``, ``nosink@3``, ``nosink_causal@2``."""
        match = _LAYER_PATTERN_RE.match(text.strip())
        known = ", ".join(p.value for p in Pattern)
        if match is None or match["kind"] not in {p.value for p in Pattern}:
            raise NosinkError(f"unknown layer pattern {text!r}; use one of {known} (nosink ones take @M)")
        return cls(Pattern(match["kind"]), int(match["m"] or 0))

    @classmethod
    def coerce(cls, value: LayerPattern | Pattern | str) -> LayerPattern:
        """Accept a LayerPattern, a Pattern or its string form."""
        if isinstance(value, LayerPattern):
            return value
        if isinstance(value, Pattern):
            return cls(value)
        if isinstance(value, str):
            return cls.parse(value)
        raise NosinkError(f"a layer pattern must be a string or Pattern, got {type(value).__name__}")

    def __str__(self) -> str:
        return f"{self.kind.value}@{self.m}" if self.m else self.kind.value


CAUSAL = LayerPattern(Pattern.CAUSAL)


def relative_positions(attention_mask: torch.Tensor, segment_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Position of each token counted from its text's first real token; padding gets 0.

    attention_mask: [B, T] (1 = real token) -> [B, T] long
    segment_ids: [B, T] or None; in a packed row (several texts one after another) the text each
    token belongs to, and positions restart at 0 where it changes.
    """
    real = attention_mask.long()
    if segment_ids is None:
        return ((real.cumsum(-1) - 1) * real).clamp(min=0)
    arange = torch.arange(real.shape[-1], device=real.device).expand_as(real)  # [B, T]
    starts = torch.ones_like(real, dtype=torch.bool)  # [B, T]: a token that begins its text
    starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    first = torch.where(starts, arange, 0).cummax(-1).values  # [B, T]: index of the text's first token
    return (arange - first) * real


def allowed(pattern: LayerPattern, positions: torch.Tensor) -> torch.Tensor:
    """Which (query, key) pairs the pattern allows, ignoring padding.

    positions: [B, T] -> [B, T, T] bool, entry [b, i, j] = query i may attend key j
    """
    qi = positions[:, :, None]  # [B, T, 1]
    kj = positions[:, None, :]  # [B, 1, T]
    hidden_sink = (kj <= pattern.m) & (kj < qi)  # [B, T, T]: key in the sink, seen from a later query
    kind = pattern.kind
    if kind is Pattern.CAUSAL:
        return kj <= qi
    if kind is Pattern.BACKWARD:
        return kj >= qi
    if kind is Pattern.BIDIR:
        return torch.ones_like(hidden_sink)
    if kind is Pattern.NOSINK:
        return ~hidden_sink
    return (kj <= qi) & ~hidden_sink  # NOSINK_CAUSAL


def build_mask(
    pattern: LayerPattern,
    attention_mask: torch.Tensor,
    *,
    sliding_window: int | None = None,
    segment_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The boolean SDPA mask (True = attend) of one pattern for one padded (or packed) batch.

    attention_mask: [B, T] (1 = real token) -> [B, 1, T, T] bool
    A sliding window w (for layers that have one) keeps only |i - j| < w. With ``segment_ids``
    [B, T] (packed rows), a token attends only within its own text, with the pattern applied to
    positions counted from that text's first token: the mask is block-diagonal.
    """
    real = attention_mask.bool()  # [B, T]
    positions = relative_positions(attention_mask, segment_ids)  # [B, T]
    mask = allowed(pattern, positions) & real[:, None, :]  # [B, T, T]: padding keys never attended
    if segment_ids is not None:
        mask &= segment_ids[:, :, None] == segment_ids[:, None, :]  # [B, T, T]: same text only
    if sliding_window is not None:
        qi, kj = positions[:, :, None], positions[:, None, :]  # [B, T, 1], [B, 1, T]
        mask &= (kj > qi - sliding_window) & (kj < qi + sliding_window)  # [B, T, T]: |i - j| < window
    eye = torch.eye(mask.shape[-1], dtype=torch.bool, device=mask.device)  # [T, T]
    return (mask | eye)[:, None]  # [B, 1, T, T]: every row keeps itself


def additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean mask -> additive float mask for eager attention (0 = attend, dtype min = blocked).

    mask: [B, 1, T, T] bool -> [B, 1, T, T] dtype
    """
    blocked = torch.finfo(dtype).min
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, blocked)
