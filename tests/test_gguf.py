"""GGUF files as a model source: loading, ``nosink convert``, memory, and clear errors for bad files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from conftest import real_folder, real_tokenizer
from safetensors.torch import load_file

from nosink import Encoder, NosinkError
from nosink.cli import main
from nosink.loading import CONVERT_RECORD, ModelSource
from nosink.provision import provision

SMOLLM2 = "smollm2-135m-instruct"
TEXTS = ["A man is playing a guitar.", "The bank refused my card payment.", "She smiled."]
PLAN = "mask0&bidir:k=10,k0=2"


@pytest.fixture(scope="module")
def smollm2_gguf() -> Path:
    return provision(SMOLLM2).gguf


def test_a_gguf_file_loads_and_converts_to_the_same_encoder(smollm2_gguf: Path, tmp_path: Path, capsys) -> None:
    """One dequantisation through the CLI, one through Encoder.from_pretrained: same ids, same vectors."""
    out = tmp_path / "smollm2"
    assert main(["convert", str(smollm2_gguf), "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().err
    record = json.loads((out / CONVERT_RECORD).read_text())
    assert record["sha256"] == provision(SMOLLM2).spec.sha256 and record["gguf"] == smollm2_gguf.name
    converted = load_file(out / "model.safetensors")
    provisioned = load_file(real_folder(SMOLLM2) / "model.safetensors")
    assert converted.keys() == provisioned.keys()
    assert all(torch.equal(converted[key], provisioned[key]) for key in converted)

    direct = Encoder.from_pretrained(str(smollm2_gguf), plan=PLAN)
    assert direct.name == str(smollm2_gguf) and direct.dtype_name == "float32" and direct.num_layers == 30
    assert type(direct.base.layers[0].self_attn.q_proj) is torch.nn.Linear  # dense weights, nothing packed
    from_folder = Encoder.from_pretrained(str(out), plan=PLAN)
    for text in TEXTS:  # the tokenizer read from the GGUF file is the one saved in the folder
        assert direct.tokenizer(text)["input_ids"] == from_folder.tokenizer(text)["input_ids"]
        assert direct.tokenizer(text)["input_ids"] == real_tokenizer(SMOLLM2)(text)["input_ids"]
    np.testing.assert_array_equal(direct.encode(TEXTS), from_folder.encode(TEXTS))


def test_inspect_reads_only_the_gguf_metadata(smollm2_gguf: Path, capsys) -> None:
    assert main(["inspect", "--model", str(smollm2_gguf), "--plan", "mask0-bidir:k=2"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["plan", "mask0-bidir:k=2", "on", "llama", "(L=30)"]
    assert [row[2] for row in rows[2:]] == ["causal"] * 28 + ["nosink"] * 2


def test_loading_a_gguf_keeps_one_copy_of_the_weights(smollm2_gguf: Path) -> None:
    """Resident memory after loading (in a fresh process) grows by the dense weights, not twice that."""
    script = f"""
import gc, json, psutil, torch
from nosink import Encoder
process = psutil.Process()
before = process.memory_info().rss
encoder = Encoder.from_pretrained({str(smollm2_gguf)!r})
gc.collect()
weights = sum(p.numel() * p.element_size() for p in encoder.model.parameters())
print(json.dumps({{"growth": process.memory_info().rss - before, "weights": weights}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["weights"] > 500e6  # 134.5M float32 parameters, tied embedding counted once
    # growth = weights + the file's mapped pages + tokenizer and allocator slack; two copies would be >= 2x
    assert measured["growth"] < 1.5 * measured["weights"], measured


def test_a_truncated_gguf_is_a_clear_error(smollm2_gguf: Path, tmp_path: Path, capsys) -> None:
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(smollm2_gguf.read_bytes()[: 30 << 20])
    texts = tmp_path / "texts.txt"
    texts.write_text("a cat\n")
    assert main(["encode", "--model", str(truncated), str(texts), "-o", str(tmp_path / "v.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: GGUF file") and "truncated or damaged" in err and "sha256" in err
    assert err.count("\n") == 1 and not (tmp_path / "v.npy").exists()


def test_an_architecture_transformers_cannot_dequantise_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "rwkv.gguf"
    writer = gguf.GGUFWriter(str(path), "rwkv6")
    writer.add_block_count(2)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(NosinkError, match=r"cannot dequantise .*rwkv6 is not supported.*llama.*gemma3"):
        Encoder.from_pretrained(str(path))


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"GGML not a gguf", "is not a GGUF file"), (None, "does not exist")],
)
def test_a_file_that_is_not_gguf_is_refused_before_transformers_sees_it(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "model.GGUF"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(NosinkError, match=message):
        ModelSource.parse(path)


def test_a_missing_gguf_package_names_the_extra(monkeypatch: pytest.MonkeyPatch, smollm2_gguf: Path) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real_find_spec(name))
    with pytest.raises(NosinkError, match=r'pip install "nosink\[gguf\]".*\'gguf\' package is missing'):
        Encoder.from_pretrained(str(smollm2_gguf))


def test_convert_refuses_an_existing_output_and_leaves_no_partial_folder(smollm2_gguf: Path, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    assert main(["convert", str(smollm2_gguf), "-o", str(tmp_path / "taken")]) == 2
    assert main(["convert", str(tmp_path / "missing.gguf"), "-o", str(tmp_path / "new")]) == 2
    assert main(["convert", str(smollm2_gguf), "-o", str(tmp_path / "no" / "such" / "parent")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_folders_and_hub_names_are_not_gguf_sources() -> None:
    assert ModelSource.parse("TinyLlama/TinyLlama_v1.1") == ModelSource("TinyLlama/TinyLlama_v1.1")
    assert ModelSource.parse("TinyLlama/TinyLlama_v1.1").kwargs() == {}
