"""Bad arguments get one clear error instead of silent replacement or wrong output (issue 13, items 15, 16, 19)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import real_tokenizer, tiny_model, tiny_tokenizer
from reference import Reference

import nosink.eval
from nosink import Encoder, NosinkError, Plan
from nosink.cli import main
from nosink.devices import check_available


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder.from_model(tiny_model("llama"), tiny_tokenizer(), plan="mask0-bidir:k=2")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
        ({"batch_size": 2.5}, "batch_size must be a positive integer, got 2.5"),
        ({"batch_size": True}, "batch_size must be a positive integer, got True"),
        ({"max_tokens_per_batch": 0.5}, "max_tokens_per_batch must be a positive integer, got 0.5"),
        ({"normalize": "yes"}, "normalize must be True or False, got 'yes'"),
        ({"normalize": 1}, "normalize must be True or False, got 1"),
        ({"show_progress_bar": "x"}, "show_progress_bar must be True or False, got 'x'"),
    ],
)
def test_encode_refuses_what_it_used_to_replace_or_accept(encoder: Encoder, arguments: dict, message: str) -> None:
    with pytest.raises(NosinkError, match=message):
        encoder.encode(["the cat sat"], **arguments)


def test_the_defaults_and_valid_values_still_work(encoder: Encoder) -> None:
    default = encoder.encode(["the cat sat", "a dog"])
    explicit = encoder.encode(["the cat sat", "a dog"], batch_size=1, normalize=False, show_progress_bar=False)
    torch.testing.assert_close(torch.from_numpy(explicit), torch.from_numpy(default), atol=1e-5, rtol=0)
    with pytest.raises(NosinkError, match="show_progress_bar must be True or False"):
        encoder.encode_tokens(["the cat sat"], show_progress_bar="x")


def test_a_device_this_torch_cannot_load_onto_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    expected = r"device 'cuda' was asked for, but torch .* (is a CPU-only build|sees no CUDA device); use cpu"
    with pytest.raises(NosinkError, match=expected):
        check_available(torch.device("cuda"))
    with pytest.raises(NosinkError, match="device 'meta' holds no weights"):
        check_available(torch.device("meta"))
    assert check_available(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "meta"])
def test_cli_device_errors_are_one_line_before_any_weight_loads(
    device: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    folder = tmp_path / "model"
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    texts = tmp_path / "texts.txt"
    texts.write_text("the cat sat\n")
    capsys.readouterr()  # saving printed a progress bar
    argv = ["encode", "--model", str(folder), "--device", device, str(texts), "-o", str(tmp_path / "v.npy")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: device '{device}'") and err.count("\n") == 1
    assert not (tmp_path / "v.npy").exists()


def test_nosink_eval_exports_the_functions_the_readme_names() -> None:
    from nosink.eval.sink import attention_maps
    from nosink.eval.sts import evaluate_sts

    names = ("evaluate_sts", "evaluate_classification", "evaluate_domain", "ner_probe", "run_sweep")
    names += ("attention_maps", "sink_scores", "NosinkMTEBModel")
    assert all(callable(getattr(nosink.eval, name)) for name in names)
    assert nosink.eval.evaluate_sts is evaluate_sts and nosink.eval.attention_maps is attention_maps
    with pytest.raises(AttributeError, match="no attribute 'evaluate_everything'"):
        nosink.eval.evaluate_everything  # noqa: B018


@pytest.mark.parametrize("text", ["mask٠-bidir:k=2", "mask0-bidir:k=٣", "inter-mask٢:k=1", "layers:0..١=bidir"])
def test_plan_digits_are_ascii_only(text: str) -> None:
    with pytest.raises(NosinkError):
        Plan.coerce(text)


def test_a_sink_index_beyond_any_context_is_refused() -> None:
    with pytest.raises(NosinkError, match=r"m must be at most 1,000,000, got m=9999999999999999999 .*backward"):
        Plan.coerce("mask9999999999999999999-bidir:k=2")
    assert str(Plan.coerce("mask1000000-bidir:k=2")) == "mask1000000-bidir:k=2"


def test_sweep_refuses_a_plan_it_would_ignore(capsys) -> None:
    argv = ["sweep", "--model", "m", "--task", "sts", "--data", "d", "--family", "mask0-bidir", "--plan", "baseline"]
    assert main(argv) == 2
    assert "unrecognized arguments: --plan baseline" in capsys.readouterr().err


def test_undefined_metrics_are_null_in_a_strict_json_record(tmp_path: Path) -> None:
    from nosink.eval.results import write_record

    record = {"metrics": {"spearman": float("nan"), "scores": np.array([1.0, np.inf])}}
    path = write_record(record, tmp_path / "r.json")
    expected = {"metrics": {"spearman": None, "scores": [1.0, None]}}
    assert json.loads(path.read_text(), parse_constant=pytest.fail) == expected  # NaN/Infinity would fail


def test_sts_with_constant_gold_scores_is_refused(encoder: Encoder) -> None:
    from nosink.eval.data import PairsData
    from nosink.eval.sts import evaluate_sts

    data = PairsData(["the cat sat", "a dog"], ["a cat", "the dog ran"], [3.0, 3.0])
    with pytest.raises(NosinkError, match=r"every gold score is 3\.0: a correlation with constant gold scores"):
        evaluate_sts(encoder, data)


@pytest.mark.parametrize("name", ["tiny", "smollm2-135m-instruct", "gemma-3-270m"])
def test_user_text_never_becomes_special_tokens(name: str) -> None:
    """Llama-style "<s>" (tiny BPE), ChatML "<|im_start|>" (SmolLM2's byte-level BPE, as Qwen's) and "<bos>" (Gemma)."""
    tokenizer = tiny_tokenizer() if name == "tiny" else real_tokenizer(name)
    encoder = Encoder.from_model(tiny_model("llama"), tokenizer)  # tokenize() never runs the model
    specials = sorted({tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, "<|im_start|>", "<bos>", "<s>"})
    text = "hello " + " ".join(specials)
    special_ids = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}  # <unk> is what unseen characters become
    assert special_ids & set(tokenizer(text, add_special_tokens=False)["input_ids"])  # what used to happen
    instruction = f"find {tokenizer.eos_token}"
    row = encoder.tokenize([text], instruction=instruction)[0]
    plain = encoder.tokenize([text])[0]
    assert not special_ids & set(row.ids[plain.text_start : row.text_end])  # the instruction and the text
    joined = tokenizer(f"Instruct: {instruction}\nQuery: {text}", split_special_tokens=True)["input_ids"]
    assert row.ids == joined  # one string, as the model reads it
    if name != "tiny":  # the tiny tokenizer maps characters it never saw to <unk>
        assert tokenizer.decode(plain.ids[plain.text_start : plain.text_end]).strip() == text


def test_extend_repeats_the_top_layer_more_times_than_the_model_has_layers() -> None:
    """EXTEND's k counts repeats of the top layer, not layers: k > L runs, and equals the SPEC reference."""
    base = tiny_model("llama")  # L = 4
    ids = torch.tensor([[1, 9, 23, 40, 7, 88]])
    states = Encoder.from_model(base, tiny_tokenizer(), plan="extend-bidir:k=6").hidden_states(ids)[0]
    expected = Reference(base, hand_written=True).states(ids[0], {"name": "extend", "k": 6, "x": ("bidir", 0)})
    torch.testing.assert_close(states, expected, atol=1e-5, rtol=0)
    with pytest.raises(NosinkError, match="k=6 layers but the model has only L=4"):
        Plan.coerce("inter-bidir:k=6").resolve(4)  # INTER/EXTRA/INPLACE/MASK k are layers: still bounded by L


def test_no_room_for_text_names_the_instruction_only_when_there_is_one(encoder: Encoder) -> None:
    tight = Encoder.from_model(encoder.model, encoder.tokenizer, max_length=1)  # the tiny tokenizer adds <s>
    with pytest.raises(NosinkError, match=r"max_length=1 leaves no room for text after the special tokens \(1\)") as e:
        tight.encode(["the cat"])
    assert "instruction" not in str(e.value)
    with pytest.raises(NosinkError, match=r"after the instruction \(\d+ tokens\) and the special tokens \(1\)"):
        tight.encode(["the cat"], instruction="find cats")


def test_attention_maps_say_how_many_short_texts_were_left_out(encoder: Encoder) -> None:
    from nosink.eval.sink import attention_maps

    texts = ["the cat sat on the mat and looked at the dog", "a dog", "the cat", "once upon a time there was a ball"]
    expected = r"2 text\(s\) shorter than tokens=5 tokens .* were left out; the maps average 2"
    with pytest.warns(UserWarning, match=expected):
        maps = attention_maps(encoder, texts, tokens=5)
    assert maps.n_texts == 2


def test_classification_warns_about_test_labels_that_training_never_shows(encoder: Encoder) -> None:
    from nosink.eval.classification import evaluate_classification
    from nosink.eval.data import LabeledTexts

    train = LabeledTexts(["the cat sat", "a cat", "the dog ran", "a dog"], ["cat", "cat", "dog", "dog"])
    test = LabeledTexts(["the cat", "the dog", "a red ball", "the ball"], ["cat", "dog", "ball", "ball"])
    expected = r"1 test label\(s\) never occur in the training data \('ball'\): their 2 test text\(s\)"
    with pytest.warns(UserWarning, match=expected):
        result = evaluate_classification(encoder, train, test, n_experiments=1, samples_per_label=2)
    assert result.metrics["accuracy"] <= 0.5  # the two 'ball' texts can never be right


def test_a_ner_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    from nosink.eval.conll import load_conll

    path = tmp_path / "train.conll"
    path.write_bytes(b"Paris\tB-LOC\n\n" + b"Caf\xe9\tO\n")  # Latin-1, not UTF-8
    with pytest.raises(NosinkError, match=r"train\.conll: not UTF-8 text"):
        load_conll(path)


def test_a_folder_without_a_tokenizer_is_named_before_the_weights_load(tmp_path: Path) -> None:
    tiny_model("llama").save_pretrained(tmp_path)
    with pytest.raises(NosinkError, match=r"has no tokenizer \(none of tokenizer.json, .*\); save the tokenizer"):
        Encoder.from_pretrained(str(tmp_path))
    tiny_tokenizer().save_pretrained(tmp_path)
    assert Encoder.from_pretrained(str(tmp_path)).num_layers == 4
