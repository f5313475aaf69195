"""Embed a corpus into resumable Parquet shards, on this machine or on Ray.

The job is fixed before any vector is computed: the encoder (model, plan, pooling, dtype,
max_length), the instruction, normalisation, shard size and the input's SHA-256. It is written to
``manifest.json`` first; a later run into the same folder must describe the same job, or it is
refused. Shard ``i`` holds records ``[i * shard_size, (i + 1) * shard_size)`` and is renamed into
place only when complete, so a restarted run skips finished shards and recomputes the others.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from nosink import __version__
from nosink.corpus.job import (
    CorpusEmbedder,
    EncodeOptions,
    EncoderSpec,
    Progress,
    RayOptions,
    embed_texts,
    model_id,
)
from nosink.corpus.reader import CorpusSource, Record
from nosink.corpus.shards import (
    FORMAT,
    MANIFEST,
    SHARDS,
    Shard,
    read_manifest,
    require_pyarrow,
    shard_count,
    shard_path,
    shard_rows,
    write_json_atomic,
    write_shard,
)
from nosink.encoder import Encoder
from nosink.errors import Choice, NosinkError
from nosink.postprocess import finish
from nosink.readouts import encode_shared

DEFAULT_SHARD_SIZE = 10_000


class Engine(Choice):
    """Where the vectors are computed."""

    LOCAL = "local"
    RAY = "ray"

    @classmethod
    def noun(cls) -> str:
        return "engine"


@dataclass(frozen=True)
class EmbedReport:
    """What a run did: the corpus size, shards written now and skipped (finished earlier), time."""

    out_dir: Path
    records: int
    shards: int
    written_shards: int
    skipped_shards: int
    embedded_records: int
    truncated: int
    seconds: float


def embed_corpus(
    encoder: Encoder | EncoderSpec | CorpusEmbedder,
    source: CorpusSource,
    out_dir: str | Path,
    *,
    instruction: str | None = None,
    prompt: str | None = None,
    normalize: bool = True,
    store_text: bool = False,
    shard_size: int = DEFAULT_SHARD_SIZE,
    batch_size: int | None = None,
    max_tokens_per_batch: int | None = None,
    engine: Engine | str = Engine.LOCAL,
    ray: RayOptions | None = None,
    show_progress_bar: bool | None = None,
) -> EmbedReport:
    """Embed every record of ``source`` into Parquet shards under ``out_dir``; resume a run cut short.

    Args:
        encoder: A loaded ``Encoder``, or an ``EncoderSpec`` (loaded here for the local engine;
            the Ray engine loads one copy per worker and never in this process), or another
            :class:`~nosink.corpus.job.CorpusEmbedder` (a sentence-transformers baseline; local engine only).
        source: The corpus (see ``CorpusSource.open``).
        out_dir: A new or empty folder, or the folder of an earlier run of the same job.
        instruction: Task description put before every text (E5-Mistral format).
        prompt: A raw prefix put before every text instead (sentence-transformers' prompts); ``""`` for none,
            even where a saved folder has a default prompt.
        normalize: Store L2-normalised vectors (the default, ready for cosine search).
        store_text: Also store each record's text in the shards (search can then show it).
        shard_size: Records per shard: the unit of resumption.
        batch_size, max_tokens_per_batch: As for ``Encoder.encode``.
        engine: ``local`` (this process) or ``ray`` (Ray Data, one encoder per actor).
        ray: Ray settings for ``engine="ray"``.
        show_progress_bar: None shows one for corpora of 32 records or more.

    Raises:
        NosinkError: For a bad corpus, or an ``out_dir`` that holds something else or another job.
    """
    require_pyarrow()
    engine = Engine.coerce(engine)
    if shard_size < 1:
        raise NosinkError(f"shard_size must be >= 1, got {shard_size}")
    start = time.perf_counter()
    out_dir = Path(out_dir)
    if engine is Engine.RAY:  # workers must compute with the device and dtype the manifest records
        if not isinstance(encoder, (Encoder, EncoderSpec)):
            raise NosinkError("the Ray engine runs nosink encoders; embed this model with engine='local'")
        encoder = (encoder if isinstance(encoder, EncoderSpec) else EncoderSpec.of(encoder)).for_workers(
            (ray or RayOptions()).gpus_per_worker
        )
    settings = {"normalize": normalize, "store_text": store_text, "shard_size": shard_size}
    job = corpus_job(encoder, source, instruction=instruction, prompt=prompt, **settings)
    records = job["records"]
    with _opened_job(out_dir, job, source) as manifest:
        shards = manifest["shards"]
        done = {i for i in range(shards) if shard_rows(shard_path(out_dir, i)) == _rows_in(i, records, shard_size)}
        pending = [i for i in range(shards) if i not in done]
        todo = sum(_rows_in(i, records, shard_size) for i in pending)
        options = EncodeOptions(instruction, normalize, batch_size, max_tokens_per_batch, prompt)
        chunks = _pending_chunks(source, shard_size, set(pending))
        show = records >= 32 if show_progress_bar is None else show_progress_bar
        with tqdm(total=records, initial=records - todo, disable=not show, desc="embedding", unit="text") as bar:
            if not pending:
                truncated = 0
            elif engine is Engine.LOCAL:
                local = encoder.load() if isinstance(encoder, EncoderSpec) else encoder
                truncated = _embed_local(
                    local, chunks, out_dir, store_text=store_text, encode=options, progress=bar.update
                )
            else:
                from nosink.corpus.ray_engine import embed_with_ray

                truncated = embed_with_ray(
                    encoder,
                    chunks,
                    out_dir,
                    store_text=store_text,
                    encode=options,
                    options=ray or RayOptions(),
                    progress=bar.update,
                )
        write_json_atomic(out_dir / MANIFEST, manifest | {"complete": True, "finished": _now()})
        seconds = time.perf_counter() - start
        return EmbedReport(out_dir, records, shards, len(pending), len(done), todo, truncated, seconds)


def embed_corpus_shared(
    encoders: Sequence[Encoder],
    source: CorpusSource,
    out_dirs: Sequence[str | Path],
    *,
    instruction: str | None = None,
    prompt: str | None = None,
    normalize: bool = True,
    shard_size: int = DEFAULT_SHARD_SIZE,
    batch_size: int | None = None,
    show_progress_bar: bool | None = None,
) -> list[EmbedReport]:
    """:func:`embed_corpus` for one model under several plans (or read-out layers) at once, one folder each.

    Every batch runs once through the layers the plans share (:func:`nosink.readouts.encode_shared`): a
    baseline and a plan converting the top k of L layers cost (L + k) / L passes, not 2. Each folder is an
    ordinary embedded corpus, the same job that :func:`embed_corpus` with that encoder alone writes, so either
    resumes or reuses the other's shards. ``encoders`` come from one ``Encoder`` through ``with_plan`` /
    ``with_recipe`` (same prompt and pooling); the local engine only.
    """
    require_pyarrow()
    if len(encoders) != len(out_dirs) or not encoders:
        raise NosinkError(f"give one output folder per encoder: {len(encoders)} encoders, {len(out_dirs)} folders")
    if shard_size < 1:
        raise NosinkError(f"shard_size must be >= 1, got {shard_size}")
    start = time.perf_counter()
    folders = [Path(folder) for folder in out_dirs]
    settings = {"normalize": normalize, "store_text": False, "shard_size": shard_size}
    jobs = [corpus_job(e, source, instruction=instruction, prompt=prompt, **settings) for e in encoders]
    records = jobs[0]["records"]
    with contextlib.ExitStack() as stack:
        manifests = [stack.enter_context(_opened_job(f, job, source)) for f, job in zip(folders, jobs, strict=True)]
        wanted = [
            {i for i in range(m["shards"]) if shard_rows(shard_path(f, i)) != _rows_in(i, records, shard_size)}
            for f, m in zip(folders, manifests, strict=True)
        ]
        pending = set().union(*wanted)
        todo = sum(_rows_in(i, records, shard_size) for i in pending)
        show = records >= 32 if show_progress_bar is None else show_progress_bar
        per_text = max(len(encoders[0].recipe.templates), 1)  # rows per text: one per prompt template
        truncated = 0
        with tqdm(total=records, initial=records - todo, disable=not show, desc="embedding", unit="text") as bar:
            for index, chunk in _pending_chunks(source, shard_size, pending):
                group = [n for n, shards in enumerate(wanted) if index in shards]
                texts = [record.text for record in chunk]
                vectors, rows = encode_shared(
                    [encoders[n] for n in group],
                    texts,
                    instruction=instruction,
                    prompt=prompt,
                    batch_size=batch_size,
                    progress=lambda done: bar.update(done / per_text),
                )
                truncated += sum(
                    any(r.truncated for r in rows[i : i + per_text]) for i in range(0, len(rows), per_text)
                )
                for n, found in zip(group, vectors, strict=True):
                    found = finish(found, normalize=normalize)  # [n, D]
                    write_shard(folders[n], Shard(index, [record.id for record in chunk], found, None))
        for folder, manifest in zip(folders, manifests, strict=True):
            write_json_atomic(folder / MANIFEST, manifest | {"complete": True, "finished": _now()})
    seconds, shards = time.perf_counter() - start, manifests[0]["shards"]
    reports = []
    for folder, own in zip(folders, wanted, strict=True):
        embedded = sum(_rows_in(i, records, shard_size) for i in own)
        reports.append(EmbedReport(folder, records, shards, len(own), shards - len(own), embedded, truncated, seconds))
    return reports


def corpus_job(
    encoder: Encoder | EncoderSpec | CorpusEmbedder,
    source: CorpusSource,
    *,
    instruction: str | None = None,
    prompt: str | None = None,
    normalize: bool = True,
    store_text: bool = False,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> dict[str, Any]:
    """What an :func:`embed_corpus` job computes: the fields its manifest records and a resumed run must match.

    Reads the whole corpus once (to validate and count it) and hashes it. Fields that older jobs lack (a
    ``prompt``, a ``title_field``) are written only when set, so those jobs still resume.
    """
    if isinstance(encoder, EncoderSpec):
        identity = encoder.identity()
    elif isinstance(encoder, Encoder):
        identity = _loaded_identity(encoder)
    else:
        identity = encoder.corpus_identity()
    fields = {"id_field": source.id_field, "text_field": source.text_field}
    return {
        "encoder": identity,
        "instruction": instruction,
        **({"instruction_tokens": INSTRUCTION_TOKENS} if instruction else {}),
        **({"prompt": prompt} if prompt is not None else {}),
        "normalized": normalize,
        "store_text": store_text,
        "shard_size": shard_size,
        "records": _count_records(source),
        "input": {
            "sha256": source.sha256(),
            "format": source.format.value,
            **fields,
            **({"title_field": source.title_field} if source.title_field is not None else {}),
        },
    }


@contextlib.contextmanager
def _opened_job(out_dir: Path, job: dict[str, Any], source: CorpusSource) -> Iterator[dict[str, Any]]:
    """The job's manifest (see :func:`_open_job`); a new job that fails before its first shard (a bad plan, device,
    max_length …) leaves nothing behind, so the corrected command can run in the same folder."""
    created, folder_existed = not (out_dir / MANIFEST).is_file(), out_dir.exists()
    manifest = _open_job(out_dir, job, source)
    try:
        yield manifest
    except BaseException:
        if created:
            _forget_if_empty(out_dir, remove_folder=not folder_existed)
        raise


def _forget_if_empty(out_dir: Path, *, remove_folder: bool) -> None:
    """Remove a just-created job's manifest (and the folders this run made, if empty) when it holds no shard yet."""
    if any((out_dir / SHARDS).glob("shard-*")):
        return
    (out_dir / MANIFEST).unlink(missing_ok=True)
    for folder in (out_dir / SHARDS, out_dir) if remove_folder else (out_dir / SHARDS,):
        with contextlib.suppress(OSError):  # not empty: keep it
            folder.rmdir()


# -------------------------------------------------------------------- the job


# How an instruction is tokenized, recorded with it: a job embedded while instructions were still tokenized apart
# from the text (before issue 12) has no such key, so resuming it, which would mix the two, is refused.
INSTRUCTION_TOKENS = "one string with the text"


def _open_job(out_dir: Path, job: dict[str, Any], source: CorpusSource) -> dict[str, Any]:
    """The manifest of ``out_dir``: created for a new job, checked against ``job`` for a resumed one."""
    if (out_dir / MANIFEST).is_file():
        manifest = read_manifest(out_dir)
        there, now = _flatten({key: manifest.get(key) for key in job}), _flatten(job)
        differences = [key for key in now if there.get(key) != now[key]]
        if differences:
            detail = "; ".join(f"{key}: {there.get(key)!r} there, {now[key]!r} now" for key in differences)
            raise NosinkError(
                f"{out_dir} holds the vectors of a different job ({detail}); "
                "use another output folder, or delete this one to start over"
            )
        _remove_temporary_files(out_dir)
        return manifest
    if out_dir.is_dir():  # a manifest write that was cut short (killed, disk full) must not block a new start
        for leftover in out_dir.glob(f".{MANIFEST}.tmp-*"):
            leftover.unlink(missing_ok=True)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise NosinkError(f"{out_dir} exists and is not an embedded corpus; give a new or empty folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": FORMAT,
        "nosink_version": __version__,
        **job,
        "dimension": job["encoder"]["dimension"],
        "input_file": source.path.name,  # informative only: a moved or renamed input with the same bytes resumes
        "shards": shard_count(job["records"], job["shard_size"]),
        "complete": False,
        "created": _now(),
    }
    write_json_atomic(out_dir / MANIFEST, manifest)
    return manifest


def _flatten(fields: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested fields as one level: ``{"encoder": {"plan": p}}`` -> ``{"encoder.plan": p}``."""
    flat: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _remove_temporary_files(out_dir: Path) -> None:
    """Half-written shards of a killed run (their names start with a dot)."""
    for leftover in (out_dir / SHARDS).glob(".shard-*.tmp-*"):
        leftover.unlink(missing_ok=True)


def _count_records(source: CorpusSource) -> int:
    """Read the whole corpus once (validating every record, in bounded memory) and count it."""
    count = sum(1 for _ in source.records())
    if count == 0:
        raise NosinkError(f"{source.path} has no records")
    return count


def _rows_in(index: int, records: int, shard_size: int) -> int:
    return min(shard_size, records - index * shard_size)


def _pending_chunks(source: CorpusSource, shard_size: int, pending: set[int]) -> Iterator[tuple[int, list[Record]]]:
    """(shard index, its records) for the pending shards, streamed: one shard in memory at a time."""
    chunk: list[Record] = []
    index = 0
    for number, record in enumerate(source.records()):
        index = number // shard_size
        if index in pending:
            chunk.append(record)
        if (number + 1) % shard_size == 0:
            if chunk:
                yield index, chunk
            chunk = []
    if chunk:
        yield index, chunk


# -------------------------------------------------------------------- local engine


def _embed_local(
    encoder: Encoder | CorpusEmbedder,
    chunks: Iterator[tuple[int, list[Record]]],
    out_dir: Path,
    *,
    store_text: bool,
    encode: EncodeOptions,
    progress: Progress,
) -> int:
    truncated = 0
    for index, records in chunks:
        texts = [record.text for record in records]
        vectors, cut = embed_texts(encoder, texts, encode, progress)  # [n, D], [n]
        truncated += int(cut.sum())
        ids = [record.id for record in records]
        write_shard(out_dir, Shard(index, ids, vectors, texts if store_text else None))
    return truncated


# -------------------------------------------------------------------- helpers


def _loaded_identity(encoder: Encoder) -> dict[str, Any]:
    """As :meth:`EncoderSpec.identity` writes it, from a loaded encoder."""
    identity = {
        "model": model_id(encoder.name),
        "plan": str(encoder.plan),
        "pooling": encoder.pooling.value,
        "dtype": encoder.dtype_name,
        "max_length": encoder.max_length,
        "dimension": encoder.dim,
    }
    if not encoder.recipe.is_default:
        identity["recipe"] = str(encoder.recipe)
    default = encoder.prompts.get(encoder.default_prompt_name or "")
    return identity if default is None else identity | {"default_prompt": default}


def _texts_cut(rows: list, per_text: int) -> int:
    """How many texts had a row cut at the token limit (``per_text`` rows each, text by text)."""
    return sum(any(row.truncated for row in rows[i : i + per_text]) for i in range(0, len(rows), per_text))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
