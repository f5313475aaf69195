"""STS, the paper's sentence-similarity protocol (docs/spec.md §6): Spearman ×100 of cosine similarities.

:func:`sts_scores` scores precomputed embeddings (the k-sweep computes its own features and calls
it); :func:`evaluate_sts` embeds the texts with an :class:`~nosink.eval.base.Embedder` first and
returns a :class:`~nosink.eval.base.TaskResult` with the metrics, the sizes and the time spent
embedding and scoring. Classification is in :mod:`nosink.eval.classification`.

Needs the ``eval`` extra (scipy, scikit-learn and seqeval, through :mod:`nosink.eval.metrics`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nosink.errors import NosinkError
from nosink.eval.base import Embedder, TaskResult, encode_checked, timed
from nosink.eval.data import PairsData
from nosink.eval.metrics import cosine_similarities, pearson_x100, spearman_x100

__all__ = ["evaluate_sts", "sts_scores"]


def sts_scores(emb_a: np.ndarray, emb_b: np.ndarray, gold: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Correlations ×100 between gold scores and the cosine similarities of paired embeddings.

    Args:
        emb_a: [N, D] embeddings of the first sentences.
        emb_b: [N, D] embeddings of the second sentences.
        gold: [N] gold scores.

    Returns:
        ``spearman`` (MTEB's STS main score, ``cosine_spearman``) and ``pearson``, both ×100.
    """
    similarities = cosine_similarities(emb_a, emb_b)  # [N]
    return {"spearman": spearman_x100(gold, similarities), "pearson": pearson_x100(gold, similarities)}


def evaluate_sts(
    embedder: Embedder,
    data: PairsData,
    *,
    instruction: str | None = None,
    batch_size: int | None = None,
    show_progress_bar: bool | None = None,
    task: str = "sts",
) -> TaskResult:
    """Embed both sides of every pair and score them with :func:`sts_scores`.

    Each distinct sentence is embedded once (a sentence's embedding does not depend on the
    others in its batch). The paper gives every STS text the instruction "Retrieve semantically
    similar text."; pass it as ``instruction`` to reproduce that.

    Args:
        embedder: The model (``nosink.Encoder`` or any :class:`~nosink.eval.base.Embedder`).
        data: The pairs.
        instruction: Task description put before every sentence (none by default).
        batch_size: Texts per forward pass (the embedder's default when None).
        show_progress_bar: Passed to the embedder.
        task: The name recorded in the result.

    Returns:
        Metrics ``spearman``, ``pearson``; sizes ``pairs``, ``unique_texts``, ``dim``; timings
        ``embed_s``, ``score_s``.
    """
    if len(data) < 2:
        raise NosinkError(f"STS needs at least 2 pairs, got {len(data)}")
    if len(set(data.scores)) == 1:
        raise NosinkError(f"every gold score is {data.scores[0]}: a correlation with constant gold scores is undefined")
    unique = list(dict.fromkeys([*data.texts_a, *data.texts_b]))
    vectors, embed_s = timed(
        lambda: encode_checked(
            embedder, unique, instruction=instruction, batch_size=batch_size, progress=show_progress_bar
        )
    )  # [U, D]
    row_of = {text: row for row, text in enumerate(unique)}
    emb_a = vectors[[row_of[text] for text in data.texts_a]]  # [N, D]
    emb_b = vectors[[row_of[text] for text in data.texts_b]]  # [N, D]
    metrics, score_s = timed(lambda: sts_scores(emb_a, emb_b, data.scores))
    sizes = {"pairs": len(data), "unique_texts": len(unique), "dim": int(vectors.shape[1])}
    return TaskResult(task, metrics, sizes, {"embed_s": embed_s, "score_s": score_s})
