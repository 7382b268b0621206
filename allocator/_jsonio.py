"""Atomic JSON files: a reader never sees a half-written profile or plan.

The document is written to a temporary file in the destination directory, flushed and fsynced,
then moved over the destination with ``os.replace`` (atomic on POSIX and Windows). If anything
fails before the move, the temporary file is removed and the old destination, if any, is left
untouched.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_json", "read_json"]


def _check_finite(obj: Any, where: str = "$") -> None:
    """JSON has no NaN/inf; refuse to write them rather than emit non-standard tokens."""
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError(f"cannot write non-finite number {obj!r} at {where} to JSON")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_finite(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_finite(v, f"{where}[{i}]")


def atomic_write_json(path: str | os.PathLike, document: dict) -> Path:
    """Write ``document`` as JSON to ``path`` atomically; returns the path written."""
    path = Path(path)
    _check_finite(document)
    text = _dumps(document) + "\n"
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.chmod(tmp, _target_mode(path))  # mkstemp makes 0600 files; give the usual mode
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def _dumps(obj: Any, indent: int = 0) -> str:
    """JSON that a person can read and diff: one layer / one table row per line."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(obj, dict) and obj and indent < 2:
        items = [f"{inner}{json.dumps(str(k))}: {_dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(obj, (list, tuple)) and obj and isinstance(obj[0], (dict, list, tuple)):
        items = [f"{inner}{json.dumps(v, allow_nan=False)}" for v in obj]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(obj, allow_nan=False)


def _target_mode(path: Path) -> int:
    """The existing file's mode, else what a plain ``open(path, "w")`` would give (umask)."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def read_json(path: str | os.PathLike, error_cls: type[Exception]) -> Any:
    """Read a JSON file, turning I/O and syntax failures into ``error_cls`` naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error_cls(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        # NaN/Infinity tokens are parsed (as Python's json does) so that the validator can
        # report *where* they are instead of a bare syntax error.
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error_cls(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from exc
