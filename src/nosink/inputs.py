"""From texts to token-id rows: instructions, truncation, padding, batching.

A row is ``[leading specials] + [instruction] + [text] + [trailing specials]``. An instruction and
its text are tokenized as one string, ``"Instruct: {instruction}\nQuery: " + text``, as the model
would read them (and as the authors' released code and sentence-transformers do). The instruction's
tokens are found by character offsets: the instruction is the template up to ``Query:``, and a token
holding any later character is the text's, so the separating space goes with the text whether it
merges into the first word (``"▁A"``, ``"ĠA"``) or stands alone (``"▁"``). Tokenizers without
offsets (slow ones) split by the released code's count of the template's tokens instead. The
tokenizer's special tokens (BOS, EOS …) are the ones it adds itself. The tokenizer object is never
modified. Token ids given directly (:meth:`TextTokenizer.from_ids`) get the instruction tokenized
apart and its ids put first. A raw ``prompt`` (sentence-transformers' kind, e.g. ``"query: "``) is
handled exactly as an instruction's template is: an instruction is the prompt
:func:`instruction_prompt` makes of it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from nosink.errors import NosinkError, check_positive

INSTRUCTION_TEMPLATE = "Instruct: {instruction}\nQuery: "  # E5-Mistral's format, used by the paper
TEXT_SLOT = "{text}"  # where a recipe's prompt template puts the text


def instruction_prompt(instruction: str) -> str:
    """The prompt an instruction becomes, ``Instruct: {instruction}\\nQuery: `` (E5-Mistral's format, the paper's)."""
    return INSTRUCTION_TEMPLATE.format(instruction=instruction)


_TOKENIZE_CHUNK = 4096


@dataclass(frozen=True)
class TokenizedText:
    """One text as model input; ``ids[text_start:text_end]`` are the text's own tokens.

    ``prompt_length`` is the number of leading tokens that the released code's pooling leaves out when
    there is an instruction, ``len(tokenizer(template.strip()).input_ids)``: the leading specials and
    the instruction, plus one text token where the tokenizer appends EOS (as the released code counts);
    0 without an instruction.
    """

    ids: list[int]
    text_start: int
    text_end: int
    offsets: list[tuple[int, int]] | None  # character span of each text token, within the text
    truncated: bool
    prompt_length: int = 0


class TextStates(NamedTuple):
    """Token states with one text per row, and the masks pooling needs."""

    states: torch.Tensor  # [B, T, D]
    real_mask: torch.Tensor  # [B, T], 1 = real token
    text_mask: torch.Tensor  # [B, T], True = a text token
    prompt_mask: torch.Tensor  # [B, T], True = a prompt token (leading specials and instruction)


@dataclass(frozen=True)
class Batch:
    """A padded batch and where its rows came from."""

    indices: list[int]  # positions of the rows in the caller's input
    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T], 1 = real token
    text_mask: torch.Tensor  # [B, T], 1 = a text token (no special, instruction or padding token)
    prompt_mask: torch.Tensor  # [B, T] bool, True = a token of the prompt (TokenizedText.prompt_length)
    segment_ids: torch.Tensor | None = None  # [B, T]: None, a padded batch has one text per row

    def per_text(self, states: torch.Tensor) -> TextStates:
        """The model's states [B, T, D] as one row per text, with that row's masks."""
        return TextStates(states, self.attention_mask, self.text_mask, self.prompt_mask)


@dataclass(frozen=True)
class PackedBatch:
    """Texts packed one after another into rows of about equal length, each text attending only to itself.

    The model runs on ``input_ids`` / ``attention_mask`` / ``segment_ids`` ([R, W]); pooling runs
    on :meth:`per_text`, which gathers every text back into a padded row of its own ([N, T]).
    """

    indices: list[int]  # positions of the texts in the caller's input
    input_ids: torch.Tensor  # [R, W]
    attention_mask: torch.Tensor  # [R, W], 1 = real token
    segment_ids: torch.Tensor | None  # [R, W], the token's text within its row, -1 = padding; None: one text per row
    token_index: torch.Tensor  # [N, T], flat index r * W + w of each text's tokens (0 past its end)
    text_real: torch.Tensor  # [N, T], 1 = a real token of text n
    text_mask: torch.Tensor  # [N, T], 1 = a text token (no special or instruction token)
    prompt_mask: torch.Tensor  # [N, T] bool, True = a token of the prompt (TokenizedText.prompt_length)

    def per_text(self, states: torch.Tensor) -> TextStates:
        """[R, W, D] -> [N, T, D] (right-padded, one text per row) and its masks."""
        flat = states.flatten(0, 1)  # [R * W, D]
        return TextStates(flat[self.token_index], self.text_real, self.text_mask, self.prompt_mask)


def check_unicode(text: str, what: str) -> None:
    """NosinkError when ``text`` cannot be UTF-8 encoded (a lone UTF-16 surrogate, as JSON's "\\ud800" gives)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise NosinkError(
            f"{what} holds a lone UTF-16 surrogate at character {error.start}, which is not text; send valid Unicode"
        ) from None


def check_texts(texts: Any, *, allow_words: bool = False) -> list:
    """Validate the user's input: a list of strings (or of word lists, for token-level encoding)."""
    if isinstance(texts, str):
        raise NosinkError("expected a list of texts, got a single string; wrap it as [text]")
    if texts is None or not isinstance(texts, Sequence):
        raise NosinkError(f"expected a list of texts, got {type(texts).__name__}")
    for index, text in enumerate(texts):
        if isinstance(text, str):
            continue
        if allow_words and isinstance(text, (list, tuple)) and all(isinstance(w, str) for w in text):
            continue
        kind = "a string or a list of words" if allow_words else "a string"
        raise NosinkError(f"text at index {index} must be {kind}, got {type(text).__name__}: {text!r:.60}")
    return list(texts)


class TextTokenizer:
    """Tokenizes texts into :class:`TokenizedText` rows for one tokenizer, instruction and length.

    With prompt ``templates`` (each holding ``{text}``) every text gives one row per template, text by
    text: rows ``i * K … i * K + K - 1`` are text i in each of the K templates (``rows_per_text``).
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        max_length: int,
        instruction: str | None = None,
        templates: Sequence[str] = (),
        prompt: str | None = None,
    ) -> None:
        if max_length < 1:
            raise NosinkError(f"max_length must be >= 1, got {max_length}")
        for name, value in (("instruction", instruction), ("prompt", prompt)):
            if value is not None and not isinstance(value, str):
                raise NosinkError(f"{name} must be a string, got {type(value).__name__}")
            if value is not None:
                check_unicode(value, f"the {name}")
        if instruction and prompt:
            raise NosinkError("give an instruction or a prompt, not both (the instruction is a prompt in E5's format)")
        self.tokenizer = tokenizer
        self.max_length = max_length
        # A raw prompt (sentence-transformers' kind) goes before the text like an instruction's template does.
        self.prefix = instruction_prompt(instruction) if instruction else (prompt or "")
        self.offsets_available = bool(getattr(tokenizer, "is_fast", False))
        stripped = self.prefix.rstrip()  # "Instruct: …\nQuery:": the instruction without its separating space
        # The released code's prompt length: the stripped template with the tokenizer's specials (BOS, and EOS
        # where the tokenizer appends one), the number of leading tokens its mean leaves out.
        self.released_prompt_length = len(self._ids(stripped, specials=True)) if self.prefix else 0
        self.instruction_count = len(self._ids(stripped, specials=False)) if self.prefix else 0  # no offsets: by count
        self.instruction_ids = self._ids(self.prefix, specials=False) if self.prefix else []  # from_ids: apart
        self.template_parts = [template.split(TEXT_SLOT) for template in templates]
        self.rows_per_text = max(len(self.template_parts), 1)
        if self.template_parts and not self.offsets_available:
            raise NosinkError(
                "a prompt template needs a fast tokenizer (character offsets); load one with use_fast=True"
            )

    def _ids(self, text: str, *, specials: bool) -> list[int]:
        return self.tokenizer(text, add_special_tokens=specials, split_special_tokens=True)["input_ids"]

    def __call__(self, texts: list[str], *, offsets: bool = False) -> list[TokenizedText]:
        rows: list[TokenizedText] = []
        spans = offsets or (bool(self.prefix) and self.offsets_available)
        for index, text in enumerate(texts):
            check_unicode(text, f"text at index {index}")
            if not text.strip():  # one rule everywhere (the corpus reader's too): nothing to embed
                raise NosinkError(f"text at index {index} is empty or only whitespace; remove it or give it content")
        if self.template_parts:
            per_template = [self._template_rows(texts, parts, offsets=offsets) for parts in self.template_parts]
            return [row for rows_of_text in zip(*per_template, strict=True) for row in rows_of_text]
        for start in range(0, len(texts), _TOKENIZE_CHUNK):
            chunk = texts[start : start + _TOKENIZE_CHUNK]
            encoded = self.tokenizer(
                [self.prefix + text for text in chunk],  # one string, as the model reads it
                add_special_tokens=True,
                split_special_tokens=True,  # user text is text: "<s>" in it is three characters, never BOS
                return_special_tokens_mask=True,
                return_offsets_mapping=spans,
                truncation=False,
                verbose=False,  # over-long texts are reported once, by the encoder
            )
            for i in range(len(chunk)):
                rows.append(self._row(encoded, i, start + i, offsets=offsets, spans=spans))
        return rows

    def _fill(self, text: str, parts: list[str]) -> tuple[str, int]:
        """The instruction and the template filled with ``text``, and where its last copy (the pooled one) starts."""
        filled = self.prefix + parts[0] + "".join(text + part for part in parts[1:])
        return filled, len(filled) - len(parts[-1]) - len(text)

    def _template_rows(self, texts: list[str], parts: list[str], *, offsets: bool) -> list[TokenizedText]:
        rows = []
        for start in range(0, len(texts), _TOKENIZE_CHUNK):
            chunk = texts[start : start + _TOKENIZE_CHUNK]
            filled = [self._fill(text, parts) for text in chunk]
            encoded = self._encode_filled([string for string, _ in filled])
            for i, text in enumerate(chunk):
                first = (encoded["input_ids"][i], encoded["special_tokens_mask"][i], encoded["offset_mapping"][i])
                row = self._template_row(text, start + i, parts, offsets=offsets, first=(*first, filled[i][1]))
                rows.append(row)
        return rows

    def _template_row(self, text: str, index: int, parts: list[str], *, offsets: bool, first: tuple) -> TokenizedText:
        """One text in its template, tokenized as one string; the text's tokens are those of its last copy.

        A token holding any character of the last copy is a text token (a word merged with the
        template's punctuation included). An over-long text is cut at a token boundary of the last
        copy, every copy alike, and the template is tokenized again around the cut text, so that the
        template's own tokens always stay whole.
        """
        original, (ids, special, spans, start) = text, first
        for _ in range(8):
            spans = [tuple(span) for span in spans]
            inside = [n for n, (a, b) in enumerate(spans) if a < start + len(text) and b > start and not special[n]]
            if not inside:
                raise NosinkError(f"text at index {index} is empty (it has no tokens); remove it or give it content")
            excess = len(ids) - self.max_length
            if excess <= 0:
                text_spans = [(max(spans[n][0] - start, 0), min(spans[n][1] - start, len(text))) for n in inside]
                return TokenizedText(ids, inside[0], inside[-1] + 1, text_spans if offsets else None, text != original)
            copies = len(parts) - 1
            keep = len(inside) - -(-excess // copies)  # text tokens kept: each copy gives up its share
            if keep < 1:
                raise NosinkError(
                    f"max_length={self.max_length} leaves no room for text after the prompt template, the "
                    f"instruction and the special tokens ({len(ids) - len(inside) * copies}); raise max_length"
                )
            text = text[: spans[inside[keep - 1]][1] - start]
            filled, start = self._fill(text, parts)
            encoded = self._encode_filled([filled])
            ids, special, spans = (
                encoded["input_ids"][0],
                encoded["special_tokens_mask"][0],
                encoded["offset_mapping"][0],
            )
        raise NosinkError(f"text at index {index} could not be cut to max_length={self.max_length} tokens")

    def _encode_filled(self, strings: list[str]) -> Any:
        return self.tokenizer(
            strings,
            add_special_tokens=True,
            split_special_tokens=True,  # user text is text: "<s>" in it is three characters, never BOS
            return_special_tokens_mask=True,
            return_offsets_mapping=True,
            truncation=False,
            verbose=False,
        )

    def from_ids(self, ids: list[int], *, index: int = 0) -> TokenizedText:
        """A row from the text's own token ids (no special tokens), wrapped like a tokenized text.

        The tokenizer's special tokens are added around the ids exactly as for text, so
        ``from_ids(tokenizer(text, add_special_tokens=False).input_ids)`` equals ``[text]`` without an
        instruction. An instruction is tokenized apart and its ids put before these (ids cannot be
        tokenized together with the instruction's characters).
        """
        if self.template_parts:
            raise NosinkError("token ids cannot be put into a prompt template; send the text instead")
        lead, trail = self._specials()
        encoded = {
            "input_ids": [[*lead, *ids, *trail]],
            "special_tokens_mask": [[1] * len(lead) + [0] * len(ids) + [1] * len(trail)],
        }
        return self._row(encoded, 0, index, offsets=False, spans=False, joined=False)

    def _specials(self) -> tuple[list[int], list[int]]:
        """The special tokens the tokenizer puts before and after a text."""
        encoded = self.tokenizer("a", add_special_tokens=True, return_special_tokens_mask=True)
        ids, special = encoded["input_ids"], encoded["special_tokens_mask"]
        lead = next((n for n, s in enumerate(special) if not s), len(ids))
        trail = next((n for n, s in enumerate(reversed(special)) if not s), 0)
        return ids[:lead], ids[len(ids) - trail :]

    def _split_prompt(
        self, ids: list[int], spans: list[tuple[int, int]], index: int
    ) -> tuple[list[int], list[int], list[tuple[int, int]]]:
        """Split one string's tokens into the instruction's and the text's, with spans within the text.

        The instruction is the template without its final space (``…\nQuery:``): a token with any
        character after that is the text's, so the separating space goes with the text whether it
        merges into the first word (``ĠA``) or stands alone (``▁``), as the released code counts it.
        """
        cut, start = len(self.prefix.rstrip()), len(self.prefix)
        if not any(stop > start for _, stop in spans):
            raise NosinkError(f"text at index {index} is empty (it has no tokens); remove it or give it content")
        first = next(n for n, (_, stop) in enumerate(spans) if stop > cut)
        within = [(max(a - start, 0), max(b - start, 0)) for a, b in spans[first:]]
        return ids[:first], ids[first:], within

    def _row(
        self, encoded: Any, i: int, index: int, *, offsets: bool, spans: bool, joined: bool = True
    ) -> TokenizedText:
        ids, special = encoded["input_ids"][i], encoded["special_tokens_mask"][i]
        lead = next((n for n, s in enumerate(special) if not s), len(ids))
        end = len(ids) - next((n for n, s in enumerate(reversed(special)) if not s), 0)
        end = max(end, lead)
        text_spans = [tuple(span) for span in encoded["offset_mapping"][i][lead:end]] if spans else None
        if not (self.prefix and joined):
            instruction, body = self.instruction_ids, ids[lead:end]
        elif text_spans is not None:
            instruction, body, text_spans = self._split_prompt(ids[lead:end], text_spans, index)  # type: ignore[arg-type]
        else:  # no offsets (a slow tokenizer): the released code's count of the stripped template's tokens
            count = self.instruction_count
            instruction, body = ids[lead : lead + count], ids[lead + count : end]
        trail = ids[end:]
        if not body:
            raise NosinkError(f"text at index {index} is empty (it has no tokens); remove it or give it content")
        budget = self.max_length - lead - len(instruction) - len(trail)
        no_text = budget < 1 or (text_spans is not None and not any(stop for _, stop in text_spans[:budget]))
        if no_text:
            taken = f"the instruction ({len(instruction)} tokens) and " if instruction else ""
            raise NosinkError(
                f"max_length={self.max_length} leaves no room for text after {taken}"
                f"the special tokens ({lead + len(trail)}); raise max_length"
            )
        truncated = len(body) > budget
        body = body[:budget]
        text_spans = text_spans[:budget] if offsets and text_spans is not None else None
        text_start = lead + len(instruction)
        row = ids[:lead] + instruction + body + trail
        prompt_length = min(self.released_prompt_length, len(row)) if self.prefix else 0
        return TokenizedText(row, text_start, text_start + len(body), text_spans, truncated, prompt_length)


# The fixed cost of one forward pass, in padded tokens: measured on CPU (docs/performance.md); on
# accelerators larger batches pay for longer, so the cut leans towards fewer, fuller batches (a guess,
# not yet measured on a GPU).
BATCH_COST_TOKENS = {"cpu": 64}
ACCELERATOR_BATCH_COST_TOKENS = 1024


def batches(
    rows: list[TokenizedText],
    *,
    batch_size: int,
    max_tokens_per_batch: int | None,
    pad_id: int,
    left_padding: bool,
    device: torch.device,
) -> Iterator[Batch]:
    """Longest rows first, cut into batches of at most ``batch_size`` rows and ``max_tokens_per_batch`` padded tokens.

    Among all such cuts of the length-sorted rows, the one with the fewest padded tokens plus a
    fixed cost per batch (``BATCH_COST_TOKENS`` for the device) is taken (see :func:`partition`):
    a run of short rows after long ones starts its own batch instead of being padded to the longest.
    """
    _check_limits(batch_size, max_tokens_per_batch)
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i].ids))
    lengths = [len(rows[i].ids) for i in order]  # [N], non-increasing
    cost = BATCH_COST_TOKENS.get(device.type, ACCELERATOR_BATCH_COST_TOKENS)
    for start, stop in partition(lengths, batch_size=batch_size, max_tokens=max_tokens_per_batch, batch_cost=cost):
        yield _pad(rows, order[start:stop], pad_id, left_padding, device)


def pad_rows(rows: list[TokenizedText], *, pad_id: int, left_padding: bool, device: torch.device) -> Batch:
    """All ``rows`` as one padded batch, in their order (``batch.indices`` is 0 … N-1)."""
    if not rows:
        raise NosinkError("no rows to pad")
    return _pad(rows, list(range(len(rows))), pad_id, left_padding, device)


# Packed rows hold about this many tokens: long enough that short texts share rows, short enough
# that attention across the whole row (masked to block-diagonal) stays cheap next to the MLPs.
PACK_WIDTH = 128


def packed_batches(
    rows: list[TokenizedText],
    *,
    batch_size: int,
    max_tokens_per_batch: int | None,
    width: int = PACK_WIDTH,
    pad_id: int,
    device: torch.device,
) -> Iterator[PackedBatch]:
    """Longest rows first, in groups of at most ``batch_size`` texts and ``max_tokens_per_batch`` tokens, each packed.

    A group fills ``ceil(tokens / max(width, longest text))`` rows (see :func:`pack_rows`), so one
    forward pass carries many short texts with little padding. A text is never split, so a row can
    be wider than ``width``. ``max_tokens_per_batch`` counts the texts' own tokens; packing adds at
    most the longest text's length in padding per row.
    """
    _check_limits(batch_size, max_tokens_per_batch)
    if width < 1:
        raise NosinkError(f"the pack width must be >= 1, got {width}")
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i].ids))
    group: list[int] = []
    tokens = 0
    for index in order:
        length = len(rows[index].ids)
        over_budget = max_tokens_per_batch is not None and tokens + length > max_tokens_per_batch
        if group and (len(group) == batch_size or over_budget):
            yield _pack(rows, group, width, pad_id, device)
            group, tokens = [], 0
        group.append(index)
        tokens += length
    if group:
        yield _pack(rows, group, width, pad_id, device)


def pack_rows(lengths: list[int], width: int) -> list[list[int]]:
    """Assign items (non-increasing ``lengths``) to ``ceil(sum / width)`` rows, each to the least-filled row.

    Each item goes to a row that held at most the average fill, so the fullest row (the padded
    width) exceeds ``sum / rows`` by at most the longest item. Returns item indices per row.
    """
    count = max(1, -(-sum(lengths) // max(width, lengths[0])))
    fills = [(0, r) for r in range(count)]  # heap of (tokens so far, row)
    members: list[list[int]] = [[] for _ in range(count)]
    for item, length in enumerate(lengths):
        fill, row = heapq.heappop(fills)
        members[row].append(item)
        heapq.heappush(fills, (fill + length, row))
    return [row for row in members if row]


def _pack(rows: list[TokenizedText], group: list[int], width: int, pad_id: int, device: torch.device) -> PackedBatch:
    layout = pack_rows([len(rows[i].ids) for i in group], width)  # positions in ``group``, per packed row
    row_width = max(sum(len(rows[group[k]].ids) for k in members) for members in layout)
    text_width = max(len(rows[i].ids) for i in group)
    input_ids = torch.full((len(layout), row_width), pad_id, dtype=torch.long)  # [R, W]
    attention_mask = torch.zeros((len(layout), row_width), dtype=torch.long)  # [R, W]
    segment_ids = torch.full((len(layout), row_width), -1, dtype=torch.long)  # [R, W]
    token_index = torch.zeros((len(group), text_width), dtype=torch.long)  # [N, T]
    text_real = torch.zeros((len(group), text_width), dtype=torch.long)  # [N, T]
    text_mask = torch.zeros((len(group), text_width), dtype=torch.bool)  # [N, T]
    prompt_mask = torch.zeros((len(group), text_width), dtype=torch.bool)  # [N, T]
    indices = []
    for r, members in enumerate(layout):
        offset = 0
        for segment, k in enumerate(members):
            row, n = rows[group[k]], len(rows[group[k]].ids)
            input_ids[r, offset : offset + n] = torch.tensor(row.ids)
            attention_mask[r, offset : offset + n] = 1
            segment_ids[r, offset : offset + n] = segment
            text = len(indices)
            token_index[text, :n] = r * row_width + offset + torch.arange(n)
            text_real[text, :n] = 1
            text_mask[text, row.text_start : row.text_end] = True
            prompt_mask[text, : row.prompt_length] = True
            indices.append(group[k])
            offset += n
    one_text_per_row = len(layout) == len(group)  # plain padded rows, which keep SDPA's mask-free paths
    return PackedBatch(
        indices,
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        segment_ids=None if one_text_per_row else segment_ids.to(device),
        token_index=token_index.to(device),
        text_real=text_real.to(device),
        text_mask=text_mask.to(device),
        prompt_mask=prompt_mask.to(device),
    )


def _check_limits(batch_size: int, max_tokens_per_batch: int | None) -> None:
    check_positive(batch_size=batch_size)
    if max_tokens_per_batch is not None:
        check_positive(max_tokens_per_batch=max_tokens_per_batch)


def partition(lengths: list[int], *, batch_size: int, max_tokens: int | None, batch_cost: int) -> list[tuple[int, int]]:
    """Cut non-increasing ``lengths`` into contiguous batches [start, stop) of least total cost.

    A batch of rows ``i..j-1`` costs ``(j - i) * lengths[i]`` padded tokens (its first row is its
    longest) plus ``batch_cost``; it holds at most ``batch_size`` rows and, unless it is a single
    row, at most ``max_tokens`` padded tokens. Dynamic programming over the stop of the last batch.
    """
    count = len(lengths)
    best = [0] * (count + 1)  # best[j]: least cost of rows 0..j-1
    cut = [0] * (count + 1)  # cut[j]: start of the last batch in that best cut
    for stop in range(1, count + 1):
        cost, latest = min(  # on a tie the latest start: earlier batches stay full
            (best[start] + (stop - start) * lengths[start] + batch_cost, -start)
            for start in range(max(0, stop - batch_size), stop)
            if stop - start == 1 or max_tokens is None or (stop - start) * lengths[start] <= max_tokens
        )
        best[stop], cut[stop] = cost, -latest
    spans = []
    stop = count
    while stop:
        spans.append((cut[stop], stop))
        stop = cut[stop]
    return spans[::-1]


def _pad(rows: list[TokenizedText], group: list[int], pad_id: int, left: bool, device: torch.device) -> Batch:
    width = max(len(rows[i].ids) for i in group)
    input_ids = torch.full((len(group), width), pad_id, dtype=torch.long)  # [B, T]
    attention_mask = torch.zeros((len(group), width), dtype=torch.long)  # [B, T]
    text_mask = torch.zeros((len(group), width), dtype=torch.bool)  # [B, T]
    prompt_mask = torch.zeros((len(group), width), dtype=torch.bool)  # [B, T]
    for b, index in enumerate(group):
        row = rows[index]
        shift = width - len(row.ids) if left else 0
        input_ids[b, shift : shift + len(row.ids)] = torch.tensor(row.ids)
        attention_mask[b, shift : shift + len(row.ids)] = 1
        text_mask[b, shift + row.text_start : shift + row.text_end] = True
        prompt_mask[b, shift : shift + row.prompt_length] = True
    return Batch(group, input_ids.to(device), attention_mask.to(device), text_mask.to(device), prompt_mask.to(device))
