"""Encoder: texts in, embeddings out; pooling, instructions, batching, token alignment, bad input."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from conftest import STORIES, stories_model, stories_tokenizer

from nosink import Encoder, NosinkError

TEXTS = [
    "Once upon a time, there was a little girl named Lily.",
    "The dog ran.",
    "She loved to play outside in the park with her big red ball every single day.",
    "Hi",
]
PLANS = ["baseline", "mask0&bidir:k=4,k0=1", "inter-back:k=2", "mask2-bidir:k=5"]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return stories_model()


@pytest.fixture
def tokenizer() -> object:
    return stories_tokenizer()


def row_states(encoder: Encoder, ids: list[int]) -> torch.Tensor:
    """States [n, D] of one unpadded row."""
    return encoder.hidden_states(torch.tensor([ids]))[0]


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("plan", PLANS)
def test_alone_equals_in_a_mixed_length_batch(model, tokenizer, plan: str, side: str) -> None:
    tokenizer.padding_side = side
    encoder = Encoder.from_model(model, tokenizer, plan=plan)
    together = encoder.encode(TEXTS, batch_size=4)
    for i, text in enumerate(TEXTS):
        np.testing.assert_allclose(encoder.encode([text])[0], together[i], atol=1e-5, rtol=0)
    assert tokenizer.padding_side == side


@pytest.mark.parametrize("plan", PLANS)
def test_mean_pools_the_text_tokens_only(model, tokenizer, plan: str) -> None:
    """Instruction and text are one string; the mean leaves out what the released code counts as the prompt."""
    encoder = Encoder.from_model(model, tokenizer, plan=plan)
    task = "Find a story about a dog."
    prompt = f"Instruct: {task}\nQuery: "
    prompt_length = len(tokenizer(prompt.strip())["input_ids"])  # BOS + the instruction, as the released code counts
    for text, got in zip(TEXTS, encoder.encode(TEXTS, instruction=task), strict=True):
        states = row_states(encoder, tokenizer(prompt + text)["input_ids"])
        expected = states[prompt_length:].mean(0)
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-5, rtol=0)
    plain = encoder.encode(TEXTS[:1])[0]
    body = tokenizer(TEXTS[0], add_special_tokens=False)["input_ids"]
    np.testing.assert_allclose(plain, row_states(encoder, [1, *body])[1:].mean(0).numpy(), atol=1e-5, rtol=0)


def test_other_poolings(model, tokenizer) -> None:
    ids = tokenizer(TEXTS[0])["input_ids"]
    encoder = Encoder.from_model(model, tokenizer, plan="mask0-bidir:k=2")
    states = row_states(encoder, ids)  # [n, D], BOS first
    weights = torch.arange(1, len(ids), dtype=torch.float32)  # 1..n-1 over the text tokens
    expected = {
        "weighted_mean": (states[1:] * weights[:, None]).sum(0) / weights.sum(),
        "last": states[-1],
        "first": states[0],
    }
    for pooling, vector in expected.items():
        got = encoder.with_plan(encoder.plan, pooling=pooling).encode(TEXTS)[0]
        np.testing.assert_allclose(got, vector.numpy(), atol=1e-5, rtol=0)


def test_normalize_and_output_type(model, tokenizer) -> None:
    vectors = Encoder.from_model(model, tokenizer, plan="mask0-bidir:k=3").encode(TEXTS, normalize=True)
    assert vectors.dtype == np.float32 and vectors.shape == (4, 64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_token_budget_batches_give_the_same_vectors(model, tokenizer) -> None:
    encoder = Encoder.from_model(model, tokenizer, plan="mask0&bidir:k=4,k0=1")
    default = encoder.encode(TEXTS * 3)
    budgeted = encoder.encode(TEXTS * 3, batch_size=5, max_tokens_per_batch=40)
    np.testing.assert_allclose(default, budgeted, atol=1e-5, rtol=0)


def test_over_long_text_is_truncated_with_one_warning(model, tokenizer) -> None:
    encoder = Encoder.from_model(model, tokenizer, plan="mask0-bidir:k=2", max_length=8)
    with pytest.warns(UserWarning, match="2 of 3 texts were longer than max_length=8") as caught:
        vectors = encoder.encode([TEXTS[0], TEXTS[2], "Hi"])
    assert len(caught) == 1
    ids = tokenizer(TEXTS[0])["input_ids"][:8]
    np.testing.assert_allclose(vectors[0], row_states(encoder, ids)[1:].mean(0).numpy(), atol=1e-5, rtol=0)


def test_encode_tokens_aligns_tokens_to_words_and_characters(model, tokenizer) -> None:
    encoder = Encoder.from_model(model, tokenizer, plan="mask0-bidir:k=5")
    words = ["Lily", "saw", "a", "big", "dog."]
    [item] = encoder.encode_tokens([words])
    assert item.text == "Lily saw a big dog."
    assert len(item.tokens) == len(item.offsets) == len(item.word_ids) == item.embeddings.shape[0]
    for token_word, (start, end) in zip(item.word_ids, item.offsets, strict=True):
        assert token_word is not None and words[token_word] in item.text[start:end].strip() + words[token_word]
    assert sorted(set(item.word_ids)) == list(range(len(words)))
    states = row_states(encoder, tokenizer(item.text)["input_ids"])
    np.testing.assert_allclose(item.embeddings, states[1:].numpy(), atol=1e-5, rtol=0)
    [plain] = encoder.encode_tokens(["Lily saw a big dog."])
    assert plain.word_ids is None and plain.tokens == item.tokens


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (None, "expected a list of texts"),
        (["fine", 3], "index 1 must be a string"),
        (["fine", None], "index 1 must be a string"),
        (["fine", ""], "index 1 is empty"),
        (["fine", "  \n\t "], "index 1 is empty or only whitespace"),  # one rule with "" and the corpus reader
    ],
)
def test_bad_input_is_explained(model, tokenizer, texts, message: str) -> None:
    with pytest.raises(NosinkError, match=message):
        Encoder.from_model(model, tokenizer).encode(texts)


def test_empty_list_and_bad_arguments(model, tokenizer) -> None:
    encoder = Encoder.from_model(model, tokenizer)
    assert encoder.encode([]).shape == (0, 64)
    one = encoder.encode("a cat sat")  # a single string, as sentence-transformers takes it: a [D] vector
    assert one.shape == (64,) and np.array_equal(one, encoder.encode(["a cat sat"])[0])
    with pytest.raises(NosinkError, match="wrap it as"):  # token-level input stays a list
        encoder.encode_tokens("a cat sat")
    with pytest.raises(NosinkError, match="batch_size must be a positive integer, got -1"):
        encoder.encode(["a"], batch_size=-1)
    with pytest.raises(NosinkError, match="instruction must be a string"):
        encoder.encode(["a"], instruction=5)
    with pytest.raises(NosinkError, match="packing must be True or False, got 'no'"):
        encoder.encode(["a"], packing="no")
    with pytest.raises(NosinkError, match="unknown pooling"):
        Encoder.from_model(model, tokenizer, pooling="max")
    with pytest.raises(NosinkError, match="no room for text"):
        Encoder.from_model(model, tokenizer, max_length=4).encode(["a"], instruction="a long task description")


def test_tokenizer_without_pad_token_is_left_alone(model, tokenizer) -> None:
    no_pad = copy.deepcopy(tokenizer)
    no_pad.pad_token = None
    vectors = Encoder.from_model(model, no_pad, plan="mask0-bidir:k=2").encode(TEXTS)
    reference = Encoder.from_model(model, tokenizer, plan="mask0-bidir:k=2").encode(TEXTS)
    np.testing.assert_allclose(vectors, reference, atol=1e-6, rtol=0)
    assert no_pad.pad_token is None


def test_from_pretrained_loads_float32_on_cpu_and_validates_first() -> None:
    if not STORIES.exists():
        pytest.skip("../shared/models/stories260k is not available")
    encoder = Encoder.from_pretrained(str(STORIES), plan="mask0-bidir:k=2", device="cpu")
    assert encoder.base.dtype == torch.float32 and encoder.device.type == "cpu"
    assert type(encoder.base).__name__ == "LlamaModel"  # no LM head loaded
    assert "mask0-bidir:k=2" in repr(encoder)
    with pytest.raises(NosinkError, match="k=9 layers but the model has only L=5"):
        Encoder.from_pretrained(str(STORIES), plan="inplace-bidir:k=9")
    with pytest.raises(NosinkError, match="unknown dtype"):
        Encoder.from_pretrained(str(STORIES), dtype="float8")


def test_progress_bar_on_request(model, tokenizer, capsys) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Encoder.from_model(model, tokenizer).encode(TEXTS, show_progress_bar=True)
    assert "encoding" in capsys.readouterr().err


def test_whitespace_only_tokens_belong_to_no_word(model, tokenizer) -> None:
    """A lone '▁' (the tokenizer's word-start marker before an unknown piece) is not the word's first token."""
    [item] = Encoder.from_model(model, tokenizer).encode_tokens([["Zyx", "saw", "a", "dog."]])
    assert item.tokens[0] == "▁" and item.word_ids[0] is None
    assert item.word_ids[1:4] == [0, 0, 0] and item.word_ids[4] == 1
