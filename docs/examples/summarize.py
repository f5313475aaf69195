"""Markdown tables from the run records in docs/examples/results (used to write docs/examples.md).

python docs/examples/summarize.py [docs/examples/results]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = {
    "sts": ("spearman", "pearson"),
    "classification": ("accuracy", "f1_macro"),
    "domain": ("accuracy", "f1_micro", "f1_macro", "f1_weighted"),
    "ner": ("f1", "precision", "recall"),
}


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/examples/results")
    records = [(path, json.loads(path.read_text())) for path in sorted(folder.glob("*.json"))]
    for task, metrics in COLUMNS.items():
        rows = [(path, r) for path, r in records if r["task"] == task]
        if not rows:
            continue
        print(f"\n| data | plan | {' | '.join(metrics)} | seconds | record |")
        print("|---" * (len(metrics) + 4) + "|")
        for path, record in rows:
            data = ", ".join(Path(d["path"]).parent.name + "/" + Path(d["path"]).name for d in record["data"])
            values = " | ".join(_format(record["metrics"].get(m)) for m in metrics)
            seconds = sum(v for v in record["timings"].values() if isinstance(v, (int, float)))
            plan = record["model"].get("plan") or "baseline"
            print(f"| {data} | `{plan}` | {values} | {seconds:.1f} | `{path.name}` |")


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) > 1.5 else f"{value:.3f}"
    return "–" if value is None else str(value)


if __name__ == "__main__":
    main()
