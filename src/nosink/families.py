"""What is family-specific, in one registry keyed by ``config.model_type``.

Only the INTER/EXTRA/EXTEND runner needs it: where the embeddings, the decoder layers and the
final norm live on the base model, and which extra inputs (rotary embeddings) each layer takes.
A single-pass plan runs through the model's own ``forward`` and needs none of it, but every
family is checked here so that an untested model fails loudly instead of running causally.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nosink.errors import NosinkError

LayerInputs = Callable[[int], dict[str, Any]]


@dataclass(frozen=True)
class Family:
    """Where a family keeps its parts, and how to feed its decoder layers one at a time."""

    layers: str
    norm: str
    embed: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
    layer_inputs: Callable[[nn.Module, torch.Tensor, torch.Tensor], LayerInputs]

    def decoder_layers(self, base: nn.Module) -> nn.ModuleList:
        return getattr(base, self.layers)

    def final_norm(self, base: nn.Module) -> nn.Module:
        return getattr(base, self.norm)


def _embed_tokens(base: nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    return base.embed_tokens(input_ids)  # [B, T, D]; scaled embeddings (Gemma) scale inside the module


def _shared_rope(base: nn.Module, hidden: torch.Tensor, position_ids: torch.Tensor) -> LayerInputs:
    rope = base.rotary_emb(hidden, position_ids)  # (cos, sin), each [B, T, head_dim]
    return lambda layer: {"position_embeddings": rope, "position_ids": position_ids}


def _rope_per_layer_type(base: nn.Module, hidden: torch.Tensor, position_ids: torch.Tensor) -> LayerInputs:
    types = base.config.layer_types
    ropes = {t: base.rotary_emb(hidden, position_ids, t) for t in set(types)}  # local and global rope
    return lambda layer: {"position_embeddings": ropes[types[layer]], "position_ids": position_ids}


def _embed_gpt2(base: nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    return base.drop(base.wte(input_ids) + base.wpe(position_ids))  # [B, T, D], learned positions


def _positions_only(base: nn.Module, hidden: torch.Tensor, position_ids: torch.Tensor) -> LayerInputs:
    return lambda layer: {"position_ids": position_ids}


_LLAMA_LIKE = Family("layers", "norm", _embed_tokens, _shared_rope)

FAMILIES: dict[str, Family] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "phi3": _LLAMA_LIKE,
    "olmo": _LLAMA_LIKE,
    "olmo2": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "gemma3_text": Family("layers", "norm", _embed_tokens, _rope_per_layer_type),
    "gpt2": Family("h", "ln_f", _embed_gpt2, _positions_only),
}


def family_for(config: Any) -> Family:
    """The registry entry for a model config; a clear error for untested families."""
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        supported = ", ".join(sorted(FAMILIES))
        raise NosinkError(
            f"model type {model_type!r} is not supported (tested: {supported}); "
            "its attention could silently stay causal, so nosink refuses it"
        )
    return FAMILIES[model_type]
