"""The evaluation commands end to end on ../shared/data, with stories260k and with a tiny random model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import SHARED, STORIES, tiny_model, tiny_tokenizer

from nosink.cli import main

DATA = SHARED / "data"
pytestmark = pytest.mark.skipif(not DATA.exists() or not STORIES.exists(), reason="../shared is not available")


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> str:
    """A random tiny Llama and its tokenizer saved to a folder, as a user's local model would be."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama", causal_lm=True).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return str(folder)


def run(args: list[str], tmp_path: Path, capsys) -> tuple[dict, dict]:
    """Run one command; return its printed JSON metrics and its run record."""
    record = tmp_path / "record.json"
    assert main([*args, "--record", str(record)]) == 0, capsys.readouterr().err
    printed = json.loads(capsys.readouterr().out)
    return printed, json.loads(record.read_text())


@pytest.mark.parametrize("model", ["stories", "tiny"])
def test_sts_on_sick(model: str, tiny_path: str, tmp_path: Path, capsys) -> None:
    path = str(STORIES) if model == "stories" else tiny_path
    data = DATA / "sick" / "SICK_test_annotated.txt"
    args = ["eval", "sts", "--model", path, "--plan", "mask0-bidir:k=2", "--data", str(data), "--limit", "120"]
    printed, record = run(args, tmp_path, capsys)
    assert -100 <= printed["spearman"] <= 100
    assert record["metrics"]["spearman"] == printed["spearman"]
    assert record["data"][0]["sha256"] == "2b8aa806658d6fc23c6824c83776c2d4fee7556000817b5ec0f982861413b7d0"
    assert record["model"]["plan"] == "mask0-bidir:k=2"
    assert record["versions"]["transformers"] and record["timings"]
    if model == "stories":
        assert printed["spearman"] > 30  # a real model: clearly better than chance on SICK


def model_path(model: str, tiny_path: str) -> str:
    return str(STORIES) if model == "stories" else tiny_path


def test_reference_plan_is_recorded(tiny_path: str, tmp_path: Path, capsys) -> None:
    data = DATA / "sick" / "SICK_test_annotated.txt"
    plan = "mask0&bidir:k=3,k0=1,res=3"
    args = ["eval", "sts", "--model", tiny_path, "--plan", plan, "--pooling", "reference_mean", "--data", str(data)]
    _, record = run([*args, "--limit", "40"], tmp_path, capsys)
    assert record["model"]["plan"] == plan and record["model"]["pooling"] == "reference_mean"


@pytest.mark.parametrize("model", ["stories", "tiny"])
@pytest.mark.parametrize("dataset", ["banking77", "emotion"])
def test_classification(dataset: str, model: str, tiny_path: str, tmp_path: Path, capsys) -> None:
    files = {"banking77": ("train.csv", "test.csv"), "emotion": ("train.txt", "test.txt")}[dataset]
    train, test = (str(DATA / dataset / name) for name in files)
    args = ["eval", "classification", "--model", model_path(model, tiny_path), "--plan", "inplace-bidir:k=2"]
    args += ["--train", train, "--test", test, "--limit", "300", "--experiments", "2"]
    printed, record = run(args, tmp_path, capsys)
    assert 0 <= printed["accuracy"] <= 1 and 0 <= printed["f1_macro"] <= 1
    assert len(record["data"]) == 2 and record["settings"]["n_experiments"] == 2


@pytest.mark.parametrize("model", ["stories", "tiny"])
def test_domain_classification_with_smote(model: str, tiny_path: str, tmp_path: Path, capsys) -> None:
    args = ["eval", "domain", "--model", model_path(model, tiny_path), "--plan", "mask0&bidir:k=3,k0=1"]
    args += ["--data", str(DATA / "emotion" / "val.txt"), "--limit", "200"]
    printed, record = run(args, tmp_path, capsys)
    assert {"accuracy", "f1_micro", "f1_macro", "f1_weighted"} <= set(printed)
    assert record["settings"]["smote"] is True


@pytest.mark.parametrize(
    ("dataset", "files"),
    [("wnut17", ("wnut17train.conll", "emerging.test.annotated")), ("wikiann-en", ("train", "test"))],
)
@pytest.mark.parametrize("model", ["stories", "tiny"])
def test_ner_probe(dataset: str, files: tuple[str, str], model: str, tiny_path: str, tmp_path: Path, capsys) -> None:
    train, test = (str(DATA / dataset / name) for name in files)
    args = ["eval", "ner", "--model", model_path(model, tiny_path), "--plan", "mask0-bidir:k=4"]
    args += ["--train", train, "--test", test]
    printed, _ = run([*args, "--limit", "150", "--max-length", "32"], tmp_path, capsys)
    assert 0 <= printed["f1"] <= 1


@pytest.mark.parametrize("model", ["stories", "tiny"])
def test_sweep_with_plot_and_selection(model: str, tiny_path: str, tmp_path: Path, capsys) -> None:
    out, select = tmp_path / "sweep", tmp_path / "best.txt"
    layers = 5 if model == "stories" else 4
    args = ["sweep", "--model", model_path(model, tiny_path), "--task", "sts"]
    args += ["--data", str(DATA / "sick" / "SICK_trial.txt")]
    args += ["--family", "inplace-bidir", "--family", "mask0&bidir", "--k0s", "1,2", "--limit", "80"]
    args += ["--out", str(out), "--select", str(select), "--record", str(tmp_path / "r.json")]
    assert main(args) == 0, capsys.readouterr().err
    table = list(csv.DictReader((out / "sweep.csv").open()))
    assert len(table) == 1 + layers + (2 * layers - 1)  # baseline, k = 1..L, (k, k0) for k0 in {1, 2}, k0 <= k
    best = select.read_text().strip()
    scores = {row["plan"]: float(row["score"]) for row in table}
    assert scores[best] == max(scores.values())
    assert (out / "sweep.png").stat().st_size > 10_000
    assert f"best: {best}" in capsys.readouterr().out


@pytest.mark.parametrize("model", ["stories", "tiny"])
def test_attention_maps_and_sink_scores(model: str, tiny_path: str, tmp_path: Path, capsys) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text(
        "\n".join(line.split("\t")[1] for line in (DATA / "sick" / "SICK_trial.txt").read_text().splitlines()[1:40])
    )
    out = tmp_path / "attention"
    args = ["attention", "--model", model_path(model, tiny_path), "--plan", "baseline", "--plan", "mask0-bidir:k=4"]
    args += ["--texts", str(texts), "--tokens", "8", "--detect", "--threshold", "1.5", "--out", str(out)]
    assert main([*args, "--record", str(tmp_path / "r.json")]) == 0, capsys.readouterr().err
    report = json.loads((out / "sinks.json").read_text())
    assert set(report) == {"baseline", "mask0-bidir:k=4"}
    converted = [row for row in report["mask0-bidir:k=4"]["scores"] if row["pattern"] == "nosink"]
    assert len(converted) == 4 and all(row["score"] == 0 for row in converted)  # token 0 is hidden
    assert not set(report["mask0-bidir:k=4"]["sink_layers"]) & {row["layer"] for row in converted}
    assert (out / "attention.png").stat().st_size > 10_000 and (out / "sinks.png").stat().st_size > 10_000
    assert "sink layers" in capsys.readouterr().out


def test_mteb_offline_fails_at_once_with_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["eval", "mteb", "--model", str(STORIES), "--record", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: MTEB needs the Hugging Face hub") and err.count("\n") == 1 and "HF_HUB_OFFLINE" in err


def test_eval_user_mistakes_are_one_line(tmp_path: Path, capsys) -> None:
    cases = [
        ["eval", "sts", "--model", str(STORIES), "--data", str(tmp_path / "missing.tsv")],
        ["eval", "sts", "--model", "xx:foo", "--data", str(DATA / "sick" / "SICK_trial.txt")],
        ["sweep", "--model", str(STORIES), "--task", "sts", "--family", "inplace-bidir"],
        [
            "sweep",
            "--model",
            str(STORIES),
            "--task",
            "sts",
            "--data",
            str(DATA / "sick" / "SICK_trial.txt"),
            "--family",
            "sideways",
        ],
    ]
    for args in cases:
        assert main([*args, "--record", str(tmp_path / "r.json")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err and err.count("\n") == 1, err
