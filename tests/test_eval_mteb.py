"""The MTEB 2.x adapter: protocol, instructions per task and side, PAPER15, offline behaviour, one offline run."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import CORPUS, tiny_model, tiny_tokenizer

mteb = pytest.importorskip("mteb")
datasets = pytest.importorskip("datasets")

from mteb.abstasks import AbsTaskSTS  # noqa: E402
from mteb.abstasks.task_metadata import TaskMetadata  # noqa: E402
from mteb.mocks import MockRetrievalTask  # noqa: E402
from mteb.models.model_meta import ModelMeta  # noqa: E402
from mteb.models.models_protocols import EncoderProtocol  # noqa: E402
from mteb.types import PromptType  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from nosink import Encoder, NosinkError  # noqa: E402
from nosink.eval.mteb_adapter import (  # noqa: E402
    PAPER_INSTRUCTIONS,
    STS_INSTRUCTION,
    NosinkMTEBModel,
    instruction_for,
    meta_name,
)
from nosink.eval.mteb_run import PAPER15, resolve_tasks, run_mteb  # noqa: E402
from nosink.hub import hub_unreachable_reason  # noqa: E402

TEXTS = ["the cat sat on the mat", "a little girl named lily loved to play", "once upon a time", "the bank"]
RETRIEVAL_LIKE = {"ArguAna", "NFCorpus", "SciFact", "SciDocsRR", "StackOverflowDupQuestions"}


class RecordingEmbedder:
    """Returns the tiny encoder's embeddings and records every call's instruction and texts."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.calls: list[tuple[str | None, list[str]]] = []

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def encode(self, texts, *, instruction=None, batch_size=None, normalize=False, show_progress_bar=None):
        self.calls.append((instruction, list(texts)))
        return self.encoder.encode(texts, instruction=instruction, batch_size=batch_size, normalize=normalize)


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder.from_model(tiny_model("llama"), tiny_tokenizer(), plan="mask0&bidir:k=3,k0=1")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every attempt to open a connection or resolve a host is recorded and refused."""
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args[:2])
        raise OSError("network access is blocked in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def loader(texts: list[str], batch_size: int = 3) -> DataLoader:
    """What MTEB hands to ``encode``: a DataLoader of BatchedInput dicts with a "text" list."""
    return DataLoader(datasets.Dataset.from_dict({"text": texts}), batch_size=batch_size)


def encode(model: NosinkMTEBModel, task: str, prompt_type: PromptType | None, texts: list[str] = TEXTS) -> np.ndarray:
    metadata = mteb.get_task(task).metadata
    return model.encode(
        loader(texts), task_metadata=metadata, hf_split="test", hf_subset="default", prompt_type=prompt_type
    )


# ---------------------------------------------------------------- protocol and metadata


def test_model_satisfies_mteb_encoder_protocol(encoder: Encoder) -> None:
    model = NosinkMTEBModel(encoder)
    assert isinstance(model, EncoderProtocol)  # what mteb's evaluators check
    meta = model.mteb_model_meta
    assert isinstance(meta, ModelMeta)
    assert "/" in meta.name and meta.embed_dim == encoder.dim and meta.modalities == ["text"]
    assert meta.similarity_fn_name.value == "cosine" and meta.use_instructions is True
    assert meta.experiment_kwargs["plan"] == "mask0&bidir:k=3,k0=1"
    assert meta.experiment_kwargs["instructions"] == "paper"
    assert NosinkMTEBModel(encoder, instructions={}).mteb_model_meta.experiment_kwargs["instructions"] == "none"
    assert NosinkMTEBModel(encoder.with_plan("baseline")).mteb_model_meta != meta  # cached apart


def test_meta_name() -> None:
    assert meta_name("TinyLlama/TinyLlama_v1.1") == "TinyLlama/TinyLlama_v1.1"
    assert meta_name("/work/shared/models/stories260k") == "local/stories260k"
    assert meta_name("llama") == "local/llama"


def test_cosine_similarity(encoder: Encoder) -> None:
    model = NosinkMTEBModel(encoder)
    a, b = np.random.default_rng(0).normal(size=(2, 5, 8)).astype(np.float32)
    unit_a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    unit_b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    np.testing.assert_allclose(model.similarity(a, b).numpy(), unit_a @ unit_b.T, atol=1e-6)
    np.testing.assert_allclose(model.similarity_pairwise(a, b).numpy(), (unit_a * unit_b).sum(-1), atol=1e-6)


# ---------------------------------------------------------------- instructions


def test_scifact_queries_get_the_instruction_and_documents_none(encoder: Encoder, no_network: list) -> None:
    model = NosinkMTEBModel(encoder)
    queries = encode(model, "SciFact", PromptType.query)
    documents = encode(model, "SciFact", PromptType.document)
    instruction = "Given a scientific claim, retrieve documents that support or refute the claim."
    np.testing.assert_allclose(queries, encoder.encode(TEXTS, instruction=instruction), atol=1e-6, rtol=0)
    np.testing.assert_allclose(documents, encoder.encode(TEXTS), atol=1e-6, rtol=0)
    assert not np.allclose(queries, documents, atol=1e-3)  # the instruction changes the embedding
    assert no_network == []  # packaged task metadata only


def test_sts_benchmark_gets_the_sts_instruction_on_every_input(encoder: Encoder) -> None:
    model = NosinkMTEBModel(encoder)
    expected = encoder.encode(TEXTS, instruction="Retrieve semantically similar text.")
    np.testing.assert_allclose(encode(model, "STSBenchmark", None), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("task", PAPER15)
def test_paper15_instruction_per_side(encoder: Encoder, task: str) -> None:
    recorder = RecordingEmbedder(encoder)
    model = NosinkMTEBModel(recorder)
    for prompt_type in (None, PromptType.query, PromptType.document):
        encode(model, task, prompt_type, texts=TEXTS[:2])
    instruction = PAPER_INSTRUCTIONS[task]
    documents = None if task in RETRIEVAL_LIKE else instruction
    assert [call[0] for call in recorder.calls] == [instruction, instruction, documents]
    assert all(call[1] == TEXTS[:2] for call in recorder.calls)


def test_instruction_lookup_by_version_type_and_custom_table() -> None:
    sts_v2 = mteb.get_task("STSBenchmark.v2").metadata
    sts12 = mteb.get_task("STS12").metadata
    banking_v2 = mteb.get_task("Banking77Classification.v2").metadata
    other = mteb.get_task("ToxicConversationsClassification").metadata
    assert instruction_for(sts_v2, None) == STS_INSTRUCTION
    assert instruction_for(sts12, None) == STS_INSTRUCTION  # "all STS tasks"
    assert instruction_for(banking_v2, None) == PAPER_INSTRUCTIONS["Banking77Classification"]
    assert instruction_for(other, None) is None
    assert instruction_for(sts12, None, {}) is None
    assert instruction_for(other, PromptType.query, {"Classification": "Classify."}) == "Classify."


def test_paper_instructions_are_the_spec_table() -> None:
    assert list(PAPER_INSTRUCTIONS) == PAPER15
    assert PAPER_INSTRUCTIONS["EmotionClassification"] == (
        "Classify the emotion expressed in the given Twitter message into one of the six emotions: "
        "anger, fear, joy, love, sadness, and surprise."
    )
    assert PAPER_INSTRUCTIONS["TwentyNewsgroupsClustering"] == "Identify the topic or theme of the given news articles."
    assert PAPER_INSTRUCTIONS["ArguAna"] == "Given a claim, find documents that refute the claim."
    assert {PAPER_INSTRUCTIONS[name] for name in ("STS17", "SICK-R", "STSBenchmark")} == {STS_INSTRUCTION}


def test_empty_texts_get_zero_vectors(encoder: Encoder) -> None:
    model = NosinkMTEBModel(encoder)
    vectors = encode(model, "STSBenchmark", None, texts=["the cat", "", "  ", "the dog"])
    assert vectors.shape == (4, encoder.dim)
    assert not vectors[1].any() and not vectors[2].any()
    np.testing.assert_allclose(vectors[[0, 3]], encoder.encode(["the cat", "the dog"], instruction=STS_INSTRUCTION))


# ---------------------------------------------------------------- tasks and the hub


def test_paper15_resolves_to_15_english_test_tasks(no_network: list) -> None:
    assert len(PAPER15) == 15 and len(set(PAPER15)) == 15
    assert [task.metadata.name for task in mteb.get_tasks(tasks=PAPER15)] == PAPER15
    tasks = resolve_tasks("paper15")
    assert [task.metadata.name for task in tasks] == PAPER15
    subsets = {task.metadata.name: task.hf_subsets for task in tasks}
    assert subsets["STS17"] == ["en-en"] and subsets["MassiveIntentClassification"] == ["en"]
    assert all(task.eval_splits == ["test"] for task in tasks)
    assert no_network == []


def test_unknown_task_name() -> None:
    with pytest.raises(NosinkError, match="Did you mean"):
        resolve_tasks(["SciFactt"])


def test_run_mteb_fails_at_once_when_the_hub_is_offline(encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(NosinkError, match=r"MTEB needs the Hugging Face hub .* unreachable from here \(HF_HUB_OFFLINE"):
        run_mteb(encoder, tasks="paper15")
    assert time.monotonic() - start < 5


class FakeSession:
    """Stands in for huggingface_hub's HTTP session: a dead network, or a hub that answers ``status``."""

    def __init__(self, status: int | None) -> None:
        self.status = status

    def head(self, url: str, **kwargs: Any) -> Any:
        if self.status is None:
            raise ConnectionError(f"cannot reach {url}")
        return type("Response", (), {"status_code": self.status})()


@pytest.mark.parametrize(("status", "reachable"), [(None, False), (503, False), (200, True), (404, True)])
def test_hub_check_without_offline_flags(monkeypatch: pytest.MonkeyPatch, status: int | None, reachable: bool) -> None:
    for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(flag, raising=False)
    monkeypatch.setattr("huggingface_hub.is_offline_mode", lambda: False)
    monkeypatch.setattr("huggingface_hub.utils.get_session", lambda: FakeSession(status))
    reason = hub_unreachable_reason(timeout=1)
    assert (reason is None) == reachable
    if status is None:
        assert "cannot reach" in reason


def test_run_mteb_fails_at_once_when_the_hub_does_not_answer(encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(flag, raising=False)
    monkeypatch.setattr("huggingface_hub.is_offline_mode", lambda: False)
    monkeypatch.setattr("huggingface_hub.utils.get_session", lambda: FakeSession(None))
    start = time.monotonic()
    with pytest.raises(
        NosinkError, match=r"unreachable from here .*cannot reach.* Run this where the hub is reachable"
    ):
        run_mteb(encoder, tasks=["SciFact"])
    assert time.monotonic() - start < 5


# ---------------------------------------------------------------- one real, offline mteb.evaluate


def sts_pairs() -> tuple[list[str], list[str], list[float]]:
    """20 sentence pairs from the test corpus with graded overlap as the gold score."""
    words = " ".join(CORPUS).split()
    first, second, gold = [], [], []
    for i in range(20):
        a = words[i : i + 6]
        b = words[i + 1 + i % 5 : i + 7 + i % 5]  # never identical: no near-ties at cosine 1
        first.append(" ".join(a))
        second.append(" ".join(b))
        gold.append(float(len(set(a) & set(b))))
    return first, second, gold


class TinySTS(AbsTaskSTS):
    """A custom STS task whose data comes from memory: nothing to download."""

    metadata = TaskMetadata(
        name="NosinkTinySTS",
        description="20 in-memory sentence pairs for an offline end-to-end run.",
        reference="https://github.com/embeddings-benchmark/mteb",
        dataset={"path": "NA", "revision": "NA"},
        type="STS",
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        main_score="cosine_spearman",
        date=("2025-01-01", "2025-01-01"),
        domains=[],
        task_subtypes=[],
        license="cc-by-4.0",
        annotations_creators="derived",
        dialect=["Written"],
        sample_creation="found",
        bibtex_citation="",
    )
    min_score = 0
    max_score = 6

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        first, second, gold = sts_pairs()
        split = datasets.Dataset.from_dict({"sentence1": first, "sentence2": second, "score": gold})
        self.dataset = datasets.DatasetDict({"test": split})
        self.data_loaded = True


def test_mteb_evaluate_end_to_end_offline(encoder: Encoder, no_network: list, tmp_path: Path) -> None:
    recorder = RecordingEmbedder(encoder)
    model = NosinkMTEBModel(recorder, instructions={"STS": STS_INSTRUCTION, "MockRetrievalTask": "Find it."})
    records = run_mteb(
        model,
        tasks=[TinySTS(), MockRetrievalTask()],
        require_hub=False,
        output_folder=tmp_path,
        show_progress_bar=False,
    )
    assert [record["task"] for record in records] == ["NosinkTinySTS", "MockRetrievalTask"]
    first, second, gold = sts_pairs()
    a = encoder.encode(first, instruction=STS_INSTRUCTION, normalize=True)
    b = encoder.encode(second, instruction=STS_INSTRUCTION, normalize=True)
    expected = spearmanr(gold, (a * b).sum(-1))[0]
    assert records[0]["metric"] == "cosine_spearman"
    assert records[0]["main_score"] == pytest.approx(expected, abs=1e-6)
    assert records[0]["scores"] == {"test": {"default": pytest.approx(expected, abs=1e-6)}}
    assert 0 <= records[1]["main_score"] <= 1
    sts_calls = [call for call in recorder.calls if call[1] in (first, second)]
    assert sorted(call[0] for call in sts_calls) == [STS_INSTRUCTION, STS_INSTRUCTION]
    retrieval = [call[0] for call in recorder.calls if call not in sts_calls]
    assert "Find it." in retrieval and None in retrieval  # queries with, documents without
    assert list(tmp_path.glob("results/**/NosinkTinySTS.json"))  # MTEB's result cache was written
    assert no_network == []
