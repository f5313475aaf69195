"""A FAISS vector index over an embedded corpus, and search with the corpus's own encoder.

    OUT_DIR/index/index.faiss   the FAISS index; vector ``position`` = the record's place in input order
    OUT_DIR/index/index.json    kind, count, dimension, rows per shard, and the corpus it was built from
    OUT_DIR/index/bm25/         a BM25 index of the stored texts (:mod:`nosink.index.lexical`), when the corpus
                                holds its texts: lexical and hybrid search (:mod:`nosink.index.fusion`)

Vectors are L2-normalised before they are indexed, so the inner product is the cosine
similarity. ``flat`` search is exact; ``hnsw`` is approximate (a graph; faster on large corpora).
Ids and texts stay in the corpus's shard files and are read only for the hits.

The index remembers the corpus it was built from (the manifest's encoder, instruction and counts,
and a digest of every shard file's Parquet footer, which holds its sizes and column statistics);
loading refuses an index whose corpus has since changed, with a message that says to rebuild it.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np
from tqdm.auto import tqdm

from nosink import __version__
from nosink.corpus.shards import (
    check_corpus_dir,
    iter_shards,
    read_json_object,
    read_manifest,
    require_pyarrow,
    shard_path,
    write_json_atomic,
)
from nosink.errors import Choice, NosinkError, check_positive
from nosink.index.fusion import HybridSearch, ordered
from nosink.plan import Plan
from nosink.pooling import Pooling
from nosink.recipe import Recipe

if TYPE_CHECKING:
    from nosink.encoder import Encoder

INDEX_DIR = "index"
LEXICAL_DIR = "bm25"
INDEX_FILE = "index.faiss"
INDEX_META = "index.json"
INDEX_FORMAT = "nosink-index/1"
# Manifest fields that identify the corpus; a change to any of them makes an index stale. Those a
# manifest lacks count as None on both sides ("input" holds the input's SHA-256, "created" the run's start).
IDENTITY_FIELDS = (
    "format",
    "records",
    "shards",
    "shard_size",
    "dimension",
    "normalized",
    "store_text",
    "encoder",
    "instruction",
    "input",
    "created",
)
DEFAULT_HNSW_M = 32
DEFAULT_EF_CONSTRUCTION = 200
DEFAULT_EF_SEARCH = 128
_FAISS_HINT = 'vector search needs FAISS: pip install "nosink[index]"'
_FOOTER_TAIL = 8  # a Parquet file ends with a 4-byte little-endian footer length and b"PAR1"


def require_faiss() -> Any:
    """The ``faiss`` module, or a NosinkError that names the extra to install."""
    try:
        import faiss
    except ImportError:
        raise NosinkError(_FAISS_HINT) from None
    return faiss


class IndexKind(Choice):
    """How the vectors are searched: ``flat`` (exact, the default) or ``hnsw`` (approximate)."""

    FLAT = "flat"
    HNSW = "hnsw"

    @classmethod
    def noun(cls) -> str:
        return "index kind"


@dataclass(frozen=True)
class Hit:
    """One search result: the record's id, its cosine similarity to the query, its place, its text."""

    id: str
    score: float
    position: int  # the record's 0-based place in the corpus's input order
    text: str | None  # None when the corpus was embedded without its texts


def index_dir(out_dir: str | Path) -> Path:
    """The folder that holds the index of the corpus in ``out_dir``."""
    return Path(out_dir) / INDEX_DIR


# -------------------------------------------------------------------- building


def build_index(
    out_dir: str | Path,
    *,
    kind: IndexKind | str = IndexKind.FLAT,
    hnsw_m: int = DEFAULT_HNSW_M,
    ef_construction: int = DEFAULT_EF_CONSTRUCTION,
    ef_search: int = DEFAULT_EF_SEARCH,
    lexical: bool | None = None,
    show_progress_bar: bool | None = None,
) -> VectorIndex:
    """Index every vector of a finished corpus and write ``OUT_DIR/index/``; with the corpus's texts, a BM25 index too.

    Shards are read one at a time, so memory holds the index and one shard. Vectors are
    L2-normalised on the way in (zero vectors stay zero), so scores are cosine similarities. The
    files are replaced atomically; a build that dies half way leaves the old index or none.

    Args:
        out_dir: The corpus folder (``manifest.json`` and ``shards/``).
        kind: ``flat`` (exact) or ``hnsw`` (approximate).
        hnsw_m: HNSW graph degree (neighbours per node); more is more accurate, larger and slower.
        ef_construction: HNSW candidate list size while building.
        ef_search: HNSW candidate list size while searching (the default; ``search`` can override it).
        lexical: Also build the BM25 index of the stored texts (``OUT_DIR/index/bm25/``) for lexical and hybrid
            search; None: when the corpus stores its texts. True for a corpus without texts is refused.
        show_progress_bar: A bar over the shards; None shows it for corpora of more than one shard.

    Returns:
        The new index, ready to search.

    Raises:
        NosinkError: ``out_dir`` is not a finished corpus, its shards disagree with its manifest,
            a setting is out of range, or FAISS is not installed.
    """
    kind = IndexKind.coerce(kind)
    check_positive(hnsw_m=hnsw_m, ef_construction=ef_construction, ef_search=ef_search)
    faiss = require_faiss()
    manifest = _finished_manifest(out_dir)
    if lexical is None:
        lexical = bool(manifest.get("store_text"))
    elif lexical and not manifest.get("store_text"):
        raise NosinkError(
            f"{out_dir} holds no texts, so it has nothing to index for BM25; embed it with --store-text "
            "(store_text=True), or build without the lexical index"
        )
    dim = int(manifest["dimension"])
    fingerprint = corpus_fingerprint(out_dir, manifest)
    started = time.perf_counter()
    if kind is IndexKind.FLAT:
        index = faiss.IndexFlatIP(dim)
        hnsw = None
    else:
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        hnsw = {"m": hnsw_m, "ef_construction": ef_construction, "ef_search": ef_search}
    shard_rows: list[int] = []
    show = manifest["shards"] > 1 if show_progress_bar is None else show_progress_bar
    shards = iter_shards(out_dir, texts=False)
    for shard in tqdm(shards, total=manifest["shards"], desc="indexing", unit="shard", disable=not show):
        vectors = shard.embeddings  # [n, D] float32
        if vectors.shape[1] != dim:
            raise NosinkError(
                f"shard {shard.index} of {out_dir} has vectors of dimension {vectors.shape[1]}, "
                f"the manifest says {dim}; the corpus is damaged, embed it again"
            )
        index.add(normalize_rows(vectors))
        shard_rows.append(int(vectors.shape[0]))
    if sum(shard_rows) != manifest["records"]:
        raise NosinkError(
            f"{out_dir} has {sum(shard_rows)} vectors in its shards, the manifest says {manifest['records']}; "
            "the corpus is damaged, embed it again"
        )
    if corpus_fingerprint(out_dir, manifest) != fingerprint:
        raise NosinkError(f"{out_dir} changed while it was being indexed; run `nosink index build` again")
    meta = {
        "format": INDEX_FORMAT,
        "kind": kind.value,
        "metric": "cosine",
        "count": int(index.ntotal),
        "dimension": dim,
        "hnsw": hnsw,
        "shard_rows": shard_rows,
        "corpus": _identity(manifest),
        "corpus_fingerprint": fingerprint,
        "build_seconds": round(time.perf_counter() - started, 3),
        "versions": {"nosink": __version__, "faiss": getattr(faiss, "__version__", "unknown")},
    }
    _write_index(index_dir(out_dir), index, meta, faiss)
    _write_lexical(out_dir, fingerprint, build=lexical)
    return VectorIndex(out_dir, index, meta, manifest, lexical=_load_lexical(out_dir, fingerprint))


def _write_lexical(out_dir: str | Path, fingerprint: str, *, build: bool) -> None:
    """Replace ``OUT_DIR/index/bm25/`` with a BM25 index of the stored texts (or remove it when not ``build``)."""
    import shutil

    from nosink.index.lexical import Bm25Index

    folder = index_dir(out_dir) / LEXICAL_DIR
    shutil.rmtree(folder, ignore_errors=True)  # an older one describes an older corpus
    if not build:
        return
    texts = [text for shard in iter_shards(out_dir, texts=True) for text in (shard.texts or [])]
    partial = folder.with_name(f".{LEXICAL_DIR}.tmp-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        Bm25Index.build(texts).save(partial, meta={"corpus_fingerprint": fingerprint})
        os.replace(partial, folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _load_lexical(out_dir: str | Path, fingerprint: str) -> Any:
    """The corpus's BM25 index, or None without one; NosinkError when it was built from another state of the corpus."""
    from nosink.index.lexical import SETTINGS_FILE, Bm25Index

    folder = index_dir(out_dir) / LEXICAL_DIR
    if not (folder / SETTINGS_FILE).is_file():
        return None
    lexical = Bm25Index.load(folder)
    if lexical.meta.get("corpus_fingerprint") != fingerprint:
        raise NosinkError(
            f"the BM25 index in {folder} was built from another state of the corpus; "
            f"rebuild it with `nosink index build {out_dir}`"
        )
    return lexical


def _write_index(folder: Path, index: Any, meta: dict[str, Any], faiss: Any) -> None:
    """Replace the index files so that ``index.json`` exists only beside the index it describes."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / INDEX_FILE
    temporary = folder / f".{INDEX_FILE}.tmp-{os.getpid()}"
    try:
        faiss.write_index(index, str(temporary))
        meta = meta | {"index_sha256": file_sha256(temporary)}  # checked at every load: a damaged file is refused
        (folder / INDEX_META).unlink(missing_ok=True)  # a crash from here on leaves no index, never a wrong one
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    write_json_atomic(folder / INDEX_META, meta)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as a new C-contiguous float32 array; zero rows stay zero.

    Args:
        vectors: [n, D] array of any float dtype.

    Returns:
        [n, D] float32.
    """
    vectors = np.array(vectors, dtype=np.float32, order="C")  # [n, D], a copy
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)  # [n, 1]
    np.divide(vectors, norms, out=vectors, where=norms > 0)
    return vectors


# -------------------------------------------------------------------- staleness


def corpus_fingerprint(out_dir: str | Path, manifest: dict[str, Any]) -> str:
    """A digest of every shard file's size and Parquet footer (row counts, sizes, min/max statistics).

    Reads a few kilobytes per shard, so it is cheap to check at every load, and it changes when
    a shard is written again with other vectors, ids or texts.

    Raises:
        NosinkError: A shard file is missing or is not a Parquet file.
    """
    digest = hashlib.sha256()
    for number in range(int(manifest["shards"])):
        path = shard_path(out_dir, number)
        try:
            with open(path, "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                if size < 2 * _FOOTER_TAIL:
                    raise NosinkError(f"{path} is not a Parquet shard; the corpus is damaged, embed it again")
                handle.seek(size - _FOOTER_TAIL)
                tail = handle.read(_FOOTER_TAIL)  # footer length (4 bytes), b"PAR1"
                length = int.from_bytes(tail[:4], "little")
                if tail[4:] != b"PAR1" or length > size - _FOOTER_TAIL:
                    raise NosinkError(f"{path} is not a Parquet shard; the corpus is damaged, embed it again")
                handle.seek(size - _FOOTER_TAIL - length)
                footer = handle.read(length)
        except FileNotFoundError:
            raise NosinkError(f"shard {path} is missing; the corpus is damaged, embed it again") from None
        digest.update(f"{number}:{size}:{length}:".encode())
        digest.update(footer)
    return digest.hexdigest()


def _identity(manifest: dict[str, Any]) -> dict[str, Any]:
    return {name: manifest.get(name) for name in IDENTITY_FIELDS}


def _finished_manifest(out_dir: str | Path) -> dict[str, Any]:
    check_corpus_dir(out_dir)
    manifest = read_manifest(out_dir)
    if not manifest.get("complete"):
        raise NosinkError(
            f"{out_dir} is not a finished corpus (its embedding run is incomplete); "
            "finish it by running the same `nosink embed` command again, then index it"
        )
    missing = [name for name in ("shards", "records", "dimension") if not isinstance(manifest.get(name), int)]
    if missing:
        raise NosinkError(f"the manifest of {out_dir} lacks {', '.join(missing)}; the corpus is damaged")
    return manifest


# -------------------------------------------------------------------- searching


class VectorIndex:
    """A built index of a corpus: cosine search by vector, hits with ids and (if stored) texts.

    Build it with :func:`build_index` or load it with :meth:`load`.
    """

    def __init__(
        self, out_dir: str | Path, index: Any, meta: dict[str, Any], manifest: dict[str, Any], *, lexical: Any = None
    ) -> None:
        self.out_dir = Path(out_dir)
        self.index = index  # the faiss index
        self.lexical = lexical  # the BM25 index of the stored texts (nosink.index.lexical.Bm25Index), or None
        self.meta = meta
        self.manifest = manifest
        self.kind = IndexKind.coerce(meta["kind"])
        self.count = int(meta["count"])
        self.dimension = int(meta["dimension"])
        self.ef_search = int((meta.get("hnsw") or {}).get("ef_search", DEFAULT_EF_SEARCH))
        self._starts = np.cumsum([0, *meta["shard_rows"]])  # [S + 1]: first position of each shard, then count

    @classmethod
    def load(cls, out_dir: str | Path) -> VectorIndex:
        """Load ``OUT_DIR/index/``, refusing it when the corpus changed after it was built.

        Raises:
            NosinkError: No corpus or no index there, the corpus is incomplete or was embedded
                again since the build (rebuild with ``nosink index build``), or FAISS is missing.
        """
        faiss = require_faiss()
        folder = index_dir(out_dir)
        check_corpus_dir(out_dir)
        if not (folder / INDEX_META).is_file() or not (folder / INDEX_FILE).is_file():
            raise NosinkError(f"{out_dir} has no index; build one with `nosink index build {out_dir}`")
        rebuild = f"rebuild it with `nosink index build {out_dir}`"
        meta = read_json_object(folder / INDEX_META, "nosink index file", rebuild)
        if meta.get("format") != INDEX_FORMAT:
            found = meta.get("format")
            raise NosinkError(
                f"{folder / INDEX_META} has format {found!r}; this nosink reads {INDEX_FORMAT!r}; {rebuild}"
            )
        missing = [name for name in ("kind", "count", "dimension", "shard_rows", "index_sha256") if name not in meta]
        if missing:
            raise NosinkError(
                f"{folder / INDEX_META} is not a valid nosink index file: it lacks {', '.join(missing)}; {rebuild}"
            )
        manifest = _current_manifest(out_dir, meta)
        if file_sha256(folder / INDEX_FILE) != meta["index_sha256"]:
            raise NosinkError(
                f"{folder / INDEX_FILE} does not match the SHA-256 that {INDEX_META} recorded when it was built "
                f"(a damaged or replaced file); {rebuild}"
            )
        try:
            index = faiss.read_index(str(folder / INDEX_FILE))
        except RuntimeError:  # faiss's message is a C++ location; the file is what matters
            raise NosinkError(f"{folder / INDEX_FILE} cannot be read by FAISS (a damaged file?); {rebuild}") from None
        if index.ntotal != meta["count"] or index.d != meta["dimension"]:
            raise NosinkError(
                f"{folder / INDEX_FILE} holds {index.ntotal} vectors of dimension {index.d}, {INDEX_META} says "
                f"{meta['count']} of {meta['dimension']} (an interrupted build?); {rebuild}"
            )
        return cls(out_dir, index, meta, manifest, lexical=_load_lexical(out_dir, meta["corpus_fingerprint"]))

    @property
    def store_text(self) -> bool:
        """Whether the corpus holds its texts (hits then carry them)."""
        return bool(self.manifest.get("store_text"))

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"VectorIndex({str(self.out_dir)!r}, kind='{self.kind.value}', count={self.count}, D={self.dimension})"

    def search(
        self,
        queries: np.ndarray,
        *,
        k: int = 10,
        ef_search: int | None = None,
        texts: bool = True,
    ) -> list[list[Hit]]:
        """The ``k`` most cosine-similar records of every query, best first.

        Args:
            queries: [Q, D] query vectors (normalised here; any scale works).
            k: Hits per query; more than the corpus holds is clamped to its size.
            ef_search: HNSW candidate list size (default: the build's; at least ``k`` is used).
            texts: Read the hits' texts (when the corpus stored them); False leaves them None.

        Returns:
            One list of hits per query, in query order.

        Raises:
            NosinkError: ``queries`` is not a finite [Q, D] array of the index's dimension, or
                ``k`` / ``ef_search`` is not a positive integer.
        """
        check_positive(k=k)
        queries = np.asarray(queries)
        if queries.ndim != 2 or queries.shape[1] != self.dimension:
            raise NosinkError(
                f"queries must be a [Q, {self.dimension}] array for this index, got shape {tuple(queries.shape)}"
            )
        if not np.issubdtype(queries.dtype, np.number) or not np.isfinite(queries).all():
            raise NosinkError("queries must be finite numbers (no NaN or inf)")
        k = min(k, self.count)
        if k == 0 or queries.shape[0] == 0:
            return [[] for _ in range(queries.shape[0])]
        if self.kind is IndexKind.HNSW:
            ef = self.ef_search if ef_search is None else ef_search
            check_positive(ef_search=ef)
            self.index.hnsw.efSearch = max(ef, k)
        scores, positions = self.index.search(normalize_rows(queries), k)  # [Q, k] float32, [Q, k] int64
        wanted = sorted({int(p) for p in positions.ravel() if p >= 0})
        records = self.records(wanted, texts=texts)
        return [
            [
                _hit(records, int(position), float(score))
                for score, position in zip(row_scores, row_positions, strict=True)
                if position >= 0
            ]
            for row_scores, row_positions in zip(scores, positions, strict=True)
        ]

    def search_lexical(self, queries: list[str], *, k: int = 10, texts: bool = True) -> list[list[Hit]]:
        """The ``k`` best BM25 hits of every query text (scores are BM25's); NosinkError without a BM25 index."""
        check_positive(k=k)
        lexical = self.require_lexical()
        positions, scores = lexical.search(list(queries), k=min(k, self.count))  # [Q, k] each; -1 = no hit
        records = self.records(sorted({int(p) for p in positions.ravel() if p >= 0}), texts=texts)
        return [
            [_hit(records, int(p), float(s)) for p, s in zip(row, row_scores, strict=True) if p >= 0]
            for row, row_scores in zip(positions, scores, strict=True)
        ]

    def require_lexical(self) -> Any:
        """The BM25 index, or a NosinkError that says how to get one."""
        if self.lexical is None:
            how = "rebuild the index" if self.store_text else "embed the corpus again with --store-text, then index it"
            raise NosinkError(f"{self.out_dir} has no BM25 index for lexical or hybrid search; {how}")
        return self.lexical

    def records(self, positions: list[int], *, texts: bool = True) -> dict[int, tuple[str, str | None]]:
        """Id and text (None if not stored or not asked for) of records by position, read from their shards."""
        pa = require_pyarrow()
        found: dict[int, tuple[str, str | None]] = {}
        positions_array = np.asarray(positions, dtype=np.int64)  # [P]
        if positions_array.size and (positions_array.min() < 0 or positions_array.max() >= self.count):
            raise NosinkError(f"positions must be in [0, {self.count})")
        shard_of = np.searchsorted(self._starts, positions_array, side="right") - 1  # [P]
        columns = ["id", "text"] if texts and self.store_text else ["id"]
        for shard in np.unique(shard_of):
            chosen = positions_array[shard_of == shard]  # [p]
            rows = chosen - self._starts[shard]  # [p]: rows inside the shard
            table = _read_rows(pa, shard_path(self.out_dir, int(shard)), rows, columns)
            ids = table.column("id").to_pylist()
            values = table.column("text").to_pylist() if "text" in columns else [None] * len(ids)
            for position, id_, text in zip(chosen, ids, values, strict=True):
                found[int(position)] = (str(id_), text)
        return found


def _hit(records: dict[int, tuple[str, str | None]], position: int, score: float) -> Hit:
    id_, text = records[position]
    return Hit(id=id_, score=score, position=position, text=text)


def _read_rows(pa: Any, path: Path, rows: np.ndarray, columns: list[str]) -> Any:
    """Rows (in the given order) of some columns of a Parquet file, reading only the row groups that hold them."""
    file = pa.parquet.ParquetFile(path)
    sizes = [file.metadata.row_group(g).num_rows for g in range(file.num_row_groups)]
    group_starts = np.cumsum([0, *sizes])  # [G + 1]
    groups = np.searchsorted(group_starts, rows, side="right") - 1  # [p]: the row group of each row
    needed = sorted({int(g) for g in groups})
    table = file.read_row_groups(needed, columns=columns)  # the needed groups, concatenated in order
    start_in_table = dict(zip(needed, np.cumsum([0, *(sizes[g] for g in needed)]), strict=False))
    take = [int(start_in_table[int(g)] + r - group_starts[g]) for g, r in zip(groups, rows, strict=True)]
    return table.take(pa.array(take, type=pa.int64()))


def _current_manifest(out_dir: str | Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The corpus's manifest, after checking that it is still the corpus the index was built from."""
    rebuild = f"rebuild the index with `nosink index build {out_dir}`"
    manifest = read_manifest(out_dir)
    if not manifest.get("complete"):
        raise NosinkError(
            f"{out_dir} is being embedded again (its manifest is incomplete), so its index is stale; "
            f"finish the `nosink embed` run, then {rebuild}"
        )
    built, now = meta.get("corpus") or {}, _identity(manifest)
    changed = [name for name in IDENTITY_FIELDS if built.get(name) != now.get(name)]
    if changed:
        raise NosinkError(
            f"the index of {out_dir} is stale: the corpus was embedded again since it was built "
            f"({', '.join(changed)} changed); {rebuild}"
        )
    if corpus_fingerprint(out_dir, manifest) != meta.get("corpus_fingerprint"):
        raise NosinkError(f"the index of {out_dir} is stale: its shard files changed since it was built; {rebuild}")
    return manifest


# -------------------------------------------------------------------- retrieval


class Retriever:
    """A corpus's index and an encoder that embeds queries the way the corpus was embedded.

    Build it with :meth:`from_corpus`, which loads the encoder the manifest names, or give it an
    already loaded one (a chat model's ``Encoder.from_model``, for retrieval-augmented generation
    with one copy of the weights); its plan, pooling and dimension must match the corpus's.
    """

    def __init__(
        self,
        encoder: Encoder,
        index: VectorIndex,
        *,
        warn_other_model: bool = True,
        hybrid: HybridSearch | None = None,
    ) -> None:
        check_encoder(encoder, index.manifest, where=str(index.out_dir), warn_other_model=warn_other_model)
        if hybrid is not None:
            index.require_lexical()
        self.encoder = encoder
        self.index = index
        self.hybrid = hybrid  # fuse dense hits with BM25's (nosink.index.fusion), or None for dense search

    @classmethod
    def from_corpus(
        cls,
        out_dir: str | Path,
        *,
        encoder: Encoder | None = None,
        model: str | None = None,
        hybrid: HybridSearch | None = None,
        **encoder_kwargs: Any,
    ) -> Retriever:
        """Load the index of ``out_dir`` and the encoder its manifest describes (or use ``encoder``).

        Args:
            out_dir: The corpus folder, with an index built by :func:`build_index`.
            encoder: An encoder to reuse instead of loading one; it must match the corpus.
            model: Load this model instead of the manifest's (the same model moved elsewhere).
            hybrid: Fuse dense hits with the corpus's BM25 hits (it needs the BM25 index that
                ``build_index`` writes for a corpus with texts).
            **encoder_kwargs: For ``Encoder.from_pretrained``, e.g. ``device="cuda"`` or
                ``dtype="float32"``; by default the manifest's plan, pooling, dtype and max_length.

        Raises:
            NosinkError: See :meth:`VectorIndex.load`; also an ``encoder`` that does not match the
                corpus, or ``encoder`` given together with loading options.
        """
        index = VectorIndex.load(out_dir)
        if encoder is None:
            from nosink.encoder import Encoder

            settings = index.manifest.get("encoder") or {}
            if not settings.get("model") and model is None:
                raise NosinkError(f"the manifest of {out_dir} names no encoder model; pass model=")
            defaults = encoder_settings(index.manifest)
            encoder = Encoder.from_pretrained(model or settings["model"], **{**defaults, **encoder_kwargs})
        elif model is not None or encoder_kwargs:
            raise NosinkError("give either encoder= or options to load one (model=, device=, ...), not both")
        return cls(encoder, index, hybrid=hybrid)

    @property
    def document_instruction(self) -> str | None:
        """The instruction the corpus's documents were embedded with (None for none)."""
        return self.index.manifest.get("instruction")

    @overload
    def search(
        self, query: str, *, k: int = ..., instruction: str | None = ..., ef_search: int | None = ...
    ) -> list[Hit]: ...

    @overload
    def search(
        self, query: list[str], *, k: int = ..., instruction: str | None = ..., ef_search: int | None = ...
    ) -> list[list[Hit]]: ...

    def search(
        self,
        query: str | list[str],
        *,
        k: int = 10,
        instruction: str | None = None,
        ef_search: int | None = None,
    ) -> list[Hit] | list[list[Hit]]:
        """The ``k`` records most similar to a query (or to each of several queries), best first.

        Args:
            query: One text, or a list of texts.
            k: Hits per query (clamped to the corpus's size).
            instruction: The queries' own task description (E5 format), e.g. "Given a question,
                retrieve passages that answer it."; None encodes the bare query. It is independent
                of the instruction the documents were embedded with (:attr:`document_instruction`).
            ef_search: HNSW candidate list size (see :meth:`VectorIndex.search`).

        Returns:
            The hits of a single query, or one list of hits per query for a list.
        """
        single = isinstance(query, str)
        texts = [query] if single else list(query)
        vectors = self.encoder.encode(texts, instruction=instruction)  # [Q, D] float32, normalised by the index
        if self.hybrid is None:
            hits = self.index.search(vectors, k=k, ef_search=ef_search)
        else:
            hits = self._fused(self.hybrid, texts, vectors, k=k, ef_search=ef_search)
        return hits[0] if single else hits

    def _fused(
        self, hybrid: HybridSearch, texts: list[str], vectors: np.ndarray, *, k: int, ef_search: int | None
    ) -> list[list[Hit]]:
        """Dense and BM25 hits (``hybrid.depth`` each) fused; a hit's score is its fused score."""
        check_positive(k=k)
        depth = max(hybrid.depth, k)
        dense = self.index.search(vectors, k=depth, ef_search=ef_search, texts=False)
        lexical = self.index.search_lexical(texts, k=depth, texts=False)
        as_run = lambda hits: {str(i): {str(h.position): h.score for h in row} for i, row in enumerate(hits)}  # noqa: E731
        fused = hybrid.fuse(as_run(dense), as_run(lexical))
        best = [[int(doc) for doc in ordered(fused.get(str(i), {}))[:k]] for i in range(len(texts))]
        records = self.index.records(sorted({p for row in best for p in row}))
        return [[_hit(records, p, fused[str(i)][str(p)]) for p in row] for i, row in enumerate(best)]


ENCODER_SETTINGS = ("plan", "pooling", "dtype", "max_length", "recipe")  # what a manifest's encoder section decides


def encoder_settings(manifest: dict[str, Any]) -> dict[str, Any]:
    """The ``Encoder.from_pretrained`` settings that embedded a corpus, from its manifest (a recipe included)."""
    settings = manifest.get("encoder") or {}
    return {name: settings[name] for name in ENCODER_SETTINGS if name in settings}


def same_model(first: str, second: str) -> bool:
    """Whether two model identities (hub names or folders) may name the same weights.

    True for the same folder, or the same last path component (a hub name and its local copy).
    """

    def resolved(name: str) -> str:
        path = Path(name)
        return str(path.resolve()) if path.exists() else name

    return resolved(first) == resolved(second) or Path(first).name == Path(second).name


def check_encoder(
    encoder: Encoder, manifest: dict[str, Any], *, where: str = "the corpus", warn_other_model: bool = True
) -> None:
    """Refuse an encoder whose plan, pooling, recipe or dimension differs from the one that embedded the corpus.

    A different model (see :func:`same_model`) only warns, unless ``warn_other_model`` is False:
    the same weights may live under a hub name and a local path.

    Raises:
        NosinkError: The plan, pooling, recipe or dimension differs.
    """
    settings = manifest.get("encoder") or {}
    problems = []
    if int(manifest.get("dimension", encoder.dim)) != encoder.dim:
        problems.append(f"dimension {encoder.dim} vs the corpus's {manifest['dimension']}")
    if settings.get("plan") is not None and str(encoder.plan) != str(Plan.coerce(settings["plan"])):
        problems.append(f"plan {encoder.plan} vs the corpus's {settings['plan']}")
    if settings.get("pooling") is not None and encoder.pooling is not Pooling.coerce(settings["pooling"]):
        problems.append(f"pooling {encoder.pooling.value} vs the corpus's {settings['pooling']}")
    if str(encoder.recipe) != str(Recipe.coerce(settings.get("recipe"))):  # no recipe key: the default recipe
        problems.append(f"recipe {encoder.recipe} vs the corpus's {settings.get('recipe') or 'default'}")
    if problems:
        raise NosinkError(
            f"this encoder does not match the one that embedded {where}: {'; '.join(problems)}; "
            "queries must be embedded the way the documents were"
        )
    model = settings.get("model")
    if warn_other_model and model and not same_model(str(model), encoder.name):
        warnings.warn(
            f"the encoder's model {encoder.name!r} is not the corpus's {model!r}; scores are meaningless "
            "unless they are the same weights",
            stacklevel=3,
        )
