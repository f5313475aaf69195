"""Retrieval with real models and the real SciFact: provisioned names, sentence-transformers' own vectors, and the
published numbers (BM25 from bm25s's benchmarks; all-MiniLM-L6-v2 from MTEB's results, slow: 4 min).

Needs ``../shared/data/scifact`` (skipped without it) and the provisioned all-MiniLM-L6-v2 (``make test`` pulls it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED

from nosink.cli import main
from nosink.eval.beir import load_beir
from nosink.eval.retrieval import document_vectors, evaluate_retrieval
from nosink.provision import provision

SCIFACT = SHARED / "data" / "scifact"
MINILM = "all-minilm-l6-v2"
pytestmark = pytest.mark.skipif(not SCIFACT.is_dir(), reason="../shared/data/scifact is not available")


def first_documents(tmp_path: Path, count: int) -> Path:
    """SciFact with its first ``count`` documents and the test queries judged among them."""
    folder = tmp_path / "scifact"
    (folder / "qrels").mkdir(parents=True)
    lines = (SCIFACT / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:count]
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "queries.jsonl").write_bytes((SCIFACT / "queries.jsonl").read_bytes())
    kept = {json.loads(line)["_id"] for line in lines}
    rows = (SCIFACT / "qrels" / "test.tsv").read_text().splitlines()
    judged = [rows[0], *(row for row in rows[1:] if row.split("\t")[1].strip() in kept)]
    (folder / "qrels" / "test.tsv").write_text("\n".join(judged) + "\n")
    return folder


def test_a_provisioned_embedders_cached_documents_are_its_own_vectors(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from nosink.eval.embedders import load_embedder

    embedder = load_embedder(f"st:{MINILM}", device="cpu")  # a provisioned name, not a path
    assert Path(embedder.name) == provision(MINILM).folder
    data = load_beir(first_documents(tmp_path, 200), "test")
    docs = document_vectors(embedder, data, prompt="", cache_dir=tmp_path / "cache")
    expected = SentenceTransformer(str(provision(MINILM).folder), device="cpu").encode(
        data.doc_texts, normalize_embeddings=True
    )  # the model's own encode, loaded apart
    np.testing.assert_allclose(docs.vectors, expected, atol=1e-5)
    assert docs.truncated == sum(len(embedder.model.tokenizer(text)["input_ids"]) > 256 for text in data.doc_texts)
    again = document_vectors(embedder, data, prompt="", cache_dir=tmp_path / "cache")
    assert again.embedded == 0 and np.array_equal(again.vectors, docs.vectors)


def test_bm25_on_scifact_matches_the_published_bm25s_number(tmp_path: Path) -> None:
    """xhluca/bm25-benchmarks reports 68.7 nDCG@10 for bm25s (Lucene, k1 = 1.5, b = 0.75, Snowball stems)."""
    record = tmp_path / "bm25.json"
    assert main(["eval", "retrieval", "--model", "bm25", "--data", str(SCIFACT), "--record", str(record)]) == 0
    metrics = json.loads(record.read_text())["metrics"]
    assert metrics["ndcg_at_10"] == pytest.approx(68.7, abs=0.1)
    assert json.loads(record.read_text())["sizes"] == {"documents": 5183, "queries": 300}


@pytest.mark.slow
def test_minilm_on_scifact_reproduces_mtebs_published_scores(tmp_path: Path) -> None:
    """embeddings-benchmark/results, sentence-transformers__all-MiniLM-L6-v2/8b3219a…/SciFact.json (mteb 1.12.75):
    ndcg_at_10 0.64508, map_at_100 0.60307, mrr_at_10 0.60472, recall_at_10 0.78333, recall_at_100 0.925."""
    from nosink.eval.embedders import load_embedder

    result = evaluate_retrieval(
        load_embedder(f"st:{MINILM}", device="cpu"), load_beir(SCIFACT, "test"), cache_dir=tmp_path
    )
    published = {"ndcg_at_10": 64.508, "map_at_100": 60.307, "mrr_at_10": 60.472, "recall_at_10": 78.333}
    assert {name: result.metrics[name] for name in published} == pytest.approx(published, abs=0.01)
