"""The evaluation commands of the CLI: ``nosink eval TASK``, ``nosink sweep`` and ``nosink attention``.

Thin wrappers: parse arguments, load data and the model, call the library function, print the
metrics, and write one JSON run record (``--record``, default ``results/<task>-<time>.json``).
The heavy imports happen inside the handlers, so the core CLI works without ``nosink[eval]``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nosink.cli_args import (
    MAX_LENGTH_HELP,
    MODEL_HELP,
    SubparserFactory,
    add_threads_option,
    positive_float,
    positive_int,
)
from nosink.devices import DTYPE_CHOICES
from nosink.errors import NosinkError
from nosink.outputs import check_file_target, check_folder_target, write_text_atomic
from nosink.plan import Plan
from nosink.pooling import Pooling

STS_INSTRUCTION = "Retrieve semantically similar text."
RETRIEVAL_QUERIES, RETRIEVAL_POOL, RETRIEVAL_DOCUMENT_TOKENS = 200, 600, 128  # eval.retrieval_tune's defaults
RETRIEVAL_PROMPTS = ("default", "prompt=prompteol")  # echo doubles every document: add it with --prompts

_EVAL_EXAMPLES = """\
examples (D = ../shared/data):
  nosink eval sts --model ../shared/models/stories260k --plan mask0-bidir:k=2 \\
      --data D/sick/SICK_test_annotated.txt
  nosink eval classification --model M --plan P --train D/banking77/train.csv --test D/banking77/test.csv \\
      --instruction "Given an online banking query, find the corresponding intents."
  nosink eval domain --model M --plan P --data D/emotion/train.txt
  nosink eval ner --model M --plan P --train D/wnut17/wnut17train.conll --test D/wnut17/emerging.test.annotated
  nosink eval sts --model st:sentence-transformers/all-MiniLM-L6-v2 --data sts-test.csv   # a baseline row
  nosink eval retrieval --model M --plan P --data D/scifact                               # BEIR folder
  nosink eval retrieval --model bm25 --data D/scifact
  nosink eval mteb --model M --plan P --tasks paper15                                     # needs the hub
"""
_RETRIEVAL_EXAMPLES = """\
Scores retrieval on a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) as MTEB does:
nDCG@10 (the main score), MAP@100, MRR@10, Recall@10/100, all x100, with pytrec_eval. Queries get
the paper's instruction for the dataset (nosink models) or the model's own query prompt;
documents get the model's document prompt, else none. Document vectors are cached (resumable,
reused when only the query side changes) in --cache-dir, keyed by model, plan, recipe, max length,
prompt and the corpus's sha256. docs/retrieval.md has the results on SciFact.

examples:
  M=$(nosink models pull smollm2-135m-instruct)
  nosink eval retrieval --model "$M" --plan mask0-bidir:k=8 --data scifact/ --torch-threads 2
  nosink eval retrieval --model bm25 --data scifact/
  nosink eval retrieval --model st:all-minilm-l6-v2 --data scifact/      # provisioned by nosink models
  nosink eval retrieval --model "$M" --plan mask0-bidir:k=8 --data scifact/ --hybrid --fusion weighted
"""
_SWEEP_EXAMPLES = """\
Scores every k (and k0) of one or more configuration families on a validation split; the
causal layers below each converted top are computed once and shared.

examples:
  nosink sweep --model ../shared/models/stories260k --task sts --data ../shared/data/sick/SICK_trial.txt \\
      --family inplace-bidir --family mask0-bidir --family "mask0&bidir" --out sweep/ --select best-plan.txt
  nosink sweep --model M --task classification --train ../shared/data/emotion/train.txt \\
      --val ../shared/data/emotion/val.txt --family mask0-bidir --ks 1-8
"""
_ATTENTION_EXAMPLES = """\
Per-layer attention maps averaged over heads and texts, and sink scores (attention that rows >= 1
put on token 0, beside the uniform expectation of each layer's pattern).

examples:
  nosink attention --model ../shared/models/stories260k --plan baseline --plan mask0-bidir:k=5 \\
      --texts sentences.txt --tokens 16 --detect --out attention/
"""

_STUDY_EXAMPLES = """\
The paper's study on one model: k and k0 chosen on validation data, the test set scored once
(SICK-R, Emotion, Banking77, the domain protocol, the NER probe on WNUT17 and WikiANN-en), sink
ratios per layer and head. Each part is one record in OUT; a finished part is skipped when the
command runs again. docs/real-models.md has the results on SmolLM2-135M-Instruct and Gemma-3-270M.

examples:
  M=$(nosink models pull smollm2-135m-instruct)
  nosink study --model "$M" --data ../shared/data --out study/smollm2 --torch-threads 2
  nosink study --model "$M" --data ../shared/data --out study/smollm2 --parts sinks,sts
  nosink study --model "$M" --data ../shared/data --out study/smollm2 --parts wnut17,wikiann
"""


_TUNE_EXAMPLES = """\
Scores every plan of the families (k on a five-point grid unless --ks), under every prompt, at
every layer, on validation data; the winner's plan and recipe go to OUT/winner.json, and the
test split, when given, is scored once for the baseline and the winner. Every layer of every plan
comes from one shared-prefix pass per prompt. Resumable: finished prompts are kept in
OUT/rows.jsonl. docs/recipes.md explains prompts and layers.

examples:
  M=$(nosink models pull smollm2-135m-instruct); D=../shared/data
  nosink tune --model "$M" --task sts --data $D/sick/SICK_trial.txt --test $D/sick/SICK_test_annotated.txt \\
      --limit 200 --out tune/smollm2 --torch-threads 2
  nosink tune --model "$M" --task sts --data $D/sick/SICK_trial.txt --prompts 'default;prompt=prompteol' \\
      --layers=-1,-4,-8 --budget-min 10 --out tune/quick
"""


def add_commands(commands: argparse._SubParsersAction, make: SubparserFactory) -> None:
    """Register ``eval``, ``sweep`` and ``attention`` on the CLI's subcommands."""
    evaluate = make(commands, "eval", summary="Score a model and plan on a task.", epilog=_EVAL_EXAMPLES, handler=None)
    tasks = evaluate.add_subparsers(dest="task", metavar="TASK", required=True)
    _add_sts(tasks, make)
    _add_classification(tasks, make)
    _add_domain(tasks, make)
    _add_ner(tasks, make)
    _add_retrieval(tasks, make)
    _add_mteb(tasks, make)
    sweep = make(
        commands, "sweep", summary="Choose k/k0 on a validation split.", epilog=_SWEEP_EXAMPLES, handler=run_sweep
    )
    _add_sweep_arguments(sweep)
    attention = make(
        commands,
        "attention",
        summary="Attention maps and sink scores.",
        epilog=_ATTENTION_EXAMPLES,
        handler=run_attention,
    )
    _add_attention_arguments(attention)
    study = make(
        commands, "study", summary="The paper's study on one model.", epilog=_STUDY_EXAMPLES, handler=run_study
    )
    _add_study_arguments(study)
    tune = make(
        commands,
        "tune",
        summary="Search plans x prompts x layers on validation data.",
        epilog=_TUNE_EXAMPLES,
        handler=run_tune,
    )
    _add_tune_arguments(tune)


# -------------------------------------------------------------------- arguments


def _model_options(
    parser: argparse.ArgumentParser,
    *,
    baselines: bool = True,
    plan: str = "one",
    recipe: bool = True,
    model_help: str = "",
    max_length_help: str = MAX_LENGTH_HELP,
) -> None:
    """--model and the encoder options. ``plan``: ``one`` --plan, ``many`` (repeatable), or ``none`` (sweep);
    ``recipe``: whether --recipe is offered (tune searches recipes itself); ``model_help`` ends --model's help."""
    kinds = "; st:NAME for sentence-transformers, hf:NAME for a plain HF encoder" if baselines else ""
    provisioned = "; NAME may be one of `nosink models list`" if baselines else ""
    parser.add_argument("--model", required=True, metavar="M", help=f"{MODEL_HELP}{kinds}{provisioned}{model_help}")
    if plan == "many":
        parser.add_argument("--plan", action="append", metavar="P", help="a plan (repeatable; default: baseline)")
    elif plan == "one":
        parser.add_argument("--plan", metavar="P", help="plan string (default: a saved folder's, else baseline)")
    # "none": the command chooses its plans itself (sweep), so argparse refuses a --plan it would ignore
    if recipe:
        recipe_help = "nosink models: which layer to pool and how, e.g. layer=-4 or prompt=prompteol (docs/recipes.md)"
        parser.add_argument("--recipe", metavar="R", help=recipe_help)
    pooling_help = "default: a saved folder's, else mean; for st: models, their own Pooling module (hf: mean or cls)"
    pooling_choices = [p.value for p in Pooling] + (["cls"] if baselines else [])
    parser.add_argument("--pooling", choices=pooling_choices, help=pooling_help)
    parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES)
    parser.add_argument("--device", metavar="D", help="cpu, cuda, cuda:1 … (default: cuda when available)")
    add_threads_option(parser)
    parser.add_argument("--max-length", type=positive_int, metavar="N", help=max_length_help)
    parser.add_argument("--batch-size", type=positive_int, metavar="N", help="texts per batch (default: 32)")
    parser.add_argument("--record", metavar="PATH", help="run record JSON (default: results/<task>-<time>.json)")


def _limit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=positive_int, metavar="N", help="use only the first N items of each file")


def _add_sts(tasks: argparse._SubParsersAction, make: SubparserFactory) -> None:
    parser = make(tasks, "sts", summary="STS: Spearman x100 of cosine similarities.", epilog="", handler=run_eval_sts)
    _model_options(parser)
    parser.add_argument("--data", required=True, metavar="PATH", help="SICK .txt, STS-B sts-*.csv, or TSV/CSV/JSONL")
    parser.add_argument("--text-a", metavar="COL")
    parser.add_argument("--text-b", metavar="COL")
    parser.add_argument("--score", metavar="COL")
    instruction_help = "default: the paper's STS one for nosink models; none for st: and hf: baselines"
    parser.add_argument("--instruction", metavar="T", help=instruction_help)
    parser.add_argument("--no-instruction", action="store_true", help="no instruction, whatever the model")
    _limit(parser)


def _add_classification(tasks: argparse._SubParsersAction, make: SubparserFactory) -> None:
    summary = "Classification: logistic regression on embeddings (MTEB protocol)."
    parser = make(tasks, "classification", summary=summary, epilog="", handler=run_eval_classification)
    _model_options(parser)
    parser.add_argument("--train", required=True, metavar="PATH")
    parser.add_argument("--test", required=True, metavar="PATH")
    parser.add_argument("--text", metavar="COL")
    parser.add_argument("--label", metavar="COL")
    parser.add_argument("--instruction", metavar="T")
    parser.add_argument("--experiments", type=positive_int, default=10, metavar="N", help="default: %(default)s (MTEB)")
    parser.add_argument("--samples-per-label", type=int, default=8, metavar="N", help="0 = all (default: 8, MTEB)")
    _limit(parser)


def _add_domain(tasks: argparse._SubParsersAction, make: SubparserFactory) -> None:
    summary = "Domain classification: 80/20 split, SMOTE, L-BFGS logistic regression."
    parser = make(tasks, "domain", summary=summary, epilog="", handler=run_eval_domain)
    _model_options(parser)
    parser.add_argument("--data", required=True, metavar="PATH")
    parser.add_argument("--text", metavar="COL")
    parser.add_argument("--label", metavar="COL")
    parser.add_argument("--no-smote", action="store_true")
    parser.add_argument("--test-size", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=42)
    _limit(parser)


def _add_ner(tasks: argparse._SubParsersAction, make: SubparserFactory) -> None:
    summary = "NER probe: a linear head on frozen token states, entity F1."
    parser = make(tasks, "ner", summary=summary, epilog="", handler=run_eval_ner)
    _model_options(parser, baselines=False)
    parser.add_argument("--train", required=True, metavar="PATH", help="CoNLL file (token ... tag per line)")
    parser.add_argument("--test", required=True, metavar="PATH")
    parser.add_argument("--scheme", default="first_subword", choices=("first_subword", "subword"))
    parser.add_argument("--strip-prefix", metavar="P", help="token prefix to strip, e.g. en: (auto-detected)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--seed", type=int, default=42)
    _limit(parser)


def _add_retrieval(tasks: argparse._SubParsersAction, make: SubparserFactory) -> None:
    summary = "Retrieval on a BEIR folder: nDCG@10 and more (dense, BM25 or hybrid)."
    parser = make(tasks, "retrieval", summary=summary, epilog=_RETRIEVAL_EXAMPLES, handler=run_eval_retrieval)
    _model_options(
        parser,
        plan="many",
        model_help="; bm25 for BM25 alone",
        max_length_help="document tokens (queries are short): default 512, or the model's own limit",
    )
    beir = "BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv"
    parser.add_argument("--data", required=True, metavar="FOLDER", help=beir)
    parser.add_argument("--split", default="test", metavar="S", help="qrels/<S>.tsv to score (default: %(default)s)")
    instruction_help = "the queries' instruction (default: the paper's for the dataset for nosink models)"
    parser.add_argument("--instruction", metavar="T", help=instruction_help)
    parser.add_argument("--no-instruction", action="store_true", help="no instruction or prompt for the queries")
    parser.add_argument("--hybrid", action="store_true", help="fuse the dense ranking with BM25's")
    parser.add_argument("--fusion", default="rrf", choices=("rrf", "weighted"), help="hybrid fusion (default: rrf)")
    parser.add_argument("--weight", type=float, metavar="W", help="weighted fusion's dense weight in [0, 1]")
    parser.add_argument("--rrf-k", type=positive_int, metavar="K", help="RRF's constant k")
    tune_help = "split whose queries choose --weight or --rrf-k when not given (default: train when it exists)"
    parser.add_argument("--tune-split", metavar="S", help=tune_help)
    cache = "where document vectors are cached (default: $NOSINK_CACHE_DIR or ~/.cache/nosink/embeddings)"
    parser.add_argument("--cache-dir", metavar="DIR", help=cache)
    parser.add_argument("--no-cache", action="store_true", help="embed the documents in memory, cache nothing")
    parser.add_argument("--limit", type=positive_int, metavar="N", help="score only the first N judged queries")


def _add_mteb(tasks: argparse._SubParsersAction, make: SubparserFactory) -> None:
    summary = "MTEB tasks (needs the Hugging Face hub for task data)."
    parser = make(tasks, "mteb", summary=summary, epilog="", handler=run_eval_mteb)
    _model_options(parser)
    parser.add_argument("--tasks", default="paper15", metavar="T", help="paper15 or comma-separated task names")
    parser.add_argument("--output-folder", metavar="DIR")


def _add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    _model_options(parser, baselines=False, plan="none")
    _validation_data(parser)
    family = "e.g. mask0-bidir, mask0&bidir, inter-back&bidir; add :res=3 for reference mode (repeatable)"
    parser.add_argument("--family", action="append", required=True, metavar="F", help=family)
    parser.add_argument("--ks", metavar="LIST", help="k values: 1-8 or 1,2,4 (default: 1..L)")
    parser.add_argument("--k0s", metavar="LIST", help="k0 grid for &bidir families (default: 1,2,4)")
    parser.add_argument("--instruction", metavar="T", help="default: the paper's STS one for sts, none otherwise")
    parser.add_argument("--out", default="sweep", metavar="DIR", help="folder for sweep.csv/json/png")
    parser.add_argument("--select", metavar="PATH", help="write the best plan string to this file")
    _limit(parser)


def _validation_data(parser: argparse.ArgumentParser) -> None:
    """The validation task of ``sweep`` and ``tune`` (read by :func:`_sweep_task`)."""
    parser.add_argument("--task", required=True, choices=("sts", "classification", "retrieval"))
    parser.add_argument("--data", metavar="PATH", help="sts: validation pairs; retrieval: a BEIR folder")
    parser.add_argument("--train", metavar="PATH", help="classification: training texts")
    parser.add_argument("--val", metavar="PATH", help="classification: validation texts")
    selection = parser.add_argument_group("retrieval selection (docs/retrieval.md: what it costs, what it may miss)")
    selection.add_argument("--split", default="train", metavar="S", help="qrels split that chooses (default: train)")
    queries = f"its judged queries drawn, seed 0 (default: {RETRIEVAL_QUERIES})"
    selection.add_argument("--queries", type=positive_int, default=RETRIEVAL_QUERIES, metavar="N", help=queries)
    pool = f"documents scored: the relevant ones, then BM25's best for the queries (default: {RETRIEVAL_POOL})"
    selection.add_argument("--pool", type=positive_int, default=RETRIEVAL_POOL, metavar="N", help=pool)
    cut = f"documents cut at N tokens while choosing (default: {RETRIEVAL_DOCUMENT_TOKENS})"
    selection.add_argument(
        "--document-tokens", type=positive_int, default=RETRIEVAL_DOCUMENT_TOKENS, metavar="N", help=cut
    )


def _add_tune_arguments(parser: argparse.ArgumentParser) -> None:
    _model_options(parser, baselines=False, plan="none", recipe=False)
    _validation_data(parser)
    test = "sts: test pairs; classification: test texts; retrieval: a split of --data, e.g. test (scored once)"
    parser.add_argument("--test", metavar="PATH", help=test)
    parser.add_argument("--test-limit", type=positive_int, metavar="N", help="use only the first N test items")
    also = "another plan to score on the test split beside the baseline and the winner (repeatable)"
    parser.add_argument("--test-plan", action="append", default=[], metavar="P", help=also)
    cache = "retrieval: where test document vectors are cached (default: ~/.cache/nosink/embeddings)"
    parser.add_argument("--cache-dir", metavar="DIR", help=cache)
    families = "single-pass plan families to search (repeatable; default: inplace-bidir, mask0-bidir, mask0&bidir)"
    parser.add_argument("--family", action="append", metavar="F", help=families)
    parser.add_argument("--ks", metavar="LIST", help="k values: 1-8 or 1,2,4 (default: about L/10, L/4, L/2, 3L/4, L)")
    k0s = "k0 grid for &bidir families (default: 1,2; retrieval: 2)"
    parser.add_argument("--k0s", metavar="LIST", help=k0s)
    prompts = (
        "recipes without a layer, separated by ';' (default: default;prompt=prompteol;prompt=echo, and for retrieval "
        "default;prompt=prompteol); prompt=metaeol encodes each text in 8 long prompts (about 8 x 85 tokens): slow"
    )
    parser.add_argument("--prompts", metavar="LIST", help=prompts)
    layers = "layer=j values, e.g. --layers=-1,-4,-8 (with '=': a leading minus; default: every layer)"
    parser.add_argument("--layers", metavar="LIST", help=layers)
    parser.add_argument("--budget-min", type=positive_float, metavar="MIN", help="start no prompt after this time")
    parser.add_argument("--instruction", metavar="T", help="default: the paper's STS one for sts, none otherwise")
    parser.add_argument("--out", default="tune", metavar="DIR", help="folder for rows.jsonl, table.csv, winner.json")
    _limit(parser)


def _add_attention_arguments(parser: argparse.ArgumentParser) -> None:
    _model_options(parser, baselines=False, plan="many")
    parser.add_argument("--texts", required=True, metavar="PATH", help="text lines, JSONL with 'text', or -")
    parser.add_argument("--tokens", type=int, default=16, metavar="T", help="crop length (default: %(default)s)")
    parser.add_argument("--max-texts", type=int, default=64, metavar="N")
    parser.add_argument("--detect", action="store_true", help="list the attention-sink layers")
    parser.add_argument(
        "--threshold", type=positive_float, default=2.0, help="sink = score >= threshold x uniform (default: 2.0)"
    )
    parser.add_argument("--out", default="attention", metavar="DIR", help="folder for the PNGs and sinks.json")


def _add_study_arguments(parser: argparse.ArgumentParser) -> None:
    from nosink.eval.study import PARTS

    parser.add_argument("--model", required=True, metavar="M", help="local model folder (or hub name)")
    parser.add_argument("--data", required=True, metavar="DIR", help="folder with sick/, emotion/, banking77/")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the records and figures")
    parser.add_argument("--parts", default=",".join(PARTS), metavar="P,P", help="default: %(default)s")
    parser.add_argument("--ks", metavar="K,K", help="k grid (default: about nine values from 1 to L)")
    parser.add_argument("--batch-size", type=positive_int, default=32, metavar="N", help="default: %(default)s")
    add_threads_option(parser)


# -------------------------------------------------------------------- handlers


def run_eval_sts(args: argparse.Namespace) -> int:
    from nosink.eval.data import load_pairs
    from nosink.eval.sts import evaluate_sts

    _check_outputs(args)  # before any work: a bad output path fails now, not after the run
    data = load_pairs(args.data, text_a=args.text_a, text_b=args.text_b, score=args.score, limit=args.limit)
    embedder = _embedder(args)
    instruction = _sts_instruction(args)
    result = evaluate_sts(embedder, data, instruction=instruction, batch_size=args.batch_size)
    return _report(args, result, embedder, [args.data], {"instruction": instruction})


def run_eval_classification(args: argparse.Namespace) -> int:
    from nosink.eval.classification import evaluate_classification
    from nosink.eval.data import load_labeled

    _check_outputs(args)  # before any work: a bad output path fails now, not after the run
    train = load_labeled(args.train, text=args.text, label=args.label, limit=args.limit)
    test = load_labeled(args.test, text=args.text, label=args.label, limit=args.limit)
    embedder = _embedder(args)
    settings = {
        "instruction": args.instruction,
        "n_experiments": args.experiments,
        "samples_per_label": args.samples_per_label or None,
    }
    result = evaluate_classification(embedder, train, test, batch_size=args.batch_size, **settings)
    return _report(args, result, embedder, [args.train, args.test], settings)


def run_eval_domain(args: argparse.Namespace) -> int:
    from nosink.eval.classification import evaluate_domain
    from nosink.eval.data import load_labeled

    _check_outputs(args)  # before any work: a bad output path fails now, not after the run
    data = load_labeled(args.data, text=args.text, label=args.label, limit=args.limit)
    embedder = _embedder(args)
    settings = {"smote": not args.no_smote, "test_size": args.test_size, "seed": args.seed}
    result = evaluate_domain(embedder, data, batch_size=args.batch_size, **settings)
    return _report(args, result, embedder, [args.data], settings)


def run_eval_ner(args: argparse.Namespace) -> int:
    from nosink.eval.conll import load_conll
    from nosink.eval.ner import ner_probe

    _check_outputs(args)  # before any work: a bad output path fails now, not after the run
    train = load_conll(args.train, strip_prefix=args.strip_prefix, limit=args.limit)
    test = load_conll(args.test, strip_prefix=args.strip_prefix, limit=args.limit)
    embedder = _embedder(args)
    settings = {"scheme": args.scheme, "epochs": args.epochs, "lr": args.lr, "seed": args.seed}
    result = ner_probe(embedder, train, test, encode_batch_size=args.batch_size, **settings)
    return _report(args, result, embedder, [args.train, args.test], settings)


def run_eval_retrieval(args: argparse.Namespace) -> int:
    from nosink.eval.beir import load_beir
    from nosink.eval.retrieval import LEXICAL_MODEL, HybridSpec, default_cache_dir, precompute_documents
    from nosink.index.fusion import Fusion

    _check_outputs(args)  # before any work: a bad output path fails now, not after the run
    lexical = args.model == LEXICAL_MODEL and not Path(args.model).exists()
    plans = [str(Plan.coerce(plan)) for plan in args.plan] if args.plan else [None]
    _check_retrieval_flags(args, lexical, plans)
    data = load_beir(args.data, args.split, limit_queries=args.limit)
    hybrid = HybridSpec(Fusion.coerce(args.fusion), args.weight, args.rrf_k) if args.hybrid else None
    tune = _fusion_split(args, data, hybrid)
    cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir())
    if lexical:
        return _retrieval_record(args, None, data, hybrid, tune, cache_dir, args.record)
    args.plan = plans[0]
    first = _embedder(args)
    embedders = [first] + [first.with_plan(plan) for plan in plans[1:]]
    if len(embedders) > 1 and cache_dir is not None:  # one shared-prefix pass over the corpus for every plan
        precompute_documents(embedders, data, batch_size=args.batch_size, cache_dir=cache_dir)
    for embedder in embedders:
        record = args.record if len(plans) == 1 else _plan_record_path(embedder)
        _retrieval_record(args, embedder, data, hybrid, tune, cache_dir, record)
    return 0


def _plan_record_path(embedder: Any) -> Path:
    from nosink.eval.results import default_record_path

    return default_record_path("retrieval-" + re.sub(r"[^A-Za-z0-9._-]+", "_", str(embedder.plan)))


def _retrieval_record(
    args: argparse.Namespace,
    embedder: Any,
    data: Any,
    hybrid: Any,
    tune: Any,
    cache_dir: Any,
    record: str | Path | None,
) -> int:
    """Score one embedder (None: BM25), print its metrics and write its run record."""
    from nosink.eval.retrieval import evaluate_retrieval, query_side
    from nosink.index.lexical import Bm25Settings

    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    side = None
    if embedder is not None:
        side = query_side(embedder, data.folder, instruction=args.instruction, none=args.no_instruction)
        say(f"{getattr(embedder, 'plan', '') or ''} queries: {side.describe()}".strip())
    result = evaluate_retrieval(
        embedder, data, side=side, hybrid=hybrid, tune=tune, batch_size=args.batch_size, cache_dir=cache_dir, say=say
    )
    settings = {"split": args.split, "limit": args.limit, **result.settings}
    files = [str(path) for path in data.files] + ([str(tune.qrels_file)] if tune else [])
    _print_json({"task": result.task, **result.metrics})
    model = Bm25Settings() if embedder is None else embedder
    args.record = record
    details = {"per_query_ndcg_at_10": result.details} if result.details else None
    _write(args, result.task, model, result.metrics, files, settings, result.timings, result.sizes, details)
    return 0


def _fusion_split(args: argparse.Namespace, data: Any, hybrid: Any) -> Any:
    """The split whose queries choose the fusion parameter: --tune-split, else train when the folder has it."""
    from nosink.eval.beir import load_beir, qrels_path
    from nosink.index.fusion import Fusion

    if hybrid is None or (args.weight if hybrid.fusion is Fusion.WEIGHTED else args.rrf_k) is not None:
        return None
    split = args.tune_split or ("train" if qrels_path(data.folder, "train").is_file() else None)
    if split == args.split:
        raise NosinkError(f"the fusion would be chosen on the split it scores ({split}); give another --tune-split")
    return load_beir(args.data, split) if split else None


def _check_retrieval_flags(args: argparse.Namespace, lexical: bool, plans: list[str | None]) -> None:
    """Flag combinations that cannot mean anything, refused before any work."""
    if len(plans) > 1 and args.record:
        raise NosinkError("with several --plan, each writes its own record (results/retrieval-<plan>-<time>.json)")
    if len(plans) > 1 and parse_spec_kind(args.model) != "nosink":
        raise NosinkError("several --plan apply to nosink models only")
    if args.instruction is not None and args.no_instruction:
        raise NosinkError("--instruction and --no-instruction contradict each other; give one")
    if args.cache_dir and args.no_cache:
        raise NosinkError("--cache-dir and --no-cache contradict each other; give one")
    if lexical:
        flags = {"--plan": args.plan, "--recipe": args.recipe, "--hybrid": args.hybrid, "--pooling": args.pooling}
        flags |= {"--max-length": args.max_length, "--dtype": None if args.dtype == "auto" else args.dtype}
        extra = [flag for flag, value in (flags | {"--instruction": args.instruction}).items() if value]
        if extra:
            raise NosinkError(f"{', '.join(extra)} do not apply to --model bm25")
    if not args.hybrid:
        given = [flag for flag, value in (("--weight", args.weight), ("--rrf-k", args.rrf_k)) if value is not None]
        if given or args.fusion != "rrf" or args.tune_split:
            raise NosinkError("--fusion, --weight, --rrf-k and --tune-split apply with --hybrid")
    if args.weight is not None and not 0.0 <= args.weight <= 1.0:
        raise NosinkError(f"--weight is the dense weight, in [0, 1]; got {args.weight}")
    if args.weight is not None and args.fusion != "weighted":
        raise NosinkError("--weight applies to --fusion weighted")
    if args.rrf_k is not None and args.fusion != "rrf":
        raise NosinkError("--rrf-k applies to --fusion rrf")


def run_eval_mteb(args: argparse.Namespace) -> int:
    from nosink.eval.mteb_run import check_hub_reachable, run_mteb

    _check_outputs(args)  # before any work: a bad output path fails now, not after the run
    tasks = args.tasks if args.tasks == "paper15" else [t.strip() for t in args.tasks.split(",") if t.strip()]
    check_hub_reachable()  # fail at once, before loading any model
    embedder = _embedder(args)
    scores = run_mteb(embedder, tasks=tasks, output_folder=args.output_folder)
    _print_json(scores)
    _write(args, "mteb", embedder, {"scores": scores}, [], {"tasks": tasks})
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from nosink.eval.sweep import check_family, plot_sweep
    from nosink.eval.sweep import run_sweep as sweep

    _check_outputs(args)  # before any work: a bad output path fails now, not after the run
    for family in args.family:
        check_family(family)
    task, files = _sweep_task(args)
    encoder = _encoder(args, plan="baseline")
    ks, k0s = _int_list(args.ks, "--ks"), _int_list(args.k0s, "--k0s")
    result = sweep(encoder, task, args.family, ks=ks, k0s=k0s, batch_size=args.batch_size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.write_csv(out / "sweep.csv")
    write_text_atomic(out / "sweep.json", json.dumps(result.to_dict(), indent=2) + "\n")
    plot_sweep(result, out / "sweep.png", title=f"{_name(encoder)}: {task.name} {task.main_metric} vs k")
    for row in result.rows:
        print(f"{row.plan:28s} {row.score:8.3f}")
    print(f"best: {result.best}")
    if args.select:
        write_text_atomic(args.select, result.best + "\n")
    metrics = {"best": result.best, "rows": [{"plan": r.plan, "score": r.score} for r in result.rows]}
    _write(args, f"sweep-{task.name}", encoder, metrics, files, {"families": args.family}, result.seconds)
    print(f"wrote {out / 'sweep.csv'}, sweep.json and sweep.png", file=sys.stderr)
    return 0


def run_tune(args: argparse.Namespace) -> int:
    from nosink.eval.sweep import check_family
    from nosink.eval.tune import DEFAULT_FAMILIES, DEFAULT_PROMPTS, TuneSpace, tune

    _check_outputs(args)
    families = tuple(args.family or DEFAULT_FAMILIES)
    for family in families:
        check_family(family)
    retrieval = args.task == "retrieval"
    default_prompts = RETRIEVAL_PROMPTS if retrieval else DEFAULT_PROMPTS
    prompts = tuple(p.strip() for p in args.prompts.split(";") if p.strip()) if args.prompts else default_prompts
    layers = _int_list(args.layers, "--layers", signed=True)
    ks = _int_list(args.ks, "--ks")
    k0s = _int_list(args.k0s or ("2" if retrieval else "1,2"), "--k0s")
    space = TuneSpace(families, tuple(ks) if ks else None, tuple(k0s or ()), prompts, tuple(layers) if layers else None)
    test_plans = tuple(str(Plan.coerce(plan)) for plan in args.test_plan)
    if (test_plans or args.cache_dir) and not args.test:
        raise NosinkError("--test-plan and --cache-dir apply with --test")
    task, files = _sweep_task(args)
    test = _test_task(args, task) if args.test else None
    encoder = _encoder(args, plan="baseline")
    budget = None if args.budget_min is None else 60 * args.budget_min
    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    if retrieval:
        say(f"retrieval selection: {task.sizes} (documents cut at {task.document_tokens} tokens)")
    result = tune(
        encoder,
        task,
        space=space,
        out=args.out,
        budget_s=budget,
        test=test,
        test_plans=test_plans,
        batch_size=args.batch_size,
        say=say,
    )
    winner = {"plan": result.winner.plan, "recipe": result.winner.recipe, "validation": result.winner.score}
    print(json.dumps({**winner, "test": result.test}, indent=2))
    metrics = {**winner, "test": result.test, "rows": len(result.rows), "skipped_prompts": result.skipped_prompts}
    _write(
        args,
        f"tune-{task.name}",
        encoder,
        metrics,
        files + ([str(path) for path in test.data.files] if retrieval and test else [args.test] if args.test else []),
        asdict(space) | ({"selection": task.sizes, "document_tokens": task.document_tokens} if retrieval else {}),
        result.seconds,
    )
    return 0


def _test_task(args: argparse.Namespace, task: Any) -> Any:
    """The validation task's protocol on the test split: STS pairs, or train + test texts for classification."""
    from nosink.eval.data import load_labeled, load_pairs
    from nosink.eval.sweep import ClassificationSweepTask, StsSweepTask

    if args.task == "retrieval":
        from nosink.eval.beir import load_beir
        from nosink.eval.retrieval import default_cache_dir
        from nosink.eval.retrieval_tune import RetrievalTest

        if args.test == args.split:
            raise NosinkError(f"--test {args.test} is the split that chooses (--split); test on another one")
        data = load_beir(args.data, args.test, limit_queries=args.test_limit)
        return RetrievalTest(data, task.instruction, args.cache_dir or default_cache_dir())
    if args.task == "sts":
        data = load_pairs(args.test, limit=args.test_limit)
        return StsSweepTask(data.texts_a, data.texts_b, data.scores, instruction=task.instruction, name="sts-test")
    train, test = load_labeled(args.train), load_labeled(args.test, limit=args.test_limit)
    return ClassificationSweepTask(
        train.texts, train.labels, test.texts, test.labels, instruction=task.instruction, name="classification-test"
    )


def run_attention(args: argparse.Namespace) -> int:
    from nosink.eval.sink import attention_maps, detect_sinks, plot_attention_grid, plot_sink_scores, sink_scores
    from nosink.io import read_inputs

    _check_outputs(args)  # before any work: a bad output path fails now, not after the run
    texts = read_inputs(args.texts).texts
    plans = [str(Plan.coerce(p)) for p in (args.plan or ["baseline"])]
    encoder = _encoder(args, plan=plans[0])
    maps = {p: attention_maps(encoder.with_plan(p), texts, tokens=args.tokens, max_texts=args.max_texts) for p in plans}
    scores = {plan: sink_scores(m) for plan, m in maps.items()}
    report: dict[str, Any] = {plan: s.to_json() for plan, s in scores.items()}
    for plan, plan_scores in scores.items():  # everything is computed before the first file is written
        print(f"plan {plan}\n{plan_scores.as_table()}")
        if args.detect:
            sinks = detect_sinks(plan_scores, threshold=args.threshold)
            report[plan] = {"scores": plan_scores.to_json(), "sink_layers": sinks}
            print(f"sink layers (>= {args.threshold}x uniform): {sinks or 'none'}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot_attention_grid(maps, out / "attention.png")
    plot_sink_scores(scores, out / "sinks.png")
    write_text_atomic(out / "sinks.json", json.dumps(report, indent=2) + "\n")
    settings = {"plans": plans, "tokens": args.tokens, "max_texts": args.max_texts, "threshold": args.threshold}
    sizes = {"texts": next(iter(maps.values())).n_texts}
    _write(args, "attention", encoder, report, [] if args.texts == "-" else [args.texts], settings, sizes=sizes)
    print(f"wrote {out / 'attention.png'}, sinks.png and sinks.json", file=sys.stderr)
    return 0


def run_study(args: argparse.Namespace) -> int:
    from nosink.eval.study import StudyConfig
    from nosink.eval.study import run_study as study

    parts = tuple(part.strip() for part in args.parts.split(",") if part.strip())
    ks = _int_list(args.ks, "--ks")
    check_folder_target(args.out, flag="--out")
    if not Path(args.data).is_dir():
        raise NosinkError(f"--data {args.data!r} is not a folder")
    config = StudyConfig(
        args.model, Path(args.data), Path(args.out), parts, tuple(ks) if ks else None, batch_size=args.batch_size
    )
    paths = study(config, say=lambda line: print(line, file=sys.stderr, flush=True))
    print("\n".join(str(path) for path in paths.values()))
    return 0


# -------------------------------------------------------------------- helpers


def _embedder(args: argparse.Namespace) -> Any:
    from nosink.eval.embedders import EmbedderKind, load_embedder, parse_spec

    converted = parse_spec(args.model)[0] is EmbedderKind.NOSINK
    return load_embedder(
        args.model,
        plan=args.plan if converted or args.plan != "baseline" else None,  # st:/hf: models run as they are
        pooling=args.pooling,
        device=args.device,
        dtype=args.dtype,
        max_length=args.max_length,
        recipe=args.recipe,
    )


def _encoder(args: argparse.Namespace, *, plan: str) -> Any:
    from nosink.encoder import Encoder
    from nosink.provision import provisioned_folder

    recipe = getattr(args, "recipe", None)  # tune has no --recipe: it searches recipes
    options = {"dtype": args.dtype, "device": args.device, "max_length": args.max_length, "recipe": recipe}
    model = str(provisioned_folder(args.model) or args.model)  # a name from `nosink models list` is its folder
    return Encoder.from_pretrained(model, plan=plan, pooling=args.pooling, **options)  # None: saved, or mean


def _sts_instruction(args: argparse.Namespace) -> str | None:
    """``--instruction`` when given; else the paper's STS instruction for nosink models, none for baselines.

    A baseline gets what it was trained with: all-MiniLM-L6-v2 scores 82.03 on STS-B test
    without an instruction (its published number) and 66.77 with the paper's E5 one.
    """
    from nosink.eval.base import EmbedderKind
    from nosink.eval.embedders import parse_spec

    if args.no_instruction:
        return None
    if args.instruction is not None:
        return args.instruction
    return STS_INSTRUCTION if parse_spec(args.model)[0] is EmbedderKind.NOSINK else None


def _sweep_task(args: argparse.Namespace) -> tuple[Any, list[str]]:
    from nosink.eval.data import load_labeled, load_pairs
    from nosink.eval.sweep import ClassificationSweepTask, StsSweepTask

    if args.task == "retrieval":
        from nosink.eval.beir import load_beir
        from nosink.eval.retrieval_tune import selection_task

        if not args.data:
            raise NosinkError("--task retrieval needs --data (a BEIR folder)")
        if args.limit is not None:
            raise NosinkError("--task retrieval takes --queries and --pool, not --limit")
        data = load_beir(args.data, args.split)
        sizes = {"queries": args.queries, "pool": args.pool, "document_tokens": args.document_tokens}
        task = selection_task(data, instruction=args.instruction, **sizes)
        return task, [str(path) for path in data.files]
    if args.task == "sts":
        if not args.data:
            raise NosinkError("--task sts needs --data (validation pairs)")
        data = load_pairs(args.data, limit=args.limit)
        instruction = args.instruction or STS_INSTRUCTION
        return StsSweepTask(data.texts_a, data.texts_b, data.scores, instruction=instruction), [args.data]
    if not (args.train and args.val):
        raise NosinkError("--task classification needs --train and --val")
    train, val = (load_labeled(path, limit=args.limit) for path in (args.train, args.val))
    task = ClassificationSweepTask(train.texts, train.labels, val.texts, val.labels, instruction=args.instruction)
    return task, [args.train, args.val]


def parse_spec_kind(model: str) -> str:
    """``nosink``, ``st`` or ``hf``: the kind of model a --model value names."""
    from nosink.eval.embedders import parse_spec

    return parse_spec(model)[0].value


def _int_list(text: str | None, option: str, *, signed: bool = False) -> list[int] | None:
    """``1-8`` or ``1,2,4``; with ``signed``, only comma-separated integers, which may be negative."""
    if text is None:
        return None
    values: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            if signed:
                values.append(int(part))
                continue
            low, _, high = part.partition("-")
            values += list(range(int(low), int(high) + 1)) if high else [int(low)]
    except ValueError:
        kind = "integers like -1,-4,8" if signed else "integers like 1-8 or 1,2,4"
        raise NosinkError(f"{option} takes {kind}, got {text!r}") from None
    return values


def _name(encoder: Any) -> str:
    return Path(encoder.name).name or encoder.name


def _report(args: argparse.Namespace, result: Any, embedder: Any, files: list[str], settings: dict) -> int:
    _print_json({"task": result.task, **result.metrics})
    _write(args, result.task, embedder, result.metrics, files, settings, result.timings, result.sizes)
    return 0


def _check_outputs(args: argparse.Namespace) -> None:
    """NosinkError for an output that cannot be written: --record (or its default folder), --out, --select."""
    from nosink.eval.results import DEFAULT_RECORD_FOLDER

    if getattr(args, "record", None):
        check_file_target(args.record, flag="--record")
    else:
        check_folder_target(DEFAULT_RECORD_FOLDER, flag="the run record folder")
    if getattr(args, "out", None):
        check_folder_target(args.out, flag="--out")
    if getattr(args, "select", None):
        check_file_target(args.select, flag="--select")


def _write(
    args: argparse.Namespace,
    task: str,
    embedder: Any,
    metrics: dict,
    files: list[str],
    settings: dict,
    timings: dict | None = None,
    sizes: dict | None = None,
    details: dict | None = None,
) -> None:
    from nosink.eval.embedders import describe_embedder
    from nosink.eval.results import default_record_path, run_record, write_record

    record = run_record(
        task=task,
        model=describe_embedder(embedder),
        metrics=metrics,
        data=files,
        sizes=sizes,
        timings=timings,
        settings=settings,
        details=details,
    )
    path = write_record(record, args.record or default_record_path(task))
    print(f"record: {path}", file=sys.stderr)


def _print_json(values: Any) -> None:
    print(json.dumps(values, indent=2, default=str))
