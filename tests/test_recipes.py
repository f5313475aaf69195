"""Recipes (layer read-out): the string form, and every read-out against the independent reference of
tests/reference.py and against transformers' own hidden states, under padding, packing and sweeps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_model, tiny_tokenizer, windowed_gemma3
from reference import Reference
from test_equivalence import batch

from nosink import Encoder, NosinkError, Plan
from nosink.eval.sweep import family_plans, sweep_features
from nosink.recipe import METAEOL_TEMPLATES, Recipe

TEXTS = [
    "the cat sat on the mat",
    "a little girl named lily loved to play outside in the park",
    "sun",
    "she was happy and the sun was shining on the big red ball",
]
PLANS = {  # plan string -> the reference's description (single-pass plans: any layer can be read out)
    "baseline": {"name": "baseline"},
    "inplace-bidir:k=2": {"name": "inplace-bidir", "k": 2},
    "mask0&bidir:k=3,k0=1": {"name": "mask&bidir", "k": 3, "k0": 1, "m": 0},
    "mask2-all:k=1": {"name": "mask-all", "k": 1, "m": 2},
}
RECIPES = ["layer=2", "layer=-2,norm=off", "layer=0", "layer=1..3", "layer=-3..-1,norm=off", "layer=-1,norm=off"]


# -------------------------------------------------------------------- the string form


@pytest.mark.parametrize(
    ("text", "depths", "norm"),
    [
        ("default", [4], True),
        ("", [4], True),
        ("layer=-1", [4], True),
        ("layer=0", [0], True),
        ("layer=2,norm=off", [2], False),
        ("layer=-4", [1], True),
        ("layer=-5", [0], True),
        ("layer=1..3", [1, 2, 3], True),
        ("norm=off, layer=-2..-1", [3, 4], False),
    ],
)
def test_recipe_strings(text: str, depths: list[int], norm: bool) -> None:
    recipe = Recipe.parse(text)
    assert recipe.depths(4) == depths and recipe.norm is norm
    assert Recipe.parse(str(recipe)) == recipe  # the string form round-trips
    assert recipe.is_default == (depths == [4] and norm)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("layer=7", "outside this model's 4 layers"),
        ("layer=-6", "outside this model's 4 layers"),
        ("layer=3..1", "is empty"),
        ("layer=two", "layer must be J or A..B"),
        ("layer=1...3", "layer must be J or A..B"),
        ("norm=maybe", "norm must be on or off"),
        ("pool=median", "unknown pooling 'median'"),
        ("size=3", "unknown recipe setting 'size=3'"),
        ("layer=1,layer=2", "given twice"),
        ("layer", "unknown recipe setting"),
    ],
)
def test_bad_recipes_are_refused_clearly(text: str, message: str) -> None:
    with pytest.raises(NosinkError, match=message):
        Recipe.parse(text).depths(4)


def test_a_branched_plan_has_only_its_output() -> None:
    model, tokenizer = tiny_model("llama"), tiny_tokenizer()
    with pytest.raises(NosinkError, match="only its output is defined"):
        Encoder.from_model(model, tokenizer, plan="inter-bidir:k=2", recipe="layer=2")
    plain = Encoder.from_model(model, tokenizer, plan="inter-bidir:k=2")
    unnormed = plain.with_recipe("layer=-1,norm=off")
    ids, mask = batch([9, 5], "right")
    states = unnormed.hidden_states(ids, mask)  # [B, T, D], before the final norm
    torch.testing.assert_close(model.norm(states), plain.hidden_states(ids, mask), atol=1e-5, rtol=0)


# -------------------------------------------------------------------- against the references


@pytest.mark.parametrize("padding", ["left", "right"])
@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3_text", "qwen3"])
def test_every_readout_matches_the_reference(family: str, padding: str) -> None:
    ours = tiny_model(family)
    hand_written = family in ("llama", "gpt2")
    reference = Reference(ours if hand_written else tiny_model(family, attn="eager"), hand_written=hand_written)
    ids, mask = batch([10, 7, 3, 1], padding)
    for plan, config in PLANS.items():
        default = Encoder.from_model(ours, tiny_tokenizer(), plan=plan).hidden_states(ids, mask)
        for text in RECIPES:
            encoder = Encoder.from_model(ours, tiny_tokenizer(), plan=plan, recipe=text)
            recipe = encoder.recipe
            states = encoder.hidden_states(ids, mask)  # [B, T, D]
            for row in range(ids.shape[0]):
                real = mask[row].bool()
                expected = reference.readout(ids[row][real], config, recipe.depths(4), norm=recipe.norm)
                torch.testing.assert_close(states[row][real], expected, atol=1e-5, rtol=0, msg=f"{plan} / {text}")
            assert (states - default).abs().max() > 1e-3, f"{plan} / {text} must change the states"


def test_windowed_layers_keep_their_window_in_a_readout() -> None:
    ours, eager = windowed_gemma3(window=3)
    reference = Reference(eager, hand_written=False)
    ids, mask = batch([10, 6], "left")
    encoder = Encoder.from_model(ours, tiny_tokenizer(), plan="inplace-bidir:k=2", recipe="layer=2..3")
    states = encoder.hidden_states(ids, mask)
    for row in range(2):
        real = mask[row].bool()
        expected = reference.readout(ids[row][real], PLANS["inplace-bidir:k=2"], [2, 3], norm=True)
        torch.testing.assert_close(states[row][real], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_intermediate_layers_equal_transformers_hidden_states(family: str) -> None:
    """Baseline plan, no norm: layer j is transformers' ``hidden_states[j]`` (its own forward, padded batch)."""
    model = tiny_model(family)
    ids, mask = batch([10, 7, 3], "right")
    with torch.no_grad():
        theirs = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    real = mask.bool()
    for depth in range(4):  # hidden_states[4] is the normed output in transformers 5
        ours = Encoder.from_model(model, tiny_tokenizer(), recipe=f"layer={depth},norm=off").hidden_states(ids, mask)
        torch.testing.assert_close(ours[real], theirs[depth][real], atol=1e-5, rtol=0, msg=f"layer {depth}")


# -------------------------------------------------------------------- pooling, packing, sweeps


@pytest.mark.parametrize("recipe", ["layer=2", "layer=1..3,norm=off"])
def test_a_readout_is_exact_under_padding_and_packing(recipe: str) -> None:
    encoder = Encoder.from_model(tiny_model("llama"), tiny_tokenizer(), plan="mask0-bidir:k=3", recipe=recipe)
    alone = np.concatenate([encoder.encode([text]) for text in TEXTS])
    np.testing.assert_allclose(encoder.encode(TEXTS, batch_size=4), alone, atol=1e-5, rtol=0)
    np.testing.assert_allclose(encoder.encode(TEXTS, packing=True), alone, atol=1e-5, rtol=0)
    tokens = encoder.encode_tokens([TEXTS[1]])[0].embeddings  # [n, D]: token states follow the recipe too
    assert not np.allclose(tokens, encoder.with_recipe(None).encode_tokens([TEXTS[1]])[0].embeddings)


@pytest.mark.parametrize("recipe", ["layer=2", "layer=-3..-1,norm=off"])
def test_sweeps_read_out_the_encoder_recipe(recipe: str) -> None:
    encoder = Encoder.from_model(tiny_model("qwen2"), tiny_tokenizer(), pooling="last", recipe=recipe)
    plans = family_plans("inplace-bidir", 4) + family_plans("mask0&bidir", 4, ks=[3], k0s=[1, 2])
    features = sweep_features(encoder, TEXTS, plans, batch_size=2)
    for plan, feature in zip(plans, features, strict=True):
        expected = encoder.with_plan(plan).encode(TEXTS)
        np.testing.assert_allclose(feature, expected, atol=1e-5, rtol=0, err_msg=str(plan))
    assert encoder.with_plan(plans[0]).recipe == encoder.recipe


# -------------------------------------------------------------------- the CLI


def test_cli_encode_reads_out_the_recipe(tmp_path, capsys) -> None:
    from conftest import STORIES

    from nosink.cli import main

    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    args = ["encode", "--model", str(STORIES), "--plan", "mask0-bidir:k=2", "--recipe", "layer=-3", str(texts)]
    assert main([*args, "-o", str(tmp_path / "o.npy")]) == 0
    assert "recipe layer=-3" in capsys.readouterr().err
    encoder = Encoder.from_pretrained(str(STORIES), plan="mask0-bidir:k=2")
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), encoder.with_recipe("layer=-3").encode(TEXTS), atol=1e-6)
    assert not np.allclose(np.load(tmp_path / "o.npy"), encoder.encode(TEXTS), atol=1e-3)
    assert (
        main(["encode", "--model", str(STORIES), "--recipe", "layer=9", str(texts), "-o", str(tmp_path / "x.npy")]) == 2
    )
    assert "recipe layer 9 is outside this model's 5 layers" in capsys.readouterr().err
    assert (
        main(["encode", "--model", str(STORIES), "--recipe", "lyr=2", str(texts), "-o", str(tmp_path / "x.npy")]) == 2
    )
    assert "unknown recipe setting 'lyr=2'" in capsys.readouterr().err


# -------------------------------------------------------------------- prompts: PromptEOL, echo, user templates

PROMPTEOL = 'This sentence : "{}" means in one word:"'


@pytest.fixture(scope="module")
def stories() -> Encoder:
    from conftest import stories_model, stories_tokenizer

    return Encoder.from_model(stories_model(), stories_tokenizer(), plan="mask0-bidir:k=2")


def alone_states(encoder: Encoder, string: str) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """The plan's states [n, D] of one string tokenized by hand (specials included), and its tokens' character spans."""
    encoded = encoder.tokenizer(string, return_offsets_mapping=True)
    ids = torch.tensor([encoded["input_ids"]])
    return encoder.hidden_states(ids)[0], [tuple(span) for span in encoded["offset_mapping"]]


def test_prompteol_pools_the_last_token_of_the_filled_template(stories: Encoder) -> None:
    encoder = stories.with_recipe("prompt=prompteol")
    assert encoder.pooling.value == "last" and str(encoder.recipe) == "prompt=prompteol,pool=last"
    expected = np.stack([alone_states(stories, PROMPTEOL.format(text))[0][-1].numpy() for text in TEXTS])
    np.testing.assert_allclose(encoder.encode(TEXTS, batch_size=4), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(encoder.encode(TEXTS, packing=True), expected, atol=1e-5, rtol=0)
    left = Encoder.from_model(stories.model, stories.tokenizer, plan=stories.plan, recipe="prompt=prompteol")
    left.tokenizer = type(stories.tokenizer).from_pretrained(stories.tokenizer.name_or_path, padding_side="left")
    np.testing.assert_allclose(left.encode(TEXTS, batch_size=4), expected, atol=1e-5, rtol=0)


def test_echo_pools_the_mean_of_the_second_copy(stories: Encoder) -> None:
    encoder = stories.with_recipe("prompt=echo")
    expected = []
    for text in TEXTS:
        string = f"Rewrite the sentence: {text}, rewritten sentence: {text}"
        states, spans = alone_states(stories, string)
        second = len(string) - len(text)  # the second copy ends the string
        rows = [n for n, (a, b) in enumerate(spans) if b > second and a < len(string) and b > a]
        expected.append(states[rows].mean(0).numpy())
    np.testing.assert_allclose(encoder.encode(TEXTS, batch_size=3), np.stack(expected), atol=1e-5, rtol=0)
    one_copy = stories.with_recipe('prompt="Rewrite the sentence: {text}",pool=mean').encode(TEXTS)
    assert not np.allclose(one_copy, np.stack(expected), atol=1e-3)  # the first copy changes what the second sees


def test_a_user_template_with_an_instruction_and_a_layer(stories: Encoder) -> None:
    recipe = 'prompt="Query, in short: {text} => \\"",pool=last,layer=-2'
    encoder = stories.with_recipe(recipe)
    assert Recipe.parse(str(encoder.recipe)) == encoder.recipe
    task = "Retrieve stories about animals"
    row = encoder.tokenize([TEXTS[0]], instruction=task)[0]
    string = f'Instruct: {task}\nQuery: Query, in short: {TEXTS[0]} => "'
    assert row.ids == stories.tokenizer(string)["input_ids"]  # one string, as the model reads it
    assert stories.tokenizer.decode(row.ids[row.text_start : row.text_end]).strip() == TEXTS[0]
    ids = torch.tensor([row.ids])
    expected = stories.with_recipe("layer=-2").hidden_states(ids)[0, -1]  # the last token, one layer down
    np.testing.assert_allclose(encoder.encode([TEXTS[0]], instruction=task)[0], expected.numpy(), atol=1e-5)


def test_over_long_texts_are_cut_inside_the_template(stories: Encoder) -> None:
    short = Encoder.from_model(stories.model, stories.tokenizer, recipe="prompt=prompteol", max_length=40)
    long_text = " ".join(["the little dog ran to the big park and played with a red ball"] * 3)
    with pytest.warns(UserWarning, match="truncated"):
        row = short.tokenize([long_text])[0]
    assert row.truncated and len(row.ids) <= 40
    assert stories.tokenizer.decode(row.ids[row.text_end :]).endswith('means in one word:"')  # the template stays whole
    kept = stories.tokenizer.decode(row.ids[row.text_start : row.text_end]).strip()
    assert long_text.startswith(kept) and len(kept) < len(long_text)
    assert row.ids == stories.tokenizer(PROMPTEOL.format(kept))["input_ids"]  # tokenized again around the cut text
    echo = Encoder.from_model(stories.model, stories.tokenizer, recipe="prompt=echo", max_length=50)
    with pytest.warns(UserWarning, match="truncated"):
        row = echo.tokenize([long_text])[0]
    assert len(row.ids) <= 50 and "rewritten sentence:" in stories.tokenizer.decode(row.ids)
    tiny = Encoder.from_model(stories.model, stories.tokenizer, recipe="prompt=prompteol", max_length=24)
    with pytest.raises(NosinkError, match="leaves no room for text after the prompt template"):
        tiny.encode([long_text])


def test_token_states_in_a_template_keep_their_words(stories: Encoder) -> None:
    words = TEXTS[1].split()
    encoding = stories.with_recipe("prompt=echo").encode_tokens([words])[0]
    assert {w for w in encoding.word_ids if w is not None} == set(range(len(words)))
    assert encoding.text == TEXTS[1]


def test_prompt_misuse_is_refused(stories: Encoder) -> None:
    with pytest.raises(NosinkError, match="a recipe prompt needs mean"):
        Encoder.from_model(stories.model, stories.tokenizer, pooling="reference_mean", recipe='prompt="{text}!"')
    with pytest.raises(NosinkError, match="holding \\{text\\}"):
        Recipe.parse('prompt="no slot here"')
    with pytest.raises(NosinkError, match="bad JSON string"):
        Recipe.parse('prompt="unterminated {text}')
    with pytest.raises(NosinkError, match="reference_mean is the released code"):
        Recipe.parse("pool=reference_mean")
    with pytest.raises(NosinkError, match="token ids cannot be put into a prompt template"):
        stories.with_recipe("prompt=prompteol").text_tokenizer().from_ids([5, 6, 7])


# -------------------------------------------------------------------- several templates: MetaEOL, user lists

TWO_TEMPLATES = ["In short, {text} means:", 'A story: "{text}" is about']


def averaged_last_tokens(encoder: Encoder, templates: list[str], texts: list[str]) -> np.ndarray:
    """[N, D]: per text, the mean over templates of the last token's state, each string run alone (no padding)."""
    return np.stack(
        [
            np.mean(
                [alone_states(encoder, template.replace("{text}", text))[0][-1].numpy() for template in templates], 0
            )
            for text in texts
        ]
    )


def test_several_templates_average_their_pooled_vectors(stories: Encoder) -> None:
    encoder = stories.with_recipe(f"prompt={json.dumps(TWO_TEMPLATES)},pool=last")
    assert encoder.rows_per_text == 2 and encoder.recipe.templates == tuple(TWO_TEMPLATES)
    expected = averaged_last_tokens(stories, TWO_TEMPLATES, TEXTS)
    np.testing.assert_allclose(encoder.encode(TEXTS, batch_size=3), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(encoder.encode(TEXTS, packing=True), expected, atol=1e-5, rtol=0)
    normalized = expected / np.linalg.norm(expected, axis=1, keepdims=True)  # normalized after averaging
    np.testing.assert_allclose(encoder.encode(TEXTS, normalize=True), normalized, atol=1e-5, rtol=0)
    one = stories.with_recipe(f"prompt={json.dumps(TWO_TEMPLATES[:1])},pool=last").encode(TEXTS)
    assert not np.allclose(one, expected, atol=1e-3)  # the second template counts


def test_metaeol_is_the_mean_over_its_eight_meta_task_prompts(stories: Encoder) -> None:
    encoder = stories.with_recipe("prompt=metaeol")
    assert str(encoder.recipe) == "prompt=metaeol,pool=last" and encoder.rows_per_text == len(METAEOL_TEMPLATES) == 8
    assert all(t.count("{text}") == 1 and t.endswith('in one word:"') for t in METAEOL_TEMPLATES)
    texts = TEXTS[:2]
    expected = averaged_last_tokens(stories, list(METAEOL_TEMPLATES), texts)
    np.testing.assert_allclose(encoder.encode(texts, batch_size=5), expected, atol=1e-5, rtol=0)


def test_several_templates_in_the_server_the_corpus_and_the_sweep(tmp_path) -> None:
    import httpx
    from conftest import STORIES
    from test_server import running

    from nosink.cli import main
    from nosink.corpus.shards import iter_shards
    from nosink.eval.sweep import sweep_readouts

    recipe = f"prompt={json.dumps(TWO_TEMPLATES)},pool=mean"
    encoder = Encoder.from_pretrained(str(STORIES), plan="mask0-bidir:k=2", recipe=recipe)
    expected = encoder.encode(TEXTS, normalize=True)
    with running(encoder, max_length=128, max_batch_size=3) as url:  # a request's rows split over batches
        answer = httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS}).json()
        too_long = httpx.post(f"{url}/embed", json={"inputs": ["sun", "moon " * 40], "truncate": False})
    np.testing.assert_allclose([item["embedding"] for item in answer["data"]], expected, atol=1e-5)
    assert too_long.status_code == 413 and "input 1 " in too_long.json()["error"]["message"]  # the text, not the row

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(f'{{"id": "{i}", "text": "{t}"}}\n' for i, t in enumerate(TEXTS)), encoding="utf-8")
    command = ["embed", str(corpus), "-o", str(tmp_path / "out"), "--model", str(STORIES), "--plan", "mask0-bidir:k=2"]
    assert main([*command, "--recipe", recipe, "--batch-size", "3"]) == 0
    shards = list(iter_shards(tmp_path / "out"))
    np.testing.assert_allclose(np.concatenate([shard.embeddings for shard in shards]), expected, atol=1e-5)

    plans = [Plan.parse("baseline"), Plan.parse("mask0-bidir:k=3")]
    features = sweep_readouts(encoder, TEXTS, plans, [f"{recipe},layer=2", f"{recipe},layer=-1"], batch_size=3)
    for plan, per_recipe in zip(plans, features, strict=True):
        for layer, feature in zip(["2", "-1"], per_recipe, strict=True):
            alone = encoder.with_plan(plan).with_recipe(f"{recipe},layer={layer}").encode(TEXTS)
            np.testing.assert_allclose(feature, alone, atol=1e-5, rtol=0, err_msg=f"{plan} layer={layer}")


def test_several_templates_misuse_is_refused(stories: Encoder) -> None:
    encoder = stories.with_recipe("prompt=metaeol")
    with pytest.raises(NosinkError, match="token states come from one prompt"):
        encoder.encode_tokens(["a cat"])
    with pytest.raises(NosinkError, match="rows are not 8 rows"):
        encoder.embed_rows(encoder.tokenize(["a cat"])[:3])
    with pytest.raises(NosinkError, match="holding \\{text\\}"):
        Recipe.parse('prompt=["a {text}", "no slot"]')
    with pytest.raises(NosinkError, match="at least one template"):
        Recipe.parse("prompt=[]")
    with pytest.raises(NosinkError, match="only a recipe prompt may be a list"):
        Recipe.parse("layer=[1, 2]")
    short = Encoder.from_model(
        stories.model, stories.tokenizer, recipe=f"prompt={json.dumps(TWO_TEMPLATES)}", max_length=24
    )
    with pytest.warns(UserWarning, match="^1 of 2 texts were longer"):  # texts counted, not rows
        rows = short.tokenize(["sun", "the little dog ran to the big park and played with a red ball " * 3])
    assert len(rows) == 4 and [row.truncated for row in rows] == [False, False, True, True]


# -------------------------------------------------------------------- every entry point carries the recipe


def test_eval_records_the_recipe_and_scores_with_it(tmp_path, capsys) -> None:
    import json

    from conftest import SHARED, STORIES

    from nosink.cli import main
    from nosink.eval.data import load_pairs
    from nosink.eval.sts import evaluate_sts

    data = SHARED / "data" / "sick" / "SICK_trial.txt"
    record = tmp_path / "record.json"
    args = ["eval", "sts", "--model", str(STORIES), "--plan", "mask0-bidir:k=2", "--recipe", "prompt=prompteol"]
    assert main([*args, "--data", str(data), "--limit", "40", "--record", str(record)]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(record.read_text())
    assert saved["model"]["recipe"] == "prompt=prompteol,pool=last" and saved["model"]["pooling"] == "last"
    encoder = Encoder.from_pretrained(str(STORIES), plan="mask0-bidir:k=2", recipe="prompt=prompteol")
    expected = evaluate_sts(encoder, load_pairs(data, limit=40), instruction="Retrieve semantically similar text.")
    assert printed["spearman"] == pytest.approx(expected.metrics["spearman"], abs=1e-9)
    baseline = ["eval", "sts", "--model", "st:all-MiniLM-L6-v2", "--recipe", "layer=-2", "--data", str(data)]
    assert main(baseline) == 2
    assert "a recipe applies only to nosink models" in capsys.readouterr().err


def test_the_server_and_embed_use_the_recipe(tmp_path) -> None:
    import httpx
    from conftest import STORIES
    from test_server import running

    from nosink.cli import main
    from nosink.corpus.shards import iter_shards

    encoder = Encoder.from_pretrained(str(STORIES), plan="mask0-bidir:k=2", recipe="prompt=echo,layer=-2")
    with running(encoder, max_length=128) as url:
        answer = httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS}).json()
        info = httpx.get(f"{url}/info").json()
    vectors = np.array([item["embedding"] for item in answer["data"]])
    np.testing.assert_allclose(vectors, encoder.encode(TEXTS, normalize=True), atol=1e-5)
    assert info["recipe"] == "prompt=echo,pool=mean,layer=-2"

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(f'{{"id": "{i}", "text": "{t}"}}\n' for i, t in enumerate(TEXTS)), encoding="utf-8")
    command = ["embed", str(corpus), "-o", str(tmp_path / "out"), "--model", str(STORIES), "--plan", "mask0-bidir:k=2"]
    assert main([*command, "--recipe", "prompt=echo,layer=-2"]) == 0
    embedded = np.concatenate([shard.embeddings for shard in iter_shards(tmp_path / "out")])
    np.testing.assert_allclose(embedded, encoder.encode(TEXTS, normalize=True), atol=1e-5)
    manifest = (tmp_path / "out" / "manifest.json").read_text()
    assert '"recipe": "prompt=echo,pool=mean,layer=-2"' in manifest


def test_every_layer_is_read_out_of_one_sweep_pass() -> None:
    """sweep_readouts: every (plan, recipe) equals encoding alone; reading all layers costs the calls of the deepest."""
    from nosink.eval.sweep import sweep_readouts

    base = tiny_model("llama")
    encoder = Encoder.from_model(base, tiny_tokenizer(), pooling="last")
    plans = [*family_plans("mask0-bidir", 4), Plan.parse("mask1&bidir:k=3,k0=1")]
    recipes = ["layer=1", "layer=2,norm=off", "layer=3", "layer=-1", "layer=2..4"]
    calls: list[int] = []
    handles = [layer.register_forward_hook(lambda *args: calls.append(1)) for layer in base.layers]
    try:
        features = sweep_readouts(encoder, TEXTS, plans, recipes, instruction="find it", batch_size=len(TEXTS))
        all_layers = len(calls)
        calls.clear()
        sweep_readouts(encoder, TEXTS, plans, ["layer=-1"], instruction="find it", batch_size=len(TEXTS))
    finally:
        for handle in handles:
            handle.remove()
    assert all_layers == len(calls)  # the layer axis costs no layer call
    for plan, per_recipe in zip(plans, features, strict=True):
        for recipe, feature in zip(recipes, per_recipe, strict=True):
            expected = encoder.with_plan(plan).with_recipe(recipe).encode(TEXTS, instruction="find it")
            np.testing.assert_allclose(feature, expected, atol=1e-5, rtol=0, err_msg=f"{plan} {recipe}")
    with pytest.raises(NosinkError, match="share their prompt and pool"):
        sweep_readouts(encoder, TEXTS, plans, ["layer=1", "prompt=prompteol"])
    with pytest.raises(NosinkError, match="only its output is defined"):  # a branched plan: its output only
        sweep_readouts(encoder, TEXTS, [Plan.parse("inter-back:k=2")], ["layer=2"])
