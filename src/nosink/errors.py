"""The one exception type that nosink raises for user mistakes."""

from __future__ import annotations


class NosinkError(ValueError):
    """A user mistake: a bad plan, a bad input, an unsupported model. The message says what to do."""
