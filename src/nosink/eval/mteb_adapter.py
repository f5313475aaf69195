"""MTEB 2.x adapter: any :class:`~nosink.eval.base.Embedder` as an MTEB ``EncoderProtocol`` model.

:class:`NosinkMTEBModel` wraps a nosink ``Encoder`` or a baseline (``nosink.eval.baselines``) so that
``mteb.evaluate`` can run it. For every ``encode`` call MTEB passes the task's metadata and the
side of the input (``prompt_type``: query or document); the adapter picks the paper's instruction
(docs/spec.md §6, :data:`PAPER_INSTRUCTIONS`) and hands it to ``embedder.encode(..., instruction=...)``:

- retrieval and reranking tasks: queries get the instruction, documents none;
- every other task type (STS, classification, clustering, pair classification …): every input
  gets the instruction, on both sides of a pair. This is E5-Mistral's convention, which the paper
  follows.

For a nosink ``Encoder`` the instruction and the text are tokenized as one string and the
instruction's tokens (found by character offsets) are excluded from mean pooling; for a baseline it
is prepended as text and pooled with it (see ``nosink.eval.baselines``).

Running MTEB with it (the paper's 15 tasks or any others) is :func:`nosink.eval.mteb_run.run_mteb`.

``mteb`` is imported lazily: this module can be imported without it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from nosink.encoder import Encoder
from nosink.errors import NosinkError
from nosink.eval.baselines import MTEB_EXTRA_HINT
from nosink.eval.embedders import describe_embedder
from nosink.inputs import check_texts

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata
    from mteb.models.model_meta import ModelMeta

    from nosink.eval.base import Embedder

logger = logging.getLogger(__name__)

STS_INSTRUCTION = "Retrieve semantically similar text."

# docs/spec.md §6 (the paper's Table 3), verbatim. TwentyNewsgroupsClustering has no row in Table 3;
# its instruction is E5-Mistral's.
PAPER_INSTRUCTIONS: dict[str, str] = {
    "ArguAna": "Given a claim, find documents that refute the claim.",
    "NFCorpus": "Given a question, retrieve relevant documents that best answer the question.",
    "SciFact": "Given a scientific claim, retrieve documents that support or refute the claim.",
    "SciDocsRR": "Given a title of a scientific paper, retrieve the titles of other relevant papers.",
    "StackOverflowDupQuestions": "Retrieve duplicate questions from StackOverflow forum.",
    "BiorxivClusteringS2S": "Identify the main category of Biorxiv papers based on the titles.",
    "MedrxivClusteringS2S": "Identify the main category of Medrxiv papers based on the titles.",
    "TwentyNewsgroupsClustering": "Identify the topic or theme of the given news articles.",
    "SprintDuplicateQuestions": "Retrieve duplicate questions from Sprint forum.",
    "Banking77Classification": "Given an online banking query, find the corresponding intents.",
    "EmotionClassification": (
        "Classify the emotion expressed in the given Twitter message into one of the six emotions: "
        "anger, fear, joy, love, sadness, and surprise."
    ),
    "MassiveIntentClassification": "Given a user utterance as query, find the user intents.",
    "STS17": STS_INSTRUCTION,
    "SICK-R": STS_INSTRUCTION,
    "STSBenchmark": STS_INSTRUCTION,
}

# Keys may also be MTEB task types: "all STS tasks" get the STS instruction (docs/spec.md §6).
PAPER_TYPE_INSTRUCTIONS: dict[str, str] = {"STS": STS_INSTRUCTION}

DEFAULT_INSTRUCTIONS: dict[str, str] = {**PAPER_INSTRUCTIONS, **PAPER_TYPE_INSTRUCTIONS}

DEFAULT_BATCH_SIZE = 32
_VERSION_SUFFIX = re.compile(r"\.v\d+$")
_DOCUMENT = "document"  # mteb.types.PromptType.document (a str enum)


def import_mteb() -> Any:
    """Import ``mteb`` or raise a NosinkError that says how to install it.

    Returns:
        The ``mteb`` module.
    """
    try:
        import mteb
    except ImportError as error:
        raise NosinkError(f"mteb is not installed ({error}); install it with {MTEB_EXTRA_HINT}") from None
    return mteb


# ---------------------------------------------------------------- instructions


def is_retrieval_task(task_metadata: TaskMetadata) -> bool:
    """Whether MTEB treats the task as asymmetric query → document matching (retrieval, reranking).

    Args:
        task_metadata: The task's MTEB metadata.

    Returns:
        True for retrieval-like task types.
    """
    try:
        return task_metadata.simplified_task_type == "retrieval"
    except (AttributeError, KeyError):
        return "Retrieval" in task_metadata.type or "Reranking" in task_metadata.type


def lookup_instruction(instructions: Mapping[str, str], task_name: str, task_type: str | None) -> str | None:
    """The instruction for a task: by exact name, by name without a ``.vN`` suffix, then by task type.

    Args:
        instructions: Task name (or task type) → instruction.
        task_name: The MTEB task name, e.g. ``STSBenchmark`` or ``STSBenchmark.v2``.
        task_type: The MTEB task type, e.g. ``STS``.

    Returns:
        The instruction, or None when the table has none for the task.
    """
    for key in (task_name, _VERSION_SUFFIX.sub("", task_name), task_type):
        if key is not None and key in instructions:
            return instructions[key] or None
    return None


def instruction_for(
    task_metadata: TaskMetadata, prompt_type: Any, instructions: Mapping[str, str] = DEFAULT_INSTRUCTIONS
) -> str | None:
    """The instruction one ``encode`` call gets: none for retrieval documents, the task's otherwise.

    Args:
        task_metadata: The task's MTEB metadata.
        prompt_type: ``PromptType.query``, ``PromptType.document`` or None (symmetric tasks).
        instructions: Task name (or task type) → instruction.

    Returns:
        The instruction, or None.
    """
    side = None if prompt_type is None else str(getattr(prompt_type, "value", prompt_type))
    if side == _DOCUMENT and is_retrieval_task(task_metadata):
        return None
    return lookup_instruction(instructions, task_metadata.name, getattr(task_metadata, "type", None))


# ---------------------------------------------------------------- the model


class NosinkMTEBModel:
    """An :class:`~nosink.eval.base.Embedder` as an MTEB 2.x ``EncoderProtocol`` model.

    Satisfies ``isinstance(model, mteb.models.EncoderProtocol)``: ``encode`` (a DataLoader of
    ``BatchedInput`` dicts with a ``"text"`` key), cosine ``similarity`` / ``similarity_pairwise``
    and ``mteb_model_meta``. The instruction rule is in the module docstring. Texts that are empty
    or whitespace only get a zero vector (a nosink ``Encoder`` rejects texts with no tokens).
    """

    def __init__(
        self,
        embedder: Embedder,
        *,
        instructions: Mapping[str, str] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        normalize: bool = False,
        name: str | None = None,
        revision: str | None = None,
    ) -> None:
        """Wrap an embedder.

        Args:
            embedder: Anything with ``encode(texts, *, instruction=None, batch_size=None, normalize=False, ...)``.
            instructions: Task name (or MTEB task type) → instruction. None: the paper's table
                (:data:`DEFAULT_INSTRUCTIONS`); ``{}``: no instructions at all. A given table replaces
                the paper's; merge with ``{**PAPER_INSTRUCTIONS, ...}`` to extend it.
            batch_size: Texts per forward pass when MTEB does not say (``encode_kwargs["batch_size"]`` wins).
            normalize: L2-normalise embeddings (cosine scores are unchanged; only dot products differ).
            name: The model name in MTEB's records (``org/name``); default from the embedder.
            revision: The model revision in MTEB's records; default the loaded commit, if known.
        """
        if not callable(getattr(embedder, "encode", None)):
            raise NosinkError(f"embedder must have an encode method, got {type(embedder).__name__}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise NosinkError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.embedder = embedder
        self.custom_instructions = instructions is not None
        self.instructions: dict[str, str] = dict(DEFAULT_INSTRUCTIONS if instructions is None else instructions)
        self.batch_size = batch_size
        self.normalize = normalize
        self.name = name
        self.revision = revision
        self._meta: ModelMeta | None = None
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        return f"NosinkMTEBModel({self.embedder!r})"

    # ---------------------------------------------------------------- EncoderProtocol

    def encode(
        self,
        inputs: Iterable[Mapping[str, Any]],
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: Any = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Embed every text of an MTEB DataLoader, with the task's instruction where the rule gives one.

        Args:
            inputs: A DataLoader (or any iterable) of batches with a ``"text"`` list.
            task_metadata: The task's metadata; its name and type select the instruction.
            hf_split: The split being evaluated (unused).
            hf_subset: The subset being evaluated (unused).
            prompt_type: ``PromptType.query``, ``PromptType.document`` or None.
            **kwargs: MTEB's ``encode_kwargs``; ``batch_size`` and ``show_progress_bar`` are used.

        Returns:
            A [N, D] float32 array in input order.
        """
        texts = _texts_of(inputs, task_metadata.name)
        instruction = self.instruction(task_metadata, prompt_type)
        batch_size = kwargs.get("batch_size") or self.batch_size
        return self._encode(texts, instruction, batch_size, kwargs.get("show_progress_bar"), task_metadata.name)

    def similarity(self, embeddings1: Any, embeddings2: Any) -> torch.Tensor:
        """Cosine similarity of every pair: [N1, D] x [N2, D] → [N1, N2] float32 tensor."""
        a, b = _unit_rows(embeddings1), _unit_rows(embeddings2)
        return a @ b.T

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> torch.Tensor:
        """Cosine similarity of corresponding rows: [N, D] x [N, D] → [N] float32 tensor."""
        a, b = _unit_rows(embeddings1), _unit_rows(embeddings2)
        if a.shape != b.shape:
            raise NosinkError(f"pairwise similarity needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
        return (a * b).sum(-1)

    @property
    def mteb_model_meta(self) -> ModelMeta:
        """MTEB's record of the model: name, revision, embedding size and the nosink settings.

        The plan, pooling, dtype, max length and instruction table go into ``experiment_kwargs``,
        so results of different plans are cached apart.
        """
        if self._meta is None:
            self._meta = self._build_meta()
        return self._meta

    @mteb_model_meta.setter
    def mteb_model_meta(self, meta: ModelMeta) -> None:  # ModelMeta.load_model() sets the meta it loaded from
        self._meta = meta

    # ---------------------------------------------------------------- helpers

    def instruction(self, task_metadata: TaskMetadata, prompt_type: Any = None) -> str | None:
        """The instruction for one ``encode`` call (see the module docstring).

        Args:
            task_metadata: The task's MTEB metadata.
            prompt_type: ``PromptType.query``, ``PromptType.document`` or None.

        Returns:
            The instruction, or None.
        """
        name = task_metadata.name
        if lookup_instruction(self.instructions, name, getattr(task_metadata, "type", None)) is None:
            self._warn_once(name, f"no instruction for MTEB task {name!r}; its inputs are encoded without one")
        return instruction_for(task_metadata, prompt_type, self.instructions)

    def _encode(
        self, texts: list[str], instruction: str | None, batch_size: int, show: bool | None, task: str
    ) -> np.ndarray:
        keep = [i for i, text in enumerate(texts) if text.strip()]
        if len(keep) < len(texts):
            self._warn_once(
                f"{task}/empty", f"{len(texts) - len(keep)} empty texts in MTEB task {task!r} get zero vectors"
            )
        vectors = None
        if keep:
            # No instruction means none: not a saved nosink encoder's default prompt.
            nothing = {"prompt": ""} if instruction is None and isinstance(self.embedder, Encoder) else {}
            vectors = self.embedder.encode(
                [texts[i] for i in keep],
                instruction=instruction,
                batch_size=batch_size,
                normalize=self.normalize,
                show_progress_bar=show,
                **nothing,
            )
            vectors = np.asarray(vectors, dtype=np.float32)
        if len(keep) == len(texts) and vectors is not None:
            return vectors
        dim = vectors.shape[1] if vectors is not None else _dim_of(self.embedder)
        output = np.zeros((len(texts), dim), dtype=np.float32)
        if vectors is not None:
            output[keep] = vectors
        return output

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message)

    def _build_meta(self) -> ModelMeta:
        import_mteb()
        from mteb.models.model_meta import ModelMeta, ScoringFunction

        description = describe_embedder(self.embedder)
        module = _torch_module(self.embedder)
        settings = {
            key: description.get(key)
            for key in ("kind", "plan", "pooling", "recipe", "dtype", "max_length")
            if description.get(key) is not None
        }
        settings["instructions"] = self._instructions_tag()
        folder = _saved_folder(self.embedder)
        return ModelMeta(
            loader=load_saved_model if folder else None,  # mteb's load_model() rebuilds a saved folder's model
            loader_kwargs={"folder": folder} if folder else {},
            adapted_from=getattr(self.embedder, "base_model_name", None),
            name=self.name or meta_name(str(description.get("name") or type(self.embedder).__name__)),
            revision=self.revision or _commit_of(module) or "no_revision_available",
            release_date=None,
            languages=None,
            n_parameters=sum(p.numel() for p in module.parameters()) if module is not None else None,
            memory_usage_mb=None,
            max_tokens=description.get("max_length"),
            embed_dim=description.get("dim"),
            license=None,
            open_weights=None,
            public_training_code=None,
            public_training_data=None,
            framework=["PyTorch"],
            similarity_fn_name=ScoringFunction.COSINE,
            use_instructions=bool(self.instructions),
            training_datasets=None,
            modalities=["text"],
            experiment_kwargs=settings,
        )

    def _instructions_tag(self) -> str:
        if not self.custom_instructions:
            return "paper"
        if not self.instructions:
            return "none"
        digest = hashlib.sha256(json.dumps(self.instructions, sort_keys=True).encode()).hexdigest()[:8]
        return f"custom-{digest}"


def load_saved_model(
    name: str, revision: str | None = None, *, folder: str, device: str | None = None, **settings: Any
) -> NosinkMTEBModel:
    """mteb's ``loader`` for a folder written by ``Encoder.save_pretrained``: the folder's encoder, wrapped.

    ``settings`` are the meta's ``experiment_kwargs`` (plan, pooling, recipe …), which mteb passes
    back; the plan, pooling and recipe are applied, so a meta edited to another plan loads that plan.
    """
    chosen = {key: settings[key] for key in ("plan", "pooling", "recipe", "dtype") if settings.get(key) is not None}
    encoder = Encoder.from_pretrained(folder, device=device, **chosen)
    instructions = {} if settings.get("instructions") == "none" else None  # "paper": the paper's table
    return NosinkMTEBModel(encoder, name=name, revision=revision, instructions=instructions)


def _saved_folder(embedder: Any) -> str | None:
    """The absolute folder of a nosink encoder loaded from a saved folder (it has ``nosink.json``), else None."""
    from nosink.saving import SAVED_CONFIG

    name = str(getattr(embedder, "name", ""))
    folder = Path(name).expanduser()
    return str(folder.resolve()) if name and (folder / SAVED_CONFIG).is_file() else None


def meta_name(name: str) -> str:
    """An MTEB model name (``org/name``) for a hub name or a local path.

    Args:
        name: A hub name such as ``TinyLlama/TinyLlama_v1.1`` or a local folder.

    Returns:
        The hub name unchanged, or ``local/<folder name>`` for a path or a bare name.
    """
    parts = name.split("/")
    if len(parts) == 2 and all(parts) and not Path(name).exists():
        return name
    return f"local/{Path(name.rstrip('/')).name or 'model'}"


def _texts_of(inputs: Iterable[Mapping[str, Any]], task: str) -> list[str]:
    texts: list[str] = []
    for batch in inputs:
        if "text" not in batch:
            raise NosinkError(f"MTEB task {task!r} gave inputs without text ({sorted(batch)}); nosink embeds text only")
        texts.extend(batch["text"])
    return check_texts(texts)


def _unit_rows(embeddings: Any) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(embeddings) if not isinstance(embeddings, torch.Tensor) else embeddings)
    tensor = tensor.float()
    if tensor.ndim == 1:
        tensor = tensor.unsqueeze(0)  # [D] → [1, D]
    return torch.nn.functional.normalize(tensor, dim=-1)


def _torch_module(embedder: Any) -> torch.nn.Module | None:
    for attribute in ("base", "model"):
        module = getattr(embedder, attribute, None)
        if isinstance(module, torch.nn.Module):
            return module
    return None


def _commit_of(module: torch.nn.Module | None) -> str | None:
    config = getattr(module, "config", None)
    commit = getattr(config, "_commit_hash", None)
    return commit if isinstance(commit, str) and commit else None


def _dim_of(embedder: Any) -> int:
    dim = getattr(embedder, "dim", None)
    if isinstance(dim, int):
        return dim
    return int(np.asarray(embedder.encode(["."])).shape[1])
