"""Metrics against values computed by hand: Spearman with ties, classification F1s, entity F1, SMOTE counts."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from nosink import NosinkError
from nosink.eval.classification import domain_scores
from nosink.eval.metrics import (
    classification_metrics,
    cosine_similarities,
    entity_f1,
    pearson_x100,
    spearman_x100,
)
from nosink.eval.sts import sts_scores


def test_spearman_with_ties_by_hand() -> None:
    gold = [1.0, 2.0, 2.0, 3.0, 5.0]
    predicted = [0.1, 0.4, 0.3, 0.3, 0.9]
    # Average ranks: gold [1, 2.5, 2.5, 4, 5]; predicted [1, 4, 2.5, 2.5, 5]. Both have mean 3.
    # Deviations: gold [-2, -0.5, -0.5, 1, 2]; predicted [-2, 1, -0.5, -0.5, 2].
    # Pearson of the ranks = (4 - 0.5 + 0.25 - 0.5 + 4) / sqrt(9.5 * 9.5) = 7.25 / 9.5.
    assert spearman_x100(gold, predicted) == pytest.approx(100 * 7.25 / 9.5, abs=1e-12)
    assert spearman_x100(gold, gold) == pytest.approx(100.0)
    assert spearman_x100(gold, [-v for v in gold]) == pytest.approx(-100.0)


def test_pearson_by_hand() -> None:
    # x = [0, 1, 2], y = [0, 1, 5]: deviations [-1, 0, 1] and [-2, -1, 3]; r = 5 / sqrt(2 * 14).
    assert pearson_x100([0, 1, 2], [0, 1, 5]) == pytest.approx(100 * 5 / np.sqrt(28), abs=1e-12)


def test_correlations_reject_bad_lengths() -> None:
    with pytest.raises(NosinkError, match="one length"):
        spearman_x100([1, 2, 3], [1, 2])
    with pytest.raises(NosinkError, match=">= 2"):
        spearman_x100([1], [1])


def test_cosine_similarities_row_wise() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [3.0, 4.0]])
    b = np.array([[0.0, 1.0], [2.0, 2.0], [1.0, 0.0], [-3.0, -4.0]])
    np.testing.assert_allclose(cosine_similarities(a, b), [0.0, 1.0, 0.0, -1.0], atol=1e-12)
    with pytest.raises(NosinkError, match="same shape"):
        cosine_similarities(a, b[:2])


def test_sts_scores_is_spearman_of_cosines() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 8)), rng.normal(size=(30, 8))
    gold = rng.uniform(1, 5, size=30)
    scores = sts_scores(a, b, gold)
    cosines = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert scores["spearman"] == pytest.approx(spearman_x100(gold, cosines), abs=1e-10)
    assert scores["pearson"] == pytest.approx(pearson_x100(gold, cosines), abs=1e-10)


def test_classification_metrics_by_hand() -> None:
    y_true = ["a", "a", "a", "b", "b", "c"]
    y_pred = ["a", "a", "b", "b", "c", "c"]
    # a: tp 2, fp 0, fn 1 -> P 1, R 2/3, F1 0.8;  b: tp 1, fp 1, fn 1 -> F1 0.5;
    # c: tp 1, fp 1, fn 0 -> P 1/2, R 1, F1 2/3.  Supports 3, 2, 1.
    scores = classification_metrics(y_true, y_pred)
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["f1_micro"] == pytest.approx(4 / 6)  # single-label micro F1 = accuracy
    assert scores["f1_macro"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert scores["f1_weighted"] == pytest.approx((0.8 * 3 + 0.5 * 2 + 2 / 3 * 1) / 6)
    with pytest.raises(NosinkError):
        classification_metrics(["a"], [])


def test_entity_f1_conlleval_edge_cases_by_hand() -> None:
    true = [
        ["B-PER", "I-PER", "O", "B-LOC"],
        ["O", "B-ORG", "I-ORG", "O"],
        ["I-MISC", "O"],  # I- after O (sentence start): conlleval / seqeval default mode open an entity
    ]
    pred = [
        ["B-PER", "I-PER", "O", "I-LOC"],  # I-LOC after O opens LOC(3, 3): it matches the true LOC
        ["O", "B-ORG", "I-PER", "O"],  # I-PER after B-ORG: ORG(1, 1) and PER(2, 2); neither is ORG(1, 2)
        ["B-MISC", "O"],
    ]
    # True entities: PER(0-1), LOC(3), ORG(1-2), MISC(0) = 4. Predicted: PER(0-1), LOC(3), ORG(1),
    # PER(2), MISC(0) = 5. Correct: PER, LOC, MISC = 3.  P = 3/5, R = 3/4, F1 = 2PR/(P+R) = 2/3.
    scores = entity_f1(true, pred)
    assert (scores["true_entities"], scores["pred_entities"], scores["correct_entities"]) == (4, 5, 3)
    assert scores["precision"] == pytest.approx(3 / 5)
    assert scores["recall"] == pytest.approx(3 / 4)
    assert scores["f1"] == pytest.approx(2 / 3)


def test_entity_f1_without_entities_is_zero_and_checks_lengths() -> None:
    assert entity_f1([["O", "O"]], [["O", "O"]])["f1"] == 0.0
    with pytest.raises(NosinkError, match="sequence 0"):
        entity_f1([["O", "O"]], [["O"]])


def toy_features(labels: list[str], *, dim: int = 4, seed: int = 0) -> np.ndarray:
    """Class-dependent Gaussian features [N, dim]."""
    rng = np.random.default_rng(seed)
    centers = {label: rng.normal(scale=3.0, size=dim) for label in sorted(set(labels))}
    return np.stack([centers[label] + rng.normal(size=dim) for label in labels])


def test_smote_grows_every_training_class_to_the_majority() -> None:
    labels = ["a"] * 40 + ["b"] * 20 + ["c"] * 10 + ["d"] * 5
    scores = domain_scores(toy_features(labels), labels, test_size=0.2, seed=42)
    # 75 examples, test = ceil(0.2 * 75) = 15, train = 60 = 32 + 16 + 8 + 4 (each class × 60/75, exact).
    assert scores["train_counts_before"] == {"a": 32, "b": 16, "c": 8, "d": 4}
    assert scores["test_counts"] == {"a": 8, "b": 4, "c": 2, "d": 1}
    assert scores["train_counts_after"] == {"a": 32, "b": 32, "c": 32, "d": 32}
    assert scores["k_neighbors"] == 3  # min(5, smallest grown class 4 - 1)
    assert scores["smote_skipped"] == []
    for key in ("accuracy", "f1_micro", "f1_macro", "f1_weighted"):
        assert 0.0 <= scores[key] <= 1.0
    assert scores["accuracy"] > 0.8  # well-separated toy clusters
    assert domain_scores(toy_features(labels), labels) == scores  # same seed, same numbers


def test_smote_options() -> None:
    labels = ["a"] * 40 + ["b"] * 20 + ["c"] * 10 + ["d"] * 5
    grown = domain_scores(toy_features(labels), labels, smote_min_count=12)
    assert grown["train_counts_after"] == {"a": 32, "b": 16, "c": 12, "d": 12}
    plain = domain_scores(toy_features(labels), labels, smote=False)
    assert plain["train_counts_after"] == plain["train_counts_before"]


def test_smote_skips_a_class_with_one_training_example() -> None:
    labels = ["a"] * 10 + ["b"] * 10 + ["c"] * 2
    # 22 examples: test = ceil(4.4) = 5, train 17 = a 8, b 8, c 1 (floors 7, 7, 1; the two largest
    # remainders, a and b, get the 2 left over).
    with pytest.warns(UserWarning, match="left as they are: c"):
        scores = domain_scores(toy_features(labels), labels)
    assert scores["train_counts_before"] == {"a": 8, "b": 8, "c": 1}
    assert scores["train_counts_after"] == {"a": 8, "b": 8, "c": 1}
    assert scores["smote_skipped"] == ["c"]


def test_domain_rejects_a_class_that_cannot_be_stratified() -> None:
    labels = ["a"] * 10 + ["b"] * 10 + ["c"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(NosinkError, match=r"at least 2 examples per class.*'c'"):
            domain_scores(toy_features(labels), labels)
