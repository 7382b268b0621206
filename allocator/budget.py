"""`Budget`: the resource limits a plan must respect, all at once.

Limits (each optional, at least one given):

* ``avg_bits``: parameter-weighted average weight bits (pinned layers count) — the model is
  no larger than a uniform ``avg_bits``-bit one.
* ``size_mb``: weight storage in MB (10**6 bytes).
* ``bops``: bit operations per sample, sum of ``macs * w_bits * a_bits`` (a count, not GBOPs).
* ``latency`` and any other keyword: a limit on the profile's custom cost table of that name,
  in that table's units.
* ``bops_of=(w, a)``: BOPs no more than those of the uniform WwAa model (every layer, pinned
  ones included). Applied only when the profile offers activation bit choices.

Shorthands (`Budget.parse`, DESIGN.md "Budget semantics"):

* ``3.0`` -> ``Budget(avg_bits=3.0, bops_of=(3.0, 3.0))``
* ``"W4A8"`` -> ``Budget(avg_bits=4, bops_of=(4, 8))``; ``"W4"`` -> ``Budget(avg_bits=4)``
* ``"avg_bits=3, size_mb=1.5, bops_of=W4A8"`` -> the keywords, as written by ``str(budget)``.

A profile without activation measurements lets activations follow the weights (w == a), so
a shorthand asking for different weight and activation bits (``"W4A8"``) is refused for it.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .bits import parse_wa
from .costs import custom_cost_rows, option_costs, uniform_bops
from .errors import BudgetError
from .options import OptionGrid
from .profile import Profile

__all__ = ["Budget", "Limit", "BYTES_PER_MB"]

BYTES_PER_MB = 1e6
_BUILTIN = ("avg_bits", "size_mb", "bops")


def _num(x: float) -> str:
    """Shortest text that parses back to the same float."""
    x = float(x)
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(x)


def _positive(value: Any, what: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise BudgetError(f"{what} must be a positive number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise BudgetError(f"{what} must be a positive finite number, got {value!r}")
    return value


@dataclass(frozen=True)
class Limit:
    """One limit of a budget, resolved against a profile.

    ``value`` is in the problem's units; ``value / scale`` is in the user's units (``unit``).
    """

    key: str
    value: float
    scale: float
    unit: str
    description: str

    def user(self, problem_value: float) -> float:
        return problem_value / self.scale

    def text(self, problem_value: float) -> str:
        v = self.user(problem_value)
        if self.key in ("bops", "bops_of"):
            return f"{v:.6g} BOPs ({v / 1e9:.6g} GBOPs)"
        return f"{v:.6g}{' ' + self.unit if self.unit else ''}"


class Budget:
    """Resource limits a plan must satisfy together (see module docstring)."""

    def __init__(self, avg_bits: float | None = None, size_mb: float | None = None,
                 bops: float | None = None, latency: float | None = None, *,
                 bops_of: tuple[float, float] | None = None, **extra: float):
        limits: dict[str, float] = {}
        for key, value in (("avg_bits", avg_bits), ("size_mb", size_mb), ("bops", bops),
                           ("latency", latency), *extra.items()):
            if value is not None:
                if not key.isidentifier():
                    raise BudgetError(f"limit name must be an identifier, got {key!r}")
                limits[key] = _positive(value, f"budget {key}")
        if bops_of is not None:
            if isinstance(bops_of, str):
                wa = parse_wa(bops_of)
                if wa is None or wa[1] is None:
                    raise BudgetError(f"bops_of must be (w_bits, a_bits) or a string like 'W4A8', got {bops_of!r}")
                bops_of = wa
            if not isinstance(bops_of, (tuple, list)) or len(bops_of) != 2:
                raise BudgetError(f"bops_of must be a pair (w_bits, a_bits), got {bops_of!r}")
            bops_of = (_positive(bops_of[0], "bops_of w_bits"), _positive(bops_of[1], "bops_of a_bits"))
        if not limits and bops_of is None:
            raise BudgetError(
                "a budget needs at least one limit: avg_bits, size_mb, bops, bops_of, latency or a "
                "custom cost table name (e.g. Budget(avg_bits=4) or Budget.parse('W4A8'))"
            )
        self.limits: dict[str, float] = limits
        self.bops_of: tuple[float, float] | None = bops_of

    # attribute access for the named limits
    @property
    def avg_bits(self) -> float | None:
        return self.limits.get("avg_bits")

    @property
    def size_mb(self) -> float | None:
        return self.limits.get("size_mb")

    @property
    def bops(self) -> float | None:
        return self.limits.get("bops")

    @property
    def latency(self) -> float | None:
        return self.limits.get("latency")

    @property
    def extra(self) -> dict[str, float]:
        return {k: v for k, v in self.limits.items() if k not in _BUILTIN}

    # -- parsing and printing ---------------------------------------------------------------
    @classmethod
    def parse(cls, spec: "Budget | float | str | Mapping[str, Any]") -> "Budget":
        """Read a budget from a number, a string or a dict (see the module docstring)."""
        if isinstance(spec, Budget):
            return spec
        if isinstance(spec, Mapping):
            unknown = [k for k in spec if not isinstance(k, str)]
            if unknown:
                raise BudgetError(f"budget keys must be strings, got {unknown}")
            return cls(**dict(spec))
        if isinstance(spec, (bool, np.bool_)):
            raise BudgetError(f"a budget cannot be a bool, got {spec!r}")
        if isinstance(spec, numbers.Real):
            b = _positive(spec, "budget")
            return cls(avg_bits=b, bops_of=(b, b))
        if isinstance(spec, str):
            text = spec.strip()
            try:
                number = float(text)
            except ValueError:
                number = None
            if number is not None:  # "-3" must report that it is not positive, not that it is unreadable
                return cls.parse(number)
            wa = parse_wa(text)
            if wa is not None:
                w, a = wa
                return cls(avg_bits=w) if a is None else cls(avg_bits=w, bops_of=(w, a))
            if "=" in text:
                return cls(**_parse_keywords(text))
        raise BudgetError(
            f"cannot read budget {spec!r}; expected a number (3.0: average weight bits, and BOPs of "
            "uniform W3A3), 'W4A8', 'W4', 'avg_bits=3,size_mb=1.5,latency=2', a dict or a Budget"
        )

    def __str__(self) -> str:
        if self.bops_of is not None and list(self.limits) == ["avg_bits"] and self.limits["avg_bits"] == self.bops_of[0]:
            return f"W{_num(self.bops_of[0])}A{_num(self.bops_of[1])}"
        if self.bops_of is None and list(self.limits) == ["avg_bits"]:
            return f"W{_num(self.limits['avg_bits'])}"
        parts = [f"{k}={_num(v)}" for k, v in self.limits.items()]
        if self.bops_of is not None:
            parts.append(f"bops_of=W{_num(self.bops_of[0])}A{_num(self.bops_of[1])}")
        return ",".join(parts)

    def __repr__(self) -> str:
        return f"Budget.parse({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Budget):
            return NotImplemented
        return self.limits == other.limits and self.bops_of == other.bops_of

    def __hash__(self) -> int:
        return hash((tuple(sorted(self.limits.items())), self.bops_of))

    def to_dict(self) -> dict:
        d: dict[str, Any] = dict(self.limits)
        if self.bops_of is not None:
            d["bops_of"] = list(self.bops_of)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Budget":
        return cls.parse(data)

    # -- resolution against a profile --------------------------------------------------------
    def resolve(self, profile: Profile, grid: OptionGrid) -> tuple[list[Limit], dict[str, np.ndarray]]:
        """The limits in problem units and their (L, K) cost tables, keyed by limit name.

        Problem units are natural counts (bits, BOPs, the cost table's units); ``Limit.scale``
        converts them to the user's units. No conditioning happens here: `solvers` scales each
        limit row for its MIP backends (`solvers.backends.milp`).
        """
        limits: list[Limit] = []
        costs: dict[str, np.ndarray] = {}
        builtin = option_costs(profile, grid)
        params = profile.total_params
        for key, value in self.limits.items():
            if key == "avg_bits":
                if params == 0:
                    raise BudgetError("avg_bits needs layers with weights, but every layer of the profile is a matmul")
                limits.append(Limit(key, value * params, params, "bits", "average weight bits"))
                costs[key] = builtin["weight_bits"]
            elif key == "size_mb":
                scale = 8 * BYTES_PER_MB
                limits.append(Limit(key, value * scale, scale, "MB", "weight size"))
                costs[key] = builtin["weight_bits"]
            elif key == "bops":
                limits.append(Limit(key, value, 1.0, "BOPs", "bit operations"))
                costs[key] = builtin["bops"]
            else:
                costs[key] = self._custom(profile, grid, key)
                limits.append(Limit(key, value, 1.0, "", f"cost table {key!r}"))
        if self.bops_of is not None:
            w, a = self.bops_of
            if profile.has_act_choices:
                limits.append(Limit("bops_of", uniform_bops(profile, w, a), 1.0, "BOPs",
                                    f"BOPs of uniform W{_num(w)}A{_num(a)}"))
                costs["bops_of"] = builtin["bops"]
            elif w != a:
                raise BudgetError(
                    f"budget {self} asks for {_num(a)}-bit activations with {_num(w)}-bit weights, but the "
                    "profile has no act_sensitivity, so activations follow the weights (w == a); "
                    f"use {_num(w)} or 'W{_num(w)}A{_num(w)}', or profile activations too"
                )
        return limits, costs

    @staticmethod
    def _custom(profile: Profile, grid: OptionGrid, key: str) -> np.ndarray:
        if key not in profile.cost_tables:
            have = sorted(profile.cost_tables) or "none"
            raise BudgetError(
                f"the budget limits {key!r}, but the profile has no cost table of that name "
                f"(cost tables: {have}); add it to Profile.cost_tables or drop the limit"
            )
        cost = custom_cost_rows(profile, grid, key)
        bad = [profile.layers[l].name for l in np.flatnonzero(np.isnan(cost).any(axis=1))]
        if bad:
            raise BudgetError(
                f"cost table {key!r} has no column for the pinned bits of layer(s) {bad} "
                f"(table columns: bits {list(profile.bits)}); pin them to one of those bits or extend the table"
            )
        return cost


def _parse_keywords(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise BudgetError(f"cannot read budget item {part.strip()!r} in {text!r}; expected key=value")
        key, value = (s.strip() for s in part.split("=", 1))
        if key in out:
            raise BudgetError(f"budget {text!r} gives {key!r} twice")
        if key == "bops_of":
            out[key] = value
            continue
        try:
            out[key] = float(value)
        except ValueError:
            raise BudgetError(f"budget item {key}={value!r} is not a number") from None
    return out
