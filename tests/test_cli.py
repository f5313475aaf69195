"""The ``nosink`` CLI, run in-process through ``main([...])`` on the tiny stories260k Llama."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nosink import Encoder
from nosink.cli import main
from nosink.io import resolve_input_format
from nosink.plan import NAMED_PLANS

MODEL = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "stories260k"
if not MODEL.is_dir():
    pytest.skip(f"the tiny test model is not at {MODEL}", allow_module_level=True)

PLAN = "mask0-bidir:k=2"
TEXTS = ["a cat sat on the mat", "the dog ran", "Lily and Tom went to the park to play."]


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder.from_pretrained(str(MODEL), plan=PLAN)


@pytest.fixture(scope="module")
def expected(encoder: Encoder) -> np.ndarray:
    return encoder.encode(TEXTS)  # [N, D]


@pytest.fixture
def lines_file(tmp_path: Path) -> Path:
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return path


def encode(*args: str | Path, plan: str = PLAN) -> int:
    return main(["encode", "--model", str(MODEL), "--plan", plan, *map(str, args)])


def assert_user_error(capsys: pytest.CaptureFixture[str], code: int, *needles: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


# -------------------------------------------------------------------- encode


def test_encode_npy_equals_the_library(
    tmp_path: Path, lines_file: Path, expected: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.npy"
    assert encode(lines_file, "-o", out) == 0
    written = np.load(out)
    assert written.dtype == np.float32
    assert written.shape == (3, 64)
    np.testing.assert_allclose(written, expected, atol=1e-6, rtol=0)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"wrote 3 embeddings of dim 64 to {out} (plan {PLAN})"


def test_jsonl_input_to_jsonl_and_parquet_keeps_ids_and_values(tmp_path: Path, expected: np.ndarray) -> None:
    source = tmp_path / "in.jsonl"
    records = [{"text": TEXTS[0], "id": "a"}, {"text": TEXTS[1]}, {"id": 7, "text": TEXTS[2], "extra": True}]
    source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")

    assert encode(source, "-o", tmp_path / "out.jsonl") == 0
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert [r.get("id", "-") for r in rows] == ["a", "-", 7]
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows], np.float32), expected, atol=1e-6, rtol=0)

    pq = pytest.importorskip("pyarrow.parquet")
    source.write_text("".join(json.dumps({"text": t, "id": f"doc{i}"}) + "\n" for i, t in enumerate(TEXTS)))
    assert encode(source, "-o", tmp_path / "out.parquet") == 0
    table = pq.read_table(tmp_path / "out.parquet")
    assert str(table.schema.field("index").type) == "int64"
    assert str(table.schema.field("embedding").type) == "fixed_size_list<element: float>[64]"  # as corpus shards
    assert table.column("index").to_pylist() == [0, 1, 2]
    assert table.column("id").to_pylist() == ["doc0", "doc1", "doc2"]
    embeddings = np.array(table.column("embedding").to_pylist(), np.float32)
    np.testing.assert_allclose(embeddings, expected, atol=1e-6, rtol=0)


def test_parquet_without_id_has_no_id_column(tmp_path: Path, lines_file: Path, expected: np.ndarray) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    assert encode(lines_file, "-o", tmp_path / "out.parquet") == 0
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column_names == ["index", "embedding"]
    np.testing.assert_allclose(np.array(table.column("embedding").to_pylist()), expected, atol=1e-6, rtol=0)


def test_stdin_input(tmp_path: Path, expected: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(TEXTS)))  # no trailing newline
    assert encode("-", "-o", tmp_path / "out.npy") == 0
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-6, rtol=0)


def test_crlf_lines_and_forced_lines_format(tmp_path: Path, expected: np.ndarray) -> None:
    source = tmp_path / "texts.jsonl"  # a .jsonl name, read as lines because the format is forced
    source.write_bytes(("\r\n".join(TEXTS) + "\r\n").encode())
    assert encode("--input-format", "lines", source, "-o", tmp_path / "out.npy") == 0
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-6, rtol=0)


def test_normalize_gives_unit_rows(tmp_path: Path, lines_file: Path, expected: np.ndarray) -> None:
    assert encode("--normalize", lines_file, "-o", tmp_path / "out.npy") == 0
    written = np.load(tmp_path / "out.npy")
    np.testing.assert_allclose(np.linalg.norm(written, axis=1), 1.0, atol=1e-5)
    unit = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(written, unit, atol=1e-6, rtol=0)


def test_instruction_changes_the_result(
    tmp_path: Path, lines_file: Path, encoder: Encoder, expected: np.ndarray
) -> None:
    instruction = "Retrieve stories about animals"
    assert encode("--instruction", instruction, lines_file, "-o", tmp_path / "out.npy") == 0
    written = np.load(tmp_path / "out.npy")
    assert np.abs(written - expected).max() > 1e-3
    np.testing.assert_allclose(written, encoder.encode(TEXTS, instruction=instruction), atol=1e-6, rtol=0)


def test_reference_plan_and_pooling_reach_the_encoder(tmp_path: Path, lines_file: Path, encoder: Encoder) -> None:
    plan, task = "mask0&bidir:k=3,k0=1,res=2", "Retrieve stories about animals"
    assert (
        encode("--pooling", "reference_mean", "--instruction", task, lines_file, "-o", tmp_path / "o.npy", plan=plan)
        == 0
    )
    expected = encoder.with_plan(plan, pooling="reference_mean").encode(TEXTS, instruction=task)
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), expected, atol=1e-6, rtol=0)
    paper = encoder.with_plan("mask0&bidir:k=3,k0=1", pooling="reference_mean").encode(TEXTS, instruction=task)
    assert np.abs(paper - expected).max() > 1e-3  # the residual changes the vectors


def test_inspect_marks_the_reference_residual(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--model", str(MODEL), "--plan", "mask0&bidir:k=3,k0=1,res=2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["call", "layer", "pattern", "branch", "residual"]
    assert [line.split()[-1] for line in lines[2:7]] == ["main", "save", "main", "+saved", "main"]
    assert "residual every 2 calls from call 1" in lines[7] and "added to the output" in lines[7]


def test_pooling_plan_and_batching_options_reach_the_encoder(
    tmp_path: Path, lines_file: Path, encoder: Encoder
) -> None:
    options = ["--pooling", "last", "--batch-size", "1", "--max-tokens-per-batch", "64", "--dtype", "float32"]
    assert encode(*options, lines_file, "-o", tmp_path / "out.npy", plan="inter-back:k=2") == 0
    reference = encoder.with_plan("inter-back:k=2", pooling="last").encode(TEXTS, batch_size=1, max_tokens_per_batch=64)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), reference, atol=1e-6, rtol=0)


def test_packing_flag_packs_and_gives_the_same_vectors(
    tmp_path: Path, lines_file: Path, expected: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nosink.encoder

    packed: list[int] = []
    original = nosink.encoder.packed_batches

    def counting(*args: object, **kwargs: object):
        for batch in original(*args, **kwargs):
            packed.append(len(batch.indices))
            yield batch

    monkeypatch.setattr(nosink.encoder, "packed_batches", counting)
    assert encode("--packing", lines_file, "-o", tmp_path / "out.npy") == 0
    assert sum(packed) == len(TEXTS)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-5, rtol=0)


def test_entry_point_script_runs(tmp_path: Path, expected: np.ndarray) -> None:
    script = Path(sys.executable).with_name("nosink")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "nosink.cli"]
    out = tmp_path / "out.npy"
    args = ["encode", "--model", str(MODEL), "--plan", PLAN, "-", "-o", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [*command, *args], input="\n".join(TEXTS) + "\n", capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert f"wrote 3 embeddings of dim 64 to {out}" in done.stderr
    np.testing.assert_allclose(np.load(out), expected, atol=1e-6, rtol=0)


# -------------------------------------------------------------------- plans, inspect, help


def test_plans_lists_every_named_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plans"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for plan, paper, meaning in NAMED_PLANS:
        row = next(line for line in lines if line.startswith(plan + " "))
        assert paper in row and row.endswith(meaning)
    assert "K0" in lines[-1]
    paper_column = {line.index(paper) for (_, paper, _) in NAMED_PLANS for line in lines if paper in line}
    assert len(paper_column) == 1  # aligned


def test_inspect_inter_back(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--model", str(MODEL), "--plan", "inter-back:k=2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "inter-back:k=2" in lines[0] and "llama" in lines[0] and "L=5" in lines[0]
    assert lines[1].split() == ["call", "layer", "pattern", "branch"]
    rows = [line.split() for line in lines[2:9]]
    assert rows == [
        ["0", "0", "causal", "shared"],
        ["1", "1", "causal", "shared"],
        ["2", "2", "causal", "shared"],
        ["3", "3", "backward", "A"],
        ["4", "4", "backward", "A"],
        ["5", "3", "causal", "B"],
        ["6", "4", "causal", "B"],
    ]


def test_inspect_single_pass_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--model", str(MODEL), "--plan", "mask0&bidir:k=3,k0=1"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[2] for r in rows] == ["causal", "causal", "bidir", "bidir", "nosink"]
    assert {r[3] for r in rows} == {"main"}


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import nosink

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"nosink {nosink.__version__}"


@pytest.mark.parametrize("command", [[], ["encode"], ["plans"], ["inspect"]])
def test_help_has_examples(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: nosink") and "examples:" in out


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["encode", "--model", str(MODEL), "in.txt"]) == 2  # no -o
    assert main(["encode", "--model", str(MODEL), "--batch-size", "0", "in.txt", "-o", "x.npy"]) == 2
    assert "Traceback" not in capsys.readouterr().err


# -------------------------------------------------------------------- user errors


def test_bad_plan(tmp_path: Path, lines_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = encode(lines_file, "-o", tmp_path / "out.npy", plan="mask0-bidx:k=2")
    assert_user_error(capsys, code, "mask0-bidx", "nosink plans")
    assert not (tmp_path / "out.npy").exists()


def test_plan_too_deep_for_the_model(tmp_path: Path, lines_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_user_error(capsys, encode(lines_file, "-o", tmp_path / "out.npy", plan="mask0-bidir:k=9"), "L=5")


def test_missing_model_path(tmp_path: Path, lines_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-model"
    code = main(["encode", "--model", str(missing), str(lines_file), "-o", str(tmp_path / "out.npy")])
    assert_user_error(capsys, code, str(missing))
    code = main(["inspect", "--model", str(missing), "--plan", "baseline"])
    assert_user_error(capsys, code, str(missing))


def test_folder_without_config_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_user_error(capsys, main(["inspect", "--model", str(tmp_path), "--plan", "baseline"]))


def test_unsupported_family(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = json.loads((MODEL / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "gpt_neox"}))
    assert_user_error(capsys, main(["inspect", "--model", str(tmp_path), "--plan", "baseline"]), "gpt_neox")


def test_missing_input_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_user_error(capsys, encode(tmp_path / "nope.txt", "-o", tmp_path / "out.npy"), "nope.txt")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("a cat\n\nthe dog\n", "line 2 is empty"),
        ("a cat\nthe dog\n\n", "line 3 is empty"),
        ("a cat\n   \n", "line 2 is empty"),
        ("", "no texts"),
    ],
)
def test_empty_lines(
    content: str, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "texts.txt"
    source.write_text(content)
    assert_user_error(capsys, encode(source, "-o", tmp_path / "out.npy"), needle)
    monkeypatch.setattr(sys, "stdin", io.StringIO(content))
    assert_user_error(capsys, encode("-", "-o", tmp_path / "out.npy"), "stdin", needle)


@pytest.mark.parametrize(
    ("line2", "needle"),
    [
        ('{"text": "the dog"', "line 2: not valid JSON"),
        ('["the dog"]', "line 2: expected a JSON object, got list"),
        ('{"id": 3}', 'line 2: needs a string "text" field (fields: id)'),
        ('{"text": 3}', 'string "text"'),
        ('{"text": " "}', 'line 2: the "text" is empty'),
    ],
)
def test_bad_jsonl(line2: str, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in.ndjson"
    source.write_text('{"text": "a cat"}\n' + line2 + '\n{"text": "a hat"}\n')
    assert_user_error(capsys, encode(source, "-o", tmp_path / "out.jsonl"), needle)


@pytest.mark.parametrize("name", ["out.csv", "out", "no-such-dir/out.npy"])
def test_bad_output_path(name: str, tmp_path: Path, lines_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_user_error(capsys, encode(lines_file, "-o", tmp_path / name))


def test_parquet_without_pyarrow(
    tmp_path: Path, lines_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` now raises ImportError
    code = encode(lines_file, "-o", tmp_path / "out.parquet")
    assert_user_error(capsys, code, 'pip install "nosink[parquet]"')


def test_keyboard_interrupt_exits_130(
    tmp_path: Path, lines_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Encoder, "from_pretrained", interrupt)
    assert encode(lines_file, "-o", tmp_path / "out.npy") == 130
    assert "Traceback" not in capsys.readouterr().err


def test_input_format_resolution() -> None:
    assert resolve_input_format("a.jsonl") == "jsonl"
    assert resolve_input_format("a.NDJSON") == "jsonl"
    assert resolve_input_format("a.csv") == "csv"
    assert resolve_input_format("a.TSV") == "tsv"
    assert resolve_input_format("a.pq") == "parquet"
    assert resolve_input_format("a.txt") == "lines"
    assert resolve_input_format("-") == "lines"
    assert resolve_input_format("a.txt", "jsonl") == "jsonl"
    assert resolve_input_format("-", first_line='{"text": "a"}') == "jsonl"
    assert resolve_input_format("a.txt", first_line='  {"text": "a"} ') == "jsonl"
    assert resolve_input_format("-", first_line="{not json") == "lines"
    assert resolve_input_format("-", first_line='["a", "b"]') == "lines"  # JSON, but not an object
    assert resolve_input_format("a.jsonl", "lines", first_line='{"text": "a"}') == "lines"


def test_jsonl_on_stdin_is_read_as_jsonl(tmp_path: Path, expected: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: stdin was always plain lines, so JSONL records were embedded as their JSON strings."""
    records = "".join(json.dumps({"id": f"d{i}", "text": text}) + "\n" for i, text in enumerate(TEXTS))
    monkeypatch.setattr(sys, "stdin", io.StringIO(records))
    assert encode("-", "-o", tmp_path / "out.jsonl") == 0
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == ["d0", "d1", "d2"]
    np.testing.assert_allclose(np.array([row["embedding"] for row in rows]), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("suffix", "delimiter"), [(".csv", ","), (".tsv", "\t")])
def test_delimited_files_are_read_as_tables(
    suffix: str, delimiter: str, tmp_path: Path, expected: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a .csv was read as plain lines, embedding its header and the label suffixes (N + 1 rows)."""
    source = tmp_path / f"texts{suffix}"
    rows = [delimiter.join(["id", "text", "label"])]
    rows += [delimiter.join([f"d{i}", f'"{text}"' if delimiter == "," else text, "x"]) for i, text in enumerate(TEXTS)]
    source.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert encode(source, "-o", out) == 0
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["id"] for row in written] == ["d0", "d1", "d2"]
    np.testing.assert_allclose(np.array([row["embedding"] for row in written]), expected, atol=1e-6, rtol=0)
    assert "wrote 3 embeddings" in capsys.readouterr().err


def test_parquet_input(tmp_path: Path, expected: np.ndarray) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    source = tmp_path / "texts.parquet"
    pq.write_table(pa.table({"text": TEXTS, "id": [10, 11, 12]}), source)
    assert encode(source, "-o", tmp_path / "out.jsonl") == 0
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [row["id"] for row in written] == [10, 11, 12]
    np.testing.assert_allclose(np.array([row["embedding"] for row in written]), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("t.csv", "body,label\na cat,x\n", 'line 2: needs a string "text" field (fields: body, label)'),
        ("t.csv", "text,label\na cat\n", "line 2: expected 2 fields (text, label), got 1"),
        ("t.tsv", "", "the first line must be a header"),
        ("t.txt", '{"text": "a cat"}\nthe dog\n', "line 2: not valid JSON"),
        ("t.txt", '{"body": "a cat"}\n', "or pass --input-format lines for plain text"),
    ],
)
def test_bad_tables_are_refused(
    name: str, content: str, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / name
    source.write_text(content, encoding="utf-8")
    assert_user_error(capsys, encode(source, "-o", tmp_path / "out.npy"), name, needle)


def test_parquet_from_stdin_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("a cat\n"))
    code = encode("--input-format", "parquet", "-", "-o", tmp_path / "out.npy")
    assert_user_error(capsys, code, "Parquet cannot be read from stdin")


def test_json_looking_lines_can_be_forced_to_plain_text(tmp_path: Path, encoder: Encoder) -> None:
    texts = ['{"text": "a cat"}', "the dog"]
    source = tmp_path / "t.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    assert encode("--input-format", "lines", source, "-o", tmp_path / "out.npy") == 0
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), encoder.encode(texts), atol=1e-6, rtol=0)


@pytest.mark.parametrize("command", ["encode", "embed", "eval sts", "sweep", "attention", "search"])
def test_every_model_command_takes_torch_threads(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: only serve had --torch-threads; a bad value is a usage error."""
    assert main([*command.split(), "--help"]) == 0
    assert "--torch-threads N" in capsys.readouterr().out
    assert main([*command.split(), "--torch-threads", "0"]) == 2


def test_torch_threads_are_applied_before_the_command_runs(tmp_path: Path, lines_file: Path) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        assert encode("--torch-threads", "1", lines_file, "-o", tmp_path / "out.npy") == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_serve_numeric_options_parse_as_numbers() -> None:
    """Before: serve's ``int | None`` settings had no argparse type, so --torch-threads 1 reached torch as "1"."""
    pytest.importorskip("fastapi")
    from nosink.cli import build_parser

    args = build_parser().parse_args(["serve", "--model", "m", "--torch-threads", "2", "--body-timeout-s", "1.5"])
    assert args.torch_threads == 2 and type(args.torch_threads) is int
    assert args.body_timeout_s == 1.5
    assert main(["serve", "--model", "m", "--torch-threads", "two"]) == 2
