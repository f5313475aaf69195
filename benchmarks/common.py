"""What the benchmarks share: a random Llama (no download), a word-level tokenizer, round-robin timing, real texts."""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, processors

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


def word_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """Words ``w2`` … ``w{VOCAB-1}`` are their own ids; ``<s>`` (0) starts every text; ``<unk>`` (1) pads."""
    words = {"<s>": 0, "<unk>": 1, **{f"w{i}": i for i in range(2, VOCAB)}}
    tokenizer = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", unk_token="<unk>", pad_token="<unk>"
    )


def save_random_llama(folder: Path | str, *, layers: int, hidden: int) -> None:
    """Save :func:`random_llama` and :func:`word_tokenizer` to ``folder``, loadable by name like a hub model."""
    random_llama(layers=layers, hidden=hidden).save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)


def round_robin(sides: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of every side per round, the sides interleaved so that drift hits all alike; round 0 warms up."""
    samples: dict[str, list[float]] = {name: [] for name in sides}
    for repeat in range(repeats + 1):
        for name, run in sides.items():
            start = time.perf_counter()
            run()
            if repeat:
                samples[name].append(time.perf_counter() - start)
    return samples


def mixed_texts(count: int) -> list[str]:
    """The first ``count`` Banking77 and Emotion training texts (../shared/data), interleaved: short and long."""
    with open(SHARED / "data" / "banking77" / "train.csv", encoding="utf-8", newline="") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    with open(SHARED / "data" / "emotion" / "train.txt", encoding="utf-8") as handle:
        texts += [line.rsplit(";", 1)[0] for line in list(handle)[1:] if line.strip()]  # after the header
    texts = texts[::3] + texts[1::3] + texts[2::3]  # interleave the two sources a little
    return texts[:count]
