"""Recipes: training-free choices beside the attention plan, with one string form.

A :class:`Recipe` says which layer's states are pooled. Its string form is a comma-separated list
of ``key=value`` settings, the same in the CLI (``--recipe``), in Python and in records:

- ``layer=J``: the states after J decoder layers, 1 … L (0 = the token embeddings); ``layer=-J``
  counts from the top, so ``layer=-1`` (the default) is the last layer and ``layer=-4`` the
  fourth from the top.
- ``layer=A..B``: the mean of the states after A, A+1, …, B layers (ends included; either end may
  count from the top, as in ``layer=-8..-1``).
- ``norm=on`` (default) or ``norm=off``: whether the model's final norm is applied to each chosen
  layer's states before they are averaged and pooled. ``layer=-1,norm=on`` is what the model
  outputs; an intermediate layer is never normed by the model itself.

- ``prompt=NAME`` or ``prompt="TEMPLATE"``: the text goes into a template at ``{text}`` (a JSON
  string in the string form, so it may hold commas and quotes). ``prompteol`` is PromptEOL's
  ``This sentence : "{text}" means in one word:"`` (Jiang et al. 2023) and pools the last token;
  ``echo`` is ``Rewrite the sentence: {text}, rewritten sentence: {text}`` (Springer et al. 2025)
  and pools the mean of the second copy. With ``{text}`` more than once, the last copy is the
  text that ``mean`` pools; ``last`` pools the template's last token. An instruction still goes
  before everything.
- ``pool=mean|weighted_mean|last|first``: the pooling, over the text's tokens (``mean``) or the
  row's last or first token; it overrides the encoder's pooling.

``Recipe()`` (string ``"default"``) is the model's own output, so an encoder without a recipe
behaves exactly as before. Layer states come from nosink's own layer loop, which gives the same
final states as the model's forward (tested), so that any layer can be read out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from nosink.errors import NosinkError
from nosink.inputs import TEXT_SLOT
from nosink.pooling import Pooling

_LAYER_RE = re.compile(r"^(-?\d+)(?:\.\.(-?\d+))?$", re.ASCII)
_SWITCH = {"on": True, "off": False}
_KEYS = ("layer", "norm", "prompt", "pool")
PROMPTS = {  # name -> (template, its pooling)
    "prompteol": ('This sentence : "{text}" means in one word:"', Pooling.LAST),
    "echo": ("Rewrite the sentence: {text}, rewritten sentence: {text}", Pooling.MEAN),
}


@dataclass(frozen=True)
class Recipe:
    """Which layer's states are pooled: ``layer_from`` … ``layer_to`` (as written), normed or not."""

    layer_from: int = -1
    layer_to: int | None = None  # None: a single layer
    norm: bool = True
    prompt: str | None = None  # a template holding TEXT_SLOT; None: the text alone
    pool: Pooling | None = None  # None: the encoder's pooling

    def __post_init__(self) -> None:
        for name in ("layer_from", "layer_to"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise NosinkError(f"recipe {name} must be an integer, got {value!r}")
        if not isinstance(self.norm, bool):
            raise NosinkError(f"recipe norm must be True or False, got {self.norm!r}")
        if self.prompt is not None and (not isinstance(self.prompt, str) or TEXT_SLOT not in self.prompt):
            raise NosinkError(f"a recipe prompt must be a string holding {TEXT_SLOT}, got {self.prompt!r}")
        if self.pool is not None:
            object.__setattr__(self, "pool", Pooling.coerce(self.pool))
            if self.pool is Pooling.REFERENCE_MEAN:
                raise NosinkError(
                    "reference_mean is the released code's pooling of its own prompt; use mean in a recipe"
                )

    @classmethod
    def parse(cls, text: str) -> Recipe:
        """A recipe from its string form, e.g. ``"layer=-4"``, ``"prompt=prompteol,layer=10..20"``, ``"default"``."""
        if not isinstance(text, str):
            raise NosinkError(f"a recipe must be a string, got {type(text).__name__}")
        settings = _settings(text)
        layer_from, layer_to = cls._parse_layer(settings.get("layer", "-1"), text)
        norm = settings.get("norm", "on")
        if norm not in _SWITCH:
            raise NosinkError(f"recipe norm must be on or off, got {norm!r} in {text!r}")
        prompt, pool = settings.get("prompt"), settings.get("pool")
        if prompt is not None and prompt in PROMPTS:
            prompt, default_pool = PROMPTS[prompt]
            pool = pool or default_pool.value
        elif prompt is not None and TEXT_SLOT not in prompt:
            raise NosinkError(f"recipe prompt must be one of {', '.join(PROMPTS)} or a template holding {TEXT_SLOT}")
        return cls(layer_from, layer_to, _SWITCH[norm], prompt, None if pool is None else Pooling.coerce(pool))

    @staticmethod
    def _parse_layer(value: str, text: str) -> tuple[int, int | None]:
        match = _LAYER_RE.match(value)
        if match is None:
            raise NosinkError(
                f"recipe layer must be J or A..B (integers, negative from the top), got {value!r} in {text!r}"
            )
        end = match.group(2)
        return int(match.group(1)), None if end is None else int(end)

    @classmethod
    def coerce(cls, value: Recipe | str | None) -> Recipe:
        """A recipe from a Recipe, its string form, or None (the default)."""
        if value is None:
            return cls()
        return value if isinstance(value, Recipe) else cls.parse(value)

    @property
    def is_default(self) -> bool:
        """True when the recipe is the model's own output (the last layer, normed)."""
        return self.reads_last_layer and self.prompt is None and self.pool is None

    @property
    def reads_last_layer(self) -> bool:
        """True when the states are the model's own output (the last layer, normed)."""
        return self.layer_from == -1 and self.layer_to in (None, -1) and self.norm

    def depths(self, num_layers: int) -> list[int]:
        """The chosen depths in 0 … L (the number of decoder layers run), for a model of ``num_layers``."""
        ends = [self._depth(self.layer_from, num_layers)]
        if self.layer_to is not None:
            ends.append(self._depth(self.layer_to, num_layers))
        if ends[-1] < ends[0]:
            raise NosinkError(f"recipe layer range {self.layer_from}..{self.layer_to} is empty for {num_layers} layers")
        return list(range(ends[0], ends[-1] + 1))

    def _depth(self, value: int, num_layers: int) -> int:
        depth = value if value >= 0 else num_layers + 1 + value
        if not 0 <= depth <= num_layers:
            raise NosinkError(
                f"recipe layer {value} is outside this model's {num_layers} layers "
                f"(use 0..{num_layers}, or -1..-{num_layers + 1} from the top)"
            )
        return depth

    def __str__(self) -> str:
        if self.is_default:
            return "default"
        items = []
        if self.prompt is not None:
            name = next((n for n, (template, _) in PROMPTS.items() if template == self.prompt), None)
            items.append(f"prompt={name or json.dumps(self.prompt, ensure_ascii=False)}")
        if self.pool is not None:
            items.append(f"pool={self.pool.value}")
        if not self.reads_last_layer or items == []:
            layer = str(self.layer_from) if self.layer_to is None else f"{self.layer_from}..{self.layer_to}"
            items.append(f"layer={layer}")
        if not self.norm:
            items.append("norm=off")
        return ",".join(items)


def _settings(text: str) -> dict[str, str]:
    """``key=value`` items separated by commas; a value may be a JSON string (for templates with commas)."""
    settings: dict[str, str] = {}
    rest = text.strip()
    decoder = json.JSONDecoder()
    while rest:
        if rest.startswith("default"):
            rest = rest[len("default") :].lstrip()
        else:
            key, sep, after = rest.partition("=")
            key, after = key.strip(), after.lstrip()
            if not sep or key not in _KEYS or "," in key:
                item = rest.split(",", 1)[0].strip()
                raise NosinkError(
                    f"unknown recipe setting {item!r} in {text!r}; use layer=J, layer=A..B, norm=on|off, "
                    f'prompt=NAME or prompt="TEMPLATE", pool=P'
                )
            if after.startswith('"'):
                try:
                    value, end = decoder.raw_decode(after)
                except json.JSONDecodeError:
                    raise NosinkError(f"recipe {key} has an unterminated or bad JSON string in {text!r}") from None
                rest = after[end:].lstrip()
            else:
                value, comma, tail = after.partition(",")
                value, rest = value.strip(), comma + tail
            if key in settings:
                raise NosinkError(f"recipe setting {key!r} is given twice in {text!r}")
            settings[key] = value
        if rest and not rest.startswith(","):
            raise NosinkError(f"recipe settings must be separated by commas, got {rest!r} in {text!r}")
        rest = rest[1:].lstrip()
    return settings
