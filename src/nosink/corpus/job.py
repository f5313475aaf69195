"""What a corpus job computes, shared by both engines: how to load the encoder, how to encode, Ray's resources.

The local engine (:mod:`nosink.corpus.embed`) and the Ray engine (:mod:`nosink.corpus.ray_engine`)
both import from here, and not from each other's modules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from nosink.devices import resolve_device, resolve_dtype
from nosink.encoder import Encoder, effective_max_length
from nosink.errors import NosinkError
from nosink.plan import Plan
from nosink.pooling import Pooling
from nosink.recipe import Recipe

Progress = Callable[[int], None]  # told how many more texts are done


@dataclass(frozen=True)
class EncoderSpec:
    """How to load an encoder: what a Ray worker needs to build its own copy."""

    model: str
    plan: str | None = None  # None: a saved folder's, else the baseline
    pooling: str | None = None  # None: a saved folder's, else mean
    dtype: str = "auto"
    device: str | None = None
    max_length: int | None = None  # None: a saved folder's, else 512 (or the model's position limit when smaller)
    recipe: str | None = None  # None: a saved folder's, else none

    def load(self) -> Encoder:
        return Encoder.from_pretrained(
            self.model,
            plan=self.plan,
            pooling=self.pooling,
            dtype=self.dtype,
            device=self.device,
            max_length=self.max_length,
            recipe=self.recipe,
        )

    @classmethod
    def of(cls, encoder: Encoder) -> EncoderSpec:
        """The spec that reloads ``encoder``; NosinkError when it was not loaded from a name or folder."""
        if encoder.name == encoder.base.config.model_type and not Path(encoder.name).exists():
            raise NosinkError("Ray workers load the model by hub name or folder; this encoder has neither")
        return cls(
            encoder.name,
            str(encoder.plan),
            encoder.own_pooling.value,  # the recipe carries its own
            encoder.dtype_name,
            encoder.device.type,
            encoder.max_length,
            str(encoder.recipe),
        )

    def for_workers(self, gpus_per_worker: float) -> EncoderSpec:
        """This spec with device and dtype fixed here, so that Ray workers compute what the manifest records.

        Without a device, workers use CUDA when they get GPUs and the CPU otherwise; ``dtype="auto"``
        for GPU workers is decided here only when this process sees CUDA as well.
        """
        device = self.device or ("cuda" if gpus_per_worker > 0 else "cpu")
        target = resolve_device(device)
        if self.dtype == "auto" and target.type == "cuda" and not torch.cuda.is_available():
            raise NosinkError(
                "dtype 'auto' for GPU workers cannot be decided in this process (it has no CUDA); "
                "pass --dtype bfloat16, float16 or float32"
            )
        dtype = str(resolve_dtype(self.dtype, target)).removeprefix("torch.")
        return replace(self, device=device, dtype=dtype)

    def identity(self) -> dict[str, Any]:
        """The fields that decide the vectors, as written in the manifest (``encoder`` section)."""
        from nosink.loading import ModelSource
        from nosink.saving import saved_or_given, weights_folder_or_name

        config = ModelSource.parse(weights_folder_or_name(self.model)).load_config()  # a reference folder has none
        dtype = resolve_dtype(self.dtype, resolve_device(self.device))
        settings = saved_or_given(self.model, plan=self.plan, pooling=self.pooling, recipe=self.recipe)
        recipe = Recipe.coerce(settings["recipe"])
        identity = {
            "model": model_id(self.model),
            "plan": str(Plan.coerce(settings["plan"])),
            "pooling": (recipe.pool or Pooling.coerce(settings["pooling"])).value,
            "dtype": str(dtype).removeprefix("torch."),
            "max_length": effective_max_length(self.max_length or settings["max_length"], config, warn=False),
            "dimension": int(config.hidden_size),
        }
        # Only a recipe or default prompt that changes the vectors is written, so that older jobs still resume.
        if not recipe.is_default:
            identity["recipe"] = str(recipe)
        default = _saved_default_prompt(self.model)
        return identity if default is None else identity | {"default_prompt": default}


@dataclass(frozen=True)
class RayOptions:
    """Ray settings: a cluster ``address`` (None starts a local instance), actors and their resources."""

    address: str | None = None
    workers: int | None = None  # default: a local instance's CPUs divided by cpus_per_worker
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise NosinkError(f"workers must be >= 1, got {self.workers}")
        if not self.cpus_per_worker > 0:
            raise NosinkError(f"cpus_per_worker must be > 0, got {self.cpus_per_worker}")
        if not self.gpus_per_worker >= 0:
            raise NosinkError(f"gpus_per_worker must be >= 0, got {self.gpus_per_worker}")


@dataclass(frozen=True)
class EncodeOptions:
    """How texts are encoded: what both engines pass to :func:`embed_texts`.

    ``prompt`` is a raw prefix (sentence-transformers' prompts): None leaves a saved folder's default prompt
    to apply, ``""`` asks for no prompt at all.
    """

    instruction: str | None
    normalize: bool
    batch_size: int | None
    max_tokens_per_batch: int | None
    prompt: str | None = None


@runtime_checkable
class CorpusEmbedder(Protocol):
    """A model other than a nosink ``Encoder`` that embeds corpora locally: a sentence-transformers baseline.

    ``corpus_identity`` gives the fields that decide its vectors (the manifest's ``encoder`` section, with at
    least ``model``, ``max_length`` and ``dimension``); ``embed_corpus_texts`` returns vectors [n, D] and which
    texts were truncated [n].
    """

    def corpus_identity(self) -> dict[str, Any]: ...

    def embed_corpus_texts(
        self, texts: list[str], encode: EncodeOptions, progress: Progress
    ) -> tuple[np.ndarray, np.ndarray]: ...


def embed_texts(
    encoder: Encoder | CorpusEmbedder, texts: list[str], encode: EncodeOptions, progress: Progress
) -> tuple[np.ndarray, np.ndarray]:
    """Vectors [n, D] of ``texts`` as ``Encoder.encode`` computes them, and which texts were truncated [n]."""
    if not isinstance(encoder, Encoder):
        return encoder.embed_corpus_texts(texts, encode, progress)
    # a saved folder's default prompt, if any, unless a prompt ("" for none) is given
    instruction, prompt = encoder.resolve_prompt(encode.instruction, prompt=encode.prompt)
    rows = encoder.tokenize(texts, instruction=instruction, prompt=prompt, warn=False)  # one count per run
    vectors = encoder.embed_rows(  # [n, D]
        rows,
        batch_size=encode.batch_size,
        max_tokens_per_batch=encode.max_tokens_per_batch,
        normalize=encode.normalize,
        show_progress_bar=False,
        progress=progress,
    )
    truncated = np.array([row.truncated for row in rows], dtype=bool).reshape(len(texts), -1)  # [n, K]: K prompts
    return vectors, truncated.any(axis=1)


def model_id(name: str) -> str:
    """A local folder by its absolute path (so ./m and m agree), a hub model by its name."""
    path = Path(name)
    return str(path.resolve()) if path.exists() else name


def _saved_default_prompt(model: str) -> str | None:
    """The prompt a saved folder applies when a call gives none (its ``default_prompt_name``), else None."""
    from nosink.saving import read_saved

    saved = read_saved(model) if Path(model).expanduser().is_dir() else None
    return saved.prompts.get(saved.default_prompt_name) if saved and saved.default_prompt_name else None
