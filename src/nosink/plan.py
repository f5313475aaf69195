"""Plans: which layers run with which attention pattern, and how branches combine (SPEC §3–4).

A :class:`Plan` is independent of the model; :meth:`Plan.resolve` checks it against the model's
number of layers L and returns a :class:`Schedule`, the exact list of layer calls to run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from nosink.errors import NosinkError
from nosink.patterns import CAUSAL, LayerPattern, Pattern


class Architecture(str, Enum):
    """How converted layers are used (SPEC §4)."""

    INPLACE = "inplace"
    INTER = "inter"
    EXTRA = "extra"
    EXTEND = "extend"


class PlanKind(str, Enum):
    """The named configuration families of SPEC §3, plus an explicit per-layer form."""

    BASELINE = "baseline"
    INPLACE = "inplace"
    INTER = "inter"
    EXTRA = "extra"
    EXTEND = "extend"
    MASK_BIDIR = "mask-bidir"
    MASK_FOR = "mask-for"
    MASK_ALL = "mask-all"
    MASK_AND_BIDIR = "mask&bidir"
    LAYERS = "layers"


_BRANCHED = (PlanKind.INTER, PlanKind.EXTRA, PlanKind.EXTEND)
_MASK_KINDS = (PlanKind.MASK_BIDIR, PlanKind.MASK_FOR, PlanKind.MASK_ALL, PlanKind.MASK_AND_BIDIR)

# Named plans with their paper names and meanings, for `nosink plans` and the docs.
NAMED_PLANS: tuple[tuple[str, str, str], ...] = (
    ("baseline", "BASELINE", "the unchanged causal model"),
    ("inplace-bidir:k=K", "INPLACE-BIDIR(k)", "top k layers bidirectional"),
    ("inplace-back:k=K", "INPLACE-BACK(k)", "top k layers backward (reversed causal)"),
    ("inter-bidir:k=K", "INTER-BIDIR(k)", "top k layers run twice, bidir and causal; sum, then norm"),
    ("inter-back:k=K", "INTER-BACK(k)", "top k layers run twice, backward and causal; sum, then norm"),
    ("extra-bidir:k=K", "EXTRA-BIDIR(k)", "bottom k layers bidir from the embeddings + the causal model"),
    ("extra-back:k=K", "EXTRA-BACK(k)", "bottom k layers backward from the embeddings + the causal model"),
    ("extend-bidir:k=K", "EXTEND-BIDIR(k)", "the causal model, then the top layer k more times bidir"),
    ("extend-back:k=K", "EXTEND-BACK(k)", "the causal model, then the top layer k more times backward"),
    ("mask{M}-bidir:k=K", "MASKm-BIDIR(k)", "top k layers bidir with tokens 0..m hidden (no sink)"),
    ("mask{M}-for:k=K", "MASKm-FOR(k)", "top k layers causal with tokens 0..m hidden"),
    ("mask{M}-all:k=K", "MASKm-ALL(k)", "top k nosink, every other layer nosink_causal"),
    ("mask{M}&bidir:k=K,k0=K0", "MASKm&BIDIR(k, k0)", "top k0 nosink, the k-k0 below them bidir"),
    ("layers:P,P,...", "(explicit)", "one pattern per layer: causal|backward|bidir|nosink|nosink_causal"),
    ("layers:I=P,A..B=P", "(explicit)", "patterns by layer index or range (negative = from top), rest causal"),
)

_X_NAMES = {"bidir": LayerPattern(Pattern.BIDIR), "back": LayerPattern(Pattern.BACKWARD)}
# re.ASCII everywhere: \d is 0-9 only, so "mask٠-bidir:k=٣" (Arabic-Indic digits) is not a plan.
_NAME_RE = re.compile(
    r"^(?:(?P<arch>inplace|inter|extra|extend)-(?P<x>bidir|back|mask\d+)"
    r"|mask(?P<m>\d+)(?P<mask>-bidir|-for|-all|&bidir))$",
    re.ASCII,
)
_PARAM_RE = re.compile(r"^(k|k0)=(\d+)$", re.ASCII)
_RULE_RE = re.compile(r"^(?P<a>-?\d+)(?:\.\.(?P<b>-?\d+))?=(?P<p>.+)$", re.ASCII)
_REPEAT_RE = re.compile(r"^(?P<p>[^*]+)\*(?P<n>\d+)$", re.ASCII)


@dataclass(frozen=True)
class LayerRule:
    """Layers ``start..end`` (inclusive; negative = counted from the top) get ``pattern``."""

    start: int
    end: int
    pattern: LayerPattern

    def __str__(self) -> str:
        span = str(self.start) if self.start == self.end else f"{self.start}..{self.end}"
        return f"{span}={self.pattern}"


@dataclass(frozen=True)
class Step:
    """One layer call: run layer ``layer`` with ``pattern``."""

    layer: int
    pattern: LayerPattern


@dataclass(frozen=True)
class Schedule:
    """A plan resolved for a model with ``num_layers`` layers.

    Run ``prefix`` once from the embeddings; run every branch from the prefix's output; the
    output is the final norm of the sum of the branch outputs.
    """

    num_layers: int
    prefix: tuple[Step, ...]
    branches: tuple[tuple[Step, ...], ...]

    @property
    def layer_patterns(self) -> tuple[LayerPattern, ...] | None:
        """The per-layer patterns when the schedule is one ordinary pass over all layers, else None."""
        if self.prefix or len(self.branches) != 1:
            return None
        steps = self.branches[0]
        if [s.layer for s in steps] != list(range(self.num_layers)):
            return None
        return tuple(s.pattern for s in steps)

    def rows(self) -> list[tuple[int, str, str]]:
        """(layer, pattern, branch) for every layer call, in run order."""
        single = len(self.branches) == 1 and not self.prefix
        rows = [(s.layer, str(s.pattern), "shared") for s in self.prefix]
        for index, branch in enumerate(self.branches):
            name = "main" if single else "ABCDEFGH"[index]
            rows += [(s.layer, str(s.pattern), name) for s in branch]
        return rows


@dataclass(frozen=True)
class Plan:
    """A conversion configuration. Build one with :meth:`parse`, or from its fields.

    ``pattern`` is X for the INPLACE/INTER/EXTRA/EXTEND families; ``m`` is the MASKm index of
    the mask families; ``rules`` and ``length`` hold the explicit per-layer form.
    """

    kind: PlanKind = PlanKind.BASELINE
    k: int = 0
    k0: int = 0
    m: int = 0
    pattern: LayerPattern | None = None
    rules: tuple[LayerRule, ...] = field(default=())
    length: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", PlanKind(self.kind))
        for name in ("k", "k0", "m"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise NosinkError(f"plan parameter {name} must be an integer >= 0, got {value!r}")
        if self.k0 > self.k:
            raise NosinkError(f"k0 must be <= k (k0 of the top k layers are nosink), got k={self.k}, k0={self.k0}")
        LayerPattern(Pattern.NOSINK, self.m)  # the sink index's own bounds, checked when the plan is made
        if self.kind in (PlanKind.INPLACE, *_BRANCHED) and self.pattern is None:
            raise NosinkError(f"a {self.kind.value} plan needs a pattern X")

    # ---------------------------------------------------------------- constructors

    @classmethod
    def coerce(cls, plan: Plan | str) -> Plan:
        """Accept a Plan or its string form."""
        if isinstance(plan, Plan):
            return plan
        if isinstance(plan, str):
            return cls.parse(plan)
        raise NosinkError(f"a plan must be a Plan or a string such as 'mask0-bidir:k=4', got {type(plan).__name__}")

    @classmethod
    def parse(cls, text: str) -> Plan:
        """Parse the string form, e.g. ``mask0&bidir:k=17,k0=2`` or ``layers:causal*3,bidir*2``."""
        text = text.strip()
        head, _, params = text.partition(":")
        if head == "baseline" and not params:
            return cls()
        if head == "layers":
            return cls._parse_layers(params)
        match = _NAME_RE.match(head)
        if match is None:
            raise NosinkError(f"unknown plan {text!r}; run `nosink plans` for the list of plan names")
        values = _parse_params(params, text)
        needed = {"k", "k0"} if match["mask"] == "&bidir" else {"k"}
        if set(values) != needed:
            want = ",".join(f"{n}=…" for n in sorted(needed))
            raise NosinkError(f"plan {text!r} takes exactly {want}")
        if match["arch"]:
            kind = PlanKind(match["arch"])
            x = _parse_x(match["x"], allow_mask=kind is not PlanKind.INPLACE, text=text)
            return cls(kind, k=values["k"], pattern=x)
        kind = PlanKind("mask" + match["mask"])
        return cls(kind, k=values["k"], k0=values.get("k0", 0), m=int(match["m"]))

    @classmethod
    def _parse_layers(cls, params: str) -> Plan:
        items = [item.strip() for item in params.split(",") if item.strip()]
        if not items:
            raise NosinkError("a layers plan needs patterns, e.g. 'layers:causal*3,bidir*2' or 'layers:-1=nosink'")
        if all("=" in item for item in items):
            return cls.from_layers({_parse_span(item): item.split("=", 1)[1] for item in items})
        if any("=" in item for item in items):
            raise NosinkError("a layers plan is either a full list (causal,bidir,…) or index=pattern rules, not both")
        patterns: list[str] = []
        for item in items:
            repeat = _REPEAT_RE.match(item)
            patterns += [repeat["p"]] * int(repeat["n"]) if repeat else [item]
        return cls.from_layers(patterns)

    @classmethod
    def from_layers(
        cls,
        layers: Sequence[LayerPattern | Pattern | str] | Mapping[int | tuple[int, int], LayerPattern | Pattern | str],
    ) -> Plan:
        """An explicit per-layer plan.

        A sequence gives one pattern per layer (its length must equal the model's L). A mapping
        gives patterns by layer index or inclusive ``(start, end)`` range, negative indices
        counted from the top; unlisted layers stay causal.
        """
        if isinstance(layers, Mapping):
            rules = []
            for span, pattern in layers.items():
                start, end = (span, span) if isinstance(span, int) else span
                rules.append(LayerRule(int(start), int(end), LayerPattern.coerce(pattern)))
            return cls(PlanKind.LAYERS, rules=tuple(rules))
        if isinstance(layers, str) or not isinstance(layers, Sequence):
            raise NosinkError("from_layers takes a list of patterns or a mapping {layer index: pattern}")
        rules = tuple(LayerRule(i, i, LayerPattern.coerce(p)) for i, p in enumerate(layers))
        return cls(PlanKind.LAYERS, rules=rules, length=len(rules))

    @classmethod
    def from_reference(
        cls,
        *,
        architecture: Architecture | str = Architecture.INPLACE,
        mask_type: str = "MASK0",
        num_unsink_layers: int = 0,
        num_bidir_layers: int = 0,
        unsink_layers: Sequence[int] | None = None,
        bidir_layers: Sequence[int] | None = None,
    ) -> Plan:
        """The plan that the authors' released code builds from its arguments (SPEC §3).

        "Unsink" layers use ``mask_type`` (``MASKm`` → nosink with sink index m, ``BACK`` →
        backward); counts place them at the top with the bidir layers right below; index lists
        are 0-based absolute indices, negative counted from the top.
        """
        arch = Architecture(architecture)
        unsink = _reference_pattern(mask_type)
        lists_given = unsink_layers is not None or bidir_layers is not None
        if lists_given and (num_unsink_layers or num_bidir_layers):
            raise NosinkError("give either layer counts or layer index lists, not both")
        if lists_given:
            if arch is not Architecture.INPLACE:
                raise NosinkError(f"layer index lists need the inplace architecture, not {arch.value}")
            mapping: dict[int | tuple[int, int], LayerPattern] = {}
            for index in bidir_layers or ():
                mapping[int(index)] = LayerPattern(Pattern.BIDIR)
            for index in unsink_layers or ():
                if int(index) in mapping:
                    raise NosinkError(f"layer {index} is in both unsink_layers and bidir_layers")
                mapping[int(index)] = unsink
            return cls.from_layers(mapping)
        u, b = int(num_unsink_layers), int(num_bidir_layers)
        if u < 0 or b < 0:
            raise NosinkError("num_unsink_layers and num_bidir_layers must be >= 0")
        if arch is not Architecture.INPLACE:
            if u and b:
                raise NosinkError(f"the {arch.value} architecture converts with one pattern: give unsink or bidir")
            if not (u or b):
                return cls()
            return cls(PlanKind(arch.value), k=u or b, pattern=unsink if u else LayerPattern(Pattern.BIDIR))
        return _inplace_from_counts(unsink, u, b)

    # ---------------------------------------------------------------- resolution

    def resolve(self, num_layers: int) -> Schedule:
        """Check the plan against a model with ``num_layers`` layers and list its layer calls."""
        n = num_layers
        if self.k > n and self.kind is not PlanKind.EXTEND:  # EXTEND's k repeats the top layer: any k runs
            raise NosinkError(f"plan {self} needs k={self.k} layers but the model has only L={n}")
        if self.kind in _BRANCHED and self.k:
            return _branched_schedule(self.kind, self.k, self.pattern, n)  # type: ignore[arg-type]
        patterns = self._layer_patterns(n)
        return Schedule(n, (), (tuple(Step(i, p) for i, p in enumerate(patterns)),))

    def _layer_patterns(self, n: int) -> list[LayerPattern]:
        if self.kind is PlanKind.LAYERS:
            return _apply_rules(self.rules, self.length, n)
        nosink = LayerPattern(Pattern.NOSINK, self.m)
        base = LayerPattern(Pattern.NOSINK_CAUSAL, self.m) if self.kind is PlanKind.MASK_ALL else CAUSAL
        patterns = [base] * n
        top = {
            PlanKind.INPLACE: self.pattern,
            PlanKind.MASK_BIDIR: nosink,
            PlanKind.MASK_ALL: nosink,
            PlanKind.MASK_FOR: LayerPattern(Pattern.NOSINK_CAUSAL, self.m),
            PlanKind.MASK_AND_BIDIR: LayerPattern(Pattern.BIDIR),
        }.get(self.kind)
        for i in range(n - self.k, n):
            patterns[i] = top or CAUSAL
        if self.kind is PlanKind.MASK_AND_BIDIR:
            for i in range(n - self.k0, n):
                patterns[i] = nosink
        return patterns

    # ---------------------------------------------------------------- string form

    def __str__(self) -> str:
        kind = self.kind
        if kind is PlanKind.BASELINE:
            return "baseline"
        if kind is PlanKind.LAYERS:
            return "layers:" + (_format_list(self.rules) if self.length is not None else _format_rules(self.rules))
        if kind in _MASK_KINDS:
            params = f"k={self.k},k0={self.k0}" if kind is PlanKind.MASK_AND_BIDIR else f"k={self.k}"
            return f"mask{self.m}{kind.value.removeprefix('mask')}:{params}"
        return f"{kind.value}-{_format_x(self.pattern)}:k={self.k}"  # type: ignore[arg-type]


# -------------------------------------------------------------------- helpers


def _parse_params(params: str, text: str) -> dict[str, int]:
    values: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in params.split(","))):
        match = _PARAM_RE.match(item)
        if match is None:
            raise NosinkError(f"bad parameter {item!r} in plan {text!r}; expected k=K or k0=K0")
        if match[1] in values:
            raise NosinkError(f"parameter {match[1]} given twice in plan {text!r}")
        values[match[1]] = int(match[2])
    return values


def _parse_x(name: str, *, allow_mask: bool, text: str) -> LayerPattern:
    if name in _X_NAMES:
        return _X_NAMES[name]
    if not allow_mask:
        raise NosinkError(f"{text!r}: in-place nosink is spelled mask{name[4:]}-bidir:k=K")
    return LayerPattern(Pattern.NOSINK, int(name[4:]))


def _format_x(pattern: LayerPattern) -> str:
    if pattern.kind is Pattern.NOSINK:
        return f"mask{pattern.m}"
    for name, known in _X_NAMES.items():
        if known == pattern:
            return name
    return str(pattern)


def _parse_span(item: str) -> tuple[int, int]:
    match = _RULE_RE.match(item)
    if match is None:
        raise NosinkError(f"bad layer rule {item!r}; expected INDEX=PATTERN or START..END=PATTERN")
    start = int(match["a"])
    return start, int(match["b"]) if match["b"] is not None else start


def _format_rules(rules: tuple[LayerRule, ...]) -> str:
    return ",".join(str(rule) for rule in rules)


def _format_list(rules: tuple[LayerRule, ...]) -> str:
    runs: list[list] = []
    for rule in rules:
        if runs and runs[-1][0] == rule.pattern:
            runs[-1][1] += 1
        else:
            runs.append([rule.pattern, 1])
    return ",".join(f"{p}*{n}" if n > 1 else str(p) for p, n in runs)


def _apply_rules(rules: tuple[LayerRule, ...], length: int | None, n: int) -> list[LayerPattern]:
    if length is not None and length != n:
        raise NosinkError(f"the per-layer list has {length} patterns but the model has L={n} layers")
    patterns: list[LayerPattern] = [CAUSAL] * n
    owner: dict[int, LayerRule] = {}
    for rule in rules:
        start, end = (_absolute(i, n) for i in (rule.start, rule.end))
        if start > end:
            raise NosinkError(f"layer range {rule} is empty (start after end) for L={n}")
        for i in range(start, end + 1):
            if i in owner:
                raise NosinkError(f"layer {i} is set twice: by {owner[i]} and by {rule}")
            owner[i] = rule
            patterns[i] = rule.pattern
    return patterns


def _absolute(index: int, n: int) -> int:
    absolute = index + n if index < 0 else index
    if not 0 <= absolute < n:
        raise NosinkError(f"layer index {index} is out of range for a model with L={n} layers")
    return absolute


def _reference_pattern(mask_type: str) -> LayerPattern:
    name = str(mask_type).upper()
    if name == "BACK":
        return LayerPattern(Pattern.BACKWARD)
    match = re.fullmatch(r"MASK(\d+)", name, re.ASCII)
    if match is None:
        raise NosinkError(f"unknown mask_type {mask_type!r}; the released code uses MASK0 (or MASKm) and BACK")
    return LayerPattern(Pattern.NOSINK, int(match[1]))


def _inplace_from_counts(unsink: LayerPattern, u: int, b: int) -> Plan:
    if not (u or b):
        return Plan()
    if unsink.kind is Pattern.NOSINK:
        if b and u:
            return Plan(PlanKind.MASK_AND_BIDIR, k=u + b, k0=u, m=unsink.m)
        if u:
            return Plan(PlanKind.MASK_BIDIR, k=u, m=unsink.m)
    elif not b:
        return Plan(PlanKind.INPLACE, k=u, pattern=unsink)
    if not u:
        return Plan(PlanKind.INPLACE, k=b, pattern=LayerPattern(Pattern.BIDIR))
    # BACK above bidir has no paper name: an explicit rule set.
    rules = {(-u, -1): unsink, (-(u + b), -(u + 1)): LayerPattern(Pattern.BIDIR)}
    return Plan.from_layers(rules)


def _branched_schedule(kind: PlanKind, k: int, x: LayerPattern, n: int) -> Schedule:
    causal_all = tuple(Step(i, CAUSAL) for i in range(n))
    if kind is PlanKind.INTER:
        prefix = causal_all[: n - k]
        converted = tuple(Step(i, x) for i in range(n - k, n))
        return Schedule(n, prefix, (converted, causal_all[n - k :]))
    if kind is PlanKind.EXTRA:
        return Schedule(n, (), (tuple(Step(i, x) for i in range(k)), causal_all))
    repeats = tuple(Step(n - 1, x) for _ in range(k))  # EXTEND
    return Schedule(n, (), (causal_all + repeats,))
