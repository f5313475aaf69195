"""Fusing rankings: a dense and a lexical (BM25) ranking into one hybrid ranking.

A ranking (a "run", as pytrec_eval and ranx call it) maps each query id to its retrieved documents and their
scores. Two fusions, the same as ranx's (``tests/test_fusion.py`` checks them against ranx):

- ``rrf``, reciprocal-rank fusion (Cormack et al., SIGIR 2009): a document's score is the sum over rankings of
  ``1 / (k + rank)``, rank counted from 1; ``k`` (default 60) damps the top ranks.
- ``weighted``: each ranking's scores are min-max normalised per query into [0, 1] (a document a ranking did not
  retrieve counts 0 there), then summed with weights ``weight`` (dense) and ``1 - weight`` (lexical).

Ties are broken as pytrec_eval breaks them: by document id, descending. These are a few lines of plain Python
rather than ranx itself, whose numba kernels compile for 5-30 s in every new process (measured here),
which a one-query ``nosink search`` would pay each time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nosink.errors import Choice, NosinkError, check_positive

Run = dict[str, dict[str, float]]  # query id -> document id -> score
DEFAULT_RRF_K = 60
DEFAULT_WEIGHT = 0.5
DEFAULT_DEPTH = 100  # candidates each ranking gives a hybrid search
_MIN_RANGE = 1e-9  # ranx's floor for a min-max denominator: a ranking of equal scores normalises to zeros


class Fusion(Choice):
    """How a dense and a lexical ranking become one."""

    RRF = "rrf"
    WEIGHTED = "weighted"

    @classmethod
    def noun(cls) -> str:
        return "fusion"


@dataclass(frozen=True)
class HybridSearch:
    """How a search fuses dense and BM25 hits: the fusion, its parameter, and how deep each ranking goes."""

    fusion: Fusion = Fusion.RRF
    weight: float = DEFAULT_WEIGHT  # weighted fusion's dense weight
    k: int = DEFAULT_RRF_K  # RRF's constant
    depth: int = DEFAULT_DEPTH  # hits taken from each ranking before fusing

    def __post_init__(self) -> None:
        object.__setattr__(self, "fusion", Fusion.coerce(self.fusion))
        check_positive(k=self.k, depth=self.depth)
        if not 0.0 <= self.weight <= 1.0:
            raise NosinkError(f"the dense weight must be in [0, 1], got {self.weight}")

    def fuse(self, dense: Mapping[str, Mapping[str, float]], lexical: Mapping[str, Mapping[str, float]]) -> Run:
        """:func:`fuse` with these settings."""
        return fuse(dense, lexical, fusion=self.fusion, weight=self.weight, k=self.k)


def ordered(scores: Mapping[str, float]) -> list[str]:
    """Document ids best first: score descending, ties by id descending (pytrec_eval's order)."""
    return [doc for doc, _ in sorted(scores.items(), key=lambda item: (item[1], item[0]), reverse=True)]


def top(run: Mapping[str, Mapping[str, float]], depth: int) -> Run:
    """Each query's ``depth`` best documents (in :func:`ordered`'s order)."""
    return {query: {doc: scores[doc] for doc in ordered(scores)[:depth]} for query, scores in run.items()}


def reciprocal_rank_fusion(runs: Sequence[Mapping[str, Mapping[str, float]]], *, k: int = DEFAULT_RRF_K) -> Run:
    """Sum over rankings of ``1 / (k + rank)`` per document (rank 1 is a ranking's best)."""
    if k < 1:
        raise NosinkError(f"the RRF constant k must be >= 1, got {k}")
    fused: Run = {}
    for query in _queries(runs):
        scores: dict[str, float] = {}
        for run in runs:
            for rank, doc in enumerate(ordered(run.get(query, {})), start=1):
                scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
        fused[query] = scores
    return fused


def weighted_fusion(runs: Sequence[Mapping[str, Mapping[str, float]]], weights: Sequence[float]) -> Run:
    """Sum over rankings of ``weight * min-max normalised score`` per document (0 where a ranking lacks it)."""
    if len(weights) != len(runs):
        raise NosinkError(f"{len(runs)} rankings need {len(runs)} weights, got {len(weights)}")
    fused: Run = {}
    for query in _queries(runs):
        normalised = [_min_max(run.get(query, {})) for run in runs]
        docs = dict.fromkeys(doc for scores in normalised for doc in scores)
        fused[query] = {
            doc: sum(w * scores.get(doc, 0.0) for w, scores in zip(weights, normalised, strict=True)) for doc in docs
        }
    return fused


def fuse(
    dense: Mapping[str, Mapping[str, float]],
    lexical: Mapping[str, Mapping[str, float]],
    *,
    fusion: Fusion | str = Fusion.RRF,
    weight: float = DEFAULT_WEIGHT,
    k: int = DEFAULT_RRF_K,
) -> Run:
    """The hybrid ranking of a dense and a lexical one: ``rrf`` (with ``k``) or ``weighted`` (dense ``weight``)."""
    fusion = Fusion.coerce(fusion)
    if fusion is Fusion.RRF:
        return reciprocal_rank_fusion([dense, lexical], k=k)
    if not 0.0 <= weight <= 1.0:
        raise NosinkError(f"the dense weight must be in [0, 1], got {weight}")
    return weighted_fusion([dense, lexical], [weight, 1.0 - weight])


def _queries(runs: Sequence[Mapping[str, Mapping[str, float]]]) -> list[str]:
    if not runs:
        raise NosinkError("fusion needs at least one ranking")
    return list(dict.fromkeys(query for run in runs for query in run))


def _min_max(scores: Mapping[str, float]) -> dict[str, float]:
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    span = max(high - low, _MIN_RANGE)
    return {doc: (score - low) / span for doc, score in scores.items()}
