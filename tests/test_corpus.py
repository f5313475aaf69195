"""Corpus embedding: streaming readers, resumable shards (interrupted and killed runs), refusals, Ray.

The oracle is ``Encoder.encode(texts, normalize=True)`` on the whole corpus at once, and the
input file itself for ids and order.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CORPUS

from nosink import Encoder, NosinkError
from nosink.cli import main
from nosink.corpus import embed as embed_module
from nosink.corpus.embed import EncoderSpec, RayOptions, embed_corpus
from nosink.corpus.reader import CorpusSource
from nosink.corpus.shards import iter_shards, read_manifest, shard_path

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402  (after the importorskip guard)

PLAN = "mask0&bidir:k=2,k0=1"
WORDS = " ".join(CORPUS).split()


def make_texts(count: int, seed: int = 0) -> list[str]:
    """Texts of 3..14 words from the tiny tokenizer's training sentences (mixed lengths)."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(3, 15))) for _ in range(count)]


def write_jsonl(path: Path, texts: list[str], *, ids: bool = True) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for i, text in enumerate(texts):
            handle.write(json.dumps({"id": f"doc-{i}", "text": text} if ids else {"text": text}) + "\n")
    return path


@pytest.fixture(scope="module")
def model_dir(tiny_llama_dir: Path) -> Path:
    return tiny_llama_dir


@pytest.fixture(scope="module")
def encoder(model_dir: Path, one_thread: None) -> Encoder:
    return Encoder.from_pretrained(str(model_dir), plan=PLAN, device="cpu")


@contextlib.contextmanager
def interrupted_after_shards(count: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Inside: writing shard number ``count`` (0-based) raises KeyboardInterrupt, like Ctrl-C during it."""
    real_write, written = embed_module.write_shard, []

    def write_then_interrupt(out_dir: Path, shard: object) -> Path:
        if len(written) == count:
            raise KeyboardInterrupt
        written.append(shard)
        return real_write(out_dir, shard)

    monkeypatch.setattr(embed_module, "write_shard", write_then_interrupt)
    try:
        yield
    finally:
        monkeypatch.setattr(embed_module, "write_shard", real_write)


def read_corpus(out_dir: Path) -> tuple[list[str], np.ndarray, list[str] | None]:
    shards = list(iter_shards(out_dir))
    ids = [i for shard in shards for i in shard.ids]
    texts = None if shards[0].texts is None else [t for shard in shards for t in shard.texts]
    return ids, np.concatenate([shard.embeddings for shard in shards]), texts


# -------------------------------------------------------------------- readers


def test_readers_give_the_same_records_in_every_format(tmp_path: Path) -> None:
    texts = make_texts(23)
    jsonl = write_jsonl(tmp_path / "c.jsonl", texts)
    with open(tmp_path / "c.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows([f"doc-{i}", f'{text}, "quoted"\nsecond line'] for i, text in enumerate(texts))
    with open(tmp_path / "c.tsv", "w", encoding="utf-8") as handle:
        handle.write("id\ttext\n" + "".join(f"doc-{i}\t{text}\n" for i, text in enumerate(texts)))
    ids = [f"doc-{i}" for i in range(len(texts))]
    pq.write_table(pa.table({"text": texts, "id": ids}), tmp_path / "c.parquet", row_group_size=5)

    expected = list(zip(ids, texts, strict=True))
    for path in (jsonl, tmp_path / "c.tsv", tmp_path / "c.parquet"):
        assert [(r.id, r.text) for r in CorpusSource.open(path).records()] == expected, path.name
    with_newlines = [(r.id, r.text) for r in CorpusSource.open(tmp_path / "c.csv").records()]
    assert with_newlines == [(i, f'{t}, "quoted"\nsecond line') for i, t in expected]


def test_ids_default_to_record_numbers_and_fields_are_chosen(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"body": "a cat", "key": 7}\n\n{"body": "a dog", "key": 8}\n', encoding="utf-8")
    assert [(r.id, r.text) for r in CorpusSource.open(path, text_field="body").records()] == [
        ("0", "a cat"),
        ("1", "a dog"),
    ]
    chosen = CorpusSource.open(path, text_field="body", id_field="key")
    assert [r.id for r in chosen.records()] == ["7", "8"]


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        ('{"text": "ok"}\n{"text": ""}\n', {}, "record 1 has an empty 'text'"),
        ('{"text": "ok"}\n{"text": 3}\n', {}, "record 1 has a int as 'text'"),
        ('{"text": "ok"}\nnot json\n', {}, "line 2: not valid JSON"),
        ('["a list"]\n', {}, "line 1: expected a JSON object"),
        ('{"body": "ok"}\n', {}, "no field 'text'"),
        ('{"text": "ok"}\n', {"id_field": "doc"}, "no field 'doc'"),
        ('{"text": "ok", "id": 1}\n{"text": "no id"}\n', {"id_field": "id"}, "record 1 has no 'id'"),
    ],
)
def test_bad_records_are_refused_with_their_number(tmp_path: Path, content: str, kwargs: dict, message: str) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(NosinkError, match=message):
        list(CorpusSource.open(path, **kwargs).records())


@pytest.mark.parametrize(
    ("name", "lines", "bad_line"),
    [
        ("c.jsonl", [json.dumps({"text": f"text {i}"}) for i in range(3)], 3),
        ("c.jsonl", [json.dumps({"text": f"text number {i}"}) for i in range(2000)], 1500),  # past the 8 KiB chunk
        ("c.csv", ["id,text", "a,one", "b,two"], 2),
        ("c.tsv", ["id\ttext", "a\tone", "b\ttwo"], 3),
    ],
)
def test_input_that_is_not_utf8_is_refused_with_its_file_and_line(
    tmp_path: Path, name: str, lines: list[str], bad_line: int
) -> None:
    data = [line.encode("utf-8") for line in lines]
    line = data[bad_line - 1]
    data[bad_line - 1] = line[:-2] + b"\xff" + line[-2:]  # e.g. a Latin-1 "ÿ" inside a text
    path = tmp_path / name
    path.write_bytes(b"\n".join(data) + b"\n")
    expected = rf"^{name}, line {bad_line}: not UTF-8 text \(the byte 0xff\); save it as UTF-8$"
    with pytest.raises(NosinkError, match=expected):
        list(CorpusSource.open(path).records())


def test_cli_refuses_input_that_is_not_utf8_before_writing(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"text": "caf\xe9"}\n')  # Latin-1, not UTF-8
    args = ["embed", str(path), "-o", str(tmp_path / "out"), "--model", str(model_dir), "--device", "cpu"]
    assert main(args) == 2
    assert capsys.readouterr().err == "error: c.jsonl, line 1: not UTF-8 text (the byte 0xe9); save it as UTF-8\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"text": "a"}\n{"text": "b"}\n{"id": "x", "text": "c"}\n',
            "c.jsonl: record 2 has an 'id' field but record 0 lacks one",
        ),
        ('{"id": "x", "text": "a"}\n\n{"text": "b"}\n', "c.jsonl: record 1 lacks an 'id' field but record 0 has one"),
    ],
)
def test_default_ids_are_refused_when_records_disagree_about_having_an_id(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(NosinkError, match=rf"^{message}.*pass --id-field id .*or make every record consistent$"):
        list(CorpusSource.open(path).records())
    # An explicit id field is the user's rule: only a record without it is refused.
    with pytest.raises(NosinkError, match=r"(no field 'id'|record 1 has no 'id')"):
        list(CorpusSource.open(path, id_field="id").records())


def test_explicit_id_field_and_consistent_files_keep_their_ids(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "a", "key": 1}\n{"text": "b", "key": 2, "id": "z"}\n', encoding="utf-8")
    assert [r.id for r in CorpusSource.open(path, id_field="key").records()] == ["1", "2"]
    numbered = write_jsonl(tmp_path / "numbered.jsonl", make_texts(3), ids=False)
    assert [r.id for r in CorpusSource.open(numbered).records()] == ["0", "1", "2"]
    named = write_jsonl(tmp_path / "named.jsonl", make_texts(3))
    assert [r.id for r in CorpusSource.open(named).records()] == ["doc-0", "doc-1", "doc-2"]


def test_cli_refuses_inconsistent_default_ids_before_writing(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.jsonl"
    rows = [{"text": text} for text in make_texts(30)]
    rows[25]["id"] = "late"  # would silently become "25" if record 0 alone decided
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    args = ["embed", str(path), "-o", str(tmp_path / "out"), "--model", str(model_dir), "--device", "cpu"]
    assert main([*args, "--shard-size", "10"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: c.jsonl: record 25 has an 'id' field but record 0 lacks one")
    assert "--id-field id" in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_unknown_extension_and_missing_file_are_refused(tmp_path: Path) -> None:
    (tmp_path / "c.xml").write_text("<a/>", encoding="utf-8")
    with pytest.raises(NosinkError, match="cannot tell the format"):
        CorpusSource.open(tmp_path / "c.xml")
    with pytest.raises(NosinkError, match="is not a file"):
        CorpusSource.open(tmp_path / "missing.jsonl")


# -------------------------------------------------------------------- local engine


def test_shards_hold_every_record_once_with_encode_vectors(tmp_path: Path, encoder: Encoder) -> None:
    texts = make_texts(230)
    source = CorpusSource.open(write_jsonl(tmp_path / "c.jsonl", texts))
    report = embed_corpus(encoder, source, tmp_path / "out", shard_size=50, store_text=True, show_progress_bar=False)

    assert (report.records, report.shards, report.written_shards, report.skipped_shards) == (230, 5, 5, 0)
    ids, vectors, stored = read_corpus(tmp_path / "out")
    assert ids == [f"doc-{i}" for i in range(230)]
    assert stored == texts
    np.testing.assert_allclose(vectors, encoder.encode(texts, normalize=True), atol=1e-5)
    assert [pq.ParquetFile(shard_path(tmp_path / "out", i)).metadata.num_rows for i in range(5)] == [50] * 4 + [30]
    manifest = read_manifest(tmp_path / "out")
    assert manifest["complete"] and manifest["records"] == 230 and manifest["dimension"] == encoder.dim
    assert manifest["encoder"]["plan"] == PLAN and manifest["normalized"] is True
    assert not [p.name for p in (tmp_path / "out").rglob(".*")]  # no temporary files left


def test_instruction_and_raw_vectors_follow_encode(tmp_path: Path, encoder: Encoder) -> None:
    texts = make_texts(40, seed=1)
    source = CorpusSource.open(write_jsonl(tmp_path / "c.jsonl", texts, ids=False))
    instruction = "Retrieve stories about the bank"
    embed_corpus(encoder, source, tmp_path / "out", instruction=instruction, normalize=False, show_progress_bar=False)
    ids, vectors, stored = read_corpus(tmp_path / "out")
    assert ids == [str(i) for i in range(40)] and stored is None
    np.testing.assert_allclose(vectors, encoder.encode(texts, instruction=instruction), atol=1e-5)
    assert np.abs(np.linalg.norm(vectors, axis=1) - 1).max() > 1e-2  # really raw


def test_an_interrupted_run_resumes_without_losing_or_repeating_records(
    tmp_path: Path, encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = make_texts(170, seed=2)
    source = CorpusSource.open(write_jsonl(tmp_path / "c.jsonl", texts))
    clean = tmp_path / "clean"
    embed_corpus(encoder, source, clean, shard_size=40, show_progress_bar=False)

    with interrupted_after_shards(2, monkeypatch), pytest.raises(KeyboardInterrupt):
        embed_corpus(encoder, source, tmp_path / "out", shard_size=40, show_progress_bar=False)
    assert not read_manifest(tmp_path / "out")["complete"]
    assert sorted(p.name for p in (tmp_path / "out" / "shards").iterdir()) == [
        "shard-00000.parquet",
        "shard-00001.parquet",
    ]

    report = embed_corpus(encoder, source, tmp_path / "out", shard_size=40, show_progress_bar=False)
    assert (report.skipped_shards, report.written_shards, report.embedded_records) == (2, 3, 90)
    ids, vectors, _ = read_corpus(tmp_path / "out")
    clean_ids, clean_vectors, _ = read_corpus(clean)
    assert ids == clean_ids and len(set(ids)) == 170
    np.testing.assert_allclose(vectors, clean_vectors, atol=1e-5)


def test_a_killed_process_resumes_and_half_written_files_are_redone(tmp_path: Path, model_dir: Path) -> None:
    texts = make_texts(6000, seed=3)
    corpus = write_jsonl(tmp_path / "c.jsonl", texts)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "nosink.cli", "embed", str(corpus), "-o", str(out), "--model", str(model_dir)]
    command += ["--plan", PLAN, "--device", "cpu", "--shard-size", "100"]
    environment = os.environ | {"OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment)
    deadline = time.time() + 120
    while not shard_path(out, 1).exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed; make the corpus larger"
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = sorted(p.name for p in (out / "shards").glob("shard-*.parquet"))
    assert 2 <= len(finished) < 60

    (out / "shards" / ".shard-00059.parquet.tmp-1").write_bytes(b"half a shard")  # as a kill mid-write leaves
    broken = shard_path(out, 58)
    broken.write_bytes(b"PAR1 not really")  # not a readable shard: redone, not trusted
    assert main(command[3:]) == 0

    ids, vectors, _ = read_corpus(out)
    assert ids == [f"doc-{i}" for i in range(6000)]
    encoder = Encoder.from_pretrained(str(model_dir), plan=PLAN, device="cpu")
    np.testing.assert_allclose(vectors, encoder.encode(texts, normalize=True), atol=1e-5)
    assert not list((out / "shards").glob(".*"))


@pytest.mark.parametrize(
    "change",
    ["plan", "recipe", "instruction", "input", "shard_size", "normalize"],
)
def test_a_different_job_in_the_same_folder_is_refused(tmp_path: Path, encoder: Encoder, change: str) -> None:
    texts = make_texts(30, seed=4)
    path = write_jsonl(tmp_path / "c.jsonl", texts)
    embed_corpus(encoder, CorpusSource.open(path), tmp_path / "out", shard_size=10, show_progress_bar=False)
    before = (tmp_path / "out" / "manifest.json").read_text()
    kwargs: dict = {"shard_size": 10, "show_progress_bar": False}
    other = encoder
    if change == "plan":
        other = encoder.with_plan("baseline")
    elif change == "recipe":
        other = encoder.with_recipe("layer=-2")
    elif change == "instruction":
        kwargs["instruction"] = "Find stories"
    elif change == "input":
        write_jsonl(path, [*texts[:-1], "a different last text"])
    elif change == "shard_size":
        kwargs["shard_size"] = 20
    else:
        kwargs["normalize"] = False
    with pytest.raises(NosinkError, match="holds the vectors of a different job"):
        embed_corpus(other, CorpusSource.open(path), tmp_path / "out", **kwargs)
    assert (tmp_path / "out" / "manifest.json").read_text() == before


def test_a_job_from_before_one_string_instructions_is_not_resumed(tmp_path: Path, encoder: Encoder) -> None:
    """Its shards were embedded with the instruction tokenized apart; resuming would mix the two tokenizations."""
    path = write_jsonl(tmp_path / "c.jsonl", make_texts(30, seed=5))
    options = {"shard_size": 10, "show_progress_bar": False, "instruction": "Find stories"}
    embed_corpus(encoder, CorpusSource.open(path), tmp_path / "out", **options)
    manifest_path = tmp_path / "out" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["instruction_tokens"] == "one string with the text"
    del manifest["instruction_tokens"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(NosinkError, match="instruction_tokens: None there"):
        embed_corpus(encoder, CorpusSource.open(path), tmp_path / "out", **options)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("", "Expecting value: line 1 column 1 (char 0)"),
        ('{"format": "nosink-embeddings/1", ', "Expecting property name enclosed in double quotes"),
        ("[]", "it holds a JSON array, not an object"),
        ("null", "it holds a JSON null, not an object"),
    ],
)
def test_a_damaged_manifest_is_refused_with_its_path(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str], content: str, reason: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text(content, encoding="utf-8")
    with pytest.raises(NosinkError) as caught:
        read_manifest(out)
    assert str(caught.value).startswith(f"{out / 'manifest.json'} is not a valid nosink manifest: {reason}")
    path = write_jsonl(tmp_path / "c.jsonl", make_texts(5))
    assert main(["embed", str(path), "-o", str(out), "--model", str(model_dir), "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {out / 'manifest.json'} is not a valid nosink manifest: {reason}")
    assert error.count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]  # nothing written, manifest untouched
    assert (out / "manifest.json").read_text(encoding="utf-8") == content


def test_a_folder_that_is_not_a_corpus_is_refused(tmp_path: Path, encoder: Encoder) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", make_texts(5))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(NosinkError, match="is not an embedded corpus"):
        embed_corpus(encoder, CorpusSource.open(path), tmp_path / "out", show_progress_bar=False)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(NosinkError, match="has no records"):
        embed_corpus(encoder, CorpusSource.open(empty), tmp_path / "out2", show_progress_bar=False)


def test_encoder_spec_and_loaded_encoder_describe_the_same_job(tmp_path: Path, model_dir: Path) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", make_texts(30, seed=5))
    spec = EncoderSpec(str(model_dir), plan=PLAN, device="cpu")
    embed_corpus(spec, CorpusSource.open(path), tmp_path / "out", shard_size=10, show_progress_bar=False)
    report = embed_corpus(
        spec.load(), CorpusSource.open(path), tmp_path / "out", shard_size=10, show_progress_bar=False
    )
    assert report.skipped_shards == 3 and report.written_shards == 0


# -------------------------------------------------------------------- CLI


def test_cli_embeds_and_resumes(tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", make_texts(25, seed=6))
    args = ["embed", str(path), "-o", str(tmp_path / "out"), "--model", str(model_dir), "--plan", PLAN]
    args += ["--device", "cpu", "--shard-size", "10", "--store-text"]
    assert main(args) == 0
    assert "25 records in 3 shards" in capsys.readouterr().out
    assert main(args) == 0
    assert "0 written now" in capsys.readouterr().out and read_manifest(tmp_path / "out")["store_text"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--plan", "mask9-nope"], "plan"),
        (["--workers", "2"], "--workers only applies with --engine ray"),
        (["--gpus-per-worker", "1"], "--gpus-per-worker only applies with --engine ray"),
        (["--cpus-per-worker", "1", "--engine", "local"], "--cpus-per-worker only applies with --engine ray"),
        (["--ray-address", "auto", "--workers", "2"], "--ray-address and --workers only apply with --engine ray"),
        (["--model", "./no-such-model"], "model folder './no-such-model' does not exist"),
        (["--text-field", "body"], "no field 'body'"),
        (["--plan", "mask0-bidir:k=99"], "needs k=99 layers"),  # these three used to leave a manifest behind
        (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "meta"], "use cpu"),
    ],
)
def test_cli_mistakes_are_one_error_line(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", make_texts(5))
    args = ["embed", str(path), "-o", str(tmp_path / "out"), "--model", str(model_dir), "--device", "cpu", *extra]
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and message in error and "\n" not in error
    assert not (tmp_path / "out").exists()


def test_a_failed_new_job_leaves_nothing_so_the_corrected_command_runs(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: the manifest of the failed job was written first, and the corrected command was refused."""
    path = write_jsonl(tmp_path / "c.jsonl", make_texts(5))
    (tmp_path / "out").mkdir()  # a folder the user made stays; only what the job wrote goes
    args = ["embed", str(path), "-o", str(tmp_path / "out"), "--model", str(model_dir), "--device", "cpu"]
    for mistake in (["--plan", "mask0-bidir:k=99"], ["--max-length", "1"]):  # the second fails after loading
        assert main([*args, *mistake]) == 2
        assert (tmp_path / "out").is_dir() and not any((tmp_path / "out").iterdir())
    assert main([*args, "--plan", "mask0-bidir:k=2"]) == 0
    assert "5 records in 1 shards" in capsys.readouterr().out


def test_a_manifest_write_that_fails_leaves_no_temporary_file(tmp_path: Path, encoder: Encoder, monkeypatch) -> None:
    """Before: a full disk while the first manifest was written left .manifest.json.tmp-PID behind (the write was not
    fsynced, and its failure not cleaned up), and the folder was refused afterwards."""
    from nosink import outputs

    path = write_jsonl(tmp_path / "c.jsonl", make_texts(12, seed=8))
    calls = []

    def full_disk(descriptor: int) -> None:  # the first fsync of the run is the manifest's
        calls.append(descriptor)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        embed_corpus(encoder, CorpusSource.open(path), tmp_path / "out", shard_size=10, show_progress_bar=False)
    monkeypatch.undo()
    assert len(calls) == 1 and not (tmp_path / "out" / "manifest.json").exists()
    assert not list((tmp_path / "out").glob(".*"))
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / ".manifest.json.tmp-99999").write_text("{")  # a killed writer's leftover does not block
    report = embed_corpus(encoder, CorpusSource.open(path), tmp_path / "fresh", shard_size=10, show_progress_bar=False)
    assert report.written_shards == 2


def test_cli_ray_flags_reach_ray_options_with_their_defaults(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[dict] = []

    def fake_embed(spec: EncoderSpec, source: CorpusSource, out_dir: str, **kwargs: object) -> object:
        calls.append(kwargs)
        return embed_module.EmbedReport(Path(out_dir), 5, 1, 1, 0, 5, 0, 1.0)

    monkeypatch.setattr(embed_module, "embed_corpus", fake_embed)
    path = write_jsonl(tmp_path / "c.jsonl", make_texts(5))
    args = ["embed", str(path), "-o", str(tmp_path / "out"), "--model", str(model_dir), "--engine", "ray"]
    assert main(args) == 0
    assert main([*args, "--ray-address", "auto", "--gpus-per-worker", "0.5", "--workers", "3"]) == 0
    assert [call["ray"] for call in calls] == [
        RayOptions(),
        RayOptions(address="auto", workers=3, cpus_per_worker=1.0, gpus_per_worker=0.5),
    ]
    assert RayOptions() == RayOptions(None, None, 1.0, 0.0)  # the defaults `nosink embed --help` states
    capsys.readouterr()
    assert main(["embed", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "CPUs per Ray actor (default: 1)" in help_text and "GPUs per Ray actor (default: 0)" in help_text


# -------------------------------------------------------------------- Ray


def test_ray_engine_matches_the_local_engine_and_resumes_its_runs(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ray = pytest.importorskip("ray")
    texts = make_texts(260, seed=7)
    source = CorpusSource.open(write_jsonl(tmp_path / "c.jsonl", texts))
    spec = EncoderSpec(str(model_dir), plan=PLAN, device="cpu")
    embed_corpus(spec, source, tmp_path / "local", shard_size=60, store_text=True, show_progress_bar=False)

    with interrupted_after_shards(2, monkeypatch), pytest.raises(KeyboardInterrupt):  # two shards locally, Ctrl-C
        embed_corpus(spec, source, tmp_path / "ray", shard_size=60, store_text=True, show_progress_bar=False)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        options = RayOptions(workers=2)
        report = embed_corpus(
            spec,
            source,
            tmp_path / "ray",
            shard_size=60,
            store_text=True,
            engine="ray",
            ray=options,
            show_progress_bar=False,
        )
    finally:
        ray.shutdown()
    assert (report.skipped_shards, report.written_shards) == (2, 3)
    local_ids, local_vectors, local_texts = read_corpus(tmp_path / "local")
    ray_ids, ray_vectors, ray_texts = read_corpus(tmp_path / "ray")
    assert ray_ids == local_ids == [f"doc-{i}" for i in range(260)]
    assert ray_texts == local_texts == texts
    np.testing.assert_allclose(ray_vectors, local_vectors, atol=1e-5)
    assert not (tmp_path / "ray" / ".staging").exists()


def test_ray_options_and_corpus_folders_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for options, message in [
        ({"cpus_per_worker": 0}, "cpus_per_worker must be > 0"),
        ({"workers": 0}, "workers must be >= 1"),
        ({"gpus_per_worker": -1}, "gpus_per_worker must be >= 0"),
    ]:
        with pytest.raises(NosinkError, match=message):
            RayOptions(**options)
    corpus = write_jsonl(tmp_path / "c.jsonl", make_texts(3))
    with pytest.raises(NosinkError, match="unknown engine 'rya'; use one of local, ray"):
        embed_corpus(EncoderSpec("unused"), CorpusSource.open(corpus), tmp_path / "out", engine="rya")
    with pytest.raises(NosinkError, match="unknown input format 'xml'"):
        CorpusSource.open(corpus, input_format="xml")
    assert main(["index", "build", str(corpus)]) == 2
    assert "is a file, not a corpus folder" in capsys.readouterr().err


def test_ray_workers_get_the_device_and_dtype_the_manifest_records(tmp_path: Path) -> None:
    """A CPU-only driver must not record float32 while GPU workers would pick bfloat16 themselves."""
    spec = EncoderSpec(str(tmp_path / "model"))
    assert spec.for_workers(0) == EncoderSpec(spec.model, device="cpu", dtype="float32")
    explicit = EncoderSpec(spec.model, dtype="bfloat16").for_workers(1)
    assert (explicit.device, explicit.dtype) == ("cuda", "bfloat16")
    if not torch.cuda.is_available():
        with pytest.raises(NosinkError, match="dtype 'auto' for GPU workers cannot be decided"):
            spec.for_workers(1)
        corpus = write_jsonl(tmp_path / "c.jsonl", make_texts(3))
        with pytest.raises(NosinkError, match="pass --dtype bfloat16, float16 or float32"):
            embed_corpus(
                spec, CorpusSource.open(corpus), tmp_path / "out", engine="ray", ray=RayOptions(gpus_per_worker=1)
            )
        assert not (tmp_path / "out").exists()
