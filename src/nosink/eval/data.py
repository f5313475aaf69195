"""Loaders for evaluation data: sentence pairs (STS), labelled texts (classification), tagged sentences (NER).

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
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from nosink import tables
from nosink.errors import NosinkError
from nosink.io import sha256_of

__all__ = [
    "HUB_PREFIX",
    "LabeledTexts",
    "PairsData",
    "TaggedSentences",
    "file_digest",
    "is_hub_dataset",
    "load_conll",
    "load_labeled",
    "load_pairs",
]

_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_SICK_COLUMNS = ("sentence_A", "sentence_B", "relatedness_score")
_PAIR_COLUMNS = (_SICK_COLUMNS, ("sentence1", "sentence2", "score"))  # SICK, then MTEB/HF STS datasets
_STSB_PATTERN = "sts-*.csv"
_STSB_FIELDS = 7  # genre, file, year, id, score, sentence1, sentence2 (some lines carry more)
_EMOTION_HEADERS = ("text;label_name", "text;label")
_LABEL_COLUMNS = (("text", "category"), ("text", "label"), ("text", "label_name"))  # Banking77, generic
_INVISIBLE = str.maketrans("", "", "\ufeff\u200b")  # BOM / zero-width space inside CoNLL tokens
_LANG_PREFIX = re.compile(r"^([a-z]{2,3}:)")  # WikiANN token prefix such as "en:"
_DOCSTART = "-DOCSTART-"
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


@dataclass(frozen=True)
class TaggedSentences:
    """Sentences as lists of words with one tag per word (CoNLL, IOB2 for NER)."""

    tokens: list[list[str]]
    tags: list[list[str]]

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.tags):
            raise NosinkError(f"tokens and tags differ in length: {len(self.tokens)} and {len(self.tags)} sentences")
        for index, (words, tags) in enumerate(zip(self.tokens, self.tags, strict=True)):
            if len(words) != len(tags):
                raise NosinkError(f"sentence {index} has {len(words)} tokens but {len(tags)} tags")

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def n_tokens(self) -> int:
        """Words over all sentences."""
        return sum(len(words) for words in self.tokens)

    def select(self, indices: Sequence[int]) -> TaggedSentences:
        """The sentences at ``indices``, in that order."""
        return TaggedSentences([self.tokens[i] for i in indices], [self.tags[i] for i in indices])


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
    _check_limit(limit)
    named = (text_a, text_b, score)
    if is_hub_dataset(path):
        path, columns, records = _hub_table(str(path))
    else:
        path = _existing_file(path)
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
    _check_not_empty(path, gold, "pairs")
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
    _check_limit(limit)
    names: tuple[str, ...] = ("text", "label")
    if is_hub_dataset(path):
        path, columns, records = _hub_table(str(path))
    else:
        path = _existing_file(path)
        emotion = text is None and label is None and _first_line(path).strip() in _EMOTION_HEADERS
        columns, records = (list(names), _semicolon_records(path)) if emotion else _table(path)
    names = _resolve_columns(path, columns, (text, label), ((*names,), *_LABEL_COLUMNS), names)
    texts: list[str] = []
    labels: list[str] = []
    for line, record in _take(records, limit):
        texts.append(_text(record, names[0], path, line))
        labels.append(_label(record, names[1], path, line))
    _check_not_empty(path, texts, "examples")
    return LabeledTexts(texts, labels)


def load_conll(path: str | Path, *, strip_prefix: str | None = None, limit: int | None = None) -> TaggedSentences:
    """Load a CoNLL column file: the token is the first column, the tag the last one.

    Columns are separated by tabs (when a line has a tab) or else by spaces. Any whitespace-only
    line ends a sentence (WNUT17 uses both empty lines and lines holding one tab). A line holding
    only U+FEFF is skipped, as are ``-DOCSTART-`` lines (CoNLL-2003). U+FEFF and U+200B are removed
    from tokens; a token that becomes empty is dropped with its tag.

    Args:
        path: The file.
        strip_prefix: A prefix to remove from every token that starts with it (WikiANN: ``"en:"``).
            ``None`` (default) detects it: when every token loaded starts with the same language
            prefix (2-3 lowercase letters and a colon, as in WikiANN), that prefix is removed. ``""``
            never strips.
        limit: Keep only the first ``limit`` sentences.

    Returns:
        The sentences, in file order.

    Raises:
        NosinkError: A missing file, a line without a tag (with its line number), or no sentences.
    """
    _check_limit(limit)
    sentences: list[tuple[list[str], list[str]]] = []
    source = _hub_sentences(str(path)) if is_hub_dataset(path) else _conll_sentences(path := _existing_file(path))
    for words, tags in source:
        sentences.append((words, tags))
        if limit is not None and len(sentences) >= limit:
            break
    _check_not_empty(path, sentences, "sentences")
    prefix = _detect_prefix(sentences) if strip_prefix is None else strip_prefix
    if prefix:
        sentences = [_strip_prefix(words, tags, prefix) for words, tags in sentences]
        sentences = [(words, tags) for words, tags in sentences if words]
    return TaggedSentences([words for words, _ in sentences], [tags for _, tags in sentences])


def file_digest(path: str | Path) -> str:
    """The sha256 of a file's bytes, as 64 hex digits (for result records)."""
    return sha256_of(_existing_file(path))


# -------------------------------------------------------------------- files and tables


def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise NosinkError(f"{path}: no such file")
    if not path.is_file():
        raise NosinkError(f"{path}: not a file")
    return path


def _check_limit(limit: int | None) -> None:
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise NosinkError(f"limit (--limit) must be a positive integer, or None for all, got {limit!r}")


def _check_not_empty(path: Path, items: Sequence[object], what: str) -> None:
    if not items:
        raise NosinkError(f"{path}: no {what} found")


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
    _check_not_empty(path, gold, "pairs")
    return PairsData(a_all, b_all, gold)


# -------------------------------------------------------------------- CoNLL


def _conll_sentences(path: Path) -> Iterator[tuple[list[str], list[str]]]:
    try:
        yield from _conll_lines(path)
    except UnicodeDecodeError as error:
        raise NosinkError(f"{path}: not UTF-8 text ({error.reason}); save it as UTF-8") from None


def _conll_lines(path: Path) -> Iterator[tuple[list[str], list[str]]]:
    words: list[str] = []
    tags: list[str] = []
    with _open(path) as handle:
        for line, raw in enumerate(handle, start=1):
            raw = raw.rstrip("\r\n")
            if not raw.strip():  # any whitespace-only line separates sentences
                if words:
                    yield words, tags
                words, tags = [], []
                continue
            if not raw.translate(_INVISIBLE).strip():
                continue  # a line holding only U+FEFF (WNUT17 dev ends with one)
            token, tag = _conll_fields(raw, path, line)
            if token == _DOCSTART:
                continue
            token = token.translate(_INVISIBLE)
            if token:
                words.append(token)
                tags.append(tag)
    if words:
        yield words, tags


def _conll_fields(raw: str, path: Path, line: int) -> tuple[str, str]:
    fields = [field.strip() for field in (raw.split("\t") if "\t" in raw else raw.split())]
    fields = [field for field in fields if field]
    if len(fields) < 2:
        raise NosinkError(f"{path}, line {line}: expected a token and a tag, got {raw!r:.60}")
    return fields[0], fields[-1]


def _detect_prefix(sentences: list[tuple[list[str], list[str]]]) -> str:
    match = _LANG_PREFIX.match(sentences[0][0][0])
    if match is None:
        return ""
    prefix = match.group(1)
    every = all(word.startswith(prefix) for words, _ in sentences for word in words)
    return prefix if every else ""


def _strip_prefix(words: list[str], tags: list[str], prefix: str) -> tuple[list[str], list[str]]:
    kept = [(w.removeprefix(prefix), t) for w, t in zip(words, tags, strict=True) if w.removeprefix(prefix)]
    return [w for w, _ in kept], [t for _, t in kept]


# -------------------------------------------------------------------- Hugging Face datasets

HUB_PREFIX = "hf:"
_HUB_SPEC = re.compile(r"^hf:(?P<name>[^:@]+)(?::(?P<config>[^@]+))?(?:@(?P<split>.+))?$")


def is_hub_dataset(path: str | Path) -> bool:
    """Whether ``path`` names a Hugging Face dataset: ``hf:NAME[:CONFIG][@SPLIT]`` (default split ``test``)."""
    return isinstance(path, str) and path.startswith(HUB_PREFIX)


def _hub_dataset(spec: str):
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


def _hub_table(spec: str) -> tuple[Path, list[str], Iterator[Record]]:
    """A dataset as a table: its column names and (row number, row) records."""
    dataset = _hub_dataset(spec)
    return Path(spec), list(dataset.column_names), ((i + 1, dict(row)) for i, row in enumerate(dataset))


def _hub_sentences(spec: str) -> Iterator[tuple[list[str], list[str]]]:
    """Sentences of a token-classification dataset (columns ``tokens`` and ``ner_tags``, tags as names)."""
    dataset = _hub_dataset(spec)
    missing = {"tokens", "ner_tags"} - set(dataset.column_names)
    if missing:
        raise NosinkError(
            f"{spec}: a NER dataset needs columns tokens and ner_tags; columns are {dataset.column_names}"
        )
    names = getattr(dataset.features["ner_tags"].feature, "names", None)
    for row in dataset:
        tags = [names[t] if names is not None and isinstance(t, int) else str(t) for t in row["ner_tags"]]
        yield [str(token) for token in row["tokens"]], tags
