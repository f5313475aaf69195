"""What embedding a retrieval corpus costs: documents per second of every model, on the same documents, in one run.

    python benchmarks/retrieval_cost.py --data ../shared/data/scifact --docs 96 --torch-threads 2 \
        --out docs/retrieval/cost.json

Every model embeds the same ``--docs`` documents of the BEIR folder (drawn with seed 0; title and text joined)
the way ``nosink eval retrieval`` embeds them: nosink decoders at 512 tokens, sentence-transformers models at
their own limit with their document prompt, in length-sorted batches of 32 (three batches of 96 documents pad about
as little as a corpus run's 256-document shards). A warm-up call on 4 documents, then ``--repeats``
timed calls over all of them; the median is reported, with the documents' real token count per model. BM25 is
timed building its index over the whole corpus. Time it on a quiet machine: another busy process makes every
number meaningless (ratios in one run are what to read).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from nosink.eval.beir import load_beir
from nosink.eval.retrieval import count_truncated, document_prompt
from nosink.provision import provision

LLMS = ("smollm2-135m-instruct", "gemma-3-270m", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct")
EMBEDDERS = ("all-minilm-l6-v2", "all-mpnet-base-v2", "embeddinggemma-300m")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a BEIR folder")
    parser.add_argument("--docs", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--models", default=",".join(("bm25", *EMBEDDERS, *LLMS)))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    data = load_beir(args.data, "test")
    sample = sorted(random.Random(0).sample(range(len(data.doc_texts)), args.docs))
    texts = [data.doc_texts[i] for i in sample]
    rows = []
    for name in args.models.split(","):
        row = _bm25(data) if name == "bm25" else _dense(name, texts, args.repeats)
        print(json.dumps(row), flush=True)
        rows.append(row)
    result = {"docs": args.docs, "torch_threads": args.torch_threads, "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


def _bm25(data: Any) -> dict[str, Any]:
    from nosink.index.lexical import Bm25Index

    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        Bm25Index.build(data.doc_texts)
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {"model": "bm25", "docs_per_s": len(data.doc_texts) / median, "seconds": median, "docs": len(data.doc_texts)}


def _dense(name: str, texts: list[str], repeats: int) -> dict[str, Any]:
    folder = str(provision(name).folder)
    if name in EMBEDDERS:
        from nosink.eval.baselines import SentenceTransformerEmbedder

        embedder = SentenceTransformerEmbedder(folder, device="cpu")
        tokens = _tokens(embedder.model.tokenizer, texts, embedder.max_length, document_prompt(embedder))
    else:
        from nosink import Encoder

        embedder = Encoder.from_pretrained(folder, device="cpu")
        rows = embedder.tokenize(texts, prompt="", warn=False)
        tokens = sum(len(row.ids) for row in rows)
    prompt = document_prompt(embedder)

    def run(chosen: list[str] = texts) -> None:
        embedder.encode(chosen, prompt=prompt, batch_size=32, normalize=True, show_progress_bar=False)

    run(texts[:4])  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    cut = int(count_truncated(embedder, texts, prompt=prompt).sum())
    return {
        "model": name,
        "docs_per_s": len(texts) / median,
        "tokens_per_s": tokens / median,
        "seconds": median,
        "docs": len(texts),
        "tokens": tokens,
        "max_length": embedder.max_length,
        "cut": cut,
    }


def _tokens(tokenizer: Any, texts: list[str], limit: int, prompt: str) -> int:
    encoded = tokenizer([prompt + text for text in texts], truncation=True, max_length=limit)
    return sum(len(ids) for ids in encoded["input_ids"])


if __name__ == "__main__":
    main()
