"""One short GPU check of nosink on real LLMs: equality with vanilla transformers, throughput per plan
family against vanilla SDPA, and peak CUDA memory at 8k tokens.

    bash benchmarks/gpu_check.sh                     # one CUDA GPU, offline; what it runs is this file
    python benchmarks/gpu_check.py [--models smollm2-135m-instruct,gemma-3-270m] [--device cuda]
        [--dtype bfloat16] [--tokens 8192] [--texts 512] [--repeats 5] [--long 8x1024] [--out FILE]
    python benchmarks/gpu_check.py --dry-run         # the same logic on the CPU, float32, tiny sizes

For each model (provisioned by ``nosink.provision``, loaded in ``--dtype`` on ``--device``, SDPA):

(a) equality: ``baseline`` against the vanilla forward ``model(ids, mask, use_cache=False)`` and
    ``inplace-bidir:k=L`` against the same with ``is_causal=False``, on a padded batch of short real
    texts and on a padded batch of two long rows (``--tokens`` and 3/4 of it; past Gemma-3's sliding
    window of 512). Reported: max |diff| of the final states over real tokens, and the lowest cosine
    of the mean-pooled vectors; passed when that cosine is >= 0.999 (bfloat16 / float16), or
    >= 0.99999 with max |diff| <= 1e-4 x max |state| (float32), and the other plans' states on the long
    batch are finite. Gemma-3 has a bidirectional mode of its own (``use_bidirectional_attention``),
    whose sliding window nosink matches (|i - j| < 512); transformers' generic ``is_causal=False``
    keeps |i - j| <= 512, so past 512 tokens that row is reported, and the judged one is the former.
(b) throughput: every plan family (baseline, inplace-bidir:k=L, mask0-bidir:k=L/2,
    mask0&bidir:k=L/2,k0=1, inter/extra/extend-back:k=L/2) against the vanilla forward doing the same
    attention, all sides timed round-robin in this one run (medians of ``--repeats``, round 0 a warm-up,
    the device synchronised after each side): on ``--texts`` short real texts batched as
    ``Encoder.encode`` batches them (32 per batch), and on one unpadded ``--long`` batch, with counted
    TFLOP/s against a matmul peak measured in the same run (``torch.mm`` in ``--dtype``).
(c) memory: ``torch.cuda.max_memory_allocated`` over what was allocated before (the weights), for one
    forward of every side on 1 x ``--tokens`` (unpadded) and 2 x ``--tokens`` (the second row 3/4
    long, so masks are built). Not measured on the CPU.

Where the weights cannot travel (a device that gets a copy of the working tree of at most 64 MiB and
has no network), ``--make-bundle DIR``, run where the models are provisioned, writes ``DIR/<name>/``
with each model's config and tokenizer only (``tokenizer.json`` gzipped, ``bundle.json`` naming the
source GGUF's sha256), and ``--bundle DIR`` on the device builds every model that is not provisioned
there from its config with random weights (seeded, in ``--dtype``) and its real tokenizer. The JSON
and the tables then say so: throughput and memory depend on the shapes only; equality tests nosink's
code paths, not the real models' activations (no attention sinks in random weights).

    python benchmarks/gpu_check.py --make-bundle .gpu_bundle [--models ...]    # here, with the models
    bash benchmarks/gpu_check.sh --bundle .gpu_bundle                         # on the device

Texts: Banking77 and Emotion from ../shared/data, or, where ../shared is absent, lines and running
text of this repo's README and docs. The results go to ``--out`` (default ``$OUT/gpu_check.json``
if ``$OUT`` is set, else ``./gpu_check.json``) and as tables to stdout; the exit code is 1 when an
equality check fails.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers
from common import (
    SHARED,
    against,
    batch_flops,
    corpus_lines,
    equality,
    forward_sides,
    layer_calls,
    model_spec,
    plans_for,
    ratio_text,
    real_model,
    round_robin,
    text_ids,
)

from nosink import Encoder
from nosink.encoder import pad_id
from nosink.inputs import Batch, TextTokenizer, batches

MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
DRY_RUN = {"device": "cpu", "dtype": "float32", "tokens": 256, "texts": 16, "repeats": 1, "long": "2x64"}
TOLERANCE = {"float32": 1e-5, "bfloat16": 1e-3, "float16": 1e-3}  # 1 - lowest cosine of the pooled vectors
GB = 1e9
MIB = 2**20
RANDOM_WEIGHTS = "random weights with the real model's shapes (weights could not travel)"
BUNDLE_RECORD = "bundle.json"  # in DIR/<name>/ of a bundle: what was copied from where
BUNDLE_FILES = ("config.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")
BUNDLE_GZIPPED = ("tokenizer.json",)  # Gemma-3's is 31.8 MiB, 5.2 MiB gzipped
BUNDLE_LIMIT = 48 * MIB
SEED = 0


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed(sides: dict[str, Callable[[], object]], repeats: int, sync: Callable[[], None]) -> dict[str, list[float]]:
    """Round-robin seconds of every side, each side ending with a device synchronisation."""

    def synced(run: Callable[[], object]) -> Callable[[], None]:
        return lambda: (run(), sync())

    return round_robin({name: synced(run) for name, run in sides.items()}, repeats)


def matmul_peak(device: torch.device, dtype: torch.dtype, sync: Callable[[], None]) -> float:
    """FLOP/s of the best of 5 ``torch.mm`` (8192^2 on a GPU, 1024^2 on the CPU)."""
    size = 8192 if device.type == "cuda" else 1024
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    torch.mm(a, b)
    best = float("inf")
    for _ in range(5):
        sync()
        start = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def long_batch(tokenizer, tokens: int, rows: int, device: torch.device) -> Batch:
    """One right-padded batch of ``rows`` rows of real text: the first exactly ``tokens`` long, the others 3/4 of it."""
    ids = text_ids(tokenizer, tokens)
    texts = TextTokenizer(tokenizer, max_length=tokens)
    lines = [texts.from_ids(ids if r == 0 else ids[: 3 * tokens // 4], index=r) for r in range(rows)]
    width = max(len(line.ids) for line in lines)
    input_ids = torch.full((rows, width), pad_id(tokenizer), dtype=torch.long)
    attention_mask, text_mask = torch.zeros_like(input_ids), torch.zeros_like(input_ids, dtype=torch.bool)
    for r, line in enumerate(lines):
        input_ids[r, : len(line.ids)] = torch.tensor(line.ids)
        attention_mask[r, : len(line.ids)] = 1
        text_mask[r, line.text_start : line.text_end] = True
    prompt_mask = torch.zeros_like(text_mask)  # no instruction
    return Batch(list(range(rows)), *(t.to(device) for t in (input_ids, attention_mask, text_mask, prompt_mask)))


def throughput(model, encoders, groups, repeats: int, layers: int, k: int, sync, tokens: int) -> list[dict]:
    samples = timed(forward_sides(model, encoders, groups), repeats, sync)
    median = {name: statistics.median(values) for name, values in samples.items()}
    return [
        {"side": name, "median_s": seconds, "runs_s": samples[name], "tokens_per_s": tokens / seconds}
        | against(name, median, layers, k)
        for name, seconds in median.items()
    ]


def peak_memory(model, encoders: dict, batch, device: torch.device) -> dict[str, float | None]:
    """Peak bytes allocated over the bytes allocated before, for one forward of every side on ``batch``."""
    sides = forward_sides(model, encoders, [(batch.input_ids, batch.attention_mask)])
    result: dict[str, float | None] = {}
    for name, run in sides.items():
        if device.type != "cuda":
            run()  # the logic runs on the CPU too; there is no allocator peak to read
            result[name] = None
            continue
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        result[name] = float(torch.cuda.max_memory_allocated() - before)
    return result


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def make_bundle(target: Path, names: list[str]) -> None:
    """Write ``target/<name>/``: the provisioned model's config and tokenizer files, no weights; fail over 48 MiB."""
    from nosink.loading import CONVERT_RECORD
    from nosink.provision import cached

    for name in names:
        ready = cached(name)
        if ready is None:
            raise SystemExit(f"error: {name} is not provisioned here; run `nosink models pull {name}` first")
        home = target / name
        if home.exists():
            if not (home / BUNDLE_RECORD).is_file():
                raise SystemExit(f"error: {home} exists and is no bundle folder (no {BUNDLE_RECORD}); not touching it")
            shutil.rmtree(home)
        home.mkdir(parents=True)
        source = ready.folder
        convert = json.loads((source / CONVERT_RECORD).read_text(encoding="utf-8"))
        files = {}
        for file in BUNDLE_FILES:
            if (source / file).is_file():
                shutil.copyfile(source / file, home / file)
                files[file] = sha256(source / file)
        for file in BUNDLE_GZIPPED:
            if not (source / file).is_file():
                raise SystemExit(f"error: {source} has no {file}; provision {name} again (nosink models pull)")
            packed = gzip.compress((source / file).read_bytes(), compresslevel=9, mtime=0)  # the same bytes every time
            (home / f"{file}.gz").write_bytes(packed)
            files[file] = sha256(source / file)
        record = {
            "model": name,
            "source_gguf": convert.get("gguf"),
            "source_sha256": convert["sha256"],
            "converted_dtype": convert.get("dtype"),
            "files_sha256": files,  # of the files as in the provisioned folder (tokenizer.json before gzip)
            "gzipped": list(BUNDLE_GZIPPED),
            "weights": "none (config and tokenizer only)",
            "note": "config and tokenizer only: gpu_check.py --bundle builds the model with " + RANDOM_WEIGHTS,
        }
        (home / BUNDLE_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        unpacked = sum((source / file).stat().st_size for file in files)
        print(f"{name}: {folder_bytes(home) / MIB:.2f} MiB in {home} ({unpacked / MIB:.2f} MiB before gzip; "
              f"no weights: {(source / 'model.safetensors').stat().st_size / MIB:.0f} MiB stay here)")  # fmt: skip
    total = folder_bytes(target)
    print(f"bundle {target}: {total} bytes = {total / MIB:.2f} MiB in all (limit {BUNDLE_LIMIT / MIB:.0f} MiB)")
    if total > BUNDLE_LIMIT:
        raise SystemExit(f"error: the bundle {target} is {total / MIB:.2f} MiB, over {BUNDLE_LIMIT / MIB:.0f} MiB")


def from_bundle(name: str, bundle: Path, dtype: torch.dtype, device: str):
    """A model built from a bundle's config with random weights (seeded) in ``dtype``, and its real tokenizer."""
    home = bundle / name
    record = json.loads((home / BUNDLE_RECORD).read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory(prefix=f"gpu_check_{name}_") as temporary:
        folder = Path(temporary)
        for file, digest in record["files_sha256"].items():
            if file in record.get("gzipped", []):
                with gzip.open(home / f"{file}.gz", "rb") as zipped, (folder / file).open("wb") as raw:
                    shutil.copyfileobj(zipped, raw)
            else:
                shutil.copyfile(home / file, folder / file)
            if sha256(folder / file) != digest:
                raise SystemExit(f"error: {home}: {file} does not match its sha256 in {BUNDLE_RECORD}; make it again")
        config = transformers.AutoConfig.from_pretrained(folder)
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(SEED)  # initialised on the CPU: the same weights on every machine
    model = transformers.AutoModel.from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.to(device).eval(), tokenizer, home, record


def load(name: str, bundle: Path | None, dtype: torch.dtype, device: str) -> tuple:
    """The provisioned model with its real weights where it is cached (or without --bundle), else the bundle's."""
    from nosink.provision import cached

    if bundle is None or cached(name) is not None:
        model, tokenizer, folder = real_model(name, dtype=dtype, device=device)
        return model, tokenizer, folder, {"weights": "real (provisioned)"}
    model, tokenizer, folder, record = from_bundle(name, bundle, dtype, device)
    source = {key: record[key] for key in ("source_gguf", "source_sha256")}
    return model, tokenizer, folder, {"weights": RANDOM_WEIGHTS, "seed": SEED} | source


def check_model(name: str, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    start = time.perf_counter()
    model, tokenizer, folder, weights_from = load(name, args.bundle, dtype, str(device))
    layers = model.config.num_hidden_layers
    k = layers // 2
    plans = plans_for(layers, k)
    encoders = {plan: Encoder.from_model(model, tokenizer, plan=plan, max_length=args.tokens) for plan in plans}
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    out: dict = weights_from | {"folder": str(folder), "spec": model_spec(model.config), "k": k}
    out["weights_bytes"] = weights
    say(f"{name}: loaded in {time.perf_counter() - start:.1f} s; {out['weights']}")

    # the short real texts, batched as Encoder.encode batches them (right padding: the vanilla forward's default
    # positions are then the real tokens' own)
    rows = encoders["baseline"].tokenize(corpus_lines(args.texts))
    groups = list(batches(rows, batch_size=32, max_tokens_per_batch=None, pad_id=pad_id(tokenizer),
                          left_padding=False, device=device))  # fmt: skip
    real = sum(int(g.attention_mask.sum()) for g in groups)
    out["corpus"] = {"texts": len(rows), "tokens": real, "padded_tokens": sum(g.input_ids.numel() for g in groups)}
    out["corpus"]["batches"] = len(groups)
    padded = long_batch(tokenizer, args.tokens, 2, device)
    single = long_batch(tokenizer, args.tokens, 1, device)

    # (a) equality
    out["equality"] = {"short": equality(model, encoders, groups[0], layers)}
    out["equality"]["long"] = equality(model, encoders, padded, layers)
    out["equality"]["finite"] = {  # the plans with no vanilla counterpart: no NaN or inf on the long padded batch
        plan: bool(torch.isfinite(encoders[plan].hidden_states(padded.input_ids, padded.attention_mask)).all())
        for plan in plans[2:]
    }
    say(f"{name}: equality done")

    # (b) throughput
    out["throughput"] = throughput(
        model, encoders, [(g.input_ids, g.attention_mask) for g in groups], args.repeats, layers, k, sync, real
    )
    b, t = (int(x) for x in args.long.split("x"))
    ids = torch.tensor(text_ids(tokenizer, b * t), device=device).view(b, t)
    ones = torch.ones_like(ids)
    long_rows = throughput(model, encoders, [(ids, ones)], args.repeats, layers, k, sync, b * t)
    peak = max(matmul_peak(device, dtype, sync) for _ in range(2))
    for row in long_rows:
        calls = layer_calls(row["side"], layers) if row["side"] in encoders else layers
        row["tflops_per_s"] = batch_flops(model, calls, (b, t)) / row["median_s"] / 1e12
        row["of_matmul_peak"] = row["tflops_per_s"] * 1e12 / peak
    out["long"] = {"batch": [b, t], "matmul_peak_tflops_per_s": peak / 1e12, "rows": long_rows}
    say(f"{name}: throughput done")

    # (c) memory
    out["memory"] = {
        f"1x{args.tokens}": peak_memory(model, encoders, single, device),
        f"2x{args.tokens} (padded)": peak_memory(model, encoders, padded, device),
    }
    say(f"{name}: memory done ({time.perf_counter() - start:.1f} s for this model)")
    del model, encoders
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def judge(equality: dict, dtype: str) -> None:
    """Mark every equality row ``ok`` (True / False) or, where a closer reference is there, ``judged: False``.

    Passing: the lowest pooled cosine within ``TOLERANCE``, and in float32 also max |diff| <= 1e-4 x max |state|.
    Gemma-3's ``inplace-bidir:k=L`` is judged against its own bidirectional mode: transformers' generic
    ``is_causal=False`` keeps one key more on each side of the sliding window (``common.vanilla``).
    """
    for case in ("short", "long"):
        rows = equality[case]
        native = "inplace_bidir_L_vs_use_bidirectional_attention" in rows
        for key, row in rows.items():
            row["judged"] = not (native and key == "inplace_bidir_L_vs_is_causal_false")
            close = dtype != "float32" or row["max_abs_diff"] <= 1e-4 * row["max_abs_ref"]
            row["ok"] = row["min_cosine"] >= 1 - TOLERANCE[dtype] and close


def passed(result: dict) -> bool:
    rows = [row for model in result["models"].values() for case in ("short", "long")
            for row in model["equality"][case].values() if row["judged"]]  # fmt: skip
    finite = all(all(model["equality"]["finite"].values()) for model in result["models"].values())
    return finite and all(row["ok"] for row in rows)


def report(result: dict) -> None:
    print(f"{result['device_name']}, {result['dtype']}, torch {result['torch']}, transformers {result['transformers']}")
    for name, model in result["models"].items():
        spec = model["spec"]
        print(
            f"\n## {name} ({spec['model_type']}: L={spec['num_hidden_layers']} D={spec['hidden_size']} "
            f"heads={spec['num_attention_heads']}/{spec['num_key_value_heads']} head_dim={spec['head_dim']}), "
            f"weights {model['weights_bytes'] / GB:.3f} GB"
        )
        if model["weights"] == RANDOM_WEIGHTS:
            print(f"\n**{RANDOM_WEIGHTS}**: built from the config with seed {model['seed']}, real tokenizer; "
                  "throughput and memory as the real model's, equality tests the code paths only")  # fmt: skip
        print("\n| equality | batch | max abs diff | max abs state | min cosine (pooled) | ok |")
        print("|---|---|---:|---:|---:|---|")
        for case in ("short", "long"):
            for key, row in model["equality"][case].items():
                ok = "yes" if row["ok"] else "NO"
                ok = ok if row["judged"] else f"(info: {'same' if row['ok'] else 'differs'})"
                print(f"| {key} | {case} | {row['max_abs_diff']:.3g} | {row['max_abs_ref']:.3g} "
                      f"| {row['min_cosine']:.6f} | {ok} |")  # fmt: skip
        if "inplace_bidir_L_vs_use_bidirectional_attention" in model["equality"]["long"]:
            print(
                "(is_causal=False: transformers' generic bidirectional sliding window keeps |i - j| <= window, "
                "one key more each side than the model's own bidirectional mode and nosink, |i - j| < window)"
            )
        finite = model["equality"]["finite"]
        print(f"finite states on the long batch: {', '.join(f'{p} {ok}' for p, ok in finite.items())}")
        corpus = model["corpus"]
        print(
            f"\nthroughput, {corpus['texts']} texts: {corpus['tokens']} real tokens ({corpus['padded_tokens']} "
            f"padded) in {corpus['batches']} batches; medians of {result['repeats']} round-robin repeats"
        )
        print("| side | median ms | tokens/s | vs | ratio |\n|---|---:|---:|---|---:|")
        for row in model["throughput"]:
            print(f"| {row['side']} | {1e3 * row['median_s']:.2f} | {row['tokens_per_s']:.0f} | {row.get('vs', '')} "
                  f"| {ratio_text(row)} |")  # fmt: skip
        long = model["long"]
        b, t = long["batch"]
        print(f"\nthroughput, one unpadded {b}x{t} batch; matmul peak {long['matmul_peak_tflops_per_s']:.1f} TFLOP/s")
        print("| side | median ms | tokens/s | TFLOP/s | of peak | vs | ratio |\n|---|---:|---:|---:|---:|---|---:|")
        for row in long["rows"]:
            print(f"| {row['side']} | {1e3 * row['median_s']:.2f} | {row['tokens_per_s']:.0f} "
                  f"| {row['tflops_per_s']:.1f} | {100 * row['of_matmul_peak']:.1f}% | {row.get('vs', '')} "
                  f"| {ratio_text(row)} |")  # fmt: skip
        shapes = list(model["memory"])
        print("\npeak CUDA memory over the weights, one forward (GB)")
        print("| side | " + " | ".join(shapes) + " |\n|---|" + "---:|" * len(shapes))
        for side in model["memory"][shapes[0]]:
            cells = [model["memory"][shape][side] for shape in shapes]
            print(f"| {side} | " + " | ".join("n/a" if c is None else f"{c / GB:.3f}" for c in cells) + " |")
    verdict = "PASSED" if result["passed"] else "FAILED"
    print(f"\nequality {verdict} (see judge() in gpu_check.py); {result['seconds']:.0f} s")
    random = [name for name, model in result["models"].items() if model["weights"] == RANDOM_WEIGHTS]
    if random:
        print(f"NOTE: {', '.join(random)}: {RANDOM_WEIGHTS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated (default: both)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(TOLERANCE))
    parser.add_argument("--tokens", type=int, default=8192, help="tokens of the long rows (equality, memory)")
    parser.add_argument("--texts", type=int, default=512, help="short real texts for throughput")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--long", default="8x1024", help="BxT of the unpadded throughput batch")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=None, help="default: $OUT/gpu_check.json, else ./gpu_check.json")
    parser.add_argument("--dry-run", action="store_true", help="CPU, float32, tiny sizes: " + json.dumps(DRY_RUN))
    parser.add_argument("--bundle", type=Path, default=None, metavar="DIR",
                        help="models not provisioned here: random weights, config and tokenizer from DIR")  # fmt: skip
    parser.add_argument("--make-bundle", type=Path, default=None, metavar="DIR",
                        help="write the models' configs and tokenizers (no weights) into DIR, and stop")  # fmt: skip
    if "--dry-run" in sys.argv[1:]:
        parser.set_defaults(**DRY_RUN)  # flags given explicitly still win
    args = parser.parse_args()
    names = args.models.split(",")
    if args.make_bundle is not None:
        make_bundle(args.make_bundle, names)
        return
    missing = [name for name in names if args.bundle and not (args.bundle / name / BUNDLE_RECORD).is_file()]
    if missing:
        from nosink.provision import cached

        if any(cached(name) is None for name in missing):
            raise SystemExit(f"error: {', '.join(missing)} neither provisioned here nor in the bundle {args.bundle}")
    out = args.out or Path(os.environ["OUT"] if os.environ.get("OUT") else ".") / "gpu_check.json"
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device is visible to torch (use --dry-run, or --device cpu, on a CPU)")
    dtype = getattr(torch, args.dtype)
    start = time.perf_counter()
    result: dict = {
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": args.dtype,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "texts_from": "../shared/data" if (SHARED / "data").is_dir() else "README.md and docs/",
        "tokens": args.tokens,
        "repeats": args.repeats,
        "models": {},
    }
    for name in names:
        result["models"][name] = check_model(name, args, device, dtype)
    result["seconds"] = time.perf_counter() - start
    for model in result["models"].values():
        judge(model["equality"], args.dtype)
    result["passed"] = passed(result)
    random = [name for name, model in result["models"].items() if model["weights"] == RANDOM_WEIGHTS]
    if random:
        result["note"] = (f"{', '.join(random)}: {RANDOM_WEIGHTS}; throughput and memory as the real models', "
                          "equality tests nosink's code paths, not the real models' activations")  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    report(result)
    print(f"wrote {out}")
    if not result["passed"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
