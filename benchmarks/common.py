"""What the benchmarks share: a random Llama of a given size (no download), and real mixed-length texts."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
import transformers

VOCAB = 1000
SHARED = Path(__file__).resolve().parents[2] / "shared"


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


def mixed_texts(count: int) -> list[str]:
    """The first ``count`` Banking77 and Emotion training texts (../shared/data), interleaved: short and long."""
    with open(SHARED / "data" / "banking77" / "train.csv", encoding="utf-8", newline="") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    with open(SHARED / "data" / "emotion" / "train.txt", encoding="utf-8") as handle:
        texts += [line.rsplit(";", 1)[0] for line in list(handle)[1:] if line.strip()]  # after the header
    texts = texts[::3] + texts[1::3] + texts[2::3]  # interleave the two sources a little
    return texts[:count]
