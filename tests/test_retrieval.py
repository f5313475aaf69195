"""Retrieval on BEIR folders: the loader, the metrics (hand-computed), equality with mteb's own retrieval
evaluation, the document cache (reuse, resume after kill -9), shared-prefix plans, hybrid fusion, the CLI.

Oracles: hand-computed nDCG/MAP/MRR/recall; mteb's full retrieval pipeline (``mteb.evaluate``) on the same files
and the same vectors; ``Encoder.encode`` on the whole corpus for cached and resumed vectors.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import CORPUS, tiny_model, tiny_tokenizer

from nosink import Encoder, NosinkError
from nosink.cli import main
from nosink.eval import retrieval as retrieval_module
from nosink.eval.beir import load_beir
from nosink.eval.retrieval import (
    DOCUMENT_SHARD_SIZE,
    HybridSpec,
    QuerySide,
    dense_run,
    document_vectors,
    evaluate_retrieval,
    paper_instruction,
    precompute_documents,
    query_side,
    retrieval_metrics,
)

pytest.importorskip("pytrec_eval")
pytest.importorskip("pyarrow")

WORDS = " ".join(CORPUS).split()
SCIFACT = "Given a scientific claim, retrieve documents that support or refute the claim."


def write_beir(
    folder: Path, docs: int = 40, queries: int = 8, *, seed: int = 0, splits: tuple[str, ...] = ("test", "train")
) -> Path:
    """A BEIR folder of random documents (titles on most) and queries made of words of their relevant documents."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    lines = []
    texts = []
    for i in range(docs):
        text = " ".join(rng.choice(WORDS, size=rng.integers(4, 16)))
        title = "" if i % 5 == 0 else " ".join(rng.choice(WORDS, size=2))
        texts.append(text)
        lines.append(json.dumps({"_id": f"d{i}", "title": title, "text": text}))
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    query_lines, qrels = [], {split: [] for split in splits}
    for q in range(queries * len(splits)):
        relevant = [int(i) for i in rng.choice(docs, size=1 + q % 2, replace=False)]
        words = " ".join(texts[relevant[0]].split()[:3])
        query_lines.append(json.dumps({"_id": f"q{q}", "text": f"{words} {rng.choice(WORDS)}", "metadata": {}}))
        qrels[splits[q % len(splits)]] += [f"q{q}\td{i}\t1" for i in relevant]
    (folder / "queries.jsonl").write_text("\n".join(query_lines) + "\n", encoding="utf-8")
    (folder / "qrels").mkdir()
    for split, rows in qrels.items():
        (folder / "qrels" / f"{split}.tsv").write_bytes(("query-id\tcorpus-id\tscore\r\n" + "\r\n".join(rows)).encode())
    return folder


@pytest.fixture(scope="module")
def encoder(one_thread: None) -> Encoder:
    return Encoder.from_model(tiny_model("llama"), tiny_tokenizer(), plan="mask0-bidir:k=2")


@pytest.fixture(scope="module")
def model_dir(tiny_llama_dir: Path) -> Path:
    return tiny_llama_dir


class BagOfWords:
    """A deterministic embedder (hashed word counts) that records the instruction or prompt of each call."""

    dim = 64
    name = "bag-of-words"

    def __init__(self) -> None:
        self.prompts: dict[str, str] = {}
        self.calls: list[tuple[str | None, str | None, int]] = []

    def encode(self, texts, *, instruction=None, prompt=None, batch_size=None, normalize=False, show_progress_bar=None):
        self.calls.append((instruction, prompt, len(texts)))
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                vectors[row, sum(map(ord, word)) % self.dim] += 1.0
                vectors[row, (7 * len(word) + ord(word[0])) % self.dim] += 0.5
        if normalize:
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors

    def corpus_identity(self) -> dict[str, Any]:
        return {"model": self.name, "max_length": None, "dimension": self.dim}

    def embed_corpus_texts(self, texts, encode, progress):
        vectors = self.encode(texts, prompt=encode.prompt, normalize=encode.normalize)
        progress(len(texts))
        return vectors, np.zeros(len(texts), dtype=bool)

    def truncated(self, texts, **kwargs):
        return np.zeros(len(texts), dtype=bool)


# -------------------------------------------------------------------- data and metrics


def test_beir_loader_joins_titles_keeps_judged_queries_and_names_its_splits(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "scifact", docs=10, queries=3)
    data = load_beir(folder, "test")
    corpus = [json.loads(line) for line in (folder / "corpus.jsonl").read_text().splitlines()]
    assert data.doc_ids == [f"d{i}" for i in range(10)]
    assert data.doc_texts[0] == corpus[0]["text"]  # no title: the text alone
    assert data.doc_texts[1] == f"{corpus[1]['title']} {corpus[1]['text']}"  # MTEB's title + " " + text
    assert data.query_ids == ["q0", "q2", "q4"]  # the test split's queries only, in qrels order (CRLF file)
    assert set(data.qrels["q2"]) and all(score == 1 for docs in data.qrels.values() for score in docs.values())
    with pytest.raises(NosinkError, match=r"has no qrels for split 'dev'.*its splits: test, train"):
        load_beir(folder, "dev")
    with (folder / "qrels" / "test.tsv").open("a") as handle:
        handle.write("\r\nq0\tnot-a-doc\t1")
    with pytest.raises(NosinkError, match="judges document 'not-a-doc'"):
        load_beir(folder, "test")
    with pytest.raises(NosinkError, match="is not a BEIR folder"):
        load_beir(folder / "qrels", "test")


def test_metrics_equal_hand_computed_values() -> None:
    qrels = {"q1": {"d1": 1, "d3": 1}, "q2": {"d5": 1}, "q3": {"x": 1}}
    run = {
        "q1": {"d2": 0.9, "d1": 0.8, "d4": 0.7, "d3": 0.6},
        "q2": {"d5": 0.3, "d1": 0.2},
        "q3": {f"n{i:02d}": 1.0 - i / 100 for i in range(10)} | {"x": 0.5},  # relevant at rank 11
    }
    metrics = retrieval_metrics(run, qrels)
    ndcg_q1 = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert metrics["ndcg_at_10"] == pytest.approx(100 * (ndcg_q1 + 1 + 0) / 3)
    assert metrics["mrr_at_10"] == pytest.approx(100 * (1 / 2 + 1 + 0) / 3)  # rank 11 is past MRR@10
    assert metrics["recall_at_10"] == pytest.approx(100 * (1 + 1 + 0) / 3)
    assert metrics["recall_at_100"] == pytest.approx(100.0)
    assert metrics["map_at_100"] == pytest.approx(100 * ((1 / 2 + 2 / 4) / 2 + 1 + 1 / 11) / 3)


def test_ties_are_broken_by_document_id_descending_as_pytrec_eval_does() -> None:
    metrics = retrieval_metrics({"q": {"a": 0.5, "b": 0.5}}, {"q": {"a": 1}})
    assert metrics["mrr_at_10"] == pytest.approx(50.0)  # "b" before "a"
    assert metrics["ndcg_at_10"] == pytest.approx(100 / math.log2(3))


def test_dense_run_keeps_each_querys_most_similar_documents() -> None:
    rng = np.random.default_rng(0)
    queries, docs = rng.normal(size=(3, 8)), rng.normal(size=(30, 8))
    run = dense_run(queries, 5 * docs, ["a", "b", "c"], [f"d{i}" for i in range(30)], depth=4)
    cosine = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ (
        docs / np.linalg.norm(docs, axis=1, keepdims=True)
    ).T
    for row, query in enumerate("abc"):
        best = np.argsort(-cosine[row])[:4]
        assert run[query] == pytest.approx({f"d{i}": float(cosine[row, i]) for i in best}, abs=1e-6)


# -------------------------------------------------------------------- mteb's own evaluation


def test_the_harness_equals_mtebs_retrieval_evaluation_on_the_same_files_and_vectors(tmp_path: Path) -> None:
    mteb = pytest.importorskip("mteb")
    datasets = pytest.importorskip("datasets")
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
    from mteb.abstasks.task_metadata import TaskMetadata

    from nosink.eval.mteb_adapter import NosinkMTEBModel

    folder = write_beir(tmp_path / "scifact", docs=120, queries=15, seed=4)
    data = load_beir(folder, "test")
    ours_model, theirs_model = BagOfWords(), BagOfWords()
    ours = evaluate_retrieval(ours_model, data, side=QuerySide(instruction=SCIFACT))

    corpus = [json.loads(line) for line in (folder / "corpus.jsonl").read_text().splitlines()]
    queries = {json.loads(line)["_id"]: json.loads(line)["text"] for line in (folder / "queries.jsonl").open()}

    class LocalSciFact(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name="SciFact",  # the adapter gives it the paper's SciFact instruction, as our harness does
            description="The test's BEIR folder, read from disk.",
            reference="https://github.com/embeddings-benchmark/mteb",
            dataset={"path": "NA", "revision": "NA"},
            type="Retrieval",
            category="t2t",
            modalities=["text"],
            eval_splits=["test"],
            eval_langs=["eng-Latn"],
            main_score="ndcg_at_10",
            date=("2025-01-01", "2025-01-01"),
            domains=[],
            task_subtypes=[],
            license="cc-by-4.0",
            annotations_creators="derived",
            dialect=["Written"],
            sample_creation="found",
            bibtex_citation="",
        )

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            split = RetrievalSplitData(
                corpus=datasets.Dataset.from_list(
                    [{"id": d["_id"], "title": d["title"], "text": d["text"]} for d in corpus]
                ),
                queries=datasets.Dataset.from_list([{"id": q, "text": queries[q]} for q in data.query_ids]),
                relevant_docs=data.qrels,
                top_ranked=None,
            )
            self.dataset = {"default": {"test": split}}
            self.data_loaded = True

    result = mteb.evaluate(NosinkMTEBModel(theirs_model), LocalSciFact(), cache=None, show_progress_bar=False)
    scores = result.task_results[0].scores["test"][0]
    for ours_name, theirs_name in [
        ("ndcg_at_10", "ndcg_at_10"),
        ("map_at_100", "map_at_100"),
        ("mrr_at_10", "mrr_at_10"),
        ("recall_at_10", "recall_at_10"),
        ("recall_at_100", "recall_at_100"),
    ]:
        assert ours.metrics[ours_name] == pytest.approx(100 * scores[theirs_name], abs=1e-3), ours_name
    assert 20 < ours.metrics["ndcg_at_10"] < 100  # a real ranking, neither empty nor perfect
    assert {(c[0], c[1]) for c in ours_model.calls} == {(SCIFACT, None), (None, "")}  # queries vs documents
    assert {c[0] for c in theirs_model.calls} == {SCIFACT, None}


# -------------------------------------------------------------------- prompts


def test_query_and_document_prompts_follow_the_model(encoder: Encoder, tmp_path: Path) -> None:
    folder = tmp_path / "SciFact"
    assert paper_instruction(folder) == SCIFACT
    assert paper_instruction(tmp_path / "my-docs").startswith("Given a query, retrieve relevant documents")
    assert query_side(encoder, folder) == QuerySide(instruction=SCIFACT)  # nosink: the paper's instruction
    assert query_side(encoder, folder, instruction="Find it.") == QuerySide(instruction="Find it.")
    assert query_side(encoder, folder, none=True) == QuerySide(prompt="")
    saved = encoder.with_plan(encoder.plan)
    saved.prompts = {"query": "q: ", "document": "d: "}
    assert query_side(saved, folder) == QuerySide(prompt="q: ")  # the model's own prompt wins
    assert retrieval_module.document_prompt(saved) == "d: " and retrieval_module.document_prompt(encoder) == ""
    assert query_side(BagOfWords(), folder) == QuerySide(prompt="")  # a baseline without prompts: none


def test_sentence_transformers_documents_get_their_document_prompt(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    from nosink.eval.baselines import SentenceTransformerEmbedder

    folder = tmp_path / "st"
    tiny_model("llama").save_pretrained(folder / "transformer")
    tiny_tokenizer().save_pretrained(folder / "transformer")
    module = Transformer(str(folder / "transformer"))
    model = SentenceTransformer(
        modules=[module, Pooling(module.get_embedding_dimension(), pooling_mode="mean")],
        prompts={"query": "q: ", "document": "the bank "},
        device="cpu",
    )
    embedder = SentenceTransformerEmbedder(model)
    data = load_beir(write_beir(tmp_path / "beir", docs=12, queries=2), "test")
    docs = document_vectors(embedder, data, prompt=retrieval_module.document_prompt(embedder), cache_dir=tmp_path / "c")
    expected = model.encode(data.doc_texts, prompt="the bank ", normalize_embeddings=True)
    np.testing.assert_allclose(docs.vectors, expected, atol=1e-5)
    assert not np.allclose(docs.vectors, model.encode(data.doc_texts, normalize_embeddings=True), atol=1e-3)
    assert query_side(embedder, data.folder) == QuerySide(prompt="q: ")


# -------------------------------------------------------------------- the document cache


def test_documents_are_embedded_once_and_reused_when_only_the_query_side_changes(
    encoder: Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = load_beir(write_beir(tmp_path / "scifact", docs=300, queries=6), "test")
    first = evaluate_retrieval(encoder, data, cache_dir=tmp_path / "cache")
    assert first.sizes["embedded_documents"] == 300
    expected = encoder.encode(data.doc_texts, normalize=True)
    cached = document_vectors(encoder, data, prompt="", cache_dir=tmp_path / "cache")
    np.testing.assert_allclose(cached.vectors, expected, atol=1e-5)
    assert cached.embedded == 0 and len(list((cached.folder / "shards").glob("*.parquet"))) == 2  # 256 + 44

    calls: list[int] = []
    real = Encoder.embed_rows
    monkeypatch.setattr(
        Encoder, "embed_rows", lambda self, rows, **kw: calls.append(len(rows)) or real(self, rows, **kw)
    )
    other = evaluate_retrieval(encoder, data, side=QuerySide(instruction="Find it."), cache_dir=tmp_path / "cache")
    assert other.sizes["embedded_documents"] == 0 and calls == [len(data.query_ids)]  # only the queries ran
    assert other.settings["cache"] == first.settings["cache"]
    moved = encoder.with_plan("baseline")  # another plan is another job: its own folder
    assert retrieval_module.cache_folder(moved, data, prompt="", cache_dir=tmp_path) != cached.folder.relative_to(
        tmp_path / "cache"
    )


def test_a_killed_run_resumes_from_its_finished_shards(model_dir: Path, tmp_path: Path) -> None:
    total = 12 * DOCUMENT_SHARD_SIZE + 40
    folder = write_beir(tmp_path / "scifact", docs=total, queries=4, seed=2)
    cache = tmp_path / "cache"
    command = [sys.executable, "-m", "nosink.cli", "eval", "retrieval", "--model", str(model_dir)]
    command += ["--plan", "mask0-bidir:k=2", "--data", str(folder), "--cache-dir", str(cache), "--device", "cpu"]
    command += ["--record", str(tmp_path / "first.json"), "--batch-size", "8"]
    environment = os.environ | {"OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment)
    deadline = time.time() + 180
    shards = lambda: sorted(cache.glob("*/shards/shard-*.parquet"))  # noqa: E731
    while len(shards()) < 1 and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed; make the corpus larger"
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(shards())
    assert 1 <= finished < 13

    record = tmp_path / "second.json"
    assert main([*command[3:-4], "--record", str(record), "--batch-size", "8"]) == 0
    sizes = json.loads(record.read_text())["sizes"]
    assert sizes["embedded_documents"] == total - finished * DOCUMENT_SHARD_SIZE
    data = load_beir(folder, "test")
    loaded = Encoder.from_pretrained(str(model_dir), plan="mask0-bidir:k=2", device="cpu")
    resumed = document_vectors(loaded, data, prompt="", cache_dir=cache)
    assert resumed.embedded == 0
    np.testing.assert_allclose(resumed.vectors, loaded.encode(data.doc_texts, normalize=True), atol=1e-5)


def test_plans_sharing_one_pass_equal_each_plan_alone(encoder: Encoder, tmp_path: Path) -> None:
    data = load_beir(write_beir(tmp_path / "beir", docs=60, queries=3), "test")
    plans = [encoder.with_plan(p) for p in ("baseline", "mask0-bidir:k=2", "inplace-bidir:k=4")]
    folders = precompute_documents(plans, data, cache_dir=tmp_path / "shared")
    assert len(set(folders)) == 3
    for plan, folder in zip(plans, folders, strict=True):
        cached = document_vectors(plan, data, prompt="", cache_dir=tmp_path / "shared")
        assert cached.folder == folder and cached.embedded == 0
        np.testing.assert_allclose(cached.vectors, plan.encode(data.doc_texts, normalize=True), atol=1e-5)


# -------------------------------------------------------------------- BM25 and hybrid


def test_bm25_alone_and_hybrid_with_the_fusion_chosen_on_train(encoder: Encoder, tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "scifact", docs=80, queries=10)
    data, train = load_beir(folder, "test"), load_beir(folder, "train")
    bm25 = evaluate_retrieval(None, data)
    assert 0 < bm25.metrics["ndcg_at_10"] <= 100 and "dense" not in bm25.metrics
    hybrid = evaluate_retrieval(encoder, data, hybrid=HybridSpec("weighted"), tune=train)
    curve = hybrid.settings["tuning"]
    assert hybrid.settings["chosen_on"] == "train" and len(curve) == 21
    best = max(curve, key=lambda point: point["ndcg_at_10"])["weight"]
    assert hybrid.settings["weight"] == best
    assert hybrid.metrics["bm25"] == pytest.approx(bm25.metrics)
    dense = evaluate_retrieval(encoder, data)
    assert hybrid.metrics["dense"] == pytest.approx(dense.metrics)
    pinned = evaluate_retrieval(encoder, data, hybrid=HybridSpec("weighted", weight=1.0))
    assert pinned.metrics["ndcg_at_10"] == pytest.approx(dense.metrics["ndcg_at_10"])  # all weight on dense
    assert pinned.settings["chosen_on"] is None


# -------------------------------------------------------------------- the CLI


def test_cli_scores_bm25_and_writes_the_usual_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_beir(tmp_path / "scifact", docs=30, queries=5)
    record = tmp_path / "bm25.json"
    assert main(["eval", "retrieval", "--model", "bm25", "--data", str(folder), "--record", str(record)]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads(record.read_text())
    assert printed.pop("task") == "retrieval" and written["metrics"] == printed
    assert written["model"]["kind"] == "bm25" and written["settings"]["split"] == "test"
    assert {Path(d["path"]).name for d in written["data"]} == {"corpus.jsonl", "queries.jsonl", "test.tsv"}
    assert written["sizes"] == {"documents": 30, "queries": 5}
    per_query = written["details"]["per_query_ndcg_at_10"]  # for paired comparisons between runs
    assert len(per_query) == 5 and 100 * np.mean(list(per_query.values())) == pytest.approx(printed["ndcg_at_10"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "bm25", "--plan", "mask0-bidir:k=2"], "--plan do not apply to --model bm25"),
        (["--model", "bm25", "--weight", "0.3"], "apply with --hybrid"),
        (["--model", "bm25", "--hybrid"], "--hybrid do not apply to --model bm25"),
        (["--model", "M", "--hybrid", "--weight", "0.3"], "--weight applies to --fusion weighted"),
        (["--model", "M", "--hybrid", "--fusion", "weighted", "--weight", "2"], r"in \[0, 1\]"),
        (["--model", "M", "--instruction", "x", "--no-instruction"], "contradict"),
        (["--model", "M", "--plan", "baseline", "--plan", "mask0-bidir:k=2", "--record", "r.json"], "own record"),
        (["--model", "M", "--hybrid", "--tune-split", "test"], "chosen on the split it scores"),
        (["--model", "M", "--split", "dev"], "has no qrels for split 'dev'"),
    ],
)
def test_cli_mistakes_are_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    folder = write_beir(tmp_path / "scifact", docs=10, queries=2)
    arguments = ["eval", "retrieval", "--data", str(folder), *extra]
    arguments = [str(tmp_path / "no-model") if a == "M" else a for a in arguments]
    assert main(arguments) == 2
    error = capsys.readouterr().err.strip()
    assert re.search(message, error), error
    assert len(error.splitlines()) == 1


def test_cli_several_plans_share_one_pass_and_write_one_record_each(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_beir(tmp_path / "scifact", docs=50, queries=4)
    monkeypatch.chdir(tmp_path)
    arguments = ["eval", "retrieval", "--model", str(model_dir), "--data", str(folder), "--device", "cpu"]
    arguments += ["--plan", "baseline", "--plan", "mask0-bidir:k=2", "--cache-dir", str(tmp_path / "cache")]
    assert main(arguments) == 0
    records = sorted((tmp_path / "results").glob("retrieval-*.json"))
    assert [json.loads(r.read_text())["model"]["plan"] for r in records] == ["baseline", "mask0-bidir:k=2"]
    assert all(json.loads(r.read_text())["sizes"]["embedded_documents"] == 0 for r in records)  # shared pass first
    assert json.loads(records[0].read_text())["settings"]["query_instruction"] == SCIFACT


# -------------------------------------------------------------------- choosing plans for retrieval


def test_the_selection_pool_holds_the_relevant_documents_then_bm25s_best(tmp_path: Path) -> None:
    from nosink.eval.retrieval_tune import selection_task
    from nosink.index.lexical import Bm25Index

    data = load_beir(write_beir(tmp_path / "scifact", docs=120, queries=25), "train")
    task = selection_task(data, queries=8, pool=30, document_tokens=16)
    assert len(task.query_ids) == 8 and len(task.doc_ids) == 30 == task.sizes["pool"]
    assert set(task.query_ids) <= set(data.query_ids) and task.instruction == SCIFACT
    relevant = {doc for query in task.query_ids for doc in data.qrels[query]}
    assert relevant <= set(task.doc_ids) and task.sizes["relevant"] == len(relevant)
    first_hits, _ = Bm25Index.build(data.doc_texts).search(task.query_texts, k=1)  # [8, 1]
    assert {data.doc_ids[p] for p in first_hits[:, 0] if p >= 0} <= set(task.doc_ids)  # rank 1 of every query first
    assert selection_task(data, queries=8, pool=30, document_tokens=16).doc_ids == task.doc_ids  # seeded
    queries, documents = task.segments()
    assert (queries.instruction, documents.instruction, documents.prompt) == (SCIFACT, None, "")
    assert documents.text_tokens == 16 and queries.text_tokens is None


def test_selection_features_are_queries_with_the_instruction_and_cut_documents(
    encoder: Encoder, tmp_path: Path
) -> None:
    from nosink.eval.retrieval_tune import selection_task
    from nosink.eval.sweep import task_features

    data = load_beir(write_beir(tmp_path / "scifact", docs=60, queries=10), "train")
    task = selection_task(data, queries=5, pool=20, document_tokens=6)
    (features,) = task_features(encoder, task, [encoder.plan])
    queries = encoder.encode(task.query_texts, instruction=SCIFACT)
    tokenizer = encoder.tokenizer
    cut = [tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:6]) for text in task.doc_texts]
    assert sum(len(text) < len(whole) for text, whole in zip(cut, task.doc_texts, strict=True)) > 5
    documents = encoder.encode(cut, prompt="")
    np.testing.assert_allclose(features, np.concatenate([queries, documents]), atol=1e-5)
    expected = retrieval_metrics(dense_run(queries, documents, task.query_ids, task.doc_ids), task.qrels)
    assert task.score(features) == pytest.approx(expected)


def test_tune_retrieval_scores_baseline_winner_and_extra_plans_on_test(model_dir: Path, tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "scifact", docs=70, queries=8)
    out, record = tmp_path / "tune", tmp_path / "tune.json"
    arguments = ["tune", "--model", str(model_dir), "--task", "retrieval", "--data", str(folder), "--device", "cpu"]
    arguments += ["--queries", "6", "--pool", "25", "--document-tokens", "12", "--family", "mask0-bidir", "--ks", "2,4"]
    arguments += ["--layers=-1,-3", "--test", "test", "--test-plan", "inplace-bidir:k=2", "--out", str(out)]
    arguments += ["--cache-dir", str(tmp_path / "cache"), "--record", str(record)]
    assert main(arguments) == 0
    winner = json.loads((out / "winner.json").read_text())
    assert set(winner["test"]) == {"baseline", "winner", "inplace-bidir:k=2"}
    rows = [line.split(",") for line in (out / "table.csv").read_text().splitlines()[1:]]
    assert {row[0] for row in rows} == {"default", "prompt=prompteol"}  # retrieval's default prompts
    assert len(rows) == 2 * 3 * 2  # prompts x (baseline + 2 plans) x layers
    loaded = Encoder.from_pretrained(str(model_dir), device="cpu")
    data = load_beir(folder, "test")
    for name, scored in winner["test"].items():
        candidate = loaded.with_plan(scored["plan"], recipe=scored["recipe"])
        alone = evaluate_retrieval(candidate, data, side=QuerySide(instruction=SCIFACT))  # in memory, no cache
        assert scored["ndcg_at_10"] == pytest.approx(alone.metrics["ndcg_at_10"], abs=1e-6), name
    assert json.loads(record.read_text())["settings"]["selection"]["pool"] == 25


def test_sweep_retrieval_scores_every_k_on_the_selection_pool(model_dir: Path, tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "scifact", docs=50, queries=8)
    out = tmp_path / "sweep"
    arguments = ["sweep", "--model", str(model_dir), "--task", "retrieval", "--data", str(folder), "--device", "cpu"]
    arguments += ["--queries", "5", "--pool", "20", "--family", "mask0-bidir", "--ks", "1,3", "--out", str(out)]
    assert main(arguments) == 0
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert [row["plan"] for row in rows] == ["baseline", "mask0-bidir:k=1", "mask0-bidir:k=3"]
    from nosink.eval.retrieval_tune import selection_task

    task = selection_task(load_beir(folder, "train"), queries=5, pool=20)
    encoder = Encoder.from_pretrained(str(model_dir), plan="mask0-bidir:k=3", device="cpu")
    queries = encoder.encode(task.query_texts, instruction=SCIFACT)
    documents = encoder.encode(task.doc_texts, prompt="")  # 12-word documents: the 128-token cut changes nothing
    expected = retrieval_metrics(dense_run(queries, documents, task.query_ids, task.doc_ids), task.qrels)
    assert rows[2]["metrics"]["ndcg_at_10"] == pytest.approx(expected["ndcg_at_10"], abs=1e-6)


def test_nosink_embed_reads_a_beir_corpus_with_its_titles(model_dir: Path, tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "scifact", docs=30, queries=2)
    out = tmp_path / "embedded"
    arguments = ["embed", str(folder / "corpus.jsonl"), "-o", str(out), "--model", str(model_dir), "--device", "cpu"]
    assert main([*arguments, "--id-field", "_id", "--title-field", "title", "--store-text"]) == 0
    from nosink.corpus.shards import iter_shards

    (shard,) = iter_shards(out)
    data = load_beir(folder, "test")
    assert shard.ids == data.doc_ids and shard.texts == data.doc_texts  # title + " " + text, as MTEB joins them
    encoder = Encoder.from_pretrained(str(model_dir), device="cpu")
    np.testing.assert_allclose(shard.embeddings, encoder.encode(data.doc_texts, normalize=True), atol=1e-5)
