"""Where evaluation data comes from: local files checked once, or Hugging Face datasets (``hf:NAME[:CONFIG][@SPLIT]``).

Shared by the table loaders (:mod:`nosink.eval.data`) and the CoNLL loader (:mod:`nosink.eval.conll`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nosink.errors import NosinkError
from nosink.io import sha256_of

HUB_PREFIX = "hf:"
_HUB_SPEC = re.compile(r"^hf:(?P<name>[^:@]+)(?::(?P<config>[^@]+))?(?:@(?P<split>.+))?$")


def is_hub_dataset(path: str | Path) -> bool:
    """Whether ``path`` names a Hugging Face dataset: ``hf:NAME[:CONFIG][@SPLIT]`` (default split ``test``)."""
    return isinstance(path, str) and path.startswith(HUB_PREFIX)


def hub_dataset(spec: str) -> Any:
    """The dataset a ``hf:`` name names; NosinkError at once when the hub is unreachable."""
    match = _HUB_SPEC.match(spec)
    if match is None:
        raise NosinkError(f"bad dataset name {spec!r}; expected hf:NAME[:CONFIG][@SPLIT], e.g. hf:mteb/sickr-sts@test")
    from nosink import hub

    reason = hub.hub_unreachable_reason()
    if reason is not None:
        raise NosinkError(f"{spec}: the Hugging Face hub is unreachable from here ({reason}); use a local file")
    try:
        import datasets
    except ImportError:
        raise NosinkError('loading hf: datasets needs the datasets package: pip install "nosink[mteb]"') from None
    return datasets.load_dataset(match["name"], match["config"], split=match["split"] or "test")


def existing_file(path: str | Path) -> Path:
    """``path`` as a Path; NosinkError when it does not exist or is not a file."""
    path = Path(path)
    if not path.exists():
        raise NosinkError(f"{path}: no such file")
    if not path.is_file():
        raise NosinkError(f"{path}: not a file")
    return path


def check_limit(limit: int | None) -> None:
    """NosinkError unless ``limit`` is None or a positive int."""
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise NosinkError(f"limit (--limit) must be a positive integer, or None for all, got {limit!r}")


def check_not_empty(path: Path, items: Sequence[object], what: str) -> None:
    """NosinkError naming ``path`` when it gave no ``items``."""
    if not items:
        raise NosinkError(f"{path}: no {what} found")


def file_digest(path: str | Path) -> str:
    """The sha256 of a file's bytes, as 64 hex digits (for result records)."""
    return sha256_of(existing_file(path))
