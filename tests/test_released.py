"""Reference mode equals the authors' released code, on fixtures made by running that code.

``tests/fixtures/released/make_fixtures.py`` ran the released code (bigai-nlco/Look-Both-Ways-and-No-Sink
@ 40ed5a7, transformers 4.44.2, float32, eager) on five tiny random models and stored its final states and
pooled vectors for every configuration of its arguments, with ``res_connect`` 3, None, 1 and 2, and the
token ids its evaluation path gives for "instruction prompt + text" with three tokenizers. See that
folder's README for how they were made; nothing of the released code is in this project.
"""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import STORIES, stories_tokenizer
from transformers import AutoModel, AutoTokenizer

from nosink import Encoder, NosinkError, Plan
from nosink.inputs import TextTokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "released"
META = json.loads((FIXTURES / "meta.json").read_text())
TOKENS = json.loads((FIXTURES / "tokens.json").read_text())
ARGUMENTS = ("architecture", "mask_type", "num_unsink_layers", "num_bidir_layers", "unsink_layers", "bidir_layers")
RUNS = [c for c in META["configurations"] if c["status"] == "ok"]
FAILS = [c for c in META["configurations"] if c["status"] != "ok"]
TOLERANCE = 1e-5


@functools.cache
def states() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "states.npz") as archive:
        return dict(archive)


@functools.cache
def released_weights(family: str) -> torch.nn.Module:
    """The tiny model the released code ran, loaded by this transformers; eager, as the fixtures were made."""
    return AutoModel.from_pretrained(FIXTURES / family, attn_implementation="eager", dtype=torch.float32).eval()


def reference_plan(config: dict) -> Plan:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MASK3 runs as BACK, with a warning (tested in test_plan.py)
        return Plan.from_reference(**{name: config[name] for name in ARGUMENTS}, res_connect=config["res_connect"])


def real_token_diff(got: torch.Tensor, expected: np.ndarray, mask: np.ndarray) -> float:
    real = torch.as_tensor(mask).bool()  # [B, T]
    return float((got[real] - torch.as_tensor(expected)[real]).abs().max())


def test_the_fixtures_cover_every_architecture_and_residual() -> None:
    assert len(RUNS) >= 60
    assert {c["architecture"] for c in RUNS} == {"NONE", "INPLACE", "INTER", "EXTRA", "EXTEND"}
    assert {c["res_connect"] for c in RUNS} == {None, 1, 2, 3}
    assert set(META["families"]) == {"llama", "mistral", "qwen2", "phi3", "olmo"}


@pytest.mark.parametrize("family", sorted(META["families"]))
def test_reference_mode_states_equal_the_released_code(family: str) -> None:
    """Final-norm states of every configuration the released code runs, on its right-padded documents batch."""
    model, data = released_weights(family), states()
    ids = torch.as_tensor(data[f"{family}/input_ids_doc"])  # [4, 16]
    mask = data[f"{family}/attention_mask_doc"]
    assert not mask.all(), "the batch must have padding"
    encoder = Encoder.from_model(model, stories_tokenizer())
    worst = {}
    for config in RUNS:
        got = encoder.with_plan(reference_plan(config)).hidden_states(ids, torch.as_tensor(mask))  # [4, 16, 32]
        worst[config["key"]] = real_token_diff(got, data[f"{family}/{config['key']}/hidden_doc"], mask)
    bad = {key: diff for key, diff in worst.items() if diff > TOLERANCE}
    assert not bad, f"{family}: {bad}"


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_the_fixtures_can_tell_the_residual_apart(family: str) -> None:
    """The check above can fail: the paper's plan (no residual) misses the released states by far."""
    model, data = released_weights(family), states()
    ids, mask = torch.as_tensor(data[f"{family}/input_ids_doc"]), data[f"{family}/attention_mask_doc"]
    encoder = Encoder.from_model(model, stories_tokenizer())
    for key, plan in [("INPLACE-MASK0-u2-b2-res3", "mask0&bidir:k=4,k0=2"), ("NONE-MASK0-u0-b0-res3", "baseline")]:
        got = encoder.with_plan(plan).hidden_states(ids, torch.as_tensor(mask))
        assert real_token_diff(got, data[f"{family}/{key}/hidden_doc"], mask) > 0.1
    assert Plan.parse("mask0&bidir:k=4,k0=2,res=none") == reference_plan(
        next(c for c in RUNS if c["key"] == "INPLACE-MASK0-u2-b2-resNone")
    )


def test_released_windows_apply_to_causal_layers_only() -> None:
    """Mistral's window (4) is in the fixtures: reference mode drops it in converted layers only."""
    model, data = released_weights("mistral"), states()
    assert model.config.sliding_window == 4
    ids, mask = torch.as_tensor(data["mistral/input_ids_doc"]), data["mistral/attention_mask_doc"]
    encoder = Encoder.from_model(model, stories_tokenizer())
    key = "INPLACE-MASK0-u2-b2-resNone"
    windowed = encoder.with_plan("mask0&bidir:k=4,k0=2").hidden_states(ids, torch.as_tensor(mask))
    assert real_token_diff(windowed, data[f"mistral/{key}/hidden_doc"], mask) > 1e-3  # nosink's default keeps it


@pytest.mark.parametrize("family", sorted(META["families"]))
def test_reference_mode_pooled_vectors_equal_the_released_code(family: str) -> None:
    """End to end from texts: natural tokenization, the plan, and reference_mean pooling (documents and queries)."""
    if not STORIES.exists():
        pytest.skip("../shared/models/stories260k is not available")
    model, data = released_weights(family), states()
    tokenizer = stories_tokenizer()
    texts, task = META["texts"], META["instruction"]
    encoder = Encoder.from_model(model, tokenizer, pooling="reference_mean")
    bad = {}
    for config in RUNS:
        run = encoder.with_plan(reference_plan(config))
        for name, vectors in [("doc", run.encode(texts)), ("query", run.encode(texts, instruction=task))]:
            diff = float(np.abs(vectors - data[f"{family}/{config['key']}/pooled_{name}"]).max())
            if diff > TOLERANCE:
                bad[f"{config['key']}/{name}"] = diff
    assert not bad, f"{family}: {bad}"


def test_natural_tokenization_gives_the_fixture_batches() -> None:
    data = states()
    tokenizer = stories_tokenizer()
    for name, instruction in [("doc", None), ("query", META["instruction"])]:
        rows = TextTokenizer(tokenizer, max_length=512, instruction=instruction)(META["texts"])
        ids, mask = data[f"llama/input_ids_{name}"], data[f"llama/attention_mask_{name}"]
        for row, row_ids, row_mask in zip(rows, ids, mask, strict=True):
            assert row.ids == row_ids[row_mask.astype(bool)].tolist()
            assert row.prompt_length == (int(data["llama/prompt_length"]) if instruction else 0)


def released_tokenizer(name: str) -> object:
    path = TOKENS["tokenizers"][name]["path"]
    if path.startswith("shared:"):
        return stories_tokenizer()
    return AutoTokenizer.from_pretrained(FIXTURES / path)


@pytest.mark.parametrize("name", ["stories260k", "gpt2", "qwen2"])
def test_natural_tokenization_gives_the_released_ids(name: str) -> None:
    """SentencePiece (llama), byte-level BPE (GPT-2) and Qwen2's pre-tokenizer, each saved by transformers 4.44.2."""
    tokenizer = released_tokenizer(name)
    entries = [e for e in TOKENS["entries"] if e["tokenizer"] == name]
    assert len(entries) >= 30
    for entry in entries:
        rows = TextTokenizer(tokenizer, max_length=512, instruction=entry["instruction"] or None)
        row = rows([entry["text"]])[0]
        if "<s>" in entry["text"] and tokenizer.bos_token == "<s>":
            # A deliberate difference: the released path turns "<s>" typed in a text into BOS; here text stays text.
            assert entry["ids"].count(tokenizer.bos_token_id) == 2 and row.ids.count(tokenizer.bos_token_id) == 1
            continue
        assert row.ids == entry["ids"], (entry["instruction"], entry["text"])
        if entry["prompt_length"] is not None:  # the tokens the released mean leaves out
            assert row.prompt_length == row.text_start == entry["prompt_length"], (entry["instruction"], entry["text"])


def test_what_the_released_code_cannot_run_is_refused_or_documented() -> None:
    """INTER/EXTRA without converted layers crash there, and are refused here with that reason. Index lists crash
    in every released forward (it builds a range from a set); nosink runs what the lists say (no fixture)."""
    by_key = {c["key"]: c for c in FAILS}
    assert {"INTER-MASK0-u0-b0-res3", "EXTRA-MASK0-u0-b0-res3"} <= set(by_key)
    for key in ("INTER-MASK0-u0-b0-res3", "EXTRA-MASK0-u0-b0-res3"):
        with pytest.raises(NosinkError, match="fails in the released code"):
            reference_plan(by_key[key])
    lists = [c for c in FAILS if c["unsink_layers"] or c["bidir_layers"]]
    assert lists and all("TypeError" in c["status"] or "ValueError" in c["status"] for c in lists)
