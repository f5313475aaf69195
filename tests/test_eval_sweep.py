"""k-sweeps: every plan's features equal running that plan alone; the frozen prefix is computed once."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import load_model, tiny_model, tiny_tokenizer
from test_equivalence import batch

from nosink import Encoder, NosinkError, Plan
from nosink.eval.conll import TaggedSentences
from nosink.eval.ner import cross_validated_f1, ner_features
from nosink.eval.sweep import (
    NerSweepTask,
    SweepResult,
    family_plans,
    plot_sweep,
    run_sweep,
    sweep_features,
    sweep_token_features,
)
from nosink.runner import run_schedules

TEXTS = [
    "the cat sat on the mat",
    "a little girl named lily loved to play outside in the park",
    "the bank refused my card",
    "sun",
    "she was happy and the sun was shining on the big red ball",
]


@pytest.mark.parametrize("model_name", ["llama", "gpt2", "gemma3_text", "stories260k"])
def test_shared_prefix_states_equal_separate_runs(model_name: str) -> None:
    encoder = Encoder.from_model(load_model(model_name), tiny_tokenizer())
    L = encoder.num_layers
    plans = [Plan.parse(p) for p in ("baseline", "inter-back:k=2", "mask2-all:k=1", "layers:0=bidir")]
    for family in ("inplace-bidir", "inplace-back", "mask0-bidir", "mask2&bidir"):
        plans += family_plans(family, L)
    ids, mask = batch([10, 7, 3, 1], "left")
    states = run_schedules(encoder.base, encoder.family, [p.resolve(L) for p in plans], ids, mask)
    real = mask.bool()
    for plan, state in zip(plans, states, strict=True):
        alone = encoder.with_plan(plan).hidden_states(ids, mask)
        torch.testing.assert_close(state[real], alone[real], atol=1e-5, rtol=0, msg=f"plan {plan}")


def test_sweep_features_equal_encode_per_plan() -> None:
    encoder = Encoder.from_model(tiny_model("llama"), tiny_tokenizer(), pooling="weighted_mean")
    plans = family_plans("mask0&bidir", 4, k0s=[1, 2]) + family_plans("inplace-back", 4, ks=[1, 3])
    plans += family_plans("mask0&bidir:res=2", 4, ks=[3], k0s=[1])  # reference mode runs alone, with its residual
    features = sweep_features(encoder, TEXTS, plans, instruction="find the story", batch_size=2)
    for plan, feature in zip(plans, features, strict=True):
        expected = encoder.with_plan(plan).encode(TEXTS, instruction="find the story")
        np.testing.assert_allclose(feature, expected, atol=1e-5, rtol=0, err_msg=str(plan))
    assert not np.allclose(features[0], features[-1])


def test_layer_calls_of_a_full_sweep() -> None:
    """k = 1…L of inplace-bidir: L-1 causal calls (layers 0…L-2) + 1 + 2 + … + L converted ones, not L per plan."""
    base = tiny_model("llama")
    encoder = Encoder.from_model(base, tiny_tokenizer())
    calls = []
    handles = [layer.register_forward_hook(lambda *args: calls.append(1)) for layer in base.layers]
    try:
        sweep_features(encoder, TEXTS, family_plans("inplace-bidir", 4), batch_size=len(TEXTS))
    finally:
        for handle in handles:
            handle.remove()
    assert len(calls) == 3 + (1 + 2 + 3 + 4)  # 13, against 4 x 4 = 16 for four separate runs


def test_family_plans_grids_and_errors() -> None:
    assert [str(p) for p in family_plans("mask0&bidir", 3)] == [
        "mask0&bidir:k=1,k0=1",
        "mask0&bidir:k=2,k0=1",
        "mask0&bidir:k=2,k0=2",
        "mask0&bidir:k=3,k0=1",
        "mask0&bidir:k=3,k0=2",
    ]
    assert [str(p) for p in family_plans("extend-back", 5, ks=[2, 5])] == ["extend-back:k=2", "extend-back:k=5"]
    assert [str(p) for p in family_plans("mask0-bidir:res=3", 4, ks=[1, 2])] == [
        "mask0-bidir:k=1,res=3",
        "mask0-bidir:k=2,res=3",
    ]
    assert [str(p) for p in family_plans("inter-back&bidir:res=none", 3, k0s=[1, 2])] == [
        "inter-back&bidir:k=2,k0=1,res=none",
        "inter-back&bidir:k=3,k0=1,res=none",
        "inter-back&bidir:k=3,k0=2,res=none",
    ]
    with pytest.raises(NosinkError, match="unknown sweep family"):
        family_plans("mask0-bidir:k=2", 4)
    with pytest.raises(NosinkError, match="unknown sweep family"):
        family_plans("inplace-mask0&bidir", 4)
    with pytest.raises(NosinkError, match="has no plan for k"):
        family_plans("inter-back&bidir", 4, ks=[1])
    with pytest.raises(NosinkError, match=r"outside 1\.\.4"):
        family_plans("inplace-bidir", 4, ks=[0, 5])


class NormTask:
    """A toy task: the score is the mean norm of the features (highest for the plan that inflates most)."""

    name, main_metric, instruction = "toy", "norm", None

    def texts(self) -> list[str]:
        return TEXTS

    def score(self, features: np.ndarray) -> dict[str, float]:
        return {"norm": float(np.linalg.norm(features, axis=1).mean())}


def test_run_sweep_picks_the_best_row_and_writes_table_and_plot(tmp_path) -> None:
    encoder = Encoder.from_model(tiny_model("qwen2"), tiny_tokenizer(), pooling="last")
    result = run_sweep(encoder, NormTask(), ["inplace-bidir", "mask0&bidir"], k0s=[1, 2])
    assert len(result.rows) == 1 + 4 + 7 and result.rows[0].plan == "baseline"
    scores = {row.plan: row.score for row in result.rows}
    assert result.best == max(scores, key=scores.get)
    for row in result.rows:
        alone = encoder.with_plan(row.plan).encode(TEXTS)
        assert row.score == pytest.approx(float(np.linalg.norm(alone, axis=1).mean()), abs=1e-4)
    result.write_csv(tmp_path / "sweep.csv")
    lines = (tmp_path / "sweep.csv").read_text().splitlines()
    assert lines[0] == "family,plan,k,k0,score"
    assert any(line.startswith('mask0&bidir,"mask0&bidir:k=2,k0=1",2,1,') for line in lines)  # quoted: it has a comma
    json.dumps(result.to_dict())
    plot_sweep(result, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 10_000
    assert isinstance(result, SweepResult)


def test_a_reference_family_is_compared_with_the_released_baseline(tmp_path) -> None:
    """The released NONE is not the causal model (its residual changes it): a res family gets that baseline too."""
    encoder = Encoder.from_model(tiny_model("llama"), tiny_tokenizer())
    result = run_sweep(encoder, NormTask(), ["mask0-bidir:res=2", "mask0-bidir"], ks=[1, 2])
    assert [row.plan for row in result.rows[:2]] == ["baseline", "baseline:res=2"]
    assert result.rows[0].score != pytest.approx(result.rows[1].score, abs=1e-4)
    released = encoder.with_plan("baseline:res=2").encode(TEXTS)
    assert result.rows[1].score == pytest.approx(float(np.linalg.norm(released, axis=1).mean()), abs=1e-4)
    plot_sweep(result, tmp_path / "sweep.png")


WORDS = [text.split() for text in TEXTS]


def test_token_sweep_states_equal_encode_tokens_per_plan() -> None:
    encoder = Encoder.from_model(tiny_model("llama"), tiny_tokenizer())
    plans = [Plan(), *family_plans("mask0&bidir", 4, k0s=[1]), *family_plans("inplace-back", 4, ks=[2])]
    plans.append(Plan.parse("inter-bidir:k=2"))  # a plan that runs alone, not on the shared prefix
    features = sweep_token_features(encoder, WORDS, plans, instruction="tag the names", batch_size=2)
    for plan, feature in zip(plans, features, strict=True):
        alone = ner_features(encoder.with_plan(plan), WORDS, instruction="tag the names")
        np.testing.assert_allclose(feature.states, alone.states, atol=1e-5, rtol=0, err_msg=str(plan))
        np.testing.assert_array_equal(feature.offsets, alone.offsets)
        assert feature.word_ids == alone.word_ids and feature.n_words == alone.n_words
    assert not np.allclose(features[0].states, features[1].states)


def test_run_sweep_scores_a_token_task_with_each_plan_features() -> None:
    encoder = Encoder.from_model(tiny_model("llama"), tiny_tokenizer())
    tags = [["O"] * len(words) for words in WORDS]
    tags[1][4], tags[3][0] = "B-PER", "B-LOC"  # lily, sun
    task = NerSweepTask(TaggedSentences(WORDS, tags), folds=2)
    result = run_sweep(encoder, task, ["inplace-bidir"], ks=[2, 4])
    assert [row.plan for row in result.rows] == ["baseline", "inplace-bidir:k=2", "inplace-bidir:k=4"]
    for row in result.rows:
        expected = cross_validated_f1(ner_features(encoder.with_plan(row.plan), WORDS), tags, folds=2)
        assert row.metrics == pytest.approx(expected, abs=1e-6)
        assert row.score == row.metrics["f1"]


def test_classification_task_encodes_only_the_training_texts_the_protocol_reads() -> None:
    """A large training split: only the undersampled rows are encoded, and the scores equal scoring every row."""
    from nosink.eval.classification import classification_scores
    from nosink.eval.sweep import ClassificationSweepTask

    rng = np.random.default_rng(0)
    labels = [f"l{i % 3}" for i in range(300)]
    train = [f"train text {i}" for i in range(300)]
    val, val_labels = [f"val text {i}" for i in range(40)], [f"l{i % 3}" for i in range(40)]
    vectors = {
        text: rng.normal(size=6) + int(label[1:]) for text, label in zip(train + val, labels + val_labels, strict=True)
    }
    task = ClassificationSweepTask(train, labels, val, val_labels, n_experiments=3)
    texts = task.texts()
    assert len(texts) == len(task.read) + len(val) and len(task.read) <= 3 * 8 * 3 < len(train)
    scores = task.score(np.stack([vectors[text] for text in texts]))
    every_row = np.stack([vectors[text] for text in train])
    expected = classification_scores(
        every_row, labels, np.stack([vectors[t] for t in val]), val_labels, n_experiments=3
    )
    assert scores == expected and scores["accuracy"] > 0.5
