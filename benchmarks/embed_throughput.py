"""Throughput of ``embed_corpus`` (what ``nosink embed`` runs) against ``Encoder.encode`` on the same texts.

    python benchmarks/embed_throughput.py [--texts 4000] [--layers 6] [--hidden 384] [--shard-size 1000] [--repeats 2]

Texts: Banking77 and Emotion training texts from ../shared/data (a real mix of lengths), written
to a JSONL corpus. Model: a random Llama of the given size (no download) with stories260k's
tokenizer. Both sides use the same loaded encoder; ``encode`` gets the texts in memory, while
``embed_corpus`` also validates and hashes the file, streams it shard by shard and writes Parquet.
The two are timed alternately, ``--repeats`` times each, and the ratio of the medians is printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers
from common import SHARED, mixed_texts
from transformers import AutoTokenizer

from nosink import Encoder
from nosink.corpus import CorpusSource, embed_corpus


def random_encoder(folder: Path, *, layers: int, hidden: int, plan: str) -> Encoder:
    tokenizer = AutoTokenizer.from_pretrained(SHARED / "models" / "stories260k")
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 128),
    )
    torch.manual_seed(0)
    transformers.AutoModel.from_config(config, dtype=torch.float32).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Encoder.from_pretrained(str(folder), plan=plan, device="cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=4000)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--plan", default="mask0&bidir:k=4,k0=1")
    args = parser.parse_args()
    texts = mixed_texts(args.texts)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        encoder = random_encoder(root / "model", layers=args.layers, hidden=args.hidden, plan=args.plan)
        corpus = root / "corpus.jsonl"
        corpus.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)), "utf-8")
        encoder.encode(texts[:64])  # warm-up
        encode_s, embed_s = [], []
        for repeat in range(args.repeats):
            start = time.perf_counter()
            encoder.encode(texts, normalize=True, show_progress_bar=False)
            encode_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            out = root / f"out-{repeat}"
            embed_corpus(encoder, CorpusSource.open(corpus), out, shard_size=args.shard_size, show_progress_bar=False)
            embed_s.append(time.perf_counter() - start)
    tokens = sum(len(row.ids) for row in encoder.tokenize(texts))
    encode_rate, embed_rate = len(texts) / statistics.median(encode_s), len(texts) / statistics.median(embed_s)
    print(f"random Llama L={args.layers} D={args.hidden}, plan {args.plan}, torch threads {torch.get_num_threads()}")
    print(f"{len(texts)} texts ({tokens} tokens) from Banking77 + Emotion, shards of {args.shard_size}")
    print(f"Encoder.encode : {encode_rate:8.1f} texts/s   runs {', '.join(f'{s:.1f}' for s in encode_s)} s")
    print(f"embed_corpus   : {embed_rate:8.1f} texts/s   runs {', '.join(f'{s:.1f}' for s in embed_s)} s")
    print(f"ratio embed/encode: {embed_rate / encode_rate:.3f}")


if __name__ == "__main__":
    main()
