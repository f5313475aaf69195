"""One JSON record per evaluation run, so that any number in the docs traces back to a command."""

from __future__ import annotations

import importlib.metadata
import json
import math
import platform
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nosink.eval.sources import file_digest
from nosink.outputs import write_text_atomic

DEFAULT_RECORD_FOLDER = "results"

_PACKAGES = ("nosink", "torch", "transformers", "numpy", "scikit-learn", "imbalanced-learn", "seqeval", "mteb")


def model_name(name: str) -> str:
    """A model's short name for titles and records: its folder's name; for a converted GGUF
    (``<name>/transformers``, see ``nosink models``), the parent's."""
    folder = Path(name)
    return (folder.parent.name if folder.name == "transformers" else folder.name) or name


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
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The record of one run: what ran (model, plan, settings, data with hashes), what came out, how long.

    ``details`` (optional) holds bulky results that ``metrics`` summarises, e.g. per-query scores.
    """
    record = {
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
    return record if details is None else record | {"details": details}


def write_record(record: dict[str, Any], path: str | Path) -> Path:
    """Write the record as indented, strict JSON (creating folders); returns the path.

    An undefined metric (NaN, e.g. a correlation with constant predictions) is written as ``null``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_finite(record), indent=2, default=_jsonable, allow_nan=False)  # strict JSON: no NaN
    write_text_atomic(path, text + "\n")
    return path


def default_record_path(task: str, folder: str | Path = DEFAULT_RECORD_FOLDER) -> Path:
    """``results/<task>-<UTC timestamp>.json``."""
    return Path(folder) / f"{task}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return _finite(value.tolist())
    if hasattr(value, "item"):
        return _finite(value.item())
    return str(value)


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None, through dicts, lists and tuples."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
