"""The Ray engine of ``embed_corpus``: Ray Data over Parquet, an actor pool with one ``Encoder`` each.

The pending shards' records are staged as Parquet files (``OUT_DIR/.staging``) with their shard
and row numbers; Ray Data reads them, the actors compute the vectors exactly as the local engine
does, and this process gathers the rows of each shard (in order, so about one shard at a time is
held) and writes it atomically: the same file the local engine writes. Needs ``nosink[ray]``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from nosink.corpus.job import EncodeOptions, EncoderSpec, Progress, RayOptions, embed_texts
from nosink.corpus.reader import Record
from nosink.corpus.shards import Shard, require_pyarrow, write_shard
from nosink.errors import NosinkError

STAGING = ".staging"
ROWS_PER_TASK = 256  # rows an actor embeds per call
_RAY_HINT = 'the Ray engine needs its extra: pip install "nosink[ray]"'
Staged = dict[int, tuple[Path, int]]  # shard index -> (its staged input file, its rows)
Parts = dict[int, list[dict[str, np.ndarray]]]  # shard index -> its embedded batches so far


class EmbedActor:
    """One encoder per actor: staged rows in, the same rows with their vectors out."""

    def __init__(self, spec: EncoderSpec, encode: EncodeOptions, threads: int, store_text: bool) -> None:
        import torch

        torch.set_num_threads(threads)
        self.encoder = spec.load()
        self.encode = encode
        self.passed = ("shard", "row", "id", "text") if store_text else ("shard", "row", "id")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(text) for text in batch["text"]]
        vectors, truncated = embed_texts(self.encoder, texts, self.encode, lambda rows: None)  # [n, D], [n]
        return {key: batch[key] for key in self.passed} | {"embedding": vectors, "truncated": truncated}


def embed_with_ray(
    spec: EncoderSpec,
    chunks: Iterator[tuple[int, list[Record]]],
    out_dir: Path,
    *,
    store_text: bool,
    encode: EncodeOptions,
    options: RayOptions,
    progress: Progress,
) -> int:
    """Embed the pending shards on Ray and write them; returns how many texts were truncated."""
    ray = _import_ray()
    staging = Path(out_dir) / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staged = _stage(chunks, staging)
    started_here = not ray.is_initialized()
    if started_here:
        local_cpus = None if options.address else max(1, os.cpu_count() or 1)
        ray.init(address=options.address, num_cpus=local_cpus, include_dashboard=False, log_to_driver=False)
    try:
        embedded = _embedded(ray, spec, staged, store_text=store_text, encode=encode, options=options)
        return _write_shards(embedded, staged, out_dir, store_text=store_text, progress=progress)
    finally:
        if started_here:
            ray.shutdown()
        shutil.rmtree(staging, ignore_errors=True)


def _embedded(
    ray: ModuleType, spec: EncoderSpec, staged: Staged, *, store_text: bool, encode: EncodeOptions, options: RayOptions
) -> Any:
    """The Ray dataset of the staged rows with their vectors, in input order, from an autoscaling actor pool."""
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # shards finish one after another: bounded memory here
    context.enable_progress_bars = False  # ours counts texts
    cpus = ray.available_resources().get("CPU", 1)
    workers = options.workers or max(1, int(cpus // options.cpus_per_worker))
    dataset = ray.data.read_parquet([str(path) for path, _ in staged.values()])
    return dataset.map_batches(
        EmbedActor,
        fn_constructor_kwargs={
            "spec": spec,
            "encode": encode,
            "threads": max(1, int(options.cpus_per_worker)),
            "store_text": store_text,
        },
        batch_size=ROWS_PER_TASK,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=workers),  # a fixed size can wait forever for CPUs
        num_cpus=options.cpus_per_worker,
        num_gpus=options.gpus_per_worker or None,
    )


def _write_shards(embedded: Any, staged: Staged, out_dir: Path, *, store_text: bool, progress: Progress) -> int:
    """Gather the embedded batches by shard and write each shard once complete; returns the truncated count."""
    parts: Parts = {index: [] for index in staged}
    gathered = dict.fromkeys(staged, 0)  # rows of each shard received so far
    truncated = 0
    for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
        truncated += int(batch["truncated"].sum())
        progress(len(batch["row"]))
        for index in np.unique(batch["shard"]).tolist():
            part = {key: value[batch["shard"] == index] for key, value in batch.items()}
            parts[index].append(part)
            gathered[index] += len(part["row"])
            if gathered[index] >= staged[index][1]:
                _write(out_dir, index, parts.pop(index), staged[index][1], store_text=store_text)
    if parts:
        raise NosinkError(f"Ray returned too few rows for shards {sorted(parts)[:5]}")
    return truncated


def _write(out_dir: Path, index: int, parts: list[dict[str, np.ndarray]], size: int, *, store_text: bool) -> None:
    """Write one shard from its embedded batches, rows back in input order."""
    joined = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    order = np.argsort(joined["row"], kind="stable")  # [n] input order inside the shard
    if not np.array_equal(joined["row"][order], np.arange(size)):
        raise NosinkError(f"Ray returned shard {index} with missing or repeated rows")
    ids = [str(value) for value in joined["id"][order]]
    texts = [str(value) for value in joined["text"][order]] if store_text else None
    vectors = joined["embedding"][order].astype(np.float32, copy=False)  # [n, D]
    write_shard(out_dir, Shard(index, ids, vectors, texts))


def _stage(chunks: Iterator[tuple[int, list[Record]]], staging: Path) -> Staged:
    """Write each pending shard's records to ``staging`` as Parquet (shard, row, id, text), one at a time."""
    pa = require_pyarrow()
    staging.mkdir(parents=True, exist_ok=True)
    staged: Staged = {}
    for index, records in chunks:
        path = staging / f"input-{index:05d}.parquet"
        table = pa.table(
            {
                "shard": pa.array([index] * len(records), type=pa.int64()),
                "row": pa.array(range(len(records)), type=pa.int64()),
                "id": pa.array([record.id for record in records], type=pa.string()),
                "text": pa.array([record.text for record in records], type=pa.string()),
            }
        )
        pa.parquet.write_table(table, path)
        staged[index] = (path, len(records))
    return staged


def _import_ray() -> ModuleType:
    try:
        import ray
        import ray.data
    except ImportError:
        raise NosinkError(_RAY_HINT) from None
    return ray
