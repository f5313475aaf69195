"""Streaming corpus readers: JSONL, CSV/TSV and Parquet records, one at a time, never the whole file.

Every record yields an ``id`` (the ``id_field`` value as a string, or the 0-based record number
when there is no id field) and a non-empty ``text``. With a ``title_field`` (BEIR corpora have one),
the text is the title and the text joined by one space, as MTEB and BEIR read documents
(:func:`document_text`). Bad records are refused with their number.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nosink import tables
from nosink.errors import Choice, NosinkError
from nosink.io import sha256_of
from nosink.tables import TableFormat

DEFAULT_ID_FIELD = "id"
DEFAULT_TEXT_FIELD = "text"


class InputFormat(Choice):
    """Corpus file formats; ``auto`` picks one from the file's extension."""

    AUTO = "auto"
    JSONL = "jsonl"
    CSV = "csv"
    TSV = "tsv"
    PARQUET = "parquet"

    @classmethod
    def noun(cls) -> str:
        return "input format"


def document_text(title: str, text: str) -> str:
    """A titled document as retrieval models read it: ``title + " " + text``, stripped; without a title, the text."""
    return f"{title} {text}".strip() if title.strip() else text.strip()


@dataclass(frozen=True)
class Record:
    """One corpus record: its id (a string) and its text."""

    id: str
    text: str


@dataclass(frozen=True)
class CorpusSource:
    """A corpus file and how to read it: its format and the names of its id and text fields.

    ``id_field=None`` uses the field ``"id"`` when the file has one, else the record number.
    ``title_field`` (optional) names a title put before each text (:func:`document_text`).
    """

    path: Path
    format: InputFormat
    id_field: str | None = None
    text_field: str = DEFAULT_TEXT_FIELD
    title_field: str | None = None

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        input_format: InputFormat | str = InputFormat.AUTO,
        id_field: str | None = None,
        text_field: str = DEFAULT_TEXT_FIELD,
        title_field: str | None = None,
    ) -> CorpusSource:
        """Check that ``path`` is a readable file and resolve its format (from the extension for ``auto``)."""
        path = Path(path)
        if not path.is_file():
            raise NosinkError(f"{path} is not a file")
        fmt = InputFormat.coerce(input_format)
        if fmt is InputFormat.AUTO:
            table_format = tables.format_of(path)
            if table_format is None:
                known = ", ".join(sorted(tables.SUFFIXES))
                raise NosinkError(f"cannot tell the format of {path.name} ({known}); pass --input-format")
            fmt = InputFormat(table_format.value)
        return cls(path, fmt, id_field, text_field, title_field)

    def records(self) -> Iterator[Record]:
        """Every record in file order, validated; NosinkError names the first bad one.

        Without an explicit ``id_field``, record 0 decides the ids: its ``"id"`` field when it has
        one, else record numbers. A later record that has an ``"id"`` field when record 0 has none,
        or lacks one when record 0 has it, is refused rather than given a mixed or dropped id.
        """
        rows = _ROW_READERS[self.format](self)
        id_field: str | None = None
        for number, (row, fields) in enumerate(rows):
            if number == 0:
                id_field = self._resolve_id_field(fields)
            elif self.id_field is None and (DEFAULT_ID_FIELD in fields) != (id_field is not None):
                raise self._inconsistent_id(number, has_id=id_field is None)
            yield Record(self._id(row, id_field, number), self._text(row, number))

    def sha256(self) -> str:
        """The SHA-256 of the file's bytes, read in chunks."""
        return sha256_of(Path(self.path))

    def _resolve_id_field(self, fields: set[str]) -> str | None:
        if self.text_field not in fields:
            raise NosinkError(f"{self.path.name} has no field {self.text_field!r} (fields: {_names(fields)})")
        if self.id_field is None:
            return DEFAULT_ID_FIELD if DEFAULT_ID_FIELD in fields else None
        if self.id_field not in fields:
            raise NosinkError(f"{self.path.name} has no field {self.id_field!r} (fields: {_names(fields)})")
        return self.id_field

    def _inconsistent_id(self, number: int, *, has_id: bool) -> NosinkError:
        this, first = ("has", "lacks") if has_id else ("lacks", "has")
        return NosinkError(
            f"{self._where(number)} {this} an {DEFAULT_ID_FIELD!r} field but record 0 {first} one, and without "
            f"--id-field record 0 decides the ids; pass --id-field {DEFAULT_ID_FIELD} (every record then needs "
            f"one), or make every record consistent"
        )

    def _id(self, row: dict[str, Any], id_field: str | None, number: int) -> str:
        if id_field is None:
            return str(number)
        value = row.get(id_field)
        if value is None or value == "":
            raise NosinkError(f"{self._where(number)} has no {id_field!r}")
        return str(value)

    def _text(self, row: dict[str, Any], number: int) -> str:
        value = self._string(row, self.text_field, number)
        if self.title_field is not None:
            title = row.get(self.title_field)
            value = document_text("" if title is None else self._string(row, self.title_field, number), value)
        if not value.strip():
            fields = self.text_field if self.title_field is None else f"{self.title_field} and {self.text_field}"
            raise NosinkError(f"{self._where(number)} has an empty {fields!r}")
        return value

    def _string(self, row: dict[str, Any], field: str, number: int) -> str:
        value = row.get(field)
        if not isinstance(value, str):
            kind = "no" if value is None else f"a {type(value).__name__} as"
            raise NosinkError(f"{self._where(number)} has {kind} {field!r}; expected a string")
        return value

    def _where(self, number: int) -> str:
        return f"{self.path.name}: record {number}"


def _names(fields: set[str]) -> str:
    return ", ".join(sorted(fields)) or "none"


def _text_rows(source: CorpusSource) -> Iterator[tuple[dict[str, Any], set[str]]]:
    """JSONL, CSV and TSV records through the project's one reader per format (:mod:`nosink.tables`)."""
    name = source.path.name
    with tables.open_text(source.path) as handle:
        if source.format is InputFormat.JSONL:
            rows = tables.jsonl_rows(handle, name)
        else:
            rows = tables.delimited_rows(handle, name, delimiter=tables.DELIMITERS[TableFormat(source.format.value)])
        try:
            for _, row in rows:
                yield row, set(row)
        except UnicodeDecodeError:
            raise tables.not_utf8(source.path, name) from None


def _parquet_rows(source: CorpusSource) -> Iterator[tuple[dict[str, Any], set[str]]]:
    fields = set(tables.parquet_columns(source.path))
    named = (source.id_field or DEFAULT_ID_FIELD, source.text_field, source.title_field)
    wanted = [name for name in named if name in fields]
    for _, row in tables.parquet_rows(source.path, columns=wanted):
        yield row, fields


_ROW_READERS = {
    InputFormat.JSONL: _text_rows,
    InputFormat.CSV: _text_rows,
    InputFormat.TSV: _text_rows,
    InputFormat.PARQUET: _parquet_rows,
}
