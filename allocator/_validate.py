"""Small checks shared by Profile and Plan validation.

Each helper appends human-readable defects to a list instead of raising, so that a loader can
report every problem of a file at once rather than one per attempt.
"""
from __future__ import annotations

import numbers
from typing import Any, Sequence

import numpy as np

__all__ = ["is_int", "check_bits_value", "as_float_array", "describe_bad_entries"]


def is_int(value: Any) -> bool:
    """True for Python/numpy integers, false for bools and for floats such as 4.0."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_bits_value(value: Any, what: str, defects: list[str]) -> None:
    """A bit-width must be an integer in the supported range (``allocator.bits``)."""
    from .bits import bits_defect  # bits imports is_int from here

    defect = bits_defect(value, what)
    if defect:
        defects.append(defect)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _nested_numbers_ok(value: Any, depth: int) -> bool:
    """Check a nested list of plain numbers (JSON numbers) without numpy's lenient coercion."""
    if depth == 0:
        return _is_number(value)
    if not isinstance(value, (list, tuple)):
        return False
    return all(_nested_numbers_ok(v, depth - 1) for v in value)


def as_float_array(
    value: Any, name: str, shapes: Sequence[tuple[int, ...]], defects: list[str]
) -> np.ndarray | None:
    """Convert ``value`` to a float array of one of ``shapes``; on failure record why and return None.

    Strings, bools and ``None`` entries are refused (numpy would silently turn ``"1.5"`` into a
    number and ``None`` into NaN, hiding the defect).
    """
    ndim = len(shapes[0])
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iuf":
            defects.append(f"{name} must hold numbers, got an array of dtype {value.dtype}")
            return None
        arr = np.array(value, dtype=float)
    else:
        if not _nested_numbers_ok(value, ndim):
            kind = "a list of numbers" if ndim == 1 else "a list of lists of numbers"
            defects.append(
                f"{name} must be {kind} with shape {_shapes_text(shapes)}; "
                f"got a {type(value).__name__} that is not (non-numeric entry or wrong nesting)"
            )
            return None
        try:
            arr = np.array(value, dtype=float)
        except ValueError:
            defects.append(f"{name} is ragged (rows of different lengths); expected shape {_shapes_text(shapes)}")
            return None
    if arr.shape not in [tuple(s) for s in shapes]:
        defects.append(f"{name} has shape {arr.shape}, expected {_shapes_text(shapes)}")
        return None
    return arr


def _shapes_text(shapes: Sequence[tuple[int, ...]]) -> str:
    uniq = list(dict.fromkeys(tuple(s) for s in shapes))
    return " or ".join(str(s) for s in uniq)


def describe_bad_entries(
    arr: np.ndarray, name: str, defects: list[str], row_names: Sequence[str], col_label=None
) -> None:
    """Record NaN, infinite and negative entries of ``arr``, naming the first of each kind."""
    for mask, what in (
        (np.isnan(arr), "NaN"),
        (np.isinf(arr), "infinite"),
        (~np.isnan(arr) & (arr < 0), "negative"),
    ):
        count = int(mask.sum())
        if count == 0:
            continue
        first = tuple(int(i) for i in np.argwhere(mask)[0])
        where = f"layer {row_names[first[0]]!r}" if first[0] < len(row_names) else f"row {first[0]}"
        if len(first) > 1 and col_label is not None:
            where += f", {col_label(first[1])}"
        defects.append(
            f"{name} has {count} {what} entr{'y' if count == 1 else 'ies'}; first at index "
            f"{list(first)} ({where}); entries must be finite and >= 0"
        )
