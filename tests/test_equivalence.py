"""Every configuration equals the independent reference of tests/reference.py (docs/spec.md §2–4)."""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import VOCAB, load_model, tiny_model, tiny_tokenizer, windowed_gemma3
from reference import Reference

from nosink import Encoder

TOLERANCE = 1e-5
PADDINGS = {"left": [10, 7, 3, 1], "right": [10, 7, 3, 1], "none": [9, 9]}


def named_cases(L: int) -> list[tuple[str, dict]]:
    """(plan string, the reference's description) for every named configuration, several k, k0 and m."""
    bidir, back = ("bidir", 0), ("backward", 0)
    cases = [
        ("baseline", {"name": "baseline"}),
        ("inplace-bidir:k=1", {"name": "inplace-bidir", "k": 1}),
        (f"inplace-bidir:k={L}", {"name": "inplace-bidir", "k": L}),
        ("inplace-back:k=2", {"name": "inplace-back", "k": 2}),
        (f"inplace-back:k={L}", {"name": "inplace-back", "k": L}),
        ("inter-bidir:k=1", {"name": "inter", "k": 1, "x": bidir}),
        ("inter-bidir:k=2", {"name": "inter", "k": 2, "x": bidir}),
        ("inter-back:k=2", {"name": "inter", "k": 2, "x": back}),
        (f"inter-back:k={L}", {"name": "inter", "k": L, "x": back}),
        ("inter-mask2:k=1", {"name": "inter", "k": 1, "x": ("nosink", 2)}),
        ("inter-bidir:k=0", {"name": "inter", "k": 0, "x": bidir}),
        ("extra-bidir:k=2", {"name": "extra", "k": 2, "x": bidir}),
        ("extra-back:k=1", {"name": "extra", "k": 1, "x": back}),
        ("extend-bidir:k=1", {"name": "extend", "k": 1, "x": bidir}),
        ("extend-bidir:k=2", {"name": "extend", "k": 2, "x": bidir}),
        ("extend-back:k=1", {"name": "extend", "k": 1, "x": back}),
        ("extend-mask0:k=1", {"name": "extend", "k": 1, "x": ("nosink", 0)}),
    ]
    for m in (0, 2):
        cases += [
            (f"mask{m}-bidir:k=2", {"name": "mask-bidir", "k": 2, "m": m}),
            (f"mask{m}-bidir:k={L}", {"name": "mask-bidir", "k": L, "m": m}),
            (f"mask{m}-for:k=2", {"name": "mask-for", "k": 2, "m": m}),
            (f"mask{m}-all:k=1", {"name": "mask-all", "k": 1, "m": m}),
            (f"mask{m}&bidir:k=3,k0=1", {"name": "mask&bidir", "k": 3, "k0": 1, "m": m}),
            (f"mask{m}&bidir:k={L},k0=2", {"name": "mask&bidir", "k": L, "k0": 2, "m": m}),
        ]
    mixed = [("causal", 0), ("backward", 0), ("nosink_causal", 1), ("bidir", 0), ("nosink", 3)][-L:]
    cases.append(
        ("layers:" + ",".join(p if not m else f"{p}@{m}" for p, m in mixed), {"name": "layers", "patterns": mixed})
    )
    return cases


@functools.cache
def model(name: str, attn: str | None = None) -> torch.nn.Module:
    return load_model(name, attn=attn)


def batch(lengths: list[int], padding: str, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids, BOS (1) first, padded on the given side: [B, T] ids and mask."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        tokens = torch.cat([torch.tensor([1]), torch.randint(4, VOCAB, (n - 1,), generator=generator)])
        span = slice(width - n, width) if padding == "left" else slice(0, n)
        ids[row, span], mask[row, span] = tokens, 1
    return ids, mask


def check_against_reference(encoder: Encoder, reference: Reference, config: dict, padding: str) -> None:
    ids, mask = batch(PADDINGS[padding], padding)
    states = encoder.hidden_states(ids, mask)  # [B, T, D]
    assert torch.isfinite(states).all(), "padded positions must stay finite"
    for row in range(ids.shape[0]):
        real = mask[row].bool()
        expected = reference.states(ids[row][real], config)  # [n, D]
        torch.testing.assert_close(states[row][real], expected, atol=TOLERANCE, rtol=0)
    if config["name"] != "baseline" and config.get("k", 1):  # the test could fail: the plan changes the output
        longest = mask.sum(-1).argmax()
        real_ids = ids[longest][mask[longest].bool()]
        baseline = reference.states(real_ids, {"name": "baseline"})
        assert (reference.states(real_ids, config) - baseline).abs().max() > 1e-3


def check_every_named_plan(base: torch.nn.Module, reference: Reference, padding: str) -> None:
    tokenizer = tiny_tokenizer()
    for plan, config in named_cases(reference.num_layers):
        encoder = Encoder.from_model(base, tokenizer, plan=plan)
        try:
            check_against_reference(encoder, reference, config, padding)
        except AssertionError as error:
            raise AssertionError(f"plan {plan}: {error}") from error


@pytest.mark.parametrize("padding", list(PADDINGS))
@pytest.mark.parametrize("model_name", ["llama", "qwen2", "gpt2", "stories260k"])
def test_every_named_plan_matches_hand_written_reference(model_name: str, padding: str) -> None:
    base = model(model_name)
    check_every_named_plan(base, Reference(base, hand_written=True), padding)


@pytest.mark.parametrize("padding", ["left", "right"])
@pytest.mark.parametrize("family", ["llama", "mistral", "qwen3", "phi3", "olmo", "olmo2", "gemma2", "gemma3_text"])
def test_every_named_plan_matches_layer_by_layer_reference(family: str, padding: str) -> None:
    """Other families: the reference runs the model's own eager layers one by one with explicit masks."""
    ours, eager = tiny_model(family), tiny_model(family, attn="eager")
    for a, b in zip(ours.parameters(), eager.parameters(), strict=True):
        assert torch.equal(a, b)
    check_every_named_plan(ours, Reference(eager, hand_written=False), padding)


@pytest.mark.parametrize(
    "plan", ["baseline", "inplace-bidir:k=4", "mask0-bidir:k=2", "inter-back:k=2", "extend-bidir:k=1"]
)
def test_sliding_window_layers_keep_their_window_when_converted(plan: str) -> None:
    """Gemma-3 sliding layers (window 3 here) attend only within |i - j| < 3, whatever the pattern."""
    ours, eager = windowed_gemma3(window=3)
    reference = Reference(eager, hand_written=False)
    config = dict(next(c for p, c in named_cases(4) if p == plan))
    encoder = Encoder.from_model(ours, tiny_tokenizer(), plan=plan)
    check_against_reference(encoder, reference, config, "left")
    wide = Reference(tiny_model("gemma3_text", attn="eager"), hand_written=False)  # window 64: no effect
    ids = batch([10], "none")[0][0]
    assert (wide.states(ids, config) - reference.states(ids, config)).abs().max() > 1e-3
