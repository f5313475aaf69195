"""Loaders for evaluation tables: sentence pairs (STS) and labelled texts (classification).

Tagged sentences (NER) are in :mod:`nosink.eval.conll`; file checks and ``hf:`` datasets in
:mod:`nosink.eval.sources`.

Known formats are detected from the file name or its first line (see each loader); any other
file is read as a table with named columns: JSONL (``.jsonl``/``.ndjson``/``.json``, one object
per line) or a delimited file with a header row. The delimiter of a delimited file is the first
of tab, comma and semicolon found in its header line (for ``.csv`` files a comma wins). Files
with a tab are read without quote handling (``csv.QUOTE_NONE``: a TSV quote is a character of
the text); comma and semicolon files use RFC 4180 quoting, so quoted fields may hold newlines.

Every text has its surrounding whitespace stripped; inner whitespace is kept. Files are read as
UTF-8 (a leading BOM is dropped). Problems are reported as :class:`~nosink.errors.NosinkError`
with the file and the line number.
"""

from __future__ import annotations

import csv
import fnmatch
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from nosink import tables
from nosink.errors import NosinkError
from nosink.eval.sources import (
    check_limit,
    check_not_empty,
    existing_file,
    hub_dataset,
    is_hub_dataset,
)

__all__ = ["LabeledTexts", "PairsData", "load_labeled", "load_pairs"]

_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_SICK_COLUMNS = ("sentence_A", "sentence_B", "relatedness_score")
_PAIR_COLUMNS = (_SICK_COLUMNS, ("sentence1", "sentence2", "score"))  # SICK, then MTEB/HF STS datasets
_STSB_PATTERN = "sts-*.csv"
_STSB_FIELDS = 7  # genre, file, year, id, score, sentence1, sentence2 (some lines carry more)
_EMOTION_HEADERS = ("text;label_name", "text;label")
_LABEL_COLUMNS = (("text", "category"), ("text", "label"), ("text", "label_name"))  # Banking77, generic
Record = tuple[int, dict[str, object]]  # (1-based line number where the record starts, column → value)


# -------------------------------------------------------------------- result types


@dataclass(frozen=True)
class PairsData:
    """Sentence pairs with a gold similarity score each (STS)."""

    texts_a: list[str]
    texts_b: list[str]
    scores: list[float]

    def __post_init__(self) -> None:
        if not len(self.texts_a) == len(self.texts_b) == len(self.scores):
            raise NosinkError(
                f"texts_a, texts_b and scores differ in length: {len(self.texts_a)}, "
                f"{len(self.texts_b)}, {len(self.scores)}"
            )

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class LabeledTexts:
    """Texts with one string label each (classification)."""

    texts: list[str]
    labels: list[str]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise NosinkError(f"texts and labels differ in length: {len(self.texts)} and {len(self.labels)}")

    def __len__(self) -> int:
        return len(self.texts)

    def select(self, indices: Sequence[int]) -> LabeledTexts:
        """The items at ``indices``, in that order."""
        return LabeledTexts([self.texts[i] for i in indices], [self.labels[i] for i in indices])


# -------------------------------------------------------------------- public loaders


def load_pairs(
    path: str | Path,
    *,
    text_a: str | None = None,
    text_b: str | None = None,
    score: str | None = None,
    limit: int | None = None,
) -> PairsData:
    """Load sentence pairs with gold scores.

    Detected formats, when no column name is given:

    - STS-Benchmark (file name ``sts-*.csv``): tab separated, no header, no quoting; fields
      taken by position (genre, file, year, id, score, sentence1, sentence2); extra trailing
      fields, which some lines have, are ignored.
    - SICK (``SICK_*.txt``): a table whose header has ``sentence_A``, ``sentence_B`` and
      ``relatedness_score`` (LF or CRLF line ends).
    - Any table with columns ``sentence1``, ``sentence2`` and ``score`` (MTEB's STS datasets).

    Any other table needs the column names; a name that is given overrides the detected one.
    ``path`` may also name a Hugging Face dataset, ``hf:NAME[:CONFIG][@SPLIT]`` (see
    :func:`is_hub_dataset`), when the hub is reachable.

    Args:
        path: The file, or ``hf:NAME[:CONFIG][@SPLIT]``.
        text_a: Column of the first sentence.
        text_b: Column of the second sentence.
        score: Column of the gold score (a number).
        limit: Keep only the first ``limit`` pairs.

    Returns:
        The pairs, in file order.

    Raises:
        NosinkError: A missing file or column, a short row, an empty sentence or a score that is
            not a finite number (with its line number), or a file with no pairs.
    """
    check_limit(limit)
    named = (text_a, text_b, score)
    if is_hub_dataset(path):
        path, columns, records = _hub_table(str(path))
    else:
        path = existing_file(path)
        if all(name is None for name in named) and fnmatch.fnmatch(path.name.lower(), _STSB_PATTERN):
            return _load_stsb(path, limit)
        columns, records = _table(path)
    names = _resolve_columns(path, columns, named, _PAIR_COLUMNS, ("text_a", "text_b", "score"))
    a_all: list[str] = []
    b_all: list[str] = []
    gold: list[float] = []
    for line, record in _take(records, limit):
        a_all.append(_text(record, names[0], path, line))
        b_all.append(_text(record, names[1], path, line))
        gold.append(_number(record, names[2], path, line))
    check_not_empty(path, gold, "pairs")
    return PairsData(a_all, b_all, gold)


def load_labeled(
    path: str | Path,
    *,
    text: str | None = None,
    label: str | None = None,
    limit: int | None = None,
) -> LabeledTexts:
    """Load texts with one label each.

    Detected formats, when no column name is given:

    - Emotion (header ``text;label_name`` or ``text;label``): one example per line, the label is
      what follows the last ``;`` (so a ``;`` inside the text is kept).
    - Banking77 (CSV with header ``text,category``; quoted texts may hold newlines).
    - Any table with columns ``text`` and ``label`` (or ``label_name``).

    Labels are kept as strings (JSON numbers become their decimal text).

    Args:
        path: The file.
        text: Column of the text.
        label: Column of the label.
        limit: Keep only the first ``limit`` examples.

    Returns:
        The examples, in file order (duplicates kept).

    Raises:
        NosinkError: A missing file or column, a bad row (with its line number), or no examples.
    """
    check_limit(limit)
    names: tuple[str, ...] = ("text", "label")
    if is_hub_dataset(path):
        path, columns, records = _hub_table(str(path))
    else:
        path = existing_file(path)
        emotion = text is None and label is None and _first_line(path).strip() in _EMOTION_HEADERS
        columns, records = (list(names), _semicolon_records(path)) if emotion else _table(path)
    names = _resolve_columns(path, columns, (text, label), ((*names,), *_LABEL_COLUMNS), names)
    texts: list[str] = []
    labels: list[str] = []
    for line, record in _take(records, limit):
        texts.append(_text(record, names[0], path, line))
        labels.append(_label(record, names[1], path, line))
    check_not_empty(path, texts, "examples")
    return LabeledTexts(texts, labels)


# -------------------------------------------------------------------- files and tables


def _open(path: Path) -> TextIO:
    return tables.open_text(path)


def _first_line(path: Path) -> str:
    try:
        with _open(path) as handle:
            return handle.readline().rstrip("\r\n")
    except UnicodeDecodeError as error:
        raise NosinkError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def _take(records: Iterator[Record], limit: int | None) -> Iterator[Record]:
    for count, record in enumerate(records):
        if limit is not None and count >= limit:
            return
        yield record


def _table(path: Path) -> tuple[list[str], Iterator[Record]]:
    """Column names and the records (line, column → value) of a JSONL file or a delimited file with a header."""
    if path.suffix.lower() in _JSONL_SUFFIXES:
        return _jsonl_columns(path), _jsonl_records(path)
    header = _first_line(path)
    if not header.strip():
        raise NosinkError(f"{path}: the first line must be a header with column names, but it is empty")
    delimiter = _delimiter(path, header)
    columns = [name.strip() for name in _split_header(header, delimiter)]
    return columns, _delimited_records(path, delimiter)


def _delimiter(path: Path, header: str) -> str:
    if path.suffix.lower() == ".csv" and "," in header:
        return ","
    return next((d for d in ("\t", ",", ";") if d in header), "\t")


def _split_header(header: str, delimiter: str) -> list[str]:
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    return next(csv.reader([header], delimiter=delimiter, quoting=quoting))


def _delimited_records(path: Path, delimiter: str) -> Iterator[Record]:
    with _open(path) as handle:
        try:
            yield from tables.delimited_rows(handle, str(path), delimiter=delimiter)
        except UnicodeDecodeError:
            raise tables.not_utf8(path) from None


def _jsonl_columns(path: Path) -> list[str]:
    for _, record in _jsonl_records(path):
        return list(record)
    return []


def _jsonl_records(path: Path) -> Iterator[Record]:
    with _open(path) as handle:
        try:
            yield from tables.jsonl_rows(handle, str(path))
        except UnicodeDecodeError:
            raise tables.not_utf8(path) from None


def _semicolon_records(path: Path) -> Iterator[Record]:
    """Emotion's ``text;label`` lines: the label is what follows the last ``;``."""
    with _open(path) as handle:
        next(handle)  # the header
        for line, raw in enumerate(handle, start=2):
            raw = raw.rstrip("\r\n")
            if not raw.strip():
                continue
            body, separator, label = raw.rpartition(";")
            if not separator:
                raise NosinkError(f"{path}, line {line}: expected 'text;label', found no ';'")
            yield line, {"text": body, "label": label}


def _resolve_columns(
    path: Path,
    columns: list[str],
    given: tuple[str | None, ...],
    known: tuple[tuple[str, ...], ...],
    arguments: tuple[str, ...],
) -> tuple[str, ...]:
    """The given column names, completed from the first known set that the file has; all must exist."""
    defaults = next((names for names in known if set(names) <= set(columns)), (None,) * len(given))
    names = tuple(name if name is not None else default for name, default in zip(given, defaults, strict=True))
    missing = [arg for arg, name in zip(arguments, names, strict=True) if name is None]
    if missing:
        raise NosinkError(
            f"{path}: unknown format (columns: {', '.join(columns) or 'none'}); name the columns with "
            f"{', '.join('--' + arg.replace('_', '-') for arg in missing)} "
            f"(in Python: {', '.join(f'{arg}=' for arg in missing)})"
        )
    absent = [name for name in names if name not in columns]
    if absent:
        raise NosinkError(f"{path}: no column {', '.join(map(repr, absent))}; columns are {', '.join(columns)}")
    return tuple(str(name) for name in names)


def _field(record: dict[str, object], column: str, path: Path, line: int) -> object:
    if column not in record:
        raise NosinkError(f"{path}, line {line}: no field {column!r}")
    return record[column]


def _text(record: dict[str, object], column: str, path: Path, line: int) -> str:
    value = _field(record, column, path, line)
    if not isinstance(value, str):
        raise NosinkError(f"{path}, line {line}: {column} must be a string, got {type(value).__name__}")
    value = value.strip()
    if not value:
        raise NosinkError(f"{path}, line {line}: {column} is empty")
    return value


def _label(record: dict[str, object], column: str, path: Path, line: int) -> str:
    value = _field(record, column, path, line)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise NosinkError(f"{path}, line {line}: {column} must be a string or an integer, got {value!r:.40}")
    value = str(value).strip()
    if not value:
        raise NosinkError(f"{path}, line {line}: {column} is empty")
    return value


def _number(record: dict[str, object], column: str, path: Path, line: int) -> float:
    value = _field(record, column, path, line)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise NosinkError(f"{path}, line {line}: {column} must be a number, got {value!r:.40}") from None
    if not math.isfinite(number):
        raise NosinkError(f"{path}, line {line}: {column} must be finite, got {value!r:.40}")
    return number


# -------------------------------------------------------------------- STS-Benchmark


def _load_stsb(path: Path, limit: int | None) -> PairsData:
    a_all: list[str] = []
    b_all: list[str] = []
    gold: list[float] = []
    with _open(path) as handle:
        for line, raw in enumerate(handle, start=1):
            if limit is not None and len(gold) >= limit:
                break
            if not raw.strip():
                continue
            fields = raw.rstrip("\r\n").split("\t")  # no quoting: a quote is a character of the text
            if len(fields) < _STSB_FIELDS:
                raise NosinkError(
                    f"{path}, line {line}: expected at least {_STSB_FIELDS} tab-separated fields "
                    f"(genre, file, year, id, score, sentence1, sentence2), got {len(fields)}"
                )
            record: dict[str, object] = {"score": fields[4], "sentence1": fields[5], "sentence2": fields[6]}
            gold.append(_number(record, "score", path, line))
            a_all.append(_text(record, "sentence1", path, line))
            b_all.append(_text(record, "sentence2", path, line))
    check_not_empty(path, gold, "pairs")
    return PairsData(a_all, b_all, gold)


# -------------------------------------------------------------------- Hugging Face datasets


def _hub_table(spec: str) -> tuple[Path, list[str], Iterator[Record]]:
    """A dataset as a table: its column names and (row number, row) records."""
    dataset = hub_dataset(spec)
    return Path(spec), list(dataset.column_names), ((i + 1, dict(row)) for i, row in enumerate(dataset))
