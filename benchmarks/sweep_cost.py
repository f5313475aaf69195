"""Cost of a k-sweep against separate runs, as a ratio measured in one run.

    python benchmarks/sweep_cost.py [--layers 22] [--hidden 256] [--texts 64] [--tokens 64] [--family inplace-bidir]

A random Llama of TinyLlama's depth (22 layers, no download) scores every k = 1…L of one family.
"separate" runs ``Encoder.encode`` once per plan; "sweep" is ``sweep_features`` (layer calls shared
by plans that agree up to that layer are made once). Decoder-layer calls are counted with hooks;
for inplace-bidir they are L² against (L-1) + L(L+1)/2, a ratio of about 0.57 for L = 22. Both
runs are checked to give the same features (the largest difference is printed).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import VOCAB, random_llama
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from nosink import Encoder
from nosink.eval.sweep import family_plans, sweep_features


def word_tokenizer(vocab: int) -> PreTrainedTokenizerFast:
    words = {f"w{i}": i for i in range(vocab)}
    tokenizer = Tokenizer(models.WordLevel(words, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="w0", pad_token="w0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=22)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--family", default="inplace-bidir")
    args = parser.parse_args()
    model = random_llama(layers=args.layers, hidden=args.hidden)
    encoder = Encoder.from_model(model, word_tokenizer(VOCAB))
    rng = np.random.default_rng(0)
    texts = [
        " ".join(f"w{i}" for i in rng.integers(1, VOCAB, rng.integers(args.tokens // 2, args.tokens)))
        for _ in range(args.texts)
    ]
    plans = family_plans(args.family, args.layers)

    calls = {"n": 0}

    def count(*_: object) -> None:
        calls["n"] += 1

    hooks = [layer.register_forward_hook(count) for layer in model.layers]
    start = time.perf_counter()
    separate = [encoder.with_plan(plan).encode(texts) for plan in plans]
    separate_seconds, separate_calls = time.perf_counter() - start, calls["n"]
    start = time.perf_counter()
    swept = sweep_features(encoder, texts, plans)
    sweep_seconds, sweep_calls = time.perf_counter() - start, calls["n"] - separate_calls
    for hook in hooks:
        hook.remove()

    worst = max(float(np.abs(a - b).max()) for a, b in zip(separate, swept, strict=True))
    L = args.layers
    sizes = f"{args.texts} texts of {args.tokens // 2}-{args.tokens} tokens"
    print(f"random Llama L={L} D={args.hidden}, {sizes}, torch {torch.__version__}")
    print(f"{args.family} k=1..{L}: {len(plans)} plans, largest feature difference {worst:.2e}")
    print(f"separate runs {separate_seconds:7.2f} s   (layer calls {separate_calls})")
    print(f"sweep         {sweep_seconds:7.2f} s   (layer calls {sweep_calls})")
    print(f"ratio sweep/separate: {sweep_seconds / separate_seconds:.2f}")


if __name__ == "__main__":
    main()
