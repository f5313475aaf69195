"""Attention-sink diagnostics (the paper's Figures 3, 8 and 9).

:func:`attention_maps` runs an encoder's plan eagerly on texts cropped to one length and averages
the attention weights of every layer call over heads and texts. :func:`sink_scores` measures how
much attention the query rows i >= 1 put on key 0 and compares it with what a row would give key 0
if it spread its attention uniformly over the keys its pattern allows. :func:`detect_sinks` names
the sink layers, and the two plotting functions draw the maps and the scores (``nosink[eval]``).

Position 0 is the first token of the tokenized text, i.e. BOS for tokenizers that add one.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from nosink.errors import NosinkError, check_positive
from nosink.inputs import check_texts
from nosink.patterns import LayerPattern, build_mask

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from nosink.encoder import Encoder

DEFAULT_TOKENS = 16
DEFAULT_MAX_TEXTS = 64
DEFAULT_BATCH_SIZE = 16
# A layer is a sink layer when its rows i >= 1 put at least twice their uniform share on token 0.
# In the paper's sink layers (TinyLlama, Figure 3) token 0 takes most of every row, many times the
# uniform share; 2x keeps such layers and leaves mildly skewed ones (stories260k's top layer, ~1.9x) out.
DEFAULT_THRESHOLD = 2.0
_INSTALL = 'plotting needs matplotlib; install it with: pip install "nosink[eval]"'


@dataclass(frozen=True)
class AttentionMaps:
    """Attention weights of every layer call, averaged over heads and texts.

    ``maps[c, i, j]`` is the mean attention that query position i gives key position j in layer
    call c (in run order); ``layers``, ``patterns`` and ``branches`` label the calls as
    :meth:`nosink.plan.Schedule.rows` does.
    """

    maps: np.ndarray  # [n_calls, T, T] float32, every row sums to 1
    layers: list[int]
    patterns: list[str]
    branches: list[str]
    n_texts: int
    tokens: int
    model: str = ""
    plan: str = ""

    def call_title(self, call: int) -> str:
        """``layer L (pattern)``, with the branch when it is not ``main``."""
        branch = self.branches[call]
        suffix = "" if branch == "main" else f", {branch}"
        return f"layer {self.layers[call]} ({self.patterns[call]}{suffix})"


@dataclass(frozen=True)
class SinkScore:
    """How much one layer call attends to token 0, against the uniform expectation.

    ``score``: mean over query rows i >= 1 of the (head- and text-averaged) attention on key 0.
    ``uniform``: the same mean if every row spread its attention evenly over the keys its pattern
    allows (causal row i: 1/(i+1); bidir: 1/T; backward and nosink: 0, key 0 is hidden).
    ``ratio``: score / uniform, or None when uniform is 0 (key 0 is masked for every row i >= 1,
    so the score is 0 too and no ratio exists; None rather than NaN keeps the JSON valid).
    """

    call: int
    layer: int
    pattern: str
    branch: str
    score: float
    uniform: float
    ratio: float | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields."""
        return asdict(self)


class SinkScores(list[SinkScore]):
    """The :class:`SinkScore` of every layer call, in run order; a plain list with two views."""

    def as_table(self) -> str:
        """An aligned text table: call, layer, pattern, branch, score, uniform, ratio."""
        header = ("call", "layer", "pattern", "branch", "score", "uniform", "ratio")
        rows = [header] + [
            (
                str(s.call),
                str(s.layer),
                s.pattern,
                s.branch,
                f"{s.score:.3f}",
                f"{s.uniform:.3f}",
                "-" if s.ratio is None else f"{s.ratio:.2f}x",
            )
            for s in self
        ]
        widths = [max(len(row[col]) for row in rows) for col in range(len(header))]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)

    def to_json(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per layer call."""
        return [s.to_json() for s in self]


# ---------------------------------------------------------------------------- maps


def attention_maps(
    encoder: Encoder,
    texts: Sequence[str],
    *,
    tokens: int = DEFAULT_TOKENS,
    max_texts: int = DEFAULT_MAX_TEXTS,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> AttentionMaps:
    """Average attention maps of every layer call of ``encoder``'s plan.

    Each text is tokenized as the tokenizer does by default (BOS etc. included), texts shorter
    than ``tokens`` are skipped, the rest are cropped to their first ``tokens`` tokens and at most
    ``max_texts`` of them are used, so every row has the same length and no padding is needed.

    Args:
        encoder: the model, tokenizer and plan; the plan runs eagerly to get the weights.
        texts: the texts, in order; the first ``max_texts`` long enough ones are used.
        tokens: T, the length every text is cropped to (>= 2: position 0 and a row that can look at it).
        max_texts: the most texts to average over.
        batch_size: texts per forward pass.

    Returns:
        The maps [n_calls, T, T] with the labels of every call.

    Raises:
        NosinkError: bad arguments, or no text has ``tokens`` tokens.
    """
    texts = check_texts(texts)
    check_positive(tokens=tokens, max_texts=max_texts, batch_size=batch_size)
    if tokens < 2:
        raise NosinkError(f"tokens must be >= 2 (position 0 and at least one row after it), got {tokens}")
    ids = _cropped_ids(encoder.tokenizer, texts, tokens, max_texts)  # [N, T]
    total = _summed_maps(encoder, ids, batch_size)  # [n_calls, T, T]
    layers, patterns, branches = (list(column) for column in zip(*encoder.schedule.rows(), strict=True))
    return AttentionMaps(
        maps=(total / len(ids)).astype(np.float32),
        layers=[int(layer) for layer in layers],
        patterns=[str(p) for p in patterns],
        branches=[str(b) for b in branches],
        n_texts=len(ids),
        tokens=tokens,
        model=_model_name(encoder),
        plan=str(encoder.plan),
    )


def _cropped_ids(tokenizer: Any, texts: list[str], tokens: int, max_texts: int) -> torch.Tensor:
    """[N, T] long: the first ``tokens`` ids of the first ``max_texts`` texts that have that many."""
    kept: list[list[int]] = []
    longest = skipped = 0
    for text in texts:
        ids = list(tokenizer(text, split_special_tokens=True)["input_ids"])  # special-token strings stay text
        longest = max(longest, len(ids))
        if len(ids) < tokens:
            skipped += 1
            continue
        kept.append(ids[:tokens])
        if len(kept) == max_texts:
            break
    if not kept:
        raise NosinkError(
            f"no text has at least tokens={tokens} tokens (the longest of {len(texts)} has {longest}, "
            "special tokens included); give longer texts or lower tokens"
        )
    if skipped:
        warnings.warn(
            f"{skipped} text(s) shorter than tokens={tokens} tokens (special tokens included) were left out; "
            f"the maps average {len(kept)}",
            stacklevel=3,
        )
    return torch.tensor(kept, dtype=torch.long)


def _summed_maps(encoder: Encoder, ids: torch.Tensor, batch_size: int) -> np.ndarray:
    """Head-averaged weights summed over texts: [N, T] ids -> [n_calls, T, T] float64."""
    n_calls = len(encoder.schedule.rows())
    total = np.zeros((n_calls, ids.shape[1], ids.shape[1]), dtype=np.float64)  # [n_calls, T, T]
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]  # [B, T]
        records = encoder.attentions(chunk, torch.ones_like(chunk))
        if len(records) != n_calls:
            raise NosinkError(f"the plan has {n_calls} layer calls but {len(records)} attention records came back")
        for call, record in enumerate(records):
            per_text = record.weights.double().mean(dim=1)  # [B, H, T, T] -> [B, T, T]
            total[call] += per_text.sum(dim=0).cpu().numpy()  # [T, T]
    return total


def head_sink_ratios(
    encoder: Encoder,
    texts: Sequence[str],
    *,
    tokens: int = DEFAULT_TOKENS,
    max_texts: int = DEFAULT_MAX_TEXTS,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> np.ndarray:
    """Per head, how much more than uniform every query row i >= 1 attends to token 0: [n_calls, H].

    The score of a head is the mean over texts and rows i >= 1 of its attention on key 0; the
    ratio divides it by :func:`uniform_sink` of the call's pattern. NaN where that is 0 (key 0 hidden).
    Texts are cropped as in :func:`attention_maps`.
    """
    texts = check_texts(texts)
    check_positive(tokens=tokens, max_texts=max_texts, batch_size=batch_size)
    ids = _cropped_ids(encoder.tokenizer, texts, tokens, max_texts)  # [N, T]
    sums: list[np.ndarray] = []  # per call: [H] summed over texts of the mean over rows i >= 1
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]  # [B, T]
        for call, record in enumerate(encoder.attentions(chunk, torch.ones_like(chunk))):
            on_key0 = record.weights.double()[:, :, 1:, 0].mean(dim=2).sum(dim=0).cpu().numpy()  # [B, H, T-1] -> [H]
            if call == len(sums):
                sums.append(np.zeros_like(on_key0))
            sums[call] += on_key0
    patterns = [str(row[1]) for row in encoder.schedule.rows()]
    uniform = np.array([uniform_sink(pattern, tokens) for pattern in patterns])  # [n_calls]
    scores = np.stack(sums) / len(ids)  # [n_calls, H]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(uniform[:, None] > 0, scores / uniform[:, None], np.nan)


def _model_name(encoder: Encoder) -> str:
    return Path(encoder.name).name if Path(encoder.name).exists() else encoder.name


# ---------------------------------------------------------------------------- scores


def allowed_keys(pattern: str | LayerPattern, tokens: int) -> np.ndarray:
    """[T, T] bool: which keys each query may attend under ``pattern`` for an unpadded row of T tokens."""
    real = torch.ones((1, tokens), dtype=torch.long)  # [1, T]
    return build_mask(LayerPattern.coerce(pattern), real)[0, 0].numpy()  # [1, 1, T, T] -> [T, T]


def uniform_sink(pattern: str | LayerPattern, tokens: int) -> float:
    """Mean over rows i >= 1 of the attention on key 0 if each row were uniform over its allowed keys."""
    allowed = allowed_keys(pattern, tokens)  # [T, T]
    share = allowed[1:, 0] / allowed[1:].sum(axis=1)  # [T-1]: key 0's uniform share of rows 1..T-1
    return float(share.mean())


def sink_scores(maps: AttentionMaps) -> SinkScores:
    """The sink score of every layer call of ``maps`` (see :class:`SinkScore`).

    Args:
        maps: averaged attention maps from :func:`attention_maps` (or built by hand).

    Returns:
        One :class:`SinkScore` per layer call, in run order.
    """
    scores = SinkScores()
    for call, weights in enumerate(maps.maps):  # weights: [T, T]
        score = float(np.mean(weights[1:, 0], dtype=np.float64))  # rows i >= 1, key 0
        uniform = uniform_sink(maps.patterns[call], maps.tokens)
        ratio = score / uniform if uniform > 0 else None
        scores.append(
            SinkScore(call, maps.layers[call], maps.patterns[call], maps.branches[call], score, uniform, ratio)
        )
    return scores


def detect_sinks(scores: Sequence[SinkScore], *, threshold: float = DEFAULT_THRESHOLD) -> list[int]:
    """The sink layers: those with a call whose score is at least ``threshold`` x its uniform expectation.

    Calls whose pattern hides key 0 from every row i >= 1 (uniform 0) are never sinks.

    Args:
        scores: from :func:`sink_scores`.
        threshold: how many times its uniform share key 0 must get; the default 2.0 flags layers
            where token 0 takes at least twice what an even spread would give it.

    Returns:
        The sorted, distinct layer indices of the sink calls.
    """
    if not math.isfinite(threshold) or threshold <= 0:
        raise NosinkError(f"threshold must be a positive number, got {threshold!r}")
    return sorted({s.layer for s in scores if s.uniform > 0 and s.score >= threshold * s.uniform})


# ---------------------------------------------------------------------------- plots


def plot_attention_grid(
    maps_by_label: Mapping[str, AttentionMaps],
    path: str | Path,
    *,
    title: str | None = None,
    layers: Sequence[int] | None = None,
) -> Path:
    """Draw one row of attention heatmaps per label, one column per layer call, into a PNG.

    Keys a call's pattern forbids are drawn grey, so masked and merely unattended keys differ.
    Each row has its own colour scale and colourbar.

    Args:
        maps_by_label: e.g. ``{"baseline": ..., "mask0-bidir:k=2": ...}``, drawn top to bottom.
        path: the PNG file to write (its folder must exist).
        title: the figure title; by default the model, the labels, the number of texts and T.
        layers: only draw the calls of these layers (all by default), for models with many layers.

    Returns:
        ``path`` as a Path.
    """
    figure_class = _figure_class()
    selected = {label: _selected_calls(maps, layers) for label, maps in _nonempty(maps_by_label).items()}
    n_rows, n_cols = len(selected), max(len(calls) for calls in selected.values())
    figure = figure_class(figsize=(1.9 * n_cols + 1.6, 2.0 * n_rows + 0.9), layout="constrained")
    figure.get_layout_engine().set(h_pad=0.08)  # room between a row's key labels and the next row's titles
    axes = figure.subplots(n_rows, n_cols, squeeze=False)
    for row, (label, calls) in enumerate(selected.items()):
        _draw_row(figure, axes[row], label, maps_by_label[label], calls, last_row=row == n_rows - 1)
    figure.suptitle(title or _grid_title(maps_by_label), fontsize=11)
    return _save(figure, path)


def _nonempty(maps_by_label: Mapping[str, AttentionMaps]) -> Mapping[str, AttentionMaps]:
    if not maps_by_label:
        raise NosinkError("nothing to plot: maps_by_label is empty")
    return maps_by_label


def _selected_calls(maps: AttentionMaps, layers: Sequence[int] | None) -> list[int]:
    calls = [c for c, layer in enumerate(maps.layers) if layers is None or layer in layers]
    if not calls:
        raise NosinkError(f"none of layers {list(layers or [])} is in the plan {maps.plan!r}")
    return calls


def _draw_row(
    figure: Figure, axes: Sequence[Axes], label: str, maps: AttentionMaps, calls: list[int], *, last_row: bool
) -> None:
    from matplotlib.colors import PowerNorm

    vmax = float(maps.maps[calls].max()) or 1.0
    norm = PowerNorm(gamma=0.5, vmin=0.0, vmax=vmax)  # sqrt scale: small weights stay visible
    image = None
    for ax, call in zip(axes, calls, strict=False):  # spare axes are blanked below
        forbidden = ~allowed_keys(maps.patterns[call], maps.tokens)  # [T, T]
        shown = np.ma.masked_array(maps.maps[call], mask=forbidden)  # [T, T]
        image = ax.imshow(shown, cmap=_cmap(), norm=norm, interpolation="nearest")
        ax.set_title(maps.call_title(call), fontsize=9)
        _sparse_ticks(ax, maps.tokens)
        if last_row:
            ax.set_xlabel("key position", fontsize=8)
    axes[0].set_ylabel(f"{label}\n\nquery position", fontsize=8)
    for ax in axes[len(calls) :]:
        ax.axis("off")
    colourbar = figure.colorbar(image, ax=list(axes), shrink=0.9, pad=0.01, aspect=15)
    colourbar.set_label("attention (sqrt scale)", fontsize=8)
    colourbar.ax.tick_params(labelsize=7)


def _cmap() -> Any:
    import matplotlib

    return matplotlib.colormaps["viridis"].with_extremes(bad="#d0d0d0")  # bad: keys the pattern forbids


def _sparse_ticks(ax: Axes, tokens: int) -> None:
    step = max(1, math.ceil(tokens / 4))
    ticks = list(range(0, tokens, step))
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.tick_params(labelsize=7, length=2)


def _grid_title(maps_by_label: Mapping[str, AttentionMaps]) -> str:
    first = next(iter(maps_by_label.values()))
    plans = ", ".join(maps_by_label)
    texts = f"mean over heads and {first.n_texts} texts of {first.tokens} tokens"
    return f"{first.model or 'model'}: attention maps, {texts} (grey: masked by the pattern)\n{plans}"


def plot_sink_scores(
    scores_by_label: Mapping[str, Sequence[SinkScore]],
    path: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """Bars of the sink score of every layer call, grouped by layer, with the uniform expectation.

    Each label is one colour; a label whose plan runs a layer more than once (INTER/EXTRA branches,
    EXTEND repeats) gets one series per branch. A black tick on each bar marks the call's uniform
    expectation; calls whose pattern hides token 0 (uniform 0) are marked "hidden".

    Args:
        scores_by_label: e.g. ``{"baseline": sink_scores(...), "mask0-bidir:k=5": ...}``.
        path: the PNG file to write (its folder must exist).
        title: the figure title; a generic one by default.

    Returns:
        ``path`` as a Path.
    """
    figure_class = _figure_class()
    if not scores_by_label:
        raise NosinkError("nothing to plot: scores_by_label is empty")
    series = _series(scores_by_label)  # name -> scores, one call per layer
    positions, width = _bar_positions(series)  # name -> x of each bar
    n_layers = len({s.layer for scores in series.values() for s in scores})
    size = (min(24.0, max(6.0, 0.28 * sum(map(len, series.values())) + 0.3 * n_layers + 3.0)), 4.2)
    figure = figure_class(figsize=size, layout="constrained")
    ax = figure.subplots()
    for name, scores in series.items():
        xs = positions[name]  # [n_calls]
        bars = ax.bar(xs, [s.score for s in scores], width=width * 0.9, label=name)
        ax.hlines([s.uniform for s in scores], xs - width / 2, xs + width / 2, colors="black", linewidth=1.5)
        colour = bars.patches[0].get_facecolor()  # a hidden call has no visible bar: write its label in its colour
        for x in xs[[s.uniform == 0 for s in scores]]:
            ax.text(x, 0.005, "hidden", rotation=90, ha="center", va="bottom", fontsize=7, color=colour)
    ax.plot([], [], color="black", linewidth=1.5, label="uniform expectation")  # one legend entry for the ticks
    layers = sorted({s.layer for scores in series.values() for s in scores})
    ax.set_xticks(layers, [str(layer) for layer in layers])
    ax.set_xlabel("layer")
    ax.set_ylabel("mean attention on token 0 (rows i ≥ 1)")
    top = max(s.score for scores in series.values() for s in scores)
    ax.set_ylim(0, max(top, *(s.uniform for scores in series.values() for s in scores), 0.05) * 1.12)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or "Attention on token 0 per layer vs. the uniform expectation", fontsize=11)
    return _save(figure, path)


def _series(scores_by_label: Mapping[str, Sequence[SinkScore]]) -> dict[str, list[SinkScore]]:
    """Split each label's calls so that every series has at most one call per layer."""
    series: dict[str, list[SinkScore]] = {}
    for label, scores in scores_by_label.items():
        seen: dict[tuple[int, str], int] = {}
        for s in scores:
            repeat = seen.get((s.layer, s.branch), 0)
            seen[(s.layer, s.branch)] = repeat + 1
            parts = ([] if s.branch == "main" else [s.branch]) + ([f"#{repeat + 1}"] if repeat else [])
            series.setdefault(f"{label} [{' '.join(parts)}]" if parts else label, []).append(s)
    return series


def _bar_positions(series: Mapping[str, Sequence[SinkScore]]) -> tuple[dict[str, np.ndarray], float]:
    """x of every bar: the series present at a layer sit side by side, centred on the layer."""
    at_layer: dict[int, list[str]] = {}
    for name, scores in series.items():
        for s in scores:
            at_layer.setdefault(s.layer, []).append(name)
    width = 0.8 / max(len(names) for names in at_layer.values())
    positions = {
        name: np.array(
            [s.layer + (at_layer[s.layer].index(name) - (len(at_layer[s.layer]) - 1) / 2) * width for s in scores]
        )
        for name, scores in series.items()
    }
    return positions, width


def _figure_class() -> type[Figure]:
    """matplotlib's Figure (no pyplot, so no display and no global backend state)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise NosinkError(_INSTALL) from None
    return Figure


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    figure.savefig(path, dpi=110)
    return path
