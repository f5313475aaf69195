"""Argument checks and types shared by the CLI's command modules."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from nosink.errors import NosinkError

MODEL_HELP = "hub name, local model folder, or .gguf file"
MAX_LENGTH_HELP = "tokens per text (default: 512, or the model's position limit when smaller; capped at that limit)"
SubparserFactory = Callable[..., argparse.ArgumentParser]  # cli._subparser: how command modules add a command


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def check_model_path(model: str, *, hint: str = "") -> None:
    """A clear error for a local folder that does not exist (transformers would read it as a hub name)."""
    path = Path(model).expanduser()
    looks_local = path.is_absolute() or model.startswith((".", "~")) or model.endswith(("/", "\\"))
    if looks_local and not path.exists():
        kind = "GGUF file" if model.lower().endswith(".gguf") else "model folder"
        raise NosinkError(f"{kind} {model!r} does not exist{hint}")


def format_table(rows: Sequence[Sequence[str]]) -> str:
    """Rows as left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)), row[-1]]) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


THREADS_HELP = (
    "torch intra-op threads (default: torch's, one per physical core); give fewer when other processes share "
    "the CPU, so that they do not oversubscribe it"
)


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--torch-threads N``: applied by ``nosink.cli.main`` before the command runs."""
    parser.add_argument("--torch-threads", type=positive_int, metavar="N", help=THREADS_HELP)
