"""The ``nosink`` command line: encode texts to a file, list the named plans, inspect a plan on a model.

Every user mistake ends in one ``error: ...`` line on stderr and exit code 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from nosink import __version__
from nosink.cli_args import (
    MAX_LENGTH_HELP,
    MODEL_HELP,
    add_threads_option,
    check_model_path,
    format_table,
    positive_int,
)
from nosink.corpus.commands import add_commands as add_corpus_commands
from nosink.devices import DTYPE_CHOICES
from nosink.errors import NosinkError
from nosink.eval.commands import add_commands
from nosink.index.commands import add_commands as add_index_commands
from nosink.io import INPUT_FORMATS, check_output, read_inputs, write_embeddings
from nosink.model_commands import add_commands as add_model_commands
from nosink.plan import NAMED_PLANS, Plan, Schedule
from nosink.pooling import Pooling
from nosink.recipe import Recipe

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
USER_ERRORS = (NosinkError, OSError, json.JSONDecodeError, ValueError)  # FileNotFoundError is an OSError
PLAN_KEY = (
    "M = the MASKm sink index (tokens 0..M hidden), K = layers converted, K0 = how many of the top K are nosink "
    "(X for ARCH-X&bidir), R = the released code's residual period (res=none: off); see docs/reproducing.md"
)

_MAIN_EXAMPLES = """\
examples:
  nosink plans
  nosink inspect --model TinyLlama/TinyLlama_v1.1 --plan inter-back:k=2
  nosink encode --model TinyLlama/TinyLlama_v1.1 --plan "mask0&bidir:k=17,k0=2" texts.txt -o vectors.npy
"""
_ENCODE_EXAMPLES = """\
INPUT is a text file (one text per line), a JSONL file (an object with a "text" field per
line, and optionally an "id" that is copied to the output), or - for stdin. The output
format follows the extension of OUT: .npy ([N, D] float32), .jsonl or .parquet.

examples:
  nosink encode --model TinyLlama/TinyLlama_v1.1 --plan mask0-bidir:k=4 texts.txt -o vectors.npy
  nosink encode --model ./my-model --normalize --instruction "Retrieve relevant passages" docs.jsonl -o docs.parquet
  cat texts.txt | nosink encode --model ./my-model - -o vectors.jsonl
  nosink encode --model ./my-model --plan mask0-bidir:k=8 --recipe layer=-4 texts.txt -o vectors.npy
"""
_PLANS_EXAMPLES = """\
examples:
  nosink plans
"""
_INSPECT_EXAMPLES = """\
Loads only the model's config (no weights) and lists every layer call of the plan, in run order.

examples:
  nosink inspect --model TinyLlama/TinyLlama_v1.1 --plan inter-back:k=2
  nosink inspect --model ./my-model --plan "layers:-2..-1=bidir"
"""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version and usage errors
        return done.code if isinstance(done.code, int) else int(done.code is not None)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            if getattr(args, "torch_threads", None):
                import torch

                torch.set_num_threads(args.torch_threads)
            return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except USER_ERRORS as error:
        print(f"error: {_describe(error)}", file=sys.stderr)
        return EXIT_USER_ERROR


# -------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with its ``encode``, ``plans`` and ``inspect`` subcommands."""
    parser = argparse.ArgumentParser(
        prog="nosink",
        description="Use a pretrained decoder LLM as a text encoder, without training.",
        epilog=_MAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"nosink {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_encode(commands)
    _add_plans(commands)
    _add_inspect(commands)
    add_commands(commands, _subparser)  # eval, sweep, attention (their heavy imports wait for the handler)
    _add_serve(commands)
    add_corpus_commands(commands, _subparser)  # embed
    add_index_commands(commands, _subparser)  # index build, search
    add_model_commands(commands, _subparser)  # convert, models
    return parser


def _subparser(
    commands: argparse._SubParsersAction,
    name: str,
    *,
    summary: str,
    epilog: str,
    handler: Callable[[argparse.Namespace], int] | None,
) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        name, help=summary, description=summary, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    if handler is not None:
        parser.set_defaults(handler=handler)
    return parser


def _add_encode(commands: argparse._SubParsersAction) -> None:
    parser = _subparser(
        commands, "encode", summary="Encode texts into embeddings.", epilog=_ENCODE_EXAMPLES, handler=run_encode
    )
    _add_model_and_plan(parser)
    recipe_help = (
        "which layer to pool and how, e.g. layer=-4 or prompt=prompteol (default: a saved folder's, else none)"
    )
    parser.add_argument("--recipe", metavar="R", help=recipe_help)
    parser.add_argument("--instruction", metavar="T", help="task description put before every text (E5-Mistral format)")
    pooling = [p.value for p in Pooling]
    parser.add_argument("--pooling", choices=pooling, help="default: a saved folder's, else mean")
    parser.add_argument("--normalize", action="store_true", help="scale every embedding to unit length")
    parser.add_argument("--batch-size", type=positive_int, metavar="N", help="texts per batch (default: 32)")
    budget = "cap on padded batch tokens (with --packing: on the texts' own tokens)"
    parser.add_argument("--max-tokens-per-batch", type=positive_int, metavar="N", help=budget)
    packing = "pack short texts several to a row, each attending only to itself (same vectors, less padding)"
    parser.add_argument("--packing", action="store_true", help=packing)
    parser.add_argument("--max-length", type=positive_int, metavar="N", help=MAX_LENGTH_HELP)
    parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help="default: %(default)s")
    parser.add_argument("--device", metavar="D", help="e.g. cpu, cuda, cuda:1 (default: cuda when available)")
    add_threads_option(parser)
    parser.add_argument("--input-format", default="auto", choices=INPUT_FORMATS, help="default: %(default)s")
    source_help = 'text file (one text per line), .jsonl, .csv, .tsv or .parquet with a "text" field, or - for stdin'
    parser.add_argument("input", metavar="INPUT", help=source_help)
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="output file: .npy, .jsonl or .parquet")


def _add_plans(commands: argparse._SubParsersAction) -> None:
    _subparser(commands, "plans", summary="List the named plans.", epilog=_PLANS_EXAMPLES, handler=run_plans)


def _add_inspect(commands: argparse._SubParsersAction) -> None:
    summary = "Show the layer calls of a plan on a model."
    parser = _subparser(commands, "inspect", summary=summary, epilog=_INSPECT_EXAMPLES, handler=run_inspect)
    _add_model_and_plan(parser, plan_required=True)


def _add_serve(commands: argparse._SubParsersAction) -> None:
    summary = "Serve embeddings over HTTP (OpenAI- and TEI-compatible)."
    try:
        from nosink.server.cli import EXAMPLES, add_arguments, run_serve
    except ImportError:  # the [server] extra is missing: say so when the command is used
        parser = _subparser(commands, "serve", summary=summary, epilog="", handler=_server_missing)
        parser.add_argument("rest", nargs=argparse.REMAINDER)
        return
    add_arguments(_subparser(commands, "serve", summary=summary, epilog=EXAMPLES, handler=run_serve))


def _server_missing(args: argparse.Namespace) -> int:
    raise NosinkError('nosink serve needs its extra: pip install "nosink[server]"')


def _add_model_and_plan(parser: argparse.ArgumentParser, *, plan_required: bool = False) -> None:
    parser.add_argument("--model", required=True, metavar="M", help=MODEL_HELP)
    plan_help = "plan string; see `nosink plans`" + (
        "" if plan_required else " (default: a saved folder's, else baseline)"
    )
    parser.add_argument("--plan", required=plan_required, metavar="P", help=plan_help)


# -------------------------------------------------------------------- commands


def run_encode(args: argparse.Namespace) -> int:
    """``nosink encode``: read texts, encode them, write the embeddings."""
    from nosink.encoder import Encoder

    if args.plan is not None:
        Plan.coerce(args.plan)  # cheap checks first: a typo should not wait for a model load
    Recipe.coerce(args.recipe)
    inputs = read_inputs(args.input, input_format=args.input_format)
    check_output(args.output)
    check_model_path(args.model)
    encoder = Encoder.from_pretrained(
        args.model,
        plan=args.plan,
        pooling=args.pooling,
        dtype=args.dtype,
        device=args.device,
        max_length=args.max_length,
        recipe=args.recipe,
    )
    embeddings = encoder.encode(
        inputs.texts,
        instruction=args.instruction,
        batch_size=args.batch_size,
        max_tokens_per_batch=args.max_tokens_per_batch,
        normalize=args.normalize,
        packing=args.packing,
        show_progress_bar=None,
    )
    replaced = Path(args.output).exists()
    write_embeddings(args.output, embeddings, ids=inputs.ids)
    n, dim = embeddings.shape
    recipe = "" if encoder.recipe.is_default else f", recipe {encoder.recipe}"
    print(f"wrote {n} embeddings of dim {dim} to {args.output} (plan {encoder.plan}{recipe})", file=sys.stderr)
    if replaced:
        print(f"note: replaced the earlier {args.output}", file=sys.stderr)
    return 0


def run_plans(args: argparse.Namespace) -> int:
    """``nosink plans``: the named plans as an aligned table."""
    print(format_table([("plan", "paper name", "meaning"), *NAMED_PLANS]))
    print()
    print(PLAN_KEY)
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    """``nosink inspect``: the layer calls of a plan on a model, from its config alone."""
    from nosink.families import family_for
    from nosink.loading import ModelSource

    plan = Plan.coerce(args.plan)
    check_model_path(args.model)
    config = ModelSource.parse(args.model).load_config()
    family_for(config)
    num_layers = config.num_hidden_layers
    schedule = plan.resolve(num_layers)
    print(f"plan {plan} on {config.model_type} (L={num_layers})")
    rows = [(str(call), str(layer), pattern, branch) for call, (layer, pattern, branch) in enumerate(schedule.rows())]
    header: tuple[str, ...] = ("call", "layer", "pattern", "branch")
    residual = schedule.residual
    if residual is not None:  # the released code's residual: which calls get the saved input added to theirs
        main_calls = len(schedule.prefix) + len(schedule.branches[0])
        header += ("residual",)
        applies = [call for call in range(min(main_calls, len(rows))) if residual.applies(call)]
        marks = ["" for _ in rows]
        for call in applies:
            marks[call] = "+saved" if call != applies[0] else "save"  # the first has nothing to add yet
        rows = [(*row, mark) for row, mark in zip(rows, marks, strict=True)]
    print(format_table([header, *rows]))
    if len(schedule.branches) > 1:
        print("the branch outputs are summed, then the final norm is applied")
    if schedule.reference:
        print(_reference_note(schedule))
    return 0


def _reference_note(schedule: Schedule) -> str:
    residual = schedule.residual
    if residual is None:
        return "reference mode (the released code), residual off: converted layers ignore sliding windows"
    output = "; the last saved input is also added to the output before the final norm" if residual.to_output else ""
    return (
        f"reference mode (the released code): residual every {residual.every} calls from call {residual.start} "
        f"(+saved: the call's input gets the last saved input added, and is saved; save: saved only){output}; "
        "converted layers ignore sliding windows"
    )


# -------------------------------------------------------------------- helpers


def _describe(error: BaseException) -> str:
    """One line for an error: OS errors as 'reason: file', others with their message's lines joined."""
    if isinstance(error, OSError) and error.strerror and error.filename:
        return f"{error.strerror}: {error.filename}"
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return text or type(error).__name__


def _show_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
    print(f"warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
