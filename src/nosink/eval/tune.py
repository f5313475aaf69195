"""``nosink tune``: search plans x prompts x layers on validation data, within a time budget.

For each prompt (a recipe's ``prompt`` and ``pool``), one shared-prefix pass per batch gives the
features of every plan at every layer (:func:`~nosink.eval.sweep.sweep_readouts`), so the layer
axis costs no extra layer call and the plan axis costs only the converted layers. Every
(plan, recipe) is scored with the task's validation protocol; the best one is the winner, and
the test split, when given, is scored once: for the baseline and for the winner.

Resumable: each finished prompt's rows are appended to ``OUT/rows.jsonl``; a rerun with the same
settings skips them. The budget is checked before each prompt starts (the first always runs):
prompts not begun in time are reported as skipped, never half-scored.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from nosink.encoder import Encoder
from nosink.errors import NosinkError
from nosink.eval.results import model_name
from nosink.eval.sweep import SweepTask, family_plans, segment_readouts
from nosink.outputs import write_text_atomic
from nosink.plan import Plan
from nosink.recipe import Recipe

DEFAULT_FAMILIES = ("inplace-bidir", "mask0-bidir", "mask0&bidir")
DEFAULT_PROMPTS = ("default", "prompt=prompteol", "prompt=echo")


@runtime_checkable
class EncoderScoredTask(Protocol):
    """A test task that scores whole encoders itself (retrieval: documents cached, plans sharing a pass)."""

    name: str

    def score_encoders(self, encoders: dict[str, Encoder], *, batch_size: int | None) -> dict[str, dict]: ...


@dataclass(frozen=True)
class TuneSpace:
    """What ``tune`` searches: single-pass plan families at ``ks`` (and ``k0s``), prompts, and layers."""

    families: tuple[str, ...] = DEFAULT_FAMILIES
    ks: tuple[int, ...] | None = None  # default: about L/10, L/4, L/2, 3L/4 and L
    k0s: tuple[int, ...] = (1, 2)
    prompts: tuple[str, ...] = DEFAULT_PROMPTS  # recipe strings without a layer: prompt and pool only
    layers: tuple[int, ...] | None = None  # layer=j values (negative from the top); default: every layer 1..L

    def plans(self, num_layers: int) -> list[Plan]:
        """The baseline and every plan of the families; refuses branched ones (their layers cannot be read)."""
        from nosink.eval.study import default_ks

        ks = list(self.ks or default_ks(num_layers))
        plans = [Plan()] + [p for f in self.families for p in family_plans(f, num_layers, ks=ks, k0s=self.k0s)]
        branched = [str(p) for p in plans if p.resolve(num_layers).layer_patterns is None]
        if branched:
            raise NosinkError(f"tune reads every layer, which branched plans do not define: {branched[:3]}")
        return list(dict.fromkeys(plans))

    def recipes(self, prompt: str, num_layers: int) -> list[Recipe]:
        """One recipe per layer under ``prompt``."""
        base = Recipe.coerce(prompt)
        if not base.reads_last_layer:
            raise NosinkError(f"a tune prompt holds only prompt= and pool= settings; the layers come apart: {prompt!r}")
        layers = self.layers or tuple(range(1, num_layers + 1))
        recipes = [Recipe(layer, None, True, base.prompt, base.pool) for layer in layers]
        for recipe in recipes:
            recipe.depths(num_layers)  # a layer outside the model fails here, before any work
        return recipes


@dataclass
class TuneRow:
    """One (plan, recipe) scored on validation."""

    prompt: str
    plan: str
    recipe: str
    layer: int  # the depth read out, 1 … L
    score: float
    metrics: dict[str, float]


@dataclass
class TuneResult:
    """Every row, the winner, its test score (if a test split was given), and what was skipped."""

    task: str
    main_metric: str
    rows: list[TuneRow]
    winner: TuneRow
    test: dict[str, dict[str, float]] = field(default_factory=dict)  # "baseline" and "winner" -> metrics
    skipped_prompts: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # per prompt, "test"

    def best(self, **where: Any) -> TuneRow:
        """The best row among those matching ``where`` (e.g. ``prompt="default"``, ``plan="baseline"``)."""
        rows = [r for r in self.rows if all(getattr(r, k) == v for k, v in where.items())]
        if not rows:
            raise NosinkError(f"no tune row matches {where}")
        return max(rows, key=lambda r: r.score)


def tune(
    encoder: Encoder,
    task: SweepTask,
    *,
    space: TuneSpace | None = None,
    out: str | Path,
    budget_s: float | None = None,
    test: SweepTask | EncoderScoredTask | None = None,
    test_plans: tuple[str, ...] = (),
    batch_size: int | None = None,
    say: Callable[[str], None] = print,
) -> TuneResult:
    """Search ``space`` on ``task`` (validation); write ``rows.jsonl``, ``table.csv``, ``winner.json``, ``tune.png``.

    Args:
        encoder: The model; its own plan and recipe are ignored (the space sets them).
        task: Validation task (:class:`~nosink.eval.sweep.StsSweepTask` or ``ClassificationSweepTask``).
        space: What to search; default :class:`TuneSpace`.
        out: Folder for the results; an earlier run's rows with the same settings are reused.
        budget_s: Start no new prompt after this many seconds (None: no limit); the first always runs.
        test: Test task, scored once for the baseline and the winner.
        test_plans: More plans (default recipe) scored on the test task beside them, e.g. a recommended one.
        batch_size: Texts per forward pass.
        say: Where progress lines go.
    """
    space = space or TuneSpace()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plans = space.plans(encoder.num_layers)
    settings = {"task": task.name, "space": asdict(space), "texts": len(task.texts()), "model": encoder.name}
    settings = json.loads(json.dumps(settings))
    rows, done = _resume(out, settings)
    started, seconds, skipped = time.perf_counter(), {}, []
    say(f"tune: {len(plans)} plans x {len(space.prompts)} prompts x every layer on {len(task.texts())} texts")
    for prompt in space.prompts:
        if prompt in done:
            say(f"  {prompt}: recorded earlier, skipped")
            continue
        if budget_s is not None and (rows or seconds) and time.perf_counter() - started > budget_s:
            skipped.append(prompt)
            continue
        began = time.perf_counter()
        new_rows = _score_prompt(encoder, task, plans, prompt, space, batch_size)
        seconds[prompt] = time.perf_counter() - began
        rows += new_rows
        _append(out, settings, prompt, new_rows)
        best = max(new_rows, key=lambda r: r.score)
        say(f"  {prompt}: best {best.score:.2f} ({best.plan}, {best.recipe}) in {seconds[prompt]:.0f} s")
    if skipped:
        say(f"  out of budget: not started {skipped}; rerun with a larger --budget-min to add them")
    winner = max(rows, key=lambda r: r.score)
    result = TuneResult(task.name, task.main_metric, rows, winner, skipped_prompts=skipped, seconds=seconds)
    if test is not None:
        began = time.perf_counter()
        result.test = _score_test(encoder, test, winner, batch_size, test_plans)
        seconds["test"] = time.perf_counter() - began
    _write_outputs(out, result, encoder)
    return result


def _score_prompt(
    encoder: Encoder, task: SweepTask, plans: list[Plan], prompt: str, space: TuneSpace, batch_size: int | None
) -> list[TuneRow]:
    recipes = space.recipes(prompt, encoder.num_layers)
    features = segment_readouts(encoder, task, plans, recipes, batch_size=batch_size)
    rows = []
    for plan, per_recipe in zip(plans, features, strict=True):
        for recipe, feature in zip(recipes, per_recipe, strict=True):
            metrics = task.score(feature)
            score = float(metrics[task.main_metric])
            depth = recipe.depths(encoder.num_layers)[0]
            rows.append(TuneRow(prompt, str(plan), str(recipe), depth, score, metrics))
    return rows


def _score_test(
    encoder: Encoder,
    test: SweepTask | EncoderScoredTask,
    winner: TuneRow,
    batch_size: int | None,
    extra_plans: tuple[str, ...] = (),
) -> dict[str, dict]:
    cases = {"baseline": (Plan(), "default"), "winner": (Plan.parse(winner.plan), winner.recipe)}
    cases |= {plan: (Plan.parse(plan), "default") for plan in extra_plans}
    if isinstance(test, EncoderScoredTask):
        encoders = {name: encoder.with_plan(plan, recipe=recipe) for name, (plan, recipe) in cases.items()}
        return test.score_encoders(encoders, batch_size=batch_size)
    scored = {}
    for name, (plan, recipe) in cases.items():
        features = segment_readouts(encoder, test, [plan], [recipe], batch_size=batch_size)
        scored[name] = test.score(features[0][0])
    return scored


def _resume(out: Path, settings: dict[str, Any]) -> tuple[list[TuneRow], set[str]]:
    path = out / "rows.jsonl"
    if not path.exists():
        return [], set()
    rows, done = [], set()
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if entry["settings"] != settings:
            raise NosinkError(f"{path} was made with other settings; remove it to start again, or use another --out")
        done.add(entry["prompt"])
        rows += [TuneRow(**row) for row in entry["rows"]]
    return rows, done


def _append(out: Path, settings: dict[str, Any], prompt: str, rows: list[TuneRow]) -> None:
    path = out / "rows.jsonl"
    before = path.read_text(encoding="utf-8") if path.exists() else ""
    line = json.dumps({"settings": settings, "prompt": prompt, "rows": [asdict(r) for r in rows]})
    write_text_atomic(path, before + line + "\n")


def _write_outputs(out: Path, result: TuneResult, encoder: Encoder) -> None:
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["prompt", "plan", "recipe", "layer", "score"])
    writer.writerows([r.prompt, r.plan, r.recipe, r.layer, f"{r.score:.6f}"] for r in result.rows)
    write_text_atomic(out / "table.csv", table.getvalue())
    winner = {"plan": result.winner.plan, "recipe": result.winner.recipe, "validation": result.winner.score}
    summary = {**winner, "task": result.task, "metric": result.main_metric, "test": result.test}
    summary |= {"skipped_prompts": result.skipped_prompts, "seconds": result.seconds, "model": encoder.name}
    write_text_atomic(out / "winner.json", json.dumps(summary, indent=2) + "\n")
    _plot(result, out / "tune.png", title=f"{model_name(encoder.name)}: {result.task} {result.main_metric}")


def _plot(result: TuneResult, path: Path, *, title: str) -> None:
    """Score against layer: for each prompt, the baseline and that prompt's best plan."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for prompt in dict.fromkeys(r.prompt for r in result.rows):
        best_plan = result.best(prompt=prompt).plan
        for plan, style in dict.fromkeys([("baseline", "--"), (best_plan, "-")]):
            rows = sorted((r for r in result.rows if r.prompt == prompt and r.plan == plan), key=lambda r: r.layer)
            label = f"{prompt} / {plan}"
            axes.plot([r.layer for r in rows], [r.score for r in rows], linestyle=style, marker="o", ms=3, label=label)
    axes.scatter([result.winner.layer], [result.winner.score], s=160, facecolors="none", edgecolors="black", zorder=5)
    axes.set_xlabel("layer read out (j)")
    axes.set_ylabel(f"{result.task} {result.main_metric} (validation)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
