"""Peak memory of ``Encoder.encode`` per plan, and the bytes of nosink's attention masks.

    python benchmarks/memory.py [--layers 8] [--hidden 512] [--batch 32] [--tokens 256] [--out memory.json]

Each plan runs in a fresh Python process (so peak RSS, ``VmHWM``, is its own): load a random
Llama (float32, saved once to a temporary folder), then encode ``--batch`` texts of ``--tokens``
tokens with left/right lengths mixed (so the batch has padding and masks are built). Reported:
peak RSS over the RSS after loading (activations, masks, allocator), and, counted exactly, the
bytes of the boolean masks nosink built for that batch (every ``build_mask`` result, recorded by
wrapping that function in the child process only).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rag_memory import peak_rss, settle

PLANS = ("baseline", "inplace-bidir:k={L}", "mask0-bidir:k={K}", "mask0&bidir:k={K},k0=1", "inter-back:k={K}")
MB = 1e6


def child(folder: str, plan: str, batch: int, tokens: int) -> dict[str, Any]:
    import psutil
    import torch

    import nosink.attention
    from nosink import Encoder

    masks: list[int] = []
    build = nosink.attention.build_mask

    def counted(*args: Any, **kwargs: Any) -> torch.Tensor:
        mask = build(*args, **kwargs)
        masks.append(mask.numel() * mask.element_size())
        return mask

    nosink.attention.build_mask = counted  # this child process only: counts the masks of one encode
    encoder = Encoder.from_pretrained(folder, plan=plan, device="cpu")
    settle()
    loaded = psutil.Process().memory_info().rss
    lengths = torch.randint(tokens // 2, tokens, (batch,), generator=torch.Generator().manual_seed(0)).tolist()
    texts = [" ".join(["w2"] * length) for length in lengths]  # mixed lengths: padded batches, masks built
    encoder.encode(texts, batch_size=batch, show_progress_bar=False)
    weights = sum(p.numel() * p.element_size() for p in encoder.base.parameters())
    return {"plan": plan, "weights": weights, "peak_over_loaded": peak_rss() - loaded, "mask_bytes": sum(masks)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--out")
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "PLAN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.batch, args.tokens)))
        return
    from common import save_random_llama

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        save_random_llama(folder, layers=args.layers, hidden=args.hidden)
        for template in PLANS:
            plan = template.format(L=args.layers, K=args.layers // 2)
            command = [sys.executable, __file__, "--child", folder, plan, "--batch", str(args.batch)]
            command += ["--tokens", str(args.tokens)]
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    print(
        f"random Llama L={args.layers} D={args.hidden}; one batch of {args.batch} texts of up to {args.tokens} tokens"
    )
    print("| plan | weights | peak RSS over loaded | masks built | masks / weights |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        weights, masks = row["weights"] / MB, row["mask_bytes"] / MB
        peak = row["peak_over_loaded"] / MB
        print(f"| {row['plan']} | {weights:.1f} MB | {peak:.1f} MB | {masks:.2f} MB | {masks / weights:.2%} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
