"""The results tables of docs/real-models.md, built from the run records that ``nosink study`` wrote.

    python benchmarks/study_tables.py docs/study/smollm2-135m-instruct docs/study/gemma-3-270m \
        --selected-json docs/study/selected-plans.json

Prints markdown: the headline table (task x model: baseline and selected plan on test), the test
score of the best plan of every family, the selected plans as JSON, and each part's time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

MAIN_METRIC = {
    "sts": "spearman",
    "emotion": "accuracy",
    "banking77": "accuracy",
    "domain": "accuracy",
    "wnut17": "f1",
    "wikiann": "f1",
}
TASK_NAME = {
    "sts": "SICK-R (Spearman x100)",
    "emotion": "Emotion (accuracy)",
    "banking77": "Banking77 (accuracy)",
    "domain": "Emotion, domain protocol (accuracy)",
    "wnut17": "WNUT17 (entity F1)",
    "wikiann": "WikiANN-en (entity F1)",
}
SWEPT = ("sts", "emotion", "banking77", "wnut17", "wikiann")
FRACTIONS = ("emotion", "banking77", "domain")  # recorded in [0, 1]; the others are recorded x100


def load(folder: Path) -> dict[str, dict[str, Any]]:
    """Every part record in ``folder``, by part name."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def _metric(part: str, scores: dict[str, Any]) -> float:
    value = float(scores[MAIN_METRIC[part]])
    return 100 * value if part in FRACTIONS else value


def headline(studies: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Task x model: the baseline and the selected plan on test, and the plan."""
    lines = ["| task | model | baseline | selected plan | test score | change |", "|---|---|---:|---|---:|---:|"]
    for part in MAIN_METRIC:
        for model, records in studies.items():
            record = records.get(part)
            if record is None:
                continue
            base = _metric(part, record["test"]["baseline"])
            chosen = record["selected"]
            score = _metric(part, record["test"][chosen])
            lines.append(
                f"| {TASK_NAME[part]} | {model} | {base:.2f} | `{chosen}` | {score:.2f} | {score - base:+.2f} |"
            )
    return "\n".join(lines)


def families(studies: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Each family's best plan on validation, its validation score, and its test score where it was scored."""
    out = []
    for part in SWEPT:
        for model, records in studies.items():
            record = records.get(part)
            if record is None:
                continue
            out.append(f"**{TASK_NAME[part]}, {model}** (baseline {_metric(part, record['test']['baseline']):.2f})\n")
            out.append("| family | plan chosen on validation | validation | test |")
            out.append("|---|---|---:|---:|")
            validation = {row["plan"]: row["score"] for row in record["validation"]}
            for family, plan in record["best_per_family"].items():
                if family == "baseline":
                    continue
                scale = 100 if part in FRACTIONS else 1
                scores = record["test"].get(plan)  # the test set scores the core families only
                test = "—" if scores is None else f"{_metric(part, scores):.2f}"
                out.append(f"| {family} | `{plan}` | {scale * validation[plan]:.2f} | {test} |")
            out.append("")
    return "\n".join(out)


def selected(studies: dict[str, dict[str, dict[str, Any]]]) -> str:
    """The selected plan per model and task, as JSON."""
    table = {
        model: {part: record["selected"] for part, record in records.items() if "selected" in record}
        for model, records in studies.items()
    }
    return json.dumps(table, indent=2)


def timings(studies: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = ["| model | part | seconds |", "|---|---|---:|"]
    for model, records in studies.items():
        for part, record in records.items():
            lines.append(f"| {model} | {part} | {record['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--selected-json", type=Path, metavar="PATH", help="also write the selected plans here")
    args = parser.parse_args()
    studies = {folder.name: load(folder) for folder in args.folders}
    if args.selected_json:
        args.selected_json.write_text(selected(studies) + "\n", encoding="utf-8")
    for title, text in (
        ("Headline", headline(studies)),
        ("Families", families(studies)),
        ("Selected plans", selected(studies)),
        ("Time", timings(studies)),
    ):
        print(f"## {title}\n\n{text}\n")


if __name__ == "__main__":
    main()
