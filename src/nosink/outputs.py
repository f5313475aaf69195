"""Result files, written safely: every output path is checked before the work, and written atomically after it.

Commands call :func:`check_file_target` / :func:`check_folder_target` on their outputs before they
load a model, so a typo in ``-o`` or ``--record`` fails in a second instead of after an hour of
encoding. :func:`atomic_file` writes through a temporary file in the same folder, flushed to disk
and renamed into place, so a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nosink.errors import NosinkError


def check_file_target(path: str | Path, *, flag: str) -> Path:
    """NosinkError unless ``path`` can be written as a file (its missing folders are created later).

    Args:
        path: The output file.
        flag: The option that named it (``-o``, ``--record`` …), for the message.
    """
    target = Path(path)
    if target.is_dir():
        raise NosinkError(f"{flag} {str(path)!r} is a folder; give a file path")
    _check_folder_can_hold(target.parent, flag=flag, path=path)
    return target


def check_folder_target(path: str | Path, *, flag: str) -> Path:
    """NosinkError unless ``path`` is a writable folder or one that can be created."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise NosinkError(f"{flag} {str(path)!r} is a file, not a folder")
    _check_folder_can_hold(target, flag=flag, path=path)
    return target


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """A temporary path to write instead of ``path``; on success it is fsynced and renamed onto ``path``.

    On an error (a full disk, an interrupt) the temporary file is removed and ``path`` is untouched.
    """
    target = Path(path)
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        yield temporary
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically and durably."""
    with atomic_file(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def _check_folder_can_hold(folder: Path, *, flag: str, path: str | Path) -> None:
    existing = folder
    while not existing.exists():  # the nearest folder that exists: the missing ones are created under it
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise NosinkError(f"{flag} {str(path)!r} cannot be written: {str(existing)!r} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise NosinkError(f"{flag} {str(path)!r} cannot be written: no permission to write in {str(existing)!r}")
