"""Peak memory of ``Encoder.encode`` per plan, and the bytes of nosink's attention masks.

    python benchmarks/memory.py [--layers 8] [--hidden 512] [--batch 32] [--tokens 256] [--threads N] [--out FILE]
    python benchmarks/memory.py --real smollm2-135m-instruct|gemma-3-270m --tokens 4096 --batch 2 [--out FILE]

Each plan runs in a fresh Python process (so peak RSS, ``VmHWM``, is its own): load the model
(float32, on the CPU) and read every weight once, then encode one padded batch of ``--batch``
texts: the first exactly ``--tokens`` tokens long, the others of ``--tokens / 2`` to ``--tokens``
tokens (so a batch of 2 or more has padding and masks are built). ``max_length`` is ``--tokens``.
Reported: peak RSS over the RSS after loading (activations, masks, allocator), and, counted
exactly, the bytes of the boolean masks nosink built for that batch (every ``build_mask`` result,
recorded by wrapping that function in the child process only), and the token count of every row as
the encoder tokenized it.

Two things the child process sets for itself only. transformers memory-maps a float32 checkpoint
loaded as float32, so the weights enter RSS only when first read: they are read once before the
RSS "after loading" is taken, or the first forward's page-ins (about the size of the weights)
would count as peak. And ``Encoder.encode`` cuts a batch where padding costs more than an extra
forward (on the CPU, 64 tokens): that cost is set very high, so the texts run as one padded batch.

Model: a random Llama of ``--layers`` x ``--hidden`` with a word-level tokenizer (saved once to a
temporary folder; texts are repeated words), or (``--real``) a real LLM provisioned by
``nosink.provision`` with its own tokenizer, on real running text (Banking77 and Emotion texts from
../shared/data, one after another) cut to each row's length and truncated at ``max_length``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from rag_memory import peak_rss, settle

PLANS = ("baseline", "inplace-bidir:k={L}", "mask0-bidir:k={K}", "mask0&bidir:k={K},k0=1", "inter-back:k={K}")
MB = 1e6
MARGIN = 64  # extra tokens of text for the longest row, so that it is cut at exactly max_length


def child(folder: str, plan: str, batch: int, tokens: int, real: bool) -> dict[str, Any]:
    import psutil
    import torch

    import nosink.attention
    import nosink.inputs
    from nosink import Encoder

    masks: list[int] = []
    build = nosink.attention.build_mask

    def counted(*args: Any, **kwargs: Any) -> torch.Tensor:
        mask = build(*args, **kwargs)
        masks.append(mask.numel() * mask.element_size())
        return mask

    nosink.attention.build_mask = counted  # this child process only: counts the masks of one encode
    nosink.inputs.BATCH_COST_TOKENS["cpu"] = 1 << 40  # this child process only: all texts in one padded batch
    encoder = Encoder.from_pretrained(folder, plan=plan, device="cpu", dtype="float32", max_length=tokens)
    with torch.inference_mode():
        sum(float(p.sum()) for p in encoder.base.parameters())  # memory-mapped weights into RSS before `loaded`
    lengths = torch.randint(tokens // 2, tokens, (batch,), generator=torch.Generator().manual_seed(0)).tolist()
    lengths[0] = tokens + MARGIN  # the longest row: exactly max_length = --tokens after truncation
    if real:
        from common import text_ids

        ids = text_ids(encoder.tokenizer, max(lengths))
        texts = [encoder.tokenizer.decode(ids[:length]) for length in lengths]  # real text, about `length` tokens
    else:
        texts = [" ".join(["w2"] * length) for length in lengths]  # mixed lengths: padded batches, masks built
    rows = [len(row.ids) for row in encoder.tokenize(texts, warn=False)]
    settle()
    loaded = psutil.Process().memory_info().rss
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the longest text is truncated on purpose
        encoder.encode(texts, batch_size=batch, show_progress_bar=False)
    weights = sum(p.numel() * p.element_size() for p in encoder.base.parameters())
    peak = peak_rss() - loaded
    return {"plan": plan, "weights": weights, "peak_over_loaded": peak, "mask_bytes": sum(masks), "row_tokens": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--real", default=None, help="a real provisioned LLM (nosink models list) instead")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch threads in each child (default: torch's)")
    parser.add_argument("--out")
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "PLAN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        print(json.dumps(child(args.child[0], args.child[1], args.batch, args.tokens, args.real is not None)))
        return

    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        if args.real:
            from nosink.provision import provision

            folder = str(provision(args.real).folder)  # offline once cached
            config = json.loads((Path(folder) / "config.json").read_text())
            layers = config["num_hidden_layers"]
            what = f"{args.real} ({config['model_type']}, L={layers}, D={config['hidden_size']}, float32)"
        else:
            from common import save_random_llama

            folder, layers, what = temporary, args.layers, f"random Llama L={args.layers} D={args.hidden}"
            save_random_llama(folder, layers=args.layers, hidden=args.hidden)
        for template in PLANS:
            plan = template.format(L=layers, K=layers // 2)
            command = [sys.executable, __file__, "--child", folder, plan, "--batch", str(args.batch)]
            command += ["--tokens", str(args.tokens)] + (["--real", args.real] if args.real else [])
            command += ["--threads", str(args.threads)] if args.threads else []
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode:
                raise SystemExit(f"{plan}: the child process failed:\n{result.stderr[-3000:]}")
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(f"  {plan}: done", file=sys.stderr, flush=True)
    print(f"{what}; one batch of {args.batch} texts of up to {args.tokens} tokens (rows: {rows[0]['row_tokens']})")
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
