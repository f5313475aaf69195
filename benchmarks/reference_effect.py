"""What the released code's settings do on a real LLM: SICK trial (STS, Spearman x 100, 500 pairs, the paper's
STS instruction on both sides) for plans with and without reference mode (``res=3``, ``reference_mean``).

    python benchmarks/reference_effect.py [--models smollm2-135m-instruct,gemma-3-270m] [--threads 2]

Models come from ``nosink.provision`` (offline once cached); about 3 minutes per model on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED, real_model

from nosink import Encoder
from nosink.eval.data import load_pairs
from nosink.eval.metrics import cosine_similarities, spearman_x100

TASK = "Retrieve semantically similar text."
PLANS = [
    ("baseline", "mean"),
    ("baseline:res=3", "reference_mean"),  # the released code's architecture=NONE
    ("mask0-bidir:k=10", "mean"),
    ("mask0-bidir:k=10,res=3", "reference_mean"),
    ("mask0&bidir:k=12,k0=2", "mean"),
    ("mask0&bidir:k=12,k0=2,res=3", "reference_mean"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="smollm2-135m-instruct,gemma-3-270m")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_pairs(SHARED / "data" / "sick" / "SICK_trial.txt")
    texts, count = [*data.texts_a, *data.texts_b], len(data.texts_a)
    print(f"SICK trial, {count} pairs, instruction {TASK!r} on both sides, Spearman x 100")
    print("model | plan | pooling | Spearman")
    for name in args.models.split(","):
        model, tokenizer, _ = real_model(name)
        for plan, pooling in PLANS:
            encoder = Encoder.from_model(model, tokenizer, plan=plan, pooling=pooling)
            vectors = encoder.encode(texts, instruction=TASK, show_progress_bar=False)
            spearman = spearman_x100(data.scores, cosine_similarities(vectors[:count], vectors[count:]))
            print(f"{name} | {plan} | {pooling} | {spearman:.2f}", flush=True)


if __name__ == "__main__":
    main()
