"""BM25 over texts with ``bm25s``: the lexical baseline of ``nosink eval retrieval --model bm25`` and the lexical
half of hybrid search.

Texts are lower-cased, split into words of two or more letters or digits, stripped of English stop words and
stemmed with the Snowball English stemmer (PyStemmer), then scored with Lucene's BM25 (k1 = 1.5, b = 0.75), the
defaults of ``bm25s``. A saved index is a folder:

    FOLDER/bm25.json         the settings, the number of documents, and what the index was built from
    FOLDER/<bm25s files>     ``bm25s``'s own files (the score matrix and the vocabulary)

Needs ``bm25s`` and ``PyStemmer`` (``pip install "nosink[index]"``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nosink.errors import NosinkError, check_positive
from nosink.outputs import write_text_atomic

SETTINGS_FILE = "bm25.json"
FORMAT = "nosink-bm25/1"
_HINT = 'BM25 needs bm25s and PyStemmer: pip install "nosink[index]"'


def require_bm25s() -> Any:
    """The ``bm25s`` module, or a NosinkError that names the extra to install."""
    try:
        import bm25s
    except ImportError:
        raise NosinkError(_HINT) from None
    return bm25s


@dataclass(frozen=True)
class Bm25Settings:
    """How texts are tokenized and scored (the defaults reproduce ``bm25s``'s own)."""

    k1: float = 1.5
    b: float = 0.75
    method: str = "lucene"
    stemmer: str | None = "english"  # a PyStemmer language, or None for no stemming
    stopwords: str | None = "en"  # bm25s's stop-word list, or None

    def describe(self) -> dict[str, Any]:
        """The record of a BM25 run's model: kind ``bm25`` and these settings."""
        return {"kind": "bm25", "name": "bm25", "dim": None, "plan": None, "pooling": None, **asdict(self)}

    def tokenize(self, texts: Sequence[str]) -> Any:
        """``texts`` as bm25s tokens (its ``Tokenized``: ids and vocabulary)."""
        bm25s = require_bm25s()
        return bm25s.tokenize(list(texts), stopwords=self.stopwords, stemmer=self._stemmer(), show_progress=False)

    def _stemmer(self) -> Any:
        if self.stemmer is None:
            return None
        try:
            import Stemmer
        except ImportError:
            raise NosinkError(_HINT) from None
        return Stemmer.Stemmer(self.stemmer)


class Bm25Index:
    """A BM25 index of N texts: the best-scoring positions of each query, and a folder to save it in.

    Build it with :meth:`build` or load it with :meth:`load`.
    """

    def __init__(self, retriever: Any, settings: Bm25Settings, count: int, meta: dict[str, Any] | None = None) -> None:
        self.retriever = retriever
        self.settings = settings
        self.count = count
        self.meta = meta or {}

    @classmethod
    def build(cls, texts: Sequence[str], settings: Bm25Settings | None = None) -> Bm25Index:
        """Index ``texts`` (their positions are the ids the index returns)."""
        bm25s = require_bm25s()
        settings = settings or Bm25Settings()
        if not texts:
            raise NosinkError("a BM25 index needs at least one text")
        retriever = bm25s.BM25(k1=settings.k1, b=settings.b, method=settings.method)
        retriever.index(settings.tokenize(texts), show_progress=False)
        return cls(retriever, settings, len(texts))

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"Bm25Index(count={self.count}, k1={self.settings.k1}, b={self.settings.b})"

    def search(self, queries: Sequence[str], *, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best positions of each query, best first, and their BM25 scores.

        A query whose words match no document gets no hit: positions of score 0 come back as -1 (as FAISS
        marks missing hits), so they are never mistaken for matches.

        Returns:
            positions [Q, k] int64 (-1 for no hit) and scores [Q, k] float32.
        """
        check_positive(k=k)
        k = min(k, self.count)
        if not queries:
            return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
        tokens = self.settings.tokenize(queries)
        positions, scores = self.retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)  # [Q, k] each
        positions, scores = np.asarray(positions, dtype=np.int64), np.asarray(scores, dtype=np.float32)
        positions[scores <= 0] = -1
        return positions, scores

    def save(self, folder: str | Path, *, meta: dict[str, Any] | None = None) -> Path:
        """Write the index into ``folder`` (created); ``meta`` is stored with the settings (e.g. its source)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.retriever.save(str(folder))
        self.meta = meta or self.meta
        record = {"format": FORMAT, "settings": asdict(self.settings), "count": self.count, "meta": self.meta}
        write_text_atomic(folder / SETTINGS_FILE, json.dumps(record, indent=2) + "\n")  # last: the index is complete
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Bm25Index:
        """Load an index written by :meth:`save`; NosinkError when there is none or it is not complete."""
        bm25s = require_bm25s()
        folder = Path(folder)
        if not (folder / SETTINGS_FILE).is_file():
            raise NosinkError(f"{folder} holds no BM25 index (no {SETTINGS_FILE})")
        try:
            record = json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8"))
            settings = Bm25Settings(**record["settings"])
            count = int(record["count"])
        except (ValueError, KeyError, TypeError) as error:
            raise NosinkError(f"{folder / SETTINGS_FILE} is damaged ({error}); build the index again") from None
        if record.get("format") != FORMAT:
            raise NosinkError(
                f"{folder / SETTINGS_FILE} has format {record.get('format')!r}; this nosink reads {FORMAT}"
            )
        try:
            retriever = bm25s.BM25.load(str(folder))
        except (OSError, ValueError, KeyError) as error:
            raise NosinkError(f"the BM25 index in {folder} cannot be read ({error}); build it again") from None
        return cls(retriever, settings, count, record.get("meta") or {})
