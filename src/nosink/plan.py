"""Plans: which layers run with which attention pattern, and how branches combine (docs/spec.md §3–4).

A :class:`Plan` is independent of the model; :meth:`Plan.resolve` checks it against the model's
number of layers L and returns a :class:`Schedule`, the exact list of layer calls to run.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

from nosink.errors import NosinkError
from nosink.patterns import CAUSAL, LayerPattern, Pattern


class Architecture(str, Enum):
    """How converted layers are used (docs/spec.md §4)."""

    INPLACE = "inplace"
    INTER = "inter"
    EXTRA = "extra"
    EXTEND = "extend"


class PlanKind(str, Enum):
    """The named configuration families of docs/spec.md §3, plus an explicit per-layer form."""

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
    ("inter-back&bidir:k=K,k0=K0", "(released code)", "any ARCH-X(k), X = back|maskM: top k0 converted X, rest bidir"),
    ("mask{M}-bidir:k=K", "MASKm-BIDIR(k)", "top k layers bidir with tokens 0..m hidden (no sink)"),
    ("mask{M}-for:k=K", "MASKm-FOR(k)", "top k layers causal with tokens 0..m hidden"),
    ("mask{M}-all:k=K", "MASKm-ALL(k)", "top k nosink, every other layer nosink_causal"),
    ("mask{M}&bidir:k=K,k0=K0", "MASKm&BIDIR(k, k0)", "top k0 nosink, the k-k0 below them bidir"),
    ("layers:P,P,...", "(explicit)", "one pattern per layer: causal|backward|bidir|nosink|nosink_causal"),
    ("layers:I=P,A..B=P", "(explicit)", "patterns by layer index or range (negative = from top), rest causal"),
    ("mask0-bidir:k=K,res=R", "(released code)", "any plan + res=R|none: reference mode, residual every R layers"),
)

_X_NAMES = {"bidir": LayerPattern(Pattern.BIDIR), "back": LayerPattern(Pattern.BACKWARD)}
# re.ASCII everywhere: \d is 0-9 only, so "mask٠-bidir:k=٣" (Arabic-Indic digits) is not a plan.
_NAME_RE = re.compile(
    r"^(?:(?P<arch>inplace|inter|extra|extend)-(?P<x>bidir|back|mask\d+)(?P<mixed>&bidir)?"
    r"|mask(?P<m>\d+)(?P<mask>-bidir|-for|-all|&bidir))$",
    re.ASCII,
)
_PARAM_RE = re.compile(r"^(k|k0)=(\d+)$", re.ASCII)
_RES_RE = re.compile(r"^res=(?P<every>\d+|none)$", re.ASCII)
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
class Residual:
    """The released code's extra residual connection (reference mode only).

    Along the main sequence of layer calls (the prefix, then the first branch), before call i with
    ``i >= start`` and ``(i - start) % every == 0``: the call's input gets the last saved input
    added, and is saved. With ``to_output`` (single-branch plans), the last saved input is also
    added to the output before the final norm.
    """

    every: int
    start: int
    to_output: bool

    def applies(self, index: int) -> bool:
        return index >= self.start and (index - self.start) % self.every == 0


@dataclass(frozen=True)
class Schedule:
    """A plan resolved for a model with ``num_layers`` layers.

    Run ``prefix`` once from the embeddings; run every branch from the prefix's output; the
    output is the final norm of the sum of the branch outputs. ``reference``: converted layers
    ignore sliding windows, and ``residual`` (if any) is added, as in the authors' released code.
    """

    num_layers: int
    prefix: tuple[Step, ...]
    branches: tuple[tuple[Step, ...], ...]
    reference: bool = False
    residual: Residual | None = None

    @property
    def layer_patterns(self) -> tuple[LayerPattern, ...] | None:
        """The per-layer patterns when the schedule is one ordinary pass over all layers, else None."""
        if self.prefix or len(self.branches) != 1 or self.residual is not None:
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

    ``pattern`` is X for the INPLACE/INTER/EXTRA/EXTEND families, where ``k0`` > 0 makes only the
    top k0 of the k converted layers X and the ones below them bidir (the released code's mixed
    form); ``m`` is the MASKm index of the mask families; ``rules`` and ``length`` hold the explicit
    per-layer form. ``reference`` runs the plan as the authors' released code does: converted layers
    ignore sliding windows, and ``res`` (an int, or None for off) is its extra residual every ``res``
    layers (see :class:`Residual` and :meth:`from_reference`).
    """

    kind: PlanKind = PlanKind.BASELINE
    k: int = 0
    k0: int = 0
    m: int = 0
    pattern: LayerPattern | None = None
    rules: tuple[LayerRule, ...] = field(default=())
    length: int | None = None
    reference: bool = False
    res: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", PlanKind(self.kind))
        for name in ("k", "k0", "m"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise NosinkError(f"plan parameter {name} must be an integer >= 0, got {value!r}")
        if self.k0 > self.k:
            raise NosinkError(f"k0 must be <= k (k0 of the top k layers are nosink), got k={self.k}, k0={self.k0}")
        LayerPattern(Pattern.NOSINK, self.m)  # the sink index's own bounds, checked when the plan is made
        if self.kind in (PlanKind.INPLACE, *_BRANCHED) and self.pattern is None:
            raise NosinkError(f"a {self.kind.value} plan needs a pattern X")
        self._check_k0()
        self._check_reference()

    def _check_k0(self) -> None:
        if not self.k0 or self.kind is PlanKind.MASK_AND_BIDIR:
            return
        if self.kind not in (PlanKind.INPLACE, *_BRANCHED):
            raise NosinkError(f"a {self.kind.value} plan takes no k0")
        if self.pattern == LayerPattern(Pattern.BIDIR):
            raise NosinkError(f"{self.kind.value}-bidir takes no k0: its converted layers are all bidir already")

    def _check_reference(self) -> None:
        if self.res is not None:
            if not self.reference:
                raise NosinkError("res (the released code's residual) needs reference=True")
            if not isinstance(self.res, int) or isinstance(self.res, bool) or self.res < 1:
                raise NosinkError(
                    f"res must be an integer >= 1, or none for no residual, got {self.res!r} "
                    "(the released code fails with res_connect=0)"
                )
        if not self.reference:
            return
        if self.kind in (PlanKind.INTER, PlanKind.EXTRA) and not self.k:
            raise NosinkError(
                f"reference mode: {self.kind.value} with k=0 fails in the released code (it has no converted "
                "layers to branch from); use baseline"
            )
        if self.kind in (PlanKind.MASK_FOR, PlanKind.MASK_ALL):
            raise NosinkError(f"reference mode: the released code has no MASKm{self.kind.value.removeprefix('mask')}")
        unreleased = [p for p in self._patterns_used() if p.kind is Pattern.NOSINK_CAUSAL or p.m]
        if unreleased:
            raise NosinkError(
                f"reference mode: the released code has no {unreleased[0]} layers; its only sink mask is MASK0 "
                "(any other mask_type runs as BACK)"
            )

    def _patterns_used(self) -> list[LayerPattern]:
        """The patterns this plan names (without resolving it against a model)."""
        if self.kind is PlanKind.LAYERS:
            return [rule.pattern for rule in self.rules]
        if self.kind in _MASK_KINDS:
            return [LayerPattern(Pattern.NOSINK, self.m)]
        return [self.pattern] if self.pattern is not None else []

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
        """Parse the string form, e.g. ``mask0&bidir:k=17,k0=2`` or ``layers:causal*3,bidir*2``.

        A ``res=R`` (or ``res=none``) parameter makes it a reference-mode plan, e.g.
        ``mask0&bidir:k=17,k0=2,res=3``.
        """
        text = text.strip()
        head, _, params = text.partition(":")
        params, reference = _take_res(params, text)
        if head == "baseline" and not params:
            return cls(**reference)
        if head == "layers":
            return replace(cls._parse_layers(params), **reference)
        match = _NAME_RE.match(head)
        if match is None:
            raise NosinkError(f"unknown plan {text!r}; run `nosink plans` for the list of plan names")
        values = _parse_params(params, text)
        needed = {"k", "k0"} if match["mask"] == "&bidir" or match["mixed"] else {"k"}
        if set(values) != needed:
            want = ",".join(f"{n}=…" for n in sorted(needed))
            raise NosinkError(f"plan {text!r} takes exactly {want}")
        if match["arch"]:
            kind = PlanKind(match["arch"])
            x = _parse_x(match["x"], allow_mask=kind is not PlanKind.INPLACE, text=text, mixed=bool(match["mixed"]))
            k0 = values.get("k0", 0)
            if match["mixed"] and not 1 <= k0 <= values["k"]:
                raise NosinkError(f"plan {text!r}: k0 (the top layers that are {match['x']}) must be 1..k")
            return cls(kind, k=values["k"], k0=0 if k0 == values["k"] else k0, pattern=x, **reference)
        kind = PlanKind("mask" + match["mask"])
        return cls(kind, k=values["k"], k0=values.get("k0", 0), m=int(match["m"]), **reference)

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
        architecture: Architecture | str = "INPLACE",
        mask_type: str = "MASK0",
        num_unsink_layers: int = 0,
        num_bidir_layers: int = 0,
        unsink_layers: Sequence[int] | str | None = None,
        bidir_layers: Sequence[int] | str | None = None,
        res_connect: int | str | None = 3,
    ) -> Plan:
        """The reference-mode plan that the authors' released code runs for its arguments.

        Takes the released argument names and values as its scripts pass them: ``architecture``
        NONE/INPLACE/INTER/EXTRA/EXTEND in any case; ``mask_type`` MASK0 (nosink) or anything else,
        which the released code runs as BACK; counts of "unsink" layers (top) and bidir layers
        (below them), or 0-based index lists (negative = from the top; lists or strings such as
        ``"2,3"``); ``res_connect`` its extra residual, default 3 as there, None for off. The plan
        runs in reference mode: converted layers ignore sliding windows, as the released masks do.
        """
        arch = _reference_architecture(architecture)
        unsink = _reference_pattern(mask_type)
        res = _reference_res(res_connect)
        unsink_list, bidir_list = _reference_list(unsink_layers), _reference_list(bidir_layers)
        u = _reference_int(num_unsink_layers, "num_unsink_layers")
        b = _reference_int(num_bidir_layers, "num_bidir_layers")
        if arch == "NONE" or (arch == "EXTEND" and not (u or b or unsink_list or bidir_list)):
            return cls(reference=True, res=res)  # EXTEND with nothing to extend runs as NONE there
        if (unsink_list or bidir_list) and (u or b):
            raise NosinkError("give either layer counts or layer index lists, not both")
        if unsink_list or bidir_list:
            if arch != "INPLACE":
                raise NosinkError(f"layer index lists need the INPLACE architecture, not {arch}")
            return replace(_plan_from_lists(unsink, unsink_list, bidir_list), reference=True, res=res)
        if arch == "INPLACE":
            return replace(_inplace_from_counts(unsink, u, b), reference=True, res=res)
        kind = PlanKind(arch.lower())
        if not (u or b):
            raise NosinkError(f"{arch} with no converted layers fails in the released code; use architecture NONE")
        x, k0 = (unsink, u if b else 0) if u else (LayerPattern(Pattern.BIDIR), 0)
        return cls(kind, k=u + b, k0=k0, pattern=x, reference=True, res=res)

    # ---------------------------------------------------------------- resolution

    def resolve(self, num_layers: int) -> Schedule:
        """Check the plan against a model with ``num_layers`` layers and list its layer calls."""
        n = num_layers
        if self.k > n and self.kind is not PlanKind.EXTEND:  # EXTEND's k repeats the top layer: any k runs
            raise NosinkError(f"plan {self} needs k={self.k} layers but the model has only L={n}")
        if self.reference and self.kind is PlanKind.EXTEND and self.k > n:
            raise NosinkError(
                f"reference mode: {self} repeats the top layer {self.k} times, more than L={n}; the released code "
                "asserts num_unsink_layers + num_bidir_layers <= L"
            )
        residual = None
        if self.res is not None:
            single = self.kind not in (PlanKind.INTER, PlanKind.EXTRA)
            residual = Residual(self.res, start=self._unsink_count(), to_output=single)
        if self.kind in _BRANCHED and self.k:
            schedule = _branched_schedule(self.kind, self._converted_patterns(), n)
        else:
            schedule = Schedule(n, (), (tuple(Step(i, p) for i, p in enumerate(self._layer_patterns(n))),))
        return replace(schedule, reference=self.reference, residual=residual)

    def _converted_patterns(self) -> list[LayerPattern]:
        """The k converted patterns of an INPLACE/INTER/EXTRA/EXTEND plan, bottom to top."""
        x: LayerPattern = self.pattern  # type: ignore[assignment]
        if not self.k0:
            return [x] * self.k
        return [LayerPattern(Pattern.BIDIR)] * (self.k - self.k0) + [x] * self.k0

    def _unsink_count(self) -> int:
        """The released code's num_unsink_layers for this plan: where its residual starts (0 for index lists)."""
        if self.kind in (PlanKind.INPLACE, *_BRANCHED):
            return 0 if self.pattern == LayerPattern(Pattern.BIDIR) else self.k0 or self.k
        if self.kind is PlanKind.MASK_AND_BIDIR:
            return self.k0
        return self.k if self.kind in _MASK_KINDS else 0

    def _layer_patterns(self, n: int) -> list[LayerPattern]:
        if self.kind is PlanKind.LAYERS:
            return _apply_rules(self.rules, self.length, n)
        nosink = LayerPattern(Pattern.NOSINK, self.m)
        base = LayerPattern(Pattern.NOSINK_CAUSAL, self.m) if self.kind is PlanKind.MASK_ALL else CAUSAL
        patterns = [base] * n
        if self.kind is PlanKind.INPLACE:
            patterns[n - self.k :] = self._converted_patterns()
            return patterns
        top = {
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
        res = f"res={self.res if self.res is not None else 'none'}" if self.reference else ""
        kind = self.kind
        if kind is PlanKind.BASELINE:
            return f"baseline:{res}" if res else "baseline"
        if kind is PlanKind.LAYERS:
            rules = _format_list(self.rules) if self.length is not None else _format_rules(self.rules)
            return "layers:" + ",".join(filter(None, (rules, res)))
        if kind in _MASK_KINDS:
            params = f"k={self.k},k0={self.k0}" if kind is PlanKind.MASK_AND_BIDIR else f"k={self.k}"
            head = f"mask{self.m}{kind.value.removeprefix('mask')}"
        else:
            params = f"k={self.k},k0={self.k0}" if self.k0 else f"k={self.k}"
            head = f"{kind.value}-{_format_x(self.pattern)}{'&bidir' if self.k0 else ''}"  # type: ignore[arg-type]
        return f"{head}:" + ",".join(filter(None, (params, res)))


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


def _take_res(params: str, text: str) -> tuple[str, dict[str, bool | int | None]]:
    """Split a ``res=R|none`` item off the parameters: (the other parameters, Plan keyword arguments)."""
    items = [item.strip() for item in params.split(",")]
    found = [_RES_RE.match(item) for item in items]
    matches = [match for match in found if match]
    if len(matches) > 1:
        raise NosinkError(f"parameter res given twice in plan {text!r}")
    if not matches:
        if any(item.startswith("res=") for item in items):
            raise NosinkError(f"bad res in plan {text!r}; expected res=R (an integer >= 1) or res=none")
        return params, {}
    every = matches[0]["every"]
    rest = ",".join(item for item, match in zip(items, found, strict=True) if not match)
    return rest, {"reference": True, "res": None if every == "none" else int(every)}


def _parse_x(name: str, *, allow_mask: bool, text: str, mixed: bool = False) -> LayerPattern:
    if mixed and name == "bidir":
        raise NosinkError(f"{text!r}: the &bidir form needs X = back or maskM (bidir&bidir is just bidir)")
    if name in _X_NAMES:
        return _X_NAMES[name]
    if not allow_mask:
        spelled = f"mask{name[4:]}&bidir:k=K,k0=K0" if mixed else f"mask{name[4:]}-bidir:k=K"
        raise NosinkError(f"{text!r}: in-place nosink is spelled {spelled}")
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


_ARCHITECTURES = ("NONE", "INPLACE", "INTER", "EXTRA", "EXTEND")


def _reference_architecture(architecture: Architecture | str) -> str:
    if not isinstance(architecture, str):
        raise NosinkError(f"architecture must be a string such as 'INPLACE', got {architecture!r}")
    name = (architecture.value if isinstance(architecture, Architecture) else architecture).upper()
    if name not in _ARCHITECTURES:
        raise NosinkError(f"unknown architecture {architecture!r}; the released code takes {', '.join(_ARCHITECTURES)}")
    return name


def _reference_pattern(mask_type: str) -> LayerPattern:
    """MASK0 is nosink; the released code runs any other mask_type as BACK (it checks for MASK0 only)."""
    name = str(mask_type).upper()
    if name == "MASK0":
        return LayerPattern(Pattern.NOSINK)
    if name != "BACK":
        warnings.warn(
            f"mask_type {mask_type!r} runs as BACK (backward attention): the released code treats every "
            "mask_type other than MASK0 as BACK",
            stacklevel=3,
        )
    return LayerPattern(Pattern.BACKWARD)


def _reference_int(value: object, name: str, *, minimum: int | None = 0) -> int:
    """An integer argument as the released scripts pass it (an int or its decimal string); NosinkError otherwise."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise NosinkError(f"{name} must be an integer{bound}, got {value!r}")
    return value


def _reference_res(res_connect: object) -> int | None:
    if res_connect is None or (isinstance(res_connect, str) and res_connect.strip().lower() in ("none", "")):
        return None
    return _reference_int(res_connect, "res_connect (the released residual period; None: off)", minimum=1)


def _reference_list(layers: Sequence[int] | str | None) -> list[int]:
    """An index list as given in Python or as the released scripts pass it ("2,3", "[2 3]", "none")."""
    if layers is None:
        return []
    if isinstance(layers, str):
        text = layers.strip().strip("[](){}")
        if text.lower() in ("", "none", "false", "f", "no", "n"):
            return []
        items = text.replace(",", " ").split()
        return [_reference_int(item, f"layer index in {layers!r}", minimum=None) for item in items]
    if not isinstance(layers, Sequence):
        raise NosinkError(f"a layer index list must be a list or a string such as '2,3', got {layers!r}")
    return [_reference_int(index, "layer index", minimum=None) for index in layers]


def _plan_from_lists(unsink: LayerPattern, unsink_layers: list[int], bidir_layers: list[int]) -> Plan:
    mapping: dict[int | tuple[int, int], LayerPattern] = {}
    for index in bidir_layers:
        mapping[index] = LayerPattern(Pattern.BIDIR)
    for index in unsink_layers:
        if index in mapping:
            raise NosinkError(f"layer {index} is in both unsink_layers and bidir_layers")
        mapping[index] = unsink
    return Plan.from_layers(mapping)


def _inplace_from_counts(unsink: LayerPattern, u: int, b: int) -> Plan:
    if not (u or b):
        return Plan()
    if not u:
        return Plan(PlanKind.INPLACE, k=b, pattern=LayerPattern(Pattern.BIDIR))
    if unsink.kind is Pattern.NOSINK:
        if b:
            return Plan(PlanKind.MASK_AND_BIDIR, k=u + b, k0=u, m=unsink.m)
        return Plan(PlanKind.MASK_BIDIR, k=u, m=unsink.m)
    return Plan(PlanKind.INPLACE, k=u + b, k0=u if b else 0, pattern=unsink)


def _branched_schedule(kind: PlanKind, converted: list[LayerPattern], n: int) -> Schedule:
    k = len(converted)
    causal_all = tuple(Step(i, CAUSAL) for i in range(n))
    if kind is PlanKind.INTER:
        prefix = causal_all[: n - k]
        steps = tuple(Step(i, x) for i, x in zip(range(n - k, n), converted, strict=True))
        return Schedule(n, prefix, (steps, causal_all[n - k :]))
    if kind is PlanKind.EXTRA:
        return Schedule(n, (), (tuple(Step(i, x) for i, x in enumerate(converted)), causal_all))
    repeats = tuple(Step(n - 1, x) for x in converted)  # EXTEND
    return Schedule(n, (), (causal_all + repeats,))
