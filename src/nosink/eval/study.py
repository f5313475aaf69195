"""The paper's study on one model: select k and k0 on validation data, score the test set once.

``nosink study --model M --data ../shared/data --out study/M`` runs these parts, each written to
``OUT/<part>.json`` (a run record) and, for sweeps, ``OUT/<part>.png`` (score against k):

- ``sinks``: per-layer and per-head sink ratios of the unchanged model, and attention maps of the
  baseline against a no-sink plan;
- ``sts``: SICK-R, plans selected on SICK trial, scored on SICK test;
- ``emotion`` and ``banking77``: MTEB classification, selected on validation data (Emotion's val;
  a held-out part of Banking77's train), scored on test;
- ``domain``: the paper's domain protocol (80/20, SMOTE) on Emotion's test texts, with the plan
  that ``emotion`` selected;
- ``wnut17`` and ``wikiann``: the linear NER probe on per-token states (dev → test): plans selected
  by cross-validation on dev, then a probe trained on the whole dev set is scored on test.

Every choice is made on validation data only; the test set is scored once, for the baseline, the
selected plan and the best plan on validation of each core family (inplace-bidir, inplace-back,
mask0-bidir, mask0&bidir). Parts whose record exists with the
same settings are skipped, so an interrupted study resumes; a record made with other settings is
refused rather than mixed in. The cost estimate is printed before any part starts.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nosink.encoder import Encoder
from nosink.errors import NosinkError
from nosink.eval.classification import classification_scores, domain_scores, mteb_undersample
from nosink.eval.conll import load_conll
from nosink.eval.data import LabeledTexts, load_labeled, load_pairs
from nosink.eval.ner import TokenFeatures, score_probe, train_probe
from nosink.eval.results import model_name, package_versions
from nosink.eval.sources import file_digest
from nosink.eval.sts import sts_scores
from nosink.eval.sweep import (
    ClassificationSweepTask,
    NerSweepTask,
    StsSweepTask,
    SweepResult,
    TokenSweepTask,
    family_plans,
    plot_sweep,
    run_sweep,
    sweep_features,
    sweep_token_features,
)
from nosink.outputs import write_text_atomic
from nosink.plan import Plan

PARTS = ("sinks", "sts", "emotion", "banking77", "domain", "wnut17", "wikiann")
NER_PARTS = ("wnut17", "wikiann")
STS_INSTRUCTION = "Retrieve semantically similar text."
# The paper's classification instructions (its Table 3, as in mteb_adapter.PAPER_INSTRUCTIONS).
EMOTION_INSTRUCTION = "Classify the emotion expressed in the given Twitter message into one of the six emotions"
BANKING_INSTRUCTION = "Given a online banking query, find the corresponding intents"
STS_FAMILIES = (
    "inplace-bidir",
    "inplace-back",
    "mask0-bidir",
    "mask0-for",
    "mask0-all",
    "mask0&bidir",
    "mask1-bidir",
    "mask3-bidir",
    "inter-bidir",
    "inter-back",
    "extra-bidir",
    "extend-bidir",
)
CORE_FAMILIES = ("inplace-bidir", "inplace-back", "mask0-bidir", "mask0&bidir")
_K_FRACTIONS = (0.1, 0.25, 0.5, 0.75, 1.0)


def default_ks(num_layers: int) -> list[int]:
    """Five values of k from near 0 to L (about L/10, L/4, L/2, 3L/4 and L): a coarse grid that 2 cores can afford."""
    return sorted({max(1, round(num_layers * fraction)) for fraction in _K_FRACTIONS})


@dataclass(frozen=True)
class StudySizes:
    """How much data each part uses: the cuts that make the study fit a few hours on 2 CPU cores."""

    sts_val_pairs: int = 200  # of SICK trial's 500
    sts_test_pairs: int = 1000  # of SICK test's 4,927
    emotion_select_train_per_label: int = 16
    emotion_val: int = 300  # of Emotion val's 2,000
    banking_select_train_per_label: int = 8
    banking_select_val_per_label: int = 3
    k0s_sts: tuple[int, ...] = (1, 2)
    k0s_classification: tuple[int, ...] = (1, 2)
    select_experiments: int = 3  # MTEB runs 10 on test; on a selection set already 8 per label, 3 reshuffles
    sink_texts: int = 64
    sink_tokens: int = 16


@dataclass(frozen=True)
class NerSizes:
    """The NER parts' data and selection: a part of their own, so that adding them left earlier records valid."""

    folds: int = 4  # cross-validation on dev chooses the plan
    wnut17_dev: int | None = None  # all 1,009 sentences
    wnut17_test: int | None = None  # all 1,287
    wikiann_dev: int | None = 2000  # of 10,000
    wikiann_test: int | None = 2000  # of 10,000
    k0s: tuple[int, ...] = (1, 2)


@dataclass(frozen=True)
class StudyConfig:
    """One study: the model folder, the data folder, where records go, and what to run."""

    model: str
    data: Path
    out: Path
    parts: tuple[str, ...] = PARTS
    ks: tuple[int, ...] | None = None  # default: default_ks(L)
    sizes: StudySizes = field(default_factory=StudySizes)
    ner: NerSizes = field(default_factory=NerSizes)
    batch_size: int = 32

    def settings(self, part: str, num_layers: int) -> dict[str, Any]:
        """What a part's record must match to be reused."""
        settings = {"part": part, "ks": list(self.ks or default_ks(num_layers)), "sizes": asdict(self.sizes)}
        if part in NER_PARTS:
            settings["ner"] = asdict(self.ner)
        return json.loads(json.dumps(settings))  # as a record stores them: tuples become lists


# -------------------------------------------------------------------- running


def run_study(config: StudyConfig, *, say: Callable[[str], None] = print) -> dict[str, Path]:
    """Run every part of ``config`` not already recorded; returns each part's record path."""
    unknown = sorted(set(config.parts) - set(PARTS))
    if unknown:
        raise NosinkError(f"unknown study parts {unknown}; use some of {', '.join(PARTS)}")
    config.out.mkdir(parents=True, exist_ok=True)
    encoder = Encoder.from_pretrained(config.model)
    ks = list(config.ks or default_ks(encoder.num_layers))
    pending = [part for part in config.parts if not _done(config, part, encoder.num_layers)]
    _print_estimate(config, encoder, ks, pending, say)
    paths = {}
    for part in config.parts:
        path = config.out / f"{part}.json"
        if part not in pending:
            say(f"{part}: recorded earlier in {path}, skipped")
        else:
            started = time.perf_counter()
            body = _PARTS[part](config, encoder, ks, say)
            _write_record(config, encoder, part, body, time.perf_counter() - started)
            say(f"{part}: done in {time.perf_counter() - started:.0f} s, {path}")
        paths[part] = path
    return paths


def _done(config: StudyConfig, part: str, num_layers: int) -> bool:
    path = config.out / f"{part}.json"
    if not path.exists():
        return False
    recorded = json.loads(path.read_text(encoding="utf-8")).get("settings")
    if recorded != config.settings(part, num_layers):
        raise NosinkError(f"{path} was made with other settings; remove it to redo that part, or use another --out")
    return True


def _write_record(config: StudyConfig, encoder: Encoder, part: str, body: dict[str, Any], seconds: float) -> None:
    record = {
        "part": part,
        "settings": config.settings(part, encoder.num_layers),
        "model": _model_description(encoder),
        "seconds": round(seconds, 1),
        **body,
        "versions": package_versions(),
    }
    write_text_atomic(config.out / f"{part}.json", json.dumps(record, indent=2, default=_jsonable) + "\n")


def _model_description(encoder: Encoder) -> dict[str, Any]:
    folder = Path(encoder.name)
    convert = folder / "nosink-convert.json"
    source = json.loads(convert.read_text()) if convert.is_file() else {}
    return {
        "name": model_name(encoder.name),
        "gguf": source.get("gguf"),
        "gguf_sha256": source.get("sha256"),
        "layers": encoder.num_layers,
        "dtype": encoder.dtype_name,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value.tolist() if hasattr(value, "tolist") else str(value)


# -------------------------------------------------------------------- cost


def _print_estimate(
    config: StudyConfig, encoder: Encoder, ks: list[int], pending: Sequence[str], say: Callable[[str], None]
) -> None:
    """Forward passes each part needs, in units of one pass of the unchanged model, times the measured speed."""
    if not pending:
        say("every part is recorded; nothing to run")
        return
    probe = load_pairs(config.data / "sick" / "SICK_trial.txt", limit=48)
    encoder.encode(probe.texts_a[:8], instruction=STS_INSTRUCTION)  # warm-up
    started = time.perf_counter()
    encoder.encode(probe.texts_a + probe.texts_b, instruction=STS_INSTRUCTION, batch_size=config.batch_size)
    speed = 96 / (time.perf_counter() - started)  # texts per second, unchanged model
    total = 0.0
    say(f"cost estimate ({encoder.num_layers} layers, {speed:.1f} texts/s measured, k in {ks}):")
    for part in pending:
        texts, passes = _part_cost(config, encoder.num_layers, ks, part)
        seconds = texts * passes / speed
        total += seconds
        say(f"  {part:10s} {texts:6d} texts x {passes:5.1f} passes = {seconds / 60:5.1f} min")
    say(f"  total      {total / 60:.0f} min of forward passes; classifier and probe fits come on top")


def _plan_passes(plan: Plan, num_layers: int) -> float:
    """Forward passes one plan adds to a sweep: its k converted layers when it shares the causal prefix
    (single-pass plans), a whole pass plus its k extra layer calls when it runs alone (INTER/EXTRA/EXTEND)."""
    if plan.resolve(num_layers).layer_patterns is not None:
        return plan.k / num_layers
    return (num_layers + plan.k) / num_layers


def _part_cost(config: StudyConfig, num_layers: int, ks: list[int], part: str) -> tuple[int, float]:
    sizes = config.sizes
    if part == "sinks":
        return sizes.sink_texts, 4.0  # eager attention of two plans, with weights
    families, k0s = (STS_FAMILIES, sizes.k0s_sts) if part == "sts" else (CORE_FAMILIES, sizes.k0s_classification)
    k0s = config.ner.k0s if part in NER_PARTS else k0s
    plans = [plan for f in families for plan in family_plans(f, num_layers, ks=ks, k0s=k0s)]
    select = 1 + sum(_plan_passes(plan, num_layers) for plan in plans)
    test = 1 + (len(CORE_FAMILIES) + 1) * 0.6  # baseline, the selected plan and one per core family, at their k
    if part == "sts":
        return 2 * sizes.sts_val_pairs + 2 * sizes.sts_test_pairs, (
            select * 2 * sizes.sts_val_pairs + test * 2 * sizes.sts_test_pairs
        ) / (2 * sizes.sts_val_pairs + 2 * sizes.sts_test_pairs)
    if part == "emotion":
        val = 6 * sizes.emotion_select_train_per_label + sizes.emotion_val
        return val + 2500, (select * val + test * 2500) / (val + 2500)
    if part == "banking77":
        val = 77 * (sizes.banking_select_train_per_label + sizes.banking_select_val_per_label)
        return val + 7000, (select * val + test * 7000) / (val + 7000)
    if part in NER_PARTS:  # sentences counted as texts
        dev, test_count = _ner_counts(config, part)
        return dev + test_count, (select * dev + test * (dev + test_count)) / (dev + test_count)
    return 2000, 2.0  # domain: the baseline and the selected plan


def _ner_counts(config: StudyConfig, part: str) -> tuple[int, int]:
    full = {"wnut17": (1009, 1287), "wikiann": (10000, 10000)}[part]
    dev, test = (getattr(config.ner, f"{part}_{split}") for split in ("dev", "test"))
    return min(full[0], dev or full[0]), min(full[1], test or full[1])


# -------------------------------------------------------------------- parts


def _sinks(config: StudyConfig, encoder: Encoder, ks: list[int], say: Callable[[str], None]) -> dict[str, Any]:
    from nosink.eval.sink import attention_maps, head_sink_ratios, plot_attention_grid, plot_sink_scores, sink_scores

    sizes = config.sizes
    pairs = load_pairs(config.data / "sick" / "SICK_trial.txt")
    texts = pairs.texts_a + pairs.texts_b
    nosink = f"mask0-bidir:k={encoder.num_layers}"
    options = {"tokens": sizes.sink_tokens, "max_texts": sizes.sink_texts}
    maps = {plan: attention_maps(encoder.with_plan(plan), texts, **options) for plan in ("baseline", nosink)}
    scores = {plan: sink_scores(m) for plan, m in maps.items()}
    heads = head_sink_ratios(encoder, texts, **options)  # [L, H] for the unchanged model
    plot_attention_grid(maps, config.out / "attention.png")
    plot_sink_scores(scores, config.out / "sinks.png")
    _plot_head_ratios(heads, config.out / "sink-heads.png", title=f"{_model_description(encoder)['name']}")
    return {
        "data": [_file(config.data / "sick" / "SICK_trial.txt")],
        "layer_scores": {plan: s.to_json() for plan, s in scores.items()},
        "head_ratios": heads,
        "texts": maps["baseline"].n_texts,
    }


def _plot_head_ratios(ratios: np.ndarray, path: Path, *, title: str) -> None:
    """A heatmap of the per-head sink ratios [L, H] of the unchanged model (log colour scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    layers, heads = ratios.shape
    figure, axes = plt.subplots(figsize=(max(5.0, 1.2 + 0.35 * heads), 1.2 + 0.22 * layers))
    image = axes.imshow(np.clip(ratios, 0.05, None), aspect="auto", cmap="magma", norm=LogNorm(vmin=0.1, vmax=20))
    axes.set_xlabel("head")
    axes.set_ylabel("layer")
    axes.set_title(f"{title}: attention on token 0 / uniform, per head", fontsize=9)
    figure.colorbar(image, ax=axes, label="ratio (1 = uniform)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _sts(config: StudyConfig, encoder: Encoder, ks: list[int], say: Callable[[str], None]) -> dict[str, Any]:
    sizes = config.sizes
    trial, test_file = config.data / "sick" / "SICK_trial.txt", config.data / "sick" / "SICK_test_annotated.txt"
    val = load_pairs(trial, limit=sizes.sts_val_pairs)
    test = load_pairs(test_file, limit=sizes.sts_test_pairs)
    task = StsSweepTask(val.texts_a, val.texts_b, val.scores, instruction=STS_INSTRUCTION)
    sweep = _select(config, encoder, task, STS_FAMILIES, ks, sizes.k0s_sts, "sts", "SICK-R (SICK trial)", say)

    def score(features: np.ndarray) -> dict[str, float]:
        n = len(test.texts_a)
        return sts_scores(features[:n], features[n:], test.scores)

    texts = test.texts_a + test.texts_b
    features = _text_features(encoder, texts, STS_INSTRUCTION)
    results = _score_test(config, encoder, sweep, features, len(texts), score, say)
    return {"data": [_file(trial), _file(test_file)], **results}


def _emotion(config: StudyConfig, encoder: Encoder, ks: list[int], say: Callable[[str], None]) -> dict[str, Any]:
    files = [config.data / "emotion" / name for name in ("train.txt", "val.txt", "test.txt")]
    train, val, test = (load_labeled(path) for path in files)
    select_train = _per_label(train, config.sizes.emotion_select_train_per_label)
    select_val = val.select(range(min(config.sizes.emotion_val, len(val))))
    selection = (select_train, select_val, "Emotion (val)")
    return _classification_part(
        config, encoder, ks, say, "emotion", files, (train, test), selection, EMOTION_INSTRUCTION
    )


def _banking77(config: StudyConfig, encoder: Encoder, ks: list[int], say: Callable[[str], None]) -> dict[str, Any]:
    sizes = config.sizes
    files = [config.data / "banking77" / name for name in ("train.csv", "test.csv")]
    train, test = (load_labeled(path) for path in files)
    per_label = sizes.banking_select_train_per_label + sizes.banking_select_val_per_label
    held = _per_label(train, per_label)  # the selection data: a part of train, never test
    first = set(_first_per_label(held.labels, sizes.banking_select_train_per_label))
    select_train = held.select(sorted(first))
    select_val = held.select([index for index in range(len(held)) if index not in first])
    selection = (select_train, select_val, "Banking77 (held-out train)")
    return _classification_part(
        config, encoder, ks, say, "banking77", files, (train, test), selection, BANKING_INSTRUCTION
    )


def _classification_part(
    config: StudyConfig,
    encoder: Encoder,
    ks: list[int],
    say: Callable[[str], None],
    name: str,
    files: list[Path],
    splits: tuple[LabeledTexts, LabeledTexts],
    selection: tuple[LabeledTexts, LabeledTexts, str],
    instruction: str,
) -> dict[str, Any]:
    """Select on ``selection`` (select_train, select_val, title); score ``splits`` (train, test) as MTEB does."""
    select_train, select_val, title = selection
    task = ClassificationSweepTask(
        select_train.texts,
        select_train.labels,
        select_val.texts,
        select_val.labels,
        instruction=instruction,
        n_experiments=config.sizes.select_experiments,
    )
    sweep = _select(config, encoder, task, CORE_FAMILIES, ks, config.sizes.k0s_classification, name, title, say)
    results = _classification_test(config, encoder, sweep, *splits, instruction, say)
    return {"data": [_file(path) for path in files], **results}


def _domain(config: StudyConfig, encoder: Encoder, ks: list[int], say: Callable[[str], None]) -> dict[str, Any]:
    emotion = config.out / "emotion.json"
    if not emotion.exists():
        raise NosinkError("the domain part uses the plan that the emotion part selects; run --parts emotion first")
    selected = json.loads(emotion.read_text(encoding="utf-8"))["selected"]
    path = config.data / "emotion" / "test.txt"
    data = load_labeled(path)
    plans = [Plan(), Plan.parse(selected)] if selected != "baseline" else [Plan()]
    say(f"domain: {len(data)} texts, plans {[str(p) for p in plans]}")
    features = sweep_features(encoder, data.texts, plans, batch_size=config.batch_size)  # no instruction (§4.1)
    test = {str(plan): domain_scores(feature, data.labels) for plan, feature in zip(plans, features, strict=True)}
    return {"data": [_file(path)], "selected": selected, "test": test}


def _wnut17(config: StudyConfig, encoder: Encoder, ks: list[int], say: Callable[[str], None]) -> dict[str, Any]:
    folder = config.data / "wnut17"
    files = (folder / "emerging.dev.conll", folder / "emerging.test.annotated")
    return _ner_part(config, encoder, ks, say, "wnut17", files, "WNUT17 (dev, cross-validated)")


def _wikiann(config: StudyConfig, encoder: Encoder, ks: list[int], say: Callable[[str], None]) -> dict[str, Any]:
    files = (config.data / "wikiann-en" / "dev", config.data / "wikiann-en" / "test")
    return _ner_part(config, encoder, ks, say, "wikiann", files, "WikiANN-en (dev, cross-validated)")


def _ner_part(
    config: StudyConfig,
    encoder: Encoder,
    ks: list[int],
    say: Callable[[str], None],
    name: str,
    files: tuple[Path, Path],
    title: str,
) -> dict[str, Any]:
    """Choose the plan by cross-validation on dev; then train one probe on all of dev and score test (×100)."""
    limits = (getattr(config.ner, f"{name}_dev"), getattr(config.ner, f"{name}_test"))
    dev, test = (load_conll(path, limit=limit) for path, limit in zip(files, limits, strict=True))
    task = NerSweepTask(dev, folds=config.ner.folds)
    sweep = _select(config, encoder, task, CORE_FAMILIES, ks, config.ner.k0s, name, title, say)

    def features(plans: list[Plan]) -> list[TokenFeatures]:
        return sweep_token_features(encoder, dev.tokens + test.tokens, plans, batch_size=config.batch_size)

    def score(features: TokenFeatures) -> dict[str, float]:
        probe = train_probe(features.select(range(len(dev))), dev.tags)
        metrics = score_probe(probe, features.select(range(len(dev), len(dev) + len(test))), test.tags)
        return {key: 100 * value if key in ("f1", "precision", "recall") else value for key, value in metrics.items()}

    results = _score_test(config, encoder, sweep, features, len(dev) + len(test), score, say)
    return {"data": [_file(path) for path in files], "sizes": {"dev": len(dev), "test": len(test)}, **results}


_PARTS = {
    "sinks": _sinks,
    "sts": _sts,
    "emotion": _emotion,
    "banking77": _banking77,
    "domain": _domain,
    "wnut17": _wnut17,
    "wikiann": _wikiann,
}


# -------------------------------------------------------------------- selection and test


def _select(
    config: StudyConfig,
    encoder: Encoder,
    task: Any,
    families: Sequence[str],
    ks: list[int],
    k0s: Sequence[int],
    name: str,
    title: str,
    say: Callable[[str], None],
) -> SweepResult:
    count = len(task.words()) if isinstance(task, TokenSweepTask) else len(task.texts())
    say(f"{name}: selecting on {count} texts, {len(families)} families, k in {ks}")
    sweep = run_sweep(encoder, task, families, ks=ks, k0s=k0s, batch_size=config.batch_size)
    plot_sweep(sweep, config.out / f"{name}.png", title=f"{_model_description(encoder)['name']}: {title}")
    return sweep


def _best_per_family(sweep: SweepResult) -> dict[str, str]:
    best: dict[str, Any] = {}
    for row in sweep.rows:
        if row.family not in best or row.score > best[row.family].score:
            best[row.family] = row
    return {family: row.plan for family, row in best.items()}


def _score_test(
    config: StudyConfig,
    encoder: Encoder,
    sweep: SweepResult,
    features_of: Callable[[list[Plan]], Sequence[Any]],
    count: int,
    score: Callable[[Any], dict[str, float]],
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Score the baseline, the selected plan and each core family's best on test, each once.

    ``features_of(plans)`` gives the test features of every plan (one shared-prefix pass over ``count`` texts).
    """
    per_family = _best_per_family(sweep)
    core = [plan for family, plan in per_family.items() if family in CORE_FAMILIES]
    plans = list(dict.fromkeys(["baseline", sweep.best, *core]))
    say(f"test: {count} texts, {len(plans)} plans (baseline, selected, best of {', '.join(CORE_FAMILIES)})")
    features = features_of([Plan.parse(p) for p in plans])
    return {
        "validation": [asdict(row) for row in sweep.rows],
        "validation_seconds": sweep.seconds,
        "selected": sweep.best,
        "best_per_family": per_family,
        "test": {plan: score(feature) for plan, feature in zip(plans, features, strict=True)},
    }


def _classification_test(
    config: StudyConfig,
    encoder: Encoder,
    sweep: SweepResult,
    train: LabeledTexts,
    test: LabeledTexts,
    instruction: str,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """MTEB's protocol on test: only the union of the 10 undersampled training sets is embedded."""
    union = sorted(set().union(*mteb_undersample(train.labels)))
    subset = train.select(union)

    def score(features: np.ndarray) -> dict[str, float]:
        full = np.zeros((len(train), features.shape[1]), dtype=np.float32)  # rows outside the union are never used
        full[union] = features[: len(union)]
        return classification_scores(full, train.labels, features[len(union) :], test.labels)

    texts = subset.texts + test.texts
    results = _score_test(config, encoder, sweep, _text_features(encoder, texts, instruction), len(texts), score, say)
    return {**results, "sizes": {"train_embedded": len(union), "test": len(test)}}


def _text_features(
    encoder: Encoder, texts: list[str], instruction: str | None
) -> Callable[[list[Plan]], list[np.ndarray]]:
    return lambda plans: sweep_features(encoder, texts, plans, instruction=instruction)


def _per_label(data: LabeledTexts, count: int) -> LabeledTexts:
    """The first ``count`` texts of every label, in file order (deterministic, no randomness)."""
    return data.select(_first_per_label(data.labels, count))


def _first_per_label(labels: Sequence[object], count: int) -> list[int]:
    taken: dict[object, int] = {}
    keep = []
    for index, label in enumerate(labels):
        if taken.get(label, 0) < count:
            taken[label] = taken.get(label, 0) + 1
            keep.append(index)
    return keep


def _file(path: Path) -> dict[str, Any]:
    return {"path": str(path), "sha256": file_digest(path)}
