"""``Encoder``: a decoder LLM used as a text encoder under a :class:`~nosink.plan.Plan`."""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
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
from nosink.postprocess import Precision, SimilarityFunction, finish, similarity
from nosink.recipe import Recipe
from nosink.runner import check_readout, run_recipe, run_schedule

DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_LENGTH = 512
PROGRESS_BAR_MIN_TEXTS = 256
R = TypeVar("R")
A = TypeVar("A", np.ndarray, torch.Tensor)


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
        prompts: Mapping[str, str] | None = None,
        default_prompt_name: str | None = None,
        similarity_fn_name: SimilarityFunction | str = SimilarityFunction.COSINE,
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
        self.own_pooling = Pooling.coerce(pooling)  # the encoder's pooling; a recipe's own pooling wins over it
        self.pooling = self.recipe.pool or self.own_pooling
        if self.recipe.prompt is not None and self.pooling is Pooling.REFERENCE_MEAN:
            raise NosinkError(
                "reference_mean pooling counts the released code's own prompt; a recipe prompt needs mean"
            )
        self.max_length = effective_max_length(max_length, self.base.config)
        self.prompts = check_prompts(prompts, default_prompt_name)
        self.default_prompt_name = default_prompt_name
        self.similarity_fn_name = SimilarityFunction.coerce(similarity_fn_name)
        self.base_model_name: str = self.name  # the pretrained decoder converted (a saved folder records its own)

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        plan: Plan | str | None = None,
        pooling: Pooling | str | None = None,
        dtype: torch.dtype | str = "auto",
        device: torch.device | str | None = None,
        max_length: int | None = None,
        recipe: Recipe | str | None = None,
        prompts: Mapping[str, str] | None = None,
        default_prompt_name: str | None = None,
        similarity_fn_name: SimilarityFunction | str | None = None,
        **model_kwargs: Any,
    ) -> Encoder:
        """Load a decoder (hub name, local folder or ``.gguf`` file) without its LM head.

        A folder written by :meth:`save_pretrained` comes back with its saved plan, pooling,
        recipe, ``max_length``, prompts and similarity function; any of them given here wins
        (``prompts`` are merged over the saved ones, as sentence-transformers does). Otherwise the
        plan is the baseline and the pooling mean. ``dtype="auto"`` is float32 on CPU and bfloat16 on
        CUDA (float16 where bf16 is not supported). ``max_length`` is in tokens: by default 512, or
        the model's position limit when that is smaller; a larger value is capped at that limit,
        with a warning. A GGUF file is dequantised into that dtype, and its tokenizer is read from
        the same file (needs ``nosink[gguf]``). Extra keyword arguments go to
        ``AutoModel.from_pretrained``.
        """
        from transformers import AutoModel

        from nosink.saving import read_saved

        saved = read_saved(name_or_path) if Path(name_or_path).expanduser().is_dir() else None
        settings = saved.encoder_settings() if saved else {}
        settings |= _given(
            plan=plan,
            pooling=pooling,
            max_length=max_length,
            recipe=recipe,
            default_prompt_name=default_prompt_name,
            similarity_fn_name=similarity_fn_name,
        )
        if prompts is not None:
            settings["prompts"] = {**settings.get("prompts", {}), **prompts}
        tokenizer_source = ModelSource.parse(name_or_path)
        source = ModelSource.parse(saved.weights_source) if saved and saved.weights_source else tokenizer_source
        config = source.load_config(trust_remote_code=model_kwargs.get("trust_remote_code"))
        family_for(config)  # fail before loading any weights
        schedule = Plan.coerce(settings.get("plan", "baseline")).resolve(config.num_hidden_layers)
        check_readout(schedule, Recipe.coerce(settings.get("recipe")).depths(config.num_hidden_layers))
        tokenizer_source.check_tokenizer()
        target = check_available(resolve_device(device))
        streams_to_device = target.type != "cpu" and importlib.util.find_spec("accelerate") is not None
        if streams_to_device:  # device_map loads straight onto the device, but needs accelerate
            model_kwargs.setdefault("device_map", str(target))
        model = source.load_model(AutoModel, config=config, dtype=resolve_dtype(dtype, target), **model_kwargs)
        if "device_map" not in model_kwargs:
            model.to(target)  # moves the parameters in place; no second copy is kept
        model.eval()
        if saved is not None:
            model.config._name_or_path = name_or_path  # our own object: the encoder is named after its folder
        encoder = cls(model, tokenizer_source.load_tokenizer(), **settings)
        if saved is not None:
            encoder.base_model_name = saved.base_model
        return encoder

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
        prompts: Mapping[str, str] | None = None,
        default_prompt_name: str | None = None,
        similarity_fn_name: SimilarityFunction | str = SimilarityFunction.COSINE,
    ) -> Encoder:
        """Wrap an already-loaded model (a ``*ForCausalLM`` chat model included), sharing its weights."""
        return cls(
            model,
            tokenizer,
            plan=plan,
            pooling=pooling,
            max_length=max_length,
            recipe=recipe,
            prompts=prompts,
            default_prompt_name=default_prompt_name,
            similarity_fn_name=similarity_fn_name,
        )

    def with_plan(
        self, plan: Plan | str, *, pooling: Pooling | str | None = None, recipe: Recipe | str | None = None
    ) -> Encoder:
        """The same model and tokenizer under another plan (no weights are copied); the recipe is kept unless given."""
        return self._like(
            plan=plan, pooling=pooling or self.own_pooling, recipe=self.recipe if recipe is None else recipe
        )

    def with_recipe(self, recipe: Recipe | str | None) -> Encoder:
        """The same model, tokenizer and plan under another recipe (no weights are copied)."""
        return self._like(recipe=recipe)

    def with_max_length(self, max_length: int | None) -> Encoder:
        """The same encoder cutting texts at another number of tokens (None: the default, 512 or the model's limit)."""
        return self._like(max_length=max_length)

    def _like(self, **changes: Any) -> Encoder:
        """A new encoder on the same model and tokenizer, with this one's settings except ``changes``."""
        settings = {
            "plan": self.plan,
            "pooling": self.own_pooling,
            "max_length": self.max_length,
            "recipe": self.recipe,
            "prompts": self.prompts,
            "default_prompt_name": self.default_prompt_name,
            "similarity_fn_name": self.similarity_fn_name,
        }
        encoder = Encoder(self.model, self.tokenizer, **(settings | changes))
        encoder.base_model_name = self.base_model_name
        return encoder

    def save_pretrained(self, folder: str | os.PathLike[str], *, weights: str = "copy") -> Path:
        """Write a folder that ``Encoder.from_pretrained``, ``nosink serve`` and sentence-transformers load back.

        ``weights="copy"`` stores the decoder's weights once, as safetensors; ``weights="reference"``
        stores none and records where the base model is (a hub name or an absolute folder). See
        :func:`nosink.saving.save_encoder`.
        """
        from nosink.saving import save_encoder

        return save_encoder(self, folder, weights=weights)

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
        texts: str | Sequence[str],
        *,
        instruction: str | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int | None = None,
        max_tokens_per_batch: int | None = None,
        normalize: bool = False,
        normalize_embeddings: bool | None = None,
        truncate_dim: int | None = None,
        precision: Precision | str = Precision.FLOAT32,
        convert_to_tensor: bool = False,
        packing: bool = False,
        show_progress_bar: bool | None = None,
    ) -> np.ndarray | torch.Tensor:
        """Sentence embeddings [N, D] float32, in input order ([D] for a single string).

        ``instruction`` (a task description) is put before each text in E5-Mistral's format
        ``Instruct: {instruction}\\nQuery: `` and excluded from mean pooling. ``prompt`` is a raw
        prefix handled the same way, and ``prompt_name`` picks one of :attr:`prompts`
        (sentence-transformers' names; ``default_prompt_name`` applies when none of the three is
        given). Texts longer than ``max_length`` tokens are truncated, with one warning.
        ``packing`` puts several short texts into one row, each attending only to itself (same
        vectors, less padding); ``max_tokens_per_batch`` then counts the texts' own tokens instead
        of padded ones. ``truncate_dim``, ``normalize`` (or ``normalize_embeddings``), ``precision``
        and ``convert_to_tensor`` act as in sentence-transformers, in that order (see
        :mod:`nosink.postprocess`).
        """
        single = isinstance(texts, str)
        items = check_texts([texts] if single else texts)
        normalize = _one_flag(normalize, normalize_embeddings)
        instruction, prompt = self.resolve_prompt(instruction, prompt_name, prompt)
        vectors = np.zeros((0, self.dim), dtype=np.float32)
        if items:
            rows = self.tokenize(items, instruction=instruction, prompt=prompt)
            options = {"batch_size": batch_size, "max_tokens_per_batch": max_tokens_per_batch, "packing": packing}
            vectors = self.embed_rows(rows, show_progress_bar=show_progress_bar, **options)
        output = finish(
            vectors,
            normalize=normalize,
            truncate_dim=truncate_dim,
            precision=precision,
            convert_to_tensor=convert_to_tensor,
        )
        return output[0] if single else output

    def encode_query(self, texts: str | Sequence[str], **options: Any) -> np.ndarray | torch.Tensor:
        """:meth:`encode` with the ``query`` prompt when :attr:`prompts` has one, else none (sentence-transformers')."""
        return self._encode_task("query", texts, options)

    def encode_document(self, texts: str | Sequence[str], **options: Any) -> np.ndarray | torch.Tensor:
        """:meth:`encode` with the ``document`` prompt when :attr:`prompts` has one (sentence-transformers' rule)."""
        return self._encode_task("document", texts, options)

    def similarity(self, a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Scores [N, M] between embeddings ``a`` [N, D] and ``b`` [M, D] by :attr:`similarity_fn_name` (cosine)."""
        return similarity(a, b, self.similarity_fn_name)

    def _encode_task(self, name: str, texts: str | Sequence[str], options: dict[str, Any]) -> np.ndarray | torch.Tensor:
        """The task's named prompt unless the call gives its own; without that name, no prompt (not the default)."""
        if all(options.get(key) is None for key in ("instruction", "prompt", "prompt_name")):
            options = options | ({"prompt_name": name} if name in self.prompts else {"prompt": ""})
        return self.encode(texts, **options)

    def resolve_prompt(
        self, instruction: str | None = None, prompt_name: str | None = None, prompt: str | None = None
    ) -> tuple[str | None, str | None]:
        """(instruction, raw prompt) for one call: at most one of the three, else the default prompt, if any."""
        given = [
            name
            for name, value in (("instruction", instruction), ("prompt", prompt), ("prompt_name", prompt_name))
            if value is not None
        ]
        if len(given) > 1:
            raise NosinkError(f"give one of instruction, prompt and prompt_name, not {' and '.join(given)}")
        if prompt_name is None and not given:
            prompt_name = self.default_prompt_name
        if prompt_name is not None:
            if prompt_name not in self.prompts:
                known = ", ".join(repr(n) for n in self.prompts) or "none"
                raise NosinkError(f"prompt_name {prompt_name!r} is not one of this encoder's prompts ({known})")
            prompt = self.prompts[prompt_name]
        return instruction, prompt or None

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
        return finish(self.average_prompts(pooled), normalize=normalize)  # [N, D]

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

    def average_prompts(self, pooled: A) -> A:
        """[N * K, D] pooled rows (text by text, K templates each) -> [N, D], the mean over each text's templates.

        Takes a numpy array or a torch tensor, and returns the same kind.
        """
        per_text = self.rows_per_text
        if per_text == 1:
            return pooled
        return pooled.reshape(-1, per_text, pooled.shape[-1]).mean(1)  # [N, K, D] -> [N, D]

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
        instruction, prompt = self.resolve_prompt(instruction)
        rows = self.tokenize(strings, instruction=instruction, prompt=prompt, offsets=True)
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
        self,
        texts: list[str],
        *,
        instruction: str | None = None,
        prompt: str | None = None,
        offsets: bool = False,
        warn: bool = True,
    ) -> list[TokenizedText]:
        """Rows of token ids as the encoder feeds them: specials, instruction, prompt, text, cut to max_length.

        A recipe with K prompt templates gives K rows per text (:attr:`rows_per_text`), text by text.
        Warns once when texts were truncated (unless ``warn`` is False; ``row.truncated`` says which).
        """
        rows = self.text_tokenizer(instruction, prompt=prompt)(texts, offsets=offsets)
        per_text = self.rows_per_text
        truncated = sum(any(row.truncated for row in rows[i : i + per_text]) for i in range(0, len(rows), per_text))
        if truncated and warn:
            warnings.warn(
                f"{truncated} of {len(texts)} texts were longer than max_length={self.max_length} tokens "
                "and were truncated",
                stacklevel=3,
            )
        return rows

    def text_tokenizer(
        self, instruction: str | None = None, *, prompt: str | None = None, max_length: int | None = None
    ) -> TextTokenizer:
        """The tokenizer of rows as this encoder feeds them: an instruction or prompt, the recipe's templates."""
        limit = self.max_length if max_length is None else max_length
        templates = self.recipe.templates
        return TextTokenizer(
            self.tokenizer, max_length=limit, instruction=instruction, prompt=prompt, templates=templates
        )

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


def check_prompts(prompts: Mapping[str, str] | None, default_prompt_name: str | None) -> dict[str, str]:
    """Named prompts (sentence-transformers' ``prompts``) as a dict, with ``default_prompt_name`` among them."""
    if prompts is None:
        prompts = {}
    if not isinstance(prompts, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()
    ):
        raise NosinkError(f"prompts must map names to prompt strings, got {prompts!r:.80}")
    if default_prompt_name is not None and default_prompt_name not in prompts:
        raise NosinkError(f"default_prompt_name {default_prompt_name!r} is not one of the prompts {sorted(prompts)}")
    return dict(prompts)


def _one_flag(normalize: bool, normalize_embeddings: bool | None) -> bool:
    """``normalize`` and its sentence-transformers name; both given and different is a mistake, not a choice."""
    check_bool(normalize=normalize)
    if normalize_embeddings is None:
        return normalize
    check_bool(normalize_embeddings=normalize_embeddings)
    if normalize and not normalize_embeddings:
        raise NosinkError("normalize=True and normalize_embeddings=False disagree; give one of them")
    return normalize_embeddings


def _given(**settings: Any) -> dict[str, Any]:
    return {key: value for key, value in settings.items() if value is not None}
