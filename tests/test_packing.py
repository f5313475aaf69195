"""Packed batches (several texts per row): every text must come out exactly as if it ran alone."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from conftest import CORPUS, VOCAB, stories_model, stories_tokenizer, tiny_model, tiny_tokenizer, windowed_gemma3
from reference import Reference, mask_matrix
from test_equivalence import model, named_cases

from nosink import Encoder
from nosink.inputs import PackedBatch, TokenizedText, pack_rows, packed_batches
from nosink.patterns import LayerPattern, build_mask

TOLERANCE = 1e-5
CPU = torch.device("cpu")


def random_rows(lengths: list[int], seed: int = 3) -> list[TokenizedText]:
    """Rows of random ids with BOS (1) first; the text is everything after BOS."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for n in lengths:
        ids = [1, *torch.randint(4, VOCAB, (n - 1,), generator=generator).tolist()]
        rows.append(TokenizedText(ids, min(1, n - 1), n, None, False))
    return rows


def only_batch(rows: list[TokenizedText], *, width: int) -> PackedBatch:
    (batch,) = packed_batches(rows, batch_size=len(rows), max_tokens_per_batch=None, width=width, pad_id=0, device=CPU)
    return batch


@pytest.mark.parametrize("seed", range(20))
def test_pack_rows_places_every_item_once_in_balanced_rows(seed: int) -> None:
    rng = random.Random(seed)
    lengths = sorted((rng.randint(1, 60) for _ in range(rng.randint(1, 40))), reverse=True)
    width = rng.choice([8, 32, 100])
    layout = pack_rows(lengths, width)
    assert sorted(i for row in layout for i in row) == list(range(len(lengths)))
    assert len(layout) == -(-sum(lengths) // max(width, lengths[0]))
    fills = [sum(lengths[i] for i in row) for row in layout]
    assert max(fills) - min(fills) <= lengths[0]  # the fullest row got its last item while it was the emptiest


def test_packed_batches_keep_the_text_and_token_limits() -> None:
    rows = random_rows([9, 3, 12, 5, 5, 7, 2, 11, 4])
    batches = list(packed_batches(rows, batch_size=4, max_tokens_per_batch=20, width=16, pad_id=0, device=CPU))
    seen = [i for batch in batches for i in batch.indices]
    assert sorted(seen) == list(range(len(rows)))
    for batch in batches:
        lengths = [len(rows[i].ids) for i in batch.indices]
        assert len(lengths) <= 4
        assert sum(lengths) <= 20 or len(lengths) == 1
        assert int(batch.attention_mask.sum()) == sum(lengths)  # every token once, nothing else


def test_per_text_gathers_each_text_back_from_its_row() -> None:
    rows = random_rows([5, 3, 4, 2, 6])
    batch = only_batch(rows, width=10)
    ids, _, _, _ = batch.per_text(batch.input_ids[..., None])  # the ids stand in for states: [N, T, 1]
    for text, index in enumerate(batch.indices):
        n = len(rows[index].ids)
        assert ids[text, :n, 0].tolist() == rows[index].ids
        assert batch.text_real[text].sum() == n


@pytest.mark.parametrize("pattern", ["causal", "backward", "bidir", "nosink", "nosink@2", "nosink_causal@1"])
def test_packed_mask_is_the_block_diagonal_of_the_spec_masks(pattern: str) -> None:
    """Oracle: the spec §2 masks of every text (two loops each), placed on the diagonal; padding sees only itself."""
    rows = random_rows([6, 4, 3, 2, 5, 1])
    batch = only_batch(rows, width=12)
    parsed = LayerPattern.parse(pattern)
    mask = build_mask(parsed, batch.attention_mask, segment_ids=batch.segment_ids)  # [R, 1, W, W]
    width = batch.input_ids.shape[1]
    for r in range(batch.input_ids.shape[0]):
        expected = torch.eye(width, dtype=torch.bool)  # padding rows keep themselves only
        segments = batch.segment_ids[r].tolist()
        start = 0
        while start < width and segments[start] >= 0:
            n = segments.count(segments[start])
            expected[start : start + n, start : start + n] = mask_matrix(parsed.kind.value, parsed.m, n)
            start += n
        assert torch.equal(mask[r, 0], expected), f"row {r}"


def check_packed_against_reference(
    base: torch.nn.Module, reference: Reference, lengths: list[int], *, width: int = 16
) -> None:
    rows = random_rows(lengths)
    batch = only_batch(rows, width=width)
    assert batch.input_ids.shape[0] < len(lengths), "the test must put several texts in one row"
    for plan, config in named_cases(reference.num_layers):
        encoder = Encoder.from_model(base, tiny_tokenizer(), plan=plan)
        states, _, _, _ = batch.per_text(encoder._states(batch))  # [N, T, D]
        for text, index in enumerate(batch.indices):
            n = len(rows[index].ids)
            expected = reference.states(torch.tensor(rows[index].ids), config)  # [n, D], the text alone
            try:
                torch.testing.assert_close(states[text, :n], expected, atol=TOLERANCE, rtol=0)
            except AssertionError as error:
                raise AssertionError(f"plan {plan}, text of {n} tokens: {error}") from error


@pytest.mark.parametrize("model_name", ["llama", "gpt2", "stories260k"])
def test_every_named_plan_on_packed_rows_matches_each_text_alone(model_name: str) -> None:
    """Hand-written reference, each text run alone (positions 0..n-1), against texts packed 2-4 per row."""
    base = model(model_name)
    check_packed_against_reference(base, Reference(base, hand_written=True), [10, 7, 6, 3, 1, 9, 4, 2])


def test_a_text_longer_than_the_pack_width_and_rows_wider_than_it() -> None:
    """Width 8: the 20-token text sets the row width, and the 9-token texts share rows wider than 8."""
    base = model("llama")
    check_packed_against_reference(base, Reference(base, hand_written=True), [20, 9, 9, 3], width=8)


def test_packed_rows_through_eager_attention_with_soft_capping() -> None:
    """Gemma-2 caps attention logits, so nosink runs its eager function with the packed mask made additive."""
    ours, eager = tiny_model("gemma2"), tiny_model("gemma2", attn="eager")
    assert ours.config.attn_logit_softcapping is not None
    check_packed_against_reference(ours, Reference(eager, hand_written=False), [7, 5, 4, 3, 2])


@pytest.mark.parametrize("pooling", ["mean", "weighted_mean", "last", "first"])
def test_packed_pooling_matches_pooling_the_reference_states_by_hand(pooling: str) -> None:
    """Pooled vectors from packed rows against the reference states of each text alone, pooled here."""
    base = model("stories260k")
    reference = Reference(base, hand_written=True)
    rows = random_rows([12, 9, 7, 5, 3, 2])  # text = every token after BOS
    encoder = Encoder.from_model(base, stories_tokenizer(), plan="mask0&bidir:k=4,k0=1", pooling=pooling)
    pooled = encoder.embed_rows(rows, packing=True, batch_size=len(rows))
    config = {"name": "mask&bidir", "k": 4, "k0": 1, "m": 0}
    for index, row in enumerate(rows):
        states = reference.states(torch.tensor(row.ids), config)  # [n, D]
        text = states[row.text_start : row.text_end]  # [n - 1, D]
        weights = torch.arange(1, len(text) + 1, dtype=torch.float32)[:, None]  # [n - 1, 1]
        expected = {
            "mean": text.mean(0),
            "weighted_mean": (weights * text).sum(0) / weights.sum(),
            "last": states[-1],
            "first": states[0],
        }[pooling]
        np.testing.assert_allclose(pooled[index], expected.numpy(), atol=TOLERANCE, rtol=0)


def test_packed_sliding_window_counts_positions_within_each_text() -> None:
    """Gemma-3 with window 3: the window applies inside each text of a packed row."""
    ours, eager = windowed_gemma3(window=3)
    check_packed_against_reference(ours, Reference(eager, hand_written=False), [8, 6, 5, 3, 2])


@pytest.mark.parametrize("pooling", ["mean", "weighted_mean", "last", "first"])
@pytest.mark.parametrize("plan", ["baseline", "mask0&bidir:k=4,k0=1", "inter-back:k=2", "extend-bidir:k=1"])
def test_encode_with_packing_equals_padded_encode(plan: str, pooling: str) -> None:
    encoder = Encoder.from_model(stories_model(), stories_tokenizer(), plan=plan, pooling=pooling)
    rng = np.random.default_rng(0)
    words = " ".join(CORPUS).split()
    texts = [" ".join(rng.choice(words, rng.integers(1, 25))) for _ in range(40)]
    padded = encoder.encode(texts, normalize=True)
    packed = encoder.encode(texts, normalize=True, packing=True, batch_size=16)
    np.testing.assert_allclose(packed, padded, atol=TOLERANCE, rtol=0)


def test_packing_with_an_instruction_pools_the_same_text_tokens() -> None:
    encoder = Encoder.from_model(stories_model(), stories_tokenizer(), plan="mask0-bidir:k=3")
    texts = CORPUS * 3
    padded = encoder.encode(texts, instruction="find the story", normalize=True)
    packed = encoder.encode(texts, instruction="find the story", normalize=True, packing=True)
    np.testing.assert_allclose(packed, padded, atol=TOLERANCE, rtol=0)
