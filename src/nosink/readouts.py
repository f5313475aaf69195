"""Pooled features of many (plan, recipe) pairs from one shared-prefix pass: what sweeps and shared corpus jobs use.

:func:`readout_features` tokenizes the texts once, runs every batch through
:func:`~nosink.runner.run_readouts` (the layers that plans share are called once, and reading out many layers
costs no more calls than reading the deepest), and pools every read-out as it is read (every pooling is
linear), so memory holds [B, D] per pair, never [B, T, D]. ``result[p][r]`` equals
``encoder.with_plan(plans[p]).with_recipe(recipes[r]).encode(texts)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from nosink.encoder import Encoder
from nosink.errors import NosinkError
from nosink.inputs import Batch, TokenizedText, check_texts
from nosink.plan import Plan
from nosink.pooling import pool
from nosink.recipe import Recipe
from nosink.runner import run_readouts


@torch.inference_mode()
def readout_features(
    encoder: Encoder,
    texts: Sequence[str],
    plans: Sequence[Plan],
    recipes: Sequence[Recipe | str],
    *,
    instruction: str | None = None,
    prompt: str | None = None,
    batch_size: int | None = None,
    show_progress_bar: bool | None = None,
    warn: bool = True,
    progress: Callable[[int], object] | None = None,
) -> tuple[list[list[np.ndarray]], list[TokenizedText]]:
    """Pooled features [N, D] of ``texts`` under every plan and every recipe, and the tokenized rows.

    The recipes may differ in their layers and norm only (one tokenization, one pooling). ``instruction`` and
    ``prompt`` act as in ``Encoder.encode`` (a saved default prompt applies when neither is given; ``prompt=""``
    asks for none). ``progress``, if given, is told how many rows each batch finished.
    """
    texts = check_texts(texts)
    readouts = [Recipe.coerce(recipe) for recipe in recipes]
    if not readouts:
        raise NosinkError("a read-out pass needs at least one recipe")
    if len({(r.prompt, r.pool) for r in readouts}) > 1:
        raise NosinkError("the recipes of one read-out pass must share their prompt and pool; run them apart")
    first = encoder.with_recipe(readouts[0])  # its tokenization and pooling hold for every recipe
    schedules = [plan.resolve(encoder.num_layers) for plan in plans]
    instruction, prompt = first.resolve_prompt(instruction, prompt=prompt)  # as encode() does
    rows = first.tokenize(texts, instruction=instruction, prompt=prompt, warn=warn)  # K rows per text with K templates
    features = [[np.zeros((len(rows), encoder.dim), dtype=np.float32) for _ in readouts] for _ in plans]

    def run(batch: Batch) -> list[list[torch.Tensor]]:
        def pooled(states: torch.Tensor) -> torch.Tensor:  # [B, T, D] -> [B, D]; every pooling is linear
            return pool(states, batch.attention_mask, batch.text_mask, first.pooling, batch.prompt_mask)

        ids, mask = batch.input_ids, batch.attention_mask
        return run_readouts(encoder.base, encoder.family, schedules, ids, mask, readouts, reduce=pooled)

    description = f"{len(plans)} plans x {len(readouts)} read-outs"
    batched = first.run_batches(
        rows, batch_size=batch_size, run=run, show_progress_bar=show_progress_bar, description=description
    )
    for batch, states in batched:
        for per_plan, plan_states in zip(features, states, strict=True):
            for output, pooled in zip(per_plan, plan_states, strict=True):
                output[batch.indices] = pooled.cpu().numpy()  # [B, D]
        if progress is not None:
            progress(len(batch.indices))
    averaged = [[first.average_prompts(output) for output in per_plan] for per_plan in features]  # [N, D] each
    return averaged, rows


def shared_pass_key(encoder: Encoder) -> tuple:
    """What encoders must share to be computed in one pass: weights, tokenization, pooling and prompts."""
    recipe = encoder.recipe
    return (
        id(encoder.base),
        recipe.prompt,
        recipe.pool,
        encoder.pooling,
        encoder.max_length,
        tuple(sorted(encoder.prompts.items())),
        encoder.default_prompt_name,
    )


def encode_shared(
    encoders: Sequence[Encoder],
    texts: Sequence[str],
    *,
    instruction: str | None = None,
    prompt: str | None = None,
    batch_size: int | None = None,
    progress: Callable[[int], object] | None = None,
) -> tuple[list[np.ndarray], list[TokenizedText]]:
    """``[encoder.encode(texts) for encoder in encoders]`` in one shared-prefix pass, and the rows (one tokenization).

    The encoders must be one model under several plans and read-out layers (``Encoder.with_plan`` /
    ``with_recipe`` of one encoder with the same prompt and pooling): NosinkError otherwise.
    """
    if not encoders:
        raise NosinkError("encode_shared needs at least one encoder")
    if len({shared_pass_key(encoder) for encoder in encoders}) > 1:
        raise NosinkError("encoders share one pass only when they are one model with one prompt and pooling")
    plans = list(dict.fromkeys(encoder.plan for encoder in encoders))
    recipes = list(dict.fromkeys(encoder.recipe for encoder in encoders))
    features, rows = readout_features(
        encoders[0],
        texts,
        plans,
        recipes,
        instruction=instruction,
        prompt=prompt,
        batch_size=batch_size,
        show_progress_bar=False,
        warn=False,
        progress=progress,
    )
    return [features[plans.index(e.plan)][recipes.index(e.recipe)] for e in encoders], rows
