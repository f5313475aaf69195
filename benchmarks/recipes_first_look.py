"""A first look at recipes on a real model: SICK-R validation Spearman for prompt x plan x every layer.

    python benchmarks/recipes_first_look.py "$(nosink models pull smollm2-135m-instruct)" \
        --data ../shared/data --pairs 200 --torch-threads 2

Every layer of every plan comes out of one shared-prefix pass per prompt (``sweep_readouts``).
Scores are on the first ``--pairs`` pairs of SICK trial (validation data: nothing here is a test
score). Prints, per prompt and plan, the last layer's score and the best layer's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from nosink import Encoder, Plan
from nosink.eval.data import load_pairs
from nosink.eval.sts import sts_scores
from nosink.eval.sweep import sweep_readouts

PROMPTS = {"none": None, "prompteol": "prompt=prompteol", "echo": "prompt=echo"}
INSTRUCTION = "Retrieve semantically similar text."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--plans", default="baseline,mask0-bidir:k=8,mask0-bidir:k=15")
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write every score here")
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    pairs = load_pairs(args.data / "sick" / "SICK_trial.txt", limit=args.pairs)
    encoder = Encoder.from_pretrained(args.model)
    plans = [Plan.parse(p) for p in args.plans.split(";" if ";" in args.plans else ",")]
    n = len(pairs.texts_a)
    scores: dict[str, dict[str, list[float]]] = {}
    print(f"{'prompt':10s} {'plan':22s} {'last layer':>10s} {'best layer':>16s} {'seconds':>8s}")
    for name, prompt in PROMPTS.items():
        base = prompt + "," if prompt else ""
        recipes = [f"{base}layer={depth}" for depth in range(1, encoder.num_layers + 1)]
        started = time.perf_counter()
        features = sweep_readouts(
            encoder, pairs.texts_a + pairs.texts_b, plans, recipes, instruction=INSTRUCTION, batch_size=32
        )
        seconds = time.perf_counter() - started
        for plan, per_layer in zip(plans, features, strict=True):
            spearman = [sts_scores(f[:n], f[n:], pairs.scores)["spearman"] for f in per_layer]
            scores.setdefault(name, {})[str(plan)] = spearman
            best = max(range(len(spearman)), key=spearman.__getitem__)
            print(
                f"{name:10s} {plan!s:22s} {spearman[-1]:10.2f} {spearman[best]:9.2f} (j={best + 1:2d}) {seconds:8.0f}"
            )
    if args.json:
        args.json.write_text(json.dumps(scores, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
