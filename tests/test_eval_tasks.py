"""Sentence-level evaluators end to end on small real subsets: STS (SICK), classification, domain + SMOTE."""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from conftest import stories_model, stories_tokenizer, tiny_model, tiny_tokenizer

from nosink import Encoder, NosinkError
from nosink.eval.base import Embedder, TaskResult
from nosink.eval.classification import (
    classification_scores,
    evaluate_classification,
    evaluate_domain,
    mteb_undersample,
)
from nosink.eval.data import LabeledTexts, load_labeled, load_pairs
from nosink.eval.sts import evaluate_sts

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if not DATA.exists():
    pytest.skip("../shared/data is not available", allow_module_level=True)

PLAN = "mask0-bidir:k=2"
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread is faster


@pytest.fixture(scope="module")
def stories() -> Encoder:
    return Encoder.from_model(stories_model(), stories_tokenizer(), plan=PLAN)


@pytest.fixture(scope="module")
def tiny() -> Encoder:
    return Encoder.from_model(tiny_model("llama"), tiny_tokenizer(), plan=PLAN)


class RandomEmbedder:
    """A fixed random vector per text (from a hash of the text): no meaning at all."""

    def encode(
        self,
        texts: Sequence[str],
        *,
        instruction: str | None = None,
        batch_size: int | None = None,
        normalize: bool = False,
        show_progress_bar: bool | None = None,
    ) -> np.ndarray:
        seeds = [int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) for text in texts]
        return np.stack([np.random.default_rng(seed).normal(size=64) for seed in seeds]).astype(np.float32)


class CountingEmbedder:
    """Wraps an embedder and records every text it was asked to embed."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.texts: list[str] = []

    def encode(self, texts: Sequence[str], **kwargs: object) -> np.ndarray:
        self.texts.extend(texts)
        return self.inner.encode(texts, **kwargs)


def check_result(result: TaskResult, task: str, keys: set[str]) -> None:
    assert result.task == task
    assert keys <= set(result.metrics)
    assert all(np.isfinite(value) for value in result.metrics.values())
    assert {"embed_s"} <= set(result.timings) and all(t >= 0 for t in result.timings.values())
    assert result.sizes["dim"] > 0


# -------------------------------------------------------------------- STS


@pytest.fixture(scope="module")
def sick() -> object:
    return load_pairs(DATA / "sick" / "SICK_test_annotated.txt", limit=200)


def test_sts_on_sick_beats_random_embeddings(stories: Encoder, sick) -> None:
    result = evaluate_sts(stories, sick)
    check_result(result, "sts", {"spearman", "pearson"})
    assert result.sizes["pairs"] == 200
    assert -100.0 <= result.metrics["spearman"] <= 100.0
    random = evaluate_sts(RandomEmbedder(), sick)
    assert abs(random.metrics["spearman"]) < 20.0
    # stories260k under mask0-bidir:k=2 scores about 61 on these 200 pairs; random vectors about 0.
    assert result.metrics["spearman"] > random.metrics["spearman"] + 30.0
    again = evaluate_sts(stories, sick)
    assert again.metrics == pytest.approx(result.metrics, abs=1e-4)


def test_sts_embeds_each_distinct_sentence_once(stories: Encoder, sick) -> None:
    counting = CountingEmbedder(stories)
    result = evaluate_sts(counting, sick, instruction="Retrieve semantically similar text.", task="SICK-R")
    assert result.task == "SICK-R"
    assert sorted(counting.texts) == sorted(set(sick.texts_a) | set(sick.texts_b))
    assert result.sizes["unique_texts"] == len(counting.texts)


def test_sts_tiny_random_llama(tiny: Encoder, sick) -> None:
    result = evaluate_sts(tiny, load_pairs(DATA / "sick" / "SICK_trial.txt", limit=40), batch_size=8)
    check_result(result, "sts", {"spearman", "pearson"})
    assert result.sizes["dim"] == 32


# -------------------------------------------------------------------- classification


def by_label(data: LabeledTexts, counts: dict[str, int]) -> LabeledTexts:
    """The first ``counts[label]`` examples of each label in ``counts``, in file order."""
    taken: Counter[str] = Counter()
    chosen = []
    for index, label in enumerate(data.labels):
        if taken[label] < counts.get(label, 0):
            chosen.append(index)
            taken[label] += 1
    return data.select(chosen)


@pytest.fixture(scope="module")
def banking() -> tuple[LabeledTexts, LabeledTexts]:
    intents = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed", "pin_blocked"]
    train = by_label(load_labeled(DATA / "banking77" / "train.csv"), dict.fromkeys(intents, 40))
    test = by_label(load_labeled(DATA / "banking77" / "test.csv"), dict.fromkeys(intents, 20))
    return train, test


def test_classification_banking77(stories: Encoder, banking) -> None:
    train, test = banking
    counting = CountingEmbedder(stories)
    result = evaluate_classification(counting, train, test, n_experiments=3, task="Banking77Classification")
    check_result(result, "Banking77Classification", {"accuracy", "f1_micro", "f1_macro", "f1_weighted"})
    assert {"fit_s"} <= set(result.timings)
    assert result.metrics["experiments"] == 3 and result.metrics["train_per_experiment"] == 5 * 8
    assert 0.0 <= result.metrics["f1_macro"] <= 1.0 and 0.0 <= result.metrics["accuracy"] <= 1.0
    # Only the union of the undersampled training texts is embedded, as in MTEB.
    union = set().union(*mteb_undersample(train.labels, n_experiments=3, samples_per_label=8, seed=42))
    assert result.sizes["train_embedded"] == len(union) < len(train)
    assert len(counting.texts) == len(union) + len(test)
    again = evaluate_classification(stories, train, test, n_experiments=3)
    assert again.metrics == pytest.approx(result.metrics, abs=1e-6)


def test_classification_emotion_and_tiny_model(stories: Encoder, tiny: Encoder) -> None:
    train = load_labeled(DATA / "emotion" / "train.txt", limit=300)
    test = load_labeled(DATA / "emotion" / "test.txt", limit=100)
    for embedder in (stories, tiny):
        result = evaluate_classification(embedder, train, test, n_experiments=2, samples_per_label=16, batch_size=16)
        check_result(result, "classification", {"accuracy", "f1_macro"})
        assert result.sizes["classes"] == 6 and result.sizes["test"] == 100
    full = evaluate_classification(stories, train, test, samples_per_label=None)
    assert full.metrics["experiments"] == 1 and full.sizes["train_embedded"] == 300


def test_classification_scores_on_separable_features() -> None:
    rng = np.random.default_rng(0)
    labels = [label for label in "abc" for _ in range(30)]
    centers = {label: rng.normal(scale=5.0, size=8) for label in "abc"}
    x = np.stack([centers[label] + rng.normal(size=8) for label in labels])
    scores = classification_scores(x[::2], labels[::2], x[1::2], labels[1::2], n_experiments=4)
    assert scores["accuracy"] == 1.0 and scores["f1_macro"] == 1.0 and scores["accuracy_std"] == 0.0
    # Counts are ints, so that a record says "experiments": 4, not 4.0 (issue 13, item 16).
    assert type(scores["experiments"]) is int and type(scores["train_per_experiment"]) is int
    assert '"experiments": 4' in json.dumps(scores) and '"train_per_experiment": 24' in json.dumps(scores)
    with pytest.raises(NosinkError, match="one row per label"):
        classification_scores(x, labels[:-1], x, labels)


def test_undersampling_matches_mteb() -> None:
    """Same training indices, in the same order, as mteb's own _undersample_data; same classifier settings."""
    classification = pytest.importorskip("mteb.abstasks.classification")
    task_class = classification.AbsTaskClassification
    datasets = pytest.importorskip("datasets")
    labels = [f"l{(i * 7) % 5}" for i in range(97)]

    class Task:
        seed = 42
        samples_per_label = 3
        label_column_name = "label"

    expected, order = [], None
    for experiment in range(4):
        _, order, chosen = task_class._undersample_data(
            Task(), datasets.Dataset.from_dict({"label": labels}), experiment, order
        )
        expected.append(list(chosen))
    assert mteb_undersample(labels, n_experiments=4, samples_per_label=3, seed=42) == expected
    assert task_class.samples_per_label == 8 and task_class.n_experiments == 10
    params = task_class.evaluator_model.get_params()
    assert (params["max_iter"], params["solver"], params["C"]) == (100, "lbfgs", 1.0)


# -------------------------------------------------------------------- domain classification


def test_domain_with_smote_on_an_imbalanced_subset(stories: Encoder) -> None:
    keep = {"joy": 60, "sadness": 30, "anger": 15, "surprise": 5}
    imbalanced = by_label(load_labeled(DATA / "emotion" / "train.txt"), keep)
    assert Counter(imbalanced.labels) == Counter(keep)
    result = evaluate_domain(stories, imbalanced)
    check_result(result, "domain", {"accuracy", "f1_micro", "f1_macro", "f1_weighted"})
    # Stratified 80/20 of 110: test = ceil(22) = 22, train 88 = joy 48, sadness 24, anger 12, surprise 4.
    before = {label: result.sizes[f"train_before/{label}"] for label in keep}
    assert before == {"joy": 48, "sadness": 24, "anger": 12, "surprise": 4}
    assert {result.sizes[f"train_after/{label}"] for label in keep} == {48}
    assert result.sizes["train_after_smote"] == 4 * 48 and result.sizes["test"] == 22
    assert result.sizes["k_neighbors"] == 3
    assert evaluate_domain(stories, imbalanced).metrics == result.metrics  # same seed, same numbers
    plain = evaluate_domain(stories, imbalanced, smote=False)
    assert plain.sizes["train_after_smote"] == 88


def test_evaluators_reject_bad_embeddings(sick) -> None:
    class Broken:
        def encode(self, texts: Sequence[str], **kwargs: object) -> np.ndarray:
            return np.full((len(texts), 4), np.nan, dtype=np.float32)

    with pytest.raises(NosinkError, match="NaN"):
        evaluate_sts(Broken(), sick)


def test_missing_extras_give_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "imblearn.over_sampling", None)
    monkeypatch.delitem(sys.modules, "nosink.eval.classification")
    with pytest.raises(NosinkError, match=r'imblearn.over_sampling is missing.*pip install "nosink\[eval\]"'):
        importlib.import_module("nosink.eval.classification")
