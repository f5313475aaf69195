"""How much the instruction's tokenization matters on a real LLM: one string (the default) against the old
separate form (the instruction tokenized apart and joined by ids, which leaves a lone space token before
the text), scored on SICK trial (STS, Spearman x 100) with the paper's STS instruction.

    python benchmarks/instruction_tokens.py [--models smollm2-135m-instruct,gemma-3-270m] [--limit 500] [--threads 2]

For each model and plan it prints the Spearman of: no instruction, the instruction as one string, the
instruction apart; the lowest and median cosine between the one-string and separate vectors; and how
many texts start with a lone space token in the separate form. Models come from ``nosink.provision``
(offline once cached). Takes about 4 minutes per model on 2 CPU cores with --limit 500.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED, real_model

from nosink import Encoder
from nosink.eval.data import load_pairs
from nosink.eval.metrics import cosine_similarities, spearman_x100
from nosink.inputs import TextTokenizer

TASK = "Retrieve semantically similar text."  # the paper's STS instruction (docs/spec.md §6)


def separate_rows(encoder: Encoder, texts: list[str]) -> list:
    """The old form: the instruction's own ids, then the text's own ids (``TextTokenizer.from_ids`` still does this)."""
    rows = TextTokenizer(encoder.tokenizer, max_length=encoder.max_length, instruction=TASK)
    body = encoder.tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return [rows.from_ids(ids, index=i) for i, ids in enumerate(body)]


def lone_space(encoder: Encoder, rows: list) -> int:
    tokens = encoder.tokenizer.convert_ids_to_tokens([row.ids[row.text_start - 1] for row in rows])
    return sum(not encoder.tokenizer.convert_tokens_to_string([token]).strip() for token in tokens)


def score(encoder: Encoder, vectors: np.ndarray, count: int, gold: list[float]) -> float:
    return spearman_x100(gold, cosine_similarities(vectors[:count], vectors[count:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="smollm2-135m-instruct,gemma-3-270m")
    parser.add_argument("--plans", default="baseline,mask0-bidir:k=10,inplace-bidir:k=10")
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_pairs(SHARED / "data" / "sick" / "SICK_trial.txt", limit=args.limit)
    texts, count = [*data.texts_a, *data.texts_b], len(data.texts_a)
    print(f"SICK trial, {count} pairs, instruction {TASK!r}, Spearman x 100")
    print("model | plan | no instruction | one string | apart | cos min / median | lone space (apart)")
    for name in args.models.split(","):
        model, tokenizer, _ = real_model(name)
        for plan in args.plans.split(","):
            encoder = Encoder.from_model(model, tokenizer, plan=plan)
            plain = encoder.encode(texts, show_progress_bar=False)
            joined = encoder.encode(texts, instruction=TASK, show_progress_bar=False)
            rows = separate_rows(encoder, texts)
            apart = encoder.embed_rows(rows, show_progress_bar=False)
            cosines = np.sum(joined * apart, 1) / np.linalg.norm(joined, axis=1) / np.linalg.norm(apart, axis=1)
            print(
                f"{name} | {plan} | {score(encoder, plain, count, data.scores):.2f} "
                f"| {score(encoder, joined, count, data.scores):.2f} | {score(encoder, apart, count, data.scores):.2f} "
                f"| {cosines.min():.4f} / {np.median(cosines):.4f} | {lone_space(encoder, rows)}/{len(rows)}",
                flush=True,
            )


if __name__ == "__main__":
    main()
