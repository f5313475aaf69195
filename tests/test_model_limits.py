"""What a model cannot take is refused or capped with a message, never a traceback (issue 13, item 15).

- ``max_length`` above the model's positions is capped at them, with a warning (a GPT-2 with 16
  positions used to raise IndexError; a Llama extrapolated silently past its trained positions);
- a damaged ``model.safetensors`` is one ``error:`` line;
- ``hidden_states`` with out-of-vocabulary, negative or float ids is a NosinkError, not an IndexError.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import VOCAB, tiny_model, tiny_tokenizer

from nosink import Encoder
from nosink.cli import main
from nosink.errors import NosinkError

LONG_TEXT = " ".join(["the cat sat on the mat and looked at the dog"] * 6)  # far more than 16 tokens


def _save(folder: Path, family: str, **config: int) -> Path:
    model = tiny_model(family)
    for name, value in config.items():
        setattr(model.config, name, value)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def gpt2_16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GPT-2 that has 16 learned positions (its position table is built with 16 rows)."""
    model = tiny_model("gpt2")
    config = model.config
    config.n_positions = 16
    folder = tmp_path_factory.mktemp("gpt2-16")
    type(model)(config).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def test_gpt2_max_length_above_its_positions_is_capped_with_a_warning(gpt2_16: Path) -> None:
    with pytest.warns(UserWarning, match="max_length=64 is more than the model's 16 positions"):
        capped = Encoder.from_pretrained(str(gpt2_16), max_length=64)
    assert capped.max_length == 16
    exact = Encoder.from_pretrained(str(gpt2_16), max_length=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the truncation warning
        np.testing.assert_allclose(capped.encode([LONG_TEXT]), exact.encode([LONG_TEXT]), atol=1e-6, rtol=0)


def test_default_max_length_is_512_or_the_positions_without_a_warning(gpt2_16: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Encoder.from_pretrained(str(gpt2_16)).max_length == 16
        llama = _save(tmp_path / "llama", "llama", max_position_embeddings=1024)
        assert Encoder.from_pretrained(str(llama)).max_length == 512


def test_llama_past_its_trained_positions_is_capped(tmp_path: Path) -> None:
    folder = _save(tmp_path / "llama", "llama", max_position_embeddings=32)
    with pytest.warns(UserWarning, match="more than the model's 32 positions"):
        assert Encoder.from_pretrained(str(folder), max_length=100).max_length == 32


def test_cli_max_length_above_positions_warns_and_writes(
    gpt2_16: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "t.txt"
    source.write_text(LONG_TEXT + "\n", encoding="utf-8")
    code = main(["encode", "--model", str(gpt2_16), "--max-length", "64", str(source), "-o", str(tmp_path / "o.npy")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err
    assert "16 positions" in err
    assert np.load(tmp_path / "o.npy").shape == (1, 32)


def test_damaged_safetensors_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _save(tmp_path / "m", "llama")
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[:8] = (1 << 40).to_bytes(8, "little")  # a header length far beyond the file
    weights.write_bytes(bytes(data))
    capsys.readouterr()  # the progress bar of saving the model
    source = tmp_path / "t.txt"
    source.write_text("a cat\n", encoding="utf-8")
    code = main(["encode", "--model", str(folder), str(source), "-o", str(tmp_path / "o.npy")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: the weights of")
    assert "could not be read" in err and "truncated or damaged" in err


def test_truncated_safetensors_is_a_nosink_error(tmp_path: Path) -> None:
    folder = _save(tmp_path / "m", "llama")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(NosinkError, match="truncated or damaged"):
        Encoder.from_pretrained(str(folder))


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (torch.tensor([[1, VOCAB]]), rf"must be in \[0, {VOCAB}\)"),
        (torch.tensor([[1, -1]]), rf"must be in \[0, {VOCAB}\)"),
        (torch.tensor([[1.0, 2.0]]), "integer token ids, got torch.float32"),
        (torch.tensor([[True, False]]), "integer token ids, got torch.bool"),
        (torch.ones(1, 200, dtype=torch.long), "200 tokens, more than the model's 128 positions"),
    ],
)
def test_hidden_states_refuses_ids_the_model_cannot_take(ids: torch.Tensor, message: str) -> None:
    encoder = Encoder.from_model(tiny_model("gpt2"), tiny_tokenizer())
    with pytest.raises(NosinkError, match=message):
        encoder.hidden_states(ids)


def test_hidden_states_refuses_a_mask_that_is_not_a_tensor() -> None:
    encoder = Encoder.from_model(tiny_model("llama"), tiny_tokenizer())
    with pytest.raises(NosinkError, match="must be a tensor matching input_ids"):
        encoder.hidden_states(torch.tensor([[1, 2]]), [[1, 1]])  # type: ignore[arg-type]


# -------------------------------------------------------------------- hub names offline (issue 13, item 19)


@pytest.fixture
def hub_unreachable(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The hub check says "unreachable" (and counts its calls); nothing is in the Hugging Face cache."""
    from nosink import hub, loading

    calls: list[str] = []

    def unreachable(**kwargs: object) -> str:
        calls.append("asked")
        return "test: no network"

    monkeypatch.setattr(hub, "hub_unreachable_reason", unreachable)
    monkeypatch.setattr(hub, "is_cached", lambda repo_id: False)
    loading._offline_kwargs.cache_clear()
    yield calls
    loading._offline_kwargs.cache_clear()


def test_a_hub_name_offline_fails_at_once(hub_unreachable: list[str], tmp_path: Path, capsys) -> None:
    """Before: transformers retried the network 5 times over 27 s, then blamed the connection."""
    with pytest.raises(NosinkError, match=r"'stories260k' is not a local folder or \.gguf file, and the Hugging Face"):
        Encoder.from_pretrained("stories260k")
    source = tmp_path / "t.txt"
    source.write_text("a cat\n", encoding="utf-8")
    assert main(["encode", "--model", "org/some-model", str(source), "-o", str(tmp_path / "o.npy")]) == 2
    assert "is unreachable (test: no network)" in capsys.readouterr().err
    assert hub_unreachable == ["asked", "asked"]  # once per name, no retries


def test_a_cached_hub_name_offline_loads_from_the_cache(hub_unreachable: list[str], monkeypatch) -> None:
    from nosink import hub
    from nosink.loading import ModelSource

    monkeypatch.setattr(hub, "is_cached", lambda repo_id: True)
    assert ModelSource("org/cached-model").hub_kwargs() == {"local_files_only": True}


def test_local_folders_never_ask_the_hub(hub_unreachable: list[str], gpt2_16: Path) -> None:
    Encoder.from_pretrained(str(gpt2_16))
    assert hub_unreachable == []


# -------------------------------------------------------------------- transformers' LOAD REPORT (issue 13, item 19)


@pytest.fixture
def load_reports() -> Iterator[list[str]]:
    """What transformers' loading logger hands to its handlers (after the logger's own filters)."""
    import logging

    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger, handler = logging.getLogger("transformers.modeling_utils"), Collect(level=logging.WARNING)
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)


def test_an_untied_lm_head_left_out_gives_no_load_report(
    tmp_path: Path, load_reports: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Before: every checkpoint with an untied LM head printed a LOAD REPORT table (lm_head.weight UNEXPECTED)."""
    import logging

    model = tiny_model("llama", causal_lm=True)
    model.config.tie_word_embeddings = False
    model.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    with caplog.at_level(logging.DEBUG, logger="nosink.loading"):
        Encoder.from_pretrained(str(tmp_path))
    assert not [message for message in load_reports if "LOAD REPORT" in message]
    assert any("lm_head.weight" in record.getMessage() for record in caplog.records)  # kept in the debug log


def test_other_load_reports_stay_and_lose_their_colours(tmp_path: Path, load_reports: list[str]) -> None:
    from safetensors.torch import load_file, save_file

    folder = _save(tmp_path / "m", "llama")
    weights = load_file(folder / "model.safetensors")
    missing = next(name for name in weights if name.endswith("layers.0.mlp.up_proj.weight"))
    save_file({name: value for name, value in weights.items() if name != missing}, folder / "model.safetensors")
    Encoder.from_pretrained(str(folder))
    reports = [message for message in load_reports if "LOAD REPORT" in message]
    assert len(reports) == 1 and "MISSING" in reports[0] and "up_proj" in reports[0]
    assert "\x1b[" not in reports[0]
