"""Choosing plans, prompts and layers for retrieval on 2 CPU cores: a selection protocol that fits, and the test.

Encoding a whole corpus per candidate is out of reach (SciFact: 5,183 abstracts, about 1.6M tokens: 40 min for
SmolLM2-135M per pass here, against hundreds of candidates). :func:`selection_task` scores every candidate on a
small, hard version of the task instead, built from another split (``train`` for SciFact):

- ``queries`` of the split's judged queries, drawn at random (seed 0);
- a document pool: every document judged relevant to them, then BM25's best documents for them, taken rank by
  rank across the queries (every query's first hit, then every second hit …) until the pool holds ``pool``
  documents. These are the documents that compete with the relevant ones for the top 10;
- documents cut after their first ``document_tokens`` tokens, before any prompt template goes around them
  (queries are short and stay whole).

nDCG@10 on the pool is the selection score. One shared-prefix pass per prompt gives every plan at every layer
(``nosink tune``). What it may miss: a candidate that ranks the pool's lexically similar documents well but lets
in documents BM25 never proposed; anything that needs a document's text beyond its first ``document_tokens``
tokens; and it is tuned on claims of the train split only. The winner is then scored once on the test split with
whole documents (:class:`RetrievalTest`), beside the baseline.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nosink.encoder import Encoder
from nosink.errors import NosinkError
from nosink.eval.beir import BeirSplit, Qrels
from nosink.eval.retrieval import (
    QuerySide,
    bm25_index,
    document_prompt,
    evaluate_retrieval,
    paper_instruction,
    precompute_documents,
    retrieval_metrics,
)
from nosink.eval.sweep import Segment

DEFAULT_QUERIES = 200
DEFAULT_POOL = 600
DEFAULT_DOCUMENT_TOKENS = 128
_POOL_DEPTH = 100  # BM25 hits per query considered for the pool


@dataclass
class RetrievalSweepTask:
    """Retrieval on a document pool: queries (with their instruction) and documents (no prompt), nDCG@10 ×100."""

    query_ids: list[str]
    query_texts: list[str]
    doc_ids: list[str]
    doc_texts: list[str]
    qrels: Qrels
    instruction: str | None
    document_tokens: int | None = DEFAULT_DOCUMENT_TOKENS
    name: str = "retrieval"
    main_metric: str = "ndcg_at_10"
    sizes: dict[str, int] = field(default_factory=dict)

    def texts(self) -> list[str]:
        return [*self.query_texts, *self.doc_texts]

    def segments(self) -> list[Segment]:
        """Queries with the instruction; documents with none (not a default prompt), cut at ``document_tokens``."""
        return [
            Segment(self.query_texts, self.instruction),
            Segment(self.doc_texts, None, "", text_tokens=self.document_tokens),
        ]

    def score(self, features: np.ndarray) -> dict[str, float]:
        from nosink.eval.retrieval import dense_run

        n = len(self.query_texts)
        run = dense_run(features[:n], features[n:], self.query_ids, self.doc_ids)
        return retrieval_metrics(run, self.qrels)


def selection_task(
    data: BeirSplit,
    *,
    queries: int = DEFAULT_QUERIES,
    pool: int = DEFAULT_POOL,
    document_tokens: int | None = DEFAULT_DOCUMENT_TOKENS,
    instruction: str | None = None,
    seed: int = 0,
) -> RetrievalSweepTask:
    """The selection task of the module docstring on ``data`` (a split other than the test one).

    Args:
        data: The split whose queries choose (e.g. SciFact's ``train``).
        queries: How many of its judged queries to use (all when fewer).
        pool: Documents in the pool (at least the relevant ones of the chosen queries).
        document_tokens: Cut documents at this many tokens (None: the encoder's own limit).
        instruction: The queries' instruction (default: :func:`paper_instruction` for the folder).
        seed: The draw of queries.
    """
    if queries < 1 or pool < 1:
        raise NosinkError(f"queries and pool must be positive, got {queries} and {pool}")
    chosen = sorted(random.Random(seed).sample(range(len(data.query_ids)), min(queries, len(data.query_ids))))
    query_ids = [data.query_ids[i] for i in chosen]
    query_texts = [data.query_texts[i] for i in chosen]
    qrels = {query: data.qrels[query] for query in query_ids}
    position = {doc: i for i, doc in enumerate(data.doc_ids)}
    members = list(dict.fromkeys(position[doc] for query in query_ids for doc, score in qrels[query].items() if score))
    relevant = len(members)
    hits, _ = bm25_index(data).search(query_texts, k=_POOL_DEPTH)  # [Q, depth]; -1 = no hit
    taken = set(members)
    for rank in range(hits.shape[1]):  # every query's first hit, then every query's second hit …
        for hit in hits[:, rank]:
            if len(members) >= pool:
                break
            if hit >= 0 and int(hit) not in taken:
                taken.add(int(hit))
                members.append(int(hit))
    sizes = {"queries": len(query_ids), "pool": len(members), "relevant": relevant, "corpus": len(data.doc_ids)}
    return RetrievalSweepTask(
        query_ids,
        query_texts,
        [data.doc_ids[i] for i in members],
        [data.doc_texts[i] for i in members],
        qrels,
        instruction if instruction is not None else paper_instruction(data.folder),
        document_tokens,
        sizes=sizes,
    )


@dataclass
class RetrievalTest:
    """The test split, scored with whole documents: every candidate's vectors cached, plans sharing a pass."""

    data: BeirSplit
    instruction: str | None
    cache_dir: str | Path | None
    name: str = "retrieval-test"
    main_metric: str = "ndcg_at_10"

    def score_encoders(self, encoders: dict[str, Encoder], *, batch_size: int | None) -> dict[str, dict[str, Any]]:
        """Each encoder's metrics (×100) on the test split; the corpus is embedded once per prompt for all."""
        if self.cache_dir is not None:
            precompute_documents(list(encoders.values()), self.data, batch_size=batch_size, cache_dir=self.cache_dir)
        scored = {}
        for name, encoder in encoders.items():
            side = QuerySide(instruction=self.instruction)
            result = evaluate_retrieval(encoder, self.data, side=side, batch_size=batch_size, cache_dir=self.cache_dir)
            scored[name] = result.metrics | {"plan": str(encoder.plan), "recipe": str(encoder.recipe)}
            scored[name] |= {
                "document_prompt": document_prompt(encoder),
                "truncated": result.sizes["truncated_documents"],
            }
        return scored
