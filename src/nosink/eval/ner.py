"""The token-level probe of the paper (docs/spec.md §6): a linear NER head on frozen final-layer token states.

The backbone runs ONCE per sentence (:func:`ner_features`); the states are cached as one array
and the head (dropout + ``nn.Linear``) is trained on them for every epoch. (The released code
re-ran the frozen backbone every epoch, which gives the same head but costs ``epochs`` times
more.) Defaults are the released code's: dropout 0.1, AdamW (lr 5e-3, torch's default weight
decay 0.01), 3 epochs, 32 sentences per batch, shuffled each epoch, seed 42. The released code
also cut inputs to 32 tokens: that is the encoder's ``max_length``, so build the encoder with
``Encoder.from_model(..., max_length=32)`` (or ``from_pretrained``) to mimic it.

Label schemes (:class:`LabelScheme`):

- ``first_subword`` (default): a word's tag is the label of its first sub-token; other
  sub-tokens are ignored by the loss. Predictions are read off first sub-tokens, giving one tag
  per word; a word with no token (cut by truncation) is predicted ``O`` and still counted.
  seqeval runs over words, so scores compare with word-level NER results.
- ``subword``: every sub-token is labelled (the first with the word's tag, the others with the
  ``I-`` form of a ``B-``/``I-`` tag; ``O`` stays ``O``) and seqeval runs over the sub-token
  sequences, like the released code. Words lost to truncation are not scored.

Sub-tokens that belong to no word (a lone ``▁`` of SentencePiece, say) are never labelled.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from nosink.errors import Choice, NosinkError
from nosink.eval.base import TaskResult, TokenEmbedder
from nosink.eval.conll import TaggedSentences
from nosink.eval.metrics import entity_f1

if TYPE_CHECKING:
    from nosink.encoder import TokenEncoding

__all__ = [
    "LabelScheme",
    "LinearProbe",
    "TokenFeatures",
    "cross_validated_f1",
    "ner_features",
    "ner_probe",
    "score_probe",
    "token_features",
    "train_probe",
]

IGNORE = -100  # target of sub-tokens the loss skips (torch's CrossEntropyLoss default ignore_index)
OUTSIDE = "O"


class LabelScheme(Choice):
    """Which sub-tokens carry a label; see the module docstring."""

    FIRST_SUBWORD = "first_subword"
    SUBWORD = "subword"

    @classmethod
    def noun(cls) -> str:
        return "label scheme"


@dataclass(frozen=True, eq=False)
class TokenFeatures:
    """Frozen final-layer states of sentences' sub-tokens, all sentences in one array."""

    states: np.ndarray  # [T_total, D] float32; sentence s owns rows offsets[s]:offsets[s + 1]
    offsets: np.ndarray  # [S + 1] int64
    word_ids: list[list[int | None]]  # per sentence, per sub-token: its word, or None
    n_words: list[int]  # words per sentence (some may have no sub-token after truncation)

    def __len__(self) -> int:
        return len(self.n_words)

    @property
    def dim(self) -> int:
        return int(self.states.shape[1])

    def rows(self, sentence: int) -> np.ndarray:
        """Row indices [n_s] of one sentence's sub-tokens in ``states``."""
        return np.arange(self.offsets[sentence], self.offsets[sentence + 1])

    def select(self, sentences: Sequence[int]) -> TokenFeatures:
        """The features of some sentences, in the order given."""
        rows = [self.rows(s) for s in sentences]
        lengths = [len(r) for r in rows]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)  # [S' + 1]
        states = self.states[np.concatenate(rows)] if rows else self.states[:0]  # [T', D]
        return TokenFeatures(
            states, offsets, [self.word_ids[s] for s in sentences], [self.n_words[s] for s in sentences]
        )


@dataclass(eq=False)
class LinearProbe:
    """A trained head: dropout + linear over ``labels``; ``losses`` holds the mean loss of each epoch."""

    head: nn.Sequential
    labels: list[str]
    scheme: LabelScheme
    losses: list[float] = field(default_factory=list)


# -------------------------------------------------------------------- features


def ner_features(
    embedder: TokenEmbedder,
    sentences: TaggedSentences | Sequence[Sequence[str]],
    *,
    instruction: str | None = None,
    batch_size: int | None = None,
    show_progress_bar: bool | None = None,
) -> TokenFeatures:
    """Run the backbone once over every sentence (a list of words) and cache the token states.

    Args:
        embedder: ``nosink.Encoder`` or any :class:`~nosink.eval.base.TokenEmbedder`.
        sentences: Tagged sentences, or lists of words.
        instruction: Task description put before every sentence (none in the paper).
        batch_size: Sentences per forward pass (the embedder's default when None).
        show_progress_bar: Passed to the embedder.

    Returns:
        The states and the word of each sub-token.
    """
    words = _words(sentences)
    encodings = embedder.encode_tokens(
        words, instruction=instruction, batch_size=batch_size, show_progress_bar=show_progress_bar
    )
    return token_features(encodings, words)


def _words(sentences: TaggedSentences | Sequence[Sequence[str]]) -> list[list[str]]:
    words = sentences.tokens if isinstance(sentences, TaggedSentences) else [list(s) for s in sentences]
    if not words:
        raise NosinkError("no sentences to encode")
    return words


def token_features(encodings: Sequence[TokenEncoding], words: Sequence[Sequence[str]]) -> TokenFeatures:
    """One :class:`TokenFeatures` from the token encodings of sentences given as lists of ``words``."""
    if len(encodings) != len(words):
        raise NosinkError(f"the embedder returned {len(encodings)} encodings for {len(words)} sentences")
    for index, encoding in enumerate(encodings):
        if encoding.word_ids is None or len(encoding.word_ids) != len(encoding.embeddings):
            raise NosinkError(f"sentence {index}: the embedder gave no word alignment for its tokens")
    lengths = [len(encoding.embeddings) for encoding in encodings]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)  # [S + 1]
    dim = int(encodings[0].embeddings.shape[1])
    states = np.concatenate([np.asarray(e.embeddings, dtype=np.float32).reshape(-1, dim) for e in encodings])
    return TokenFeatures(states, offsets, [list(e.word_ids) for e in encodings], [len(w) for w in words])


# -------------------------------------------------------------------- labels


def _inside(tag: str) -> str:
    """The tag of a continuation sub-token: ``B-X`` → ``I-X``; ``I-X`` and ``O`` unchanged."""
    return "I-" + tag[2:] if tag.startswith("B-") else tag


def _first_tokens(word_ids: list[int | None]) -> dict[int, int]:
    """Word → index of its first sub-token."""
    first: dict[int, int] = {}
    for position, word in enumerate(word_ids):
        if word is not None and word not in first:
            first[word] = position
    return first


def token_labels(word_ids: list[int | None], tags: Sequence[str], scheme: LabelScheme) -> list[str | None]:
    """The label of each sub-token of one sentence under ``scheme`` (None = not labelled)."""
    first = _first_tokens(word_ids)
    labels: list[str | None] = []
    for position, word in enumerate(word_ids):
        if word is None:
            labels.append(None)
        elif first[word] == position:
            labels.append(tags[word])
        else:
            labels.append(_inside(tags[word]) if scheme is LabelScheme.SUBWORD else None)
    return labels


def _check_aligned(features: TokenFeatures, tags: Sequence[Sequence[str]]) -> None:
    if len(features) != len(tags):
        raise NosinkError(f"{len(features)} feature sentences but {len(tags)} tag sentences")
    for index, (n_words, sentence_tags) in enumerate(zip(features.n_words, tags, strict=True)):
        if n_words != len(sentence_tags):
            raise NosinkError(f"sentence {index}: features of {n_words} words but {len(sentence_tags)} tags")


# -------------------------------------------------------------------- training and scoring


def train_probe(
    features: TokenFeatures,
    tags: Sequence[Sequence[str]],
    *,
    scheme: LabelScheme | str = LabelScheme.FIRST_SUBWORD,
    epochs: int = 3,
    lr: float = 5e-3,
    batch_size: int = 32,
    dropout: float = 0.1,
    seed: int = 42,
) -> LinearProbe:
    """Train dropout + linear on cached states with AdamW and cross-entropy (CPU).

    The label set is the sorted set of training labels under ``scheme``. Each epoch visits the
    sentences in a fresh seeded order, ``batch_size`` sentences per step; the loss is the mean
    over the labelled sub-tokens of the batch. Torch's global RNG state is left unchanged.

    Args:
        features: Training features from :func:`ner_features`.
        tags: One tag per word of every training sentence.
        scheme: ``first_subword`` or ``subword``.
        epochs: Passes over the training sentences.
        lr: AdamW learning rate.
        batch_size: Sentences per step.
        dropout: Dropout probability before the linear layer.
        seed: Seed of the initialization, the dropout masks and the sentence order.

    Returns:
        The trained probe.
    """
    scheme = LabelScheme.coerce(scheme)
    _check_aligned(features, tags)
    if epochs < 1 or batch_size < 1 or lr <= 0 or not 0.0 <= dropout < 1.0:
        raise NosinkError(f"bad probe settings: epochs={epochs}, batch_size={batch_size}, lr={lr}, dropout={dropout}")
    per_token = [token_labels(features.word_ids[s], tags[s], scheme) for s in range(len(features))]
    labels = sorted({label for sentence in per_token for label in sentence if label is not None})
    if not labels:
        raise NosinkError("no training sub-token carries a label (every sentence was cut away?)")
    index_of = {label: i for i, label in enumerate(labels)}
    targets = torch.tensor(
        [IGNORE if label is None else index_of[label] for sentence in per_token for label in sentence],
        dtype=torch.long,
    )  # [T_total]
    states = torch.from_numpy(features.states)  # [T_total, D]
    sentence_rows = [torch.from_numpy(features.rows(s)) for s in range(len(features))]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Sequential(nn.Dropout(dropout), nn.Linear(features.dim, len(labels)))
        optimizer = torch.optim.AdamW(head.parameters(), lr=lr)
        order = torch.Generator().manual_seed(seed)
        losses = [
            _epoch(head, optimizer, states, targets, sentence_rows, batch_size=batch_size, order=order)
            for _ in range(epochs)
        ]
    head.eval()
    return LinearProbe(head, labels, scheme, losses)


def _epoch(
    head: nn.Sequential,
    optimizer: torch.optim.Optimizer,
    states: torch.Tensor,
    targets: torch.Tensor,
    sentence_rows: list[torch.Tensor],
    *,
    batch_size: int,
    order: torch.Generator,
) -> float:
    head.train()
    losses: list[float] = []
    for batch in torch.randperm(len(sentence_rows), generator=order).split(batch_size):
        rows = torch.cat([sentence_rows[s] for s in batch.tolist()])  # [n_batch_tokens]
        batch_targets = targets[rows]  # [n_batch_tokens]
        if not bool((batch_targets != IGNORE).any()):
            continue
        loss = nn.functional.cross_entropy(head(states[rows]), batch_targets, ignore_index=IGNORE)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return float(np.mean(losses)) if losses else float("nan")


@torch.inference_mode()
def predict_tokens(probe: LinearProbe, features: TokenFeatures) -> list[list[str]]:
    """The probe's label for every sub-token of every sentence (dropout off)."""
    probe.head.eval()
    best = probe.head(torch.from_numpy(features.states)).argmax(-1).tolist()  # [T_total]
    names = [probe.labels[i] for i in best]
    return [names[features.offsets[s] : features.offsets[s + 1]] for s in range(len(features))]


def score_probe(probe: LinearProbe, features: TokenFeatures, tags: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level micro precision / recall / F1 of a probe on test features (seqeval, default mode).

    Under ``first_subword`` the sequences are words (a word with no sub-token is predicted
    ``O``); under ``subword`` they are the labelled sub-tokens (see the module docstring).

    Returns:
        ``f1``, ``precision``, ``recall`` in [0, 1], the entity counts of
        :func:`~nosink.eval.metrics.entity_f1`, and ``words_without_token`` (words lost to
        truncation).
    """
    _check_aligned(features, tags)
    predicted = predict_tokens(probe, features)
    gold_sequences: list[list[str]] = []
    pred_sequences: list[list[str]] = []
    lost = 0
    for s in range(len(features)):
        word_ids, sentence_tags = features.word_ids[s], list(tags[s])
        if probe.scheme is LabelScheme.FIRST_SUBWORD:
            first = _first_tokens(word_ids)
            lost += len(sentence_tags) - len(first)
            gold_sequences.append(sentence_tags)
            pred_sequences.append(
                [predicted[s][first[w]] if w in first else OUTSIDE for w in range(len(sentence_tags))]
            )
        else:
            labels = token_labels(word_ids, sentence_tags, LabelScheme.SUBWORD)
            kept = [position for position, label in enumerate(labels) if label is not None]
            lost += len(sentence_tags) - len(_first_tokens(word_ids))
            gold_sequences.append([str(labels[p]) for p in kept])
            pred_sequences.append([predicted[s][p] for p in kept])
    return {**entity_f1(gold_sequences, pred_sequences), "words_without_token": float(lost)}


def cross_validated_f1(
    features: TokenFeatures, tags: Sequence[Sequence[str]], *, folds: int = 4, **probe: Any
) -> dict[str, float]:
    """Entity F1 ×100 of probes trained on all contiguous folds of the sentences but one, scored on that one.

    Used to choose a plan on a single labelled split (a dev set) without touching test data.
    ``probe`` holds :func:`train_probe` settings.

    Returns:
        ``f1`` (mean over folds), ``f1_std``, ``precision`` and ``recall`` (means), all ×100.
    """
    _check_aligned(features, tags)
    if not 2 <= folds <= len(features):
        raise NosinkError(f"folds must be 2..{len(features)} (the number of sentences), not {folds}")
    parts = np.array_split(np.arange(len(features)), folds)
    scores = []
    for held in parts:
        train = np.setdiff1d(np.arange(len(features)), held)
        fitted = train_probe(features.select(train), [tags[s] for s in train], **probe)
        scores.append(score_probe(fitted, features.select(held), [tags[s] for s in held]))
    mean = {name: 100 * float(np.mean([score[name] for score in scores])) for name in ("f1", "precision", "recall")}
    return {**mean, "f1_std": 100 * float(np.std([score["f1"] for score in scores]))}


def ner_probe(
    embedder: TokenEmbedder,
    train: TaggedSentences,
    test: TaggedSentences,
    *,
    scheme: LabelScheme | str = LabelScheme.FIRST_SUBWORD,
    epochs: int = 3,
    lr: float = 5e-3,
    batch_size: int = 32,
    dropout: float = 0.1,
    seed: int = 42,
    instruction: str | None = None,
    encode_batch_size: int | None = None,
    show_progress_bar: bool | None = None,
    task: str = "ner",
) -> TaskResult:
    """The NER probe end to end: features once per sentence, head training, entity F1 on test.

    Args:
        embedder: ``nosink.Encoder`` (build it with ``max_length=32`` to cut inputs as the
            released code did) or any :class:`~nosink.eval.base.TokenEmbedder`.
        train: Training sentences with IOB2 tags.
        test: Test sentences with IOB2 tags.
        scheme: ``first_subword`` (default) or ``subword``; see the module docstring.
        epochs: See :func:`train_probe`.
        lr: See :func:`train_probe`.
        batch_size: Sentences per training step.
        dropout: See :func:`train_probe`.
        seed: See :func:`train_probe`.
        instruction: Task description put before every sentence (none in the paper).
        encode_batch_size: Sentences per forward pass of the backbone.
        show_progress_bar: Passed to the embedder.
        task: The name recorded in the result.

    Returns:
        Metrics of :func:`score_probe` plus ``train_loss`` (mean loss of the last epoch); sizes
        ``train_sentences``, ``test_sentences``, ``train_tokens``, ``test_tokens`` (sub-tokens),
        ``test_words``, ``labels``, ``dim``; timings ``embed_s``, ``fit_s``, ``score_s``.
    """
    scheme = LabelScheme.coerce(scheme)
    start = time.perf_counter()
    encode = dict(instruction=instruction, batch_size=encode_batch_size, show_progress_bar=show_progress_bar)
    train_features = ner_features(embedder, train, **encode)
    test_features = ner_features(embedder, test, **encode)
    fit_start = time.perf_counter()
    probe = train_probe(
        train_features,
        train.tags,
        scheme=scheme,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        dropout=dropout,
        seed=seed,
    )
    score_start = time.perf_counter()
    metrics = score_probe(probe, test_features, test.tags)
    metrics["train_loss"] = probe.losses[-1]
    sizes = {
        "train_sentences": len(train),
        "test_sentences": len(test),
        "train_tokens": int(train_features.states.shape[0]),
        "test_tokens": int(test_features.states.shape[0]),
        "test_words": test.n_tokens,
        "labels": len(probe.labels),
        "dim": train_features.dim,
    }
    timings = {
        "embed_s": fit_start - start,
        "fit_s": score_start - fit_start,
        "score_s": time.perf_counter() - score_start,
    }
    return TaskResult(task, metrics, sizes, timings)
