"""Plans: the string form, the explicit per-layer form, the released code's arguments, validation."""

from __future__ import annotations

import pytest

from nosink import LayerPattern, NosinkError, Pattern, Plan
from nosink.plan import NAMED_PLANS

NAMED = [
    "baseline",
    "inplace-bidir:k=3",
    "inplace-back:k=2",
    "inter-bidir:k=4",
    "inter-back:k=1",
    "extra-bidir:k=2",
    "extra-back:k=2",
    "extend-bidir:k=1",
    "extend-back:k=3",
    "mask0-bidir:k=10",
    "mask3-bidir:k=4",
    "mask0-for:k=2",
    "mask5-all:k=2",
    "mask0&bidir:k=17,k0=2",
    "inter-mask2:k=2",
    "layers:causal*3,bidir,nosink@2",
    "layers:-1=nosink,0..2=bidir,-3..-2=nosink_causal@1",
]


def patterns(plan: str | Plan, num_layers: int) -> list[str]:
    schedule = Plan.coerce(plan).resolve(num_layers)
    return [str(p) for p in schedule.layer_patterns]


@pytest.mark.parametrize("text", NAMED)
def test_string_form_round_trips(text: str) -> None:
    plan = Plan.parse(text)
    assert str(plan) == text
    assert Plan.parse(str(plan)) == plan


def test_every_documented_template_parses() -> None:
    for template, _, _ in NAMED_PLANS:
        text = (
            template.replace("{M}", "1")
            .replace("K0", "1")
            .replace("K", "2")
            .replace("P,P,...", "causal,causal,bidir,nosink")
        )
        text = text.replace("I=P,A..B=P", "0=bidir,-2..-1=nosink")
        Plan.parse(text).resolve(4)


def test_named_configurations_give_spec_layers() -> None:
    c, b, bk, n, nc = "causal", "bidir", "backward", "nosink", "nosink_causal"
    assert patterns("baseline", 4) == [c] * 4
    assert patterns("inplace-bidir:k=2", 4) == [c, c, b, b]
    assert patterns("inplace-back:k=1", 4) == [c, c, c, bk]
    assert patterns("mask0-bidir:k=3", 4) == [c, n, n, n]
    assert patterns("mask2-for:k=1", 4) == [c, c, c, nc + "@2"]
    assert patterns("mask0-all:k=1", 4) == [nc, nc, nc, n]
    assert patterns("mask0&bidir:k=3,k0=1", 5) == [c, c, b, b, n]
    assert patterns("mask0&bidir:k=5,k0=5", 5) == [n] * 5


def test_branched_schedules() -> None:
    rows = Plan.parse("inter-back:k=2").resolve(4).rows()
    assert rows == [
        (0, "causal", "shared"),
        (1, "causal", "shared"),
        (2, "backward", "A"),
        (3, "backward", "A"),
        (2, "causal", "B"),
        (3, "causal", "B"),
    ]
    extra = Plan.parse("extra-bidir:k=1").resolve(3).rows()
    assert extra == [(0, "bidir", "A"), (0, "causal", "B"), (1, "causal", "B"), (2, "causal", "B")]
    extend = Plan.parse("extend-back:k=2").resolve(2).rows()
    assert [r[:2] for r in extend] == [(0, "causal"), (1, "causal"), (1, "backward"), (1, "backward")]
    assert Plan.parse("inter-bidir:k=0").resolve(3).layer_patterns == (LayerPattern(Pattern.CAUSAL),) * 3


def test_explicit_forms_in_python() -> None:
    assert patterns(Plan.from_layers(["causal", Pattern.BIDIR, LayerPattern(Pattern.NOSINK, 2)]), 3) == [
        "causal",
        "bidir",
        "nosink@2",
    ]
    assert patterns(Plan.from_layers({-1: "nosink", (0, 1): "backward"}), 4) == [
        "backward",
        "backward",
        "causal",
        "nosink",
    ]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"mask_type": "MASK0", "num_unsink_layers": 2, "num_bidir_layers": 15}, "mask0&bidir:k=17,k0=2"),
        ({"mask_type": "MASK0", "num_unsink_layers": 4}, "mask0-bidir:k=4"),
        ({"mask_type": "BACK", "num_unsink_layers": 3}, "inplace-back:k=3"),
        ({"num_bidir_layers": 5}, "inplace-bidir:k=5"),
        ({}, "baseline"),
        ({"architecture": "inter", "mask_type": "BACK", "num_unsink_layers": 2}, "inter-back:k=2"),
        ({"architecture": "extend", "num_bidir_layers": 1}, "extend-bidir:k=1"),
        ({"mask_type": "MASK3", "num_unsink_layers": 1}, "mask3-bidir:k=1"),
    ],
)
def test_from_reference_counts(kwargs: dict, expected: str) -> None:
    assert str(Plan.from_reference(**kwargs)) == expected


def test_from_reference_lists_with_negative_indices() -> None:
    plan = Plan.from_reference(mask_type="MASK0", unsink_layers=[-1, -2], bidir_layers=[0, 3])
    assert patterns(plan, 6) == ["bidir", "causal", "causal", "bidir", "nosink", "nosink"]
    back = Plan.from_reference(mask_type="BACK", num_unsink_layers=1, num_bidir_layers=2)
    assert patterns(back, 5) == ["causal", "causal", "bidir", "bidir", "backward"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mask0-bidir:k=2,k0=1", "takes exactly k"),
        ("mask0&bidir:k=2", "takes exactly k"),
        ("mask0&bidir:k=2,k0=3", "k0 must be <= k"),
        ("inplace-mask0:k=2", "mask0-bidir"),
        ("inplace-sideways:k=2", "unknown plan"),
        ("nonsense", "unknown plan"),
        ("inplace-bidir:k=two", "bad parameter"),
        ("inplace-bidir:k=1,k=2", "given twice"),
        ("layers:causal,sideways", "unknown layer pattern"),
        ("layers:bidir@2", "only nosink patterns take a sink index"),
        ("layers:0=bidir,causal", "not both"),
        ("layers:", "needs patterns"),
        ("mask-1-bidir:k=2", "unknown plan"),
    ],
)
def test_bad_strings_are_explained(text: str, message: str) -> None:
    with pytest.raises(NosinkError, match=message):
        Plan.parse(text)


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ("inplace-bidir:k=5", "k=5 layers but the model has only L=4"),
        ("layers:causal,bidir", "2 patterns but the model has L=4"),
        ("layers:0=bidir,-4=nosink", "layer 0 is set twice"),
        ("layers:7=bidir", "out of range"),
        ("layers:-1..-3=bidir", "empty"),
    ],
)
def test_plans_are_checked_against_the_model_depth(plan: str, message: str) -> None:
    with pytest.raises(NosinkError, match=message):
        Plan.parse(plan).resolve(4)


def test_bad_python_arguments_are_explained() -> None:
    with pytest.raises(NosinkError, match="m must be >= 0"):
        LayerPattern(Pattern.NOSINK, -1)
    with pytest.raises(NosinkError, match="k must be an integer >= 0"):
        Plan(kind="mask-bidir", k=-2)
    with pytest.raises(NosinkError, match="both unsink_layers and bidir_layers"):
        Plan.from_reference(unsink_layers=[1], bidir_layers=[1])
    with pytest.raises(NosinkError, match="layer 3 is set twice"):
        Plan.from_reference(unsink_layers=[-1], bidir_layers=[3]).resolve(4)
    with pytest.raises(NosinkError, match="either layer counts or layer index lists"):
        Plan.from_reference(num_unsink_layers=1, unsink_layers=[1])
    with pytest.raises(NosinkError, match="unknown mask_type"):
        Plan.from_reference(mask_type="MASKX", num_unsink_layers=1)
    with pytest.raises(NosinkError, match="one pattern"):
        Plan.from_reference(architecture="inter", num_unsink_layers=1, num_bidir_layers=1)
    with pytest.raises(NosinkError, match="a plan must be"):
        Plan.coerce(3)
