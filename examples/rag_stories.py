"""Retrieval-augmented generation with one model: stories260k retrieves with its own weights, then writes.

    python examples/rag_stories.py [--model ../shared/models/stories260k] [--question "..."] [-k 2]

Writes a small corpus of TinyStories-like sentences to a temporary folder, embeds it with the chat
model itself (``Encoder.from_model``: the same weights, no second copy), builds the FAISS index,
then asks a question: ``RAG`` retrieves the closest sentences and the chat model continues a prompt
that holds them, with its unchanged ``generate()``. stories260k is a 260K-parameter model trained
only on children's stories, so the "answer" is a story-like continuation, not a reliable answer.
Needs ``nosink[index]`` (faiss-cpu and pyarrow).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from nosink import Encoder
from nosink.corpus.embed import embed_corpus
from nosink.corpus.reader import CorpusSource
from nosink.index import build_index
from nosink.index.rag import RAG

DEFAULT_MODEL = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "stories260k"
PLAN = "mask0&bidir:k=2,k0=1"
STORIES = [
    "Tom lost his red ball in the park. His dog found it under a big tree.",
    "Lily baked a cake with her mom. They put pink flowers on top.",
    "The cat slept in the warm sun all day long.",
    "Ben and Sue built a sand castle at the beach. A wave knocked it down.",
    "A little bird could not fly. The girl gave it water and it felt better.",
    "The boy was scared of the dark, so his dad gave him a night light.",
    "Sam shared his toy car with his friend, and they played all day.",
    "It rained and rained. The frog was happy and jumped in the puddle.",
    "Mia planted a seed in the garden. Soon it grew into a tall sunflower.",
    "The old man fed the ducks at the pond every morning.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="chat model folder (default: %(default)s)")
    parser.add_argument("--plan", default=PLAN, help="encoding plan (default: %(default)s)")
    parser.add_argument("--question", default="Where did the dog find the red ball?")
    parser.add_argument("-k", type=int, default=2, help="records to retrieve (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=40, help="default: %(default)s")
    args = parser.parse_args()
    if not args.model.is_dir():
        parser.error(f"{args.model} is not a model folder; pass --model")

    torch.manual_seed(0)
    chat_model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "stories.jsonl"
        with corpus.open("w", encoding="utf-8") as handle:
            for number, text in enumerate(STORIES):
                handle.write(json.dumps({"id": f"story-{number}", "text": text}) + "\n")
        out_dir = Path(tmp) / "corpus"
        # The chat model embeds the corpus too: one set of weights for embedding, search and generation.
        encoder = Encoder.from_model(chat_model, tokenizer, plan=args.plan)
        report = embed_corpus(encoder, CorpusSource.open(corpus), out_dir, store_text=True)
        index = build_index(out_dir)
        print(f"embedded {report.records} records in {report.seconds:.2f} s; {index!r}")

        rag = RAG.from_corpus(chat_model, tokenizer, out_dir)  # the manifest's plan and pooling
        print(rag)
        answer = rag.answer(args.question, k=args.k, max_new_tokens=args.max_new_tokens)

    print(f"\nquestion: {args.question}\n\nretrieved:")
    for rank, hit in enumerate(answer.hits, start=1):
        print(f"  {rank}. {hit.score:.4f}  {hit.id:<9} {hit.text}")
    print(f"\nprompt ({'chat template' if rag.uses_chat_template else 'plain template'}):\n{answer.prompt}")
    print(f"\ngenerated ({len(answer.token_ids)} tokens, greedy):\n{answer.text}")


if __name__ == "__main__":
    main()
