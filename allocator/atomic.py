"""Atomic file writes: an output file is either complete or absent, never half-written.

A command interrupted mid-write (Ctrl-C, out of memory, an exception while serialising) must
not leave a truncated ``plan.json`` or checkpoint that a later command would trip over.  Every
writer of the project (profiles and plans here, sensitivity and QAT checkpoints, models, reports)
goes through :func:`atomic_path`: it hands out a temporary name in the target directory (so the
final ``os.replace`` is a same-filesystem rename, which POSIX makes atomic), syncs it, and only
renames it over the target once the writer has finished without error.  It lives in the lowest
package that writes files (the torch-free allocator) so that every layer above shares it.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_path", "write_text", "write_bytes", "write_json"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` if the block succeeds.

    The parent directory is created if needed.  On any exception the temporary file is removed
    and ``path`` is left untouched (absent, or its previous content).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # An exclusive create (not mkstemp, whose files are private 0600) so the result gets the
    # same permissions as any file the user creates (umask applies).
    while True:
        tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        try:
            with open(tmp, "xb"):
                break
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
    try:
        yield tmp
        with open(tmp, "rb+") as written:  # the data is on disk before the name points at it
            os.fsync(written.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; return the path."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Serialise ``obj`` as indented JSON (serialisation happens before the file is touched)."""
    text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n"
    return write_text(path, text)
