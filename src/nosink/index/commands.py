"""The index commands of the CLI: ``nosink index build`` and ``nosink search``.

Thin wrappers around :mod:`nosink.index.index`; FAISS, pyarrow and the model are imported and
loaded only inside the handlers. Mistakes raise NosinkError, which the CLI prints as one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from nosink.cli_args import SubparserFactory, add_threads_option, check_model_path, positive_int
from nosink.devices import DTYPE_CHOICES

DEFAULT_TEXT_WIDTH = 80

_INDEX_EXAMPLES = """\
examples:
  nosink index build corpus/                      # exact cosine search (faiss IndexFlatIP), + BM25 of stored texts
  nosink index build corpus/ --kind hnsw          # approximate (HNSW graph), for large corpora
"""
_BUILD_EXAMPLES = """\
Reads the shards of a finished `nosink embed` output folder one at a time and writes
OUT_DIR/index/index.faiss and index.json. Vectors are L2-normalised, so scores are cosines.
When the corpus stores its texts (`nosink embed --store-text`), a BM25 index of them is written
too (OUT_DIR/index/bm25/), for `nosink search --lexical` and `--hybrid`. The index is refused at
search time if the corpus is embedded again later: rebuild it then.

examples:
  nosink index build corpus/
  nosink index build corpus/ --kind hnsw --hnsw-m 32 --ef-construction 200 --ef-search 128
  nosink index build corpus/ --no-lexical         # vectors only
"""
_SEARCH_EXAMPLES = """\
Embeds QUERY with the encoder named in the corpus's manifest (same plan, pooling and dtype)
and prints the k nearest records: rank, cosine score, id and, when the corpus stored them, text.

--hybrid fuses the dense hits with BM25's (reciprocal-rank fusion, or --fusion weighted with
--weight, the dense share); --lexical searches BM25 alone, without loading the model. Both need
the BM25 index that `nosink index build` writes for a corpus with stored texts.

examples:
  nosink search corpus/ "how do I reset my card PIN?" -k 5
  nosink search corpus/ "card arrival" --instruction "Given an online banking query, find the corresponding intents."
  nosink search corpus/ "card arrival" --json | jq .id
  nosink search corpus/ "card arrival" --hybrid                          # RRF, k = 60
  nosink search corpus/ "card arrival" --hybrid --fusion weighted --weight 0.7
  nosink search corpus/ "card arrival" --lexical                         # BM25 alone
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
    lexical = "also index the stored texts with BM25 (default: when the corpus stores them)"
    parser.add_argument("--lexical", action=argparse.BooleanOptionalAction, default=None, help=lexical)


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
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--hybrid", action="store_true", help="fuse dense hits with BM25's")
    mode.add_argument("--lexical", action="store_true", help="BM25 alone (no model is loaded)")
    parser.add_argument("--fusion", choices=("rrf", "weighted"), help="hybrid fusion (default: rrf)")
    parser.add_argument("--weight", type=float, metavar="W", help="weighted fusion's dense weight (default: 0.5)")
    parser.add_argument("--rrf-k", type=positive_int, metavar="K", help="RRF's constant (default: 60)")
    parser.add_argument("--depth", type=positive_int, metavar="N", help="hits per ranking fused (default: 100)")
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
        lexical=args.lexical,
    )
    how = "exact cosine" if index.kind is IndexKind.FLAT else f"approximate cosine, HNSW M={args.hnsw_m}"
    print(
        f"indexed {index.count} vectors of dimension {index.dimension} in {index_dir(args.out_dir)} "
        f"({index.kind.value}: {how}, {index.meta['build_seconds']:.1f} s)",
        file=sys.stderr,
    )
    if index.lexical is not None:
        print(f"and their {index.lexical.count} texts with BM25 (for --lexical and --hybrid search)", file=sys.stderr)
    elif args.lexical is None:
        print("no BM25 index: the corpus stores no texts (embed with --store-text for hybrid search)", file=sys.stderr)
    return 0


def run_search(args: argparse.Namespace) -> int:
    """``nosink search``: embed one query and print its nearest records (or BM25's, or both fused)."""
    from nosink.errors import NosinkError
    from nosink.index.index import Retriever, VectorIndex, encoder_settings

    if not args.query.strip():
        raise NosinkError("QUERY is empty")
    hybrid = _hybrid(args)
    index = VectorIndex.load(args.out_dir)  # cheap checks (missing, stale) before loading a model
    if args.lexical:
        dense_only = {"--instruction": args.instruction, "--model": args.model, "--ef-search": args.ef_search}
        dense_only |= {"--dtype": args.dtype, "--device": args.device}
        given = [flag for flag, value in dense_only.items() if value is not None]
        if given:
            verb = "does" if len(given) == 1 else "do"
            raise NosinkError(f"{' and '.join(given)} {verb} not apply to --lexical (BM25 loads no model)")
        (hits,) = index.search_lexical([args.query], k=args.k)
        return _print_hits(args, index, hits)
    if hybrid is not None:
        index.require_lexical()  # before the model loads
    settings = index.manifest.get("encoder") or {}
    model = args.model or settings.get("model")
    if not model:
        raise NosinkError(f"the manifest of {args.out_dir} names no encoder model; pass --model")
    check_model_path(model, hint="" if args.model else "; pass --model with its new place")
    from nosink.encoder import Encoder

    loading = encoder_settings(index.manifest)
    if args.dtype:
        loading["dtype"] = args.dtype
    encoder = Encoder.from_pretrained(model, device=args.device, **loading)
    retriever = Retriever(encoder, index, hybrid=hybrid)
    hits = retriever.search(args.query, k=args.k, instruction=args.instruction, ef_search=args.ef_search)
    return _print_hits(args, index, hits)


def _hybrid(args: argparse.Namespace) -> Any:
    """The hybrid settings that --hybrid and its options ask for; NosinkError for options without --hybrid."""
    from nosink.errors import NosinkError
    from nosink.index.fusion import HybridSearch

    given = {"--fusion": args.fusion, "--weight": args.weight, "--rrf-k": args.rrf_k, "--depth": args.depth}
    given = {flag: value for flag, value in given.items() if value is not None}
    if not args.hybrid:
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise NosinkError(f"{' and '.join(given)} {verb} with --hybrid")
        return None
    fusion = args.fusion or "rrf"
    if args.weight is not None and fusion != "weighted":
        raise NosinkError("--weight applies to --fusion weighted")
    if args.rrf_k is not None and fusion != "rrf":
        raise NosinkError("--rrf-k applies to --fusion rrf")
    options = {"weight": args.weight, "k": args.rrf_k, "depth": args.depth}
    return HybridSearch(fusion, **{name: value for name, value in options.items() if value is not None})


def _print_hits(args: argparse.Namespace, index: Any, hits: list[Any]) -> int:
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
