"""Saving a converted encoder (issue 16): the folder loads back in nosink, sentence-transformers, the CLI,
the server and mteb, with the same vectors. The oracle is ``Encoder.encode`` on the encoder that was
saved, itself tested against hand-written references elsewhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import STORIES, tiny_model, tiny_tokenizer
from safetensors import safe_open

from nosink import Encoder, NosinkError
from nosink.cli import main
from nosink.inputs import instruction_prompt

SentenceTransformer = pytest.importorskip("sentence_transformers").SentenceTransformer

TEXTS = [
    "the cat sat on the mat",
    "a little girl named lily loved to play outside in the park",
    "sun",
    "she was happy and the sun was shining on the big red ball",
]
PROMPTS = {"query": instruction_prompt("Find stories about animals"), "document": "story: "}
CASES = {  # name -> (plan, recipe)
    "plan": ("mask0&bidir:k=3,k0=1", None),
    "plan+echo+layer": ("mask0-bidir:k=2", "prompt=echo,layer=-2"),
    "two templates": ("inplace-bidir:k=2", 'prompt=["In short, {text} means:", "{text} is about"],pool=last'),
}


def stories(plan: str, recipe: str | None, **options: object) -> Encoder:
    return Encoder.from_pretrained(str(STORIES), plan=plan, recipe=recipe, prompts=PROMPTS, **options)


@pytest.mark.parametrize("case", CASES)
def test_sentence_transformers_loads_the_folder_with_the_same_vectors(case: str, tmp_path: Path) -> None:
    plan, recipe = CASES[case]
    encoder = stories(plan, recipe)
    folder = encoder.save_pretrained(tmp_path / "model")
    model = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")
    np.testing.assert_allclose(model.encode(TEXTS, batch_size=3), encoder.encode(TEXTS), atol=1e-5, rtol=0)
    queries = model.encode_query(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(queries, encoder.encode(TEXTS, prompt_name="query", normalize=True), atol=1e-5)
    assert not np.allclose(queries, encoder.encode(TEXTS, normalize=True), atol=1e-3)  # the prompt counts
    np.testing.assert_allclose(model.encode_document(TEXTS), encoder.encode_document(TEXTS), atol=1e-5, rtol=0)
    task = "Retrieve stories about the sun"
    np.testing.assert_allclose(
        model.encode(TEXTS, prompt=instruction_prompt(task)), encoder.encode(TEXTS, instruction=task), atol=1e-5
    )
    assert model.similarity_fn_name == "cosine" and model.get_embedding_dimension() == encoder.dim


def test_a_tiny_random_model_round_trips_through_sentence_transformers(tmp_path: Path) -> None:
    import torch

    chat = tiny_model("llama", causal_lm=True)
    prompt = torch.tensor([[1, 5, 9, 13]])
    config, generated = chat.config.to_dict(), chat.generate(prompt, max_new_tokens=6, do_sample=False)
    encoder = Encoder.from_model(chat, tiny_tokenizer(), plan="mask1-bidir:k=2", recipe="prompt=prompteol")
    folder = encoder.save_pretrained(tmp_path / "tiny")
    assert chat.config.to_dict() == config  # saving the backbone left the chat model's config alone
    assert torch.equal(chat.generate(prompt, max_new_tokens=6, do_sample=False), generated)
    model = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")
    texts = ["the cat sat on the mat", "a dog ran in the park"]
    np.testing.assert_allclose(model.encode(texts), encoder.encode(texts), atol=1e-5, rtol=0)
    with safe_open(str(folder / "model.safetensors"), "pt") as weights:
        keys = list(weights.keys())
    assert not any("lm_head" in key for key in keys)  # the backbone only, once
    stored = sum(p.numel() for p in encoder.base.parameters())
    assert (folder / "model.safetensors").stat().st_size < 1.1 * 4 * stored
    assert sorted(p.name for p in folder.glob("*.safetensors")) == ["model.safetensors"]


def test_nosink_loads_the_folder_back_with_every_setting(tmp_path: Path) -> None:
    encoder = stories("mask0-bidir:k=2", "prompt=echo,layer=-2", max_length=300, default_prompt_name="query")
    folder = encoder.save_pretrained(tmp_path / "model")
    loaded = Encoder.from_pretrained(str(folder))
    assert (str(loaded.plan), str(loaded.recipe), loaded.pooling, loaded.max_length) == (
        str(encoder.plan),
        str(encoder.recipe),
        encoder.pooling,
        300,
    )
    assert loaded.prompts == PROMPTS and loaded.default_prompt_name == "query"
    assert loaded.base_model_name == str(STORIES)
    np.testing.assert_allclose(loaded.encode(TEXTS), encoder.encode(TEXTS), atol=1e-6, rtol=0)
    np.testing.assert_allclose(  # the default prompt is the query prompt
        loaded.encode(TEXTS), encoder.encode(TEXTS, prompt=PROMPTS["query"]), atol=1e-6, rtol=0
    )
    other = Encoder.from_pretrained(str(folder), plan="baseline", recipe="default")  # what is given wins
    assert str(other.plan) == "baseline" and other.recipe.is_default and other.prompts == PROMPTS
    merged = Encoder.from_pretrained(str(folder), prompts={"document": "passage: "})  # merged, as in s-t
    assert merged.prompts == {**PROMPTS, "document": "passage: "} and merged.default_prompt_name == "query"
    card = (folder / "README.md").read_text()
    assert "mask0-bidir:k=2" in card and str(STORIES) in card and "Look Both Ways and No Sink" in card


def test_a_folder_can_reference_the_base_model_instead_of_copying_it(tmp_path: Path) -> None:
    from nosink.corpus.shards import iter_shards
    from nosink.eval.mteb_adapter import NosinkMTEBModel

    encoder = stories("mask0-bidir:k=2", None)
    folder = encoder.save_pretrained(tmp_path / "light", weights="reference")
    assert not list(folder.glob("*.safetensors")) and not (folder / "config.json").exists()
    assert json.loads((folder / "nosink.json").read_text())["weights"] == str(STORIES.resolve())
    loaded = Encoder.from_pretrained(str(folder))
    assert loaded.name == str(folder) and loaded.base_model_name == str(STORIES)
    np.testing.assert_allclose(loaded.encode(TEXTS), encoder.encode(TEXTS), atol=1e-6)
    model = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")
    np.testing.assert_allclose(model.encode(TEXTS), encoder.encode(TEXTS), atol=1e-5, rtol=0)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    assert main(["embed", str(corpus), "-o", str(tmp_path / "out"), "--model", str(folder)]) == 0
    embedded = np.concatenate([shard.embeddings for shard in iter_shards(tmp_path / "out")])
    np.testing.assert_allclose(embedded, encoder.encode(TEXTS, normalize=True), atol=1e-6)
    meta = NosinkMTEBModel(loaded).mteb_model_meta
    assert meta.loader_kwargs == {"folder": str(folder.resolve())} and meta.adapted_from == str(STORIES)
    unnamed = Encoder.from_model(tiny_model("llama"), tiny_tokenizer())
    with pytest.raises(NosinkError, match="neither a local folder nor a hub name"):
        unnamed.save_pretrained(tmp_path / "nowhere", weights="reference")
    assert not (tmp_path / "nowhere").exists()


def test_saving_mistakes_are_clear(tmp_path: Path) -> None:
    encoder = stories("baseline", None)
    with pytest.raises(NosinkError, match="already exists"):
        encoder.save_pretrained(tmp_path)
    with pytest.raises(NosinkError, match="unknown weights 'link'; use one of copy, reference"):
        encoder.save_pretrained(tmp_path / "x", weights="link")
    folder = encoder.save_pretrained(tmp_path / "model")
    (folder / "nosink.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(NosinkError, match="format 99"):
        Encoder.from_pretrained(str(folder))
    model_folder = stories("baseline", None).save_pretrained(tmp_path / "again")
    model = SentenceTransformer(str(model_folder), trust_remote_code=True, device="cpu")
    with pytest.raises(NosinkError, match=r"Encoder\.save_pretrained"):
        model.save(str(tmp_path / "resaved"))


def test_nosink_save_then_encode_embed_and_serve_use_the_saved_settings(tmp_path: Path, capsys) -> None:
    import httpx
    from test_server import running

    from nosink.corpus.shards import iter_shards
    from nosink.server.serve import load_app
    from nosink.server.settings import ServerSettings

    folder = tmp_path / "saved"
    command = ["save", "--model", str(STORIES), "--plan", "mask0-bidir:k=2", "--recipe", "layer=-2", "-o", str(folder)]
    prompts = ["--query-instruction", "Find stories", "--prompt", "document=", "--default-prompt-name", "query"]
    assert main([*command, *prompts, "--max-length", "300"]) == 0
    query = instruction_prompt("Find stories")
    expected = Encoder.from_pretrained(
        str(STORIES), plan="mask0-bidir:k=2", recipe="layer=-2", prompts={"query": query}, default_prompt_name="query"
    )
    assert not np.allclose(expected.encode(TEXTS), expected.encode(TEXTS, prompt=""), atol=1e-3)  # it applies
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    assert main(["encode", "--model", str(folder), str(texts), "-o", str(tmp_path / "v.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), expected.encode(TEXTS), atol=1e-6)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    assert main(["embed", str(corpus), "-o", str(tmp_path / "out"), "--model", str(folder)]) == 0
    embedded = np.concatenate([shard.embeddings for shard in iter_shards(tmp_path / "out")])
    np.testing.assert_allclose(embedded, expected.encode(TEXTS, normalize=True), atol=1e-6)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["encoder"]["plan"] == "mask0-bidir:k=2" and manifest["encoder"]["default_prompt"] == query
    from nosink.corpus.job import EncoderSpec

    spec = EncoderSpec(str(folder))  # from Python too: the folder's settings, not the defaults
    assert spec.identity() == manifest["encoder"] and str(spec.load().plan) == "mask0-bidir:k=2"

    app = load_app(ServerSettings(model=str(folder)))  # no --plan, no --max-length: the saved ones
    encoder = app.state.service.encoder
    assert str(encoder.plan) == "mask0-bidir:k=2" and encoder.prompts["query"] == query
    assert app.state.service.settings.max_length == encoder.max_length == 300
    with running(encoder) as url:
        served = httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS}).json()
    vectors = [item["embedding"] for item in served["data"]]
    np.testing.assert_allclose(vectors, expected.encode(TEXTS, normalize=True), atol=1e-5)
    bad = ["save", "--model", str(STORIES), "-o", str(tmp_path / "b"), "--prompt", "query"]
    assert main(bad) == 2 and "NAME=TEXT" in capsys.readouterr().err
    assert main(["save", "--model", str(STORIES), "-o", str(folder)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_a_recipe_given_at_load_time_replaces_the_saved_one_with_its_own_pooling(tmp_path: Path) -> None:
    folder = stories("mask0-bidir:k=2", "prompt=prompteol").save_pretrained(tmp_path / "m")
    assert json.loads((folder / "nosink.json").read_text())["pooling"] == "mean"  # prompteol's pooling is its own
    assert Encoder.from_pretrained(str(folder)).pooling.value == "last"
    replaced = Encoder.from_pretrained(str(folder), recipe="layer=-2")
    assert replaced.pooling.value == "mean" and str(replaced.recipe) == "layer=-2"
    assert Encoder.from_pretrained(str(folder)).with_recipe("layer=-2").pooling.value == "mean"


def test_mteb_runs_a_saved_model_and_records_the_conversion(tmp_path: Path) -> None:
    mteb = pytest.importorskip("mteb")
    from mteb.cache import ResultCache
    from mteb.mocks.mock_tasks import MockClassificationTask, MockSTSTask

    from nosink.eval.mteb_adapter import NosinkMTEBModel

    encoder = stories("mask0-bidir:k=2", "layer=-2")
    folder = encoder.save_pretrained(tmp_path / "model")
    model = NosinkMTEBModel(Encoder.from_pretrained(str(folder)))
    meta = model.mteb_model_meta
    assert meta.adapted_from == str(STORIES)
    assert meta.experiment_kwargs["plan"] == "mask0-bidir:k=2" and meta.experiment_kwargs["recipe"] == "layer=-2"
    loaded = meta.load_model()  # mteb rebuilds the model from the meta's loader
    assert isinstance(loaded, NosinkMTEBModel) and str(loaded.embedder.plan) == "mask0-bidir:k=2"
    cache = ResultCache(tmp_path / "cache")
    result = mteb.evaluate(loaded, [MockSTSTask(), MockClassificationTask()], cache=cache, show_progress_bar=False)
    scores = {r.task_name: r.get_score() for r in result.task_results}
    assert set(scores) == {"MockSTSTask", "MockClassificationTask"} and all(np.isfinite(list(scores.values())))
    (recorded,) = (tmp_path / "cache").rglob("model_meta.json")
    saved_meta = json.loads(recorded.read_text())
    assert saved_meta["adapted_from"] == str(STORIES) and saved_meta["experiment_kwargs"]["plan"] == "mask0-bidir:k=2"
