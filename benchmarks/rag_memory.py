"""Memory of one-model RAG (chat model + ``Encoder.from_model``) against the usual two-model set-up.

    python benchmarks/rag_memory.py [--layers 12] [--hidden 1024] [--vocab 32000] [--texts 16] [--out rag_memory.json]

Every measurement runs in a fresh Python process, which imports torch, transformers and nosink,
records its memory, then does one of:

* ``chat``: load the chat model (``AutoModelForCausalLM``) and greedily generate 8 tokens.
* ``one-model``: the same, plus ``Encoder.from_model(chat_model, ...)`` (same weights) encoding ``--texts`` texts.
* ``two-model``: the same, plus a second copy, ``Encoder.from_pretrained(folder)``, encoding the texts.

Memory after the work minus memory after the imports (both after ``gc.collect()`` and glibc's
``malloc_trim(0)``, so freed heap memory does not count) is reported as RSS, PSS and the peak RSS
(``VmHWM``). PSS counts a page shared by k mappings as 1/k, so it is the memory the process
really costs. RSS counts a page once per mapping. The difference matters here: transformers
memory-maps a safetensors checkpoint whose dtype is the requested one. Two loads of the same file
then read the same page-cache pages, so RSS counts them twice and PSS once. A checkpoint in
another dtype (bfloat16 loaded as float32, the usual case for hub checkpoints on a CPU) is
converted into private memory, once per load, like weights moved to a GPU.

Models: a random-initialised Llama of the given size, saved once to a temporary folder in float32
and in bfloat16, with stories260k's tokenizer; and stories260k itself (``--stories``), when present.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[2] / "shared"
PLAN = "mask0&bidir:k=2,k0=1"
SETUPS = ("chat", "one-model", "two-model")
TEXTS = [
    "Tom lost his red ball in the park and his dog found it under a big tree.",
    "Lily baked a cake with her mom and they put pink flowers on top.",
    "The cat slept in the warm sun all day long.",
    "Ben and Sue built a sand castle at the beach, but a wave knocked it down.",
    "A little bird could not fly, so the girl gave it water and it felt better.",
    "The boy was scared of the dark, so his dad gave him a night light.",
    "Sam shared his toy car with his friend, and they played all day.",
    "It rained and rained, and the frog was happy and jumped in the puddle.",
]
MB = 1e6


# -------------------------------------------------------------------- child process


def settle() -> None:
    """Collect garbage and hand freed heap memory back to the OS, so that RSS and PSS show live memory."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_rss() -> int:
    """This process's peak RSS in bytes (VmHWM; unlike ru_maxrss it starts afresh at exec, not at fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # kB
    raise SystemExit("no VmHWM in /proc/self/status; this benchmark needs Linux")


def measure(folder: str, setup: str, texts: int, threads: int) -> dict[str, Any]:
    """Load and run one set-up in this (fresh) process; memory deltas in bytes against after the imports."""
    import psutil
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nosink import Encoder

    torch.set_num_threads(threads)
    process = psutil.Process()
    settle()
    start = process.memory_full_info()
    started = time.perf_counter()
    chat = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoder = None
    if setup == "one-model":
        encoder = Encoder.from_model(chat, tokenizer, plan=PLAN)
    elif setup == "two-model":
        encoder = Encoder.from_pretrained(folder, plan=PLAN, dtype="float32", device="cpu")
    if encoder is not None:
        vectors = encoder.encode((TEXTS * texts)[:texts], normalize=True)  # [N, D]
        assert vectors.shape == (texts, chat.config.hidden_size)
    prompt = tokenizer("Once upon a time", return_tensors="pt")
    with torch.no_grad():
        chat.generate(**prompt, do_sample=False, max_new_tokens=8, pad_token_id=tokenizer.pad_token_id or 0)
    seconds = time.perf_counter() - started
    settle()
    end = process.memory_full_info()
    peak = peak_rss()
    models = [chat] if encoder is None or encoder.model is chat else [chat, encoder.model]
    storages = {}
    for model in models:
        for tensor in [*model.parameters(), *model.buffers()]:
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
    return {
        "setup": setup,
        "parameters": sum(p.numel() for p in chat.parameters()),
        "weights_bytes": sum(storages.values()),  # unique tensor storages of every model in the process
        "rss_delta": end.rss - start.rss,
        "pss_delta": end.pss - start.pss,
        "peak_rss_delta": peak - start.rss,
        "rss_after_imports": start.rss,
        "seconds": round(seconds, 2),
    }


# -------------------------------------------------------------------- parent process


def save_random_llama(folder: Path, *, layers: int, hidden: int, vocab: int, stories: Path) -> None:
    """A random Llama chat model (untied LM head) in float32 and bfloat16 checkpoints, with stories260k's tokenizer."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    config = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=int(2.75 * hidden),
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 256),
        tie_word_embeddings=False,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(stories)
    for dtype in ("float32", "bfloat16"):
        model.to(getattr(torch, dtype)).save_pretrained(folder / dtype)
        tokenizer.save_pretrained(folder / dtype)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else the machine type."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def run_child(folder: Path, setup: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", str(folder), setup, "--texts", str(args.texts)]
    command += ["--threads", str(args.threads)]
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{setup} on {folder} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(rows: list[dict[str, Any]]) -> str:
    header = (
        "| model | checkpoint | set-up | weights held | RSS Δ | PSS Δ | peak RSS Δ | PSS Δ over chat alone | "
        "PSS Δ / one-model's |\n|---|---|---|---|---|---|---|---|---|"
    )
    lines = [header]
    for row in rows:
        same = {r["setup"]: r for r in rows if (r["model"], r["checkpoint"]) == (row["model"], row["checkpoint"])}
        extra = row["pss_delta"] - same["chat"]["pss_delta"]
        ratio = row["pss_delta"] / same["one-model"]["pss_delta"]
        cells = [row["model"], row["checkpoint"], row["setup"]]
        cells += [f"{row[key] / MB:,.1f} MB" for key in ("weights_bytes", "rss_delta", "pss_delta", "peak_rss_delta")]
        cells += [f"{extra / MB:+,.1f} MB", f"{ratio:.2f}x"]
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--texts", type=int, default=16, help="texts encoded in the one- and two-model set-ups")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in each measured process")
    parser.add_argument("--stories", type=Path, default=SHARED / "models" / "stories260k")
    parser.add_argument("--out", type=Path, help="write the measurements as JSON")
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "SETUP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1], args.texts, args.threads)))
        return
    if not args.stories.is_dir():
        raise SystemExit(f"{args.stories} is not a model folder (its tokenizer is used too); pass --stories")
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_random_llama(folder, layers=args.layers, hidden=args.hidden, vocab=args.vocab, stories=args.stories)
        name = f"random Llama L={args.layers} D={args.hidden} V={args.vocab}"
        targets = [
            (name, "float32 (memory-mapped)", folder / "float32"),
            (name, "bfloat16 → float32", folder / "bfloat16"),
            ("stories260k", "float32 (memory-mapped)", args.stories),
        ]
        for model, checkpoint, path in targets:
            for setup in SETUPS:
                row = {"model": model, "checkpoint": checkpoint, **run_child(path, setup, args)}
                rows.append(row)
                print(f"{model} | {checkpoint} | {setup}: PSS Δ {row['pss_delta'] / MB:,.1f} MB", file=sys.stderr)
    import torch
    import transformers

    machine = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "processor": cpu_model(),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
    }
    print(table(rows))
    print(f"\n{machine}\nwhole benchmark: {time.perf_counter() - started:.0f} s")
    if args.out:
        settings = {"layers": args.layers, "hidden": args.hidden, "vocab": args.vocab, "texts": args.texts}
        record = {"machine": machine, "settings": settings | {"plan": PLAN}, "rows": rows}
        args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
