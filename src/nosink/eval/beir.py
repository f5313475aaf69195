"""Retrieval data in BEIR's format: a corpus, queries, and relevance judgments (qrels) per split.

    FOLDER/corpus.jsonl          {"_id": ..., "title": ..., "text": ...} per line
    FOLDER/queries.jsonl         {"_id": ..., "text": ...} per line (other fields are ignored)
    FOLDER/qrels/<split>.tsv     header row, then query-id <TAB> corpus-id <TAB> score

A document is its title and text joined by one space (MTEB's rule; the text alone when the title is
empty). The queries of a split are those with at least one judgment of score > 0 in its qrels, as in
MTEB. Ids are strings. Problems are :class:`~nosink.errors.NosinkError` naming the file and line.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nosink import tables
from nosink.corpus.reader import document_text
from nosink.errors import NosinkError

CORPUS_FILE = "corpus.jsonl"
QUERIES_FILE = "queries.jsonl"
QRELS_FOLDER = "qrels"
ID_FIELD, TITLE_FIELD, TEXT_FIELD = "_id", "title", "text"

Qrels = dict[str, dict[str, int]]  # query id -> document id -> relevance


@dataclass(frozen=True)
class BeirSplit:
    """One split of a BEIR folder: the documents, the split's judged queries and their qrels."""

    folder: Path
    split: str
    doc_ids: list[str]
    doc_texts: list[str]  # title and text joined, in corpus order
    query_ids: list[str]
    query_texts: list[str]
    qrels: Qrels

    @property
    def corpus_file(self) -> Path:
        return self.folder / CORPUS_FILE

    @property
    def qrels_file(self) -> Path:
        return qrels_path(self.folder, self.split)

    @property
    def files(self) -> list[Path]:
        """The files this split was read from (for run records)."""
        return [self.corpus_file, self.folder / QUERIES_FILE, self.qrels_file]


def qrels_path(folder: Path, split: str) -> Path:
    return folder / QRELS_FOLDER / f"{split}.tsv"


def load_beir(folder: str | Path, split: str = "test", *, limit_queries: int | None = None) -> BeirSplit:
    """Read a BEIR folder's corpus, the queries judged in ``split`` and their qrels.

    Args:
        folder: The BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``).
        split: Which qrels file: ``test``, ``train``, ``dev`` …
        limit_queries: Keep only the first N judged queries (in qrels order); the corpus is always whole.

    Raises:
        NosinkError: A missing file, a record without an id or text, a judgment that names an unknown
            document or query, or a split with no judged query.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NosinkError(f"{folder} is not a folder; give a BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    for name in (CORPUS_FILE, QUERIES_FILE):
        if not (folder / name).is_file():
            raise NosinkError(f"{folder} has no {name}: it is not a BEIR folder")
    qrels = read_qrels(folder, split)
    doc_ids, doc_texts = [], []
    for doc_id, title, text in _documents(folder / CORPUS_FILE):
        doc_ids.append(doc_id)
        doc_texts.append(document_text(title, text))
    if len(set(doc_ids)) != len(doc_ids):
        raise NosinkError(f"{folder / CORPUS_FILE} holds the same _id twice; ids must be unique")
    queries = dict(_queries(folder / QUERIES_FILE))
    known_docs = set(doc_ids)
    judged = [query for query, judgments in qrels.items() if any(score > 0 for score in judgments.values())]
    if limit_queries is not None:
        judged = judged[:limit_queries]
    for query in judged:
        if query not in queries:
            raise NosinkError(f"{qrels_path(folder, split)} judges query {query!r}, which {QUERIES_FILE} lacks")
        unknown = [doc for doc in qrels[query] if doc not in known_docs]
        if unknown:
            raise NosinkError(f"{qrels_path(folder, split)} judges document {unknown[0]!r}, which {CORPUS_FILE} lacks")
    if not judged:
        raise NosinkError(f"{qrels_path(folder, split)} has no query with a relevant document")
    kept = {query: qrels[query] for query in judged}
    return BeirSplit(folder, split, doc_ids, doc_texts, judged, [queries[q] for q in judged], kept)


def read_qrels(folder: Path, split: str) -> Qrels:
    """``qrels/<split>.tsv`` as query id -> document id -> relevance, in file order; NosinkError naming the splits."""
    path = qrels_path(folder, split)
    if not path.is_file():
        found = sorted(p.stem for p in (folder / QRELS_FOLDER).glob("*.tsv"))
        splits = ", ".join(found) or "none"
        raise NosinkError(f"{folder} has no qrels for split {split!r} ({path}); its splits: {splits}")
    qrels: Qrels = {}
    with tables.open_text(path) as handle:
        rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, None)
        if header is None:
            raise NosinkError(f"{path} is empty")
        for line, row in enumerate(rows, start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 3:
                raise NosinkError(f"{path}, line {line}: expected query-id, corpus-id and score, got {row!r}")
            query, doc, score = (cell.strip() for cell in row[:3])
            try:
                qrels.setdefault(query, {})[doc] = int(float(score))
            except ValueError:
                raise NosinkError(f"{path}, line {line}: the score {score!r} is not a number") from None
    return qrels


def _documents(path: Path) -> Iterator[tuple[str, str, str]]:
    for line, record in _records(path):
        title = record.get(TITLE_FIELD) or ""
        text = record.get(TEXT_FIELD) or ""
        if not isinstance(title, str) or not isinstance(text, str):
            raise NosinkError(f"{path.name}, line {line}: title and text must be strings")
        if not (title.strip() or text.strip()):
            raise NosinkError(f"{path.name}, line {line}: the document has neither a title nor a text")
        yield _id(record, path, line), title, text


def _queries(path: Path) -> Iterator[tuple[str, str]]:
    for line, record in _records(path):
        text = record.get(TEXT_FIELD)
        if not isinstance(text, str) or not text.strip():
            raise NosinkError(f"{path.name}, line {line}: the query has no text")
        yield _id(record, path, line), text


def _records(path: Path) -> Iterator[tables.Row]:
    with tables.open_text(path) as handle:
        try:
            yield from tables.jsonl_rows(handle, path.name)
        except UnicodeDecodeError:
            raise tables.not_utf8(path, path.name) from None


def _id(record: dict, path: Path, line: int) -> str:
    value = record.get(ID_FIELD)
    if value is None or str(value) == "":
        raise NosinkError(f"{path.name}, line {line}: the record has no {ID_FIELD!r}")
    return str(value)
