"""Bit-widths: the one supported range and the one ``W<w>A<a>`` shorthand parser of the project.

The quantizers support integer grids of 2..16 bits (1 bit is a sign, not a grid; past 16 bits
fake-quantization is float in all but name), so a plan, a profile's candidate bits, a pin and a
uniform shorthand are all checked against this one range here, where the lowest package that
needs it (the torch-free allocator) can read it; ``quant`` and ``profiling`` import it from here.
"""
from __future__ import annotations

import re

from ._validate import is_int

__all__ = ["MIN_BITS", "MAX_BITS", "FLOAT_BITS", "BITS_RANGE_TEXT", "bits_defect", "parse_wa", "parse_uniform",
           "is_uniform_spec"]

MIN_BITS = 2
MAX_BITS = 16
#: In a uniform shorthand, 32 means "leave this side in floating point" ("W4A32").
FLOAT_BITS = 32
BITS_RANGE_TEXT = f"{MIN_BITS}..{MAX_BITS}"

_WA = re.compile(r"^\s*w\s*(\d+(?:\.\d+)?)\s*(?:a\s*(\d+(?:\.\d+)?))?\s*$", re.IGNORECASE)


def bits_defect(value: object, what: str) -> str | None:
    """Why ``value`` is not a supported bit-width (an int in 2..16), or None when it is."""
    if not is_int(value):
        return f"{what} must be an integer bit-width in {BITS_RANGE_TEXT}, got {value!r} ({type(value).__name__})"
    if not MIN_BITS <= int(value) <= MAX_BITS:
        return f"{what} must be between {MIN_BITS} and {MAX_BITS} bits (the quantizers' range), got {int(value)}"
    return None


def parse_wa(text: str) -> tuple[float, float | None] | None:
    """``"W4A8"`` -> ``(4.0, 8.0)``, ``"w3.5"`` -> ``(3.5, None)``; None when ``text`` is not of that form.

    Numbers are returned as written (a budget may ask for 3.5 average bits); callers that need
    integer bit-widths use :func:`parse_uniform`.
    """
    m = _WA.match(text)
    if not m:
        return None
    return float(m.group(1)), None if m.group(2) is None else float(m.group(2))


def is_uniform_spec(text: str) -> bool:
    """True when ``text`` looks like a uniform plan shorthand (``W4A4``), valid or not."""
    parsed = parse_wa(text)
    return parsed is not None and parsed[1] is not None


def parse_uniform(text: str) -> tuple[int | None, int | None]:
    """A uniform plan shorthand: ``"W4A8"`` -> ``(4, 8)``; 32 on either side means float (None).

    Raises ``ValueError`` naming the supported range for anything else (``W1A1``, ``W99A4``, ``W4``).
    """
    parsed = parse_wa(text)
    if parsed is None or parsed[1] is None:
        raise ValueError(f"plan {text!r} is not of the form 'W<bits>A<bits>' (e.g. W4A4, W8A8, W4A32 for float "
                         "activations)")
    out = []
    for side, value in zip(("weight", "activation"), parsed):
        if value == FLOAT_BITS:
            out.append(None)
            continue
        defect = bits_defect(int(value) if float(value).is_integer() else value, f"{side} bits in {text.strip()!r}")
        if defect:
            raise ValueError(f"{defect} (or {FLOAT_BITS} for float)")
        out.append(int(value))
    return out[0], out[1]
