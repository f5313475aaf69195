"""What every evaluator shares: the embedder protocols and the result type."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Embedder(Protocol):
    """Anything that turns texts into sentence embeddings: ``nosink.Encoder`` or a baseline wrapper."""

    def encode(
        self,
        texts: Sequence[str],
        *,
        instruction: str | None = None,
        batch_size: int | None = None,
        normalize: bool = False,
        show_progress_bar: bool | None = None,
    ) -> np.ndarray:
        """[N, D] float32 embeddings in input order."""
        ...


@runtime_checkable
class TokenEmbedder(Protocol):
    """Anything that gives per-token states with word alignment (``nosink.Encoder.encode_tokens``)."""

    def encode_tokens(
        self,
        texts: Sequence[str] | Sequence[Sequence[str]],
        *,
        instruction: str | None = None,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> list:
        """One ``nosink.TokenEncoding`` per text (``word_ids`` set when lists of words are given)."""
        ...


@dataclass
class TaskResult:
    """The outcome of one evaluation: metric name → value, plus sizes and timings (seconds)."""

    task: str
    metrics: dict[str, float | int]
    sizes: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
