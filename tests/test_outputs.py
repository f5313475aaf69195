"""Output paths are checked before the work and written atomically after it (issue 13, item 17).

Before: an unwritable ``--record`` / ``--out`` / ``--select`` failed only after the whole run;
``-o`` overwrote silently and not atomically; ``attention --threshold -1`` failed after writing two
of its three files; ``encode`` wrote Parquet embeddings as ``list<float>`` while ``embed`` wrote
``fixed_size_list<float>[D]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED, STORIES

from nosink import outputs
from nosink.cli import main
from nosink.errors import NosinkError

SICK = SHARED / "data" / "sick" / "SICK_trial.txt"
pytestmark = pytest.mark.skipif(not STORIES.exists() or not SICK.exists(), reason="../shared is not available")


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("x")
    return path


@pytest.fixture
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any model load fails the test: the output checks must come first."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded before the output path was checked")

    monkeypatch.setattr("nosink.encoder.Encoder.from_pretrained", refuse)
    monkeypatch.setattr("nosink.eval.embedders.load_embedder", refuse)


def one_error_line(capsys: pytest.CaptureFixture[str], code: int, *needles: str) -> None:
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.startswith("error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err


# -------------------------------------------------------------------- checks before the work


def test_eval_record_under_a_file_fails_before_the_model_loads(
    a_file: Path, no_model_load: None, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["eval", "sts", "--model", str(STORIES), "--data", str(SICK), "--record", str(a_file / "r.json")]
    one_error_line(capsys, main(args), "--record", "is a file, not a folder")


def test_eval_record_that_is_a_folder_fails_first(
    tmp_path: Path, no_model_load: None, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["eval", "sts", "--model", str(STORIES), "--data", str(SICK), "--record", str(tmp_path)]
    one_error_line(capsys, main(args), "--record", "is a folder")


@pytest.mark.parametrize("option", ["--out", "--select"])
def test_sweep_outputs_are_checked_first(
    option: str, a_file: Path, tmp_path: Path, no_model_load: None, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = str(a_file) if option == "--out" else str(a_file / "best.txt")
    args = ["sweep", "--model", str(STORIES), "--task", "sts", "--data", str(SICK), "--family", "mask0-bidir"]
    args += ["--record", str(tmp_path / "r.json"), option, bad]
    one_error_line(capsys, main(args), option)


def test_attention_out_is_checked_first(
    a_file: Path, tmp_path: Path, no_model_load: None, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = tmp_path / "t.txt"
    texts.write_text("a cat sat on the mat\n")
    args = ["attention", "--model", str(STORIES), "--texts", str(texts), "--out", str(a_file)]
    one_error_line(capsys, main([*args, "--record", str(tmp_path / "r.json")]), "--out", "is a file, not a folder")


def test_attention_bad_threshold_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: --threshold -1 failed after attention.png and sinks.png were written."""
    texts = tmp_path / "t.txt"
    texts.write_text("a cat sat on the mat\n")
    out = tmp_path / "attention"
    args = ["attention", "--model", str(STORIES), "--texts", str(texts), "--detect", "--threshold", "-1"]
    assert main([*args, "--out", str(out), "--record", str(tmp_path / "r.json")]) == 2
    assert "expected a positive number" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "r.json").exists()


def test_encode_output_under_a_file_fails_before_the_model_loads(
    a_file: Path, tmp_path: Path, no_model_load: None, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = tmp_path / "t.txt"
    texts.write_text("a cat\n")
    folder = tmp_path / "looks-like-a-file.npy"
    folder.mkdir()
    one_error_line(
        capsys, main(["encode", "--model", str(STORIES), str(texts), "-o", str(folder)]), "-o", "is a folder"
    )


# -------------------------------------------------------------------- atomic writes


def test_encode_replaces_an_existing_output_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    texts, out = tmp_path / "t.txt", tmp_path / "o.npy"
    texts.write_text("a cat\nthe dog\n")
    np.save(out, np.zeros((5, 3), dtype=np.float32))
    assert main(["encode", "--model", str(STORIES), str(texts), "-o", str(out)]) == 0
    assert np.load(out).shape == (2, 64)
    assert f"note: replaced the earlier {out}" in capsys.readouterr().err
    assert main(["encode", "--model", str(STORIES), str(texts), "-o", str(tmp_path / "new.npy")]) == 0
    assert "replaced" not in capsys.readouterr().err


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    texts, out = tmp_path / "t.txt", tmp_path / "o.npy"
    texts.write_text("a cat\n")
    old = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.save(out, old)

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs.os, "fsync", full_disk)
    assert main(["encode", "--model", str(STORIES), str(texts), "-o", str(out)]) != 0
    np.testing.assert_array_equal(np.load(out), old)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["o.npy", "t.txt"]


def test_atomic_file_on_error_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), outputs.atomic_file(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_target_checks(tmp_path: Path, a_file: Path) -> None:
    assert outputs.check_file_target(tmp_path / "new" / "deeper" / "r.json", flag="--record")  # created later
    assert outputs.check_folder_target(tmp_path / "new-folder", flag="--out")
    with pytest.raises(NosinkError, match="is a folder"):
        outputs.check_file_target(tmp_path, flag="-o")
    with pytest.raises(NosinkError, match="is a file, not a folder"):
        outputs.check_file_target(a_file / "deeper" / "r.json", flag="--record")
    with pytest.raises(NosinkError, match="is a file, not a folder"):
        outputs.check_folder_target(a_file, flag="--out")


# -------------------------------------------------------------------- one Parquet schema


def test_encode_parquet_embedding_column_is_a_fixed_size_list_as_in_corpus_shards(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    texts, out = tmp_path / "t.txt", tmp_path / "o.parquet"
    texts.write_text("a cat\nthe dog\n")
    assert main(["encode", "--model", str(STORIES), str(texts), "-o", str(out)]) == 0
    column = pq.read_table(out).schema.field("embedding").type
    assert column == pa.list_(pa.float32(), 64)  # fixed_size_list<float>[64], the type write_shard uses
