"""A converted encoder as a model folder: nosink, sentence-transformers and mteb load it back.

The folder holds:

- ``nosink.json``: the plan, pooling, recipe, ``max_length``, named prompts and similarity
  function, the base model's name, and where the weights are;
- the decoder's weights once, as ``model.safetensors`` with its ``config.json`` (the backbone
  only: a ``*ForCausalLM``'s LM head is not an encoder's), or none when the user asks to
  reference the base model instead;
- the tokenizer's files;
- ``modules.json``, ``config_sentence_transformers.json`` and ``nosink_module.py``: one
  sentence-transformers module (:class:`nosink.st_module.NosinkModule`) that tokenizes, runs the
  plan and pools exactly as :meth:`Encoder.encode` does. ``SentenceTransformer(folder,
  trust_remote_code=True)`` loads it; the file only imports nosink, which must be installed;
- ``README.md``: a model card naming the plan, the base model and the paper.

The pooling is nosink's, inside that module, not sentence-transformers' ``Pooling``: a recipe's
pooling (the last copy of an echo prompt, several templates averaged) has no ``Pooling`` mode.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nosink.errors import Choice, NosinkError

if TYPE_CHECKING:
    from nosink.encoder import Encoder

SAVED_CONFIG = "nosink.json"
ST_MODULE_FILE = "nosink_module.py"
ST_MODULE_TYPE = "nosink_module.NosinkModule"
FORMAT_VERSION = 1
_HUB_NAME = re.compile(r"^[\w.-]+(/[\w.-]+)?$", re.ASCII)
PAPER = "Look Both Ways and No Sink: Converting LLMs into Text Encoders without Training (ACL 2025)"


class Weights(Choice):
    """Where a saved encoder's weights are."""

    COPY = "copy"  # in the folder, as safetensors
    REFERENCE = "reference"  # not in the folder: the base model's name or absolute path is recorded

    @classmethod
    def noun(cls) -> str:
        return "weights"


@dataclass(frozen=True)
class SavedEncoder:
    """The contents of ``nosink.json``."""

    plan: str
    pooling: str
    recipe: str
    max_length: int
    base_model: str  # the pretrained decoder that was converted
    weights: str = Weights.COPY.value  # or the base model's name / absolute path, for Weights.REFERENCE
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn_name: str = "cosine"
    format: int = FORMAT_VERSION
    nosink_version: str = ""

    def encoder_settings(self) -> dict[str, Any]:
        """The ``Encoder`` keyword arguments this folder records."""
        return {
            "plan": self.plan,
            "pooling": self.pooling,
            "recipe": self.recipe,
            "max_length": self.max_length,
            "prompts": self.prompts,
            "default_prompt_name": self.default_prompt_name,
            "similarity_fn_name": self.similarity_fn_name,
        }

    @property
    def weights_source(self) -> str | None:
        """Where to load the weights from: None for the folder itself, else a hub name or folder."""
        return None if self.weights == Weights.COPY.value else self.weights


def read_saved(folder: str | os.PathLike[str]) -> SavedEncoder | None:
    """The saved settings of a folder written by :func:`save_encoder`; None for any other folder or name."""
    path = Path(folder).expanduser() / SAVED_CONFIG
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise TypeError(f"a JSON object is expected, got {type(data).__name__}")
        if data.get("format") != FORMAT_VERSION:
            raise NosinkError(
                f"{path} is format {data.get('format')!r}; this nosink reads format {FORMAT_VERSION}: upgrade nosink"
            )
        return SavedEncoder(**data)
    except (json.JSONDecodeError, TypeError) as error:
        raise NosinkError(f"{path} is not a valid nosink.json ({error}); save the encoder again") from None


def weights_folder_or_name(model: str) -> str:
    """Where a model's config and weights are: a reference folder's base model, else ``model`` itself."""
    saved = read_saved(model) if Path(model).expanduser().is_dir() else None
    return saved.weights_source if saved is not None and saved.weights_source else model


def saved_or_given(model: str, *, plan: str | None, pooling: str | None, recipe: str | None) -> dict[str, Any]:
    """The settings given, else a saved folder's, else the defaults (plan, pooling, recipe, ``max_length``)."""
    saved = read_saved(model) if Path(model).expanduser().is_dir() else None
    recorded = saved.encoder_settings() if saved else {"plan": "baseline", "pooling": "mean", "recipe": "default"}
    given = {"plan": plan, "pooling": pooling, "recipe": recipe}
    return {key: given[key] or recorded[key] for key in given} | {"max_length": recorded.get("max_length")}


def save_encoder(encoder: Encoder, folder: str | os.PathLike[str], *, weights: Weights | str = Weights.COPY) -> Path:
    """Write ``encoder`` into a new folder (see the module docstring); returns the folder.

    The folder is written under a temporary name and renamed into place when complete; an
    existing folder is refused. The model object is left as it was (its config included).
    """
    from nosink import __version__

    weights = Weights.coerce(weights)
    target = Path(folder).expanduser()
    if target.exists():
        raise NosinkError(f"output folder {str(target)!r} already exists; remove it or choose another")
    if not target.parent.is_dir():
        raise NosinkError(f"the folder {str(target.parent)!r} for the output does not exist")
    source = _weights_source(encoder, weights)
    saved = SavedEncoder(
        plan=str(encoder.plan),
        pooling=encoder.own_pooling.value,  # a recipe's pooling is in the recipe
        recipe=str(encoder.recipe),
        max_length=encoder.max_length,
        base_model=encoder.base_model_name,
        weights=source,
        prompts=dict(encoder.prompts),
        default_prompt_name=encoder.default_prompt_name,
        similarity_fn_name=encoder.similarity_fn_name.value,
        nosink_version=__version__,
    )
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir()
        if weights is Weights.COPY:
            _save_backbone(encoder, partial)
        encoder.tokenizer.save_pretrained(partial)
        _write_json(partial / SAVED_CONFIG, asdict(saved))
        _write_sentence_transformers_files(partial, saved)
        (partial / "README.md").write_text(model_card(saved, encoder), encoding="utf-8")
        partial.rename(target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target


def _save_backbone(encoder: Encoder, folder: Path) -> None:
    """The backbone's weights and config. ``save_pretrained`` writes its class into ``config.architectures``,
    a config the backbone shares with a chat model it came from: the user's value is put back."""
    config = encoder.base.config
    architectures = getattr(config, "architectures", None)
    try:
        encoder.base.save_pretrained(folder, safe_serialization=True)
    finally:
        config.architectures = architectures


def _weights_source(encoder: Encoder, weights: Weights) -> str:
    """``copy``, or the base model's absolute folder or hub name, for a reference."""
    if weights is Weights.COPY:
        return Weights.COPY.value
    name = encoder.base_model_name
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local.resolve())
    if not _HUB_NAME.match(name) or name == encoder.base.config.model_type:
        raise NosinkError(f"the base model {name!r} is neither a local folder nor a hub name; save with weights='copy'")
    return name


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_sentence_transformers_files(folder: Path, saved: SavedEncoder) -> None:
    versions = _versions()
    _write_json(folder / "modules.json", [{"idx": 0, "name": "0", "path": "", "type": ST_MODULE_TYPE}])
    _write_json(
        folder / "config_sentence_transformers.json",
        {
            "model_type": "SentenceTransformer",
            "__version__": versions,
            "prompts": saved.prompts,
            "default_prompt_name": saved.default_prompt_name,
            "similarity_fn_name": saved.similarity_fn_name,
        },
    )
    (folder / ST_MODULE_FILE).write_text(
        '"""sentence-transformers loads this folder through nosink (pip install nosink)."""\n\n'
        "from nosink.st_module import NosinkModule\n\n"
        '__all__ = ["NosinkModule"]\n',
        encoding="utf-8",
    )


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("sentence_transformers", "transformers", "torch", "nosink"):
        try:
            found[package.replace("torch", "pytorch")] = version(package.replace("_", "-"))
        except PackageNotFoundError:
            continue
    return found


def model_card(saved: SavedEncoder, encoder: Encoder) -> str:
    """A short README.md: what the model is, how it was converted, and how to load it."""
    prompts = "".join(f"- `{name}`: `{json.dumps(text)}`\n" for name, text in saved.prompts.items()) or "none\n"
    weights = (
        "stored in this folder (safetensors)"
        if saved.weights_source is None
        else f"not stored here: loaded from `{saved.weights_source}`"
    )
    return f"""---
library_name: sentence-transformers
tags:
- nosink
- sentence-transformers
- feature-extraction
base_model: {saved.base_model}
---

# {Path(saved.base_model).name or saved.base_model}, converted into a text encoder by nosink

This folder is the decoder LLM `{saved.base_model}` used as a text encoder **without training**,
as in *{PAPER}*: some of its layers get bidirectional, backward or "no-sink" attention, and the
hidden states are pooled.

| setting | value |
|---|---|
| base model | `{saved.base_model}` ({encoder.num_layers} layers, {encoder.dim} dimensions) |
| plan | `{saved.plan}` |
| pooling | `{saved.pooling}` |
| recipe | `{saved.recipe}` |
| max length | {saved.max_length} tokens |
| similarity | {saved.similarity_fn_name} |
| weights | {weights} |

Prompts: {prompts}
## Use

```python
from nosink import Encoder
encoder = Encoder.from_pretrained("path/to/this/folder")
vectors = encoder.encode(["a first text", "a second text"], normalize=True)

from sentence_transformers import SentenceTransformer  # nosink must be installed
model = SentenceTransformer("path/to/this/folder", trust_remote_code=True)
vectors = model.encode(["a first text", "a second text"], normalize_embeddings=True)
```

```bash
nosink serve --model path/to/this/folder
```

Written by nosink {saved.nosink_version}.
"""
