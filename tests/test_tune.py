"""``nosink tune`` on stories260k: every row equals encoding alone, the winner is the argmax, the test split is
scored once, runs resume, the budget stops new prompts, and the CLI refuses mistakes in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SHARED, STORIES

from nosink import Encoder, NosinkError
from nosink.cli import main
from nosink.eval.data import load_pairs
from nosink.eval.sts import sts_scores
from nosink.eval.sweep import StsSweepTask
from nosink.eval.tune import TuneSpace, tune

DATA = SHARED / "data" / "sick"
pytestmark = [
    pytest.mark.skipif(not DATA.exists() or not STORIES.exists(), reason="../shared is not available"),
    pytest.mark.usefixtures("one_thread"),
]
SPACE = TuneSpace(families=("mask0-bidir",), ks=(2, 5), prompts=("default", "prompt=prompteol"))
INSTRUCTION = "Retrieve semantically similar text."


def sts_task(path: Path, limit: int, name: str = "sts") -> StsSweepTask:
    pairs = load_pairs(path, limit=limit)
    return StsSweepTask(pairs.texts_a, pairs.texts_b, pairs.scores, instruction=INSTRUCTION, name=name)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("tune")
    encoder = Encoder.from_pretrained(str(STORIES))
    val, test = sts_task(DATA / "SICK_trial.txt", 40), sts_task(DATA / "SICK_test_annotated.txt", 60, "sts-test")
    lines: list[str] = []
    result = tune(encoder, val, space=SPACE, out=out, test=test, say=lines.append)
    return encoder, val, test, out, result, lines


def encode_alone(encoder: Encoder, plan: str, recipe: str, task: StsSweepTask) -> float:
    features = encoder.with_plan(plan).with_recipe(recipe).encode(task.texts(), instruction=task.instruction)
    n = len(task.texts_a)
    return sts_scores(features[:n], features[n:], task.gold)["spearman"]


def test_every_row_equals_encoding_alone_and_the_winner_is_the_argmax(tuned) -> None:
    encoder, val, _, _, result, _ = tuned
    assert len(result.rows) == 3 * 2 * 5  # (baseline + k=2 + k=5) x 2 prompts x 5 layers
    assert {r.layer for r in result.rows} == {1, 2, 3, 4, 5}
    assert result.winner == max(result.rows, key=lambda r: r.score)
    for row in (result.rows[0], result.rows[7], result.rows[-1], result.winner):
        assert row.score == pytest.approx(encode_alone(encoder, row.plan, row.recipe, val), abs=1e-3), row
    prompteol = [r for r in result.rows if r.prompt == "prompt=prompteol"]
    assert all(r.recipe.startswith("prompt=prompteol,pool=last") for r in prompteol)


def test_the_test_split_is_scored_once_for_the_baseline_and_the_winner(tuned) -> None:
    encoder, _, test, out, result, _ = tuned
    assert set(result.test) == {"baseline", "winner"}
    expected = encode_alone(encoder, result.winner.plan, result.winner.recipe, test)
    assert result.test["winner"]["spearman"] == pytest.approx(expected, abs=1e-3)
    assert result.test["baseline"]["spearman"] == pytest.approx(
        encode_alone(encoder, "baseline", "default", test), abs=1e-3
    )
    winner = json.loads((out / "winner.json").read_text())
    assert winner["plan"] == result.winner.plan and winner["recipe"] == result.winner.recipe
    assert len((out / "table.csv").read_text().splitlines()) == 1 + len(result.rows)
    assert (out / "tune.png").stat().st_size > 10_000


def test_a_rerun_resumes_and_other_settings_are_refused(tuned) -> None:
    encoder, val, _, out, result, _ = tuned
    lines: list[str] = []
    again = tune(encoder, val, space=SPACE, out=out, say=lines.append)
    assert sum("recorded earlier" in line for line in lines) == 2
    assert [r.score for r in again.rows] == [r.score for r in result.rows]
    with pytest.raises(NosinkError, match="made with other settings"):
        tune(encoder, val, space=TuneSpace(families=("inplace-bidir",), ks=(2,)), out=out, say=lines.append)


def test_the_budget_stops_new_prompts_but_not_the_first(tmp_path: Path) -> None:
    encoder = Encoder.from_pretrained(str(STORIES))
    lines: list[str] = []
    result = tune(
        encoder, sts_task(DATA / "SICK_trial.txt", 20), space=SPACE, out=tmp_path, budget_s=0, say=lines.append
    )
    assert {r.prompt for r in result.rows} == {"default"} and result.skipped_prompts == ["prompt=prompteol"]
    assert any("out of budget" in line for line in lines)


def test_branched_families_and_layer_settings_in_prompts_are_refused() -> None:
    with pytest.raises(NosinkError, match="branched plans do not define"):
        TuneSpace(families=("inter-bidir",)).plans(5)
    with pytest.raises(NosinkError, match="holds only prompt= and pool="):
        TuneSpace(prompts=("layer=-2",)).recipes("layer=-2", 5)
    with pytest.raises(NosinkError, match="outside this model's 5 layers"):
        TuneSpace(layers=(9,)).recipes("default", 5)


def test_cli_tune(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    command = [
        "tune",
        "--model",
        str(STORIES),
        "--task",
        "sts",
        "--data",
        str(DATA / "SICK_trial.txt"),
        "--limit",
        "20",
    ]
    options = ["--family", "mask0-bidir", "--ks", "2", "--prompts", "default;prompt=echo", "--layers=-1,-3"]
    record = tmp_path / "record.json"
    assert main([*command, *options, "--out", str(tmp_path / "t"), "--record", str(record)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {"plan", "recipe", "validation", "test"} <= set(printed)
    rows = (tmp_path / "t" / "table.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 2 * 2  # (baseline, k=2) x 2 prompts x 2 layers
    assert json.loads(record.read_text())["metrics"]["plan"] == printed["plan"]
    assert main([*command, "--family", "inter-bidir", "--out", str(tmp_path / "u")]) == 2
    assert "branched plans do not define" in capsys.readouterr().err
    assert main([*command, "--layers=-1,x", "--out", str(tmp_path / "v")]) == 2
    assert "--layers takes integers like -1,-4,8" in capsys.readouterr().err
    assert main([*command, "--recipe", "layer=-2", "--out", str(tmp_path / "w")]) == 2
    assert "unrecognized arguments: --recipe" in capsys.readouterr().err  # tune searches recipes itself
