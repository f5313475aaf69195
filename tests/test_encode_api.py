"""The encode API sentence-transformers users type (issue 16), checked against sentence-transformers itself.

The oracle is a ``SentenceTransformer`` loaded from the saved folder: its ``encode`` (prompts,
``truncate_dim``, ``normalize_embeddings``, ``precision``, ``convert_to_tensor``) and ``similarity``
do their post-processing with sentence-transformers' own code, on vectors shown equal to ours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import STORIES

from nosink import Encoder, NosinkError
from nosink.inputs import instruction_prompt

st = pytest.importorskip("sentence_transformers")

TEXTS = [
    "the cat sat on the mat",
    "a little girl named lily loved to play outside in the park",
    "sun",
    "she was happy and the sun was shining on the big red ball",
    "the dog ran to the big park",
]
PROMPTS = {"query": instruction_prompt("Find stories about animals"), "document": "", "short": "story: "}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Encoder, object]:
    encoder = Encoder.from_pretrained(str(STORIES), plan="mask0-bidir:k=2", prompts=PROMPTS)
    folder = encoder.save_pretrained(Path(tmp_path_factory.mktemp("api")) / "model")
    return encoder, st.SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")


@pytest.mark.parametrize("precision", ["float32", "int8", "uint8", "binary", "ubinary"])
@pytest.mark.parametrize("truncate_dim", [None, 16])
def test_post_processing_equals_sentence_transformers(pair, precision: str, truncate_dim: int | None) -> None:
    encoder, model = pair
    options = {"precision": precision, "truncate_dim": truncate_dim, "normalize_embeddings": True}
    ours = encoder.encode(TEXTS, prompt_name="short", **options)
    theirs = model.encode(TEXTS, prompt_name="short", **options)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    if precision == "float32":
        np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
    else:  # integer codes, from the same float vectors
        np.testing.assert_array_equal(ours, theirs)


def test_tensors_single_strings_and_query_document_prompts(pair) -> None:
    encoder, model = pair
    tensor = encoder.encode(TEXTS, convert_to_tensor=True)
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (len(TEXTS), encoder.dim)
    one = encoder.encode("a cat")
    assert one.shape == (encoder.dim,)
    np.testing.assert_allclose(one, model.encode("a cat"), atol=1e-5, rtol=0)
    np.testing.assert_allclose(encoder.encode_query(TEXTS), model.encode_query(TEXTS), atol=1e-5, rtol=0)
    np.testing.assert_allclose(encoder.encode_document(TEXTS), model.encode_document(TEXTS), atol=1e-5, rtol=0)
    np.testing.assert_allclose(  # the query prompt is the instruction's template: both spellings agree
        encoder.encode(TEXTS, prompt_name="query"),
        encoder.encode(TEXTS, instruction="Find stories about animals"),
        atol=1e-6,
        rtol=0,
    )
    raw = encoder.encode(TEXTS, prompt="story: ")
    np.testing.assert_allclose(raw, encoder.encode(TEXTS, prompt_name="short"), atol=1e-6, rtol=0)
    assert not np.allclose(raw, encoder.encode(TEXTS), atol=1e-3)


@pytest.mark.parametrize("function", ["cosine", "dot", "euclidean", "manhattan"])
def test_similarity_equals_sentence_transformers(pair, function: str) -> None:
    encoder, model = pair
    vectors = encoder.encode(TEXTS)
    model.similarity_fn_name = function
    ours = Encoder.from_model(encoder.model, encoder.tokenizer, similarity_fn_name=function)
    np.testing.assert_allclose(
        ours.similarity(vectors, vectors[:2]), model.similarity(vectors, vectors[:2]), atol=1e-4, rtol=1e-5
    )


def test_mismatches_are_clear_errors(pair) -> None:
    encoder, _ = pair
    cases = [
        ({"prompt_name": "passage"}, "not one of this encoder's prompts"),
        ({"prompt_name": "query", "instruction": "x"}, "give one of instruction, prompt and prompt_name"),
        ({"normalize": True, "normalize_embeddings": False}, "disagree"),
        ({"truncate_dim": 10_000}, "more than the embedding's 64"),
        ({"truncate_dim": 0}, "positive integer"),
        ({"precision": "float16"}, "unknown precision 'float16'; use one of float32"),
    ]
    for options, message in cases:
        with pytest.raises(NosinkError, match=message):
            encoder.encode(TEXTS, **options)
    with pytest.raises(NosinkError, match="at least two texts"):
        encoder.encode(["a cat"], precision="int8")
    with pytest.raises(NosinkError, match="default_prompt_name 'nope'"):
        Encoder.from_model(encoder.model, encoder.tokenizer, prompts=PROMPTS, default_prompt_name="nope")
    with pytest.raises(NosinkError, match="cannot be compared"):
        encoder.similarity(np.ones((2, 4)), np.ones((2, 5)))
