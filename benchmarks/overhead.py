"""Overhead of nosink plans against the vanilla forward pass, as ratios measured in one run.

    python benchmarks/overhead.py [--layers 8] [--hidden 256] [--batch 16] [--tokens 128] [--repeats 5]

Builds a random Llama of the given size (no download), then times ``Encoder.hidden_states`` for
several plans on the same padded batch and prints each time relative to ``baseline`` (the model's
own forward). Single-pass plans should sit near 1.0x (one boolean mask per pattern); INTER-X(k)
runs k extra layers and EXTRA/EXTEND likewise, so their expected cost is (L + k) / L.
"""

from __future__ import annotations

import argparse
import functools
import statistics

import torch
from common import VOCAB, random_llama, round_robin

from nosink import Encoder

PLANS = [
    "baseline",
    "inplace-bidir:k=4",
    "mask0-bidir:k=4",
    "mask0&bidir:k=6,k0=2",
    "inter-back:k=4",
    "inter-bidir:k=4",
    "extra-bidir:k=4",
    "extend-bidir:k=2",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    model = random_llama(layers=args.layers, hidden=args.hidden)
    lengths = torch.linspace(args.tokens // 4, args.tokens, args.batch).long()
    mask = (torch.arange(args.tokens)[None] < lengths[:, None]).long()  # [B, T], right padded
    ids = torch.randint(3, VOCAB, (args.batch, args.tokens)) * mask
    encoders = {plan: Encoder.from_model(model, tokenizer=lambda *a, **k: None, plan=plan) for plan in PLANS}
    sides = {plan: functools.partial(encoder.hidden_states, ids, mask) for plan, encoder in encoders.items()}
    samples = round_robin(sides, args.repeats)  # plans interleaved, so drift hits all alike
    times = {plan: statistics.median(values) for plan, values in samples.items()}
    print(f"random Llama L={args.layers} D={args.hidden}, batch {args.batch}x{args.tokens}, torch {torch.__version__}")
    for plan, seconds in times.items():
        print(f"{plan:24s} {seconds * 1000:8.1f} ms  {seconds / times['baseline']:5.2f}x baseline")


if __name__ == "__main__":
    main()
