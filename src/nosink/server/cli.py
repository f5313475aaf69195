"""The ``nosink serve`` command: one flag per server setting, generated from :class:`ServerSettings`."""

from __future__ import annotations

import argparse
from typing import Any, get_args

from pydantic import ValidationError

from nosink.errors import NosinkError
from nosink.server.settings import ServerSettings

EXAMPLES = """\
Every flag can also be set with an environment variable NOSINK_<NAME> (e.g. NOSINK_API_KEYS=k1,k2);
a flag wins over its variable. The full list with defaults: docs/server.md.

examples:
  nosink serve --model ../shared/models/stories260k --plan "mask0&bidir:k=4,k0=1"
  NOSINK_API_KEYS=secret nosink serve --model ./my-model --plan mask0-bidir:k=8 --port 9000
  curl -s localhost:8080/v1/embeddings -H 'Content-Type: application/json' -d '{"input": ["a cat", "a dog"]}'
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One optional flag per setting; unset flags leave the variable or default in force."""
    for name, field in ServerSettings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        options: dict[str, Any] = {"default": argparse.SUPPRESS, "help": field.description}
        annotation = _optional_of(field.annotation)
        choices = get_args(annotation)
        if annotation is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif choices and all(isinstance(c, (str, int)) for c in choices) and name != "device":
            options["choices"], options["type"] = choices, type(choices[0])
        elif annotation in (int, float):
            options["type"] = annotation  # "int | None" too: --torch-threads 2 is the int 2, not the text "2"
        parser.add_argument(flag, **options)


def _optional_of(annotation: Any) -> Any:
    """``X`` for ``X | None``; any other annotation as it is."""
    members = get_args(annotation)
    if type(None) in members and len(members) == 2:
        return next(member for member in members if member is not type(None))
    return annotation


def settings_from(args: argparse.Namespace) -> ServerSettings:
    """Settings from the given flags, then ``NOSINK_*`` variables, then defaults."""
    given = {name: getattr(args, name) for name in ServerSettings.model_fields if hasattr(args, name)}
    try:
        return ServerSettings(**given)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in error.errors())
        missing_model = any(e["loc"] == ("model",) and e["type"] == "missing" for e in error.errors())
        hint = "; --model or NOSINK_MODEL is required" if missing_model else ""
        raise NosinkError(f"bad server settings ({problems}){hint}") from None


def run_serve(args: argparse.Namespace) -> int:
    from nosink.server.serve import run

    run(settings_from(args))
    return 0
