"""Retrieval on a BEIR folder: dense (any embedder), BM25, and hybrid rankings, scored as MTEB scores them.

- Documents are embedded once per (model, plan, recipe, max length, prompt, corpus sha256) through the corpus
  machinery (:func:`nosink.corpus.embed_corpus`) into a cache folder: resumable after a kill, and reused when
  only the query side or the scoring changes (:func:`document_vectors`).
- Queries get an instruction (nosink models: the paper's for the dataset, SPEC Table 3), or the model's own
  ``query`` prompt where it defines one; documents get the model's ``document`` prompt, else none
  (:func:`query_side`, :func:`document_prompt`).
- Each query's 1,000 most cosine-similar documents make the ranking (MTEB keeps as many); pytrec_eval scores it:
  nDCG@10 (MTEB's main score), MAP@100, MRR@10, Recall@10 and Recall@100, all ×100 (:func:`retrieval_metrics`).
- Hybrid: the dense and the BM25 rankings fused (:mod:`nosink.index.fusion`); the fusion's parameter (the
  dense weight, or RRF's k) is chosen on another split's queries (``train`` for SciFact) when one is given.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nosink.encoder import Encoder
from nosink.errors import NosinkError
from nosink.eval.base import TaskResult, timed
from nosink.eval.beir import ID_FIELD, TEXT_FIELD, TITLE_FIELD, BeirSplit, Qrels
from nosink.index.fusion import DEFAULT_RRF_K, DEFAULT_WEIGHT, Fusion, Run, fuse, ordered

RUN_DEPTH = 1000  # documents kept per query, as MTEB keeps (max of its k values)
MRR_DEPTH = 10
DOCUMENT_SHARD_SIZE = 256  # documents per cache shard: what a kill can lose
CACHE_VARIABLE = "NOSINK_CACHE_DIR"
LEXICAL_MODEL = "bm25"
GENERIC_INSTRUCTION = "Given a query, retrieve relevant documents that answer the query."
WEIGHT_GRID = tuple(round(0.05 * i, 2) for i in range(21))  # dense weights tried for weighted fusion
RRF_K_GRID = (1, 5, 10, 20, 40, 60, 80, 100)  # RRF constants tried


# -------------------------------------------------------------------- scoring


def retrieval_metrics(run: Run, qrels: Qrels) -> dict[str, float]:
    """nDCG@10, MAP@100, MRR@10, Recall@10 and Recall@100, ×100, averaged over the judged queries (pytrec_eval).

    MRR@10 is pytrec_eval's reciprocal rank of each query's 10 best documents (ties by document id, as
    pytrec_eval orders them), which is MTEB's MRR@10.
    """
    import pytrec_eval

    judged = {query: docs for query, docs in qrels.items() if query in run}
    if not judged:
        raise NosinkError("the ranking holds none of the judged queries")
    measures = {"ndcg_cut.10", "map_cut.100", "recall.10,100"}
    per_query = pytrec_eval.RelevanceEvaluator(judged, measures).evaluate(_floats(run))
    cut = {query: {doc: run[query][doc] for doc in ordered(run[query])[:MRR_DEPTH]} for query in judged}
    reciprocal = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(_floats(cut))
    names = {"ndcg_at_10": "ndcg_cut_10", "map_at_100": "map_cut_100", "recall_at_10": "recall_10"}
    names |= {"recall_at_100": "recall_100"}
    metrics = {name: 100 * _mean(per_query, measure, judged) for name, measure in names.items()}
    return {**metrics, "mrr_at_10": 100 * _mean(reciprocal, "recip_rank", judged)}


def per_query_ndcg(run: Run, qrels: Qrels) -> dict[str, float]:
    """nDCG@10 of every judged query (0-1), for paired comparisons."""
    import pytrec_eval

    judged = {query: docs for query, docs in qrels.items() if query in run}
    scores = pytrec_eval.RelevanceEvaluator(judged, {"ndcg_cut.10"}).evaluate(_floats(run))
    return {query: scores.get(query, {}).get("ndcg_cut_10", 0.0) for query in judged}


def _floats(run: Run) -> dict[str, dict[str, float]]:
    return {query: {doc: float(score) for doc, score in docs.items()} for query, docs in run.items()}


def _mean(per_query: dict[str, dict[str, float]], measure: str, judged: Qrels) -> float:
    return float(np.mean([per_query.get(query, {}).get(measure, 0.0) for query in judged]))


def dense_run(
    query_vectors: np.ndarray,
    doc_vectors: np.ndarray,
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    *,
    depth: int = RUN_DEPTH,
) -> Run:
    """Each query's ``depth`` most cosine-similar documents and their similarities.

    Args:
        query_vectors: [Q, D] (any scale: normalised here).
        doc_vectors: [N, D] (any scale: normalised here).
    """
    if query_vectors.shape[1] != doc_vectors.shape[1]:
        raise NosinkError(f"queries have dimension {query_vectors.shape[1]}, documents {doc_vectors.shape[1]}")
    queries, docs = _unit_rows(query_vectors), _unit_rows(doc_vectors)  # [Q, D], [N, D]
    depth = min(depth, docs.shape[0])
    run: Run = {}
    for start in range(0, queries.shape[0], 256):  # [256, N] similarities at a time
        similarities = queries[start : start + 256] @ docs.T  # [q, N]
        best = np.argpartition(-similarities, depth - 1, axis=1)[:, :depth]  # [q, depth], unordered
        for row, positions in enumerate(best):
            run[query_ids[start + row]] = {doc_ids[p]: float(similarities[row, p]) for p in positions}
    return run


def lexical_run(index: Any, queries: Sequence[str], query_ids: Sequence[str], doc_ids: Sequence[str]) -> Run:
    """Each query's BM25 hits (at most :data:`RUN_DEPTH`; documents that match no query word are left out)."""
    positions, scores = index.search(list(queries), k=RUN_DEPTH)  # [Q, k] each; -1 = no hit
    return {
        query: {doc_ids[p]: float(s) for p, s in zip(row, row_scores, strict=True) if p >= 0}
        for query, row, row_scores in zip(query_ids, positions, scores, strict=True)
    }


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)  # [n, D]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)  # [n, 1]
    return vectors / np.where(norms > 0, norms, 1.0)


# -------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class QuerySide:
    """What each query is encoded with: an instruction (E5 format) or a raw prompt ("" for none)."""

    instruction: str | None = None
    prompt: str | None = None

    def describe(self) -> str:
        if self.instruction is not None:
            return f"instruction {self.instruction!r}"
        return f"prompt {self.prompt!r}" if self.prompt else "no instruction"


def paper_instruction(folder: str | Path) -> str:
    """The paper's instruction for a BEIR folder named like an MTEB task of SPEC Table 3 (``scifact`` is SciFact,
    case aside), else a generic retrieval instruction."""
    from nosink.eval.mteb_adapter import PAPER_INSTRUCTIONS

    by_name = {task.lower(): instruction for task, instruction in PAPER_INSTRUCTIONS.items()}
    return by_name.get(Path(folder).resolve().name.lower(), GENERIC_INSTRUCTION)


def query_side(embedder: Any, folder: str | Path, *, instruction: str | None = None, none: bool = False) -> QuerySide:
    """The queries' instruction or prompt: ``instruction`` when given; else the model's own ``query`` prompt; else,
    for nosink models, the paper's instruction for the dataset (:func:`paper_instruction`); else none."""
    if none:
        return QuerySide(prompt="")
    if instruction is not None:
        return QuerySide(instruction=instruction)
    own = _prompts(embedder).get("query")
    if own is not None:
        return QuerySide(prompt=own)
    return QuerySide(instruction=paper_instruction(folder)) if isinstance(embedder, Encoder) else QuerySide(prompt="")


def document_prompt(embedder: Any) -> str:
    """The documents' raw prompt: the model's own ``document`` prompt, else "" (none, not a default prompt)."""
    return _prompts(embedder).get("document", "")


def _prompts(embedder: Any) -> dict[str, str]:
    return dict(getattr(embedder, "prompts", None) or {})


def encode_queries(embedder: Any, texts: Sequence[str], side: QuerySide, *, batch_size: int | None) -> np.ndarray:
    """[Q, D] L2-normalised query vectors."""
    options: dict[str, Any] = {"batch_size": batch_size, "normalize": True}
    if side.instruction is not None:
        options["instruction"] = side.instruction
    elif side.prompt:  # an hf: encoder takes no raw prompt; "" means none for every kind
        options["prompt"] = side.prompt
    elif isinstance(embedder, Encoder) or _prompts(embedder):
        options["prompt"] = ""  # no prompt, not a saved default one
    return np.asarray(embedder.encode(list(texts), **options), dtype=np.float32)


# -------------------------------------------------------------------- document vectors


@dataclass(frozen=True)
class DocumentVectors:
    """A corpus's document vectors [N, D] (L2-normalised, corpus order), and how they were obtained."""

    vectors: np.ndarray
    truncated: int  # documents longer than the model's token limit
    folder: Path | None  # the cache folder, or None when computed in memory
    embedded: int  # documents embedded by this call (0: every one came from the cache)
    seconds: float


def default_cache_dir() -> Path:
    """``$NOSINK_CACHE_DIR``, else ``~/.cache/nosink/embeddings`` (beside the models)."""
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE]).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "nosink" / "embeddings"


def corpus_source(data: BeirSplit) -> Any:
    """The BEIR corpus as the corpus machinery reads it: ``_id`` ids, title and text joined."""
    from nosink.corpus.reader import CorpusSource

    return CorpusSource.open(
        data.corpus_file, input_format="jsonl", id_field=ID_FIELD, text_field=TEXT_FIELD, title_field=TITLE_FIELD
    )


def cache_folder(embedder: Any, data: BeirSplit, *, prompt: str, cache_dir: str | Path) -> Path:
    """Where the documents' vectors under this embedder and prompt live: one folder per job (its digest)."""
    from nosink.corpus.embed import corpus_job

    job = corpus_job(embedder, corpus_source(data), prompt=prompt, normalize=True, shard_size=DOCUMENT_SHARD_SIZE)
    digest = hashlib.sha256(json.dumps(job, sort_keys=True, default=str).encode()).hexdigest()[:16]
    model = re.sub(r"[^A-Za-z0-9._-]+", "-", _short_name(str(job["encoder"].get("model", "model"))))
    return Path(cache_dir) / f"{data.folder.resolve().name}-{model}-{digest}"


def _short_name(model: str) -> str:
    path = Path(model)
    return (path.parent.name if path.name in ("transformers", "sentence-transformers") else path.name) or model


def document_vectors(
    embedder: Any,
    data: BeirSplit,
    *,
    prompt: str,
    batch_size: int | None = None,
    cache_dir: str | Path | None = None,
    show_progress_bar: bool | None = None,
) -> DocumentVectors:
    """The corpus's document vectors: from the cache when this job was embedded before, else embedded now.

    With ``cache_dir`` the documents go through :func:`nosink.corpus.embed_corpus` into
    :func:`cache_folder` (shards of :data:`DOCUMENT_SHARD_SIZE`): a run cut short resumes where it stopped.
    Without it they are embedded in memory.
    """
    from nosink.corpus.embed import embed_corpus
    from nosink.corpus.job import EncodeOptions, embed_texts
    from nosink.corpus.shards import iter_shards

    started = time.perf_counter()
    truncated = int(count_truncated(embedder, data.doc_texts, prompt=prompt).sum())
    if cache_dir is None:
        options = EncodeOptions(None, True, batch_size, None, prompt)
        vectors, _ = embed_texts(embedder, list(data.doc_texts), options, progress=lambda done: None)
        return DocumentVectors(vectors, truncated, None, len(data.doc_texts), time.perf_counter() - started)
    folder = cache_folder(embedder, data, prompt=prompt, cache_dir=cache_dir)
    report = embed_corpus(
        embedder,
        corpus_source(data),
        folder,
        prompt=prompt,
        normalize=True,
        shard_size=DOCUMENT_SHARD_SIZE,
        batch_size=batch_size,
        show_progress_bar=show_progress_bar,
    )
    shards = list(iter_shards(folder, texts=False))
    ids = [doc for shard in shards for doc in shard.ids]
    if ids != data.doc_ids:
        raise NosinkError(f"the cached vectors in {folder} are not those of {data.corpus_file}; delete the folder")
    vectors = np.concatenate([shard.embeddings for shard in shards])  # [N, D]
    return DocumentVectors(vectors, truncated, folder, report.embedded_records, time.perf_counter() - started)


def precompute_documents(
    embedders: Sequence[Any],
    data: BeirSplit,
    *,
    batch_size: int | None = None,
    cache_dir: str | Path,
    show_progress_bar: bool | None = None,
) -> list[Path]:
    """Embed the corpus for several plans of one nosink model in one shared-prefix pass, into their cache folders.

    The folders are those :func:`document_vectors` reads, so each later evaluation finds its vectors cached.
    Embedders that cannot share a pass (another model, prompt or pooling) are embedded one by one.
    """
    from nosink.corpus.embed import embed_corpus_shared
    from nosink.readouts import shared_pass_key

    groups: dict[Any, list[Any]] = {}
    for embedder in embedders:
        key = (*shared_pass_key(embedder), document_prompt(embedder)) if isinstance(embedder, Encoder) else id(embedder)
        groups.setdefault(key, []).append(embedder)
    folders = []
    for group in groups.values():
        prompt = document_prompt(group[0])
        targets = [cache_folder(embedder, data, prompt=prompt, cache_dir=cache_dir) for embedder in group]
        if len(group) == 1:
            document_vectors(group[0], data, prompt=prompt, batch_size=batch_size, cache_dir=cache_dir)
        else:
            embed_corpus_shared(
                group,
                corpus_source(data),
                targets,
                prompt=prompt,
                normalize=True,
                shard_size=DOCUMENT_SHARD_SIZE,
                batch_size=batch_size,
                show_progress_bar=show_progress_bar,
            )
        folders += targets
    return folders


def count_truncated(embedder: Any, texts: Sequence[str], *, prompt: str | None = None) -> np.ndarray:
    """Which texts [N] the embedder cuts at its token limit (with the prompt before them)."""
    if isinstance(embedder, Encoder):
        rows = embedder.tokenize(list(texts), prompt=prompt, warn=False)
        per_text = embedder.rows_per_text
        return np.array([any(r.truncated for r in rows[i : i + per_text]) for i in range(0, len(rows), per_text)])
    if prompt:
        return embedder.truncated(texts, prompt=prompt)
    return embedder.truncated(texts)


# -------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class HybridSpec:
    """Fuse the dense ranking with BM25's: how, and with which parameter (None: chosen on ``tune`` queries)."""

    fusion: Fusion = Fusion.RRF
    weight: float | None = None  # weighted fusion's dense weight
    k: int | None = None  # RRF's constant

    def __post_init__(self) -> None:
        object.__setattr__(self, "fusion", Fusion.coerce(self.fusion))
        if self.weight is not None and not 0.0 <= self.weight <= 1.0:
            raise NosinkError(f"the dense weight must be in [0, 1], got {self.weight}")
        if self.k is not None and self.k < 1:
            raise NosinkError(f"the RRF constant k must be >= 1, got {self.k}")


@dataclass
class Rankings:
    """The rankings of one split's queries: dense, lexical (BM25) and, for hybrid, fused."""

    dense: Run | None = None
    lexical: Run | None = None
    fused: Run | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def evaluate_retrieval(
    embedder: Any | None,
    data: BeirSplit,
    *,
    side: QuerySide | None = None,
    hybrid: HybridSpec | None = None,
    tune: BeirSplit | None = None,
    batch_size: int | None = None,
    cache_dir: str | Path | None = None,
    show_progress_bar: bool | None = None,
    say: Callable[[str], object] = lambda line: None,
) -> TaskResult:
    """Score a dense embedder, BM25 (``embedder=None``), or both fused (``hybrid``) on one split.

    Args:
        embedder: A nosink ``Encoder`` or a baseline (``st:``, ``hf:``); None for BM25 alone.
        data: The split to score (its queries and qrels; the whole corpus).
        side: The queries' instruction or prompt (default: :func:`query_side`).
        hybrid: Fuse with BM25; its parameter, when not given, is chosen on ``tune``'s queries
            (nDCG@10), else the default (RRF k = 60, weight 0.5).
        tune: Another split (e.g. ``train``) whose queries choose the fusion parameter.
        batch_size: Texts per forward pass.
        cache_dir: Where document vectors are cached (None: embed them in memory).
        show_progress_bar: Passed to the embedding.
        say: Where progress lines go.

    Returns:
        Metrics (×100) of the main ranking (hybrid, else dense, else BM25), with each component's metrics
        under ``dense`` and ``bm25`` for a hybrid; sizes; timings.
    """
    if embedder is None and hybrid is not None:
        raise NosinkError("hybrid search fuses a dense model with BM25; give a dense model")
    timings: dict[str, float] = {}
    sizes = {"documents": len(data.doc_ids), "queries": len(data.query_ids)}
    settings: dict[str, Any] = {}
    lexical_index, docs = None, None
    if embedder is None or hybrid is not None:
        lexical_index, timings["bm25_index_s"] = timed(lambda: bm25_index(data))
    if embedder is not None:
        side = side or query_side(embedder, data.folder)
        prompt = document_prompt(embedder)
        options = {"batch_size": batch_size, "cache_dir": cache_dir, "show_progress_bar": show_progress_bar}
        docs = document_vectors(embedder, data, prompt=prompt, **options)
        say(_document_line(docs))
        timings["documents_s"] = docs.seconds
        sizes |= {"truncated_documents": docs.truncated, "embedded_documents": docs.embedded}
        sizes |= {"dim": int(docs.vectors.shape[1])}
        settings |= {"query": side.describe(), "query_instruction": side.instruction, "query_prompt": side.prompt}
        settings |= {"document_prompt": prompt, "cache": str(docs.folder) if docs.folder else None}
    rankings, timings["queries_s"] = timed(lambda: _rankings(embedder, data, side, docs, lexical_index, batch_size))
    if hybrid is None:
        main = rankings.dense if embedder is not None else rankings.lexical
        metrics, timings["score_s"] = timed(lambda: retrieval_metrics(main, data.qrels))
        return TaskResult("retrieval", metrics, sizes, timings, settings, per_query_ndcg(main, data.qrels))
    chosen, curve = _choose_fusion(embedder, hybrid, tune, side, docs, lexical_index, batch_size, say)
    fused = fuse(rankings.dense, rankings.lexical, fusion=hybrid.fusion, **chosen)
    metrics: dict[str, Any] = retrieval_metrics(fused, data.qrels)
    metrics["dense"] = retrieval_metrics(rankings.dense, data.qrels)
    metrics["bm25"] = retrieval_metrics(rankings.lexical, data.qrels)
    settings |= {"fusion": hybrid.fusion.value, **chosen, "chosen_on": tune.split if curve else None, "tuning": curve}
    return TaskResult("retrieval", metrics, sizes, timings, settings, per_query_ndcg(fused, data.qrels))


def _document_line(docs: DocumentVectors) -> str:
    where = f" (cache {docs.folder})" if docs.folder else ""
    cached = len(docs.vectors) - docs.embedded
    return (
        f"documents: {len(docs.vectors)} ({docs.embedded} embedded now, {cached} from the cache; "
        f"{docs.truncated} cut at the token limit){where}"
    )


def bm25_index(data: BeirSplit) -> Any:
    from nosink.index.lexical import Bm25Index

    return Bm25Index.build(data.doc_texts)


def _rankings(
    embedder: Any | None,
    data: BeirSplit,
    side: QuerySide | None,
    docs: DocumentVectors | None,
    lexical_index: Any | None,
    batch_size: int | None,
) -> Rankings:
    rankings = Rankings()
    if embedder is not None and docs is not None and side is not None:
        queries = encode_queries(embedder, data.query_texts, side, batch_size=batch_size)  # [Q, D]
        rankings.dense = dense_run(queries, docs.vectors, data.query_ids, data.doc_ids)
    if lexical_index is not None:
        rankings.lexical = lexical_run(lexical_index, data.query_texts, data.query_ids, data.doc_ids)
    return rankings


def _choose_fusion(
    embedder: Any,
    hybrid: HybridSpec,
    tune: BeirSplit | None,
    side: QuerySide | None,
    docs: DocumentVectors | None,
    lexical_index: Any,
    batch_size: int | None,
    say: Callable[[str], object],
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """The fusion parameter: as given; else the best on ``tune``'s queries (nDCG@10); else the default."""
    name, given, grid, default = (
        ("weight", hybrid.weight, WEIGHT_GRID, DEFAULT_WEIGHT)
        if hybrid.fusion is Fusion.WEIGHTED
        else ("k", hybrid.k, RRF_K_GRID, DEFAULT_RRF_K)
    )
    if given is not None or tune is None:
        return {name: given if given is not None else default}, []
    rankings = _rankings(embedder, tune, side, docs, lexical_index, batch_size)
    curve = []
    for value in grid:
        fused = fuse(rankings.dense, rankings.lexical, fusion=hybrid.fusion, **{name: value})
        curve.append({name: value, "ndcg_at_10": retrieval_metrics(fused, tune.qrels)["ndcg_at_10"]})
    best = max(curve, key=lambda point: point["ndcg_at_10"])
    queries = f"{len(tune.query_ids)} {tune.split} queries"
    say(f"fusion {hybrid.fusion.value}: {name} = {best[name]} chosen on {queries} (nDCG@10 {best['ndcg_at_10']:.2f})")
    return {name: best[name]}, curve
