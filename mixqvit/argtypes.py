"""Checked argparse types shared by every ``mixqvit`` command.

Each turns one command-line string into a value or refuses it with a message that says what
was given and what was expected; argparse prints that as the one-line usage error (exit status
2). Budgets, bit lists and numbers are parsed here once, so ``mixqvit train --epochs 0`` is
refused exactly like ``mixqvit qat --epochs 0``. Nothing here imports torch.
"""
from __future__ import annotations

import argparse
import json
import math
import re
from typing import Any, Callable, Sequence

from allocator.bits import BITS_RANGE_TEXT, bits_defect

from .errors import BudgetParseError

__all__ = ["parse_budget", "parse_budget_list", "parse_bits", "json_object", "checked_number", "positive_int",
           "positive_float", "unit_interval", "seed", "comma_list", "SEED_MAX"]

#: Seeds must fit numpy's and torch's 64-bit generators.
SEED_MAX = 2**63 - 1


def parse_budget(tokens: str | Sequence[str]):
    """Read a budget from CLI tokens: ``3``, ``W4A8``, ``size_mb=1.5 bops=2e9`` (or comma-joined).

    Keyword items may be given as separate arguments or in one string separated by spaces or
    commas; they are normalised to the allocator's ``key=value,key=value`` form.
    """
    from allocator import Budget, BudgetError

    parts = [tokens] if isinstance(tokens, str) else list(tokens)
    text = " ".join(p.strip() for p in parts).strip()
    if not text:
        raise BudgetParseError("empty budget; expected e.g. 3, W4A8 or size_mb=1.5 bops=2e9")
    if "=" in text:
        text = re.sub(r"\s*=\s*", "=", text)  # "size_mb = 1" -> "size_mb=1"
        text = ",".join(text.replace(",", " ").split())
    try:
        return Budget.parse(text)
    except BudgetError as exc:
        raise BudgetParseError(f"bad budget {' '.join(parts)!r}: {exc}") from None


def parse_budget_list(tokens: Sequence[str]) -> list:
    """``--budgets 2,3,4`` or ``--budgets 2 W4A8 size_mb=1,bops=2e9``: simple budgets split on
    commas, keyword budgets (containing '=') kept whole per argument."""
    budgets = []
    for token in tokens:
        if "=" in token:
            budgets.append(parse_budget(token))
        else:
            budgets += [parse_budget(t) for t in token.split(",") if t.strip()]
    if not budgets:
        raise BudgetParseError("no budgets given; expected e.g. --budgets 2,3,4")
    return budgets


def parse_bits(text: str) -> tuple[int, ...]:
    """``"2,3,4,6,8"`` -> (2, 3, 4, 6, 8); each a supported bit-width (2..16), no repeats."""
    expected = f"distinct comma-separated integers in {BITS_RANGE_TEXT} such as 2,3,4,6,8"
    try:
        bits = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"bits must be {expected}, got {text!r}") from None
    if not bits or any(bits_defect(b, "b") for b in bits) or len(set(bits)) != len(bits):
        raise argparse.ArgumentTypeError(f"bits must be {expected}, got {text!r}")
    return tuple(sorted(bits))


def json_object(text: str) -> dict[str, Any]:
    """A JSON object given on the command line (e.g. timm constructor keywords)."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        why = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise argparse.ArgumentTypeError(f"not JSON ({why}): {text[:80]!r}; expected e.g. '{{\"num_classes\": 10}}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"num_classes\": 10}}', got {text[:80]!r}")
    return value


def checked_number(convert: Callable[[str], Any], valid: Callable[[Any], bool], expected: str):
    """An argparse ``type`` that converts a number and refuses invalid values with one message."""
    def parse(text: str):
        try:
            value = convert(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not valid(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value
    parse.__name__ = expected  # argparse names the type in some messages
    return parse


positive_int = checked_number(int, lambda v: v >= 1, "a positive integer")
non_negative_int = checked_number(int, lambda v: v >= 0, "a non-negative integer")
positive_float = checked_number(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
unit_interval = checked_number(float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")
below_one = checked_number(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")
seed = checked_number(int, lambda v: 0 <= v <= SEED_MAX, f"a seed in 0..{SEED_MAX}")


def comma_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; an empty list is refused (``--solvers ,``)."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of names, got {text!r}")
    return items
