"""One JSON record per evaluation run, so that any number in the docs traces back to a command."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nosink.eval.data import file_digest

_PACKAGES = ("nosink", "torch", "transformers", "numpy", "scikit-learn", "imbalanced-learn", "seqeval", "mteb")


def package_versions() -> dict[str, str | None]:
    """Versions of the packages that can change a result (None when not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def data_files(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Path, size and sha256 of every data file a run read (a ``hf:`` dataset is recorded by name)."""
    return [
        {"dataset": p}
        if p.startswith("hf:")
        else {"path": str(Path(p).resolve()), "bytes": Path(p).stat().st_size, "sha256": file_digest(p)}
        for p in dict.fromkeys(str(p) for p in paths)
    ]


def run_record(
    *,
    task: str,
    model: dict[str, Any],
    metrics: dict[str, Any],
    data: Iterable[str | Path] = (),
    sizes: dict[str, int] | None = None,
    timings: dict[str, float] | None = None,
    settings: dict[str, Any] | None = None,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """The record of one run: what ran (model, plan, settings, data with hashes), what came out, how long."""
    return {
        "task": task,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": argv if argv is not None else sys.argv,
        "model": model,
        "settings": settings or {},
        "data": data_files(data),
        "metrics": metrics,
        "sizes": sizes or {},
        "timings": timings or {},
        "versions": package_versions(),
    }


def write_record(record: dict[str, Any], path: str | Path) -> Path:
    """Write the record as indented JSON (creating folders); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    return path


def default_record_path(task: str, folder: str | Path = "results") -> Path:
    """``results/<task>-<UTC timestamp>.json``."""
    return Path(folder) / f"{task}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)
