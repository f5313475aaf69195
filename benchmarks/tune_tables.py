"""The comparison table of docs/recipes.md, built from the folders that ``nosink tune`` wrote.

    python benchmarks/tune_tables.py docs/tune/smollm2-135m-instruct docs/tune/gemma-3-270m

For each folder: the validation score of the baseline, the best plan alone (last layer, no
prompt), the best layer alone (baseline plan, no prompt), the best recipe alone (baseline plan,
any prompt and layer) and the best plan + recipe (the winner), and the winner's test score
next to the baseline's. Also the time each prompt took.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def load(folder: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows = [row for line in (folder / "rows.jsonl").read_text().splitlines() for row in json.loads(line)["rows"]]
    return rows, json.loads((folder / "winner.json").read_text())


def best(rows: list[dict[str, Any]], **where: Any) -> dict[str, Any]:
    keep = [r for r in rows if all(test(r[key]) if callable(test) else r[key] == test for key, test in where.items())]
    return max(keep, key=lambda r: r["score"])


def table(folders: list[Path]) -> str:
    lines = ["| | " + " | ".join(f.name for f in folders) + " |", "|---|" + "---:|" * len(folders)]
    cells: dict[str, list[str]] = {}
    for folder in folders:
        rows, winner = load(folder)
        last = max(r["layer"] for r in rows)
        picks = {
            "baseline": best(rows, plan="baseline", prompt="default", layer=last),
            "best plan alone (last layer, no prompt)": best(rows, prompt="default", layer=last),
            "best layer alone (baseline, no prompt)": best(rows, plan="baseline", prompt="default"),
            "best recipe alone (baseline plan)": best(rows, plan="baseline"),
            "best plan + recipe (the winner)": best(rows),
        }
        for name, row in picks.items():
            what = f"`{row['plan']}`, `{row['recipe']}`" if name != "baseline" else ""
            cells.setdefault(name, []).append(f"{row['score']:.2f} {what}".strip())
        test = winner.get("test") or {}
        if test:
            metric = winner["metric"]
            cells.setdefault("test: baseline → winner", []).append(
                f"{test['baseline'][metric]:.2f} → {test['winner'][metric]:.2f}"
            )
        seconds = winner["seconds"]
        cells.setdefault("seconds (per prompt; test)", []).append(", ".join(f"{v:.0f}" for v in seconds.values()))
    for name, values in cells.items():
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    print(table(args.folders))


if __name__ == "__main__":
    main()
