"""Where a model comes from: a hub name, a local transformers folder, or a GGUF file.

A GGUF file (llama.cpp's format, often 4-bit quantised) is read by transformers itself
(``from_pretrained(folder, gguf_file=name)``), told to dequantise every tensor once while loading;
the tokenizer comes from the same file. That needs the ``gguf`` and ``accelerate`` packages
(``pip install "nosink[gguf]"``). Dequantising takes seconds to a minute, so a GGUF used more than
once is best converted to a plain folder with :func:`convert_gguf` (``nosink convert``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nosink.errors import NosinkError

GGUF_MAGIC = b"GGUF"
GGUF_EXTRA = 'loading GGUF files needs the gguf extra: pip install "nosink[gguf]"'
CONVERT_RECORD = "nosink-convert.json"  # written last into a converted folder: its source and checksum
# Files any transformers tokenizer is loaded from (fast JSON, SentencePiece, BPE vocabularies, WordPiece).
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt",
)  # fmt: skip


@dataclass(frozen=True)
class ModelSource:
    """A model to load: ``path`` is what ``from_pretrained`` gets; ``gguf_file`` names a GGUF file inside it."""

    path: str
    gguf_file: str | None = None

    @classmethod
    def parse(cls, name_or_path: str | os.PathLike[str]) -> ModelSource:
        """A hub name or folder as it is; a path ending in ``.gguf`` (any case) as a GGUF file, checked."""
        text = str(name_or_path)
        if not text.lower().endswith(".gguf"):
            return cls(text)
        file = Path(text).expanduser()
        if not file.is_file():
            raise NosinkError(f"GGUF file {text!r} does not exist")
        with file.open("rb") as handle:
            if handle.read(4) != GGUF_MAGIC:
                raise NosinkError(f"{text!r} is not a GGUF file (it does not start with the GGUF magic bytes)")
        _check_gguf_packages()
        return cls(str(file.resolve().parent), file.name)

    @property
    def is_gguf(self) -> bool:
        return self.gguf_file is not None

    @property
    def name(self) -> str:
        """The name to record: the GGUF file's absolute path, or the hub name / folder as given."""
        return str(Path(self.path) / self.gguf_file) if self.gguf_file else self.path

    def kwargs(self) -> dict[str, Any]:
        """The extra ``from_pretrained`` keyword arguments that select this source."""
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}

    def load_config(self, **kwargs: Any) -> Any:
        """The model's ``PretrainedConfig``; for a GGUF, parsed from its metadata, with clear errors.

        Parsing reads the whole file's layout, so a truncated file or an architecture transformers
        cannot read fails here: load the config first, as every caller does, before the weights.
        """
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(self.path, **self.kwargs(), **self.hub_kwargs(), **kwargs)
        except _READ_ERRORS as error:
            if not self.is_gguf or isinstance(error, NosinkError):
                raise
            raise _gguf_error(self.name, error) from None

    def load_model(self, auto_class: Any, **kwargs: Any) -> Any:
        """``auto_class.from_pretrained`` on this source (a GGUF is dequantised into the requested dtype)."""
        if self.is_gguf:
            from transformers import GgufConfig

            # Dense weights and the model's own attention: where transformers can keep GGUF blocks packed
            # (with kernels on a GPU), it also switches to a fused attention that nosink's masks never reach.
            kwargs.setdefault("quantization_config", GgufConfig(dequantize=True))
        try:
            with _quiet_expected_head_report():
                model = auto_class.from_pretrained(self.path, **self.kwargs(), **self.hub_kwargs(), **kwargs)
        except _damaged_weight_errors() as error:
            raise NosinkError(
                f"the weights of {self.name!r} could not be read ({type(error).__name__}: {error}); a weight file is "
                "truncated or damaged: download or save the model again"
            ) from None
        if self.is_gguf:
            model.config._name_or_path = self.name  # our own object: records name the file, not its folder
        return model

    def check_tokenizer(self) -> None:
        """NosinkError when a local folder holds no tokenizer file (checked before any weight is loaded)."""
        folder = Path(self.path)
        if self.is_gguf or not folder.is_dir():
            return  # a GGUF file carries its tokenizer; a hub name is checked by transformers
        if not any((folder / name).is_file() for name in TOKENIZER_FILES):
            raise NosinkError(
                f"model folder {self.path!r} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); "
                "save the tokenizer into it: tokenizer.save_pretrained(folder)"
            )

    def load_tokenizer(self, **kwargs: Any) -> Any:
        """The tokenizer stored with the model (for a GGUF: the one in the file's metadata)."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.path, **self.kwargs(), **self.hub_kwargs(), **kwargs)

    def hub_kwargs(self) -> dict[str, Any]:
        """``local_files_only=True`` for a cached hub name while the hub is unreachable; {} otherwise.

        Raises:
            NosinkError: At once, for a name that is not a local path, not cached, while the hub is
                unreachable (transformers would retry for about 27 s, then blame the connection).
        """
        if self.is_gguf or Path(self.path).expanduser().exists():
            return {}
        return _offline_kwargs(self.path)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_log = logging.getLogger(__name__)
_REPORT_LOGGER = "transformers.modeling_utils"  # where transformers logs its LOAD REPORT table


class _ExpectedHeadReport(logging.Filter):
    """Drops transformers' LOAD REPORT when its only rows are ``lm_head.*`` UNEXPECTED keys; un-colours any other.

    Loading a ``*ForCausalLM`` checkpoint without its LM head, as every encoder does, leaves exactly
    those keys unused: the table said nothing but alarmed users (with ANSI codes in log files).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message:
            return True
        plain = _ANSI.sub("", message)
        cells = [[cell.strip() for cell in line.split("|")] for line in plain.splitlines() if "|" in line]
        rows = [row for row in cells[1:] if len(row) >= 2]  # cells[0] is the header
        if rows and all(key.startswith("lm_head.") and status == "UNEXPECTED" for key, status, *_ in rows):
            keys = ", ".join(key for key, *_ in rows)
            _log.debug("not loaded, as an encoder does not use the LM head: %s (transformers: UNEXPECTED)", keys)
            return False
        record.msg, record.args = plain, ()
        return True


@contextlib.contextmanager
def _quiet_expected_head_report() -> Iterator[None]:
    """The filter above on transformers' loading logger, for one load (the logger's own API, nothing patched)."""
    logger, report_filter = logging.getLogger(_REPORT_LOGGER), _ExpectedHeadReport()
    logger.addFilter(report_filter)
    try:
        yield
    finally:
        logger.removeFilter(report_filter)


@functools.cache
def _offline_kwargs(name: str) -> dict[str, Any]:
    """Asked once per name and process: one quick request, not one per config, weights and tokenizer."""
    from nosink.hub import HUB_CHECK_TIMEOUT_S, hub_unreachable_reason, is_cached

    reason = hub_unreachable_reason(timeout=HUB_CHECK_TIMEOUT_S)
    if reason is None:
        return {}
    if is_cached(name):
        return {"local_files_only": True}
    raise NosinkError(
        f"{name!r} is not a local folder or .gguf file, and the Hugging Face hub is unreachable ({reason}); "
        "give the path of a model folder, or run where the hub is reachable"
    )


_READ_ERRORS = (ValueError, IndexError, KeyError, TypeError, NotImplementedError)  # what a bad file raises


def _damaged_weight_errors() -> tuple[type[BaseException], ...]:
    """What reading a damaged weight file raises: safetensors' own error; a torch pickle's unpickling errors."""
    import pickle

    from safetensors import SafetensorError

    return (SafetensorError, pickle.UnpicklingError, EOFError)


def _gguf_error(name: str, error: BaseException) -> NosinkError:
    message = str(error)
    if "is not supported yet" in message or "Unknown gguf model_type" in message:
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

        readable = ", ".join(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer"))
        return NosinkError(
            f"transformers cannot dequantise {name!r}: {message.rstrip('.')} "
            f"(GGUF architectures it reads: {readable}); load the original, non-GGUF checkpoint instead"
        )
    size = Path(name).stat().st_size
    return NosinkError(
        f"GGUF file {name!r} ({size:,} bytes) could not be read; it is truncated or damaged "
        f"({type(error).__name__}: {message}). Download it again and check its sha256"
    )


def _check_gguf_packages() -> None:
    for package in ("gguf", "accelerate"):  # transformers needs both to dequantise a GGUF file
        if importlib.util.find_spec(package) is None:
            raise NosinkError(f"{GGUF_EXTRA} (the {package!r} package is missing)")


def convert_gguf(gguf_path: str | os.PathLike[str], output: str | os.PathLike[str], *, dtype: str = "float32") -> Path:
    """Dequantise a GGUF file once into a plain transformers folder (weights as safetensors, tokenizer, config).

    The folder holds the ``*ForCausalLM`` model, so it serves both ``Encoder.from_pretrained`` and
    ``generate()``. It is written under a temporary name and renamed into place when complete, with
    :data:`CONVERT_RECORD` naming the source file and its sha256. An existing ``output`` is refused.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from nosink.devices import resolve_dtype
    from nosink.families import family_for
    from nosink.io import sha256_of

    source = ModelSource.parse(gguf_path)
    if not source.is_gguf:
        raise NosinkError(f"{str(gguf_path)!r} is not a .gguf file")
    target = Path(output).expanduser()
    if target.exists():
        raise NosinkError(f"output folder {str(target)!r} already exists; remove it or choose another")
    if not target.parent.is_dir():
        raise NosinkError(f"the folder {str(target.parent)!r} for the output does not exist")
    torch_dtype = resolve_dtype(dtype, torch.device("cpu"))
    config = source.load_config()
    family_for(config)  # an architecture nosink cannot convert fails before the weights are dequantised
    model = source.load_model(AutoModelForCausalLM, config=config, dtype=torch_dtype)
    tokenizer = source.load_tokenizer()
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        record = {"gguf": Path(source.name).name, "sha256": sha256_of(Path(source.name)), "dtype": str(torch_dtype)}
        (partial / CONVERT_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        partial.rename(target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target
