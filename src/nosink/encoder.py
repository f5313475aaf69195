"""``Encoder``: a decoder LLM used as a text encoder under a :class:`~nosink.plan.Plan`."""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from nosink.attention import AttentionRecord
from nosink.devices import check_available, resolve_device, resolve_dtype
from nosink.errors import NosinkError, check_bool
from nosink.families import family_for
from nosink.inputs import Batch, PackedBatch, TextTokenizer, TokenizedText, batches, check_texts, packed_batches
from nosink.loading import ModelSource
from nosink.plan import Plan
from nosink.pooling import Pooling, pool
from nosink.recipe import Recipe
from nosink.runner import check_readout, run_recipe, run_schedule

DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_LENGTH = 512
PROGRESS_BAR_MIN_TEXTS = 256
R = TypeVar("R")


@dataclass(frozen=True)
class TokenEncoding:
    """Per-token final states of one text, aligned to characters (and to words, if words were given).

    Only the text's own tokens are here: no special, instruction or padding token.
    """

    text: str
    tokens: list[str]
    token_ids: list[int]
    offsets: list[tuple[int, int]]  # character span of each token in ``text``
    word_ids: list[int | None] | None  # word index of each token; None for tokens of no word
    embeddings: np.ndarray  # [n_tokens, D] float32


class Encoder:
    """A decoder model and tokenizer that encode texts under a conversion plan.

    Build it with :meth:`from_pretrained` or :meth:`from_model`. The model is shared, never
    copied, and left unchanged for every other user (``generate()`` stays identical).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        plan: Plan | str = "baseline",
        pooling: Pooling | str = "mean",
        max_length: int | None = None,
        recipe: Recipe | str | None = None,
    ) -> None:
        if not isinstance(model, nn.Module) or not hasattr(model, "config"):
            raise NosinkError(f"model must be a transformers model, got {type(model).__name__}")
        if not callable(tokenizer):
            raise NosinkError(f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}")
        self.model = model
        self.base: nn.Module = getattr(model, "base_model", model)
        self.family = family_for(self.base.config)
        self.tokenizer = tokenizer
        self.plan = Plan.coerce(plan)
        self.schedule = self.plan.resolve(self.num_layers)
        self.recipe = Recipe.coerce(recipe)
        check_readout(self.schedule, self.recipe.depths(self.num_layers))
        self.pooling = self.recipe.pool or Pooling.coerce(pooling)  # a recipe's pooling wins
        if self.recipe.prompt is not None and self.pooling is Pooling.REFERENCE_MEAN:
            raise NosinkError(
                "reference_mean pooling counts the released code's own prompt; a recipe prompt needs mean"
            )
        self.max_length = effective_max_length(max_length, self.base.config)

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        plan: Plan | str = "baseline",
        pooling: Pooling | str = "mean",
        dtype: torch.dtype | str = "auto",
        device: torch.device | str | None = None,
        max_length: int | None = None,
        recipe: Recipe | str | None = None,
        **model_kwargs: Any,
    ) -> Encoder:
        """Load a decoder (hub name, local folder or ``.gguf`` file) without its LM head.

        ``dtype="auto"`` is float32 on CPU and bfloat16 on CUDA (float16 where bf16 is not
        supported). ``max_length`` is in tokens: by default 512, or the model's position limit when
        that is smaller; a larger value is capped at that limit, with a warning. A GGUF file is
        dequantised into that dtype, and its tokenizer is read from the same file (needs
        ``nosink[gguf]``). Extra keyword arguments go to ``AutoModel.from_pretrained``.
        """
        from transformers import AutoModel

        source = ModelSource.parse(name_or_path)
        config = source.load_config(trust_remote_code=model_kwargs.get("trust_remote_code"))
        family_for(config)  # fail before loading any weights
        schedule = Plan.coerce(plan).resolve(config.num_hidden_layers)
        check_readout(schedule, Recipe.coerce(recipe).depths(config.num_hidden_layers))
        source.check_tokenizer()
        target = check_available(resolve_device(device))
        streams_to_device = target.type != "cpu" and importlib.util.find_spec("accelerate") is not None
        if streams_to_device:  # device_map loads straight onto the device, but needs accelerate
            model_kwargs.setdefault("device_map", str(target))
        model = source.load_model(AutoModel, config=config, dtype=resolve_dtype(dtype, target), **model_kwargs)
        if "device_map" not in model_kwargs:
            model.to(target)  # moves the parameters in place; no second copy is kept
        model.eval()
        tokenizer = source.load_tokenizer()
        return cls(model, tokenizer, plan=plan, pooling=pooling, max_length=max_length, recipe=recipe)

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        tokenizer: Any,
        *,
        plan: Plan | str = "baseline",
        pooling: Pooling | str = "mean",
        max_length: int | None = None,
        recipe: Recipe | str | None = None,
    ) -> Encoder:
        """Wrap an already-loaded model (a ``*ForCausalLM`` chat model included), sharing its weights."""
        return cls(model, tokenizer, plan=plan, pooling=pooling, max_length=max_length, recipe=recipe)

    def with_plan(
        self, plan: Plan | str, *, pooling: Pooling | str | None = None, recipe: Recipe | str | None = None
    ) -> Encoder:
        """The same model and tokenizer under another plan (no weights are copied); the recipe is kept unless given."""
        return Encoder(
            self.model,
            self.tokenizer,
            plan=plan,
            pooling=pooling or self.pooling,
            max_length=self.max_length,
            recipe=self.recipe if recipe is None else recipe,
        )

    def with_recipe(self, recipe: Recipe | str | None) -> Encoder:
        """The same model, tokenizer and plan under another recipe (no weights are copied)."""
        return Encoder(
            self.model, self.tokenizer, plan=self.plan, pooling=self.pooling, max_length=self.max_length, recipe=recipe
        )

    # ---------------------------------------------------------------- properties

    @property
    def num_layers(self) -> int:
        return len(self.family.decoder_layers(self.base))

    @property
    def dim(self) -> int:
        return int(self.base.config.hidden_size)

    @property
    def name(self) -> str:
        """The model's hub name or local path (its ``config._name_or_path``), else its model type."""
        return getattr(self.base.config, "_name_or_path", "") or self.base.config.model_type

    @property
    def device(self) -> torch.device:
        return next(self.base.parameters()).device

    @property
    def dtype_name(self) -> str:
        """The weights' dtype as a plain name: ``float32``, ``bfloat16`` …"""
        return str(next(self.base.parameters()).dtype).removeprefix("torch.")

    def __repr__(self) -> str:
        recipe = "" if self.recipe.is_default else f", recipe='{self.recipe}'"
        return (
            f"Encoder({self.name!r}, plan='{self.plan}', pooling='{self.pooling.value}'{recipe}, L={self.num_layers})"
        )

    # ---------------------------------------------------------------- tensors

    @torch.inference_mode()
    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Token states [B, T, D] under the plan, read out as the recipe says (default: final-norm states of the
        last layer); any padding side works."""
        input_ids, attention_mask = self._check_ids(input_ids, attention_mask)
        return run_recipe(self.base, self.family, self.schedule, self.recipe, input_ids, attention_mask)

    @torch.inference_mode()
    def attentions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> list[AttentionRecord]:
        """Attention weights of every layer call, in run order, from an eager run of the plan."""
        input_ids, attention_mask = self._check_ids(input_ids, attention_mask)
        records: list[AttentionRecord] = []
        run_schedule(self.base, self.family, self.schedule, input_ids, attention_mask, records=records)
        return records

    def _check_ids(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2:
            raise NosinkError("input_ids must be a [batch, tokens] tensor")
        if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
            raise NosinkError(f"input_ids must hold integer token ids, got {input_ids.dtype}")
        vocab = self.base.get_input_embeddings().num_embeddings
        if input_ids.numel() and not (int(input_ids.min()) >= 0 and int(input_ids.max()) < vocab):
            low, high = int(input_ids.min()), int(input_ids.max())
            raise NosinkError(f"input_ids must be in [0, {vocab}) (the vocabulary), got values in [{low}, {high}]")
        limit = position_limit(self.base.config)
        if limit is not None and input_ids.shape[1] > limit:
            raise NosinkError(f"input_ids has {input_ids.shape[1]} tokens, more than the model's {limit} positions")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
            shape = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else attention_mask
            raise NosinkError(f"attention_mask {shape} must be a tensor matching input_ids {tuple(input_ids.shape)}")
        if not bool(attention_mask.bool().any(-1).all()):
            raise NosinkError("every row needs at least one real token (attention_mask all zero in a row)")
        return input_ids.to(self.device), attention_mask.to(self.device)

    # ---------------------------------------------------------------- texts

    def encode(
        self,
        texts: Sequence[str],
        *,
        instruction: str | None = None,
        batch_size: int | None = None,
        max_tokens_per_batch: int | None = None,
        normalize: bool = False,
        packing: bool = False,
        show_progress_bar: bool | None = None,
    ) -> np.ndarray:
        """Sentence embeddings [N, D] float32, in input order.

        ``instruction`` (a task description) is put before each text in E5-Mistral's format
        ``Instruct: {instruction}\\nQuery: `` and excluded from mean pooling. Texts longer than
        ``max_length`` tokens are truncated, with one warning. ``packing`` puts several short texts
        into one row, each attending only to itself (same vectors, less padding); ``max_tokens_per_batch``
        then counts the texts' own tokens instead of padded ones.
        """
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        rows = self.tokenize(texts, instruction=instruction)
        return self.embed_rows(
            rows,
            batch_size=batch_size,
            max_tokens_per_batch=max_tokens_per_batch,
            normalize=normalize,
            packing=packing,
            show_progress_bar=show_progress_bar,
        )

    def embed_rows(
        self,
        rows: list[TokenizedText],
        *,
        batch_size: int | None = None,
        max_tokens_per_batch: int | None = None,
        normalize: bool = False,
        packing: bool = False,
        show_progress_bar: bool | None = None,
        progress: Callable[[int], object] | None = None,
    ) -> np.ndarray:
        """Embeddings [N, D] float32 of N texts' rows from :meth:`tokenize`, in text order.

        A recipe with K prompt templates gives K rows per text; their pooled vectors are averaged
        before normalizing. ``progress``, if given, is called with the number of texts done after
        every batch.
        """
        check_bool(packing=packing, normalize=normalize)
        per_text = self.rows_per_text
        if len(rows) % per_text:
            raise NosinkError(f"{len(rows)} rows are not {per_text} rows (one per prompt template) for every text")
        done = [0]  # rows finished so far

        def rows_done(count: int) -> None:
            before, done[0] = done[0] // per_text, done[0] + count
            if progress is not None and done[0] // per_text > before:
                progress(done[0] // per_text - before)

        pooled = self.pool_rows(
            rows,
            batch_size=batch_size,
            max_tokens_per_batch=max_tokens_per_batch,
            packing=packing,
            show_progress_bar=show_progress_bar,
            progress=rows_done,
        )  # [N * K, D]
        vectors = torch.from_numpy(self.average_prompts(pooled))  # [N, D]
        if normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return vectors.numpy()

    def pool_rows(
        self,
        rows: list[TokenizedText],
        *,
        batch_size: int | None = None,
        max_tokens_per_batch: int | None = None,
        packing: bool = False,
        show_progress_bar: bool | None = None,
        progress: Callable[[int], object] | None = None,
    ) -> np.ndarray:
        """The pooled vector [len(rows), D] float32 of every row on its own (one text in one template), in row order.

        ``progress``, if given, is called with the number of rows of every finished batch.
        """
        output = np.zeros((len(rows), self.dim), dtype=np.float32)
        run = self.run_batches(
            rows,
            batch_size=batch_size,
            max_tokens_per_batch=max_tokens_per_batch,
            packing=packing,
            show_progress_bar=show_progress_bar,
        )
        for batch, states in run:
            states, real_mask, text_mask, prompt_mask = batch.per_text(states)  # [B, T, D], [B, T] ×3: a text per row
            pooled = pool(states, real_mask, text_mask, self.pooling, prompt_mask)  # [B, D]
            output[batch.indices] = pooled.cpu().numpy()
            if progress is not None:
                progress(len(batch.indices))
        return output

    @property
    def rows_per_text(self) -> int:
        """K, the rows every text is encoded in: one per prompt template of the recipe (1 without one)."""
        return max(len(self.recipe.templates), 1)

    def average_prompts(self, pooled: np.ndarray) -> np.ndarray:
        """[N * K, D] pooled rows (text by text, K templates each) -> [N, D], the mean over each text's templates."""
        per_text = self.rows_per_text
        if per_text == 1:
            return pooled
        return pooled.reshape(-1, per_text, pooled.shape[-1]).mean(axis=1)  # [N, K, D] -> [N, D]

    def encode_tokens(
        self,
        texts: Sequence[str] | Sequence[Sequence[str]],
        *,
        instruction: str | None = None,
        batch_size: int | None = None,
        max_tokens_per_batch: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> list[TokenEncoding]:
        """Per-token final states for token-level tasks (NER).

        Each item is a string, or a list of words (joined with single spaces; ``word_ids`` then
        maps every token to its word). Needs a fast tokenizer for character offsets.
        """
        (encodings,) = self.encode_tokens_with(
            texts,
            run=lambda batch: [self._states(batch)],
            instruction=instruction,
            batch_size=batch_size,
            max_tokens_per_batch=max_tokens_per_batch,
            show_progress_bar=show_progress_bar,
        )
        return encodings

    # ---------------------------------------------------------------- lower level

    def encode_tokens_with(
        self,
        texts: Sequence[str] | Sequence[Sequence[str]],
        *,
        run: Callable[[Batch], Sequence[torch.Tensor]],
        instruction: str | None = None,
        batch_size: int | None = None,
        max_tokens_per_batch: int | None = None,
        show_progress_bar: bool | None = None,
        description: str = "encoding",
    ) -> list[list[TokenEncoding]]:
        """:meth:`encode_tokens` for several outputs of one forward pass (a shared-prefix sweep's plans).

        ``run(batch)`` returns the final states [B, T, D] of every output, in the same order each
        batch; the result holds one list of encodings per output.
        """
        items = check_texts(texts, allow_words=True)
        if self.rows_per_text > 1:
            raise NosinkError(
                f"token states come from one prompt, but recipe '{self.recipe}' has {self.rows_per_text} templates; "
                "use a recipe with one template (or none) for token-level work"
            )
        if not getattr(self.tokenizer, "is_fast", False):
            raise NosinkError("encode_tokens needs a fast tokenizer (character offsets); load one with use_fast=True")
        strings = [item if isinstance(item, str) else " ".join(item) for item in items]
        rows = self.tokenize(strings, instruction=instruction, offsets=True)
        states_of: list[dict[int, np.ndarray]] = []  # per output: text index -> [n_tokens, D]
        batched = self.run_batches(
            rows,
            batch_size=batch_size,
            max_tokens_per_batch=max_tokens_per_batch,
            show_progress_bar=show_progress_bar,
            run=run,
            description=description,
        )
        for batch, outputs in batched:
            states_of = states_of or [{} for _ in outputs]
            for output, states in zip(states_of, outputs, strict=True):
                for b, index in enumerate(batch.indices):
                    output[index] = states[b][batch.text_mask[b]].float().cpu().numpy()  # [n_tokens, D]
        return [
            [_token_encoding(strings[i], item, rows[i], output[i], self.tokenizer) for i, item in enumerate(items)]
            for output in states_of
        ]

    def tokenize(
        self, texts: list[str], *, instruction: str | None = None, offsets: bool = False, warn: bool = True
    ) -> list[TokenizedText]:
        """Rows of token ids as the encoder feeds them: specials, instruction, prompt, text, cut to max_length.

        A recipe with K prompt templates gives K rows per text (:attr:`rows_per_text`), text by text.
        Warns once when texts were truncated (unless ``warn`` is False; ``row.truncated`` says which).
        """
        rows = self.text_tokenizer(instruction)(texts, offsets=offsets)
        per_text = self.rows_per_text
        truncated = sum(any(row.truncated for row in rows[i : i + per_text]) for i in range(0, len(rows), per_text))
        if truncated and warn:
            warnings.warn(
                f"{truncated} of {len(texts)} texts were longer than max_length={self.max_length} tokens "
                "and were truncated",
                stacklevel=3,
            )
        return rows

    def text_tokenizer(self, instruction: str | None = None, *, max_length: int | None = None) -> TextTokenizer:
        """The tokenizer of rows as this encoder feeds them: its instruction, its recipe's prompt, ``max_length``."""
        limit = self.max_length if max_length is None else max_length
        return TextTokenizer(self.tokenizer, max_length=limit, instruction=instruction, templates=self.recipe.templates)

    def run_batches(
        self,
        rows: list[TokenizedText],
        *,
        batch_size: int | None = None,
        max_tokens_per_batch: int | None = None,
        packing: bool = False,
        show_progress_bar: bool | None = None,
        run: Callable[[Batch | PackedBatch], R] | None = None,
        description: str = "encoding",
    ) -> Iterator[tuple[Batch | PackedBatch, R]]:
        """Length-sorted, token-budget batches of ``rows`` with ``run(batch)`` (default: the plan's states).

        With ``packing`` the batches are :class:`~nosink.inputs.PackedBatch` (several texts per row).
        """
        if show_progress_bar is not None:
            check_bool(show_progress_bar=show_progress_bar)
        options = {
            "batch_size": DEFAULT_BATCH_SIZE if batch_size is None else batch_size,
            "max_tokens_per_batch": max_tokens_per_batch,
            "pad_id": pad_id(self.tokenizer),
            "device": self.device,
        }
        groups: Iterator[Batch | PackedBatch]
        if packing:
            groups = packed_batches(rows, **options)
        else:
            left_padding = getattr(self.tokenizer, "padding_side", "right") == "left"
            groups = batches(rows, left_padding=left_padding, **options)
        run = run or self._states
        show = len(rows) >= PROGRESS_BAR_MIN_TEXTS if show_progress_bar is None else show_progress_bar
        unit = "text" if self.rows_per_text == 1 else f"row ({self.rows_per_text} per text)"
        with tqdm(total=len(rows), disable=not show, desc=description, unit=unit) as bar:
            for batch in groups:
                yield batch, run(batch)
                bar.update(len(batch.indices))

    @torch.inference_mode()
    def _states(self, batch: Batch | PackedBatch) -> torch.Tensor:
        return run_recipe(
            self.base,
            self.family,
            self.schedule,
            self.recipe,
            batch.input_ids,
            batch.attention_mask,
            segment_ids=batch.segment_ids,
        )


def position_limit(config: Any) -> int | None:
    """How many positions the model was built or trained for (``max_position_embeddings``, GPT-2's ``n_positions``)."""
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return limit if isinstance(limit, int) and limit > 0 else None


def effective_max_length(max_length: int | None, config: Any, *, warn: bool = True) -> int:
    """The token limit per text: ``max_length`` (default 512) capped at the model's positions, with a warning.

    Past its positions a model with learned position embeddings fails (GPT-2: an IndexError) and a
    RoPE model extrapolates to positions it never saw, so a larger request is capped, not obeyed.
    """
    limit = position_limit(config)
    if max_length is None:
        return min(DEFAULT_MAX_LENGTH, limit or DEFAULT_MAX_LENGTH)
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
        raise NosinkError(f"max_length must be a positive integer, got {max_length!r}")
    if limit is not None and max_length > limit:
        if warn:
            warnings.warn(
                f"max_length={max_length} is more than the model's {limit} positions; texts are cut at {limit} tokens",
                stacklevel=3,
            )
        return limit
    return max_length


def pad_id(tokenizer: Any) -> int:
    """The id used for padding: the pad token, else EOS or UNK; padding is masked out, so any valid id works."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id):
        if candidate is not None:
            return int(candidate)
    return 0  # padded positions are masked out; any valid id works


def _token_encoding(
    text: str, item: str | Sequence[str], row: TokenizedText, states: np.ndarray, tokenizer: Any
) -> TokenEncoding:
    ids = row.ids[row.text_start : row.text_end]
    offsets = list(row.offsets or [])
    tokens = tokenizer.convert_ids_to_tokens(ids)
    word_ids = None
    if not isinstance(item, str):
        blank = [not tokenizer.convert_tokens_to_string([token]).strip() for token in tokens]
        word_ids = _word_ids(text, list(item), offsets, blank)
    return TokenEncoding(text, tokens, ids, offsets, word_ids, states)


def _word_ids(text: str, words: list[str], offsets: list[tuple[int, int]], blank: list[bool]) -> list[int | None]:
    """The word of each token (by character overlap); None for whitespace-only tokens such as a lone '▁'."""
    spans, cursor = [], 0
    for word in words:
        spans.append((cursor, cursor + len(word)))
        cursor += len(word) + 1
    result: list[int | None] = []
    for (start, end), is_blank in zip(offsets, blank, strict=True):
        while start < end and text[start].isspace():
            start += 1
        owner = next((w for w, (a, b) in enumerate(spans) if a <= start < b), None)
        result.append(owner if start < end and not is_blank else None)
    return result
