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

- ``prompt=NAME``, ``prompt="TEMPLATE"`` or ``prompt=["TEMPLATE", …]``: the text goes into a
  template at ``{text}`` (JSON in the string form, so a template may hold commas and quotes).
  ``prompteol`` is PromptEOL's ``This sentence : "{text}" means in one word:"`` (Jiang et al. 2023)
  and pools the last token; ``echo`` is ``Rewrite the sentence: {text}, rewritten sentence: {text}``
  (Springer et al. 2025) and pools the mean of the second copy. With ``{text}`` more than once, the
  last copy is the text that ``mean`` pools; ``last`` pools the template's last token. With several
  templates the text is encoded once in each and the pooled vectors are averaged (before any
  normalization): ``metaeol`` is MetaEOL's eight meta-task templates (Lei et al. 2024,
  arXiv 2402.18458), last-token pooled. An instruction still goes before everything.
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
METAEOL_TEMPLATES = (  # MetaEOL's meta-task prompts (Lei et al. 2024, arXiv 2402.18458), in the paper's order
    "In this task, you're presented with a text excerpt. Your task is to categorize the excerpt into a broad "
    "category such as 'Education', 'Technology', 'Health', 'Business', 'Environment', 'Politics', or 'Culture'. "
    "These categories help in organizing content for better accessibility and targeting. For this task, this "
    'sentence : "{text}" should be classified under one general category in one word:"',
    "In this task, you're given a statement and you need to determine whether it's presenting an 'Opinion' or a "
    "'Fact'. This distinction is vital for information verification, educational purposes, and content analysis. "
    'For this task, this sentence : "{text}" discriminates between opinion and fact in one word:"',
    "In this task, you're given a review from an online platform. Your task is to generate a rating for the "
    "product based on the review on a scale of 1-5, where 1 means 'extremely negative' and 5 means 'extremely "
    'positive\'. For this task, this sentence : "{text}" reflects the sentiment in one word:"',
    "In this task, you're reading a personal diary entry. Your task is to identify the predominant emotion "
    'expressed, such as joy, sadness, anger, fear, or love. For this task, this sentence : "{text}" conveys the '
    'emotion in one word:"',
    "In this task, you're presented with two sentences. Your task is to assess whether the sentences convey the "
    "same meaning. Use 'identical', 'similar', 'different', or 'unrelated' to describe the relationship. To "
    'enhance the performance of this task, this sentence : "{text}" means in one word:"',
    "In this task, you're given a sentence and a phrase. Your task is to determine if the phrase can be a "
    "contextual synonym within the given sentence. Options include 'yes', 'no', or 'partially'. To enhance the "
    'performance of this task, this sentence : "{text}" means in one word:"',
    "In this task, you're examining a news article. Your task is to extract the most critical fact from the "
    'article. For this task, this sentence : "{text}" encapsulates the key fact in one word:"',
    "In this task, you're reviewing a scientific abstract. Your task is to identify the main entities (e.g., "
    'proteins, diseases) and their relations (e.g., causes, treats). For this task, this sentence : "{text}" '
    'highlights the primary entity or relation in one word:"',
)
PROMPTS: dict[str, tuple[str | tuple[str, ...], Pooling]] = {  # name -> (template or templates, their pooling)
    "prompteol": ('This sentence : "{text}" means in one word:"', Pooling.LAST),
    "echo": ("Rewrite the sentence: {text}, rewritten sentence: {text}", Pooling.MEAN),
    "metaeol": (METAEOL_TEMPLATES, Pooling.LAST),
}


@dataclass(frozen=True)
class Recipe:
    """Which layer's states are pooled: ``layer_from`` … ``layer_to`` (as written), normed or not."""

    layer_from: int = -1
    layer_to: int | None = None  # None: a single layer
    norm: bool = True
    prompt: str | tuple[str, ...] | None = None  # template(s) holding TEXT_SLOT; None: the text alone
    pool: Pooling | None = None  # None: the encoder's pooling

    def __post_init__(self) -> None:
        for name in ("layer_from", "layer_to"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise NosinkError(f"recipe {name} must be an integer, got {value!r}")
        if not isinstance(self.norm, bool):
            raise NosinkError(f"recipe norm must be True or False, got {self.norm!r}")
        if self.prompt is not None:
            object.__setattr__(self, "prompt", _check_prompt(self.prompt))
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
        if isinstance(prompt, str) and prompt in PROMPTS:
            prompt, default_pool = PROMPTS[prompt]
            pool = pool or default_pool.value
        elif isinstance(prompt, str) and TEXT_SLOT not in prompt:
            raise NosinkError(f"recipe prompt must be one of {', '.join(PROMPTS)} or a template holding {TEXT_SLOT}")
        if isinstance(prompt, list):
            prompt = tuple(prompt)
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
    def templates(self) -> tuple[str, ...]:
        """The prompt templates, each holding ``{text}``; empty without a prompt."""
        if self.prompt is None:
            return ()
        return (self.prompt,) if isinstance(self.prompt, str) else self.prompt

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
            written = self.prompt if isinstance(self.prompt, str) else list(self.prompt)
            items.append(f"prompt={name or json.dumps(written, ensure_ascii=False)}")
        if self.pool is not None:
            items.append(f"pool={self.pool.value}")
        if not self.reads_last_layer or items == []:
            layer = str(self.layer_from) if self.layer_to is None else f"{self.layer_from}..{self.layer_to}"
            items.append(f"layer={layer}")
        if not self.norm:
            items.append("norm=off")
        return ",".join(items)


def _check_prompt(prompt: object) -> str | tuple[str, ...]:
    """A template, or a tuple of two or more (one alone is kept as a string); each must hold ``{text}``."""
    templates = list(prompt) if isinstance(prompt, list | tuple) else [prompt]
    for template in templates:
        if not isinstance(template, str) or TEXT_SLOT not in template:
            raise NosinkError(f"a recipe prompt must be a string holding {TEXT_SLOT}, got {template!r}")
    if not templates:
        raise NosinkError("a recipe prompt list needs at least one template")
    return templates[0] if len(templates) == 1 else tuple(templates)


def _settings(text: str) -> dict[str, str | list]:
    """``key=value`` items separated by commas; a prompt may be JSON (a string, or a list of strings)."""
    settings: dict[str, str | list] = {}
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
            if after.startswith(('"', "[")):
                try:
                    value, end = decoder.raw_decode(after)
                except json.JSONDecodeError:
                    raise NosinkError(f"recipe {key} has an unterminated or bad JSON string in {text!r}") from None
                if isinstance(value, list) and key != "prompt":
                    raise NosinkError(f"only a recipe prompt may be a list, got {key}={after[:end]} in {text!r}")
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
