"""Loaders on the real files of ../shared/data (counts from its README) and on small files with each quirk."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from nosink import NosinkError
from nosink.eval.conll import TaggedSentences, load_conll
from nosink.eval.data import LabeledTexts, PairsData, load_labeled, load_pairs
from nosink.eval.sources import file_digest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.exists(), reason="../shared/data is not available")


# -------------------------------------------------------------------- real files


@needs_data
@pytest.mark.parametrize(
    ("name", "pairs"), [("SICK_train.txt", 4500), ("SICK_trial.txt", 500), ("SICK_test_annotated.txt", 4927)]
)
def test_sick(name: str, pairs: int) -> None:
    data = load_pairs(DATA / "sick" / name)
    assert isinstance(data, PairsData)
    assert len(data) == len(data.texts_a) == len(data.texts_b) == pairs
    assert all(1.0 <= score <= 5.0 for score in data.scores)
    texts = data.texts_a + data.texts_b
    assert all(text == text.strip() and "\r" not in text and "\t" not in text for text in texts)


@needs_data
def test_sick_test_first_pair_and_crlf() -> None:
    assert b"\r\n" in (DATA / "sick" / "SICK_test_annotated.txt").read_bytes()[:200]
    data = load_pairs(DATA / "sick" / "SICK_test_annotated.txt", limit=3)
    assert len(data) == 3
    assert data.texts_a[0] == "There is no boy playing outdoors and there is no man smiling"
    assert data.texts_b[0] == "A group of kids is playing in a yard and an old man is standing in the background"
    assert isinstance(data.scores[0], float)


@needs_data
def test_sick_strips_surrounding_whitespace() -> None:
    raw_rows = list(csv.reader((DATA / "sick" / "SICK_train.txt").open(newline=""), delimiter="\t"))[1:]
    padded = [i for i, row in enumerate(raw_rows) if row[1] != row[1].strip() or row[2] != row[2].strip()]
    assert padded, "the README promises sentences with surrounding whitespace"
    data = load_pairs(DATA / "sick" / "SICK_train.txt")
    for i in padded:
        assert data.texts_a[i] == raw_rows[i][1].strip()
        assert data.texts_b[i] == raw_rows[i][2].strip()


@needs_data
def test_banking77() -> None:
    train = load_labeled(DATA / "banking77" / "train.csv")
    test = load_labeled(DATA / "banking77" / "test.csv")
    assert isinstance(train, LabeledTexts)
    assert (len(train), len(test)) == (10003, 3080)  # line splitting would give more rows
    categories = set(json.loads((DATA / "banking77" / "categories.json").read_text()))
    assert set(train.labels) == set(test.labels) == categories
    assert set(Counter(test.labels).values()) == {40}
    assert all(text == text.strip() and text for text in train.texts)
    raw = list(csv.reader((DATA / "banking77" / "train.csv").open(newline="", encoding="utf-8")))[1:]
    multiline = [i for i, (text, _) in enumerate(raw) if "\n" in text]
    assert len(multiline) == 10
    assert [train.texts[i] for i in multiline] == [raw[i][0].strip() for i in multiline]
    assert "£" in "".join(train.texts)


@needs_data
@pytest.mark.parametrize(("name", "rows"), [("train.txt", 16000), ("val.txt", 2000), ("test.txt", 2000)])
def test_emotion(name: str, rows: int) -> None:
    data = load_labeled(DATA / "emotion" / name)
    assert len(data) == rows
    assert set(data.labels) == {"sadness", "joy", "love", "anger", "fear", "surprise"}
    assert not any(";" in label for label in data.labels)


@needs_data
def test_emotion_first_example() -> None:
    data = load_labeled(DATA / "emotion" / "train.txt", limit=1)
    assert (data.texts, data.labels) == (["i didnt feel humiliated"], ["sadness"])


@needs_data
def test_wnut17() -> None:
    train = load_conll(DATA / "wnut17" / "wnut17train.conll")
    assert isinstance(train, TaggedSentences)
    assert (len(train), train.n_tokens) == (3394, 62730)  # tab-only lines separate sentences too
    tags = {tag for sentence in train.tags for tag in sentence}
    kinds = ("person", "location", "group", "corporation", "product", "creative-work")
    assert tags == {"O"} | {f"{p}-{k}" for p in "BI" for k in kinds}
    assert train.tokens[0][:3] == ["@paulwalk", "It", "'s"]
    test = load_conll(DATA / "wnut17" / "emerging.test.annotated")
    assert (len(test), test.n_tokens) == (1287, 23394)


@needs_data
def test_wnut17_dev_invisible_characters() -> None:
    dev = load_conll(DATA / "wnut17" / "emerging.dev.conll")
    assert (len(dev), dev.n_tokens) == (1009, 15733)  # the final U+FEFF-only line is no token
    words = [word for sentence in dev.tokens for word in sentence]
    assert not any("\ufeff" in word or "\u200b" in word or not word for word in words)
    assert "Dubbz" in words and "watchedwas" in words
    assert dev.tags[-1][-1] != "\ufeff"


@needs_data
def test_wikiann_prefix_is_stripped() -> None:
    train = load_conll(DATA / "wikiann-en" / "train")
    kinds = ("PER", "LOC", "ORG")
    assert (len(train), train.n_tokens) == (20000, 160394)
    assert train.tokens[0][:2] == ["R.H.", "Saunders"]
    assert not any(word.startswith("en:") for sentence in train.tokens for word in sentence)
    assert {tag for sentence in train.tags for tag in sentence} == {"O"} | {f"{p}-{k}" for p in "BI" for k in kinds}
    explicit = load_conll(DATA / "wikiann-en" / "dev", strip_prefix="en:", limit=50)
    assert explicit == load_conll(DATA / "wikiann-en" / "dev", limit=50)
    kept = load_conll(DATA / "wikiann-en" / "dev", strip_prefix="", limit=2)
    assert all(word.startswith("en:") for sentence in kept.tokens for word in sentence)


@needs_data
def test_limit_takes_the_first_items() -> None:
    full = load_conll(DATA / "wnut17" / "emerging.test.annotated")
    head = load_conll(DATA / "wnut17" / "emerging.test.annotated", limit=7)
    assert head.tokens == full.tokens[:7] and head.tags == full.tags[:7]
    emotion = DATA / "emotion" / "val.txt"
    assert load_labeled(emotion, limit=5).texts == load_labeled(emotion).texts[:5]
    assert len(load_pairs(DATA / "sick" / "SICK_trial.txt", limit=10)) == 10


@needs_data
def test_file_digest_matches_the_readme() -> None:
    expected = "5a88cfb62f8c6bd2a3cce0f2421ba2cb8c2be5ab4a800f6f01e2c64aafb7db56"
    assert file_digest(DATA / "sick" / "SICK_trial.txt") == expected


# -------------------------------------------------------------------- small files


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def test_stsb_positional_fields(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "sts-dev.csv",
        'main-captions\tMSRvid\t2012test\t0001\t5.000\tA man with a "hat".\tA man wears a hat.\n'
        "main-news\theadlines\t2013\t0002\t0.5\t Stocks fall \tStocks rise\textra\tfields\r\n"
        "\n",
    )
    data = load_pairs(path)
    assert data.texts_a == ['A man with a "hat".', "Stocks fall"]
    assert data.texts_b == ["A man wears a hat.", "Stocks rise"]
    assert data.scores == [5.0, 0.5]
    bad = write(tmp_path, "sts-bad.csv", "a\tb\tc\td\t1.0\tonly one sentence\n")
    with pytest.raises(NosinkError, match=r"sts-bad.csv, line 1: expected at least 7"):
        load_pairs(bad)


def test_generic_pairs_tsv_csv_jsonl(tmp_path: Path) -> None:
    tsv = write(tmp_path, "pairs.tsv", "id\tleft\tright\tgold\n1\ta cat\ta dog\t3.5\n2\tsun\tmoon\t1\n")
    data = load_pairs(tsv, text_a="left", text_b="right", score="gold")
    assert (data.texts_a, data.texts_b, data.scores) == (["a cat", "sun"], ["a dog", "moon"], [3.5, 1.0])
    mteb_style = write(tmp_path, "pairs.csv", 'sentence1,sentence2,score\n"a, b",c,2\n')
    assert load_pairs(mteb_style).texts_a == ["a, b"]
    jsonl = write(
        tmp_path, "pairs.jsonl", '{"s1": "x", "s2": "y", "label": 4}\n\n{"s1": "p", "s2": "q", "label": 0.5}\n'
    )
    assert load_pairs(jsonl, text_a="s1", text_b="s2", score="label").scores == [4.0, 0.5]


def test_pairs_errors(tmp_path: Path) -> None:
    with pytest.raises(NosinkError, match="no such file"):
        load_pairs(tmp_path / "missing.tsv")
    unknown = write(tmp_path, "u.tsv", "x\ty\tz\n1\t2\t3\n")
    flags = r"name the columns with --text-a, --text-b, --score \(in Python: text_a=, text_b=, score=\)"
    with pytest.raises(NosinkError, match=r"unknown format \(columns: x, y, z\); " + flags):
        load_pairs(unknown)
    with pytest.raises(NosinkError, match="no column 'w'"):
        load_pairs(unknown, text_a="x", text_b="y", score="w")
    bad_score = write(tmp_path, "b.tsv", "a\tb\ts\nx\ty\t1\nx\ty\thigh\n")
    with pytest.raises(NosinkError, match=r"b.tsv, line 3: s must be a number"):
        load_pairs(bad_score, text_a="a", text_b="b", score="s")
    short = write(tmp_path, "s.tsv", "a\tb\ts\nx\ty\n")
    with pytest.raises(NosinkError, match=r"line 2: expected 3 fields"):
        load_pairs(short, text_a="a", text_b="b", score="s")
    empty_text = write(tmp_path, "e.tsv", "a\tb\ts\nx\t  \t2\n")
    with pytest.raises(NosinkError, match=r"line 2: b is empty"):
        load_pairs(empty_text, text_a="a", text_b="b", score="s")
    bad_json = write(tmp_path, "j.jsonl", '{"a": "x", "b": "y", "s": 1}\n{"a": \n')
    with pytest.raises(NosinkError, match=r"j.jsonl, line 2: not valid JSON"):
        load_pairs(bad_json, text_a="a", text_b="b", score="s")
    header_only = write(tmp_path, "h.tsv", "a\tb\ts\n")
    with pytest.raises(NosinkError, match="no pairs found"):
        load_pairs(header_only, text_a="a", text_b="b", score="s")
    with pytest.raises(NosinkError, match=r"limit \(--limit\) must be a positive integer"):
        load_pairs(write(tmp_path, "ok.tsv", "a\tb\ts\nx\ty\t1\n"), text_a="a", text_b="b", score="s", limit=0)


def test_labeled_formats(tmp_path: Path) -> None:
    emotion = write(tmp_path, "emo.txt", "text;label_name\ni feel; fine;joy\r\ni am sad;sadness\n")
    data = load_labeled(emotion)
    assert (data.texts, data.labels) == (["i feel; fine", "i am sad"], ["joy", "sadness"])
    banking = write(tmp_path, "b.csv", 'text,category\r\n"multi\nline, text\n",card_arrival\r\nplain,top_up\r\n')
    data = load_labeled(banking)
    assert (data.texts, data.labels) == (["multi\nline, text", "plain"], ["card_arrival", "top_up"])
    jsonl = write(tmp_path, "l.jsonl", '{"text": "a", "label": 3}\n{"text": "b", "label": "x"}\n')
    assert load_labeled(jsonl).labels == ["3", "x"]
    named = write(tmp_path, "n.tsv", "sentence\tintent\tid\nhello there\tgreet\t1\n")
    assert load_labeled(named, text="sentence", label="intent").texts == ["hello there"]
    assert data.select([1, 0]).texts == ["plain", "multi\nline, text"]


def test_labeled_errors(tmp_path: Path) -> None:
    emotion = write(tmp_path, "emo.txt", "text;label_name\nfine;joy\nno separator here\n")
    with pytest.raises(NosinkError, match=r"emo.txt, line 3: expected 'text;label'"):
        load_labeled(emotion)
    unknown = write(tmp_path, "u.csv", "a,b\n1,2\n")
    with pytest.raises(NosinkError, match=r"name the columns with --text, --label \(in Python: text=, label=\)"):
        load_labeled(unknown)
    broken = write(tmp_path, "q.csv", 'text,label\n"open quote,x\n')
    with pytest.raises(NosinkError, match=r"q.csv, line \d+: malformed row"):
        load_labeled(broken)
    nested = write(tmp_path, "n.jsonl", '{"text": "a", "label": [1]}\n')
    with pytest.raises(NosinkError, match="line 1: label must be a string or an integer"):
        load_labeled(nested)


def test_conll_quirks(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "x.conll",
        "-DOCSTART- -X- O O\n\n"
        "EU NNP B-ORG\nrejects VBZ O\n\t\n"  # space separated; a tab-only line separates
        "Dubbz\ufeff\tB-person\nwatched\u200bwas\tO\n\ufeff\tO\n  \n"  # U+FEFF/U+200B in tokens; a token of U+FEFF only
        "last\tO\n\ufeff\n",  # no separator before the final U+FEFF-only line
    )
    data = load_conll(path)
    assert data.tokens == [["EU", "rejects"], ["Dubbz", "watchedwas"], ["last"]]
    assert data.tags == [["B-ORG", "O"], ["B-person", "O"], ["O"]]
    assert load_conll(path, limit=1).tokens == [["EU", "rejects"]]


def test_conll_prefix_detection(tmp_path: Path) -> None:
    wikiann = write(tmp_path, "w", "de:Berlin\tB-LOC\nde:ist\tO\n\nde:Foo\tO\n")
    assert load_conll(wikiann).tokens == [["Berlin", "ist"], ["Foo"]]
    mixed = write(tmp_path, "m", "en:Berlin\tB-LOC\nis\tO\n")
    assert load_conll(mixed).tokens == [["en:Berlin", "is"]]  # not every token has it: no stripping
    assert load_conll(mixed, strip_prefix="en:").tokens == [["Berlin", "is"]]


def test_conll_errors(tmp_path: Path) -> None:
    no_tag = write(tmp_path, "t.conll", "word\tO\n\nlonely\n")
    with pytest.raises(NosinkError, match=r"t.conll, line 3: expected a token and a tag"):
        load_conll(no_tag)
    blank = write(tmp_path, "b.conll", "\n\t\n")
    with pytest.raises(NosinkError, match="no sentences found"):
        load_conll(blank)
    with pytest.raises(NosinkError, match="not a file"):
        load_conll(tmp_path)


def test_dataclasses_check_lengths() -> None:
    with pytest.raises(NosinkError, match="differ in length"):
        PairsData(["a"], ["b", "c"], [1.0])
    with pytest.raises(NosinkError, match="differ in length"):
        LabeledTexts(["a"], [])
    with pytest.raises(NosinkError, match="sentence 0 has 2 tokens but 1 tags"):
        TaggedSentences([["a", "b"]], [["O"]])


# -------------------------------------------------------------------- hf: datasets


def test_hub_dataset_offline_fails_at_once(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for loader in (load_pairs, load_labeled, load_conll):
        with pytest.raises(NosinkError, match="hub is unreachable from here"):
            loader("hf:mteb/sickr-sts@test")
    with pytest.raises(NosinkError, match="expected hf:NAME"):
        load_pairs("hf:")


def test_hub_datasets_are_read_like_tables(monkeypatch) -> None:
    """With the hub reachable (faked), hf: names go through the same column logic as files."""
    import datasets

    from nosink import hub

    tags = datasets.Sequence(datasets.ClassLabel(names=["O", "B-PER", "I-PER"]))
    fakes = {
        ("org/sts", None, "test"): datasets.Dataset.from_dict(
            {"sentence1": ["a cat", "a dog"], "sentence2": ["a kitten", "a car"], "score": [4.5, 1.0]}
        ),
        ("org/intents", "en", "train"): datasets.Dataset.from_dict({"text": ["hi", "bye"], "label": [0, 1]}),
        ("org/ner", None, "validation"): datasets.Dataset.from_dict(
            {"tokens": [["Ann", "Lee", "ran"]], "ner_tags": [[1, 2, 0]]},
            features=datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")), "ner_tags": tags}),
        ),
    }
    calls = []

    def load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        return fakes[(name, config, split)]

    monkeypatch.setattr(hub, "hub_unreachable_reason", lambda **_: None)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    pairs = load_pairs("hf:org/sts")
    assert (pairs.texts_a, pairs.texts_b, pairs.scores) == (["a cat", "a dog"], ["a kitten", "a car"], [4.5, 1.0])
    labeled = load_labeled("hf:org/intents:en@train", limit=1)
    assert (labeled.texts, labeled.labels) == (["hi"], ["0"])
    sentences = load_conll("hf:org/ner@validation")
    assert sentences.tokens == [["Ann", "Lee", "ran"]] and sentences.tags == [["B-PER", "I-PER", "O"]]
    assert calls == [("org/sts", None, "test"), ("org/intents", "en", "train"), ("org/ner", None, "validation")]
