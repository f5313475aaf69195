"""A real chat model as a text encoder, without training: queries against documents, before and after.

    python examples/quickstart.py [--model FOLDER_OR_GGUF] [--plan PLAN]

Without --model it provisions SmolLM2-135M-Instruct (a 30-layer Llama with a strong attention sink)
from PyPI once (about 100 MB, then cached; see `nosink models list`). It prints the cosine similarity
of every query to every document under the unchanged causal model (baseline) and under the plan,
and how many queries find their own document first. This is what `make run` runs.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import transformers

from nosink import Encoder
from nosink.provision import provision

QUERIES = [
    "How do I reset the PIN of my card?",
    "My package has not arrived yet.",
    "Which plants grow well in the shade?",
    "What should I do when my laptop overheats?",
]
DOCUMENTS = [  # DOCUMENTS[i] answers QUERIES[i]
    "To change your card's PIN, open the app, choose Cards, then Security, and pick a new four-digit code.",
    "Deliveries can take up to ten working days; track your parcel with the number in your confirmation email.",
    "Ferns, hostas and hydrangeas thrive with little direct sunlight.",
    "Clean the fans, keep the vents free and avoid using the computer on soft surfaces like a bed.",
]
INSTRUCTION = "Given a question, retrieve passages that answer the question."  # queries only (SPEC §5)


def similarity_table(encoder: Encoder) -> np.ndarray:
    """[queries, documents] cosine similarities."""
    queries = encoder.encode(QUERIES, instruction=INSTRUCTION, normalize=True)  # [Q, D]
    documents = encoder.encode(DOCUMENTS, normalize=True)  # [N, D]
    return queries @ documents.T


def show(title: str, table: np.ndarray) -> int:
    """Print the table (the best document of each query starred) and return how many queries found their own."""
    print(f"\n{title}")
    print("query \\ document   " + "  ".join(f"  doc{j}" for j in range(len(DOCUMENTS))))
    for i, row in enumerate(table):
        cells = "  ".join(f"{value:6.3f}{'*' if j == row.argmax() else ' '}" for j, value in enumerate(row))
        print(f"q{i} {QUERIES[i][:14]:<14}  {cells}")
    found = int(sum(row.argmax() == i for i, row in enumerate(table)))
    margin = float(np.mean([row[i] - np.delete(row, i).max() for i, row in enumerate(table)]))
    print(f"own document first: {found}/{len(QUERIES)}; mean margin over the best other document: {margin:+.3f}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder or .gguf file (default: SmolLM2-135M-Instruct from PyPI)")
    parser.add_argument("--plan", default="mask0-bidir:k=10", help="default: %(default)s")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    transformers.utils.logging.disable_progress_bar()  # no per-load weight bars in this demo
    model = args.model or str(provision("smollm2-135m-instruct").folder)
    baseline = Encoder.from_pretrained(model)
    print(f"model: {model} ({baseline.num_layers} layers)")
    for i, (query, document) in enumerate(zip(QUERIES, DOCUMENTS, strict=True)):
        print(f"  q{i}: {query}\n  doc{i}: {document}")
    show("baseline (the unchanged causal model)", similarity_table(baseline))
    converted = baseline.with_plan(args.plan)  # the same weights, no copy
    show(f"plan {converted.plan}", similarity_table(converted))


if __name__ == "__main__":
    main()
