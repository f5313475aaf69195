"""The mechanism: vanilla outputs untouched, exact zeros in eager weights, the shared model unchanged."""

from __future__ import annotations

import pytest
import torch
import transformers
from conftest import TINY_CONFIGS, stories_model, stories_tokenizer, tiny_model, tiny_tokenizer
from test_equivalence import batch

from nosink import Encoder, LayerPattern, NosinkError, Pattern
from nosink.attention import CallContext

FAMILIES = list(TINY_CONFIGS)


def layer_outputs(base: torch.nn.Module, run) -> list[torch.Tensor]:
    """Outputs of every decoder-layer call during ``run()``, captured by temporary hooks."""
    layers = base.h if hasattr(base, "h") else base.layers
    seen: list[torch.Tensor] = []

    def hook(module, args, output):
        seen.append((output[0] if isinstance(output, tuple) else output).clone())

    handles = [layer.register_forward_hook(hook) for layer in layers]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return seen


@pytest.mark.parametrize("padding", ["left", "right"])
@pytest.mark.parametrize("family", FAMILIES)
def test_baseline_is_bitwise_vanilla(family: str, padding: str) -> None:
    base = tiny_model(family)
    ids, mask = batch([9, 5, 2], padding)
    positions = ((mask.cumsum(-1) - 1) * mask).clamp(min=0)  # docs/spec.md §1, written out again
    vanilla = base(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
    ours = Encoder.from_model(base, tiny_tokenizer()).hidden_states(ids, mask)
    assert torch.equal(ours, vanilla)


@pytest.mark.parametrize("plan", ["inplace-bidir:k=1", "inplace-back:k=2", "mask0-bidir:k=2", "mask2&bidir:k=3,k0=1"])
@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2", "gemma3_text"])
def test_inplace_plans_leave_lower_layers_bitwise_untouched(family: str, plan: str) -> None:
    base = tiny_model(family)
    ids, mask = batch([9, 5, 2], "left")
    encoder = Encoder.from_model(base, tiny_tokenizer(), plan=plan)
    vanilla = layer_outputs(base, lambda: encoder.with_plan("baseline").hidden_states(ids, mask))
    converted = layer_outputs(base, lambda: encoder.hidden_states(ids, mask))
    first_converted = next(i for i, p in enumerate(encoder.schedule.layer_patterns) if p.kind is not Pattern.CAUSAL)
    assert first_converted > 0
    for layer in range(first_converted):
        assert torch.equal(vanilla[layer], converted[layer]), f"layer {layer} changed"
    assert not torch.allclose(vanilla[first_converted], converted[first_converted])


@pytest.mark.parametrize("m", [0, 2])
@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3_text"])
def test_eager_weights_are_exactly_zero_where_the_pattern_forbids(family: str, m: int) -> None:
    base = tiny_model(family)
    ids, mask = batch([9, 6, 2], "left")
    positions = ((mask.cumsum(-1) - 1) * mask).clamp(min=0)
    plan = f"layers:nosink@{m},backward,nosink_causal@{m},bidir"
    records = Encoder.from_model(base, tiny_tokenizer(), plan=plan).attentions(ids, mask)
    assert [r.layer for r in records] == [0, 1, 2, 3]
    for record in records:
        weights = record.weights  # [B, H, T, T]
        for b in range(ids.shape[0]):
            real = mask[b].bool().nonzero().flatten().tolist()
            for i in real:
                assert torch.all(weights[b, :, i, mask[b] == 0] == 0), "padding keys must get 0"
                pi = positions[b, i]
                for j in real:
                    pj, w, kind = positions[b, j], weights[b, :, i, j], record.pattern.kind
                    hidden_sink = kind in (Pattern.NOSINK, Pattern.NOSINK_CAUSAL) and pj <= m and pi > pj
                    if hidden_sink or (kind is Pattern.BACKWARD and pj < pi):
                        assert torch.all(w == 0), (record.layer, i, j)
                    elif kind is Pattern.BIDIR:
                        assert torch.all(w > 0)
                assert torch.allclose(weights[b, :, i].sum(-1), torch.ones(weights.shape[1]))


def test_attentions_cover_every_call_of_a_branched_plan() -> None:
    base = tiny_model("llama")
    ids, mask = batch([6], "none")
    encoder = Encoder.from_model(base, tiny_tokenizer(), plan="inter-back:k=2")
    records = encoder.attentions(ids, mask)
    assert [(r.layer, str(r.pattern)) for r in records] == [(layer, p) for layer, p, _ in encoder.schedule.rows()]


def test_from_model_shares_weights_and_leaves_generate_identical() -> None:
    model = stories_model(causal_lm=True)
    tokenizer = stories_tokenizer()
    prompt = tokenizer(["Once upon a time"], return_tensors="pt")
    pointers = {name: p.data_ptr() for name, p in model.named_parameters()}
    attn_before, training_before = model.config._attn_implementation, model.training
    settings = (tokenizer.padding_side, tokenizer.pad_token)
    before = model.generate(**prompt, max_new_tokens=30, do_sample=False)

    for plan in ("mask0&bidir:k=4,k0=1", "inter-back:k=2", "extend-bidir:k=2"):
        encoder = Encoder.from_model(model, tokenizer, plan=plan)
        assert encoder.encode(["The dog ran to the park.", "Lily was happy."]).shape == (2, 64)
        encoder.attentions(prompt["input_ids"], prompt["attention_mask"])

    after = model.generate(**prompt, max_new_tokens=30, do_sample=False)
    assert torch.equal(before, after)
    assert {name: p.data_ptr() for name, p in model.named_parameters()} == pointers
    assert model.config._attn_implementation == attn_before and model.training == training_before
    assert (tokenizer.padding_side, tokenizer.pad_token) == settings


def test_a_model_in_training_mode_is_encoded_in_eval_mode_and_left_training() -> None:
    config = TINY_CONFIGS["gpt2"]()
    config.attn_pdrop = config.resid_pdrop = 0.5
    base = transformers.GPT2Model(config).eval()
    ids, mask = batch([8], "none")
    for plan in ("baseline", "mask0-bidir:k=2", "inter-bidir:k=2"):
        encoder = Encoder.from_model(base, tiny_tokenizer(), plan=plan)
        expected = encoder.hidden_states(ids, mask)
        base.train()
        assert torch.equal(encoder.hidden_states(ids, mask), expected)
        assert base.training
        assert not torch.equal(base(input_ids=ids).last_hidden_state, base(input_ids=ids).last_hidden_state)
        base.eval()


def test_unknown_family_is_refused_with_the_supported_list() -> None:
    model = tiny_model("llama")
    model.config.model_type = "falcon"
    with pytest.raises(NosinkError, match=r"not supported.*gpt2.*llama"):
        Encoder.from_model(model, tiny_tokenizer())


def test_plan_too_deep_for_the_model_is_refused_at_wrap_time() -> None:
    with pytest.raises(NosinkError, match=r"k=9.*L=4"):
        Encoder.from_model(tiny_model("llama"), tiny_tokenizer(), plan="inplace-bidir:k=9")


def test_sdpa_runs_without_a_mask_only_where_that_is_the_pattern() -> None:
    unpadded = CallContext(torch.ones(2, 6, dtype=torch.long))
    padded = CallContext(torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]]))
    bidir, causal = LayerPattern(Pattern.BIDIR), LayerPattern(Pattern.CAUSAL)
    assert unpadded.sdpa_shortcut(bidir, None) is False  # no mask, not causal
    assert unpadded.sdpa_shortcut(causal, None) is True  # SDPA's own causal mask
    assert unpadded.sdpa_shortcut(causal, 6) is True  # a window covering the batch changes nothing
    assert unpadded.sdpa_shortcut(bidir, 5) is None  # a window that cuts needs the mask
    for kind in (Pattern.BACKWARD, Pattern.NOSINK, Pattern.NOSINK_CAUSAL):
        assert unpadded.sdpa_shortcut(LayerPattern(kind), None) is None
    assert padded.sdpa_shortcut(bidir, None) is None and padded.sdpa_shortcut(causal, None) is None
    # where the shortcut is taken, the mask it replaces is indeed all-True / lower-triangular
    assert bool(unpadded.mask(bidir, None, None).all())
    assert torch.equal(unpadded.mask(causal, None, None)[0, 0], torch.ones(6, 6, dtype=torch.bool).tril())
