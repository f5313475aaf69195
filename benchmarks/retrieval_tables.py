"""The SciFact tables of docs/retrieval.md, from the run records of ``nosink eval retrieval``.

    python benchmarks/retrieval_tables.py docs/retrieval/records --cost docs/retrieval/cost.json

Every record in the folder is one row (name: the record's file name without ``.json``). Beside the scores, each
row gets the paired difference of its per-query nDCG@10 from BM25's (the record ``bm25.json``) with a 95%
bootstrap interval (2,000 resamples of the 300 queries, seed 0): a row beats BM25 when the whole interval is
above 0. ``--cost`` adds documents per second from ``benchmarks/retrieval_cost.py``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

COLUMNS = ("ndcg_at_10", "map_at_100", "mrr_at_10", "recall_at_10", "recall_at_100")
HEADERS = ("nDCG@10", "MAP@100", "MRR@10", "R@10", "R@100")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", type=Path)
    parser.add_argument("--cost", type=Path)
    parser.add_argument("--baseline", default="bm25", help="the record every row is compared with")
    args = parser.parse_args()
    records = {path.stem: json.loads(path.read_text()) for path in sorted(args.records.glob("*.json"))}
    cost = _cost(args.cost) if args.cost else {}
    reference = _per_query(records[args.baseline]) if args.baseline in records else None
    header = ["row", "model", "plan / recipe", *HEADERS, f"Δ nDCG@10 vs {args.baseline} [95% CI]", "docs/s", "cut"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, record in records.items():
        print("| " + " | ".join(_row(name, record, reference, cost)) + " |")


def _row(name: str, record: dict[str, Any], reference: dict[str, float] | None, cost: dict[str, float]) -> list[str]:
    model = record["model"]
    label = Path(str(model.get("name", ""))).name
    label = Path(str(model["name"])).parent.name if label in ("transformers", "sentence-transformers") else label
    recipe = model.get("recipe")
    setting = f"{model.get('plan') or ''} {'/ ' + recipe if recipe not in (None, 'default') else ''}"
    fusion = record["settings"].get("fusion")
    if fusion:
        chosen = record["settings"].get("weight", record["settings"].get("k"))
        setting += f" + BM25 ({fusion}, {'w' if 'weight' in record['settings'] else 'k'} = {chosen})"
    scores = [f"{record['metrics'][column]:.2f}" for column in COLUMNS]
    difference = "—"
    ours = _per_query(record)
    if reference is not None and ours is not None and ours.keys() == reference.keys():
        difference = _paired(ours, reference)
    docs = cost.get(Path(str(model.get("name", ""))).parent.name) or cost.get(str(model.get("kind")))
    cut = record["sizes"].get("truncated_documents")
    return [
        name,
        label,
        setting.strip() or "—",
        *scores,
        difference,
        "—" if docs is None else f"{docs:.1f}",
        "—" if cut is None else str(cut),
    ]


def _per_query(record: dict[str, Any]) -> dict[str, float] | None:
    return (record.get("details") or {}).get("per_query_ndcg_at_10")


def _paired(ours: dict[str, float], reference: dict[str, float], resamples: int = 2000) -> str:
    queries = sorted(ours)
    gaps = 100 * (np.array([ours[q] for q in queries]) - np.array([reference[q] for q in queries]))  # [Q]
    rng = np.random.default_rng(0)
    means = gaps[rng.integers(0, len(gaps), size=(resamples, len(gaps)))].mean(axis=1)  # [resamples]
    low, high = np.percentile(means, [2.5, 97.5])
    return f"{gaps.mean():+.2f} [{low:+.2f}, {high:+.2f}]"


def _cost(path: Path) -> dict[str, float]:
    rows = json.loads(path.read_text())["rows"]
    return {row["model"]: row["docs_per_s"] for row in rows}


if __name__ == "__main__":
    main()
