"""Running MTEB: the paper's 15 tasks (:data:`PAPER15`) or any other MTEB tasks, for any embedder.

:func:`run_mteb` wraps the embedder in :class:`~nosink.eval.mteb_adapter.NosinkMTEBModel` (which
picks the paper's instruction per task and side), evaluates the tasks with ``mteb.evaluate`` and
returns one record per task with its main score. :func:`resolve_tasks` turns task names
(``paper15`` = :data:`PAPER15`) into MTEB task objects. MTEB downloads task data from the Hugging
Face hub, so :func:`run_mteb` first checks that the hub is reachable (:func:`check_hub_reachable`)
and fails at once when it is not.

``mteb`` and ``huggingface_hub`` are imported lazily: this module can be imported without them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nosink.errors import NosinkError
from nosink.eval.mteb_adapter import DEFAULT_BATCH_SIZE, NosinkMTEBModel, import_mteb
from nosink.hub import HUB_CHECK_TIMEOUT_S, hub_unreachable_reason

if TYPE_CHECKING:
    from mteb.abstasks import AbsTask

    from nosink.eval.base import Embedder

# The 15 tasks of docs/spec.md §6 in MTEB 2.x spelling (identical to the paper's names; the original
# versions, not the later ".v2" datasets that MTEB 2.x lists as superseding six of them).
PAPER15: list[str] = [
    "ArguAna",
    "NFCorpus",
    "SciFact",
    "SciDocsRR",
    "StackOverflowDupQuestions",
    "BiorxivClusteringS2S",
    "MedrxivClusteringS2S",
    "TwentyNewsgroupsClustering",
    "SprintDuplicateQuestions",
    "Banking77Classification",
    "EmotionClassification",
    "MassiveIntentClassification",
    "STS17",
    "SICK-R",
    "STSBenchmark",
]
PAPER15_ALIAS = "paper15"


def check_hub_reachable(*, timeout: float = HUB_CHECK_TIMEOUT_S) -> None:
    """Raise a NosinkError at once when the Hugging Face hub is unreachable (MTEB downloads task data).

    Args:
        timeout: Seconds to wait for the hub.
    """
    reason = hub_unreachable_reason(timeout=timeout)
    if reason is not None:
        raise NosinkError(
            f"MTEB needs the Hugging Face hub to download task data; it is unreachable from here ({reason}). "
            "Run this where the hub is reachable (or pass require_hub=False if the task data is already in "
            "the local datasets cache)."
        )


def resolve_tasks(
    tasks: str | Sequence[str | AbsTask],
    *,
    languages: Sequence[str] | None = ("eng",),
    eval_splits: Sequence[str] | None = ("test",),
) -> list[AbsTask]:
    """MTEB task objects for names (``paper15`` = :data:`PAPER15`) or ready task objects.

    Names are filtered to ``languages`` (exclusively: STS17 keeps only ``en-en``, MassiveIntent only
    ``en``) and ``eval_splits`` (the paper uses test splits). Reads only MTEB's packaged metadata.

    Args:
        tasks: ``"paper15"``, one task name, or a list of names and/or ``AbsTask`` objects.
        languages: ISO 639-3 codes to keep, or None for all.
        eval_splits: Splits to evaluate, or None for the task's own.

    Returns:
        The task objects, in order.
    """
    mteb = import_mteb()
    names: Sequence[str | AbsTask] = [tasks] if isinstance(tasks, str) else tasks
    resolved: list[AbsTask] = []
    for item in names:
        if isinstance(item, str) and item.lower() == PAPER15_ALIAS:
            resolved.extend(resolve_tasks(PAPER15, languages=languages, eval_splits=eval_splits))
        elif isinstance(item, str):
            resolved.append(_get_task(mteb, item, languages, eval_splits))
        elif isinstance(item, mteb.AbsTask):
            resolved.append(item)
        else:
            raise NosinkError(f"an MTEB task must be a name or an mteb AbsTask, got {type(item).__name__}")
    if not resolved:
        raise NosinkError("no MTEB tasks to run")
    return resolved


def _get_task(mteb: Any, name: str, languages: Sequence[str] | None, eval_splits: Sequence[str] | None) -> AbsTask:
    try:
        return mteb.get_task(
            name,
            languages=list(languages) if languages else None,
            eval_splits=list(eval_splits) if eval_splits else None,
            exclusive_language_filter=True,
        )
    except KeyError as error:
        raise NosinkError(f"unknown MTEB task {name!r}: {error.args[0] if error.args else error}") from None
    except ValueError as error:
        raise NosinkError(f"MTEB task {name!r} has nothing in languages {languages}: {error}") from None


def run_mteb(
    embedder: Embedder | NosinkMTEBModel,
    *,
    tasks: str | Sequence[str | AbsTask] = PAPER15_ALIAS,
    output_folder: str | Path | None = None,
    instructions: Mapping[str, str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    languages: Sequence[str] | None = ("eng",),
    eval_splits: Sequence[str] | None = ("test",),
    overwrite: bool = False,
    require_hub: bool = True,
    raise_error: bool = True,
    show_progress_bar: bool = True,
) -> list[dict[str, Any]]:
    """Evaluate an embedder on MTEB tasks and return one record per task with its main score.

    Args:
        embedder: A nosink ``Encoder``, a baseline, or a ready :class:`NosinkMTEBModel`.
        tasks: ``"paper15"`` (docs/spec.md §6), one task name, or a list of names and/or ``AbsTask`` objects.
        output_folder: MTEB's result cache (``results/<model>/<revision>/<experiment>/<task>.json``);
            finished tasks found there are not re-run. None: nothing is written.
        instructions: Task name (or task type) → instruction; None = the paper's table (ignored
            when ``embedder`` is already a :class:`NosinkMTEBModel`).
        batch_size: Texts per forward pass.
        languages: Language filter for task names (exclusive), or None.
        eval_splits: Splits to evaluate for task names (default test, as in the paper), or None.
        overwrite: Re-run tasks whose results are already in ``output_folder``.
        require_hub: Check first that the hub is reachable and fail at once if not. Pass False
            for tasks whose data loads locally (custom tasks, a warm datasets cache).
        raise_error: Stop at the first failing task; otherwise failures become records with ``error``.
        show_progress_bar: Show MTEB's progress bars.

    Returns:
        One dict per task: ``task``, ``main_score`` (MTEB's scale, 0–1; the paper reports ×100),
        ``metric``, ``scores`` (split → subset → main score), ``evaluation_time`` (seconds);
        or ``task`` and ``error`` for a failed task when ``raise_error`` is False.
    """
    if require_hub:
        check_hub_reachable()
    mteb = import_mteb()
    task_objects = resolve_tasks(tasks, languages=languages, eval_splits=eval_splits)
    model = (
        embedder
        if isinstance(embedder, NosinkMTEBModel)
        else NosinkMTEBModel(embedder, instructions=instructions, batch_size=batch_size)
    )
    encode_kwargs: dict[str, Any] = {"batch_size": batch_size}
    if not show_progress_bar:
        encode_kwargs["show_progress_bar"] = False
    result = mteb.evaluate(
        model,
        task_objects,
        cache=mteb.ResultCache(cache_path=output_folder) if output_folder is not None else None,
        encode_kwargs=encode_kwargs,
        overwrite_strategy="always" if overwrite else "only-missing",
        raise_error=raise_error,
        show_progress_bar=show_progress_bar,
        co2_tracker=False,
    )
    metrics = {task.metadata.name: task.metadata.main_score for task in task_objects}
    records = [_record(task_result, metrics.get(task_result.task_name)) for task_result in result.task_results]
    records += [{"task": error.task_name, "error": error.exception} for error in result.exceptions or []]
    return records


def _record(task_result: Any, metric: str | None) -> dict[str, Any]:
    scores = {
        split: {entry.get("hf_subset", "default"): float(entry["main_score"]) for entry in entries}
        for split, entries in task_result.scores.items()
    }
    return {
        "task": task_result.task_name,
        "main_score": float(task_result.get_score()),
        "metric": metric,
        "scores": scores,
        "evaluation_time": task_result.evaluation_time,
    }
