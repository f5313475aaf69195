"""Packed against padded batches, in one process and alternating: where packing pays and where it does not.

    python benchmarks/packing.py [--layers 6] [--hidden 384] [--texts 768] [--repeats 3] [--out packing.json]

A random Llama (no download) encodes the same mixed-length texts (12 to 24 words) four ways:
the whole list at once (length-sorted, as ``Encoder.encode`` does offline), with and without
packing, and in random chunks of 16 and 64 texts (what the server's micro-batches look like),
with and without packing. Each case runs once to warm up, then ``--repeats`` times, the cases
alternating; the best time of each counts. Prints texts/s and the ratio to the offline padded run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from common import round_robin, save_random_llama

from nosink import Encoder


def cases(encoder: Encoder, rows: list, chunks: tuple[int, ...]) -> dict[str, Callable[[], object]]:
    quiet = {"show_progress_bar": False}
    found: dict[str, Callable[[], object]] = {
        "all texts, padded": lambda: encoder.embed_rows(rows, **quiet),
        "all texts, packed": lambda: encoder.embed_rows(rows, packing=True, batch_size=64, **quiet),
    }
    for size in chunks:
        parts = [rows[i : i + size] for i in range(0, len(rows), size)]
        for packing in (False, True):
            name = f"chunks of {size}, {'packed' if packing else 'padded'}"
            found[name] = lambda parts=parts, packing=packing, size=size: [
                encoder.embed_rows(part, packing=packing, batch_size=size, **quiet) for part in parts
            ]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--texts", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plan", default="mask0&bidir:k=4,k0=1")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    texts = [" ".join(f"w{i}" for i in rng.integers(2, 250, rng.integers(12, 25))) for _ in range(args.texts)]
    with tempfile.TemporaryDirectory() as folder:
        save_random_llama(folder, layers=args.layers, hidden=args.hidden)
        encoder = Encoder.from_pretrained(folder, plan=args.plan, device="cpu")
    rows = encoder.tokenize(texts)
    timings = round_robin(cases(encoder, rows, (16, 64)), args.repeats)  # round 0 warms up allocator and threads
    best = {name: min(times) for name, times in timings.items()}
    reference = best["all texts, padded"]
    print(f"random Llama L={args.layers} D={args.hidden}, plan {args.plan}, {len(rows)} texts of 12-24 words")
    print(f"{'case':26s} {'texts/s':>8s} {'vs all texts, padded':>21s}")
    for name, seconds in best.items():
        print(f"{name:26s} {len(rows) / seconds:8.0f} {reference / seconds:20.2f}x")
    if args.out:
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "seconds": timings}, indent=1))


if __name__ == "__main__":
    main()
