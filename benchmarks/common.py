"""What the benchmarks share: a random Llama of a given size (no download), float32, eval mode."""

from __future__ import annotations

import torch
import transformers

VOCAB = 1000


def random_llama(*, layers: int, hidden: int, seed: int = 0) -> torch.nn.Module:
    """A random ``LlamaModel`` with ``layers`` layers of width ``hidden`` (64-dim heads, 2 query heads per KV head)."""
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 128),
    )
    torch.manual_seed(seed)
    return transformers.AutoModel.from_config(config, dtype=torch.float32).eval()
