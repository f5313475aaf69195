"""Baseline embedders (plain BERT-like encoders, sentence-transformers) and the embedder loader; no downloads."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from conftest import CORPUS
from transformers import AutoModel, AutoTokenizer

from nosink import Encoder, NosinkError
from nosink.eval.base import Embedder, EmbedderKind
from nosink.eval.baselines import (
    HFMeanPoolEmbedder,
    SentenceTransformerEmbedder,
    import_sentence_transformers,
    with_instruction,
)
from nosink.eval.embedders import describe_embedder, load_embedder, parse_spec

STORIES = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "stories260k"
MAX_POSITIONS = 64
INSTRUCTION = "Retrieve semantically similar text."
# Lengths differ a lot, so the batch is padded; the last text is longer than MAX_POSITIONS tokens.
TEXTS = [
    "the cat sat",
    CORPUS[1],
    "once upon a time there was a big red ball and the dog looked at the ball",
    "the",
    " ".join(CORPUS * 3),
]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT and a WordPiece tokenizer saved to a folder (what a hub download would give)."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    words = sorted({word for line in CORPUS for word in line.split()} | {"instruct", "query", ":", "retrieve", "."})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    tokenizer = transformers.BertTokenizer(vocab={token: i for i, token in enumerate(vocab)})
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=MAX_POSITIONS,
        initializer_range=0.2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def reference_embeddings(folder: Path, texts: list[str], *, pooling: str = "mean") -> np.ndarray:
    """Hand-written masked mean (or first token) of ``AutoModel(...)(...).last_hidden_state`` on one padded batch."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=MAX_POSITIONS, return_tensors="pt")
    assert not bool(encoded["attention_mask"].all()), "the reference batch must contain padding"
    with torch.no_grad():
        states = model(**encoded).last_hidden_state  # [B, T, D]
    if pooling == "cls":
        return states[:, 0].numpy()
    mask = encoded["attention_mask"].unsqueeze(-1).float()  # [B, T, 1]
    return ((states * mask).sum(1) / mask.sum(1)).numpy()  # [B, D]


def build_sentence_transformer(folder: Path):
    """A SentenceTransformer assembled offline from the folder: Transformer + mean Pooling."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    transformer = Transformer(str(folder))
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    return SentenceTransformer(modules=[transformer, pooling], device="cpu")


# ---------------------------------------------------------------- HFMeanPoolEmbedder


def test_hf_mean_pool_equals_hand_written_masked_mean(bert_dir: Path) -> None:
    embedder = HFMeanPoolEmbedder(bert_dir, device="cpu")
    vectors = embedder.encode(TEXTS, batch_size=len(TEXTS))
    assert vectors.shape == (len(TEXTS), 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, reference_embeddings(bert_dir, TEXTS), atol=1e-6, rtol=0)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_baselines_refuse_a_bad_batch_size_as_encode_does(bert_dir: Path, bad: object) -> None:
    """Before: batch_size=0 silently became 32 for st: and hf: baselines, while nosink's encode refused it."""
    for embedder in (
        HFMeanPoolEmbedder(bert_dir, device="cpu"),
        SentenceTransformerEmbedder(build_sentence_transformer(bert_dir)),
    ):
        with pytest.raises(NosinkError, match="batch_size must be a positive integer"):
            embedder.encode(TEXTS, batch_size=bad)


def test_hf_text_alone_equals_it_inside_a_batch(bert_dir: Path) -> None:
    embedder = HFMeanPoolEmbedder(bert_dir, device="cpu")
    batched = embedder.encode(TEXTS, batch_size=2)  # batches of different padding
    for i, text in enumerate(TEXTS):
        np.testing.assert_allclose(embedder.encode([text])[0], batched[i], atol=1e-6, rtol=0)


def test_hf_cls_pooling_takes_the_first_token(bert_dir: Path) -> None:
    embedder = HFMeanPoolEmbedder(bert_dir, pooling="cls", device="cpu")
    expected = reference_embeddings(bert_dir, TEXTS, pooling="cls")
    np.testing.assert_allclose(embedder.encode(TEXTS), expected, atol=1e-6, rtol=0)
    assert not np.allclose(expected, reference_embeddings(bert_dir, TEXTS), atol=1e-3)


def test_hf_instruction_is_prepended_as_text(bert_dir: Path) -> None:
    embedder = HFMeanPoolEmbedder(bert_dir, device="cpu")
    with_it = embedder.encode(TEXTS[:3], instruction=INSTRUCTION)
    expected = reference_embeddings(bert_dir, [f"Instruct: {INSTRUCTION}\nQuery: {text}" for text in TEXTS[:3]])
    np.testing.assert_allclose(with_it, expected, atol=1e-6, rtol=0)
    assert not np.allclose(with_it, embedder.encode(TEXTS[:3]), atol=1e-3)


def test_hf_normalize_empty_input_and_truncation(bert_dir: Path) -> None:
    embedder = HFMeanPoolEmbedder(bert_dir, device="cpu", max_length=512)
    assert embedder.max_length == MAX_POSITIONS  # clamped to the model's position embeddings
    norms = np.linalg.norm(embedder.encode(TEXTS, normalize=True), axis=-1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-6)
    assert embedder.encode([]).shape == (0, 32)
    with pytest.raises(NosinkError, match="single string"):
        embedder.encode("one text")
    with pytest.raises(NosinkError, match="pooling"):
        HFMeanPoolEmbedder(bert_dir, pooling="last")


def test_hf_from_model_shares_the_model(bert_dir: Path) -> None:
    model = AutoModel.from_pretrained(bert_dir).eval()
    embedder = HFMeanPoolEmbedder.from_model(model, AutoTokenizer.from_pretrained(bert_dir))
    assert embedder.model is model
    np.testing.assert_allclose(embedder.encode(TEXTS), reference_embeddings(bert_dir, TEXTS), atol=1e-6, rtol=0)


# ---------------------------------------------------------------- SentenceTransformerEmbedder


def test_sentence_transformer_equals_the_same_mean(bert_dir: Path) -> None:
    embedder = SentenceTransformerEmbedder(build_sentence_transformer(bert_dir))
    assert isinstance(embedder, Embedder)
    vectors = embedder.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, reference_embeddings(bert_dir, TEXTS), atol=1e-5, rtol=0)


def test_sentence_transformer_instruction_is_prepended_as_text(bert_dir: Path) -> None:
    embedder = SentenceTransformerEmbedder(build_sentence_transformer(bert_dir))
    expected = reference_embeddings(bert_dir, with_instruction(TEXTS[:3], INSTRUCTION))
    np.testing.assert_allclose(embedder.encode(TEXTS[:3], instruction=INSTRUCTION), expected, atol=1e-5, rtol=0)
    norms = np.linalg.norm(embedder.encode(TEXTS, normalize=True), axis=-1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    assert embedder.encode([]).shape == (0, 32)


def test_missing_sentence_transformers_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # makes the import fail
    with pytest.raises(NosinkError, match=r'pip install "nosink\[mteb\]"'):
        import_sentence_transformers()


# ---------------------------------------------------------------- load_embedder / describe_embedder


def test_load_embedder_hf_and_st(bert_dir: Path) -> None:
    reference = reference_embeddings(bert_dir, TEXTS)
    hf = load_embedder(f"hf:{bert_dir}", device="cpu")
    assert isinstance(hf, HFMeanPoolEmbedder)
    np.testing.assert_allclose(hf.encode(TEXTS), reference, atol=1e-6, rtol=0)
    cls = load_embedder(f"hf:{bert_dir}", pooling="cls", device="cpu")
    assert cls.pooling.value == "cls"
    st = load_embedder(f"st:{bert_dir}", device="cpu")  # no modules.json: sentence-transformers adds mean pooling
    assert isinstance(st, SentenceTransformerEmbedder)
    np.testing.assert_allclose(st.encode(TEXTS), reference, atol=1e-5, rtol=0)
    described = describe_embedder(st)
    assert described["kind"] == "st" and described["name"] == str(bert_dir) and described["plan"] is None
    assert described["pooling"] == "mean" and described["dtype"] == "float32" and described["device"] == "cpu"
    assert describe_embedder(hf) == {
        "kind": "hf",
        "name": str(bert_dir),
        "plan": None,
        "pooling": "mean",
        "dtype": "float32",
        "device": "cpu",
        "dim": 32,
        "max_length": MAX_POSITIONS,
        "path": str(Path(bert_dir).resolve()),  # a local folder: its absolute path is the source
        "revision": None,
    }


@pytest.mark.parametrize("prefix", ["nosink:", ""])
def test_load_embedder_nosink(prefix: str) -> None:
    if not STORIES.exists():
        pytest.skip("../shared/models/stories260k is not available")
    encoder = load_embedder(f"{prefix}{STORIES}", plan="mask0-bidir:k=2", pooling="last", device="cpu")
    assert isinstance(encoder, Encoder)
    assert str(encoder.plan) == "mask0-bidir:k=2" and encoder.pooling.value == "last"
    described = describe_embedder(encoder)
    assert described == {
        "kind": "nosink",
        "name": str(STORIES),
        "plan": "mask0-bidir:k=2",
        "pooling": "last",
        "dtype": "float32",
        "device": "cpu",
        "dim": encoder.dim,
        "max_length": 512,
        "recipe": "default",
        "path": str(STORIES.resolve()),
        "revision": None,
    }
    default = load_embedder(str(STORIES), device="cpu")
    assert str(default.plan) == "baseline" and default.pooling.value == "mean"


def test_parse_spec() -> None:
    assert parse_spec("st:BAAI/bge-m3") == (EmbedderKind.SENTENCE_TRANSFORMERS, "BAAI/bge-m3")
    assert parse_spec("hf:ProsusAI/finbert") == (EmbedderKind.HF, "ProsusAI/finbert")
    assert parse_spec("nosink:TinyLlama/TinyLlama_v1.1") == (EmbedderKind.NOSINK, "TinyLlama/TinyLlama_v1.1")
    assert parse_spec("TinyLlama/TinyLlama_v1.1") == (EmbedderKind.NOSINK, "TinyLlama/TinyLlama_v1.1")
    assert parse_spec("C:\\models\\llama") == (EmbedderKind.NOSINK, "C:\\models\\llama")


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        ("foo:bar", {}, "unknown embedder kind 'foo'"),
        ("st:", {}, "names no model"),
        ("", {}, "non-empty string"),
        ("st:BAAI/bge-m3", {"plan": "mask0-bidir:k=2"}, "plan applies only to nosink"),
        ("hf:ProsusAI/finbert", {"plan": "baseline"}, "plan applies only to nosink"),
        ("st:BAAI/bge-m3", {"pooling": "mean"}, "own sentence-transformers Pooling"),
    ],
)
def test_load_embedder_errors(spec: str, kwargs: dict, message: str) -> None:
    with pytest.raises(NosinkError, match=message):
        load_embedder(spec, **kwargs)


def test_describe_any_embedder() -> None:
    class Plain:
        def encode(self, texts, *, instruction=None, batch_size=None, normalize=False, show_progress_bar=None):
            return np.zeros((len(texts), 3), dtype=np.float32)

    assert describe_embedder(Plain())["kind"] == "Plain"


# ---------------------------------------------------------------- the CLI's defaults for baselines (issue 13, item 18)


SICK = STORIES.parent.parent / "data" / "sick" / "SICK_trial.txt"


def _cli_sts(model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[dict, dict]:
    import json

    from nosink.cli import main

    record = tmp_path / "r.json"
    args = ["eval", "sts", "--model", model, "--data", str(SICK), "--limit", "30", "--record", str(record), *extra]
    assert main(args) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out), json.loads(record.read_text())


@pytest.mark.parametrize("kind", ["st", "hf"])
def test_cli_baselines_run_with_the_default_pooling_and_no_instruction(
    kind: str, bert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: st: was refused with the default pooling, and st:/hf: got the paper's E5 instruction by default
    (all-MiniLM-L6-v2 then scored 66.77 on STS-B test instead of its published 82.03)."""
    from nosink.eval.data import load_pairs
    from nosink.eval.sts import evaluate_sts

    printed, record = _cli_sts(f"{kind}:{bert_dir}", tmp_path, capsys)
    assert record["settings"]["instruction"] is None
    expected = evaluate_sts(load_embedder(f"{kind}:{bert_dir}", device="cpu"), load_pairs(SICK, limit=30))
    assert printed["spearman"] == pytest.approx(expected.metrics["spearman"], abs=1e-6)
    _, asked = _cli_sts(f"{kind}:{bert_dir}", tmp_path, capsys, "--instruction", INSTRUCTION)
    assert asked["settings"]["instruction"] == INSTRUCTION


def test_cli_nosink_models_keep_the_paper_instruction(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nosink.eval.commands import STS_INSTRUCTION

    _, record = _cli_sts(str(STORIES), tmp_path, capsys)
    assert record["settings"]["instruction"] == STS_INSTRUCTION
    _, bare = _cli_sts(str(STORIES), tmp_path, capsys, "--no-instruction")
    assert bare["settings"]["instruction"] is None
