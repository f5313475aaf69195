"""Reading texts from files or stdin and writing embeddings to files, for the ``nosink`` CLI.

Inputs are plain text (one text per line) or a table (JSONL, CSV, TSV or Parquet) whose records
have a string ``"text"`` and optionally an ``"id"``. Outputs are chosen by extension: ``.npy``,
``.jsonl`` or ``.parquet``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np

from nosink import tables
from nosink.errors import NosinkError
from nosink.outputs import atomic_file, check_file_target

STDIN = "-"
INPUT_FORMATS = ("auto", "lines", "jsonl", "csv", "tsv", "parquet")
OUTPUT_SUFFIXES = (".npy", ".jsonl", ".parquet")
TEXT_FIELD = "text"
ID_FIELD = "id"


@dataclass(frozen=True)
class Inputs:
    """Texts in input order, and the ``"id"`` of each record that had one (by 0-based index)."""

    texts: list[str]
    ids: dict[int, Any] = field(default_factory=dict)


# -------------------------------------------------------------------- reading


def read_inputs(source: str, *, input_format: str = "auto") -> Inputs:
    """Read texts from a file path, or from stdin when ``source`` is ``"-"``.

    Plain text has one text per line. Tables (JSONL, CSV, TSV, Parquet, read by :mod:`nosink.tables`)
    have a string ``"text"`` field and optionally an ``"id"`` field.

    Args:
        source: A file path, or ``"-"`` for stdin.
        input_format: ``lines``, ``jsonl``, ``csv``, ``tsv``, ``parquet``, or ``auto``: the format
            that the file's extension names; otherwise (stdin, ``.txt`` …) JSONL when the first
            non-blank line is a JSON object, else lines.

    Raises:
        NosinkError: For an empty line, a bad record, or input that has no texts.
        OSError: When the file cannot be read.
    """
    name = "stdin" if source == STDIN else source
    if resolve_input_format(source, input_format) == "parquet":
        inputs = _inputs_from_rows(tables.parquet_rows(Path(_parquet_path(source))), name)
    else:
        text = _read_text(source)
        fmt = resolve_input_format(source, input_format, first_line=_first_non_blank_line(text))
        inputs = _parse_text(text, fmt, name)
    if not inputs.texts:
        raise NosinkError(f"{name} has no texts")
    return inputs


def resolve_input_format(source: str, input_format: str = "auto", *, first_line: str = "") -> str:
    """The concrete format for a source, a requested format and (for ``auto``) the input's first non-blank line."""
    if input_format not in INPUT_FORMATS:
        raise NosinkError(f"unknown input format {input_format!r}; use one of {', '.join(INPUT_FORMATS)}")
    if input_format != "auto":
        return input_format
    named = tables.format_of(source) if source != STDIN else None
    if named is not None:
        return named.value
    return "jsonl" if tables.looks_like_jsonl(first_line) else "lines"


def _parquet_path(source: str) -> str:
    if source == STDIN:
        raise NosinkError("Parquet cannot be read from stdin; give the file's path")
    if not Path(source).is_file():
        raise NosinkError(f"{source} is not a file")
    return source


def _read_text(source: str) -> str:
    if source == STDIN:
        return sys.stdin.read()
    try:
        return Path(source).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise tables.not_utf8(Path(source)) from None


def _first_non_blank_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.strip()), "")


def _parse_text(text: str, fmt: str, name: str) -> Inputs:
    if fmt == "lines":
        return Inputs(_parse_lines(_split_lines(text), name))
    handle = StringIO(text, newline="")
    if fmt == "jsonl":
        return _inputs_from_rows(tables.jsonl_rows(handle, name), name, fmt)
    delimiter = tables.DELIMITERS[tables.TableFormat(fmt)]
    return _inputs_from_rows(tables.delimited_rows(handle, name, delimiter=delimiter), name, fmt)


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


def _inputs_from_rows(rows: Iterator[tables.Row], name: str, fmt: str = "parquet") -> Inputs:
    texts: list[str] = []
    ids: dict[int, Any] = {}
    for line, record in rows:
        texts.append(_record_text(record, f"{name}, {'row' if fmt == 'parquet' else 'line'} {line}", fmt))
        if record.get(ID_FIELD) not in (None, ""):
            ids[len(texts) - 1] = record[ID_FIELD]
    return Inputs(texts, ids)


def _record_text(record: dict[str, Any], where: str, fmt: str) -> str:
    value = record.get(TEXT_FIELD)
    if not isinstance(value, str):
        fields = ", ".join(map(str, record)) or "none"
        hint = " (or pass --input-format lines for plain text)" if fmt == "jsonl" else ""
        raise NosinkError(f'{where}: needs a string "{TEXT_FIELD}" field (fields: {fields}){hint}')
    if not value.strip():
        raise NosinkError(f'{where}: the "{TEXT_FIELD}" is empty')
    return value


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
    check_file_target(target, flag="-o")
    if suffix == ".parquet":
        _pyarrow()


def write_embeddings(path: str, embeddings: np.ndarray, *, ids: dict[int, Any] | None = None) -> None:
    """Write ``embeddings`` [N, D] to ``path`` in the format its extension names.

    Args:
        path: Ends in ``.npy``, ``.jsonl`` or ``.parquet``; written atomically (an existing file is replaced).
        embeddings: A float32 array [N, D].
        ids: The input ``"id"`` of each row that had one, by row index; copied to jsonl/parquet.
    """
    check_output(path)
    ids = ids or {}
    suffix = Path(path).suffix.lower()
    with atomic_file(path) as temporary:  # an existing file is replaced whole, never left half-written
        if suffix == ".npy":
            with open(temporary, "wb") as file:  # a handle, so that np.save never appends ".npy" itself
                np.save(file, embeddings)
        elif suffix == ".jsonl":
            _write_jsonl(temporary, embeddings, ids)
        else:
            _write_parquet(temporary, embeddings, ids)


def _write_jsonl(path: Path, embeddings: np.ndarray, ids: dict[int, Any]) -> None:
    with open(path, "w", encoding="utf-8") as file:
        for index, row in enumerate(embeddings):
            record: dict[str, Any] = {"index": index}
            if index in ids:
                record["id"] = ids[index]
            record["embedding"] = row.tolist()
            file.write(json.dumps(record, ensure_ascii=False) + "\n")


def _write_parquet(path: Path, embeddings: np.ndarray, ids: dict[int, Any]) -> None:
    pa, pq = _pyarrow()
    n, dim = embeddings.shape
    values = pa.array(np.ascontiguousarray(embeddings, dtype=np.float32).reshape(-1))  # [N * D]
    columns = {"index": pa.array(np.arange(n, dtype=np.int64))}
    if ids:
        try:
            columns["id"] = pa.array([ids.get(i) for i in range(n)])
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise NosinkError(f'the "id" values cannot form one parquet column ({error}); give them one type') from None
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(values, dim)  # [N] lists of D, as corpus shards
    pq.write_table(pa.table(columns), path)


def _pyarrow() -> tuple[Any, Any]:
    pyarrow = tables.require_pyarrow(purpose="writing .parquet")
    return pyarrow, pyarrow.parquet


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's bytes, as 64 hex digits, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
