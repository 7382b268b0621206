"""Profile and plan JSON: finite numbers only, one layer per line, written atomically.

The writing itself is :mod:`allocator.atomic`'s (temporary file, fsync, rename), so a reader
never sees a half-written profile or plan.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from .atomic import write_text

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
    """Write ``document`` as readable JSON to ``path`` atomically (:mod:`allocator.atomic`)."""
    _check_finite(document)
    return write_text(path, _dumps(document) + "\n")


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


def read_json(path: str | os.PathLike, error_cls: type[Exception]) -> Any:
    """Read a JSON file, turning I/O and syntax failures into ``error_cls`` naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error_cls(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise error_cls(f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason}); is it a JSON file?") from None
    try:
        # NaN/Infinity tokens are parsed (as Python's json does) so that the validator can
        # report *where* they are instead of a bare syntax error.
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error_cls(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from exc
    except RecursionError:
        raise error_cls(f"{path} nests lists or objects too deeply to be a profile or plan") from None
