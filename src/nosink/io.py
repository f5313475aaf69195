"""Reading texts from files or stdin and writing embeddings to files, for the ``nosink`` CLI.

Inputs are plain text (one text per line) or JSONL (one object with a string ``"text"`` per
line, optionally an ``"id"``). Outputs are chosen by extension: ``.npy``, ``.jsonl`` or ``.parquet``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nosink.errors import NosinkError

STDIN = "-"
INPUT_FORMATS = ("auto", "lines", "jsonl")
OUTPUT_SUFFIXES = (".npy", ".jsonl", ".parquet")
_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_PARQUET_HINT = 'writing .parquet needs pyarrow: pip install "nosink[parquet]"'


@dataclass(frozen=True)
class Inputs:
    """Texts in input order, and the ``"id"`` of each JSONL record that had one (by 0-based index)."""

    texts: list[str]
    ids: dict[int, Any] = field(default_factory=dict)


# -------------------------------------------------------------------- reading


def read_inputs(source: str, *, input_format: str = "auto") -> Inputs:
    """Read texts from a file path, or from stdin when ``source`` is ``"-"``.

    Args:
        source: A file path, or ``"-"`` for stdin.
        input_format: ``lines``, ``jsonl``, or ``auto`` (JSONL for ``.jsonl``/``.ndjson`` paths,
            else lines; stdin is read as lines).

    Raises:
        NosinkError: For an empty line, a bad JSONL record, or input that has no texts.
        OSError: When the file cannot be read.
    """
    name = "stdin" if source == STDIN else source
    lines = _split_lines(_read_text(source))
    fmt = resolve_input_format(source, input_format)
    inputs = _parse_jsonl(lines, name) if fmt == "jsonl" else Inputs(_parse_lines(lines, name))
    if not inputs.texts:
        raise NosinkError(f"{name} has no texts")
    return inputs


def resolve_input_format(source: str, input_format: str = "auto") -> str:
    """The concrete format (``lines`` or ``jsonl``) for a source and a requested format."""
    if input_format not in INPUT_FORMATS:
        raise NosinkError(f"unknown input format {input_format!r}; use one of {', '.join(INPUT_FORMATS)}")
    if input_format != "auto":
        return input_format
    is_jsonl = source != STDIN and Path(source).suffix.lower() in _JSONL_SUFFIXES
    return "jsonl" if is_jsonl else "lines"


def _read_text(source: str) -> str:
    if source == STDIN:
        return sys.stdin.read()
    try:
        return Path(source).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise NosinkError(f"{source} is not UTF-8 text ({error.reason} at byte {error.start})") from None


def _split_lines(text: str) -> list[str]:
    """Lines without their newline; one newline at the end of the input is a terminator, not an empty line."""
    if not text:
        return []
    return text.removesuffix("\n").split("\n")


def _parse_lines(lines: list[str], name: str) -> list[str]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise NosinkError(f"{name} line {number} is empty; give every line a text")
    return lines


def _parse_jsonl(lines: list[str], name: str) -> Inputs:
    texts: list[str] = []
    ids: dict[int, Any] = {}
    for number, line in enumerate(lines, start=1):
        record = _parse_record(line, name, number)
        if "id" in record:
            ids[len(texts)] = record["id"]
        texts.append(record["text"])
    return Inputs(texts, ids)


def _parse_record(line: str, name: str, number: int) -> dict[str, Any]:
    where = f"{name} line {number}"
    if not line.strip():
        raise NosinkError(f"{where} is empty; give every line a JSON object with a 'text' field")
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise NosinkError(f"{where} is not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise NosinkError(f'{where} must be a JSON object with a string "text" field, got {line.strip():.60}')
    if not record["text"].strip():
        raise NosinkError(f'{where} has an empty "text"')
    return record


# -------------------------------------------------------------------- writing


def check_output(path: str) -> None:
    """Fail early (before a model is loaded) on an output path that cannot be written.

    Raises:
        NosinkError: For an unknown extension, a missing folder, or ``.parquet`` without pyarrow.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise NosinkError(f"unknown output extension {target.suffix or '(none)'!r}; use {', '.join(OUTPUT_SUFFIXES)}")
    if not target.parent.is_dir():
        raise NosinkError(f"output folder {str(target.parent)!r} does not exist")
    if suffix == ".parquet":
        _pyarrow()


def write_embeddings(path: str, embeddings: np.ndarray, *, ids: dict[int, Any] | None = None) -> None:
    """Write ``embeddings`` [N, D] to ``path`` in the format its extension names.

    Args:
        path: Ends in ``.npy``, ``.jsonl`` or ``.parquet``.
        embeddings: A float32 array [N, D].
        ids: The input ``"id"`` of each row that had one, by row index; copied to jsonl/parquet.
    """
    check_output(path)
    ids = ids or {}
    suffix = Path(path).suffix.lower()
    if suffix == ".npy":
        with open(path, "wb") as file:  # a handle, so that np.save never appends ".npy" itself
            np.save(file, embeddings)
    elif suffix == ".jsonl":
        _write_jsonl(path, embeddings, ids)
    else:
        _write_parquet(path, embeddings, ids)


def _write_jsonl(path: str, embeddings: np.ndarray, ids: dict[int, Any]) -> None:
    with open(path, "w", encoding="utf-8") as file:
        for index, row in enumerate(embeddings):
            record: dict[str, Any] = {"index": index}
            if index in ids:
                record["id"] = ids[index]
            record["embedding"] = row.tolist()
            file.write(json.dumps(record, ensure_ascii=False) + "\n")


def _write_parquet(path: str, embeddings: np.ndarray, ids: dict[int, Any]) -> None:
    pa, pq = _pyarrow()
    n, dim = embeddings.shape
    offsets = pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32))  # [N + 1]
    values = pa.array(np.ascontiguousarray(embeddings, dtype=np.float32).reshape(-1))  # [N * D]
    columns = {"index": pa.array(np.arange(n, dtype=np.int64))}
    if ids:
        try:
            columns["id"] = pa.array([ids.get(i) for i in range(n)])
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise NosinkError(f'the "id" values cannot form one parquet column ({error}); give them one type') from None
    columns["embedding"] = pa.ListArray.from_arrays(offsets, values)
    pq.write_table(pa.table(columns), path)


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise NosinkError(_PARQUET_HINT) from None
    return pyarrow, pyarrow.parquet


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's bytes, as 64 hex digits, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
