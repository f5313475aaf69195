"""What every evaluator shares: the embedder protocols, how an embedder describes itself in a record,
the result type, and the checked, timed ``encode`` call of the sentence-level evaluators.

- :class:`Embedder` and :class:`TokenEmbedder`: what an evaluator needs of a model;
- :class:`EmbedderKind`, :func:`embedder_description` and :func:`dtype_of`: the ``kind`` of an
  embedder (also the prefix of a spec, see :mod:`nosink.eval.embedders`) and the dict that
  ``describe()`` of a baseline (:mod:`nosink.eval.baselines`) and
  :func:`~nosink.eval.embedders.describe_embedder` build;
- :class:`TaskResult`: the outcome of one evaluation;
- :func:`timed` and :func:`encode_checked`: what :mod:`nosink.eval.sts` and
  :mod:`nosink.eval.classification` both do around ``embedder.encode``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from nosink.errors import NosinkError

if TYPE_CHECKING:
    import torch

_T = TypeVar("_T")


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


# ---------------------------------------------------------------- describing an embedder


class EmbedderKind(str, Enum):
    """The prefix of an embedder spec (``KIND:NAME``) for :func:`~nosink.eval.embedders.load_embedder`."""

    NOSINK = "nosink"
    SENTENCE_TRANSFORMERS = "st"
    HF = "hf"


def embedder_description(
    kind: EmbedderKind,
    name: str,
    plan: str | None,
    pooling: str | None,
    dtype: str | None,
    device: torch.device,
    dim: int,
) -> dict[str, Any]:
    """The fields every embedder description has: kind, name, plan, pooling, dtype, device and dim."""
    return {
        "kind": kind.value,
        "name": str(name),
        "plan": plan,
        "pooling": pooling,
        "dtype": dtype,
        "device": str(device),
        "dim": int(dim),
    }


def dtype_of(module: torch.nn.Module) -> str | None:
    """The dtype of a module's first parameter without the ``torch.`` prefix, or None when it has none."""
    parameter = next(iter(module.parameters()), None)
    return None if parameter is None else str(parameter.dtype).removeprefix("torch.")


# ---------------------------------------------------------------- results


@dataclass
class TaskResult:
    """The outcome of one evaluation: metric name → value, plus sizes, timings (seconds) and settings."""

    task: str
    metrics: dict[str, Any]
    sizes: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # what the evaluator decided (e.g. prompts), for records
    details: dict[str, Any] = field(default_factory=dict)  # bulky results the metrics summarise (per-query scores)


# ---------------------------------------------------------------- embedding for an evaluator


def timed(function: Callable[[], _T]) -> tuple[_T, float]:
    """Call ``function`` and return its result with the seconds it took."""
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def encode_checked(
    embedder: Embedder,
    texts: Sequence[str],
    *,
    instruction: str | None,
    batch_size: int | None,
    progress: bool | None,
) -> np.ndarray:
    """[N, D] float32 embeddings, checked for shape and finiteness."""
    vectors = embedder.encode(list(texts), instruction=instruction, batch_size=batch_size, show_progress_bar=progress)
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise NosinkError(f"the embedder returned shape {vectors.shape} for {len(texts)} texts; expected [N, D]")
    if not np.isfinite(vectors).all():
        raise NosinkError("the embedder returned NaN or infinite values")
    return vectors
