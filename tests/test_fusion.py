"""Fusing a dense and a lexical ranking: hand-computed cases, then ranx as an independent oracle."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from nosink.errors import NosinkError
from nosink.index.fusion import Fusion, fuse, ordered, reciprocal_rank_fusion, top, weighted_fusion

DENSE = {"q": {"a": 0.9, "b": 0.8, "c": 0.1}}  # ranks: a 1, b 2, c 3
LEXICAL = {"q": {"c": 5.0, "a": 3.0, "d": 1.0}}  # ranks: c 1, a 2, d 3


def test_ordered_sorts_by_score_then_breaks_ties_by_id_descending() -> None:
    """pytrec_eval's order: score descending, then document id descending."""
    assert ordered({"a": 1.0, "c": 2.0, "b": 1.0, "d": 0.5}) == ["c", "b", "a", "d"]
    assert ordered({"x": 0.0, "y": 0.0, "z": 0.0}) == ["z", "y", "x"]
    assert ordered({}) == []


def test_top_keeps_each_querys_best_documents() -> None:
    run = {"q1": {"a": 0.1, "b": 0.5, "c": 0.3, "d": 0.3}, "q2": {"x": 1.0}}
    assert top(run, 2) == {"q1": {"b": 0.5, "d": 0.3}, "q2": {"x": 1.0}}
    assert list(top(run, 3)["q1"]) == ["b", "d", "c"]


def test_reciprocal_rank_fusion_by_hand() -> None:
    """a: ranks 1 and 2; b: rank 2 once; c: ranks 3 and 1; d: rank 3 once; k = 60."""
    fused = reciprocal_rank_fusion([DENSE, LEXICAL], k=60)
    expected = {"a": 1 / 61 + 1 / 62, "b": 1 / 62, "c": 1 / 63 + 1 / 61, "d": 1 / 63}
    assert fused.keys() == {"q"}
    assert fused["q"] == pytest.approx(expected, rel=1e-12)
    assert set(fused["q"]) == set(expected)
    assert ordered(fused["q"]) == ["a", "c", "b", "d"]


def test_reciprocal_rank_fusion_k_changes_the_scores() -> None:
    fused = reciprocal_rank_fusion([DENSE, LEXICAL], k=1)
    assert fused["q"] == pytest.approx({"a": 1 / 2 + 1 / 3, "b": 1 / 3, "c": 1 / 4 + 1 / 2, "d": 1 / 4}, rel=1e-12)


def test_reciprocal_rank_fusion_ranks_ties_by_id_descending() -> None:
    """Tied scores are ranked as pytrec_eval ranks them: b (rank 1) before a (rank 2)."""
    fused = reciprocal_rank_fusion([{"q": {"a": 1.0, "b": 1.0}}], k=10)
    assert fused["q"] == pytest.approx({"b": 1 / 11, "a": 1 / 12}, rel=1e-12)


def test_reciprocal_rank_fusion_keeps_queries_of_either_ranking() -> None:
    fused = reciprocal_rank_fusion([{"q1": {"a": 2.0}}, {"q2": {"b": 1.0, "c": 0.5}}], k=60)
    assert fused.keys() == {"q1", "q2"}
    assert fused["q1"] == pytest.approx({"a": 1 / 61}, rel=1e-12)
    assert fused["q2"] == pytest.approx({"b": 1 / 61, "c": 1 / 62}, rel=1e-12)


def test_fuse_rrf_is_the_default() -> None:
    expected = {"a": 1 / 61 + 1 / 62, "b": 1 / 62, "c": 1 / 63 + 1 / 61, "d": 1 / 63}
    assert fuse(DENSE, LEXICAL)["q"] == pytest.approx(expected, rel=1e-12)
    assert fuse(DENSE, LEXICAL, fusion=Fusion.RRF, k=60)["q"] == pytest.approx(expected, rel=1e-12)


def test_weighted_fusion_by_hand() -> None:
    """Min-max per ranking: dense (0.9, 0.8, 0.1) -> a 1, b 0.875, c 0; lexical (5, 3, 1) -> c 1, a 0.5, d 0.

    A document a ranking lacks counts 0 there.
    """
    half = fuse(DENSE, LEXICAL, fusion="weighted", weight=0.5)
    assert half["q"] == pytest.approx({"a": 0.75, "b": 0.4375, "c": 0.5, "d": 0.0}, abs=1e-12)
    assert set(half["q"]) == {"a", "b", "c", "d"}
    quarter = fuse(DENSE, LEXICAL, fusion=Fusion.WEIGHTED, weight=0.25)
    assert quarter["q"] == pytest.approx({"a": 0.625, "b": 0.21875, "c": 0.75, "d": 0.0}, abs=1e-12)
    assert ordered(quarter["q"]) == ["c", "a", "b", "d"]
    only_dense = fuse(DENSE, LEXICAL, fusion="weighted", weight=1.0)
    assert only_dense["q"] == pytest.approx({"a": 1.0, "b": 0.875, "c": 0.0, "d": 0.0}, abs=1e-12)
    only_lexical = fuse(DENSE, LEXICAL, fusion="weighted", weight=0.0)
    assert only_lexical["q"] == pytest.approx({"a": 0.5, "b": 0.0, "c": 1.0, "d": 0.0}, abs=1e-12)


def test_weighted_fusion_of_equal_scores_normalises_to_zero() -> None:
    """All-equal scores have range 0 < 1e-9: the floor makes every normalised score 0, not a division by zero."""
    fused = weighted_fusion([{"q": {"a": 2.0, "b": 2.0}}, {"q": {"a": 1.0, "b": 3.0}}], [0.5, 0.5])
    assert fused["q"] == pytest.approx({"a": 0.0, "b": 0.5}, abs=1e-12)
    single = weighted_fusion([{"q": {"a": 7.0}}], [1.0])
    assert single["q"] == {"a": 0.0}


def test_weighted_fusion_with_three_rankings_and_a_missing_query() -> None:
    runs = [{"q": {"a": 0.0, "b": 1.0}}, {"q": {"a": 4.0, "b": 2.0}}, {"other": {"z": 1.0}}]
    fused = weighted_fusion(runs, [0.2, 0.3, 0.5])
    assert fused["q"] == pytest.approx({"a": 0.3, "b": 0.2}, abs=1e-12)
    assert fused["other"] == pytest.approx({"z": 0.0}, abs=1e-12)


@pytest.mark.parametrize("weight", [1.5, -0.1])
def test_a_weight_outside_zero_one_is_refused(weight: float) -> None:
    with pytest.raises(NosinkError, match="weight"):
        fuse(DENSE, LEXICAL, fusion="weighted", weight=weight)


@pytest.mark.parametrize("k", [0, -3])
def test_an_rrf_constant_below_one_is_refused(k: int) -> None:
    with pytest.raises(NosinkError, match="k must be >= 1"):
        reciprocal_rank_fusion([DENSE, LEXICAL], k=k)
    with pytest.raises(NosinkError):
        fuse(DENSE, LEXICAL, fusion="rrf", k=k)


def test_mismatched_weights_are_refused() -> None:
    with pytest.raises(NosinkError, match="2 rankings need 2 weights, got 3"):
        weighted_fusion([DENSE, LEXICAL], [0.2, 0.3, 0.5])


def test_fusion_needs_a_ranking() -> None:
    with pytest.raises(NosinkError):
        reciprocal_rank_fusion([])
    with pytest.raises(NosinkError):
        weighted_fusion([], [])


def test_an_unknown_fusion_is_refused() -> None:
    with pytest.raises(NosinkError, match="unknown fusion 'max'; use one of rrf, weighted"):
        fuse(DENSE, LEXICAL, fusion="max")


def random_runs(seed: int, queries: int = 30, docs: int = 50) -> tuple[dict, dict]:
    """Two runs of ``docs`` documents per query from a pool of 80 (they overlap partly); no tied scores."""
    rng = np.random.default_rng(seed)
    dense: dict[str, dict[str, float]] = {}
    lexical: dict[str, dict[str, float]] = {}
    for q in range(queries):
        for run, scale in ((dense, 1.0), (lexical, 25.0)):
            chosen = rng.choice(80, size=docs, replace=False)
            scores = rng.permutation(docs) + rng.uniform(0.0, 0.5, size=docs)  # distinct by construction
            # shuffled dict order: ranx's Run must sort by score itself
            run[f"q{q}"] = {f"d{doc}": float(score * scale) for doc, score in zip(chosen, scores, strict=True)}
    return dense, lexical


def test_fusion_matches_ranx() -> None:
    """ranx's fuse as an independent oracle (its Run sorts each query's documents by score, so its RRF ranks by
    score); one test, so that numba compiles ranx's kernels once."""
    ranx = pytest.importorskip("ranx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in (0, 1):
            dense, lexical = random_runs(seed)
            for k in (1, 60):
                expected = ranx.fuse(
                    runs=[ranx.Run(dense), ranx.Run(lexical)], norm=None, method="rrf", params={"k": k}
                ).to_dict()
                got = fuse(dense, lexical, fusion="rrf", k=k)
                assert got.keys() == expected.keys()
                for query, scores in expected.items():
                    assert set(got[query]) == set(scores)
                    assert got[query] == pytest.approx(scores, rel=1e-9)
            for weight in (0.3, 0.5, 0.9):
                expected = ranx.fuse(
                    runs=[ranx.Run(dense), ranx.Run(lexical)],
                    norm="min-max",
                    method="wsum",
                    params={"weights": [weight, 1.0 - weight]},
                ).to_dict()
                got = fuse(dense, lexical, fusion="weighted", weight=weight)
                assert got.keys() == expected.keys()
                for query, scores in expected.items():
                    assert set(got[query]) == set(scores)
                    assert got[query] == pytest.approx(scores, rel=1e-9, abs=1e-12)
