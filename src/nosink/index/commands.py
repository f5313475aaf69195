"""The index commands of the CLI: ``nosink index build`` and ``nosink search``.

Thin wrappers around :mod:`nosink.index.index`; FAISS, pyarrow and the model are imported and
loaded only inside the handlers. Mistakes raise NosinkError, which the CLI prints as one line.
"""

from __future__ import annotations

import argparse
import json
import sys

from nosink.cli_args import SubparserFactory, add_threads_option, check_model_path, positive_int
from nosink.devices import DTYPE_CHOICES

DEFAULT_TEXT_WIDTH = 80

_INDEX_EXAMPLES = """\
examples:
  nosink index build corpus/                      # exact cosine search (faiss IndexFlatIP)
  nosink index build corpus/ --kind hnsw          # approximate (HNSW graph), for large corpora
"""
_BUILD_EXAMPLES = """\
Reads the shards of a finished `nosink embed` output folder one at a time and writes
OUT_DIR/index/index.faiss and index.json. Vectors are L2-normalised, so scores are cosines.
The index is refused at search time if the corpus is embedded again later: rebuild it then.

examples:
  nosink index build corpus/
  nosink index build corpus/ --kind hnsw --hnsw-m 32 --ef-construction 200 --ef-search 128
"""
_SEARCH_EXAMPLES = """\
Embeds QUERY with the encoder named in the corpus's manifest (same plan, pooling and dtype)
and prints the k nearest records: rank, cosine score, id and, when the corpus stored them, text.

examples:
  nosink search corpus/ "how do I reset my card PIN?" -k 5
  nosink search corpus/ "card arrival" --instruction "Given an online banking query, find the corresponding intents."
  nosink search corpus/ "card arrival" --json | jq .id
"""


def add_commands(commands: argparse._SubParsersAction, subparser: SubparserFactory) -> None:
    """Register ``index build`` and ``search`` on the CLI's subcommands."""
    index = subparser(
        commands, "index", summary="Build a vector index over an embedded corpus.", epilog=_INDEX_EXAMPLES, handler=None
    )
    actions = index.add_subparsers(dest="index_command", metavar="ACTION", required=True)
    build = subparser(
        actions,
        "build",
        summary="Index the vectors of an embedded corpus (exact by default).",
        epilog=_BUILD_EXAMPLES,
        handler=run_index_build,
    )
    _add_build_arguments(build)
    search = subparser(
        commands,
        "search",
        summary="Search an indexed corpus with a text query.",
        epilog=_SEARCH_EXAMPLES,
        handler=run_search,
    )
    _add_search_arguments(search)


# -------------------------------------------------------------------- arguments


def _add_build_arguments(parser: argparse.ArgumentParser) -> None:
    from nosink.index.index import DEFAULT_EF_CONSTRUCTION, DEFAULT_EF_SEARCH, DEFAULT_HNSW_M, IndexKind

    parser.add_argument("out_dir", metavar="OUT_DIR", help="a finished `nosink embed` output folder")
    parser.add_argument(
        "--kind",
        default="flat",
        choices=[kind.value for kind in IndexKind],
        help="flat: exact; hnsw: approximate (default: flat)",
    )
    parser.add_argument(
        "--hnsw-m",
        type=positive_int,
        default=DEFAULT_HNSW_M,
        metavar="N",
        help="HNSW graph degree (default: %(default)s)",
    )
    parser.add_argument(
        "--ef-construction",
        type=positive_int,
        default=DEFAULT_EF_CONSTRUCTION,
        metavar="N",
        help="HNSW build effort (default: %(default)s)",
    )
    parser.add_argument(
        "--ef-search",
        type=positive_int,
        default=DEFAULT_EF_SEARCH,
        metavar="N",
        help="HNSW search effort stored as the default (default: %(default)s)",
    )


def _add_search_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="an indexed corpus folder")
    parser.add_argument("query", metavar="QUERY", help="the query text")
    parser.add_argument("-k", type=positive_int, default=10, metavar="K", help="hits to show (default: %(default)s)")
    parser.add_argument("--instruction", metavar="T", help="the query's task description (E5 format; default: none)")
    parser.add_argument("--json", action="store_true", help="one JSON object per hit instead of a table")
    parser.add_argument(
        "--width",
        type=positive_int,
        default=DEFAULT_TEXT_WIDTH,
        metavar="N",
        help="text column width (default: %(default)s)",
    )
    parser.add_argument("--ef-search", type=positive_int, metavar="N", help="HNSW search effort (default: the build's)")
    parser.add_argument("--model", metavar="M", help="load this model instead of the manifest's (same weights moved)")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, help="model dtype (default: the corpus's)")
    parser.add_argument("--device", metavar="D", help="e.g. cpu, cuda, cuda:1 (default: cuda when available)")
    add_threads_option(parser)


# -------------------------------------------------------------------- handlers


def run_index_build(args: argparse.Namespace) -> int:
    """``nosink index build``: index a finished corpus."""
    from nosink.index.index import IndexKind, build_index, index_dir

    index = build_index(
        args.out_dir,
        kind=args.kind,
        hnsw_m=args.hnsw_m,
        ef_construction=args.ef_construction,
        ef_search=args.ef_search,
    )
    how = "exact cosine" if index.kind is IndexKind.FLAT else f"approximate cosine, HNSW M={args.hnsw_m}"
    print(
        f"indexed {index.count} vectors of dimension {index.dimension} in {index_dir(args.out_dir)} "
        f"({index.kind.value}: {how}, {index.meta['build_seconds']:.1f} s)",
        file=sys.stderr,
    )
    return 0


def run_search(args: argparse.Namespace) -> int:
    """``nosink search``: embed one query and print its nearest records."""
    from nosink.errors import NosinkError
    from nosink.index.index import Retriever, VectorIndex

    if not args.query.strip():
        raise NosinkError("QUERY is empty")
    index = VectorIndex.load(args.out_dir)  # cheap checks (missing, stale) before loading a model
    settings = index.manifest.get("encoder") or {}
    model = args.model or settings.get("model")
    if not model:
        raise NosinkError(f"the manifest of {args.out_dir} names no encoder model; pass --model")
    check_model_path(model, hint="" if args.model else "; pass --model with its new place")
    from nosink.encoder import Encoder

    loading = {name: settings[name] for name in ("plan", "pooling", "dtype", "max_length") if name in settings}
    if args.dtype:
        loading["dtype"] = args.dtype
    encoder = Encoder.from_pretrained(model, device=args.device, **loading)
    hits = Retriever(encoder, index).search(
        args.query, k=args.k, instruction=args.instruction, ef_search=args.ef_search
    )
    if args.json:
        for rank, hit in enumerate(hits, 1):
            record = {"rank": rank, "score": hit.score, "id": hit.id, "position": hit.position, "text": hit.text}
            print(json.dumps(record, ensure_ascii=False))
        return 0
    from nosink.cli_args import format_table

    header = ("rank", "score", "id", "text") if index.store_text else ("rank", "score", "id")
    rows = [
        (str(rank), f"{hit.score:.4f}", hit.id, *([_shorten(hit.text or "", args.width)] if index.store_text else []))
        for rank, hit in enumerate(hits, 1)
    ]
    print(format_table([header, *rows]))
    return 0


def _shorten(text: str, width: int) -> str:
    """The text on one line (whitespace runs become one space), cut to ``width`` characters with '…'."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: max(width - 1, 0)] + "…"
