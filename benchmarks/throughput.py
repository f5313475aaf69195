"""Throughput and utilisation of nosink against vanilla transformers and sentence-transformers, in one run.

    python benchmarks/throughput.py [--config small|qwen2.5-0.5b|tinyllama-1.1b]
                                    [--real smollm2-135m-instruct|gemma-3-270m] (instead of --config)
                                    [--texts 128] [--repeats 3] [--threads N] [--k K] [--util-batch 16x128]
                                    [--profile] [--out result.json]

Model: either a random-initialised model (no download) with a real model's shapes (``--config``) and
stories260k's tokenizer (vocab 512, so ``vocab_size`` is set to 512: the embedding lookup is the
only part of the encoder forward that depends on the vocabulary, so the compute is unchanged; token
counts differ from the real models' tokenizers), saved to a temporary folder so that
sentence-transformers loads the same weights; or (``--real``) a real LLM provisioned by
``nosink.provision`` (SmolLM2-135M-Instruct, Gemma-3-270M; float32 folders converted from GGUF,
offline once cached) with its own tokenizer, which sentence-transformers loads from the same folder.

Texts: Banking77 and Emotion training texts from ../shared/data (a real mix of lengths), batched
as ``Encoder.encode`` batches them (longest first, 32 per batch). Every side runs on the same
padded batches, round-robin over ``--repeats`` (round 0 warms up), and medians are reported:

* ``Encoder.hidden_states`` under each plan, against the vanilla forward ``model(ids, mask, use_cache=False)``
  (causal; nosink's own forward fills no KV cache either) and the same with ``config.is_causal = False``
  (transformers 5's bidirectional switch, which sentence-transformers sets with
  ``config_kwargs={"is_causal": False}``);
* ``Encoder.encode`` (tokenize + batch + forward + mean pool) against sentence-transformers'
  ``SentenceTransformer.encode`` (Transformer + mean Pooling, ``is_causal=False``) on the texts.

Throughput counts real (non-pad) tokens. Utilisation: counted FLOPs (2 x matmul params x tokens,
plus 4 x T x T x head_dim x query heads per layer call and sequence, on padded shapes; see
``common.batch_flops``) per second of one ``--util-batch`` batch, against a float32 matmul peak
(``torch.mm`` of 2048 x 2048, best of several) measured in the same run. The Linear part is checked
against ``torch.utils.flop_counter`` on that batch (``flops_check``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers
from common import (
    SHARED,
    against,
    batch_flops,
    equality,
    forward_sides,
    layer_calls,
    matmul_flops_per_token,
    mixed_texts,
    model_spec,
    plans_for,
    ratio_text,
    real_model,
    round_robin,
    torch_counted_flops,
)
from transformers import AutoTokenizer

from nosink import Encoder
from nosink.encoder import pad_id
from nosink.inputs import batches
from nosink.provision import REAL_MODELS

BATCH_SIZE = 32

CONFIGS: dict[str, dict] = {
    "small": {"cls": "LlamaConfig", "hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8,
              "num_key_value_heads": 4, "intermediate_size": 2048},
    "qwen2.5-0.5b": {"cls": "Qwen2Config", "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
                     "num_key_value_heads": 2, "intermediate_size": 4864},
    "tinyllama-1.1b": {"cls": "LlamaConfig", "hidden_size": 2048, "num_hidden_layers": 22, "num_attention_heads": 32,
                       "num_key_value_heads": 4, "intermediate_size": 5632},
}  # fmt: skip


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

    # Plain text in, as nosink gets it: sentence-transformers 6 would otherwise wrap every text in the chat
    # template of a tokenizer that has one (SmolLM2's adds a 20-token system prompt).
    text_only = {"text": {"method": "forward", "method_output_name": "last_hidden_state"}}
    module = Transformer(
        str(folder), config_kwargs={"is_causal": False}, model_kwargs={"dtype": torch.float32},
        modality_config=text_only, module_output_name="token_embeddings",
    )  # fmt: skip
    pooling = Pooling(module.get_embedding_dimension(), pooling_mode="mean")
    model = SentenceTransformer(modules=[module, pooling], device="cpu").eval()
    torch.set_num_threads(threads)
    return model


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
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", choices=sorted(CONFIGS), default=None, help="random model of this shape (small)")
    source.add_argument("--real", choices=sorted(REAL_MODELS), default=None, help="a real provisioned LLM instead")
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
    with tempfile.TemporaryDirectory() as temporary:
        if args.real:
            model, tokenizer, folder = real_model(args.real)
        else:
            folder = Path(temporary)
            model, tokenizer = build_model(folder, args.config or "small")
        result: dict = {
            "config": args.real or args.config or "small",
            "source": "real" if args.real else "random",
            "folder": str(folder) if args.real else None,
            "spec": model_spec(model.config),
            "texts": len(texts),
            "repeats": args.repeats,
            "threads": torch.get_num_threads(),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        }
        layers = model.config.num_hidden_layers
        k = args.k or layers // 2
        plans = plans_for(layers, k)
        encoders = {plan: Encoder.from_model(model, tokenizer, plan=plan) for plan in plans}
        rows = encoders[plans[0]].tokenize(texts)
        # right padding: the vanilla forward's default positions are then the real tokens' own
        groups = list(
            batches(rows, batch_size=BATCH_SIZE, max_tokens_per_batch=None, pad_id=pad_id(tokenizer),
                    left_padding=False, device=torch.device("cpu"))
        )  # fmt: skip
        real = sum(int(g.attention_mask.sum()) for g in groups)
        padded = sum(g.input_ids.numel() for g in groups)
        result.update(tokens=real, padded_tokens=padded, batches=len(groups), k=k, layers=layers)

        # ---- correctness: the matching vanilla forward gives the same states
        result["equality"] = equality(model, encoders, groups[0], layers)
        result["max_abs_diff"] = {key: row["max_abs_diff"] for key, row in result["equality"].items()}

        # ---- forward throughput on the corpus batches
        sides = forward_sides(model, encoders, [(g.input_ids, g.attention_mask) for g in groups])
        mask0 = encoders[f"mask0&bidir:k={k},k0=1"]
        sides["Encoder.encode (mask0&bidir)"] = lambda: mask0.encode(texts, show_progress_bar=False)
        if not args.no_st:
            st = sentence_transformer(Path(folder), args.threads)
            sides["sentence-transformers encode"] = lambda: st.encode(
                texts, batch_size=BATCH_SIZE, show_progress_bar=False, convert_to_numpy=True
            )
        samples = round_robin(sides, args.repeats)
        med = {name: statistics.median(values) for name, values in samples.items()}
        table = []
        for name, seconds in med.items():
            entry: dict = {"side": name, "median_s": seconds, "runs_s": samples[name], "tokens_per_s": real / seconds}
            entry["texts_per_s"] = len(texts) / seconds
            entry |= against(name, med, layers, k)
            if name.startswith("Encoder.encode") and "sentence-transformers encode" in med:
                entry["vs"] = "sentence-transformers encode"
                entry["ratio"] = med["sentence-transformers encode"] / seconds
            table.append(entry)
        result["throughput"] = table

        # ---- utilisation on one fixed, unpadded batch of >= 2048 tokens
        b, t = (int(x) for x in args.util_batch.split("x"))
        ids = torch.randint(3, min(len(tokenizer), model.config.vocab_size), (b, t))
        ones = torch.ones_like(ids)
        util_plans = ("baseline", f"inplace-bidir:k={layers}", f"mask0&bidir:k={k},k0=1")
        util_runs = forward_sides(model, {plan: encoders[plan] for plan in util_plans}, [(ids, ones)])
        calls = {name: layer_calls(name, layers) if name in util_plans else layers for name in util_runs}
        counted = torch_counted_flops(util_runs["vanilla causal"])  # on CPU torch counts the Linear layers' mm only
        result["flops_check"] = {
            "linear_flops_counted_here": matmul_flops_per_token(model) * layers * b * t,
            "torch_flop_counter": counted,
        }
        peaks: list[float] = []
        util_runs["matmul peak"] = lambda: peaks.append(matmul_peak())  # measured every round, best kept
        util_samples = round_robin(util_runs, max(2, args.repeats))
        peak = max(peaks)
        util = []
        for name, layer_count in calls.items():
            seconds = statistics.median(util_samples[name])
            flops = batch_flops(model, layer_count, (b, t))
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
        f"{result['config']} ({result['source']}, {spec['model_type']}): L={spec['num_hidden_layers']} "
        f"D={spec['hidden_size']} heads={spec['num_attention_heads']}/{spec['num_key_value_heads']} "
        f"head_dim={spec['head_dim']} ffn={spec['intermediate_size']} vocab={spec['vocab_size']}, "
        f"torch {result['versions']['torch']}, transformers {result['versions']['transformers']}, "
        f"{result['threads']} threads"
    )
    print(
        f"{result['texts']} texts, {result['tokens']} real tokens ({result['padded_tokens']} padded) in "
        f"{result['batches']} batches of <= {BATCH_SIZE}; medians of {result['repeats']} round-robin repeats"
    )
    for key, row in result["equality"].items():
        print(f"{key}: max |diff| {row['max_abs_diff']:.3g} (max |state| {row['max_abs_ref']:.3g}), "
              f"min cosine of pooled vectors {row['min_cosine']:.6f}")  # fmt: skip
    print("\n| side | median s | tokens/s | vs | ratio |\n|---|---:|---:|---|---:|")
    for row in result["throughput"]:
        print(
            f"| {row['side']} | {row['median_s']:.3f} | {row['tokens_per_s']:.0f} | {row.get('vs', '')} "
            f"| {ratio_text(row)} |"
        )
    check = result["flops_check"]
    torch_mm = sum(n for op, n in check["torch_flop_counter"].items() if op.endswith(("mm", "addmm", "bmm")))
    linear = check["linear_flops_counted_here"]
    print(
        f"\nFLOP check, vanilla causal on the utilisation batch: Linear layers {linear / 1e9:.2f} GFLOP counted "
        f"here, {torch_mm / 1e9:.2f} GFLOP of matmuls by torch.utils.flop_counter"
    )
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
