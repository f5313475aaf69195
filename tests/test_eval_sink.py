"""Attention-sink diagnostics: averaged maps, sink scores against the uniform expectation, plots."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from conftest import CORPUS, stories_model, stories_tokenizer, tiny_model, tiny_tokenizer

from nosink import Encoder, NosinkError
from nosink.eval.sink import (
    AttentionMaps,
    attention_maps,
    detect_sinks,
    plot_attention_grid,
    plot_sink_scores,
    sink_scores,
    uniform_sink,
)

T = 8  # every CORPUS sentence has >= 8 tiny-tokenizer tokens (BOS included)
L = 4  # layers of the tiny models
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# 50 TinyStories-style sentences (34-56 stories260k tokens each), all cropped to 31 tokens below.
STORY_SENTENCES = [
    "Once upon a time, there was a little girl named Lily who loved to play with her red ball in the park.",
    "Tom had a big brown dog called Max, and every morning they ran together down the long road to the lake.",
    "One day, a small bird flew into the garden and sang a happy song for the old man who lived there.",
    "Mia wanted to bake a cake for her mom, so she got some eggs, milk and sugar from the kitchen.",
    "The sun was shining and the sky was blue, so Ben and his sister went to the beach to build a castle.",
    "A little cat named Fluffy liked to sleep on the soft bed, but one day she found a mouse under it.",
    "Sam was sad because his toy car was broken, but his dad helped him fix it with some glue and tape.",
    "In a big forest, there lived a kind bear who always shared his honey with the other animals.",
    "Lucy saw a pretty flower near the river and wanted to pick it, but her friend said it was better to let it grow.",
    "Every night, Tim looked up at the stars from his window and wished that he could fly to the moon.",
    "The old tree in the yard had a swing, and the children laughed as they went high up into the air.",
    "Anna found a shiny key on the ground and wondered what door it would open in the big old house.",
    "One morning, the farmer woke up early to feed the cows, the pigs and the chickens on his farm.",
    "Jack and Jill went up the hill to get some water, but Jack fell down and hurt his knee.",
    "The little boat sailed across the lake while the ducks swam behind it and quacked very loudly.",
    "Sara liked to draw pictures of her family, and she gave the best one to her grandma as a gift.",
    "A big storm came to the town, and everyone stayed inside and listened to the rain on the roof.",
    "Max the puppy chased a butterfly around the garden until he was too tired to run any more.",
    "Lily and her mom went to the store to buy apples, bread and a new blue hat for the winter.",
    "The brave knight rode his white horse through the dark woods to save the princess from the dragon.",
    "Tom was scared of the dark, so his dad gave him a small light to keep next to his bed at night.",
    "A tiny frog jumped from leaf to leaf in the pond, looking for a fly to eat for his lunch.",
    "Emma loved to dance, and when the music played she spun around and around until she felt dizzy.",
    "The kids built a big snowman in the yard and gave him a carrot nose and two black buttons for eyes.",
    "Ben lost his favorite ball in the tall grass, and his friend Sue helped him look for it all afternoon.",
    "One sunny day, a little rabbit hopped out of its hole to find some fresh carrots in the garden.",
    "The teacher read a funny story to the class, and all the children laughed and clapped their hands.",
    "Mom made soup for dinner, and Lily helped her cut the vegetables and stir the big pot on the stove.",
    "A kind old lady fed the birds in the park every morning with crumbs from her bag of bread.",
    "Tim wanted to be a pilot when he grew up, so he made a plane out of paper and threw it into the sky.",
    "The little fish swam fast to get away from the big shark, and it hid behind a rock in the sea.",
    "Sue got a new bike for her birthday, and she rode it up and down the street with a big smile.",
    "In the morning, the rooster crowed loudly and woke up everyone on the farm, even the lazy cat.",
    "Jake and his friends played hide and seek in the house, and Jake hid inside a big box in the closet.",
    "The monkey climbed up the tall tree to get a yellow banana, and then he ate it all by himself.",
    "Lily had a doll named Rosie, and she took her everywhere, to the park, to the shop and to bed.",
    "A little girl found a lost puppy in the rain, took it home, dried it with a towel and gave it milk.",
    "The boy kicked the ball so hard that it flew over the fence and landed in the neighbor's garden.",
    "Grandpa told the kids a story about a magic tree that could talk and grant three wishes.",
    "One day, the sun did not come out, so the animals in the forest went to look for it together.",
    "Mia and her brother planted seeds in the garden, and after many days small green plants began to grow.",
    "The happy dog wagged its tail when its friend came home from school and threw a stick for it.",
    "Tom saw a big truck on the road and waved at the driver, who honked the horn and waved back.",
    "The princess lived in a tall castle, and every day she looked out of the window at the green hills.",
    "A small ant carried a big crumb back to its home, and the other ants cheered and helped it.",
    "Lucy spilled her juice on the floor, and she felt bad, but her mom said it was okay and cleaned it up.",
    "The children went on a picnic by the lake and ate sandwiches, cookies and sweet red grapes.",
    "Ben wanted to see the owl that lived in the barn, so he waited quietly until it came out at night.",
    "On a cold winter day, Anna wore her warm coat and her red boots and went outside to play in the snow.",
    "The little train went up the big hill, saying I think I can, I think I can, until it reached the top.",
]
# stories260k SOURCE.md, "Attention on token 0": layers 0-4, 50 sentences of about 31 tokens.
SOURCE_SINK = [0.068, 0.112, 0.111, 0.111, 0.189]
SOURCE_UNIFORM = 0.101


@pytest.fixture(scope="module")
def tiny() -> Encoder:
    return Encoder(tiny_model("llama"), tiny_tokenizer())


@pytest.fixture(scope="module")
def baseline_maps(tiny: Encoder) -> AttentionMaps:
    return attention_maps(tiny, CORPUS, tokens=T)


def hand_maps(maps: np.ndarray, patterns: list[str]) -> AttentionMaps:
    n = len(maps)
    return AttentionMaps(maps, list(range(n)), patterns, ["main"] * n, n_texts=1, tokens=maps.shape[-1])


# ---------------------------------------------------------------------------- maps


def test_baseline_maps_are_lower_triangular_with_unit_rows(baseline_maps: AttentionMaps) -> None:
    maps = baseline_maps.maps  # [L, T, T]
    assert maps.shape == (L, T, T) and maps.dtype == np.float32
    assert (baseline_maps.layers, baseline_maps.patterns) == (list(range(L)), ["causal"] * L)
    assert baseline_maps.branches == ["main"] * L and baseline_maps.n_texts == len(CORPUS)
    assert np.all(np.triu(maps, k=1) == 0)
    assert np.all(np.tril(maps)[:, 1:, 0] > 0)
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)


def test_maps_equal_huggingface_eager_attentions() -> None:
    model, tokenizer = tiny_model("llama", attn="eager"), tiny_tokenizer()
    maps = attention_maps(Encoder(model, tokenizer), CORPUS, tokens=T, batch_size=2)  # several batches
    ids = torch.tensor([tokenizer(text)["input_ids"][:T] for text in CORPUS])  # [N, T]
    with torch.no_grad():
        reference = model(ids, output_attentions=True).attentions  # L x [N, H, T, T]
    expected = np.stack([a.mean(dim=(0, 1)).numpy() for a in reference])  # [L, T, T]
    np.testing.assert_allclose(maps.maps, expected, atol=1e-6)


def test_mask0_bidir_hides_token0_from_later_rows(tiny: Encoder) -> None:
    converted = attention_maps(tiny.with_plan("mask0-bidir:k=2"), CORPUS, tokens=T)
    assert converted.patterns == ["causal", "causal", "nosink", "nosink"]
    full = attention_maps(tiny.with_plan(f"mask0-bidir:k={L}"), CORPUS, tokens=T)
    for maps, layers in ((converted.maps[2:], 2), (full.maps, L)):
        assert len(maps) == layers
        assert np.all(maps[:, 1:, 0] == 0)  # column 0 below the diagonal: hidden
        assert np.all(maps[:, 0, :] > 0)  # token 0's own row attends to every token
        assert np.all(maps[:, 1:, 1:] > 0)  # every other pair is allowed
        np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)
    scores = sink_scores(full)
    assert [(s.score, s.uniform, s.ratio) for s in scores] == [(0.0, 0.0, None)] * L
    assert detect_sinks(scores, threshold=1e-9) == []


def test_branched_plan_labels_every_call(tiny: Encoder) -> None:
    maps = attention_maps(tiny.with_plan("inter-back:k=2"), CORPUS, tokens=T)
    assert maps.maps.shape == (6, T, T)
    assert maps.layers == [0, 1, 2, 3, 2, 3]
    assert maps.branches == ["shared", "shared", "A", "A", "B", "B"]
    assert maps.patterns == ["causal", "causal", "backward", "backward", "causal", "causal"]
    assert np.all(np.tril(maps.maps[2], k=-1) == 0)  # backward: keys j >= i only
    assert maps.call_title(2) == "layer 2 (backward, A)"


def test_texts_are_filtered_cropped_and_capped(tiny: Encoder) -> None:
    lengths = [len(tiny.tokenizer(text)["input_ids"]) for text in CORPUS]  # [12, 13, 11, 8, 9]
    with pytest.warns(UserWarning, match=r"2 text\(s\) shorter than tokens=11 tokens"):  # said, not silent
        maps = attention_maps(tiny, CORPUS, tokens=11)
    assert maps.n_texts == sum(n >= 11 for n in lengths) == 3 and maps.tokens == 11
    assert attention_maps(tiny, CORPUS, tokens=T, max_texts=2).n_texts == 2
    with pytest.raises(NosinkError, match=r"no text has at least tokens=14 tokens \(the longest of 5 has 13"):
        attention_maps(tiny, CORPUS, tokens=14)
    with pytest.raises(NosinkError, match="tokens must be >= 2"):
        attention_maps(tiny, CORPUS, tokens=1)
    with pytest.raises(NosinkError, match="max_texts must be a positive integer"):
        attention_maps(tiny, CORPUS, max_texts=0)
    with pytest.raises(NosinkError, match="single string"):
        attention_maps(tiny, CORPUS[0])


# ---------------------------------------------------------------------------- scores


@pytest.mark.parametrize(
    ("pattern", "tokens", "expected"),
    [
        ("causal", 4, (1 / 2 + 1 / 3 + 1 / 4) / 3),
        ("causal", 31, SOURCE_UNIFORM),
        ("bidir", 4, 1 / 4),
        ("backward", 4, 0.0),
        ("nosink", 4, 0.0),
        ("nosink@2", 6, 0.0),
        ("nosink_causal", 4, 0.0),
    ],
)
def test_uniform_expectation(pattern: str, tokens: int, expected: float) -> None:
    assert uniform_sink(pattern, tokens) == pytest.approx(expected, abs=5e-4 if tokens == 31 else 1e-12)


def test_hand_built_maps_score_ratio_and_detection() -> None:
    sink = np.zeros((4, 4), dtype=np.float32)
    sink[:, 0] = 1.0  # every row puts everything on key 0
    causal_uniform = np.tril(np.ones((4, 4))) / np.arange(1, 5)[:, None]  # row i: 1/(i+1) on keys 0..i
    bidir_uniform = np.full((4, 4), 1 / 4)
    scores = sink_scores(hand_maps(np.stack([sink, causal_uniform, bidir_uniform]), ["causal", "causal", "bidir"]))
    assert scores[0].score == 1.0
    assert scores[0].ratio == pytest.approx(1 / ((1 / 2 + 1 / 3 + 1 / 4) / 3))
    assert [s.ratio for s in scores[1:]] == [pytest.approx(1.0), pytest.approx(1.0)]
    assert detect_sinks(scores) == [0]
    assert detect_sinks(scores, threshold=0.99) == [0, 1, 2]
    with pytest.raises(NosinkError, match="threshold"):
        detect_sinks(scores, threshold=0)


def test_scores_as_table_and_json(baseline_maps: AttentionMaps) -> None:
    scores = sink_scores(baseline_maps)
    rows = scores.as_table().splitlines()
    assert rows[0].split() == ["call", "layer", "pattern", "branch", "score", "uniform", "ratio"]
    assert len(rows) == L + 1 and rows[1].split()[:4] == ["0", "0", "causal", "main"]
    data = json.loads(json.dumps(scores.to_json()))
    assert data[0].keys() == {"call", "layer", "pattern", "branch", "score", "uniform", "ratio"}
    assert data[0]["score"] == pytest.approx(float(baseline_maps.maps[0, 1:, 0].mean()))


# ---------------------------------------------------------------------------- stories260k


def test_stories260k_matches_the_measured_sink_numbers() -> None:
    """SOURCE.md measured 50 other sentences of about 31 tokens; cropping ours to 31 gives the same rows.

    Our sentences agree to within 0.006 per layer; 0.02 leaves room for rounding and platform
    noise, and is still below the gaps that matter (layer 4 is 0.08 above the others). A
    templated set with identical openings was off by 0.04 in layer 3, so keep the sentences varied.
    """
    encoder = Encoder(stories_model(), stories_tokenizer())
    maps = attention_maps(encoder, STORY_SENTENCES, tokens=31)
    assert maps.n_texts == 50
    scores = sink_scores(maps)
    assert [s.uniform for s in scores] == [pytest.approx(SOURCE_UNIFORM, abs=5e-4)] * 5
    assert [s.score for s in scores] == pytest.approx(SOURCE_SINK, abs=0.02)
    assert detect_sinks(scores, threshold=1.5) == [4]  # layer 4 ~1.85x; the others <= 1.15x
    assert detect_sinks(scores) == []  # SOURCE.md: no layer is a strong sink


# ---------------------------------------------------------------------------- plots


def test_plots_are_written(tiny: Encoder, baseline_maps: AttentionMaps, tmp_path) -> None:
    converted = attention_maps(tiny.with_plan("inter-back:k=2"), CORPUS, tokens=T)
    grid = plot_attention_grid({"baseline": baseline_maps, "inter-back:k=2": converted}, tmp_path / "grid.png")
    subset = plot_attention_grid({"baseline": baseline_maps}, tmp_path / "top.png", title="top", layers=[2, 3])
    scores = {"baseline": sink_scores(baseline_maps), "inter-back:k=2": sink_scores(converted)}
    bars = plot_sink_scores(scores, tmp_path / "scores.png")
    for path in (grid, subset, bars):
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    with pytest.raises(NosinkError, match="none of layers"):
        plot_attention_grid({"baseline": baseline_maps}, tmp_path / "none.png", layers=[9])


def test_plots_need_matplotlib(baseline_maps: AttentionMaps, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes the import fail
    with pytest.raises(NosinkError, match=r'pip install "nosink\[eval\]"'):
        plot_attention_grid({"baseline": baseline_maps}, tmp_path / "grid.png")
    with pytest.raises(NosinkError, match=r'pip install "nosink\[eval\]"'):
        plot_sink_scores({"baseline": sink_scores(baseline_maps)}, tmp_path / "scores.png")
    assert not list(tmp_path.iterdir())
