"""Instructions are tokenized with their text as one string; the instruction's tokens are found by offsets.

The oracle is the tokenizer itself on ``"Instruct: …\\nQuery: " + text`` and the released code's
prompt count ``len(tokenizer(prompt.strip()).input_ids)`` (BOS included), written out here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import real_tokenizer, stories_model, stories_tokenizer, tiny_tokenizer

from nosink import Encoder, NosinkError
from nosink.inputs import INSTRUCTION_TEMPLATE, TextTokenizer

TASK = "Retrieve semantically similar text."
PROMPT = INSTRUCTION_TEMPLATE.format(instruction=TASK)
TEXTS = [
    "A man is playing a guitar.",
    "The dog ran.",
    "2 women are slicing onions",
    "Über café naïve résumé",
    "(parenthesis) first",
]


def tokenizer_named(name: str) -> object:
    return {"tiny": tiny_tokenizer, "stories260k": stories_tokenizer}.get(name, lambda: real_tokenizer(name))()


@pytest.mark.parametrize("name", ["stories260k", "smollm2-135m-instruct", "gemma-3-270m"])
def test_rows_are_the_joined_string_and_the_prompt_is_what_the_released_code_drops(name: str) -> None:
    """SentencePiece (stories260k, Gemma-3) and byte-level BPE (SmolLM2): same ids as one string."""
    tokenizer = tokenizer_named(name)
    prompt_length = len(tokenizer(PROMPT.strip())["input_ids"])
    rows = TextTokenizer(tokenizer, max_length=512, instruction=TASK)(TEXTS)
    for text, row in zip(TEXTS, rows, strict=True):
        assert row.ids == tokenizer(PROMPT + text)["input_ids"], text
        assert row.text_start == row.prompt_length == prompt_length, text


def test_the_template_space_goes_with_the_text_merged_or_alone() -> None:
    """The separate form left a lone space token that the model never saw there. As one string, byte-level BPE
    merges the space into the first word ('ĠA'); stories260k's small vocabulary has no '▁A', so '▁' stays alone
    and, as in the released code's count, belongs to the text."""
    for name, expected in [("smollm2-135m-instruct", ["ĠA"]), ("stories260k", ["▁", "A"])]:
        tokenizer = tokenizer_named(name)
        row = TextTokenizer(tokenizer, max_length=512, instruction=TASK)(["A man is playing a guitar."])[0]
        tokens = tokenizer.convert_ids_to_tokens(row.ids)
        assert tokens[row.text_start : row.text_start + len(expected)] == expected, name
        assert tokens[row.text_start - 1] == ":", name
    smollm = real_tokenizer("smollm2-135m-instruct")
    apart = smollm.convert_ids_to_tokens(smollm(PROMPT, add_special_tokens=False)["input_ids"])
    assert apart[-1] == "Ġ"  # what the separate form put before the text


def test_a_leading_space_in_the_text() -> None:
    """Byte-level BPE splits ':  A' into ':', 'Ġ', 'ĠA': the lone space goes with the text, as the released count."""
    tokenizer = real_tokenizer("smollm2-135m-instruct")
    row = TextTokenizer(tokenizer, max_length=512, instruction=TASK)([" A man."], offsets=True)[0]
    assert row.ids == tokenizer(PROMPT + " A man.")["input_ids"]
    assert row.text_start == len(tokenizer(PROMPT.strip())["input_ids"])
    assert tokenizer.decode(row.ids[row.text_start : row.text_end]) == "  A man."
    assert row.offsets == [(0, 0), (0, 2), (2, 6), (6, 7)]  # spans within the text: the template's space is (0, 0)


def test_offsets_are_within_the_text_and_encode_tokens_maps_words() -> None:
    tokenizer = stories_tokenizer()
    encoder = Encoder.from_model(stories_model(), tokenizer)
    words = ["The", "dog", "ran", "to", "Lily"]
    with_instruction = encoder.encode_tokens([words], instruction=TASK)[0]
    without = encoder.encode_tokens([words])[0]
    assert with_instruction.word_ids == without.word_ids and set(without.word_ids) - {None} == {0, 1, 2, 3, 4}
    assert with_instruction.offsets == without.offsets
    text = " ".join(words)
    for (start, end), token in zip(with_instruction.offsets, with_instruction.tokens, strict=True):
        assert text[start:end].strip() == tokenizer.convert_tokens_to_string([token]).strip()


def test_from_ids_keeps_the_instruction_apart() -> None:
    """Token ids given directly cannot be tokenized with the instruction's characters: the separate form."""
    tokenizer = stories_tokenizer()
    rows = TextTokenizer(tokenizer, max_length=512, instruction=TASK)
    body = tokenizer("The dog ran.", add_special_tokens=False)["input_ids"]
    row = rows.from_ids(body)
    apart = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    assert row.ids == [tokenizer.bos_token_id, *apart, *body]
    assert row.text_start == 1 + len(apart)
    assert row.prompt_length == len(tokenizer(PROMPT.strip())["input_ids"])  # the released count, as for text


def test_truncation_keeps_the_instruction_and_cuts_the_text() -> None:
    tokenizer = stories_tokenizer()
    full = TextTokenizer(tokenizer, max_length=512, instruction=TASK)([TEXTS[0]])[0]
    short = TextTokenizer(tokenizer, max_length=full.text_start + 3, instruction=TASK)([TEXTS[0]])[0]
    assert short.truncated and not full.truncated
    assert short.ids == full.ids[: full.text_start + 3]
    assert (short.text_start, short.text_end) == (full.text_start, full.text_start + 3)


@pytest.mark.parametrize("plan", ["baseline", "mask0-bidir:k=2"])
def test_reference_mean_averages_bos_in_without_an_instruction_and_drops_the_prompt_with_one(plan: str) -> None:
    """The released Pooler('avg'): every real token after prompt_length, prompt_length = None without instruction."""
    tokenizer = stories_tokenizer()
    encoder = Encoder.from_model(stories_model(), tokenizer, plan=plan, pooling="reference_mean")
    documents = encoder.encode(TEXTS, batch_size=2)
    queries = encoder.encode(TEXTS, instruction=TASK, batch_size=2)
    prompt_length = len(tokenizer(PROMPT.strip())["input_ids"])
    for text, document, query in zip(TEXTS, documents, queries, strict=True):
        doc_states = encoder.hidden_states(torch.tensor([tokenizer(text)["input_ids"]]))[0]  # [n, D], BOS first
        np.testing.assert_allclose(document, doc_states.mean(0).numpy(), atol=1e-5, rtol=0)
        query_states = encoder.hidden_states(torch.tensor([tokenizer(PROMPT + text)["input_ids"]]))[0]
        np.testing.assert_allclose(query, query_states[prompt_length:].mean(0).numpy(), atol=1e-5, rtol=0)
    plain = encoder.with_plan(plan, pooling="mean").encode(TEXTS)
    assert np.abs(plain - documents).max() > 1e-3  # the default leaves BOS out


def test_reference_mean_on_packed_rows_equals_padded_rows() -> None:
    tokenizer = stories_tokenizer()
    encoder = Encoder.from_model(stories_model(), tokenizer, plan="mask0-bidir:k=2", pooling="reference_mean")
    padded = encoder.encode(TEXTS, instruction=TASK, batch_size=5)
    packed = encoder.encode(TEXTS, instruction=TASK, batch_size=5, packing=True)
    np.testing.assert_allclose(packed, padded, atol=1e-5, rtol=0)


def eos_tokenizer() -> object:
    """stories260k's tokenizer with a post-processor that also appends EOS ('<s> $A </s>')."""
    from tokenizers import processors

    tokenizer = stories_tokenizer()
    backend = tokenizer.backend_tokenizer
    specials = [("<s>", 1), ("</s>", 2)]
    backend.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=specials)
    return tokenizer


def test_with_an_eos_tokenizer_reference_mean_drops_what_the_released_count_drops() -> None:
    """The released prompt length counts EOS too (len(tokenizer.encode(prompt.strip()))), one token past the
    instruction: reference_mean follows it; mean keeps the text's own tokens."""
    tokenizer = eos_tokenizer()
    assert tokenizer("a")["input_ids"][-1] == tokenizer.eos_token_id
    released = len(tokenizer(PROMPT.strip())["input_ids"])
    row = TextTokenizer(tokenizer, max_length=512, instruction=TASK)([TEXTS[0]])[0]
    assert row.ids == tokenizer(PROMPT + TEXTS[0])["input_ids"] and row.ids[-1] == tokenizer.eos_token_id
    assert row.prompt_length == released == row.text_start + 1
    encoder = Encoder.from_model(stories_model(), tokenizer, pooling="reference_mean")
    states = encoder.hidden_states(torch.tensor([row.ids]))[0]  # [n, D]
    np.testing.assert_allclose(encoder.encode(TEXTS[:1], instruction=TASK)[0], states[released:].mean(0), atol=1e-5)
    mean = encoder.with_plan("baseline", pooling="mean").encode(TEXTS[:1], instruction=TASK)[0]
    np.testing.assert_allclose(mean, states[row.text_start : row.text_end].mean(0), atol=1e-5)


class NoOffsets:
    """A tokenizer without character offsets (as a slow one): delegates, but reports is_fast False and refuses them."""

    is_fast = False

    def __init__(self, tokenizer: object) -> None:
        self.tokenizer = tokenizer

    def __call__(self, *args: object, return_offsets_mapping: bool = False, **kwargs: object) -> object:
        assert not return_offsets_mapping, "a slow tokenizer has no offsets"
        return self.tokenizer(*args, **kwargs)


@pytest.mark.parametrize("name", ["stories260k", "smollm2-135m-instruct"])
def test_without_offsets_the_instruction_is_split_by_the_released_count(name: str) -> None:
    tokenizer = tokenizer_named(name)
    slow = TextTokenizer(NoOffsets(tokenizer), max_length=512, instruction=TASK)(TEXTS)
    fast = TextTokenizer(tokenizer, max_length=512, instruction=TASK)(TEXTS)
    for without, with_offsets in zip(slow, fast, strict=True):
        assert (without.ids, without.text_start, without.prompt_length) == (
            with_offsets.ids,
            with_offsets.text_start,
            with_offsets.prompt_length,
        )


def test_truncation_that_leaves_only_the_separating_space_is_refused() -> None:
    """stories260k tokenizes ': A' as ':', '▁', 'A': one text token left would be the template's space alone."""
    tokenizer = stories_tokenizer()
    full = TextTokenizer(tokenizer, max_length=512, instruction=TASK)(["A man is playing a guitar."])[0]
    assert tokenizer.convert_ids_to_tokens(full.ids[full.text_start]) == "▁"
    with pytest.raises(NosinkError, match="leaves no room for text"):
        TextTokenizer(tokenizer, max_length=full.text_start + 1, instruction=TASK)(["A man is playing a guitar."])
    two = TextTokenizer(tokenizer, max_length=full.text_start + 2, instruction=TASK)(["A man is playing a guitar."])[0]
    assert two.ids == full.ids[: full.text_start + 2] and two.truncated
