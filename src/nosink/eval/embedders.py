"""Which embedder a spec string names, loading it, and describing it for result records.

:func:`load_embedder` is the one entry point for the CLI: ``nosink:NAME`` (or a bare name) loads a
decoder converted by nosink (``nosink.Encoder``), ``st:NAME`` and ``hf:NAME`` load the baselines of
:mod:`nosink.eval.baselines`. :func:`parse_spec` splits a spec into its
:class:`~nosink.eval.base.EmbedderKind` and name. :func:`describe_embedder` gives a small dict for
result records.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from nosink.encoder import DEFAULT_MAX_LENGTH, Encoder
from nosink.errors import NosinkError
from nosink.eval.base import Embedder, EmbedderKind, dtype_of, embedder_description
from nosink.eval.baselines import HFMeanPoolEmbedder, HFPooling, SentenceTransformerEmbedder

if TYPE_CHECKING:
    import torch

    from nosink.plan import Plan


def parse_spec(spec: str) -> tuple[EmbedderKind, str]:
    """Split ``KIND:NAME`` into its kind and name; a bare name (or a path) is a nosink model.

    Args:
        spec: ``nosink:NAME``, ``st:NAME``, ``hf:NAME`` or a bare hub name / local path.

    Returns:
        The kind and the name or path.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise NosinkError(f"an embedder spec must be a non-empty string such as 'st:BAAI/bge-m3', got {spec!r}")
    prefix, sep, rest = spec.partition(":")
    if not sep or Path(spec).exists() or (len(prefix) == 1 and rest[:1] in ("\\", "/")):  # a path, e.g. C:\models
        return EmbedderKind.NOSINK, spec
    try:
        kind = EmbedderKind(prefix.lower())
    except ValueError:
        known = ", ".join(f"{k.value}:" for k in EmbedderKind)
        raise NosinkError(f"unknown embedder kind {prefix!r} in {spec!r}; use {known} or a bare model name") from None
    if not rest.strip():
        raise NosinkError(f"embedder spec {spec!r} names no model; write e.g. '{kind.value}:PATH_OR_NAME'")
    return kind, rest


def load_embedder(
    spec: str,
    *,
    plan: Plan | str | None = None,
    pooling: str | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str = "auto",
    max_length: int | None = None,
    recipe: str | None = None,
) -> Embedder:
    """Load an embedder from a spec string: the one entry point for the CLI.

    Args:
        spec: ``nosink:PATH_OR_NAME`` or a bare name (a decoder converted by nosink),
            ``st:PATH_OR_NAME`` (a sentence-transformers model) or ``hf:PATH_OR_NAME``
            (a plain transformers encoder with mean or CLS pooling). NAME may be a model that
            ``nosink models`` provisions (e.g. ``st:all-minilm-l6-v2``): its cached folder is used.
        plan: The nosink plan (nosink models only); default ``baseline``.
        pooling: nosink: ``mean`` (default), ``weighted_mean``, ``last``, ``first``; hf: ``mean``
            (default) or ``cls``; st: not allowed (the model's own Pooling module decides).
        device: Where to run; default CUDA if available, else CPU.
        dtype: ``auto`` (float32 on CPU, bfloat16/float16 on CUDA), ``float32``, ``bfloat16``, ``float16``.
        max_length: Truncate texts at this many tokens (capped at the model's own limit); default 512
            (for st: the model's own ``max_seq_length``).
        recipe: A :class:`~nosink.recipe.Recipe` string (nosink models only); default: none.

    Returns:
        An object with ``encode(texts, *, instruction=None, batch_size=None, normalize=False, ...)``.
    """
    kind, name = parse_spec(spec)
    name = _provisioned(kind, name)
    if kind is EmbedderKind.NOSINK:
        return Encoder.from_pretrained(
            name,
            plan=plan,  # None: a saved folder's, else the baseline
            pooling=pooling,  # None: a saved folder's, else mean
            dtype=dtype,
            device=device,
            max_length=max_length,
            recipe=recipe,
        )
    if plan is not None:
        raise NosinkError(f"a plan applies only to nosink models (nosink:NAME), not to {spec!r}")
    if recipe is not None:
        raise NosinkError(f"a recipe applies only to nosink models (nosink:NAME), not to {spec!r}")
    if kind is EmbedderKind.SENTENCE_TRANSFORMERS:
        if pooling is not None:
            raise NosinkError(
                f"{spec!r} pools with its own sentence-transformers Pooling module; drop pooling, or use hf:{name}"
            )
        return SentenceTransformerEmbedder(name, device=device, dtype=dtype, max_length=max_length)
    return HFMeanPoolEmbedder(
        name,
        pooling=pooling if pooling is not None else HFPooling.MEAN,
        device=device,
        dtype=dtype,
        max_length=max_length if max_length is not None else DEFAULT_MAX_LENGTH,
    )


def _provisioned(kind: EmbedderKind, name: str) -> str:
    """A provisioned model's name (``nosink models``) as its cached folder, provisioned now if need be."""
    from nosink.provision import REAL_MODELS, ModelKind, provisioned_folder

    model = REAL_MODELS.get(name)
    if model is not None and not Path(name).exists():
        if kind is EmbedderKind.NOSINK and model.kind is ModelKind.EMBEDDER:
            raise NosinkError(
                f"{name} is a trained sentence-transformers embedder, not a decoder to convert; use st:{name}"
            )
        return str(provisioned_folder(name))
    return name


def describe_embedder(embedder: Embedder) -> dict[str, Any]:
    """A small JSON-ready description of an embedder for result records.

    Args:
        embedder: A nosink ``Encoder``, a baseline wrapper, or any object with ``encode``.

    Returns:
        ``kind``, ``name``, ``plan``, ``pooling``, ``dtype``, ``device``, ``dim`` and ``max_length``
        (None where unknown), plus the source: ``path`` (absolute, for a local folder) or
        ``revision`` (the hub commit the weights came from, when transformers recorded it).
    """
    description = _describe(embedder)
    name = description.get("name")
    local = bool(name) and Path(str(name)).exists()
    module = getattr(embedder, "base", None) or getattr(embedder, "model", None)
    commit = getattr(getattr(module, "config", None), "_commit_hash", None)
    return description | {"path": str(Path(str(name)).resolve()) if local else None, "revision": commit}


def _describe(embedder: Embedder) -> dict[str, Any]:
    if isinstance(embedder, Encoder):
        return embedder_description(
            EmbedderKind.NOSINK,
            embedder.name,
            str(embedder.plan),
            embedder.pooling.value,
            dtype_of(embedder.base),
            embedder.device,
            embedder.dim,
        ) | {"max_length": embedder.max_length, "recipe": str(embedder.recipe)}
    describe = getattr(embedder, "describe", None)
    if callable(describe):
        return dict(describe())
    return {
        "kind": type(embedder).__name__,
        "name": getattr(embedder, "name", None),
        "plan": None,
        "pooling": None,
        "dtype": None,
        "device": None,
        "dim": getattr(embedder, "dim", None),
        "max_length": getattr(embedder, "max_length", None),
    }
