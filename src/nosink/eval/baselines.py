"""Baseline embedders: plain encoders that go through the same evaluators as a nosink ``Encoder``.

The paper's tables compare converted decoders with ready-made embedders (BGE-M3, FinBERT …).
Both wrappers here satisfy :class:`nosink.eval.base.Embedder`:

- :class:`SentenceTransformerEmbedder` wraps a ``sentence_transformers.SentenceTransformer``
  (its own pooling, normalisation and truncation settings apply);
- :class:`HFMeanPoolEmbedder` runs a plain ``transformers.AutoModel`` (BERT-like) with masked
  mean pooling or the first ([CLS]) token.

Instructions: a baseline has no token-level boundary between instruction and text, so the
instruction is put in front of the text in E5-Mistral's format ``Instruct: {instruction}\\nQuery: ``
and **is part of the pooled text** (unlike ``nosink.Encoder``, which tokenizes the same string
but finds the instruction's tokens by character offsets and excludes them from pooling). A
sentence-transformers model whose ``Pooling`` module has ``include_prompt=False`` excludes it, as
sentence-transformers itself does.

Loading an embedder from a spec string (``nosink:NAME``, ``st:NAME``, ``hf:NAME``) and describing
it for result records is in :mod:`nosink.eval.embedders`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from nosink.devices import resolve_device, resolve_dtype
from nosink.encoder import DEFAULT_BATCH_SIZE, PROGRESS_BAR_MIN_TEXTS
from nosink.errors import Choice, NosinkError, check_positive
from nosink.eval.base import EmbedderKind, dtype_of, embedder_description
from nosink.inputs import INSTRUCTION_TEMPLATE, check_texts
from nosink.loading import ModelSource

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

MTEB_EXTRA_HINT = 'pip install "nosink[mteb]"'
_SANE_MAX_LENGTH = 1_000_000  # tokenizers without a limit report model_max_length = 1e30


class HFPooling(Choice):
    """How :class:`HFMeanPoolEmbedder` turns token states into one vector."""

    MEAN = "mean"  # masked mean over every real token, special tokens included (sentence-transformers' mean)
    CLS = "cls"  # the first real token ([CLS] for BERT-like models)

    @classmethod
    def noun(cls) -> str:
        return "hf: embedder pooling"


def instruction_prefix(instruction: str | None) -> str:
    """The text put in front of every input for an instruction: ``Instruct: {instruction}\\nQuery: ``.

    Args:
        instruction: A task description, or None.

    Returns:
        The prefix, or ``""`` when there is no instruction.
    """
    if instruction is not None and not isinstance(instruction, str):
        raise NosinkError(f"instruction must be a string, got {type(instruction).__name__}")
    return INSTRUCTION_TEMPLATE.format(instruction=instruction) if instruction else ""


def with_instruction(texts: Sequence[str], instruction: str | None) -> list[str]:
    """Prefix every text with the E5-Mistral instruction template (no change when ``instruction`` is empty).

    Args:
        texts: The texts.
        instruction: A task description, or None.

    Returns:
        The texts, each preceded by ``Instruct: {instruction}\\nQuery: `` when an instruction is given.
    """
    prefix = instruction_prefix(instruction)
    return [prefix + text for text in texts]


# ---------------------------------------------------------------- sentence-transformers


def import_sentence_transformers() -> Any:
    """Import ``sentence_transformers`` or raise a NosinkError that says how to install it.

    Returns:
        The ``sentence_transformers`` module.
    """
    try:
        import sentence_transformers
    except ImportError as error:
        raise NosinkError(
            f"sentence-transformers is not installed ({error}); install it with {MTEB_EXTRA_HINT}"
        ) from None
    return sentence_transformers


class SentenceTransformerEmbedder:
    """A ``sentence_transformers.SentenceTransformer`` behind the :class:`~nosink.eval.base.Embedder` protocol.

    The model's own modules decide pooling and truncation. An instruction is prepended as text
    (``Instruct: {instruction}\\nQuery: ``) through sentence-transformers' ``prompt`` argument, so it
    is pooled with the text unless the model's ``Pooling`` has ``include_prompt=False``.
    """

    def __init__(
        self,
        model_or_name: SentenceTransformer | str | Path,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str = "auto",
        max_length: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Load (or wrap) a sentence-transformers model.

        Args:
            model_or_name: A loaded ``SentenceTransformer``, a hub name or a local folder.
            device: Where to run; default CUDA if available, else CPU.
            dtype: ``auto`` (float32 on CPU, bfloat16/float16 on CUDA), a name or a torch dtype.
                Only used when loading by name.
            max_length: Truncate at this many tokens, or at the model's own limit if that is smaller.
            **kwargs: More keyword arguments for ``SentenceTransformer(...)`` (only when loading by name).
        """
        st = import_sentence_transformers()
        if isinstance(model_or_name, st.SentenceTransformer):
            if kwargs:
                raise NosinkError(f"keyword arguments {sorted(kwargs)} only apply when loading a model by name")
            self.model = model_or_name if device is None else model_or_name.to(resolve_device(device))
            self.name = _model_name(self.model)
        elif isinstance(model_or_name, (str, Path)):
            target = resolve_device(device)
            model_kwargs = {"dtype": resolve_dtype(dtype, target), **kwargs.pop("model_kwargs", {})}
            hub = ModelSource(str(model_or_name)).hub_kwargs()  # offline: fail at once, or use the cache
            self.model = st.SentenceTransformer(
                str(model_or_name), device=str(target), model_kwargs=model_kwargs, **hub, **kwargs
            )
            self.name = str(model_or_name)
        else:
            raise NosinkError(f"expected a SentenceTransformer, a name or a path, got {type(model_or_name).__name__}")
        self.model.eval()
        if max_length is not None:
            _check_max_length(max_length)
            own = self.model.max_seq_length
            self.model.max_seq_length = max_length if own is None else min(own, max_length)

    @property
    def dim(self) -> int:
        """The embedding size D."""
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(getter())

    @property
    def device(self) -> torch.device:
        """The device the model runs on."""
        return torch.device(self.model.device)

    @property
    def max_length(self) -> int | None:
        """The truncation length in tokens."""
        return self.model.max_seq_length

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder({self.name!r})"

    @property
    def prompts(self) -> dict[str, str]:
        """The model's named prompts (``config_sentence_transformers.json``), e.g. ``query`` and ``document``."""
        return dict(getattr(self.model, "prompts", None) or {})

    def encode(
        self,
        texts: Sequence[str],
        *,
        instruction: str | None = None,
        prompt: str | None = None,
        batch_size: int | None = None,
        normalize: bool = False,
        show_progress_bar: bool | None = None,
    ) -> np.ndarray:
        """Sentence embeddings [N, D] float32, in input order.

        Args:
            texts: The texts to embed.
            instruction: A task description, prepended as ``Instruct: {instruction}\\nQuery: ``; pooled
                with the text.
            prompt: A raw prefix instead (one of :attr:`prompts`, or any string), as sentence-transformers'
                ``prompt``; ``""`` for none.
            batch_size: Texts per forward pass (default 32).
            normalize: L2-normalise every embedding.
            show_progress_bar: Show a progress bar; default only for 256 texts or more.

        Returns:
            A [N, D] float32 array.
        """
        texts = check_texts(texts)
        size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
        check_positive(batch_size=size)  # 0 is refused, as by nosink's own encode, not taken as the default
        if instruction is not None and prompt is not None:
            raise NosinkError("give an instruction or a prompt, not both")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # None: the model's default prompt, if it has one (sentence-transformers' rule); "": none at all
        prefix = instruction_prefix(instruction) if instruction is not None else prompt
        show = len(texts) >= PROGRESS_BAR_MIN_TEXTS if show_progress_bar is None else show_progress_bar
        vectors = self.model.encode(
            texts,
            prompt=prefix,
            batch_size=size,
            show_progress_bar=show,
            convert_to_numpy=True,
            normalize_embeddings=normalize,
        )
        return np.asarray(vectors, dtype=np.float32)

    def corpus_identity(self) -> dict[str, Any]:
        """What decides this model's vectors, for an embedded corpus's manifest (a :class:`CorpusEmbedder`)."""
        from nosink.corpus.job import model_id

        return {
            "kind": EmbedderKind.SENTENCE_TRANSFORMERS.value,
            "model": model_id(self.name),
            "pooling": _st_pooling_mode(self.model),
            "dtype": dtype_of(self.model),
            "max_length": self.max_length,
            "dimension": self.dim,
        }

    def embed_corpus_texts(self, texts: list[str], encode: Any, progress: Any) -> tuple[np.ndarray, np.ndarray]:
        """Vectors [n, D] of a corpus chunk and which texts were truncated [n] (``nosink.corpus`` calls this)."""
        if encode.max_tokens_per_batch is not None:
            raise NosinkError("max_tokens_per_batch applies to nosink encoders; give a batch size instead")
        prompt = encode.prompt if encode.instruction is None else None
        vectors = self.encode(
            texts,
            instruction=encode.instruction,
            prompt=prompt,
            batch_size=encode.batch_size,
            normalize=encode.normalize,
            show_progress_bar=False,
        )
        progress(len(texts))
        return vectors, self.truncated(texts, instruction=encode.instruction, prompt=prompt)

    def truncated(
        self, texts: Sequence[str], *, instruction: str | None = None, prompt: str | None = None
    ) -> np.ndarray:
        """Which texts [N] are longer than :attr:`max_length` tokens with their prompt (as the model tokenizes)."""
        if instruction is not None:
            prefix = instruction_prefix(instruction)
        else:  # None: the default prompt applies, as in encode()
            prefix = prompt if prompt is not None else self.prompts.get(self.model.default_prompt_name or "", "")
        limit = self.max_length
        if limit is None:
            return np.zeros(len(texts), dtype=bool)
        return _longer_than(self.model.tokenizer, [prefix + text for text in texts], limit)

    def describe(self) -> dict[str, Any]:
        """Kind, name, pooling, dtype, device, dim and max_length, for result records."""
        return embedder_description(
            EmbedderKind.SENTENCE_TRANSFORMERS,
            self.name,
            None,
            _st_pooling_mode(self.model),
            dtype_of(self.model),
            self.device,
            self.dim,
        ) | {"max_length": self.max_length}


def _st_pooling_mode(model: Any) -> str | None:
    pooling = next((module for module in model if type(module).__name__ == "Pooling"), None)
    if pooling is None:
        return None
    legacy = getattr(pooling, "get_pooling_mode_str", None)  # sentence-transformers < 6
    mode = legacy() if callable(legacy) else getattr(pooling, "pooling_mode", None)
    return "+".join(map(str, mode)) if isinstance(mode, (list, tuple)) else (None if mode is None else str(mode))


def _model_name(model: Any) -> str:
    card = getattr(model, "model_card_data", None)
    for candidate in (getattr(card, "model_id", None), getattr(card, "base_model", None)):
        if candidate:
            return str(candidate)
    first = next(iter(model), None)
    config = getattr(getattr(first, "auto_model", None) or getattr(first, "model", None), "config", None)
    return str(getattr(config, "_name_or_path", "") or type(model).__name__)


# ---------------------------------------------------------------- plain transformers encoder


class HFMeanPoolEmbedder:
    """A plain ``transformers.AutoModel`` encoder (BERT-like) with masked mean or first-token pooling.

    Batched (longest texts first), no gradients, float32 pooling; texts longer than
    ``max_length`` tokens are truncated. An instruction is prepended as text and pooled with it.
    """

    def __init__(
        self,
        name_or_path: str | Path,
        *,
        pooling: HFPooling | str = HFPooling.MEAN,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str = "auto",
        max_length: int = 512,
        **model_kwargs: Any,
    ) -> None:
        """Load a model and its tokenizer (hub name or local folder).

        Args:
            name_or_path: A hub name or a local folder.
            pooling: ``mean`` (masked mean over all real tokens) or ``cls`` (the first token).
            device: Where to run; default CUDA if available, else CPU.
            dtype: ``auto`` (float32 on CPU, bfloat16/float16 on CUDA), a name or a torch dtype.
            max_length: Truncate at this many tokens (or at the model's own limit if that is smaller).
            **model_kwargs: More keyword arguments for ``AutoModel.from_pretrained``.
        """
        from transformers import AutoModel, AutoTokenizer

        target = resolve_device(device)
        hub = ModelSource(str(name_or_path)).hub_kwargs()  # offline: fail at once, or use the cache
        model = AutoModel.from_pretrained(str(name_or_path), dtype=resolve_dtype(dtype, target), **hub, **model_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), **hub)
        self._setup(model.to(target), tokenizer, pooling=pooling, max_length=max_length, name=str(name_or_path))

    @classmethod
    def from_model(
        cls,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        pooling: HFPooling | str = HFPooling.MEAN,
        max_length: int = 512,
    ) -> HFMeanPoolEmbedder:
        """Wrap an already-loaded encoder model and tokenizer (shared, not copied).

        Args:
            model: A transformers encoder whose output has ``last_hidden_state``.
            tokenizer: Its tokenizer.
            pooling: ``mean`` or ``cls``.
            max_length: Truncate at this many tokens (or at the model's own limit if that is smaller).

        Returns:
            The embedder.
        """
        self = cls.__new__(cls)
        name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
        self._setup(model, tokenizer, pooling=pooling, max_length=max_length, name=name)
        return self

    def _setup(
        self, model: torch.nn.Module, tokenizer: Any, *, pooling: HFPooling | str, max_length: int, name: str
    ) -> None:
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
            raise NosinkError(f"model must be a transformers model, got {type(model).__name__}")
        if not callable(tokenizer):
            raise NosinkError(f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}")
        _check_max_length(max_length)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.pooling = HFPooling.coerce(pooling)
        self.name = name
        self.max_length = _effective_max_length(max_length, model.config, tokenizer)

    @property
    def dim(self) -> int:
        """The embedding size D (the model's hidden size)."""
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        """The device the model runs on."""
        return next(self.model.parameters()).device

    def __repr__(self) -> str:
        return f"HFMeanPoolEmbedder({self.name!r}, pooling='{self.pooling.value}')"

    def encode(
        self,
        texts: Sequence[str],
        *,
        instruction: str | None = None,
        batch_size: int | None = None,
        normalize: bool = False,
        show_progress_bar: bool | None = None,
    ) -> np.ndarray:
        """Sentence embeddings [N, D] float32, in input order.

        Args:
            texts: The texts to embed.
            instruction: A task description, prepended as ``Instruct: {instruction}\\nQuery: ``; pooled
                with the text.
            batch_size: Texts per forward pass (default 32).
            normalize: L2-normalise every embedding.
            show_progress_bar: Show a progress bar; default only for 256 texts or more.

        Returns:
            A [N, D] float32 array.
        """
        texts = with_instruction(check_texts(texts), instruction)
        output = np.zeros((len(texts), self.dim), dtype=np.float32)
        size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
        check_positive(batch_size=size)  # 0 is refused, as by nosink's own encode, not taken as the default
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # similar lengths together: less padding
        show = len(texts) >= PROGRESS_BAR_MIN_TEXTS if show_progress_bar is None else show_progress_bar
        with tqdm(total=len(texts), disable=not show, desc="encoding", unit="text") as bar:
            for start in range(0, len(order), size):
                indices = order[start : start + size]
                pooled = self._embed([texts[i] for i in indices])  # [B, D]
                if normalize:
                    pooled = torch.nn.functional.normalize(pooled, dim=-1)
                output[indices] = pooled.cpu().numpy()
                bar.update(len(indices))
        return output

    @property
    def prompts(self) -> dict[str, str]:
        """A plain encoder has no named prompts."""
        return {}

    def corpus_identity(self) -> dict[str, Any]:
        """What decides this model's vectors, for an embedded corpus's manifest (a :class:`CorpusEmbedder`)."""
        from nosink.corpus.job import model_id

        return {
            "kind": EmbedderKind.HF.value,
            "model": model_id(self.name),
            "pooling": self.pooling.value,
            "dtype": dtype_of(self.model),
            "max_length": self.max_length,
            "dimension": self.dim,
        }

    def embed_corpus_texts(self, texts: list[str], encode: Any, progress: Any) -> tuple[np.ndarray, np.ndarray]:
        """Vectors [n, D] of a corpus chunk and which texts were truncated [n] (``nosink.corpus`` calls this)."""
        if encode.prompt:
            raise NosinkError("an hf: encoder takes an instruction, not a raw prompt")
        if encode.max_tokens_per_batch is not None:
            raise NosinkError("max_tokens_per_batch applies to nosink encoders; give a batch size instead")
        vectors = self.encode(
            texts, instruction=encode.instruction, batch_size=encode.batch_size, normalize=encode.normalize
        )
        progress(len(texts))
        return vectors, self.truncated(texts, instruction=encode.instruction)

    def truncated(self, texts: Sequence[str], *, instruction: str | None = None) -> np.ndarray:
        """Which texts [N] are longer than :attr:`max_length` tokens with their instruction."""
        texts = with_instruction(list(texts), instruction)
        return _longer_than(self.tokenizer, texts, self.max_length, split_special_tokens=True)  # as _embed tokenizes

    @torch.inference_mode()
    def _embed(self, texts: list[str]) -> torch.Tensor:
        encoded = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            split_special_tokens=True,  # special-token strings in user text stay text
            return_tensors="pt",
        ).to(self.device)
        states = self.model(**encoded).last_hidden_state.float()  # [B, T, D]
        mask = encoded["attention_mask"].to(states.dtype)  # [B, T], 1 = real token
        if self.pooling is HFPooling.CLS:
            first = mask.argmax(-1)  # [B]: first real token, whichever side is padded
            return states[torch.arange(states.shape[0], device=states.device), first]  # [B, D]
        weights = mask / mask.sum(-1, keepdim=True)  # [B, T], rows sum to 1
        return torch.einsum("bt,btd->bd", weights, states)  # [B, D]

    def describe(self) -> dict[str, Any]:
        """Kind, name, pooling, dtype, device, dim and max_length, for result records."""
        return embedder_description(
            EmbedderKind.HF, self.name, None, self.pooling.value, dtype_of(self.model), self.device, self.dim
        ) | {"max_length": self.max_length}


def _longer_than(tokenizer: Any, texts: list[str], limit: int, **options: Any) -> np.ndarray:
    """Which texts [N] have more than ``limit`` tokens (cut at ``limit + 1``: enough to tell, and no long rows)."""
    tokenized = tokenizer(texts, truncation=True, max_length=limit + 1, **options)
    return np.array([len(ids) > limit for ids in tokenized["input_ids"]], dtype=bool)


def _check_max_length(max_length: int) -> None:
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
        raise NosinkError(f"max_length must be a positive integer, got {max_length!r}")


def _effective_max_length(max_length: int, config: Any, tokenizer: Any) -> int:
    limits = [max_length]
    own = getattr(tokenizer, "model_max_length", None)
    if isinstance(own, int) and 0 < own < _SANE_MAX_LENGTH:
        limits.append(own)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    return min(limits)
