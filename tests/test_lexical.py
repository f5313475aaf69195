"""BM25 over texts: scores against a hand-written Lucene BM25 over bm25s's own tokens, misses, stemming, saving."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from nosink.errors import NosinkError
from nosink.index.lexical import FORMAT, SETTINGS_FILE, Bm25Index, Bm25Settings

bm25s = pytest.importorskip("bm25s")
Stemmer = pytest.importorskip("Stemmer")

DOCS = [
    "The quick brown fox jumps over the lazy dog",
    "A fast brown fox leaps over sleeping dogs in the garden",
    "Dogs and cats are popular household pets",
    "The stock market fell sharply as investors sold technology shares",
    "Investors bought shares of the fox network after strong earnings reports from the market",
    "Gardening tips: plant tomatoes in spring and water them daily",
    "The runner runs every morning before work",
    "Python is a programming language used for data science and machine learning",
]
QUERIES = ["brown fox dog", "investors shares market", "garden tomatoes spring water"]


def oracle_tokens(texts: list[str], stopwords: str | None = "en", stemmer: str | None = "english") -> list[list[str]]:
    """Token strings straight from bm25s and PyStemmer (not through the index)."""
    stem = Stemmer.Stemmer(stemmer) if stemmer else None
    return bm25s.tokenize(texts, stopwords=stopwords, stemmer=stem, return_ids=False, show_progress=False)


def oracle_scores(docs: list[list[str]], query: list[str], *, k1: float = 1.5, b: float = 0.75) -> list[float]:
    """Lucene's BM25 (since Lucene 8, and bm25s's ``lucene``): idf = ln(1 + (N - df + 0.5) / (df + 0.5)) times
    tf / (tf + k1 * (1 - b + b * dl / avgdl)), summed over the distinct query terms.

    Lucene 8 dropped the classic constant factor (k1 + 1) from the numerator: it scales every score alike.
    """
    n = len(docs)
    avgdl = sum(map(len, docs)) / n
    df = Counter(term for doc in docs for term in set(doc))
    scores = []
    for doc in docs:
        tf, dl, total = Counter(doc), len(doc), 0.0
        for term in set(query):
            if tf[term] == 0:
                continue
            idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
            total += idf * tf[term] / (tf[term] + k1 * (1 - b + b * dl / avgdl))
        scores.append(total)
    return scores


def expected_hits(scores: list[float], k: int) -> tuple[list[int], list[float]]:
    """The positions with a positive score, best first, and their scores (at most ``k``)."""
    hits = sorted((i for i, s in enumerate(scores) if s > 0), key=lambda i: -scores[i])[:k]
    return hits, [scores[i] for i in hits]


@pytest.fixture(scope="module")
def index() -> Bm25Index:
    return Bm25Index.build(DOCS)


def check_against_oracle(index: Bm25Index, settings: Bm25Settings, k: int) -> None:
    docs = oracle_tokens(DOCS, settings.stopwords, settings.stemmer)
    queries = oracle_tokens(QUERIES, settings.stopwords, settings.stemmer)
    positions, scores = index.search(QUERIES, k=k)
    assert positions.shape == scores.shape == (len(QUERIES), k)
    assert positions.dtype == np.int64 and scores.dtype == np.float32
    for row, query in enumerate(queries):
        wanted = oracle_scores(docs, query, k1=settings.k1, b=settings.b)
        hits, hit_scores = expected_hits(wanted, k)
        assert len(set(np.round(hit_scores, 6))) == len(hit_scores)  # no ties: the order is well defined
        assert positions[row, : len(hits)].tolist() == hits
        np.testing.assert_allclose(scores[row, : len(hits)], hit_scores, rtol=1e-5)
        assert (positions[row, len(hits) :] == -1).all()  # the rest scored 0: no hit


def test_oracle_tokens_are_what_the_settings_tokenize() -> None:
    """The oracle reads the same tokens: the settings' ids, spelled through their vocabulary, match bm25s's strings."""
    tokenized = Bm25Settings().tokenize(DOCS)
    spelled = {i: word for word, i in tokenized.vocab.items()}
    assert [[spelled[i] for i in doc] for doc in tokenized.ids] == oracle_tokens(DOCS)
    assert "dog" in oracle_tokens(["Dogs"])[0] and oracle_tokens(["the and of"]) == [[]]


def test_scores_and_ranking_match_a_hand_written_bm25(index: Bm25Index) -> None:
    check_against_oracle(index, Bm25Settings(), k=5)


def test_other_settings_are_used_for_scoring() -> None:
    settings = Bm25Settings(k1=1.2, b=0.5)
    check_against_oracle(Bm25Index.build(DOCS, settings), settings, k=4)


def test_unstemmed_index_without_stop_words_matches_the_oracle() -> None:
    settings = Bm25Settings(stemmer=None, stopwords=None)
    check_against_oracle(Bm25Index.build(DOCS, settings), settings, k=6)


def test_queries_with_only_unknown_or_stop_words_get_no_hit(index: Bm25Index) -> None:
    positions, scores = index.search(["zebra quantum xylophone", "the and of", "brown"], k=3)
    assert positions[0].tolist() == [-1, -1, -1]
    assert positions[1].tolist() == [-1, -1, -1]
    assert positions[2].tolist() == [0, 1, -1]  # only docs 0 and 1 say brown; 0 is the shorter
    assert (scores[:2] == 0).all()


def test_stemming_finds_other_forms_of_a_word(index: Bm25Index) -> None:
    positions, _ = index.search(["running"], k=2)
    assert positions[0].tolist() == [6, -1]  # "runner runs": Snowball stems running and runs to run
    unstemmed = Bm25Index.build(DOCS, Bm25Settings(stemmer=None))
    assert unstemmed.search(["running"], k=2)[0][0].tolist() == [-1, -1]


def test_k_is_clamped_to_the_number_of_documents(index: Bm25Index) -> None:
    positions, scores = index.search(QUERIES, k=100)
    assert positions.shape == scores.shape == (len(QUERIES), len(DOCS))
    assert len(index) == len(DOCS)


def test_no_queries_and_a_bad_k(index: Bm25Index) -> None:
    positions, scores = index.search([], k=3)
    assert positions.shape == scores.shape == (0, 3)
    with pytest.raises(NosinkError, match="k must be a positive integer"):
        index.search(QUERIES, k=0)


def test_save_and_load_round_trip(index: Bm25Index, tmp_path: Path) -> None:
    folder = index.save(tmp_path / "bm25", meta={"source": "docs.jsonl", "rows": 8})
    record = json.loads((folder / SETTINGS_FILE).read_text())
    assert record["format"] == FORMAT == "nosink-bm25/1"
    assert record["count"] == 8 and record["settings"]["k1"] == 1.5 and record["settings"]["stemmer"] == "english"
    loaded = Bm25Index.load(folder)
    assert loaded.meta == {"source": "docs.jsonl", "rows": 8}
    assert loaded.settings == Bm25Settings() and len(loaded) == 8
    queries = [*QUERIES, "running", "zebra"]
    before, after = index.search(queries, k=5), loaded.search(queries, k=5)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])


def test_loading_a_folder_without_an_index_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NosinkError, match=r"no bm25\.json"):
        Bm25Index.load(tmp_path)


def test_loading_another_format_is_refused(index: Bm25Index, tmp_path: Path) -> None:
    folder = index.save(tmp_path / "bm25")
    record = json.loads((folder / SETTINGS_FILE).read_text())
    record["format"] = "nosink-bm25/0"
    (folder / SETTINGS_FILE).write_text(json.dumps(record))
    with pytest.raises(NosinkError, match="nosink-bm25/0"):
        Bm25Index.load(folder)


def test_a_damaged_settings_file_is_refused(index: Bm25Index, tmp_path: Path) -> None:
    folder = index.save(tmp_path / "bm25")
    (folder / SETTINGS_FILE).write_text("{not json")
    with pytest.raises(NosinkError, match="damaged"):
        Bm25Index.load(folder)


def test_an_index_needs_a_text() -> None:
    with pytest.raises(NosinkError, match="at least one text"):
        Bm25Index.build([])


def test_describe_records_the_settings() -> None:
    assert Bm25Settings(k1=1.2).describe() == {
        "kind": "bm25",
        "name": "bm25",
        "dim": None,
        "plan": None,
        "pooling": None,
        "k1": 1.2,
        "b": 0.75,
        "method": "lucene",
        "stemmer": "english",
        "stopwords": "en",
    }
