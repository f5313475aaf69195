"""k/k0 sweeps: score one task for every k of a configuration family, sharing the frozen part.

The layers below the lowest converted layer are computed once per batch and shared by all plans
(:func:`nosink.runner.run_schedules`), so sweeping k = 1…L costs about one forward pass plus the
converted tops, not one forward pass per k.
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from nosink.encoder import Encoder
from nosink.errors import NosinkError
from nosink.eval.conll import TaggedSentences
from nosink.eval.ner import TokenFeatures, cross_validated_f1, token_features
from nosink.inputs import Batch
from nosink.plan import Plan
from nosink.readouts import readout_features
from nosink.recipe import Recipe
from nosink.runner import run_schedules

SWEEP_FAMILIES = (
    "inplace-bidir",
    "inplace-back",
    "mask{M}-bidir",
    "mask{M}-for",
    "mask{M}-all",
    "mask{M}&bidir",
    "inter-bidir",
    "inter-back",
    "extra-bidir",
    "extra-back",
    "extend-bidir",
    "extend-back",
    "ARCH-back&bidir",
    "ARCH-mask{M}&bidir",
)
DEFAULT_K0_GRID = (1, 2, 4)
_FAMILY_RE = re.compile(
    r"^(?:(inplace|inter|extra|extend)-(bidir|back)|(inter|extra|extend)-mask\d+|(inplace|inter|extra|extend)-back&bidir"
    r"|(inter|extra|extend)-mask\d+&bidir|mask(\d+)(-bidir|-for|-all|&bidir))(?::res=(?:\d+|none))?$",
    re.ASCII,
)


@dataclass(frozen=True)
class Segment:
    """Texts of a task that are encoded alike: one instruction (or raw prompt), optionally cut to N tokens."""

    texts: list[str]
    instruction: str | None = None
    prompt: str | None = None  # a raw prefix instead of an instruction; "" for none
    text_tokens: int | None = None  # cut each text to its first N tokens first (any template then goes around it)


class SweepTask(Protocol):
    """A task scored from features: which texts to embed, and a score for their features."""

    name: str
    main_metric: str
    instruction: str | None

    def texts(self) -> list[str]:
        """Every text to embed, in the order ``score`` expects their features.

        A task whose texts are encoded in parts (retrieval: queries with an instruction, documents without)
        also has ``segments() -> list[Segment]``; without it, every text gets ``instruction``.
        """
        ...

    def score(self, features: np.ndarray) -> dict[str, float]:
        """Metrics from the features [N, D] of ``texts()``."""
        ...


@runtime_checkable
class TokenSweepTask(Protocol):
    """A token-level task scored from per-token states: which sentences (lists of words), and a score."""

    name: str
    main_metric: str
    instruction: str | None

    def words(self) -> list[list[str]]:
        """Every sentence to encode, as words, in the order ``score`` expects their features."""
        ...

    def score(self, features: TokenFeatures) -> dict[str, float]:
        """Metrics from the token features of ``words()``."""
        ...


@dataclass
class StsSweepTask:
    """STS on pairs with gold scores: Spearman ×100 of cosine similarities (MTEB's main score)."""

    texts_a: list[str]
    texts_b: list[str]
    gold: list[float]
    instruction: str | None = "Retrieve semantically similar text."
    name: str = "sts"
    main_metric: str = "spearman"

    def texts(self) -> list[str]:
        return [*self.texts_a, *self.texts_b]

    def score(self, features: np.ndarray) -> dict[str, float]:
        from nosink.eval.sts import sts_scores

        n = len(self.texts_a)
        return sts_scores(features[:n], features[n:], self.gold)


@dataclass
class ClassificationSweepTask:
    """Logistic regression on train features, scored on the validation features (MTEB's protocol).

    Only the training texts that the protocol's undersampled experiments read are encoded (at most
    ``n_experiments`` x 8 per label), so a large training split costs no more than a small one.
    """

    train_texts: list[str]
    train_labels: list[str]
    val_texts: list[str]
    val_labels: list[str]
    instruction: str | None = None
    n_experiments: int = 10  # MTEB's protocol: 10 experiments of 8 training examples per label
    name: str = "classification"
    main_metric: str = "accuracy"
    read: list[int] = field(init=False, repr=False)  # the training rows some experiment samples

    def __post_init__(self) -> None:
        from nosink.eval.classification import mteb_undersample

        experiments = mteb_undersample(self.train_labels, n_experiments=self.n_experiments)
        self.read = sorted({index for chosen in experiments for index in chosen})

    def texts(self) -> list[str]:
        return [*(self.train_texts[i] for i in self.read), *self.val_texts]

    def score(self, features: np.ndarray) -> dict[str, float]:
        from nosink.eval.classification import classification_scores

        n = len(self.read)
        train = np.zeros((len(self.train_texts), features.shape[1]), dtype=features.dtype)  # [N_train, D]
        train[self.read] = features[:n]  # rows no experiment samples stay zero and are never read
        return classification_scores(
            train, self.train_labels, features[n:], self.val_labels, n_experiments=self.n_experiments
        )


@dataclass
class NerSweepTask:
    """The linear NER probe, cross-validated: entity F1 ×100 averaged over ``folds`` contiguous folds.

    Each fold's probe is trained on the other folds' sentences with :func:`~nosink.eval.ner.train_probe`'s
    defaults and scored on the fold (first-subword labels, word-level seqeval).
    """

    sentences: TaggedSentences
    folds: int = 4
    instruction: str | None = None  # none in the paper
    name: str = "ner"
    main_metric: str = "f1"

    def words(self) -> list[list[str]]:
        return self.sentences.tokens

    def score(self, features: TokenFeatures) -> dict[str, float]:
        return cross_validated_f1(features, self.sentences.tags, folds=self.folds)


@dataclass
class SweepRow:
    """One plan's score."""

    family: str
    plan: str
    k: int
    k0: int | None
    metrics: dict[str, float]
    score: float


@dataclass
class SweepResult:
    """Every plan's score, the best plan, and the time it took."""

    task: str
    main_metric: str
    rows: list[SweepRow]
    best: str
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**asdict(self), "rows": [asdict(row) for row in self.rows]}

    def write_csv(self, path: str | Path) -> None:
        """family, plan, k, k0, score; plan strings with commas are quoted (RFC 4180)."""
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["family", "plan", "k", "k0", "score"])
            for r in self.rows:
                writer.writerow([r.family, r.plan, r.k, "" if r.k0 is None else r.k0, f"{r.score:.6f}"])


def check_family(family: str) -> None:
    """A clear error for a name that is not a sweepable family (checked before any model loads)."""
    if _FAMILY_RE.match(family) is None:
        known = ", ".join(SWEEP_FAMILIES)
        raise NosinkError(
            f"unknown sweep family {family!r}; use one of {known} (M = a sink index, e.g. mask0; ARCH = inplace, "
            "inter, extra or extend; add :res=R or :res=none for the released code's reference mode)"
        )


def family_plans(
    family: str, num_layers: int, *, ks: Sequence[int] | None = None, k0s: Sequence[int] | None = None
) -> list[Plan]:
    """Every plan of one configuration family: k over ``ks`` (default 1…L), and k0 over ``k0s`` for ``&bidir``.

    ``family`` is a plan name without parameters: ``inplace-bidir``, ``mask0-bidir``, ``mask0&bidir``, …,
    optionally with ``:res=R`` (reference mode, e.g. ``mask0&bidir:res=3``). For the ``ARCH-X&bidir``
    families k0 stays below k (k0 = k is the family ``ARCH-X`` itself).
    """
    check_family(family)
    name, _, res = family.partition(":")
    suffix = f",{res}" if res else ""
    ks = list(ks) if ks is not None else list(range(1, num_layers + 1))
    bad = [k for k in ks if not 1 <= k <= num_layers]
    if bad:
        raise NosinkError(f"k values {bad} are outside 1..{num_layers} for this model")
    if not name.endswith("&bidir"):
        return [Plan.parse(f"{name}:k={k}{suffix}") for k in ks]
    grid = list(k0s) if k0s is not None else list(DEFAULT_K0_GRID)
    below = 0 if name.startswith("mask") else 1  # ARCH-X&bidir with k0 = k would be ARCH-X
    plans = [Plan.parse(f"{name}:k={k},k0={k0}{suffix}") for k in ks for k0 in grid if 1 <= k0 <= k - below]
    if not plans:
        raise NosinkError(f"{family} has no plan for k in {ks} and k0 in {grid} (it needs 1 <= k0 < k)")
    return plans


@torch.inference_mode()
def sweep_features(
    encoder: Encoder,
    texts: Sequence[str],
    plans: Sequence[Plan],
    *,
    instruction: str | None = None,
    batch_size: int | None = None,
    show_progress_bar: bool | None = None,
) -> list[np.ndarray]:
    """Pooled features [N, D] of ``texts`` under every plan, equal to ``encoder.with_plan(p).encode(texts)``."""
    options = {"instruction": instruction, "batch_size": batch_size, "show_progress_bar": show_progress_bar}
    return [per_plan[0] for per_plan in sweep_readouts(encoder, texts, plans, [encoder.recipe], **options)]


def sweep_readouts(
    encoder: Encoder,
    texts: Sequence[str],
    plans: Sequence[Plan],
    recipes: Sequence[Recipe | str],
    *,
    instruction: str | None = None,
    batch_size: int | None = None,
    show_progress_bar: bool | None = None,
) -> list[list[np.ndarray]]:
    """Pooled features [N, D] of ``texts`` under every plan and every recipe, from one shared-prefix pass per batch.

    ``result[p][r]`` equals ``encoder.with_plan(plans[p]).with_recipe(recipes[r]).encode(texts)``. The
    recipes may differ in their layers and norm only (one tokenization, one pooling): reading every
    layer costs no more layer calls than reading the deepest one (:func:`nosink.readouts.readout_features`).
    """
    options = {"instruction": instruction, "batch_size": batch_size, "show_progress_bar": show_progress_bar}
    return readout_features(encoder, texts, plans, recipes, **options)[0]


@torch.inference_mode()
def sweep_token_features(
    encoder: Encoder,
    sentences: Sequence[Sequence[str]],
    plans: Sequence[Plan],
    *,
    instruction: str | None = None,
    batch_size: int | None = None,
    show_progress_bar: bool | None = None,
) -> list[TokenFeatures]:
    """Token states of sentences (lists of words) under every plan, equal to
    ``ner_features(encoder.with_plan(p), sentences)``; the causal prefix is computed once per batch."""
    schedules = [plan.resolve(encoder.num_layers) for plan in plans]
    words = [list(sentence) for sentence in sentences]

    def run(batch: Batch) -> list[torch.Tensor]:
        return run_schedules(
            encoder.base, encoder.family, schedules, batch.input_ids, batch.attention_mask, recipe=encoder.recipe
        )

    per_plan = encoder.encode_tokens_with(
        words,
        run=run,
        instruction=instruction,
        batch_size=batch_size,
        show_progress_bar=show_progress_bar,
        description=f"token sweep ({len(plans)} plans)",
    )
    return [token_features(encodings, words) for encodings in per_plan]


def task_segments(task: SweepTask) -> list[Segment]:
    """The task's segments; one segment of every text with the task's instruction when it defines none."""
    segments = getattr(task, "segments", None)
    return segments() if callable(segments) else [Segment(task.texts(), task.instruction)]


def cut_texts(encoder: Encoder, texts: Sequence[str], tokens: int) -> list[str]:
    """Each text cut after its first ``tokens`` tokens (by the encoder's tokenizer, no special tokens): the
    longest prefix of the text those tokens cover. Needs a fast tokenizer (character offsets)."""
    if not getattr(encoder.tokenizer, "is_fast", False):
        raise NosinkError("cutting texts by tokens needs a fast tokenizer (character offsets)")
    encoded = encoder.tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    return [
        text if len(offsets) <= tokens else text[: offsets[tokens - 1][1]]
        for text, offsets in zip(texts, encoded["offset_mapping"], strict=True)
    ]


def segment_readouts(
    encoder: Encoder,
    task: SweepTask,
    plans: Sequence[Plan],
    recipes: Sequence[Recipe | str],
    *,
    batch_size: int | None = None,
    show_progress_bar: bool | None = None,
) -> list[list[np.ndarray]]:
    """:func:`sweep_readouts` of every segment of ``task`` (its own instruction or prompt, its texts cut if it says
    so), joined in order: ``result[p][r]`` holds the features [N, D] of ``task.texts()``."""
    parts = []
    for segment in task_segments(task):
        texts = segment.texts if segment.text_tokens is None else cut_texts(encoder, segment.texts, segment.text_tokens)
        options = {"instruction": segment.instruction, "prompt": segment.prompt, "batch_size": batch_size}
        options |= {"show_progress_bar": show_progress_bar}
        parts.append(readout_features(encoder, texts, plans, recipes, **options)[0])
    return [[np.concatenate([part[p][r] for part in parts]) for r in range(len(recipes))] for p in range(len(plans))]


def task_features(
    encoder: Encoder,
    task: SweepTask | TokenSweepTask,
    plans: Sequence[Plan],
    *,
    batch_size: int | None = None,
    show_progress_bar: bool | None = None,
) -> list[np.ndarray] | list[TokenFeatures]:
    """The features ``task.score`` takes, under every plan: pooled for a text task, per token for a token task."""
    options = {"instruction": task.instruction, "batch_size": batch_size, "show_progress_bar": show_progress_bar}
    if isinstance(task, TokenSweepTask):
        return sweep_token_features(encoder, task.words(), plans, **options)
    readouts = segment_readouts(
        encoder, task, plans, [encoder.recipe], batch_size=batch_size, show_progress_bar=show_progress_bar
    )
    return [per_plan[0] for per_plan in readouts]


def run_sweep(
    encoder: Encoder,
    task: SweepTask | TokenSweepTask,
    families: Sequence[str],
    *,
    ks: Sequence[int] | None = None,
    k0s: Sequence[int] | None = None,
    batch_size: int | None = None,
    show_progress_bar: bool | None = None,
) -> SweepResult:
    """Score ``task`` for the baseline and every plan of every family; the best has the highest main metric.

    The baseline (k = 0, the unchanged model) is always scored, so "convert nothing" can win; for
    reference-mode families (``:res=R``) so is ``baseline:res=R``, the released code's NONE, which its
    residual alone already changes.
    """
    plans = [("baseline", Plan())]
    for res in sorted({family.partition(":")[2] for family in families} - {""}):
        plans.append((f"baseline:{res}", Plan.parse(f"baseline:{res}")))
    plans += [
        (family, plan) for family in families for plan in family_plans(family, encoder.num_layers, ks=ks, k0s=k0s)
    ]
    start = time.perf_counter()
    features = task_features(
        encoder, task, [plan for _, plan in plans], batch_size=batch_size, show_progress_bar=show_progress_bar
    )
    encoded = time.perf_counter()
    rows = []
    for (family, plan), feature in zip(plans, features, strict=True):
        metrics = task.score(feature)
        k0 = plan.k0 if family.partition(":")[0].endswith("&bidir") else None
        rows.append(SweepRow(family, str(plan), plan.k, k0, metrics, float(metrics[task.main_metric])))
    best = max(rows, key=lambda row: row.score).plan
    seconds = {"features": encoded - start, "scoring": time.perf_counter() - encoded}
    return SweepResult(task.name, task.main_metric, rows, best, seconds)


def plot_sweep(result: SweepResult, path: str | Path, *, title: str | None = None) -> None:
    """Score vs k, one line per family (and per k0 for ``&bidir``), like the paper's Figures 2, 4 and 6."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise NosinkError('plotting needs matplotlib: pip install "nosink[eval]"') from None
    lines: dict[str, list[SweepRow]] = {}
    baselines = [row for row in result.rows if row.family.partition(":")[0] == "baseline"]
    for row in result.rows:
        if row in baselines:
            continue
        label = row.family if row.k0 is None else f"{row.family} (k0={row.k0})"
        lines.setdefault(label, []).append(row)
    figure, axes = plt.subplots(figsize=(7, 4.5))
    markers = "osD^vPX*"  # distinct markers, so that overlapping families stay visible
    for index, (label, rows) in enumerate(lines.items()):
        rows = sorted(rows, key=lambda r: r.k)
        marker = markers[index % len(markers)]
        axes.plot([r.k for r in rows], [r.score for r in rows], marker=marker, markersize=5, alpha=0.85, label=label)
    for baseline, style in zip(baselines, ["--", ":", "-.", (0, (1, 4))], strict=False):
        name = baseline.plan if baseline.plan != "baseline" else "baseline (k=0)"
        axes.axhline(baseline.score, color="grey", linestyle=style, label=f"{name}: {baseline.score:.2f}")
    best = next(r for r in result.rows if r.plan == result.best)
    axes.scatter(
        [best.k], [best.score], s=160, facecolors="none", edgecolors="black", zorder=5, label=f"best: {best.plan}"
    )
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("k (number of converted layers)")
    axes.set_ylabel(f"{result.task} {result.main_metric}")
    axes.set_title(title or f"{result.task}: {result.main_metric} vs k")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
