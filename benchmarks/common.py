"""What the benchmarks share: a random Llama (no download), a word-level tokenizer, round-robin timing, real texts;
the real provisioned LLMs, the vanilla forwards they are compared with, and FLOP counts."""

from __future__ import annotations

import contextlib
import csv
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, processors

VOCAB = 1000
SHARED = Path(__file__).resolve().parents[2] / "shared"
REPO = Path(__file__).resolve().parents[1]


def random_llama(*, layers: int, hidden: int, seed: int = 0) -> torch.nn.Module:
    """A random ``LlamaModel`` with ``layers`` layers of width ``hidden`` (64-dim heads, 2 query heads per KV head)."""
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 128),
    )
    torch.manual_seed(seed)
    return transformers.AutoModel.from_config(config, dtype=torch.float32).eval()


def word_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """Words ``w2`` … ``w{VOCAB-1}`` are their own ids; ``<s>`` (0) starts every text; ``<unk>`` (1) pads."""
    words = {"<s>": 0, "<unk>": 1, **{f"w{i}": i for i in range(2, VOCAB)}}
    tokenizer = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", unk_token="<unk>", pad_token="<unk>"
    )


def save_random_llama(folder: Path | str, *, layers: int, hidden: int) -> None:
    """Save :func:`random_llama` and :func:`word_tokenizer` to ``folder``, loadable by name like a hub model."""
    random_llama(layers=layers, hidden=hidden).save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)


def round_robin(sides: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of every side per round, the sides interleaved so that drift hits all alike; round 0 warms up."""
    samples: dict[str, list[float]] = {name: [] for name in sides}
    for repeat in range(repeats + 1):
        for name, run in sides.items():
            start = time.perf_counter()
            run()
            if repeat:
                samples[name].append(time.perf_counter() - start)
    return samples


def mixed_texts(count: int | None) -> list[str]:
    """The first ``count`` Banking77 and Emotion training texts (../shared/data), interleaved: short and long."""
    with open(SHARED / "data" / "banking77" / "train.csv", encoding="utf-8", newline="") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    with open(SHARED / "data" / "emotion" / "train.txt", encoding="utf-8") as handle:
        texts += [line.rsplit(";", 1)[0] for line in list(handle)[1:] if line.strip()]  # after the header
    texts = texts[::3] + texts[1::3] + texts[2::3]  # interleave the two sources a little
    return texts[:count]


def corpus_lines(count: int | None = None) -> list[str]:
    """:func:`mixed_texts`; where ../shared is absent (a GPU machine given only the tree), the repo's docs by line."""
    if (SHARED / "data").is_dir():
        return mixed_texts(count)
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    lines = [line.strip() for page in pages for line in page.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if len(line) > 20][:count]


def text_ids(tokenizer, count: int) -> list[int]:
    """``count`` token ids of real running text (:func:`corpus_lines` joined, repeated if short), no special tokens."""
    text, lines = "", corpus_lines()
    while len(text) < 8 * count:  # > 1 token per 8 characters of English for any of these tokenizers
        text += "\n".join(lines) + "\n"
    ids = tokenizer(text[: 8 * count], add_special_tokens=False)["input_ids"]
    if len(ids) < count:
        raise SystemExit(f"real text gave only {len(ids)} of {count} tokens")
    return ids[:count]


# ------------------------------------------------------------ real models and the vanilla forward


def real_model(name: str, *, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """A provisioned real LLM (``nosink.provision``, offline once cached): base model (SDPA), own tokenizer, folder."""
    from nosink.provision import provision

    folder = provision(name).folder
    model = transformers.AutoModel.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa")
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    return model.to(device).eval(), tokenizer, folder


def model_spec(config) -> dict:
    """The shape of a decoder, as the reports print it (head_dim may differ from hidden / heads: Gemma-3)."""
    keys = ("model_type", "num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads")
    spec = {key: getattr(config, key) for key in keys}
    spec["head_dim"] = head_dim(config)
    spec |= {key: getattr(config, key, None) for key in ("intermediate_size", "vocab_size", "sliding_window")}
    spec["tie_word_embeddings"] = bool(getattr(config, "tie_word_embeddings", False))
    return spec


@contextlib.contextmanager
def configured(model: torch.nn.Module, **values: object) -> Iterator[None]:
    """``model.config`` with ``values`` set for the duration, then restored (an attribute it lacked is removed
    again: transformers reads a missing ``is_causal`` as True, but one set to None as False)."""
    config, missing = model.config, object()
    previous = {key: config.__dict__.get(key, missing) for key in values}
    for key, value in values.items():
        setattr(config, key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is missing:
                delattr(config, key)
            else:
                setattr(config, key, value)


@torch.inference_mode()
def vanilla(
    model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, *, causal: bool, native: bool = False
) -> torch.Tensor:
    """The plain transformers forward's last hidden state (no KV cache, as nosink's own forward).

    ``causal=False``: transformers 5's generic bidirectional switch ``config.is_causal = False`` (what
    sentence-transformers sets), with ``is_causal=False`` also for SDPA's own flag, which a batch without padding
    would otherwise get as True. ``native``: the family's own bidirectional mode instead (Gemma-3:
    ``config.use_bidirectional_attention``). The two differ in the sliding window: the generic one keeps
    |i - j| <= window, Gemma-3's own and nosink keep |i - j| < window, as the causal window does (j > i - window).
    """
    if causal:
        return model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    if native:
        with configured(model, use_bidirectional_attention=True):
            return model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    with configured(model, is_causal=False):
        return model(input_ids=ids, attention_mask=mask, is_causal=False, use_cache=False).last_hidden_state


def plans_for(layers: int, k: int) -> list[str]:
    """One plan of each family: baseline, INPLACE over all layers, the two MASK0 plans, the branched ones, and one
    reference-mode plan."""
    return [
        "baseline",
        f"inplace-bidir:k={layers}",
        f"mask0-bidir:k={k}",
        f"mask0&bidir:k={k},k0=1",
        f"inter-back:k={k}",
        f"extra-back:k={k}",
        f"extend-back:k={k}",
        f"mask0&bidir:k={k},k0=1,res=3",  # reference mode: layer by layer, with the released code's residual
    ]


def forward_sides(model, encoders: dict, groups: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Callable]:
    """One callable per side, each running every ``(input_ids, attention_mask)`` of ``groups``: the two vanilla
    forwards, then ``Encoder.hidden_states`` under each plan of ``encoders``."""

    def side(forward: Callable[[torch.Tensor, torch.Tensor], object]) -> Callable[[], None]:
        def run() -> None:
            for ids, mask in groups:
                forward(ids, mask)

        return run

    sides = {
        "vanilla causal": side(lambda ids, mask: vanilla(model, ids, mask, causal=True)),
        "vanilla is_causal=False": side(lambda ids, mask: vanilla(model, ids, mask, causal=False)),
    }
    sides.update({plan: side(encoder.hidden_states) for plan, encoder in encoders.items()})
    return sides


def against(name: str, median: dict[str, float], layers: int, k: int) -> dict:
    """What side ``name`` is compared with: a throughput ratio (> 1: faster) against the vanilla forward doing the
    same attention, or, for the branched plans, time over INPLACE against their FLOP ratio (L + k) / L."""
    reference = {"baseline": "vanilla causal"}
    reference |= dict.fromkeys(plans_for(layers, k)[1:4], "vanilla is_causal=False")
    if name in reference and reference[name] in median:
        return {"vs": reference[name], "ratio": median[reference[name]] / median[name]}
    plain = name.removesuffix(",res=3")
    if plain != name and plain in median:  # reference mode (layer by layer, residual) against the same plan without
        return {"vs": plain, "time_over_plain": median[name] / median[plain]}
    inplace = f"inplace-bidir:k={layers}"
    if name.startswith(("inter-", "extra-", "extend-")) and inplace in median:
        time_over = median[name] / median[inplace]
        return {"vs": f"(L+k)/L x {inplace}", "time_over_inplace": time_over, "bound": (layers + k) / layers}
    return {}


def ratio_text(row: dict) -> str:
    if "bound" in row:
        return f"{row['time_over_inplace']:.3f}x time (bound {row['bound']:.3f})"
    if "time_over_plain" in row:
        return f"{row['time_over_plain']:.3f}x time of {row['vs']}"
    return f"{row['ratio']:.3f}x" if "ratio" in row else ""


def pooled_agreement(got: torch.Tensor, ref: torch.Tensor, batch) -> dict[str, float]:
    """Max |diff| over real tokens, the reference's max |value|, and the lowest cosine of the mean-pooled vectors."""
    from nosink.pooling import Pooling, pool

    real = batch.attention_mask.bool()
    diff = (got.float() - ref.float())[real].abs().max()
    a, b = (pool(s, batch.attention_mask, batch.text_mask, Pooling.MEAN) for s in (got, ref))  # [B, D] float32
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=-1).min()
    top = ref.float()[real].abs().max()
    return {"max_abs_diff": float(diff), "max_abs_ref": float(top), "min_cosine": float(cosine)}


def equality(model, encoders: dict, batch, layers: int) -> dict[str, dict[str, float]]:
    """``baseline`` against the vanilla causal forward and ``inplace-bidir:k=L`` against ``is_causal=False`` and,
    for a family with a bidirectional mode of its own (Gemma-3), against that (see :func:`vanilla`)."""
    inplace = f"inplace-bidir:k={layers}"
    pairs = {"baseline_vs_causal": ("baseline", True, False)}
    pairs["inplace_bidir_L_vs_is_causal_false"] = (inplace, False, False)
    if hasattr(model.config, "use_bidirectional_attention"):
        pairs["inplace_bidir_L_vs_use_bidirectional_attention"] = (inplace, False, True)
    result = {}
    for key, (plan, causal, native) in pairs.items():
        ref = vanilla(model, batch.input_ids, batch.attention_mask, causal=causal, native=native)
        got = encoders[plan].hidden_states(batch.input_ids, batch.attention_mask)
        result[key] = pooled_agreement(got, ref, batch)
    return result


# ------------------------------------------------------------ FLOPs


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def matmul_flops_per_token(model: torch.nn.Module) -> int:
    """2 x the decoder layers' Linear weights per layer call: q/k/v/o (GQA's narrower k/v and Gemma's 256-wide heads
    included, as they are in the weights) and the MLP. The embedding is a lookup and the base model has no LM head,
    so tied embeddings and the vocabulary cost nothing here; norms, RoPE and activations are not counted."""
    params = sum(m.weight.numel() for m in model.layers.modules() if isinstance(m, torch.nn.Linear))
    return 2 * params // len(model.layers)


def layer_calls(plan: str, layers: int) -> int:
    """Decoder-layer calls of one forward under ``plan`` (the prefix plus every branch)."""
    from nosink.plan import Plan

    return len(Plan.coerce(plan).resolve(layers).rows())


def batch_flops(model: torch.nn.Module, calls: int, shape: tuple[int, int]) -> float:
    """Counted FLOPs of ``calls`` layer calls on a [B, T] batch: the Linear layers, plus QK^T and PV (4 x T x T x
    head_dim per query head) over the full T x T, as SDPA computes it with a mask (a sliding window is not
    subtracted; at T <= the window, 512 for Gemma-3, there is none to subtract)."""
    b, t = shape
    config = model.config
    attention = 4 * t * t * head_dim(config) * config.num_attention_heads * b
    return float(calls * (matmul_flops_per_token(model) * b * t + attention))


def torch_counted_flops(run: Callable[[], object]) -> dict[str, int]:
    """FLOPs per op as ``torch.utils.flop_counter`` counts one call of ``run`` (a check of :func:`batch_flops`)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        run()
    return {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
