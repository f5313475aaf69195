"""The NER probe: label schemes, scoring of truncated words, one backbone pass per sentence, real data end to end."""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import stories_model, stories_tokenizer, tiny_model, tiny_tokenizer

from nosink import Encoder, NosinkError, TokenEncoding
from nosink.eval.base import TokenEmbedder
from nosink.eval.conll import TaggedSentences, load_conll
from nosink.eval.ner import (
    LabelScheme,
    LinearProbe,
    TokenFeatures,
    cross_validated_f1,
    ner_features,
    ner_probe,
    score_probe,
    token_labels,
    train_probe,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PLAN = "mask0-bidir:k=2"
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread is faster
needs_data = pytest.mark.skipif(not DATA.exists(), reason="../shared/data is not available")


@pytest.fixture(scope="module")
def stories() -> Encoder:
    return Encoder.from_model(stories_model(), stories_tokenizer(), plan=PLAN, max_length=64)


class CountingTokenEmbedder:
    """Wraps a token embedder and counts calls and the sentences passed."""

    def __init__(self, inner: TokenEmbedder) -> None:
        self.inner = inner
        self.calls = 0
        self.sentences: list[tuple[str, ...]] = []

    def encode_tokens(self, texts: Sequence[Sequence[str]], **kwargs: object) -> list[TokenEncoding]:
        self.calls += 1
        self.sentences.extend(tuple(words) for words in texts)
        return self.inner.encode_tokens(texts, **kwargs)


def quiet(function, *args, **kwargs):
    """Run without the encoder's truncation warning (the subsets here have long sentences)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return function(*args, **kwargs)


# -------------------------------------------------------------------- labels and scoring


def test_label_schemes() -> None:
    word_ids = [0, 0, None, 1, 1, 1, 2]
    tags = ["B-PER", "I-PER", "O"]
    first = token_labels(word_ids, tags, LabelScheme.FIRST_SUBWORD)
    assert first == ["B-PER", None, None, "I-PER", None, None, "O"]
    every = token_labels(word_ids, tags, LabelScheme.SUBWORD)
    assert every == ["B-PER", "I-PER", None, "I-PER", "I-PER", "I-PER", "O"]
    assert LabelScheme.coerce("subword") is LabelScheme.SUBWORD
    with pytest.raises(NosinkError, match="first_subword, subword"):
        LabelScheme.coerce("word")


def constant_probe(labels: list[str], winner: str, scheme: LabelScheme, dim: int = 2) -> LinearProbe:
    """A probe that predicts ``winner`` for every token."""
    linear = torch.nn.Linear(dim, len(labels))
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.copy_(torch.tensor([1.0 if label == winner else 0.0 for label in labels]))
    return LinearProbe(torch.nn.Sequential(torch.nn.Dropout(0.1), linear), labels, scheme)


def features_of(word_ids: list[list[int | None]], n_words: list[int], dim: int = 2) -> TokenFeatures:
    lengths = [len(ids) for ids in word_ids]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    states = np.random.default_rng(0).normal(size=(sum(lengths), dim)).astype(np.float32)
    return TokenFeatures(states, offsets, word_ids, n_words)


def test_truncated_words_are_predicted_o_and_counted() -> None:
    # Sentence of 3 words, the last cut by truncation: tokens [w0, w0, w1].
    features = features_of([[0, 0, 1]], [3])
    tags = [["B-PER", "O", "B-LOC"]]
    probe = constant_probe(["B-PER", "O"], "B-PER", LabelScheme.FIRST_SUBWORD)
    scores = score_probe(probe, features, tags)
    # Word-level prediction [B-PER, B-PER, O]: entities PER(0), PER(1) vs true PER(0), LOC(2).
    assert (scores["true_entities"], scores["pred_entities"], scores["correct_entities"]) == (2, 2, 1)
    assert scores["recall"] == pytest.approx(0.5) and scores["words_without_token"] == 1
    subword = constant_probe(["B-PER", "I-PER", "O"], "I-PER", LabelScheme.SUBWORD)
    scores = score_probe(subword, features, tags)
    # Sub-token sequences: true [B-PER, I-PER, O] (the lost word is not scored), predicted
    # [I-PER, I-PER, I-PER] = one PER(0-2) entity, which does not match PER(0-1).
    assert (scores["true_entities"], scores["pred_entities"], scores["correct_entities"]) == (1, 1, 0)


def test_probe_training_is_deterministic_and_leaves_the_global_rng_alone() -> None:
    features = features_of([[0, 1, 2], [0, None, 1]] * 20, [3, 2] * 20, dim=6)
    tags = [["B-PER", "I-PER", "O"], ["O", "B-LOC"]] * 20
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = train_probe(features, tags, epochs=2, batch_size=8)
    assert torch.equal(torch.rand(1), before)
    second = train_probe(features, tags, epochs=2, batch_size=8)
    assert first.labels == ["B-LOC", "B-PER", "I-PER", "O"]
    assert first.losses == second.losses and len(first.losses) == 2
    assert torch.equal(first.head[1].weight, second.head[1].weight)
    other = train_probe(features, tags, epochs=2, batch_size=8, seed=7)
    assert not torch.equal(first.head[1].weight, other.head[1].weight)
    with pytest.raises(NosinkError, match="sentence 1: features of 2 words but 3 tags"):
        train_probe(features, [tags[0]] * 40)


# -------------------------------------------------------------------- backbone passes


@needs_data
def test_backbone_runs_once_per_sentence(stories: Encoder) -> None:
    train = load_conll(DATA / "wnut17" / "wnut17train.conll", limit=40)
    test = load_conll(DATA / "wnut17" / "emerging.test.annotated", limit=20)
    counting = CountingTokenEmbedder(stories)
    result = quiet(ner_probe, counting, train, test, epochs=3)
    assert counting.calls == 2  # one call for the train sentences, one for the test sentences
    assert counting.sentences == [tuple(s) for s in train.tokens] + [tuple(s) for s in test.tokens]
    assert result.sizes["train_sentences"] == 40 and result.sizes["test_sentences"] == 20


@needs_data
def test_features_are_the_encoder_token_states(stories: Encoder) -> None:
    sentences = load_conll(DATA / "wikiann-en" / "dev", limit=5)
    features = ner_features(stories, sentences)
    direct = stories.encode_tokens(sentences.tokens)
    for s, encoding in enumerate(direct):
        np.testing.assert_array_equal(features.states[features.rows(s)], encoding.embeddings)
        assert features.word_ids[s] == encoding.word_ids
    assert features.n_words == [len(words) for words in sentences.tokens]


# -------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def wikiann() -> tuple[TaggedSentences, TaggedSentences]:
    if not DATA.exists():
        pytest.skip("../shared/data is not available")
    return load_conll(DATA / "wikiann-en" / "train", limit=200), load_conll(DATA / "wikiann-en" / "test", limit=100)


@needs_data
@pytest.mark.parametrize("scheme", ["first_subword", "subword"])
def test_ner_probe_wnut17(stories: Encoder, scheme: str) -> None:
    train = load_conll(DATA / "wnut17" / "wnut17train.conll", limit=200)
    test = load_conll(DATA / "wnut17" / "emerging.test.annotated", limit=100)
    result = quiet(ner_probe, stories, train, test, scheme=scheme, task="WNUT17")
    assert result.task == "WNUT17"
    assert {"f1", "precision", "recall", "train_loss"} <= set(result.metrics)
    assert all(0.0 <= result.metrics[key] <= 1.0 for key in ("f1", "precision", "recall"))
    assert result.sizes["labels"] == (13 if scheme == "subword" else len({t for s in train.tags for t in s}))
    assert result.sizes["test_words"] == test.n_tokens and result.sizes["dim"] == 64
    assert {"embed_s", "fit_s", "score_s"} <= set(result.timings)
    again = quiet(ner_probe, stories, train, test, scheme=scheme, task="WNUT17")
    assert again.metrics == result.metrics  # same seed, same numbers


@needs_data
def test_ner_probe_learns_from_real_labels(stories: Encoder, wikiann) -> None:
    """Trained on the true tags the probe finds WikiANN entities; on shuffled tags it finds none."""
    train, test = wikiann
    train_features, test_features = quiet(ner_features, stories, train), quiet(ner_features, stories, test)
    flat = [tag for sentence in train.tags for tag in sentence]
    random.Random(0).shuffle(flat)
    pieces = iter(flat)
    shuffled = [[next(pieces) for _ in sentence] for sentence in train.tags]
    real = score_probe(train_probe(train_features, train.tags, epochs=10), test_features, test.tags)
    noise = score_probe(train_probe(train_features, shuffled, epochs=10), test_features, test.tags)
    # stories260k (TinyStories, 260k parameters) is weak at NER: about 7 F1 here, shuffled about 0.
    assert real["correct_entities"] >= 5
    assert real["f1"] > noise["f1"] + 0.02


@needs_data
def test_ner_probe_wikiann_subword_and_tiny_model(wikiann) -> None:
    train, test = wikiann
    tiny = Encoder.from_model(tiny_model("llama"), tiny_tokenizer(), plan=PLAN, max_length=32)
    result = quiet(ner_probe, tiny, train.select(range(60)), test.select(range(30)), scheme="subword", batch_size=16)
    assert result.sizes["dim"] == 32 and result.sizes["labels"] == 7
    assert 0.0 <= result.metrics["f1"] <= 1.0 and np.isfinite(result.metrics["train_loss"])


@needs_data
def test_truncation_is_scored(wikiann) -> None:
    train, test = wikiann
    short = Encoder.from_model(stories_model(), stories_tokenizer(), plan=PLAN, max_length=8)
    with pytest.warns(UserWarning, match="truncated"):
        result = ner_probe(short, train.select(range(50)), test.select(range(30)), epochs=1)
    assert result.metrics["words_without_token"] > 0
    # Lost words still count: every gold entity of the 30 sentences is scored (WikiANN: one B- each).
    assert result.metrics["true_entities"] == sum(tag.startswith("B-") for tags in test.tags[:30] for tag in tags)


@needs_data
def test_cross_validation_equals_probes_on_separately_encoded_folds(stories: Encoder, wikiann) -> None:
    """Fold k of ``cross_validated_f1`` is the probe trained on the other sentences, encoded on their own."""
    train, _ = wikiann
    sentences = train.select(range(150))
    features = quiet(ner_features, stories, sentences)
    result = cross_validated_f1(features, sentences.tags, folds=3, epochs=10)
    folds = [range(0, 50), range(50, 100), range(100, 150)]
    expected = []
    for held in folds:
        rest = [s for s in range(150) if s not in held]
        fit, scored = sentences.select(rest), sentences.select(list(held))
        probe = train_probe(quiet(ner_features, stories, fit), fit.tags, epochs=10)
        expected.append(score_probe(probe, quiet(ner_features, stories, scored), scored.tags))
    assert result["f1"] == pytest.approx(100 * np.mean([e["f1"] for e in expected]), abs=1e-9)
    assert result["precision"] == pytest.approx(100 * np.mean([e["precision"] for e in expected]), abs=1e-9)
    assert result["f1_std"] == pytest.approx(100 * np.std([e["f1"] for e in expected]), abs=1e-9)
    assert result["f1"] > 0  # stories260k finds some WikiANN entities


def test_selecting_features_keeps_each_sentence_rows(stories: Encoder) -> None:
    sentences = [["the", "cat"], ["a", "little", "girl", "named", "lily"], ["sun"]]
    features = ner_features(stories, sentences)
    picked = features.select([2, 0])
    assert picked.n_words == [1, 2] and picked.word_ids == [features.word_ids[2], features.word_ids[0]]
    np.testing.assert_array_equal(picked.states[picked.rows(0)], features.states[features.rows(2)])
    np.testing.assert_array_equal(picked.states[picked.rows(1)], features.states[features.rows(0)])
    with pytest.raises(NosinkError, match="folds"):
        cross_validated_f1(features, [["O"] * 2, ["O"] * 5, ["O"]], folds=4)
