"""The corpus command of the CLI: ``nosink embed`` (a thin wrapper over ``embed_corpus``)."""

from __future__ import annotations

import argparse

from nosink.cli_args import (
    MAX_LENGTH_HELP,
    MODEL_HELP,
    SubparserFactory,
    add_threads_option,
    check_model_path,
    positive_float,
    positive_int,
)
from nosink.corpus.embed import Engine
from nosink.corpus.reader import InputFormat
from nosink.devices import DTYPE_CHOICES
from nosink.errors import NosinkError
from nosink.plan import Plan
from nosink.pooling import Pooling
from nosink.recipe import Recipe

_EMBED_EXAMPLES = """\
INPUT is a JSONL, CSV, TSV or Parquet file with a text field (default "text") and optionally an
id field (default: "id" when present, else the record number). OUT_DIR gets Parquet shards
(id, embedding[, text]) and manifest.json. Run the same command again to resume a run that was
cut short: finished shards are kept; a different model, plan or input is refused.

examples:
  nosink embed --model ./my-model --plan "mask0&bidir:k=4,k0=1" docs.jsonl -o docs-vectors/
  nosink embed --model M --plan P corpus.parquet -o out/ --id-field doc_id --text-field body --store-text
  nosink embed --model M --plan P scifact/corpus.jsonl -o sf/ --id-field _id --title-field title   # BEIR
  nosink embed --model M --plan P corpus.csv -o out/ --engine ray --workers 8        # local Ray instance
  nosink embed --model M --plan P corpus.csv -o out/ --engine ray --ray-address ray://head:10001
"""


def add_commands(commands: argparse._SubParsersAction, make: SubparserFactory) -> None:
    """Register ``embed`` on the CLI's subcommands."""
    summary = "Embed a corpus into resumable Parquet shards."
    parser = make(commands, "embed", summary=summary, epilog=_EMBED_EXAMPLES, handler=run_embed)
    parser.add_argument("input", metavar="INPUT", help="JSONL, CSV, TSV or Parquet file")
    parser.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="new, empty, or earlier run's folder")
    parser.add_argument("--model", required=True, metavar="M", help=MODEL_HELP)
    parser.add_argument("--plan", metavar="P", help="plan string (default: a saved folder's, else baseline)")
    recipe_help = (
        "which layer to pool and how, e.g. layer=-4 or prompt=prompteol (default: a saved folder's, else none)"
    )
    parser.add_argument("--recipe", metavar="R", help=recipe_help)
    pooling_help = "default: a saved folder's, else mean"
    parser.add_argument("--pooling", choices=[p.value for p in Pooling], help=pooling_help)
    parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help="default: %(default)s")
    parser.add_argument("--device", metavar="D", help="cpu, cuda, cuda:1 … (default: cuda when available)")
    add_threads_option(parser)
    parser.add_argument("--max-length", type=positive_int, metavar="N", help=MAX_LENGTH_HELP)
    parser.add_argument("--batch-size", type=positive_int, metavar="N", help="texts per batch (default: 32)")
    parser.add_argument("--max-tokens-per-batch", type=positive_int, metavar="N", help="cap on padded batch tokens")
    parser.add_argument("--instruction", metavar="T", help="task description put before every text")
    parser.add_argument("--id-field", metavar="F", help='id field (default: "id" when present, else record numbers)')
    parser.add_argument("--text-field", default="text", metavar="F", help="default: %(default)s")
    title = "a title field joined before each text, as BEIR and MTEB read documents (e.g. title)"
    parser.add_argument("--title-field", metavar="F", help=title)
    formats = [fmt.value for fmt in InputFormat]
    parser.add_argument("--input-format", default="auto", choices=formats, help="default: from the extension")
    parser.add_argument("--shard-size", type=positive_int, default=10_000, metavar="N", help="default: %(default)s")
    parser.add_argument("--store-text", action="store_true", help="keep each text in the shards (for search)")
    parser.add_argument("--no-normalize", action="store_true", help="store raw vectors, not L2-normalised ones")
    engines = [engine.value for engine in Engine]
    parser.add_argument("--engine", default="local", choices=engines, help="default: %(default)s")
    # Ray flags default to None so that run_embed can tell an explicit one (refused with --engine local);
    # RayOptions holds their real defaults.
    parser.add_argument("--ray-address", metavar="A", help="Ray cluster address (default: start a local instance)")
    parser.add_argument("--workers", type=positive_int, metavar="N", help="Ray actors (default: CPUs / per worker)")
    parser.add_argument("--cpus-per-worker", type=positive_float, metavar="C", help="CPUs per Ray actor (default: 1)")
    parser.add_argument("--gpus-per-worker", type=float, metavar="G", help="GPUs per Ray actor (default: 0)")


_RAY_FLAGS = {  # flag: the RayOptions field it sets (the argparse dest is the flag's own name)
    "--ray-address": "address",
    "--workers": "workers",
    "--cpus-per-worker": "cpus_per_worker",
    "--gpus-per-worker": "gpus_per_worker",
}


def run_embed(args: argparse.Namespace) -> int:
    """``nosink embed``: embed INPUT into OUT_DIR and print what was done."""
    from nosink.corpus.embed import embed_corpus
    from nosink.corpus.job import EncoderSpec, RayOptions
    from nosink.corpus.reader import CorpusSource

    if args.plan is not None:
        Plan.coerce(args.plan)  # cheap checks first: a typo should not wait for a pass over the corpus
    Recipe.coerce(args.recipe)
    check_model_path(args.model)
    given = {flag: getattr(args, flag[2:].replace("-", "_")) for flag in _RAY_FLAGS}
    given = {flag: value for flag, value in given.items() if value is not None}  # the Ray flags set explicitly
    if args.engine == "local" and given:
        verb = "applies" if len(given) == 1 else "apply"
        raise NosinkError(f"{' and '.join(given)} only {verb} with --engine ray")
    source = CorpusSource.open(
        args.input,
        input_format=args.input_format,
        id_field=args.id_field,
        text_field=args.text_field,
        title_field=args.title_field,
    )
    # None settings: the folder's, when it was saved by nosink (EncoderSpec reads it), else the defaults
    spec = EncoderSpec(args.model, args.plan, args.pooling, args.dtype, args.device, args.max_length, args.recipe)
    report = embed_corpus(
        spec,
        source,
        args.output,
        instruction=args.instruction,
        normalize=not args.no_normalize,
        store_text=args.store_text,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        max_tokens_per_batch=args.max_tokens_per_batch,
        engine=args.engine,
        ray=RayOptions(**{_RAY_FLAGS[flag]: value for flag, value in given.items()}),
    )
    rate = report.embedded_records / report.seconds if report.seconds > 0 else 0.0
    print(
        f"{report.records} records in {report.shards} shards at {report.out_dir}: "
        f"{report.written_shards} written now ({report.embedded_records} texts, {rate:.1f} texts/s), "
        f"{report.skipped_shards} finished earlier"
    )
    if report.truncated:
        print(f"warning: {report.truncated} texts were longer than the token limit and were truncated")
    return 0
