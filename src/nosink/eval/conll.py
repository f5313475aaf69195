"""CoNLL column files (and Hugging Face token-classification datasets) as tagged sentences, for the NER probe."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from nosink import tables
from nosink.errors import NosinkError
from nosink.eval.sources import check_limit, check_not_empty, existing_file, hub_dataset, is_hub_dataset

_INVISIBLE = str.maketrans("", "", "\ufeff\u200b")  # BOM / zero-width space inside CoNLL tokens
_LANG_PREFIX = re.compile(r"^([a-z]{2,3}:)")  # WikiANN token prefix such as "en:"
_DOCSTART = "-DOCSTART-"


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
    check_limit(limit)
    sentences: list[tuple[list[str], list[str]]] = []
    source = _hub_sentences(str(path)) if is_hub_dataset(path) else _conll_sentences(path := existing_file(path))
    for words, tags in source:
        sentences.append((words, tags))
        if limit is not None and len(sentences) >= limit:
            break
    check_not_empty(path, sentences, "sentences")
    prefix = _detect_prefix(sentences) if strip_prefix is None else strip_prefix
    if prefix:
        sentences = [_strip_prefix(words, tags, prefix) for words, tags in sentences]
        sentences = [(words, tags) for words, tags in sentences if words]
    return TaggedSentences([words for words, _ in sentences], [tags for _, tags in sentences])


def _conll_sentences(path: Path) -> Iterator[tuple[list[str], list[str]]]:
    try:
        yield from _conll_lines(path)
    except UnicodeDecodeError as error:
        raise NosinkError(f"{path}: not UTF-8 text ({error.reason}); save it as UTF-8") from None


def _conll_lines(path: Path) -> Iterator[tuple[list[str], list[str]]]:
    words: list[str] = []
    tags: list[str] = []
    with tables.open_text(path) as handle:
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


def _hub_sentences(spec: str) -> Iterator[tuple[list[str], list[str]]]:
    """Sentences of a token-classification dataset (columns ``tokens`` and ``ner_tags``, tags as names)."""
    dataset = hub_dataset(spec)
    missing = {"tokens", "ner_tags"} - set(dataset.column_names)
    if missing:
        raise NosinkError(
            f"{spec}: a NER dataset needs columns tokens and ner_tags; columns are {dataset.column_names}"
        )
    names = getattr(dataset.features["ner_tags"].feature, "names", None)
    for row in dataset:
        tags = [names[t] if names is not None and isinstance(t, int) else str(t) for t in row["ner_tags"]]
        yield [str(token) for token in row["tokens"]], tags
