"""Does ``torch.compile`` pay on this machine? Decoder layers eager against compiled, vanilla and a nosink plan.

    python benchmarks/compile_probe.py [--layers 8] [--hidden 512] [--batch 16x128] [--repeats 5]

A random Llama (no download). Each decoder layer is compiled with ``nn.Module.compile`` (the
model here is private to this script, so compiling it in place changes nobody else's model), the
dynamo cache limits are raised so that no layer falls back to eager, and the KV cache is off on
both sides. Prints the median time of one forward over a right-padded batch, eager and compiled,
for the vanilla causal forward and for ``Encoder.hidden_states`` under ``mask0&bidir``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch._dynamo
from common import random_llama
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from nosink import Encoder


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    run()
    run()  # warm-up, compilation included
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--batch", default="16x128")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--plan", default="mask0&bidir:k=4,k0=1")
    args = parser.parse_args()
    torch._dynamo.config.cache_size_limit = 256  # one entry per layer and pattern: never fall back to eager
    torch._dynamo.config.accumulated_cache_size_limit = 4096
    rows, tokens = (int(n) for n in args.batch.split("x"))
    model = random_llama(layers=args.layers, hidden=args.hidden).eval()
    base = model  # a LlamaModel: the decoder without LM head
    words = Tokenizer(models.WordLevel({"a": 0, "b": 1}, unk_token="a"))  # hidden_states takes ids directly
    encoder = Encoder.from_model(model, PreTrainedTokenizerFast(tokenizer_object=words, pad_token="a"), plan=args.plan)
    ids = torch.randint(2, 200, (rows, tokens))  # [B, T]
    mask = torch.ones_like(ids)  # [B, T]
    mask[rows // 2 :, (3 * tokens) // 4 :] = 0  # half the rows right-padded by a quarter
    sides = {
        "vanilla": lambda: base(input_ids=ids, attention_mask=mask, use_cache=False),
        args.plan: lambda: encoder.hidden_states(ids, mask),
    }
    with torch.inference_mode():
        eager = {name: median_seconds(run, args.repeats) for name, run in sides.items()}
        for layer in base.layers:
            layer.compile(dynamic=False)
        compiled = {name: median_seconds(run, args.repeats) for name, run in sides.items()}
    print(f"random Llama L={args.layers} D={args.hidden}, batch {args.batch}, {torch.get_num_threads()} threads")
    print(f"{'side':24s} {'eager ms':>9s} {'compiled ms':>12s} {'speed-up':>9s}")
    for name in sides:
        speed_up = eager[name] / compiled[name]
        print(f"{name:24s} {eager[name] * 1000:9.1f} {compiled[name] * 1000:12.1f} {speed_up:8.3f}x")


if __name__ == "__main__":
    main()
