"""Classification protocols of the paper: MTEB-style classification (docs/spec.md §6) and domain classification (§4.1).

Each comes in two halves: ``*_scores`` scores precomputed embeddings (the k-sweep computes its
own features and calls :func:`classification_scores`), and ``evaluate_*`` embeds the texts with
an :class:`~nosink.eval.base.Embedder` first and returns a :class:`~nosink.eval.base.TaskResult`
with the metrics, the sizes and the time spent embedding and fitting.

- :func:`mteb_undersample`, :func:`classification_scores`, :func:`evaluate_classification`:
  MTEB's ``AbsTaskClassification`` (undersampled experiments, logistic regression);
- :func:`domain_scores`, :func:`evaluate_domain`: a stratified split, SMOTE on the training split,
  logistic regression.

STS is in :mod:`nosink.eval.sts`. Needs the ``eval`` extra (scikit-learn, imbalanced-learn, scipy, seqeval).
"""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from nosink.errors import NosinkError, check_positive
from nosink.eval.base import Embedder, TaskResult, encode_checked, timed
from nosink.eval.data import LabeledTexts
from nosink.eval.metrics import classification_metrics

try:
    from imblearn.over_sampling import SMOTE
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
except ImportError as error:  # pragma: no cover - depends on the environment
    raise NosinkError(
        f'nosink.eval needs the evaluation extras ({error.name} is missing): pip install "nosink[eval]"'
    ) from None

__all__ = [
    "MTEB_MAX_ITER",
    "MTEB_N_EXPERIMENTS",
    "MTEB_SAMPLES_PER_LABEL",
    "MTEB_SEED",
    "classification_scores",
    "domain_scores",
    "evaluate_classification",
    "evaluate_domain",
    "mteb_undersample",
]

# AbsTaskClassification defaults of mteb 2.x (also mteb 1.x); Banking77 and Emotion keep them.
MTEB_N_EXPERIMENTS = 10
MTEB_SAMPLES_PER_LABEL = 8
MTEB_SEED = 42
MTEB_MAX_ITER = 100


# -------------------------------------------------------------------- MTEB classification


def _warn_unseen_labels(train_labels: Sequence[object], test_labels: Sequence[object]) -> None:
    """Warn when test labels never occur in training: their texts can never be classified right."""
    unseen = sorted({str(label) for label in test_labels} - {str(label) for label in train_labels})
    if unseen:
        count = sum(str(label) in unseen for label in test_labels)
        shown = ", ".join(repr(label) for label in unseen[:5]) + (" …" if len(unseen) > 5 else "")
        warnings.warn(
            f"{len(unseen)} test label(s) never occur in the training data ({shown}): their {count} test "
            "text(s) are always scored wrong",
            stacklevel=3,
        )


def mteb_undersample(
    labels: Sequence[object],
    *,
    n_experiments: int = MTEB_N_EXPERIMENTS,
    samples_per_label: int = MTEB_SAMPLES_PER_LABEL,
    seed: int = MTEB_SEED,
) -> list[list[int]]:
    """The training indices of each experiment, exactly as MTEB's ``AbsTaskClassification._undersample_data``.

    One index list ``0..N-1`` is shuffled in place by a fresh ``np.random.RandomState(seed)``
    before every experiment (so the shuffles compound and experiments differ although the seed
    is the same); each experiment then keeps the first ``samples_per_label`` indices of every
    label, in the shuffled order.
    """
    check_positive(n_experiments=n_experiments, samples_per_label=samples_per_label)
    order = list(range(len(labels)))
    selections: list[list[int]] = []
    for _ in range(n_experiments):
        np.random.RandomState(seed).shuffle(order)
        taken: defaultdict[object, int] = defaultdict(int)
        chosen: list[int] = []
        for index in order:
            if taken[labels[index]] < samples_per_label:
                chosen.append(index)
                taken[labels[index]] += 1
        selections.append(chosen)
    return selections


def classification_scores(
    train_x: np.ndarray,
    train_y: Sequence[object],
    test_x: np.ndarray,
    test_y: Sequence[object],
    *,
    n_experiments: int = MTEB_N_EXPERIMENTS,
    samples_per_label: int | None = MTEB_SAMPLES_PER_LABEL,
    seed: int = MTEB_SEED,
    max_iter: int = MTEB_MAX_ITER,
) -> dict[str, float | int]:
    """MTEB's classification protocol on precomputed embeddings.

    Mirrors ``mteb.abstasks.classification.AbsTaskClassification`` (mteb 2.x, defaults
    unchanged by Banking77Classification and EmotionClassification): ``n_experiments=10``
    experiments; in each, the training set is undersampled to ``samples_per_label=8`` examples
    per label (:func:`mteb_undersample`, seed 42), ``LogisticRegression(max_iter=100,
    random_state=42)`` (all other parameters sklearn's defaults: L-BFGS, C=1, no feature
    scaling) is fit on the raw embeddings and scored on the whole test set. Metrics are the
    means over experiments. ``samples_per_label=None`` trains on the whole training set instead
    (not MTEB's protocol); that fit is deterministic, so a single experiment is run.
    ConvergenceWarnings are silenced: the iteration cap is part of the protocol.

    Args:
        train_x: [N_train, D] training embeddings (rows no experiment samples are never read).
        train_y: [N_train] training labels.
        test_x: [N_test, D] test embeddings.
        test_y: [N_test] test labels.
        n_experiments: Number of undersampled experiments.
        samples_per_label: Training examples per label in each experiment, or None for all.
        seed: Seed of the undersampling and of the classifier.
        max_iter: L-BFGS iterations.

    Returns:
        Means of ``accuracy`` (MTEB's main score), ``f1_micro``, ``f1_macro`` (MTEB's ``f1``),
        ``f1_weighted``; ``accuracy_std`` over experiments; ``experiments``; ``train_per_experiment``.
    """
    train_x, test_x = _features(train_x, train_y, "train"), _features(test_x, test_y, "test")
    check_positive(n_experiments=n_experiments, max_iter=max_iter)
    if samples_per_label is None:
        selections = [list(range(len(train_y)))]
    else:
        selections = mteb_undersample(
            train_y, n_experiments=n_experiments, samples_per_label=samples_per_label, seed=seed
        )
    labels = np.asarray(train_y, dtype=object)
    runs = [
        _fit_and_score(train_x[chosen], labels[chosen].tolist(), test_x, test_y, seed=seed, max_iter=max_iter)
        for chosen in selections
    ]
    scores = {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}
    scores["accuracy_std"] = float(np.std([run["accuracy"] for run in runs]))
    counts = {
        "experiments": len(runs),  # counts stay ints, so that records say 10, not 10.0
        "train_per_experiment": _int_if_whole(float(np.mean([len(chosen) for chosen in selections]))),
    }
    return scores | counts


def _int_if_whole(value: float) -> int | float:
    return int(value) if value.is_integer() else value


def evaluate_classification(
    embedder: Embedder,
    train: LabeledTexts,
    test: LabeledTexts,
    *,
    instruction: str | None = None,
    batch_size: int | None = None,
    n_experiments: int = MTEB_N_EXPERIMENTS,
    samples_per_label: int | None = MTEB_SAMPLES_PER_LABEL,
    seed: int = MTEB_SEED,
    max_iter: int = MTEB_MAX_ITER,
    show_progress_bar: bool | None = None,
    task: str = "classification",
) -> TaskResult:
    """Embed the texts and score them with :func:`classification_scores` (MTEB's protocol).

    As MTEB does, only the training texts that some experiment samples are embedded (their
    union), and the test set is embedded once. The paper gives every text the task's
    instruction (docs/spec.md §6, e.g. Banking77 "Given an online banking query, find the corresponding
    intents."); pass it as ``instruction``.

    Args:
        embedder: The model.
        train: Training examples.
        test: Test examples.
        instruction: Task description put before every text (none by default).
        batch_size: Texts per forward pass (the embedder's default when None).
        n_experiments: See :func:`classification_scores`.
        samples_per_label: See :func:`classification_scores`.
        seed: See :func:`classification_scores`.
        max_iter: See :func:`classification_scores`.
        show_progress_bar: Passed to the embedder.
        task: The name recorded in the result.

    Returns:
        The metrics of :func:`classification_scores`; sizes ``train``, ``train_embedded``,
        ``test``, ``classes``, ``dim``; timings ``embed_s``, ``fit_s``.
    """
    _check_not_empty(train=train, test=test)
    _warn_unseen_labels(train.labels, test.labels)
    if samples_per_label is None:
        union = list(range(len(train)))
    else:
        selections = mteb_undersample(
            train.labels, n_experiments=n_experiments, samples_per_label=samples_per_label, seed=seed
        )
        union = sorted(set().union(*selections))

    def embed() -> tuple[np.ndarray, np.ndarray]:
        encode = lambda texts: encode_checked(  # noqa: E731
            embedder, texts, instruction=instruction, batch_size=batch_size, progress=show_progress_bar
        )
        sampled = encode([train.texts[i] for i in union])  # [U, D]
        train_x = np.zeros((len(train), sampled.shape[1]), dtype=np.float32)  # [N_train, D]; unsampled rows unread
        train_x[union] = sampled
        return train_x, encode(test.texts)

    (train_x, test_x), embed_s = timed(embed)
    metrics, fit_s = timed(
        lambda: classification_scores(
            train_x,
            train.labels,
            test_x,
            test.labels,
            n_experiments=n_experiments,
            samples_per_label=samples_per_label,
            seed=seed,
            max_iter=max_iter,
        )
    )
    sizes = {
        "train": len(train),
        "train_embedded": len(union),
        "test": len(test),
        "classes": len(set(train.labels)),
        "dim": int(test_x.shape[1]),
    }
    return TaskResult(task, metrics, sizes, {"embed_s": embed_s, "fit_s": fit_s})


# -------------------------------------------------------------------- domain classification (§4.1)


def domain_scores(
    x: np.ndarray,
    y: Sequence[object],
    *,
    test_size: float = 0.2,
    seed: int = 42,
    smote: bool = True,
    smote_min_count: int | None = None,
    max_iter: int = 100,
) -> dict[str, Any]:
    """The paper's domain-classification protocol (§4.1) on precomputed embeddings.

    1. Stratified split into train and test (``test_size=0.2``, ``random_state=seed``).
    2. SMOTE (imbalanced-learn, ``random_state=seed``) on the TRAINING split only, so that no
       synthetic point is built from a test example (no leakage into the test score). With
       ``smote_min_count=None`` every class is grown to the majority class's training count
       (imbalanced-learn's ``"not majority"``); with an integer m only classes with fewer than m
       training examples are grown, to m. ``k_neighbors = min(5, smallest grown class - 1)``.
       A class with a single training example cannot be interpolated: it is left as it is, with
       a warning, and listed under ``smote_skipped``.
    3. ``LogisticRegression(solver="lbfgs", max_iter=100, random_state=seed)`` on the raw
       embeddings (ConvergenceWarnings silenced: the cap is the protocol's), scored on the test
       split.

    Args:
        x: [N, D] embeddings.
        y: [N] labels; every class needs at least 2 examples (stratification).
        test_size: Fraction of each class held out for testing.
        seed: Seed of the split, SMOTE and the classifier.
        smote: Whether to apply SMOTE.
        smote_min_count: See step 2.
        max_iter: L-BFGS iterations.

    Returns:
        ``accuracy``, ``f1_micro``, ``f1_macro``, ``f1_weighted`` (floats in [0, 1]);
        ``train_counts_before``, ``train_counts_after``, ``test_counts`` (label → count, sorted by
        label); ``smote_skipped`` (labels); ``k_neighbors`` (int, 0 when SMOTE did not run).
    """
    x = _features(x, y, "domain")
    labels = np.asarray([str(label) for label in y], dtype=object)
    train_index, test_index = _stratified_split(labels, test_size=test_size, seed=seed)
    train_x, train_y = x[train_index], labels[train_index]
    before = _counts(train_y)
    skipped: list[str] = []
    k_neighbors = 0
    if smote:
        train_x, train_y, skipped, k_neighbors = _smote(train_x, train_y, seed=seed, min_count=smote_min_count)
    predicted = _fit_predict(train_x, train_y.tolist(), x[test_index], seed=seed, max_iter=max_iter)
    return {
        **classification_metrics(labels[test_index].tolist(), predicted),
        "train_counts_before": before,
        "train_counts_after": _counts(train_y),
        "test_counts": _counts(labels[test_index]),
        "smote_skipped": skipped,
        "k_neighbors": k_neighbors,
    }


def evaluate_domain(
    embedder: Embedder,
    data: LabeledTexts,
    *,
    instruction: str | None = None,
    batch_size: int | None = None,
    test_size: float = 0.2,
    seed: int = 42,
    smote: bool = True,
    smote_min_count: int | None = None,
    max_iter: int = 100,
    show_progress_bar: bool | None = None,
    task: str = "domain",
) -> TaskResult:
    """Embed every text (the paper uses no instruction) and score with :func:`domain_scores`.

    Args:
        embedder: The model.
        data: All labelled examples (the split is made here).
        instruction: Task description put before every text (None, as in the paper).
        batch_size: Texts per forward pass (the embedder's default when None).
        test_size: See :func:`domain_scores`.
        seed: See :func:`domain_scores`.
        smote: See :func:`domain_scores`.
        smote_min_count: See :func:`domain_scores`.
        max_iter: See :func:`domain_scores`.
        show_progress_bar: Passed to the embedder.
        task: The name recorded in the result.

    Returns:
        Metrics ``accuracy``, ``f1_micro``, ``f1_macro``, ``f1_weighted``; sizes ``examples``,
        ``train``, ``train_after_smote``, ``test``, ``classes``, ``dim``, ``k_neighbors``,
        ``smote_skipped`` and the per-class training counts as ``train_before/<label>`` and
        ``train_after/<label>``; timings ``embed_s``, ``fit_s``.
    """
    _check_not_empty(data=data)
    x, embed_s = timed(
        lambda: encode_checked(
            embedder, data.texts, instruction=instruction, batch_size=batch_size, progress=show_progress_bar
        )
    )
    scores, fit_s = timed(
        lambda: domain_scores(
            x,
            data.labels,
            test_size=test_size,
            seed=seed,
            smote=smote,
            smote_min_count=smote_min_count,
            max_iter=max_iter,
        )
    )
    metrics = {key: scores[key] for key in ("accuracy", "f1_micro", "f1_macro", "f1_weighted")}
    before, after = scores["train_counts_before"], scores["train_counts_after"]
    sizes = {
        "examples": len(data),
        "train": sum(before.values()),
        "train_after_smote": sum(after.values()),
        "test": sum(scores["test_counts"].values()),
        "classes": len(before),
        "dim": int(x.shape[1]),
        "k_neighbors": scores["k_neighbors"],
        "smote_skipped": len(scores["smote_skipped"]),
        **{f"train_before/{label}": count for label, count in before.items()},
        **{f"train_after/{label}": count for label, count in after.items()},
    }
    return TaskResult(task, metrics, sizes, {"embed_s": embed_s, "fit_s": fit_s})


# -------------------------------------------------------------------- helpers


def _features(x: np.ndarray, y: Sequence[object], what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] != len(y) or x.shape[0] == 0:
        raise NosinkError(f"{what} features must be [N, D] with one row per label, got {x.shape} for {len(y)} labels")
    return x


def _check_not_empty(**datasets: LabeledTexts) -> None:
    for name, data in datasets.items():
        if len(data) == 0:
            raise NosinkError(f"{name} has no examples")


def _fit_predict(train_x: np.ndarray, train_y: list[object], test_x: np.ndarray, *, seed: int, max_iter: int) -> list:
    if len(set(train_y)) < 2:
        raise NosinkError("the training set has a single class; a classifier needs at least two")
    model = LogisticRegression(solver="lbfgs", max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(train_x, train_y)
    return model.predict(test_x).tolist()


def _fit_and_score(
    train_x: np.ndarray,
    train_y: list[object],
    test_x: np.ndarray,
    test_y: Sequence[object],
    *,
    seed: int,
    max_iter: int,
) -> dict[str, float]:
    predicted = _fit_predict(train_x, train_y, test_x, seed=seed, max_iter=max_iter)
    return classification_metrics(list(test_y), predicted)


def _stratified_split(labels: np.ndarray, *, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < test_size < 1.0:
        raise NosinkError(f"test_size must be between 0 and 1, got {test_size}")
    rare = sorted(label for label, count in Counter(labels.tolist()).items() if count < 2)
    if rare:
        raise NosinkError(
            f"a stratified split needs at least 2 examples per class; too few for: {', '.join(map(repr, rare[:10]))}"
            " (remove or merge these classes)"
        )
    try:
        train_index, test_index = train_test_split(
            np.arange(len(labels)), test_size=test_size, stratify=labels, random_state=seed
        )
    except ValueError as error:
        raise NosinkError(f"cannot split {len(labels)} examples with test_size={test_size}: {error}") from None
    return np.asarray(train_index), np.asarray(test_index)


def _smote(
    x: np.ndarray, y: np.ndarray, *, seed: int, min_count: int | None
) -> tuple[np.ndarray, np.ndarray, list[str], int]:
    """SMOTE on a training split: (x, y, labels skipped for having one example, k_neighbors)."""
    counts = Counter(y.tolist())
    if min_count is not None:
        check_positive(smote_min_count=min_count)
    target = max(counts.values()) if min_count is None else min_count
    grow = {label: target for label, count in counts.items() if count < target}
    skipped = sorted(label for label in grow if counts[label] < 2)
    if skipped:
        warnings.warn(
            f"SMOTE needs 2 training examples of a class to interpolate; left as they are: {', '.join(skipped)}",
            stacklevel=3,
        )
    grow = {label: n for label, n in grow.items() if label not in skipped}
    if not grow:
        return x, y, skipped, 0
    k_neighbors = min(5, min(counts[label] for label in grow) - 1)
    sampler = SMOTE(sampling_strategy=grow, k_neighbors=k_neighbors, random_state=seed)
    grown_x, grown_y = sampler.fit_resample(x, y)
    return np.asarray(grown_x), np.asarray(grown_y, dtype=object), skipped, k_neighbors


def _counts(labels: np.ndarray) -> dict[str, int]:
    return dict(sorted(Counter(str(label) for label in labels.tolist()).items()))
