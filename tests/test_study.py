"""``nosink study`` end to end on stories260k with small sizes: selection on validation only, test scores equal
the evaluators', resumable records, and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SHARED, STORIES

from nosink import Encoder, NosinkError
from nosink.cli import main
from nosink.eval.classification import evaluate_classification
from nosink.eval.conll import load_conll
from nosink.eval.data import load_labeled, load_pairs
from nosink.eval.ner import cross_validated_f1, ner_features, ner_probe
from nosink.eval.sts import evaluate_sts
from nosink.eval.study import (
    BANKING_INSTRUCTION,
    STS_INSTRUCTION,
    NerSizes,
    StudyConfig,
    StudySizes,
    default_ks,
    run_study,
)

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
NER = NerSizes(folds=2, wnut17_dev=60, wnut17_test=40, wikiann_dev=80, wikiann_test=40, k0s=(1,))


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


# -------------------------------------------------------------------- banking77 and the NER parts


def banking_subset(folder: Path, labels: int, per_label: dict[str, int]) -> Path:
    """A Banking77 folder with the first ``labels`` intents and the first rows of each (the fits stay fast)."""
    import csv

    (folder / "banking77").mkdir(parents=True)
    for split, count in per_label.items():
        with open(DATA / "banking77" / f"{split}.csv", newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        kept_labels = list(dict.fromkeys(row["category"] for row in rows))[:labels]
        kept = [r for label in kept_labels for r in [row for row in rows if row["category"] == label][:count]]
        with open(folder / "banking77" / f"{split}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["text", "category"])
            writer.writeheader()
            writer.writerows(kept)
    for name in ("sick", "wnut17", "wikiann-en"):  # SICK trial: the speed probe of the cost estimate
        (folder / name).symlink_to(DATA / name)
    return folder


@pytest.fixture(scope="module")
def more(tmp_path_factory: pytest.TempPathFactory) -> tuple[StudyConfig, dict[str, Path]]:
    data = banking_subset(tmp_path_factory.mktemp("data"), 10, {"train": 12, "test": 6})
    out = tmp_path_factory.mktemp("study-more")
    parts = ("banking77", "wnut17", "wikiann")
    config = StudyConfig(str(STORIES), data, out, parts=parts, ks=(2, 5), sizes=SIZES, ner=NER)
    return config, run_study(config, say=lambda line: None)


def test_banking77_selects_on_train_and_scores_test_as_the_evaluator(more) -> None:
    config, paths = more
    record = json.loads(paths["banking77"].read_text())
    assert record["selected"] == max(record["validation"], key=lambda row: row["score"])["plan"]
    assert record["sizes"] == {"train_embedded": 10 * 12, "test": 10 * 6}
    encoder = Encoder.from_pretrained(str(STORIES))
    train, test = (load_labeled(config.data / "banking77" / name) for name in ("train.csv", "test.csv"))
    for plan in ("baseline", record["selected"]):
        result = evaluate_classification(encoder.with_plan(plan), train, test, instruction=BANKING_INSTRUCTION)
        # The study embeds train and test in one length-sorted run: float noise may flip one test text at most.
        assert record["test"][plan]["accuracy"] == pytest.approx(result.metrics["accuracy"], abs=1.01 / len(test))


@pytest.mark.parametrize(
    ("part", "dev_file", "test_file"),
    [
        ("wnut17", "wnut17/emerging.dev.conll", "wnut17/emerging.test.annotated"),
        ("wikiann", "wikiann-en/dev", "wikiann-en/test"),
    ],
)
def test_ner_parts_select_by_cross_validation_and_score_test_as_the_probe(
    more, part: str, dev_file: str, test_file: str
) -> None:
    config, paths = more
    record = json.loads(paths[part].read_text())
    limits = (getattr(NER, f"{part}_dev"), getattr(NER, f"{part}_test"))
    dev, test = (load_conll(DATA / f, limit=n) for f, n in zip((dev_file, test_file), limits, strict=True))
    assert record["sizes"] == {"dev": len(dev), "test": len(test)} and record["settings"]["ner"]["folds"] == 2
    rows = record["validation"]
    assert record["selected"] == max(rows, key=lambda row: row["score"])["plan"]
    assert {row["k"] for row in rows if row["family"] != "baseline"} == {2, 5}
    encoder = Encoder.from_pretrained(str(STORIES))
    row = next(row for row in rows if row["plan"] == "mask0-bidir:k=2")
    expected = cross_validated_f1(ner_features(encoder.with_plan(row["plan"]), dev), dev.tags, folds=2)
    assert row["score"] == pytest.approx(expected["f1"], abs=1e-6)
    for plan in ("baseline", record["selected"]):
        result = ner_probe(encoder.with_plan(plan), dev, test)
        assert record["test"][plan]["f1"] == pytest.approx(100 * result.metrics["f1"], abs=1e-6)
    assert (config.out / f"{part}.png").exists()
