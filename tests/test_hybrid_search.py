"""The lexical index beside the vector index, and hybrid search: ``nosink index build``, ``nosink search --lexical``
and ``--hybrid``, ``Retriever(hybrid=...)`` and RAG.

Oracles: BM25 rankings from a ``Bm25Index`` built directly on the texts, cosine rankings from ``Encoder.encode``
in numpy, and reciprocal-rank / min-max fusion written out here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import CORPUS, tiny_model, tiny_tokenizer

from nosink import Encoder, NosinkError
from nosink.cli import main
from nosink.corpus.embed import embed_corpus
from nosink.corpus.reader import CorpusSource
from nosink.index import Retriever, VectorIndex, build_index, index_dir
from nosink.index.fusion import HybridSearch
from nosink.index.lexical import SETTINGS_FILE, Bm25Index

pytest.importorskip("faiss")
pytest.importorskip("pyarrow")
pytest.importorskip("bm25s")
pytestmark = pytest.mark.usefixtures("one_thread")

PLAN = "mask0-bidir:k=2"
WORDS = " ".join(CORPUS).split()
QUERIES = ["the cat and the dog", "a little girl in the park", "my card payment"]


def texts(count: int = 80, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(3, 12))) for _ in range(count)]


@pytest.fixture(scope="module")
def model_dir(tiny_llama_dir: Path) -> Path:
    return tiny_llama_dir


def corpus(tmp_path: Path, model_dir: Path, *, store_text: bool = True, recipe: str | None = None) -> Path:
    source = tmp_path / "c.jsonl"
    source.write_text("".join(json.dumps({"id": f"s{i}", "text": t}) + "\n" for i, t in enumerate(texts())))
    encoder = Encoder.from_pretrained(str(model_dir), plan=PLAN, device="cpu", recipe=recipe)
    out = tmp_path / "corpus"
    embed_corpus(encoder, CorpusSource.open(source), out, store_text=store_text, show_progress_bar=False)
    return out


def rrf(rankings: list[list[int]], k: int = 60) -> dict[int, float]:
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, position in enumerate(ranking, start=1):
            scores[position] = scores.get(position, 0.0) + 1 / (k + rank)
    return scores


def dense_ranking(encoder: Encoder, query: str, depth: int) -> tuple[list[int], np.ndarray]:
    vectors = encoder.encode(texts(), normalize=True)  # [N, D]
    similarities = vectors @ encoder.encode([query], normalize=True)[0]  # [N]
    return list(np.argsort(-similarities, kind="stable")[:depth]), similarities


def test_build_writes_a_bm25_index_of_the_stored_texts(tmp_path: Path, model_dir: Path) -> None:
    out = corpus(tmp_path, model_dir)
    index = build_index(out)
    assert index.lexical is not None and (index_dir(out) / "bm25" / SETTINGS_FILE).is_file()
    (hits,) = VectorIndex.load(out).search_lexical([QUERIES[0]], k=5)
    positions, scores = Bm25Index.build(texts()).search([QUERIES[0]], k=5)  # the oracle: BM25 on the texts
    assert [hit.position for hit in hits] == [int(p) for p in positions[0] if p >= 0]
    assert [hit.score for hit in hits] == pytest.approx(
        [float(s) for s, p in zip(scores[0], positions[0], strict=True) if p >= 0]
    )
    assert hits[0].text == texts()[hits[0].position] and hits[0].id == f"s{hits[0].position}"
    assert build_index(out, lexical=False).lexical is None and not (index_dir(out) / "bm25").exists()


def test_hybrid_search_fuses_the_dense_and_bm25_rankings(tmp_path: Path, model_dir: Path) -> None:
    out = corpus(tmp_path, model_dir)
    build_index(out)
    encoder = Encoder.from_pretrained(str(model_dir), plan=PLAN, device="cpu")
    retriever = Retriever(encoder, VectorIndex.load(out), hybrid=HybridSearch(depth=20))
    hits = retriever.search(QUERIES[1], k=5)
    dense, _ = dense_ranking(encoder, QUERIES[1], 20)
    positions, _ = Bm25Index.build(texts()).search([QUERIES[1]], k=20)
    expected = rrf([[int(p) for p in dense], [int(p) for p in positions[0] if p >= 0]])
    best = sorted(expected, key=lambda p: (expected[p], str(p)), reverse=True)[:5]
    assert [hit.position for hit in hits] == best
    assert [hit.score for hit in hits] == pytest.approx([expected[p] for p in best], rel=1e-6)

    weighted = Retriever(encoder, VectorIndex.load(out), hybrid=HybridSearch("weighted", weight=1.0, depth=20))
    only_dense, similarities = dense_ranking(encoder, QUERIES[1], 5)
    assert [hit.position for hit in weighted.search(QUERIES[1], k=5)] == [int(p) for p in only_dense]
    top = similarities[only_dense[0]]
    low = np.sort(similarities)[::-1][19]  # the 20th best: the minimum of the dense ranking fused
    assert weighted.search(QUERIES[1], k=1)[0].score == pytest.approx((top - low) / (top - low), abs=1e-6)


def test_cli_lexical_and_hybrid_search(tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = corpus(tmp_path, model_dir)
    assert main(["index", "build", str(out)]) == 0
    assert "texts with BM25" in capsys.readouterr().err
    assert main(["search", str(out), QUERIES[2], "--lexical", "--json", "-k", "3"]) == 0
    lexical = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    positions, _ = Bm25Index.build(texts()).search([QUERIES[2]], k=3)
    assert [hit["position"] for hit in lexical] == [int(p) for p in positions[0] if p >= 0]
    assert main(["search", str(out), QUERIES[2], "--hybrid", "--json", "-k", "4", "--device", "cpu"]) == 0
    fused = [json.loads(line)["position"] for line in capsys.readouterr().out.splitlines()]
    encoder = Encoder.from_pretrained(str(model_dir), plan=PLAN, device="cpu")
    expected = Retriever(encoder, VectorIndex.load(out), hybrid=HybridSearch()).search(QUERIES[2], k=4)
    assert fused == [hit.position for hit in expected]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--weight", "0.3"], "--weight applies with --hybrid"),
        (["--hybrid", "--weight", "0.3"], "--weight applies to --fusion weighted"),
        (["--hybrid", "--fusion", "weighted", "--weight", "3"], r"dense weight must be in \[0, 1\]"),
        (["--lexical", "--instruction", "find"], "--instruction does not apply to --lexical"),
    ],
)
def test_cli_search_mistakes(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = corpus(tmp_path, model_dir)
    build_index(out)
    capsys.readouterr()
    assert main(["search", str(out), "a query", *extra]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and re.search(message, error), error


def test_a_corpus_without_texts_has_no_bm25_index_and_says_how_to_get_one(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = corpus(tmp_path, model_dir, store_text=False)
    assert main(["index", "build", str(out)]) == 0
    assert "no BM25 index: the corpus stores no texts" in capsys.readouterr().err
    with pytest.raises(NosinkError, match="holds no texts"):
        build_index(out, lexical=True)
    assert main(["search", str(out), "a query", "--hybrid"]) == 2
    assert "embed the corpus again with --store-text" in capsys.readouterr().err


def test_a_bm25_index_of_another_corpus_state_is_refused(tmp_path: Path, model_dir: Path) -> None:
    out = corpus(tmp_path, model_dir)
    build_index(out)
    settings = index_dir(out) / "bm25" / SETTINGS_FILE
    record = json.loads(settings.read_text())
    record["meta"]["corpus_fingerprint"] = "0" * 64
    settings.write_text(json.dumps(record))
    with pytest.raises(NosinkError, match="another state of the corpus; rebuild it"):
        VectorIndex.load(out)


def test_search_embeds_queries_with_the_corpus_recipe_and_refuses_another(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = corpus(tmp_path, model_dir, recipe="layer=-2")
    build_index(out)
    assert main(["search", str(out), QUERIES[0], "--json", "-k", "3", "--device", "cpu"]) == 0
    found = [json.loads(line)["position"] for line in capsys.readouterr().out.splitlines()]
    encoder = Encoder.from_pretrained(str(model_dir), plan=PLAN, device="cpu", recipe="layer=-2")
    expected, _ = dense_ranking(encoder, QUERIES[0], 3)
    assert found == [int(p) for p in expected]
    without = Encoder.from_pretrained(str(model_dir), plan=PLAN, device="cpu")
    with pytest.raises(NosinkError, match="recipe default vs the corpus's layer=-2"):
        Retriever(without, VectorIndex.load(out))


def test_rag_retrieves_with_hybrid_search(tmp_path: Path) -> None:
    from nosink.index.rag import RAG

    tokenizer = tiny_tokenizer()
    model = tiny_model("llama", causal_lm=True)
    source = tmp_path / "c.jsonl"
    source.write_text("".join(json.dumps({"id": f"s{i}", "text": t}) + "\n" for i, t in enumerate(texts())))
    embed_corpus(
        Encoder.from_model(model, tokenizer, plan=PLAN),
        CorpusSource.open(source),
        tmp_path / "corpus",
        store_text=True,
        show_progress_bar=False,
    )
    build_index(tmp_path / "corpus")
    hybrid = HybridSearch("weighted", weight=0.3, depth=30)
    rag = RAG.from_corpus(model, tokenizer, tmp_path / "corpus", hybrid=hybrid, check_model=False)
    expected = Retriever(Encoder.from_model(model, tokenizer, plan=PLAN), rag.index, hybrid=hybrid).search(
        QUERIES[0], k=3
    )
    assert [hit.position for hit in rag.retrieve(QUERIES[0], k=3)] == [hit.position for hit in expected]
    dense = Retriever(Encoder.from_model(model, tokenizer, plan=PLAN), rag.index).search(QUERIES[0], k=3)
    assert [hit.score for hit in rag.retrieve(QUERIES[0], k=3)] != [hit.score for hit in dense]
