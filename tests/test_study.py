"""``nosink study`` end to end on stories260k with small sizes: selection on validation only, test scores equal
the evaluators', resumable records, and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SHARED, STORIES

from nosink import Encoder, NosinkError
from nosink.cli import main
from nosink.eval.data import load_pairs
from nosink.eval.sts import evaluate_sts
from nosink.eval.study import STS_INSTRUCTION, StudyConfig, StudySizes, default_ks, run_study

DATA = SHARED / "data"
pytestmark = [
    pytest.mark.skipif(not DATA.exists() or not STORIES.exists(), reason="../shared is not available"),
    pytest.mark.usefixtures("one_thread"),
]
SIZES = StudySizes(
    sts_val_pairs=40,
    sts_test_pairs=60,
    emotion_select_train_per_label=4,
    emotion_val=60,
    banking_select_train_per_label=2,
    banking_select_val_per_label=1,
    k0s_sts=(1, 2),
    sink_texts=8,
)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[StudyConfig, dict[str, Path], list[str]]:
    out = tmp_path_factory.mktemp("study")
    parts = ("sinks", "sts", "emotion", "domain")
    config = StudyConfig(str(STORIES), DATA, out, parts=parts, ks=(1, 3, 5), sizes=SIZES)
    lines: list[str] = []
    return config, run_study(config, say=lines.append), lines


def test_every_part_writes_a_record_and_a_figure(study) -> None:
    config, paths, lines = study
    assert set(paths) == {"sinks", "sts", "emotion", "domain"}
    for part in ("sts", "emotion"):
        assert (config.out / f"{part}.png").stat().st_size > 10_000
    assert (config.out / "attention.png").exists() and (config.out / "sinks.png").exists()
    assert any(line.startswith("cost estimate") for line in lines)
    assert any(line.strip().startswith("total") for line in lines)
    record = json.loads(paths["sts"].read_text())
    assert record["model"]["layers"] == 5 and record["data"][1]["sha256"]


def test_selection_uses_validation_only_and_test_scores_equal_the_evaluator(study) -> None:
    _, paths, _ = study
    record = json.loads(paths["sts"].read_text())
    rows = record["validation"]
    assert record["selected"] == max(rows, key=lambda row: row["score"])["plan"]
    assert {row["k"] for row in rows if row["family"] != "baseline"} == {1, 3, 5}
    encoder = Encoder.from_pretrained(str(STORIES))
    test = load_pairs(DATA / "sick" / "SICK_test_annotated.txt", limit=SIZES.sts_test_pairs)
    for plan in ("baseline", record["selected"]):
        expected = evaluate_sts(encoder.with_plan(plan), test, instruction=STS_INSTRUCTION).metrics["spearman"]
        assert record["test"][plan]["spearman"] == pytest.approx(expected, abs=1e-4)
    core = {"inplace-bidir", "inplace-back", "mask0-bidir", "mask0&bidir"}
    assert {plan for family, plan in record["best_per_family"].items() if family in core} <= set(record["test"])


def test_sink_ratios_per_head_average_to_the_layer_scores(study) -> None:
    import numpy as np

    _, paths, _ = study
    record = json.loads(paths["sinks"].read_text())
    heads = np.array(record["head_ratios"], dtype=float)  # [L, H]
    layers = record["layer_scores"]["baseline"]
    assert heads.shape[0] == len(layers) == 5
    for row, layer in zip(heads, layers, strict=True):
        assert row.mean() == pytest.approx(layer["ratio"], rel=1e-6)  # the mean of per-head ratios is the ratio


def test_domain_uses_the_plan_emotion_selected(study) -> None:
    _, paths, _ = study
    emotion, domain = (json.loads(paths[part].read_text()) for part in ("emotion", "domain"))
    assert domain["selected"] == emotion["selected"]
    assert "baseline" in domain["test"]


def test_a_second_run_skips_recorded_parts_and_other_settings_are_refused(study) -> None:
    config, _, _ = study
    lines: list[str] = []
    run_study(config, say=lines.append)
    assert "every part is recorded; nothing to run" in lines
    assert sum("skipped" in line for line in lines) == 4
    other = StudyConfig(config.model, config.data, config.out, parts=("sts",), ks=(2, 4), sizes=SIZES)
    with pytest.raises(NosinkError, match="was made with other settings"):
        run_study(other, say=lines.append)


def test_cli_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["study", "--model", str(STORIES), "--data", str(DATA), "--out", str(tmp_path / "o"), "--parts", "nope"]
    assert main(args) == 2
    assert "unknown study parts ['nope']" in capsys.readouterr().err
    missing = ["study", "--model", str(STORIES), "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]
    assert main(missing) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_default_k_grid() -> None:
    assert default_ks(30) == [3, 8, 15, 22, 30]
    assert default_ks(18) == [2, 4, 9, 14, 18] and default_ks(5) == [1, 2, 4, 5]
