"""Length-sorted batching: the cut of the sorted rows is the cheapest one, checked against brute force."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from nosink.inputs import TokenizedText, batches, partition


def text(ids: list[int]) -> TokenizedText:
    return TokenizedText(ids=ids, text_start=0, text_end=len(ids), offsets=None, truncated=False)


def cost(lengths: list[int], spans: list[tuple[int, int]], batch_cost: int) -> int:
    return sum((stop - start) * max(lengths[start:stop]) + batch_cost for start, stop in spans)


def all_cuts(count: int) -> list[list[tuple[int, int]]]:
    """Every cut of rows 0..count-1 into contiguous spans, by the set of boundaries (2^(count-1) of them)."""
    cuts = []
    for inner in itertools.product([False, True], repeat=count - 1):
        bounds = [0] + [i + 1 for i, cut in enumerate(inner) if cut] + [count]
        cuts.append(list(itertools.pairwise(bounds)))
    return cuts


def allowed(spans: list[tuple[int, int]], lengths: list[int], batch_size: int, max_tokens: int | None) -> bool:
    return all(
        stop - start <= batch_size
        and (stop - start == 1 or max_tokens is None or (stop - start) * lengths[start] <= max_tokens)
        for start, stop in spans
    )


@pytest.mark.parametrize("seed", range(40))
def test_partition_is_the_cheapest_allowed_cut(seed: int) -> None:
    rng = random.Random(seed)
    count = rng.randint(1, 11)
    lengths = sorted((rng.randint(1, 60) for _ in range(count)), reverse=True)
    batch_size = rng.randint(1, 6)
    max_tokens = rng.choice([None, 40, 100])
    batch_cost = rng.choice([0, 8, 64])
    spans = partition(lengths, batch_size=batch_size, max_tokens=max_tokens, batch_cost=batch_cost)

    assert [i for span in spans for i in range(*span)] == list(range(count))  # every row once, in order
    assert allowed(spans, lengths, batch_size, max_tokens)
    cheapest = min(
        cost(lengths, cut, batch_cost) for cut in all_cuts(count) if allowed(cut, lengths, batch_size, max_tokens)
    )
    assert cost(lengths, spans, batch_cost) == cheapest


def test_short_rows_after_long_ones_get_their_own_batch_and_ties_keep_batches_full() -> None:
    assert partition([40, 39, 38, 20, 19, 18, 5, 5, 5], batch_size=32, max_tokens=None, batch_cost=64) == [
        (0, 3),
        (3, 9),
    ]
    assert partition([10] * 70, batch_size=32, max_tokens=None, batch_cost=64) == [(0, 32), (32, 64), (64, 70)]
    assert partition([50, 3], batch_size=32, max_tokens=10, batch_cost=64) == [(0, 1), (1, 2)]  # an over-long row alone


def test_batches_pad_every_row_once_to_its_batch_width() -> None:
    rng = random.Random(0)
    rows = [text([rng.randint(3, 9) for _ in range(rng.randint(1, 30))]) for _ in range(50)]
    seen = []
    for batch in batches(
        rows, batch_size=8, max_tokens_per_batch=None, pad_id=0, left_padding=False, device=torch.device("cpu")
    ):
        assert batch.input_ids.shape[0] <= 8
        for row, index in enumerate(batch.indices):
            length = len(rows[index].ids)
            assert batch.input_ids[row, :length].tolist() == rows[index].ids
            assert batch.attention_mask[row].sum() == length
        seen += list(batch.indices)
    assert sorted(seen) == list(range(50))
