"""Metrics of the paper's protocols, as thin wrappers of the reference implementations.

- STS: Spearman (and Pearson) correlation ×100 between gold scores and cosine similarities
  (``scipy.stats``), exactly MTEB's ``cosine_spearman`` main score.
- Classification: accuracy and F1 micro / macro / weighted (``sklearn.metrics``).
- NER: entity-level precision / recall / F1, micro-averaged (``seqeval`` in its default mode,
  which follows conlleval: an ``I-`` tag after ``O`` or after a tag of another type starts a new
  entity).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nosink.errors import NosinkError

try:
    from scipy.stats import pearsonr, spearmanr
    from seqeval.metrics import f1_score as _entity_f1_score
    from seqeval.metrics import precision_score as _entity_precision
    from seqeval.metrics import recall_score as _entity_recall
    from seqeval.metrics.sequence_labeling import get_entities
    from sklearn.metrics import accuracy_score, f1_score
except ImportError as error:  # pragma: no cover - depends on the environment
    raise NosinkError(
        f'nosink.eval needs the evaluation extras ({error.name} is missing): pip install "nosink[eval]"'
    ) from None

__all__ = ["classification_metrics", "cosine_similarities", "entity_f1", "pearson_x100", "spearman_x100"]

_EPS = 1e-12  # as torch.nn.functional.normalize: a zero vector has cosine 0 with everything


def spearman_x100(gold: Sequence[float] | np.ndarray, predicted: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation ×100 (``scipy.stats.spearmanr``; ties get their average rank).

    NaN when either input is constant (the correlation is undefined; scipy warns).
    """
    gold_array, predicted_array = _paired(gold, predicted)
    return float(spearmanr(gold_array, predicted_array)[0]) * 100.0


def pearson_x100(gold: Sequence[float] | np.ndarray, predicted: Sequence[float] | np.ndarray) -> float:
    """Pearson's correlation ×100 (``scipy.stats.pearsonr``); NaN when either input is constant."""
    gold_array, predicted_array = _paired(gold, predicted)
    return float(pearsonr(gold_array, predicted_array)[0]) * 100.0


def cosine_similarities(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [N, D] arrays → [N] float64 (a zero row gives 0)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise NosinkError(f"expected two [N, D] arrays of the same shape, got {a.shape} and {b.shape}")
    norms = np.maximum(np.linalg.norm(a, axis=1), _EPS) * np.maximum(np.linalg.norm(b, axis=1), _EPS)  # [N]
    return np.einsum("nd,nd->n", a, b) / norms


def classification_metrics(y_true: Sequence[object], y_pred: Sequence[object]) -> dict[str, float]:
    """Accuracy and F1 (micro, macro, weighted) from ``sklearn.metrics``.

    Averages run over the labels present in ``y_true`` or ``y_pred``; a label never predicted has
    F1 0 (``zero_division=0``, sklearn's default value, without its warning).

    Returns:
        ``accuracy``, ``f1_micro``, ``f1_macro``, ``f1_weighted``, each in [0, 1].
    """
    if len(y_true) != len(y_pred) or len(y_true) == 0:
        raise NosinkError(f"need two non-empty label lists of one length, got {len(y_true)} and {len(y_pred)}")
    y_true_array, y_pred_array = np.asarray(y_true), np.asarray(y_pred)
    scores = {"accuracy": float(accuracy_score(y_true_array, y_pred_array))}
    for average in ("micro", "macro", "weighted"):
        scores[f"f1_{average}"] = float(f1_score(y_true_array, y_pred_array, average=average, zero_division=0))
    return scores


def entity_f1(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level micro precision, recall and F1 (``seqeval`` default mode, IOB2 as conlleval reads it).

    An entity counts as correct only when its type and both boundaries match.

    Returns:
        ``precision``, ``recall``, ``f1`` in [0, 1] (0 when undefined), and the entity counts
        ``true_entities``, ``pred_entities``, ``correct_entities``.
    """
    if len(true_tags) != len(pred_tags):
        raise NosinkError(f"need one predicted sequence per true sequence, got {len(pred_tags)} for {len(true_tags)}")
    true_lists = [list(tags) for tags in true_tags]
    pred_lists = [list(tags) for tags in pred_tags]
    for index, (true, pred) in enumerate(zip(true_lists, pred_lists, strict=True)):
        if len(true) != len(pred):
            raise NosinkError(f"sequence {index}: {len(true)} true tags but {len(pred)} predicted tags")
    true_entities = set(get_entities(true_lists))  # (type, start, end) over the concatenated sequences
    pred_entities = set(get_entities(pred_lists))
    return {
        "precision": float(_entity_precision(true_lists, pred_lists, zero_division=0)),
        "recall": float(_entity_recall(true_lists, pred_lists, zero_division=0)),
        "f1": float(_entity_f1_score(true_lists, pred_lists, zero_division=0)),
        "true_entities": float(len(true_entities)),
        "pred_entities": float(len(pred_entities)),
        "correct_entities": float(len(true_entities & pred_entities)),
    }


def _paired(
    gold: Sequence[float] | np.ndarray, predicted: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    gold_array = np.asarray(gold, dtype=np.float64).ravel()
    predicted_array = np.asarray(predicted, dtype=np.float64).ravel()
    if gold_array.shape != predicted_array.shape or gold_array.size < 2:
        raise NosinkError(
            f"need two score lists of one length >= 2, got {gold_array.size} gold and {predicted_array.size} predicted"
        )
    return gold_array, predicted_array
