"""One reader per table format for the whole project: JSONL, delimited text (CSV/TSV) and Parquet.

``nosink encode``, ``nosink embed`` and the evaluation loaders all read their files through these
functions, so a format is parsed one way everywhere. Each reader yields ``(line, row)``: the
1-based line where the record starts (the row number for Parquet) and a column → value dict.

- JSONL: one JSON object per line; blank lines are skipped.
- Delimited: a header row of column names, then one record per row. Tab-separated files are read
  without quote handling (a quote is a character of the text); comma and semicolon files use
  RFC 4180 quoting, so a quoted field may hold newlines. Every row has as many fields as the header.
- Parquet: every row of the file, optionally only some columns.

Problems are :class:`~nosink.errors.NosinkError` naming the source and the line.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from nosink.errors import Choice, NosinkError

Row = tuple[int, dict[str, Any]]  # (1-based line or row number, column → value)
_PARQUET_BATCH_ROWS = 4096


class TableFormat(Choice):
    """File formats that hold records with named fields."""

    JSONL = "jsonl"
    CSV = "csv"
    TSV = "tsv"
    PARQUET = "parquet"

    @classmethod
    def noun(cls) -> str:
        return "table format"


SUFFIXES: dict[str, TableFormat] = {
    ".jsonl": TableFormat.JSONL,
    ".ndjson": TableFormat.JSONL,
    ".csv": TableFormat.CSV,
    ".tsv": TableFormat.TSV,
    ".parquet": TableFormat.PARQUET,
    ".pq": TableFormat.PARQUET,
}
DELIMITERS = {TableFormat.CSV: ",", TableFormat.TSV: "\t"}


def format_of(path: str | Path) -> TableFormat | None:
    """The table format that ``path``'s extension names, or None for any other extension."""
    return SUFFIXES.get(Path(path).suffix.lower())


def open_text(path: Path) -> TextIO:
    """``path`` opened for reading as UTF-8 (a leading BOM dropped), with newlines left to the csv module."""
    return path.open(encoding="utf-8-sig", newline="")


def looks_like_jsonl(first_line: str) -> bool:
    """True when a (first non-blank) line is a JSON object: how ``auto`` tells JSONL from plain lines."""
    try:
        return isinstance(json.loads(first_line), dict)
    except json.JSONDecodeError:
        return False


def jsonl_rows(handle: TextIO, name: str) -> Iterator[Row]:
    """The JSON object on each non-blank line of ``handle``; ``name`` (a file name or "stdin") is for errors."""
    for line, raw in enumerate(handle, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as error:
            raise NosinkError(f"{name}, line {line}: not valid JSON ({error.msg} at column {error.colno})") from None
        if not isinstance(record, dict):
            raise NosinkError(f"{name}, line {line}: expected a JSON object, got {type(record).__name__}")
        yield line, record


def delimited_rows(handle: TextIO, name: str, *, delimiter: str) -> Iterator[Row]:
    """The records of a delimited text with a header row; blank rows are skipped, short or long rows refused."""
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(handle, delimiter=delimiter, quoting=quoting, strict=True)
    try:
        header = next(reader, None)
        if header is None or not any(field.strip() for field in header):
            raise NosinkError(f"{name}: the first line must be a header with column names, but it is empty")
        columns = [field.strip() for field in header]
        start = reader.line_num + 1
        for row in reader:
            line, start = start, reader.line_num + 1
            if not any(field.strip() for field in row):
                continue
            if len(row) != len(columns):
                expected = f"{len(columns)} fields ({', '.join(columns)})"
                raise NosinkError(f"{name}, line {line}: expected {expected}, got {len(row)}")
            yield line, dict(zip(columns, row, strict=True))
    except csv.Error as error:
        raise NosinkError(f"{name}, line {reader.line_num}: malformed row ({error})") from None


def parquet_columns(path: Path) -> list[str]:
    """The column names of a Parquet file."""
    return list(_parquet_file(path).schema_arrow.names)


def parquet_rows(path: Path, *, columns: Sequence[str] | None = None) -> Iterator[Row]:
    """Every row of a Parquet file (only ``columns`` when given), read a batch at a time; numbered from 1."""
    parquet = _parquet_file(path)
    number = 0
    for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=columns):
        for row in batch.to_pylist():
            number += 1
            yield number, row


def require_pyarrow(*, purpose: str = "reading or writing Parquet", extra: str = "parquet") -> Any:
    """The ``pyarrow`` module with ``pyarrow.parquet`` loaded; NosinkError naming ``extra`` to install otherwise."""
    try:
        import pyarrow
        import pyarrow.parquet  # loads pyarrow.parquet as an attribute
    except ImportError:
        raise NosinkError(f'{purpose} needs pyarrow: pip install "nosink[{extra}]"') from None
    return pyarrow


def not_utf8(path: Path, name: str | None = None) -> NosinkError:
    """The error for a text file that does not decode as UTF-8, naming its first bad line and byte.

    Text files are decoded in chunks, so the UnicodeDecodeError does not tell the line; this
    runs only on that error path and reads the file again, line by line, to find it.
    """
    with open(path, "rb") as handle:
        for line_number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                byte = line[error.start : error.start + 1].hex()
                where = f"{name or path}, line {line_number}"
                return NosinkError(f"{where}: not UTF-8 text (the byte 0x{byte}); save it as UTF-8")
    return NosinkError(f"{name or path}: not UTF-8 text; save it as UTF-8")  # only if the file changed meanwhile


def _parquet_file(path: Path) -> Any:
    pa = require_pyarrow()
    try:
        return pa.parquet.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise NosinkError(f"{path}: not a Parquet file ({error})") from None
