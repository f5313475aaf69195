"""A nosink encoder as a sentence-transformers (v6) module: ``SentenceTransformer(folder, trust_remote_code=True)``.

A folder written by :meth:`nosink.Encoder.save_pretrained` names this class in its ``modules.json``
(through the folder's ``nosink_module.py``, which only imports it). The module tokenizes, runs the
plan and pools exactly as :meth:`nosink.Encoder.encode` does, so the two give the same vectors:

- sentence-transformers' prompt (``prompt_name``, ``prompt``, ``encode_query``) arrives in
  :meth:`NosinkModule.preprocess` and is handled as nosink's ``prompt``: tokenized with the text
  as one string and left out of mean pooling;
- a recipe with K prompt templates gives K rows per text, averaged in :meth:`NosinkModule.forward`;
- truncation to ``max_seq_length`` is nosink's (a prompt template stays whole).

Needs the ``mteb`` extra (``pip install 'nosink[mteb]'``), which brings sentence-transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nosink.encoder import Encoder, effective_max_length, pad_id
from nosink.errors import NosinkError
from nosink.inputs import pad_rows
from nosink.pooling import pool

try:
    from sentence_transformers.base.modules import InputModule
except ImportError as error:  # pragma: no cover - the message is the point
    raise ImportError(
        "nosink's sentence-transformers module needs sentence-transformers 6: pip install 'nosink[mteb]'"
    ) from error


class NosinkModule(InputModule):
    """The whole model in one module: tokenization, the plan's forward pass and the pooling."""

    config_file_name = "nosink.json"

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        if not isinstance(encoder, Encoder):
            raise NosinkError(f"NosinkModule wraps a nosink Encoder, got {type(encoder).__name__}")
        self.encoder = encoder
        self.model = encoder.model  # registered, so that SentenceTransformer.to(device) moves the weights
        self.tokenizer = encoder.tokenizer

    # ---------------------------------------------------------------- sentence-transformers' interface

    @property
    def max_seq_length(self) -> int:
        return self.encoder.max_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self.encoder.max_length = effective_max_length(value, self.encoder.base.config)  # capped at the positions

    def get_embedding_dimension(self) -> int:
        return self.encoder.dim

    def get_sentence_embedding_dimension(self) -> int:  # the name before sentence-transformers 6
        return self.encoder.dim

    def preprocess(self, inputs: Sequence[Any], prompt: str | None = None, **kwargs: Any) -> dict[str, torch.Tensor]:
        """One padded batch of the texts' rows (K per text with K recipe templates) and its masks."""
        texts = [self._text(item, index) for index, item in enumerate(inputs)]
        rows = self.encoder.tokenize(texts, prompt=prompt or None, warn=False)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        device = torch.device("cpu")  # sentence-transformers moves the features to the model's device
        batch = pad_rows(rows, pad_id=pad_id(self.tokenizer), left_padding=left, device=device)
        return {
            "input_ids": batch.input_ids,  # [R, T]: text i's K rows are rows i*K … i*K + K - 1
            "attention_mask": batch.attention_mask,  # [R, T]
            "text_mask": batch.text_mask,  # [R, T]
            "prompt_mask": batch.prompt_mask,  # [R, T]
        }

    def forward(self, features: dict[str, torch.Tensor], **kwargs: Any) -> dict[str, torch.Tensor]:
        """Adds ``sentence_embedding`` [N, D]: the plan's states pooled per row, then averaged over each text's rows."""
        encoder = self.encoder
        states = encoder.hidden_states(features["input_ids"], features["attention_mask"])  # [R, T, D]
        mask = features["attention_mask"]
        pooled = pool(states, mask, features["text_mask"], encoder.pooling, features["prompt_mask"])  # [R, D]
        embedding = encoder.average_prompts(pooled)  # [N * K, D] -> [N, D]
        return features | {"sentence_embedding": embedding.float()}

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        raise NosinkError(
            "save a nosink model with Encoder.save_pretrained(folder) or `nosink save`, which write the files "
            "sentence-transformers reads; SentenceTransformer.save() cannot copy nosink's module"
        )

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs: Any) -> NosinkModule:
        """The module of a folder written by ``Encoder.save_pretrained`` (local, or a hub repo once downloaded)."""
        folder = Path(model_name_or_path) / subfolder
        if not folder.is_dir():
            folder = Path(_download(model_name_or_path, kwargs))
        options = kwargs.get("model_kwargs") or {}
        dtype = options.get("dtype") or options.get("torch_dtype") or "float32"  # float32 unless asked
        return cls(Encoder.from_pretrained(str(folder), dtype=dtype, device="cpu"))  # sentence-transformers moves it

    # ---------------------------------------------------------------- helpers

    @staticmethod
    def _text(item: Any, index: int) -> str:
        if not isinstance(item, str):
            raise NosinkError(f"input {index} must be a string (nosink encodes text only), got {type(item).__name__}")
        return item


def _download(name: str, options: dict[str, Any]) -> str:
    """A hub repository's files, as sentence-transformers would fetch them (token, revision, cache)."""
    from huggingface_hub import snapshot_download

    return snapshot_download(
        name,
        revision=options.get("revision"),
        token=options.get("token"),
        cache_dir=options.get("cache_folder"),
        local_files_only=bool(options.get("local_files_only")),
    )
