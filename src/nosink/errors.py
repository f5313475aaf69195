"""The one exception type that nosink raises for user mistakes, and the string enums whose bad values raise it."""

from __future__ import annotations

from enum import Enum
from typing import TypeVar


class NosinkError(ValueError):
    """A user mistake: a bad plan, a bad input, an unsupported model. The message says what to do."""


def check_positive(**values: object) -> None:
    """NosinkError unless every value is a positive ``int`` (``True`` is not one): ``check_positive(k=k)``."""
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise NosinkError(f"{name} must be a positive integer, got {value!r}")


def check_bool(**values: object) -> None:
    """NosinkError unless every value is ``True`` or ``False`` (``1`` and ``"yes"`` are not)."""
    for name, value in values.items():
        if not isinstance(value, bool):
            raise NosinkError(f"{name} must be True or False, got {value!r}")


C = TypeVar("C", bound="Choice")


class Choice(str, Enum):
    """A string enum of user-facing choices: :meth:`coerce` takes a member or its value, with one clear error."""

    @classmethod
    def noun(cls) -> str:
        """What the choice is called in error messages (subclasses name theirs)."""
        return "value"

    @classmethod
    def coerce(cls: type[C], value: C | str) -> C:
        """The member for ``value`` (a member or its string); NosinkError naming the valid ones otherwise."""
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(member.value for member in cls)
            raise NosinkError(f"unknown {cls.noun()} {value!r}; use one of {known}") from None
