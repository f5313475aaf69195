"""Save a converted real model and load it back in sentence-transformers: time, size, largest difference.

    python benchmarks/save_roundtrip.py "$(nosink models pull smollm2-135m-instruct)" \
        --plan mask0-bidir:k=8 --recipe prompt=prompteol,layer=28 --torch-threads 2
    python benchmarks/save_roundtrip.py "$(nosink models pull gemma-3-270m)" \
        --plan inplace-bidir:k=9 --recipe layer=13 --torch-threads 2

Prints one JSON line: save and load seconds, the folder's size against the backbone's float32
parameters, and the largest absolute difference between ``Encoder.encode`` and
``SentenceTransformer.encode`` (raw and with the query prompt), beside the largest |value|.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nosink import Encoder
from nosink.inputs import instruction_prompt

TEXTS = [
    "A man is playing a guitar on the stage.",
    "The bank refused my card payment yesterday, so I called them.",
    "Two dogs run through the snow.",
    "She smiled.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--plan", default="mask0-bidir:k=8")
    parser.add_argument("--recipe", default=None)
    parser.add_argument("--torch-threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    from sentence_transformers import SentenceTransformer

    query = instruction_prompt("Given a sentence, retrieve sentences with the same meaning")
    encoder = Encoder.from_pretrained(args.model, plan=args.plan, recipe=args.recipe, prompts={"query": query})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "encoder"
        start = time.perf_counter()
        encoder.save_pretrained(folder)
        saved_s = time.perf_counter() - start
        size = sum(path.stat().st_size for path in folder.iterdir())
        start = time.perf_counter()
        model = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")
        loaded_s = time.perf_counter() - start
        ours, theirs = encoder.encode(TEXTS), model.encode(TEXTS, batch_size=3)
        query_diff = np.abs(encoder.encode_query(TEXTS) - model.encode_query(TEXTS)).max()
    parameters = sum(p.numel() for p in encoder.base.parameters())
    print(
        json.dumps(
            {
                "model": args.model,
                "plan": args.plan,
                "recipe": args.recipe,
                "save_s": round(saved_s, 2),
                "load_s": round(loaded_s, 2),
                "folder_mb": round(size / 1e6, 1),
                "float32_parameters_mb": round(parameters * 4 / 1e6, 1),
                "max_abs_diff": float(np.abs(ours - theirs).max()),
                "max_abs_diff_query": float(query_diff),
                "max_abs_value": float(np.abs(ours).max()),
            }
        )
    )


if __name__ == "__main__":
    main()
