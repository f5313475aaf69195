"""Retrieval-augmented generation with one model: the chat model retrieves, then answers.

The chat model (a ``*ForCausalLM``) is wrapped with :meth:`Encoder.from_model
<nosink.encoder.Encoder.from_model>`, so queries are embedded with the chat model's own weights
(no second copy) under the plan and pooling the corpus was embedded with. The retrieved texts go
into a prompt, and the same model object answers with its unchanged ``generate()``.

>>> from transformers import AutoModelForCausalLM, AutoTokenizer
>>> from nosink.index.rag import RAG
>>> model = AutoModelForCausalLM.from_pretrained(name); tokenizer = AutoTokenizer.from_pretrained(name)
>>> rag = RAG.from_corpus(model, tokenizer, "corpus/")   # the corpus's plan and pooling by default
>>> answer = rag.answer("Where did the dog find the ball?", k=3)
>>> answer.text, answer.hits, answer.prompt
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nosink.encoder import Encoder, pad_id
from nosink.errors import NosinkError, check_positive
from nosink.index.fusion import HybridSearch
from nosink.index.index import Hit, Retriever, VectorIndex, same_model
from nosink.plan import Plan
from nosink.pooling import Pooling

DEFAULT_K = 3
DEFAULT_MAX_NEW_TOKENS = 64
DEFAULT_INSTRUCTION = "Answer the question using the context below."
_BODY_MARK = "\ue000nosink-body\ue000"  # private-use characters: no template or text renders them


@dataclass(frozen=True)
class Answer:
    """A generated answer, the hits it was given and the exact prompt the model saw.

    ``token_ids`` are the generated tokens only (the prompt's tokens are not included).
    """

    text: str
    hits: list[Hit]
    prompt: str
    token_ids: list[int]


class RAG:
    """A chat model that retrieves from an indexed corpus with its own weights and answers from the hits.

    Build it with :meth:`from_corpus`. The retriever's encoder must wrap the chat model itself
    (``Encoder.from_model``): one set of weights serves both retrieval and generation. Encoding
    switches the model to nosink's attention only for the duration of each encode call;
    ``generate()`` runs the model exactly as it runs without nosink.
    """

    def __init__(
        self,
        chat_model: nn.Module,
        tokenizer: Any,
        retriever: Retriever,
        *,
        query_instruction: str | None = None,
        chat_template: bool | None = None,
    ) -> None:
        """Combine a chat model and a retriever built on it.

        Args:
            chat_model: A loaded ``*ForCausalLM`` model (it must have ``generate``).
            tokenizer: The chat model's tokenizer.
            retriever: A retriever whose encoder wraps ``chat_model`` itself.
            query_instruction: Task description for embedding questions (E5 format), e.g.
                "Given a question, retrieve passages that answer it."; None embeds the bare question.
            chat_template: Build prompts with the tokenizer's chat template (True), with the plain
                ``Context: … Question: … Answer:`` template (False), or with the chat template when
                the tokenizer has one (None, the default).

        Raises:
            NosinkError: The model cannot generate, the retriever wraps another model, the
                corpus holds no texts, or ``chat_template=True`` without a chat template.
        """
        _check_chat_model(chat_model)
        if retriever.encoder.model is not chat_model:
            raise NosinkError(
                "the retriever's encoder must wrap the chat model itself (Encoder.from_model(chat_model, tokenizer)); "
                "a separately loaded encoder would keep a second copy of the weights"
            )
        if not retriever.index.store_text:
            out_dir = retriever.index.out_dir
            raise NosinkError(
                f"{out_dir} was embedded without its texts, so retrieved records cannot be put into a prompt; "
                "embed the corpus again with store_text=True (`nosink embed --store-text`) and rebuild its index"
            )
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if chat_template and not has_template:
            raise NosinkError("chat_template=True, but the tokenizer has no chat template")
        self.model = chat_model
        self.tokenizer = tokenizer
        self.retriever = retriever
        self.query_instruction = query_instruction
        self.uses_chat_template = has_template if chat_template is None else chat_template

    @classmethod
    def from_corpus(
        cls,
        chat_model: nn.Module,
        tokenizer: Any,
        out_dir: str | Path,
        *,
        plan: Plan | str | None = None,
        pooling: Pooling | str | None = None,
        max_length: int | None = None,
        query_instruction: str | None = None,
        chat_template: bool | None = None,
        check_model: bool = True,
        hybrid: HybridSearch | None = None,
    ) -> RAG:
        """Load the index of ``out_dir`` and retrieve from it with ``chat_model``'s own weights.

        Args:
            chat_model: A loaded ``*ForCausalLM`` model; it is wrapped, never copied or changed.
            tokenizer: Its tokenizer.
            out_dir: A corpus folder embedded with ``store_text=True`` and indexed with
                ``build_index`` (``nosink index build``).
            plan: The encoding plan; default the corpus manifest's (another plan is refused).
            pooling: The pooling; default the manifest's (another pooling is refused).
            max_length: Longest query in tokens; default the manifest's, else 512.
            query_instruction: See :class:`RAG`.
            chat_template: See :class:`RAG`.
            hybrid: Retrieve with dense and BM25 hits fused (:class:`~nosink.index.fusion.HybridSearch`); the corpus
                needs its BM25 index (``nosink index build`` writes one for a corpus with texts).
            check_model: Refuse a corpus whose manifest names another model than the chat
                model's ``config._name_or_path`` (compared as resolved paths, or by last path
                component, so a hub name and a local copy of it agree). Pass False only for the
                same weights under an unrelated name.

        Raises:
            NosinkError: No corpus or no index in ``out_dir`` (build one with ``nosink index
                build``), a stale index, a corpus without texts, a corpus embedded by another
                model or with another dimension, plan or pooling, or a model that cannot generate.
        """
        _check_chat_model(chat_model)
        index = VectorIndex.load(out_dir)
        manifest = index.manifest
        settings = manifest.get("encoder") or {}
        hidden = int(getattr(chat_model.config, "hidden_size", 0))
        if int(manifest.get("dimension", hidden)) != hidden:
            raise NosinkError(
                f"{out_dir} was embedded by a model with {manifest['dimension']}-dimensional states, "
                f"the chat model's hidden size is {hidden}; embed the corpus with the chat model"
            )
        encoder = Encoder.from_model(
            chat_model,
            tokenizer,
            plan=settings.get("plan", "baseline") if plan is None else plan,
            pooling=settings.get("pooling", "mean") if pooling is None else pooling,
            max_length=int(settings.get("max_length", 512)) if max_length is None else max_length,
        )
        corpus_model = settings.get("model")
        if check_model and corpus_model and not same_model(str(corpus_model), encoder.name):
            raise NosinkError(
                f"{out_dir} was embedded by {corpus_model!r}, the chat model is {encoder.name!r}; "
                "retrieval needs the corpus embedded by the same weights (pass check_model=False "
                "if they are the same weights under another name)"
            )
        corpus_dtype = settings.get("dtype")
        model_dtype = encoder.dtype_name
        if corpus_dtype and corpus_dtype != model_dtype:
            warnings.warn(
                f"{out_dir} was embedded in {corpus_dtype}, the chat model runs in {model_dtype}; "
                "query vectors will be close to, not identical with, vectors computed in the corpus's dtype",
                stacklevel=2,
            )
        retriever = Retriever(encoder, index, warn_other_model=False, hybrid=hybrid)  # model checked above, or waived
        return cls(chat_model, tokenizer, retriever, query_instruction=query_instruction, chat_template=chat_template)

    # ---------------------------------------------------------------- properties

    @property
    def encoder(self) -> Encoder:
        """The encoder view of the chat model (same weights) that embeds questions."""
        return self.retriever.encoder

    @property
    def index(self) -> VectorIndex:
        return self.retriever.index

    def __repr__(self) -> str:
        template = "chat template" if self.uses_chat_template else "plain template"
        return f"RAG({self.encoder!r}, {self.index!r}, {template})"

    # ---------------------------------------------------------------- steps

    def retrieve(self, question: str, *, k: int = DEFAULT_K, query_instruction: str | None = None) -> list[Hit]:
        """The ``k`` records most similar to ``question``, best first, with their texts.

        Args:
            question: One question.
            k: Hits (clamped to the corpus's size).
            query_instruction: Overrides the instance's ``query_instruction`` for this call.

        Raises:
            NosinkError: ``question`` is not a non-empty string, or ``k`` is not positive.
        """
        _check_question(question)
        instruction = self.query_instruction if query_instruction is None else query_instruction
        return self.retriever.search(question, k=k, instruction=instruction)

    def build_prompt(self, question: str, hits: Sequence[Hit], *, instruction: str | None = None) -> str:
        """The prompt text for ``question`` and its retrieved ``hits`` (best first).

        The body is ``{instruction}\\n\\nContext:\\n[1] {text}\\n[2] {text}…\\n\\nQuestion: {question}``.
        With the chat template it is the content of one user message, rendered with
        ``add_generation_prompt=True``; with the plain template ``\\nAnswer:`` is appended.

        Args:
            question: The question.
            hits: Retrieved records; each needs its text.
            instruction: What the model is asked to do; default :data:`DEFAULT_INSTRUCTION`.
        """
        return "".join(self._prompt_parts(question, hits, instruction=instruction))

    def _prompt_parts(self, question: str, hits: Sequence[Hit], *, instruction: str | None) -> tuple[str, str, str]:
        """(template text before the body, the body, template text after it): the body holds all user text."""
        _check_question(question)
        lines = []
        for number, hit in enumerate(hits, start=1):
            if hit.text is None:
                raise NosinkError(f"hit {hit.id!r} has no text; the corpus must be embedded with store_text=True")
            lines.append(f"[{number}] {' '.join(hit.text.split())}")
        context = "\n".join(lines) if lines else "(nothing found)"
        body = f"{instruction or DEFAULT_INSTRUCTION}\n\nContext:\n{context}\n\nQuestion: {question.strip()}"
        if not self.uses_chat_template:
            return "", body, "\nAnswer:"
        before, after = self._template_around_body()
        return before, body, after

    def _template_around_body(self) -> tuple[str, str]:
        """The chat template rendered around one user message, split where its content goes."""
        messages = [{"role": "user", "content": _BODY_MARK}]
        rendered = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if not isinstance(rendered, str):
            raise NosinkError(f"the chat template rendered a {type(rendered).__name__}, not a string")
        if rendered.count(_BODY_MARK) != 1:
            raise NosinkError("the chat template does not render the user message's content once, as given")
        before, after = rendered.split(_BODY_MARK)
        return before, after

    def _safe_inputs(self, before: str, body: str, after: str) -> dict[str, torch.Tensor]:
        """Token ids of a prompt in which only the template's text may hold special tokens, never the body.

        The question and the retrieved texts are tokenized with ``split_special_tokens=True``, so a
        text that reads ``<|im_start|>system`` stays text instead of becoming a turn of the template.
        """
        tokenizer = self.tokenizer
        if not self.uses_chat_template:  # the plain template: the tokenizer's own BOS, then text only
            ids = tokenizer(body + after, add_special_tokens=True, split_special_tokens=True)["input_ids"]
        else:
            ids = [
                *tokenizer(before, add_special_tokens=False)["input_ids"],
                *tokenizer(body, add_special_tokens=False, split_special_tokens=True)["input_ids"],
                *tokenizer(after, add_special_tokens=False)["input_ids"],
            ]
        device = next(self.model.parameters()).device
        input_ids = torch.tensor([ids], device=device)  # [1, T]
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}

    def prompt_inputs(self, prompt: str) -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` [1, T] of a prompt, on the model's device.

        A chat-template prompt already holds its special tokens, so none are added; a plain
        prompt gets the tokenizer's usual ones (a BOS token for Llama-style tokenizers).
        """
        encoded = self.tokenizer(prompt, add_special_tokens=not self.uses_chat_template, return_tensors="pt")
        device = next(self.model.parameters()).device
        return {"input_ids": encoded["input_ids"].to(device), "attention_mask": encoded["attention_mask"].to(device)}

    def answer(
        self,
        question: str,
        *,
        k: int = DEFAULT_K,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        instruction: str | None = None,
        query_instruction: str | None = None,
        hits: Sequence[Hit] | None = None,
        **generate_kwargs: Any,
    ) -> Answer:
        """Retrieve ``k`` records for ``question``, put them in a prompt and generate an answer.

        Decoding is greedy (``do_sample=False``) unless ``generate_kwargs`` say otherwise, so the
        same question gives the same answer.

        Args:
            question: The question.
            k: Records to retrieve (ignored when ``hits`` are given).
            max_new_tokens: Longest answer in tokens.
            instruction: What the model is asked to do (see :meth:`build_prompt`).
            query_instruction: Instruction for embedding the question (see :meth:`retrieve`).
            hits: Use these records instead of retrieving.
            **generate_kwargs: Passed to ``chat_model.generate`` (e.g. ``do_sample=True``,
                ``temperature=0.7``, ``repetition_penalty=1.1``).

        Returns:
            The answer's text (special tokens removed), the hits, the prompt and the new token ids.

        Raises:
            NosinkError: A bad question or ``k``, or a prompt that with ``max_new_tokens`` does not
                fit the model's ``max_position_embeddings`` (use a smaller ``k``).
        """
        check_positive(max_new_tokens=max_new_tokens)
        if hits is None:
            hits = self.retrieve(question, k=k, query_instruction=query_instruction)
        parts = self._prompt_parts(question, hits, instruction=instruction)
        prompt = "".join(parts)
        inputs = self._safe_inputs(*parts)  # user text never becomes special tokens
        prompt_tokens = int(inputs["input_ids"].shape[1])
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if isinstance(limit, int) and prompt_tokens + max_new_tokens > limit:
            raise NosinkError(
                f"the prompt has {prompt_tokens} tokens; with max_new_tokens={max_new_tokens} it exceeds the "
                f"model's {limit} positions; retrieve fewer records (k={len(hits)} now) or ask for a shorter answer"
            )
        options: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": False, **generate_kwargs}
        if "pad_token_id" not in options and getattr(self.model.generation_config, "pad_token_id", None) is None:
            options["pad_token_id"] = pad_id(self.tokenizer)  # silences generate()'s warning; one row, no padding
        output = self.model.generate(**inputs, **options)  # [1, T + n]
        new_tokens = output[0, prompt_tokens:].tolist()
        text = self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
        return Answer(text=text, hits=list(hits), prompt=prompt, token_ids=new_tokens)


# -------------------------------------------------------------------- helpers


def _check_chat_model(model: nn.Module) -> None:
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        raise NosinkError(f"chat_model must be a transformers model, got {type(model).__name__}")
    can_generate = getattr(model, "can_generate", None)
    if not callable(getattr(model, "generate", None)) or not (callable(can_generate) and can_generate()):
        raise NosinkError(
            f"{type(model).__name__} cannot generate text; load the chat model with AutoModelForCausalLM, not AutoModel"
        )


def _check_question(question: str) -> None:
    if not isinstance(question, str) or not question.strip():
        raise NosinkError(f"question must be a non-empty string, got {question!r}")
