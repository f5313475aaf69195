"""The on-disk layout of an embedded corpus: a manifest and atomically written Parquet shards.

    OUT_DIR/manifest.json             the job (model, plan, pooling, dtype, input digest ...) and counts
    OUT_DIR/shards/shard-00000.parquet id: string, embedding: fixed_size_list<float32>[D], text: string (optional)

Shard ``i`` always holds input records ``[i * shard_size, (i + 1) * shard_size)`` in input order,
so a shard file either exists complete (it was renamed into place) or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nosink import tables
from nosink.errors import NosinkError
from nosink.outputs import atomic_file, write_text_atomic

MANIFEST = "manifest.json"
SHARDS = "shards"
FORMAT = "nosink-embeddings/1"


def require_pyarrow() -> Any:
    """The ``pyarrow`` module, or a NosinkError that names the extra to install."""
    return tables.require_pyarrow(purpose="embedded corpora", extra="corpus")


@dataclass(frozen=True)
class Shard:
    """One shard's rows: ids [n], embeddings [n, D] float32, and texts [n] when the job stored them."""

    index: int
    ids: list[str]
    embeddings: np.ndarray
    texts: list[str] | None


def shard_path(out_dir: str | Path, index: int) -> Path:
    return Path(out_dir) / SHARDS / f"shard-{index:05d}.parquet"


def shard_count(records: int, shard_size: int) -> int:
    return (records + shard_size - 1) // shard_size


def check_corpus_dir(out_dir: str | Path) -> None:
    """NosinkError unless ``out_dir`` is an existing folder."""
    path = Path(out_dir)
    if not path.exists():
        raise NosinkError(f"corpus folder {out_dir} does not exist")
    if not path.is_dir():
        raise NosinkError(f"{out_dir} is a file, not a corpus folder; `nosink embed` writes corpus folders")


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The manifest of an embedded corpus; NosinkError when ``out_dir`` is not one."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise NosinkError(f"{out_dir} is not an embedded corpus (no {MANIFEST}); run `nosink embed` first")
    manifest = read_json_object(path, "nosink manifest", "the corpus is damaged; embed it again into a new folder")
    if manifest.get("format") != FORMAT:
        raise NosinkError(f"{path} has format {manifest.get('format')!r}; this nosink reads {FORMAT!r}")
    return manifest


def read_json_object(path: Path, what: str, remedy: str) -> dict[str, Any]:
    """The JSON object in ``path``; NosinkError naming the file, ``what`` it should be and the ``remedy``.

    Invalid JSON, bytes that are not UTF-8 and valid JSON that is not an object are all refused.
    """
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise NosinkError(f"{path} is not a valid {what}: {error}; {remedy}") from None
    except UnicodeDecodeError as error:
        raise NosinkError(f"{path} is not a valid {what}: not UTF-8 ({error.reason}); {remedy}") from None
    if not isinstance(value, dict):
        raise NosinkError(f"{path} is not a valid {what}: it holds a JSON {_json_kind(value)}, not an object; {remedy}")
    return value


def _json_kind(value: Any) -> str:
    kinds = {list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def write_json_atomic(path: Path, value: dict[str, Any]) -> None:
    """Write JSON to ``path`` atomically and durably (temporary file, fsync, rename): readers see the old file or the
    new one, never half of one, and a failed write (a full disk) leaves no temporary file behind."""
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def write_shard(out_dir: str | Path, shard: Shard) -> Path:
    """Write one shard atomically (temporary file, fsync, rename) and return its path."""
    pa = require_pyarrow()
    ids, vectors = shard.ids, np.ascontiguousarray(shard.embeddings, dtype=np.float32)  # [n, D]
    if vectors.ndim != 2 or len(ids) != vectors.shape[0]:
        raise ValueError(f"shard {shard.index}: {len(ids)} ids for embeddings of shape {vectors.shape}")
    flat = pa.array(vectors.reshape(-1), type=pa.float32())  # [n * D]
    columns = {
        "id": pa.array(ids, type=pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),  # [n] lists of D
    }
    if shard.texts is not None:
        columns["text"] = pa.array(shard.texts, type=pa.string())
    path = shard_path(out_dir, shard.index)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as temporary:
        pa.parquet.write_table(pa.table(columns), temporary)
    return path


def read_shard(out_dir: str | Path, index: int, *, texts: bool = True) -> Shard:
    """Read shard ``index``: ids, embeddings [n, D] float32 and, if stored and asked for, texts."""
    pa = require_pyarrow()
    path = shard_path(out_dir, index)
    wanted = None if texts else ["id", "embedding"]  # no text column read when it is not asked for
    table = pa.parquet.read_table(path, columns=wanted)
    column = table.column("embedding").combine_chunks()  # fixed_size_list<float32>[D], n rows
    dim = column.type.list_size
    vectors = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False)
    stored = texts and "text" in table.column_names
    return Shard(index, table.column("id").to_pylist(), vectors, table.column("text").to_pylist() if stored else None)


def shard_rows(path: Path) -> int | None:
    """Rows in a finished shard file from its footer, or None when it is missing or unreadable."""
    pa = require_pyarrow()
    try:
        return pa.parquet.ParquetFile(path).metadata.num_rows
    except (OSError, pa.ArrowInvalid):
        return None


def iter_shards(out_dir: str | Path, *, texts: bool = True) -> Iterator[Shard]:
    """Every shard of a finished corpus, in input order; NosinkError if the run is not complete."""
    manifest = read_manifest(out_dir)
    if not manifest.get("complete"):
        raise NosinkError(f"{out_dir} is not complete; finish it by running the same `nosink embed` command again")
    for index in range(manifest["shards"]):
        yield read_shard(out_dir, index, texts=texts)
