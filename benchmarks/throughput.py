"""Throughput and utilisation of nosink against vanilla transformers and sentence-transformers, in one run.

    python benchmarks/throughput.py [--config small|qwen2.5-0.5b|tinyllama-1.1b] [--texts 128] [--repeats 3]
                                    [--threads N] [--k K] [--util-batch 16x128] [--profile] [--out result.json]

Model: a random-initialised model (no download) with a real model's shapes (``--config``) and
stories260k's tokenizer (vocab 512, so ``vocab_size`` is set to 512: the embedding lookup is the
only part of the encoder forward that depends on the vocabulary, so the compute is unchanged; token
counts differ from the real models' tokenizers). It is saved to a temporary folder so that
sentence-transformers loads the same weights.

Texts: Banking77 and Emotion training texts from ../shared/data (a real mix of lengths), batched
as ``Encoder.encode`` batches them (longest first, 32 per batch). Every side runs on the same
padded batches, round-robin over ``--repeats`` (round 0 warms up), and medians are reported:

* ``Encoder.hidden_states`` under each plan, against the vanilla forward ``model(ids, mask)``
  (causal) and the same with ``config.is_causal = False`` (transformers 5's bidirectional switch,
  which sentence-transformers sets with ``config_kwargs={"is_causal": False}``);
* ``Encoder.encode`` (tokenize + batch + forward + mean pool) against sentence-transformers'
  ``SentenceTransformer.encode`` (Transformer + mean Pooling, ``is_causal=False``) on the texts.

Throughput counts real (non-pad) tokens. Utilisation: counted FLOPs (2 x matmul params x tokens,
plus 4 x T x T x d_head x heads per layer call and sequence, on padded shapes) per second of one
``--util-batch`` batch, against a float32 matmul peak (``torch.mm`` of 2048 x 2048, best of
several) measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers
from common import SHARED, mixed_texts, round_robin
from transformers import AutoTokenizer

from nosink import Encoder
from nosink.inputs import batches
from nosink.plan import Plan

BATCH_SIZE = 32

CONFIGS: dict[str, dict] = {
    "small": {"cls": "LlamaConfig", "hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8,
              "num_key_value_heads": 4, "intermediate_size": 2048},
    "qwen2.5-0.5b": {"cls": "Qwen2Config", "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
                     "num_key_value_heads": 2, "intermediate_size": 4864},
    "tinyllama-1.1b": {"cls": "LlamaConfig", "hidden_size": 2048, "num_hidden_layers": 22, "num_attention_heads": 32,
                       "num_key_value_heads": 4, "intermediate_size": 5632},
}  # fmt: skip


def plans_for(layers: int, k: int) -> list[str]:
    return [
        "baseline",
        f"inplace-bidir:k={layers}",
        f"mask0-bidir:k={k}",
        f"mask0&bidir:k={k},k0=1",
        f"inter-back:k={k}",
        f"extra-back:k={k}",
        f"extend-back:k={k}",
    ]


def build_model(folder: Path, name: str) -> tuple[torch.nn.Module, object]:
    tokenizer = AutoTokenizer.from_pretrained(SHARED / "models" / "stories260k")
    spec = dict(CONFIGS[name])
    config = getattr(transformers, spec.pop("cls"))(vocab_size=len(tokenizer), **spec)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(config, dtype=torch.float32).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


def sentence_transformer(folder: Path, threads: int):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    module = Transformer(str(folder), config_kwargs={"is_causal": False}, model_kwargs={"dtype": torch.float32})
    pooling = Pooling(module.get_embedding_dimension(), pooling_mode="mean")
    model = SentenceTransformer(modules=[module, pooling], device="cpu").eval()
    torch.set_num_threads(threads)
    return model


@contextlib.contextmanager
def bidirectional(model: torch.nn.Module):
    """transformers 5: ``config.is_causal = False`` makes the model build a bidirectional (padding-only) mask."""
    previous = getattr(model.config, "is_causal", True)
    model.config.is_causal = False
    try:
        yield
    finally:
        model.config.is_causal = previous


def matmul_flops_per_token(model: torch.nn.Module) -> int:
    """2 x parameters of the decoder layers' Linear weights (the embedding is a lookup, norms are elementwise)."""
    params = sum(m.weight.numel() for m in model.layers.modules() if isinstance(m, torch.nn.Linear))
    return 2 * params // len(model.layers)  # per layer call


def layer_calls(plan: str, layers: int) -> int:
    """Decoder-layer calls of one forward under ``plan`` (the prefix plus every branch)."""
    return len(Plan.coerce(plan).resolve(layers).rows())


def batch_flops(model: torch.nn.Module, calls: int, shape: tuple[int, int]) -> float:
    b, t = shape
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attention = 4 * t * t * head_dim * config.num_attention_heads * b  # QK^T and PV, per layer call
    return float(calls * (matmul_flops_per_token(model) * b * t + attention))


def matmul_peak(repeats: int = 5, size: int = 2048) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="small")
    parser.add_argument("--texts", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--k", type=int, default=None, help="k of the partial plans (default: layers // 2)")
    parser.add_argument("--util-batch", default="16x128", help="BxT of the utilisation batch (default 16x128)")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler top ops of baseline and mask0")
    parser.add_argument("--no-st", action="store_true", help="skip sentence-transformers")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    texts = mixed_texts(args.texts)
    result: dict = {
        "config": args.config,
        "spec": CONFIGS[args.config],
        "texts": len(texts),
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
    }
    with tempfile.TemporaryDirectory() as folder:
        model, tokenizer = build_model(Path(folder), args.config)
        layers = model.config.num_hidden_layers
        k = args.k or layers // 2
        plans = plans_for(layers, k)
        encoders = {plan: Encoder.from_model(model, tokenizer, plan=plan) for plan in plans}
        first = encoders[plans[0]]
        rows = first.tokenize(texts)
        groups = list(
            batches(rows, batch_size=BATCH_SIZE, max_tokens_per_batch=None, pad_id=0, left_padding=False,
                    device=torch.device("cpu"))
        )  # fmt: skip
        real = sum(int(g.attention_mask.sum()) for g in groups)
        padded = sum(g.input_ids.numel() for g in groups)
        result.update(tokens=real, padded_tokens=padded, batches=len(groups), k=k, layers=layers)

        # ---- correctness: the matching vanilla forward gives the same states
        with torch.inference_mode():
            g = groups[0]
            causal = model(input_ids=g.input_ids, attention_mask=g.attention_mask).last_hidden_state
            with bidirectional(model):
                bidir = model(input_ids=g.input_ids, attention_mask=g.attention_mask, is_causal=False).last_hidden_state
            real_mask = g.attention_mask.bool()
            diff_causal = (encoders["baseline"].hidden_states(g.input_ids, g.attention_mask) - causal)[real_mask]
            diff_bidir = (encoders[f"inplace-bidir:k={layers}"].hidden_states(g.input_ids, g.attention_mask) - bidir)[
                real_mask
            ]
        result["max_abs_diff"] = {
            "baseline_vs_causal": float(diff_causal.abs().max()),
            "inplace_bidir_L_vs_is_causal_false": float(diff_bidir.abs().max()),
        }

        # ---- forward throughput on the corpus batches
        @torch.inference_mode()
        def vanilla_causal() -> None:
            for g in groups:
                model(input_ids=g.input_ids, attention_mask=g.attention_mask)

        @torch.inference_mode()
        def vanilla_bidir() -> None:
            with bidirectional(model):
                for g in groups:
                    model(input_ids=g.input_ids, attention_mask=g.attention_mask, is_causal=False)

        def plan_run(encoder: Encoder) -> Callable[[], None]:
            def run() -> None:
                for g in groups:
                    encoder.hidden_states(g.input_ids, g.attention_mask)

            return run

        sides: dict[str, Callable[[], object]] = {
            "vanilla causal": vanilla_causal,
            "vanilla is_causal=False": vanilla_bidir,
        }
        sides.update({plan: plan_run(encoder) for plan, encoder in encoders.items()})
        mask0 = encoders[f"mask0&bidir:k={k},k0=1"]
        sides["Encoder.encode (mask0&bidir)"] = lambda: mask0.encode(texts, show_progress_bar=False)
        if not args.no_st:
            st = sentence_transformer(Path(folder), args.threads)
            sides["sentence-transformers encode"] = lambda: st.encode(
                texts, batch_size=BATCH_SIZE, show_progress_bar=False, convert_to_numpy=True
            )
        samples = round_robin(sides, args.repeats)
        med = {name: statistics.median(values) for name, values in samples.items()}
        inplace = med[f"inplace-bidir:k={layers}"]
        reference = {
            "baseline": "vanilla causal",
            f"inplace-bidir:k={layers}": "vanilla is_causal=False",
            f"mask0-bidir:k={k}": "vanilla is_causal=False",
            f"mask0&bidir:k={k},k0=1": "vanilla is_causal=False",
        }
        table = []
        for name, seconds in med.items():
            entry: dict = {"side": name, "median_s": seconds, "runs_s": samples[name], "tokens_per_s": real / seconds}
            entry["texts_per_s"] = len(texts) / seconds
            if name in reference:
                entry["vs"] = reference[name]
                entry["ratio"] = med[reference[name]] / seconds  # throughput ratio: >1 is faster
            if name.startswith(("inter-", "extra-", "extend-")):
                bound = (layers + k) / layers
                entry["vs"] = f"(L+k)/L x inplace-bidir:k={layers}"
                entry["time_over_inplace"] = seconds / inplace
                entry["bound"] = bound
            if name.startswith("Encoder.encode") and "sentence-transformers encode" in med:
                entry["vs"] = "sentence-transformers encode"
                entry["ratio"] = med["sentence-transformers encode"] / seconds
            table.append(entry)
        result["throughput"] = table

        # ---- utilisation on one fixed, unpadded batch of >= 2048 tokens
        b, t = (int(x) for x in args.util_batch.split("x"))
        ids = torch.randint(3, len(tokenizer), (b, t))
        ones = torch.ones_like(ids)

        @torch.inference_mode()
        def util_causal() -> None:
            model(input_ids=ids, attention_mask=ones)

        @torch.inference_mode()
        def util_bidir() -> None:
            with bidirectional(model):
                model(input_ids=ids, attention_mask=ones, is_causal=False)

        util_sides = {"vanilla causal": (util_causal, layers), "vanilla is_causal=False": (util_bidir, layers)}
        for plan in ("baseline", f"inplace-bidir:k={layers}", f"mask0&bidir:k={k},k0=1"):
            util_sides[plan] = (lambda e=encoders[plan]: e.hidden_states(ids, ones), layer_calls(plan, layers))
        peaks: list[float] = []
        util_runs = {name: run for name, (run, _) in util_sides.items()}
        util_runs["matmul peak"] = lambda: peaks.append(matmul_peak())  # measured every round, best kept
        util_samples = round_robin(util_runs, max(2, args.repeats))
        peak = max(peaks)
        util = []
        for name, (_, calls) in util_sides.items():
            seconds = statistics.median(util_samples[name])
            flops = batch_flops(model, calls, (b, t))
            rate = flops / seconds
            util.append(
                {"side": name, "median_s": seconds, "gflops": flops / 1e9, "gflops_per_s": rate / 1e9}
                | {"utilisation": rate / peak}
            )
        result["utilisation"] = {"batch": [b, t], "matmul_peak_gflops_per_s": peak / 1e9, "rows": util}

        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            profiles = {}
            for plan in ("baseline", f"mask0&bidir:k={k},k0=1"):
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    encoders[plan].hidden_states(ids, ones)
                profiles[plan] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8)
            result["profile"] = profiles

    report(result)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def report(result: dict) -> None:
    spec = result["spec"]
    print(
        f"{result['config']}: L={spec['num_hidden_layers']} D={spec['hidden_size']} "
        f"heads={spec['num_attention_heads']}/{spec['num_key_value_heads']} ffn={spec['intermediate_size']}, "
        f"torch {result['versions']['torch']}, transformers {result['versions']['transformers']}, "
        f"{result['threads']} threads"
    )
    print(
        f"{result['texts']} texts, {result['tokens']} real tokens ({result['padded_tokens']} padded) in "
        f"{result['batches']} batches of <= {BATCH_SIZE}; medians of {result['repeats']} round-robin repeats"
    )
    print(f"max |diff|: {result['max_abs_diff']}")
    print("\n| side | median s | tokens/s | vs | ratio |\n|---|---:|---:|---|---:|")
    for row in result["throughput"]:
        if "bound" in row:
            ratio = f"{row['time_over_inplace']:.3f}x time (bound {row['bound']:.3f})"
        elif "ratio" in row:
            ratio = f"{row['ratio']:.3f}x"
        else:
            ratio = ""
        print(f"| {row['side']} | {row['median_s']:.3f} | {row['tokens_per_s']:.0f} | {row.get('vs', '')} | {ratio} |")
    util = result["utilisation"]
    b, t = util["batch"]
    print(
        f"\nutilisation at {b}x{t} = {b * t} tokens/batch, "
        f"fp32 matmul peak {util['matmul_peak_gflops_per_s']:.1f} GFLOP/s"
    )
    print("| side | median s | GFLOP | GFLOP/s | % of peak |\n|---|---:|---:|---:|---:|")
    for row in util["rows"]:
        print(
            f"| {row['side']} | {row['median_s']:.3f} | {row['gflops']:.1f} | {row['gflops_per_s']:.1f} "
            f"| {100 * row['utilisation']:.1f}% |"
        )
    for plan, table in result.get("profile", {}).items():
        print(f"\nprofile {plan}:\n{table}")


if __name__ == "__main__":
    main()
