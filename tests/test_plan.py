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
            template.replace(",res=R", ",res=3")
            .replace("{M}", "1")
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
        ({"mask_type": "MASK0", "num_unsink_layers": 2, "num_bidir_layers": 15}, "mask0&bidir:k=17,k0=2,res=3"),
        ({"mask_type": "mask0", "num_unsink_layers": 4, "res_connect": None}, "mask0-bidir:k=4,res=none"),
        ({"mask_type": "BACK", "num_unsink_layers": 3}, "inplace-back:k=3,res=3"),
        ({"num_bidir_layers": 5, "res_connect": 2}, "inplace-bidir:k=5,res=2"),
        ({}, "baseline:res=3"),
        ({"architecture": "NONE", "num_unsink_layers": 3}, "baseline:res=3"),  # NONE zeroes the counts
        ({"architecture": "INTER", "mask_type": "BACK", "num_unsink_layers": 2}, "inter-back:k=2,res=3"),
        ({"architecture": "extend", "num_bidir_layers": 1}, "extend-bidir:k=1,res=3"),
        ({"architecture": "Inter", "num_unsink_layers": 2, "num_bidir_layers": 3}, "inter-mask0&bidir:k=5,k0=2,res=3"),
        (
            {"architecture": "EXTRA", "mask_type": "BACK", "num_unsink_layers": 1, "num_bidir_layers": 2},
            "extra-back&bidir:k=3,k0=1,res=3",
        ),
        (
            {"mask_type": "BACK", "num_unsink_layers": 1, "num_bidir_layers": 2, "res_connect": "None"},
            "inplace-back&bidir:k=3,k0=1,res=none",
        ),
        ({"unsink_layers": "-1", "bidir_layers": "[2, 3]"}, "layers:2=bidir,3=bidir,-1=nosink,res=3"),
        ({"architecture": "EXTEND", "unsink_layers": "[]", "bidir_layers": "[]"}, "baseline:res=3"),  # runs as NONE
        ({"num_unsink_layers": "2", "res_connect": "2"}, "mask0-bidir:k=2,res=2"),  # as a shell script passes them
    ],
)
def test_from_reference_takes_the_released_arguments(kwargs: dict, expected: str) -> None:
    plan = Plan.from_reference(**kwargs)
    assert str(plan) == expected
    assert Plan.parse(expected) == plan


def test_from_reference_runs_any_other_mask_type_as_back_with_a_warning() -> None:
    """The released code checks mask_type == "MASK0" only: MASK3 is BACK there, so it is here."""
    with pytest.warns(UserWarning, match="MASK0 as BACK"):
        plan = Plan.from_reference(mask_type="MASK3", num_unsink_layers=2)
    assert str(plan) == "inplace-back:k=2,res=3"


def test_reference_residual_starts_at_the_unsink_count() -> None:
    """The released residual starts at layer index num_unsink_layers, counted from the bottom."""
    cases = {
        "mask0&bidir:k=5,k0=2,res=3": (2, True),
        "mask0-bidir:k=4,res=3": (4, True),
        "inplace-bidir:k=4,res=3": (0, True),
        "inter-back&bidir:k=3,k0=1,res=2": (1, False),
        "extra-mask0:k=2,res=3": (2, False),
        "extend-bidir:k=2,res=1": (0, True),
        "baseline:res=3": (0, True),
    }
    for text, (start, to_output) in cases.items():
        residual = Plan.parse(text).resolve(6).residual
        assert residual is not None and (residual.start, residual.to_output) == (start, to_output), text
    assert Plan.parse("mask0-bidir:k=4,res=none").resolve(6).residual is None
    assert Plan.parse("mask0-bidir:k=4,res=none").resolve(6).reference


def test_mixed_branched_plans_put_bidir_below_x() -> None:
    schedule = Plan.parse("extend-back&bidir:k=3,k0=1").resolve(4)
    assert [(s.layer, str(s.pattern)) for s in schedule.branches[0][4:]] == [
        (3, "bidir"),
        (3, "bidir"),
        (3, "backward"),
    ]
    extra = Plan.parse("extra-mask0&bidir:k=3,k0=2").resolve(4)
    assert [str(s.pattern) for s in extra.branches[0]] == ["bidir", "nosink", "nosink"]
    assert patterns(Plan.parse("inplace-back&bidir:k=3,k0=1"), 5) == ["causal", "causal", "bidir", "bidir", "backward"]


def test_from_reference_lists_with_negative_indices() -> None:
    plan = Plan.from_reference(mask_type="MASK0", unsink_layers=[-1, -2], bidir_layers=[0, 3], res_connect=None)
    assert patterns(plan, 6) == ["bidir", "causal", "causal", "bidir", "nosink", "nosink"]
    back = Plan.from_reference(mask_type="BACK", num_unsink_layers=1, num_bidir_layers=2, res_connect=None)
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
        ("mask0-bidir:k=2,res=0", "res must be an integer >= 1"),
        ("mask0-bidir:k=2,res=x", "bad res"),
        ("mask0-bidir:k=2,res=3,res=2", "res given twice"),
        ("inter-bidir&bidir:k=2,k0=1", "bidir&bidir"),
        ("inter-back&bidir:k=2", "takes exactly k"),
        ("inter-back&bidir:k=2,k0=0", "must be 1..k"),
        ("inplace-mask0&bidir:k=2,k0=1", "mask0&bidir:k=K,k0=K0"),
        ("inter-bidir:k=0,res=3", "fails in the released code"),
        ("mask3-bidir:k=2,res=3", "no nosink@3 layers"),
        ("inter-mask1&bidir:k=3,k0=1,res=none", "no nosink@1 layers"),
        ("mask0-for:k=2,res=3", "no MASKm-for"),
        ("mask0-all:k=2,res=3", "no MASKm-all"),
        ("layers:-1=nosink_causal,res=3", "no nosink_causal layers"),
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
    with pytest.raises(NosinkError, match="unknown architecture"):
        Plan.from_reference(architecture="sideways", num_unsink_layers=1)
    with pytest.raises(NosinkError, match="fails in the released code"):
        Plan.from_reference(architecture="INTER")
    with pytest.raises(NosinkError, match=r"res_connect .* must be"):
        Plan.from_reference(num_unsink_layers=1, res_connect="three")
    with pytest.raises(NosinkError, match=r"res_connect .* must be an integer >= 1, got 0"):
        Plan.from_reference(num_unsink_layers=1, res_connect=0)
    with pytest.raises(NosinkError, match="needs reference=True"):
        Plan(res=3)
    with pytest.raises(NosinkError, match="layer index in 'a,b' must be an integer"):
        Plan.from_reference(unsink_layers="a,b")
    for bad, message in [
        ({"num_unsink_layers": "x"}, "num_unsink_layers must be an integer >= 0, got 'x'"),
        ({"num_bidir_layers": None}, "num_bidir_layers must be an integer >= 0, got None"),
        ({"num_unsink_layers": -1}, "num_unsink_layers must be an integer >= 0"),
        ({"unsink_layers": [1.7]}, r"layer index must be an integer, got 1\.7"),
        ({"res_connect": True}, r"res_connect .* must be an integer >= 1, got True"),
        ({"res_connect": 2.9}, r"res_connect .* must be an integer >= 1, got 2\.9"),
        ({"architecture": None}, "architecture must be a string"),
        ({"unsink_layers": 3}, "a layer index list must be a list"),
    ]:
        with pytest.raises(NosinkError, match=message):
            Plan.from_reference(**bad)
    with pytest.raises(NosinkError, match="asserts num_unsink_layers"):  # the released code asserts k <= L
        Plan.from_reference(architecture="EXTEND", num_bidir_layers=5).resolve(4)
    assert Plan.parse("extend-bidir:k=5").resolve(4)  # outside reference mode EXTEND may repeat the top layer more
    with pytest.raises(NosinkError, match="a plan must be"):
        Plan.coerce(3)
