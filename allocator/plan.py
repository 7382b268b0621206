"""`Plan`: the bit-width of every layer, with the totals that justify it.

A plan is self-contained: it carries each layer's kind, parameter count and MACs, so its
totals (average weight bits, size, BOPs) can be recomputed and printed without the profile,
and `quant.quantize` needs nothing else. JSON round-trips exactly (``save``/``load``, atomic
write); loading recomputes the totals and refuses a file whose stored totals disagree with its
per-layer bits.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ._jsonio import atomic_write_json, read_json
from ._validate import check_bits_value
from .costs import custom_total, totals
from .errors import PlanError, ProfileError
from .options import resolve_pins
from .profile import LayerInfo, Profile

__all__ = ["Plan", "PLAN_FORMAT_VERSION"]

PLAN_FORMAT_VERSION = 1
_TOTALS_RTOL = 1e-9


@dataclass(eq=True)
class Plan:
    """Per-layer weight and activation bits plus totals and provenance.

    ``w_bits``/``a_bits`` map layer name -> bits (matmul layers have ``w == a``); ``names``
    gives the order (as ``profile.names`` does; ``layer_info`` holds the ``LayerInfo`` rows, as
    ``profile.layers`` does). ``measured_with`` is the quantizer configuration the profile's
    sensitivities were measured with (its ``metadata["quant_config"]``, None if it records none):
    the plan is optimal for that quantizer's damage, so it travels with the plan and whoever
    applies the plan can use it, or say that they apply another. ``avg_w_bits`` is parameter-weighted (pinned layers included),
    ``avg_a_bits`` MAC-weighted (activation bits cost where the MACs are),
    ``size_bytes`` = sum params * w / 8, ``bops`` = sum macs * w * a. ``costs`` holds totals of
    the profile's custom cost tables (e.g. latency) where computable. ``objective``/``bound``
    are in the objective's units (None for a hand-made plan whose objective is unknown).
    """

    layer_info: list[LayerInfo]
    w_bits: dict[str, int]
    a_bits: dict[str, int]
    objective: float | None = None
    bound: float | None = None
    objective_name: str | None = None
    solver: str = "uniform"
    status: str = "fixed"
    solve_time_s: float = 0.0
    budget: str | None = None
    budget_satisfied: bool | None = None
    pinned: list[str] = field(default_factory=list)
    costs: dict[str, float] = field(default_factory=dict)
    measured_with: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        defects: list[str] = []
        names = [layer.name for layer in self.layer_info]
        if len(set(names)) != len(names):
            defects.append("layer names must be unique")
        for table in ("w_bits", "a_bits"):
            got = getattr(self, table)
            if not isinstance(got, Mapping):
                defects.append(f"{table} must map layer name -> bits, got {type(got).__name__}")
                continue
            if set(got) != set(names):
                missing = sorted(set(names) - set(got))
                extra = sorted(set(got) - set(names))
                defects.append(f"{table} must have exactly the plan's layers; missing {missing}, unknown {extra}")
                continue
            for name in names:
                check_bits_value(got[name], f"{table}[{name!r}]", defects)
        if not defects:
            for layer in self.layer_info:
                if not layer.has_weights and self.w_bits[layer.name] != self.a_bits[layer.name]:
                    defects.append(
                        f"matmul layer {layer.name!r} has no weights: its w_bits must equal a_bits, got "
                        f"w={self.w_bits[layer.name]}, a={self.a_bits[layer.name]}"
                    )
        if defects:
            raise PlanError("invalid plan: " + "; ".join(defects))
        # Plain ints in layer order, so equality and JSON do not depend on numpy types or order.
        self.w_bits = {n: int(self.w_bits[n]) for n in names}
        self.a_bits = {n: int(self.a_bits[n]) for n in names}

    # -- totals -----------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """Layer names in forward order."""
        return [layer.name for layer in self.layer_info]

    @property
    def totals(self) -> dict[str, float]:
        """``avg_w_bits``, ``size_bytes``, ``bops`` (recomputed from the per-layer bits)."""
        return totals(self.layer_info, self.w_bits, self.a_bits)

    @property
    def avg_w_bits(self) -> float:
        return self.totals["avg_w_bits"]

    @property
    def avg_a_bits(self) -> float:
        """MAC-weighted average activation bits (0 for a plan without MACs)."""
        macs = sum(layer.macs for layer in self.layer_info)
        return sum(layer.macs * self.a_bits[layer.name] for layer in self.layer_info) / macs if macs else 0.0

    @property
    def size_bytes(self) -> float:
        return self.totals["size_bytes"]

    @property
    def bops(self) -> float:
        return self.totals["bops"]

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def uniform(cls, profile: Profile, w_bits: int = 4, a_bits: int = 4,
                pinned: Mapping[str, int | None] | None = None) -> "Plan":
        """Every layer at ``w_bits``/``a_bits``; pinned layers keep their fixed bits, matmul
        layers take ``a_bits`` for both operands. Its objective is left unknown (None)."""
        defects: list[str] = []
        check_bits_value(w_bits, "w_bits", defects)
        check_bits_value(a_bits, "a_bits", defects)
        if defects:
            raise PlanError("; ".join(defects))
        pins = resolve_pins(profile, pinned)
        w, a = {}, {}
        for i, layer in enumerate(profile.layers):
            if i in pins:
                w[layer.name] = a[layer.name] = pins[i]
            elif not layer.has_weights:
                w[layer.name] = a[layer.name] = int(a_bits)
            else:
                w[layer.name], a[layer.name] = int(w_bits), int(a_bits)
        plan = cls(layer_info=list(profile.layers), w_bits=w, a_bits=a,
                   budget=f"uniform W{int(w_bits)}A{int(a_bits)}",
                   pinned=[profile.layers[i].name for i in sorted(pins)], measured_with=recorded_quantizer(profile))
        plan.costs = plan.custom_costs(profile)
        return plan

    def custom_costs(self, profile: Profile) -> dict[str, float]:
        """Totals of the profile's custom cost tables for this plan (those that are computable)."""
        self.check_matches(profile)
        out = {}
        for name in profile.cost_tables:
            value = custom_total(profile, name, self.w_bits, self.a_bits)
            if value is not None:
                out[name] = value
        return out

    def check_matches(self, profile: Profile) -> None:
        """Raise PlanError unless the plan covers exactly the profile's layers, in order."""
        if self.names != profile.names:
            missing = sorted(set(profile.names) - set(self.names))
            extra = sorted(set(self.names) - set(profile.names))
            raise PlanError(
                "plan and profile have different layers "
                f"(missing from plan: {missing[:5]}, not in profile: {extra[:5]}"
                f"{', or a different order' if not missing and not extra else ''})"
            )

    # -- presentation -------------------------------------------------------------------------
    def table(self) -> str:
        """A per-layer table: kind, params, MACs, bits, share of size and of BOPs."""
        t = self.totals
        header = ("layer", "kind", "params", "MACs", "W", "A", "size %", "BOPs %", "")
        rows = []
        for layer in self.layer_info:
            w, a = self.w_bits[layer.name], self.a_bits[layer.name]
            size = layer.params * w / 8
            bops = layer.macs * w * a
            rows.append((
                layer.name, layer.kind, f"{layer.params:,}", f"{layer.macs:,}",
                "-" if not layer.has_weights else str(w), str(a),
                f"{100 * size / t['size_bytes']:.1f}" if t["size_bytes"] else "0.0",
                f"{100 * bops / t['bops']:.1f}" if t["bops"] else "0.0",
                "pinned" if layer.name in self.pinned else "",
            ))
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        left = {0, 1, 8}

        def fmt(cells):
            return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

        lines = [fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
        lines.append(fmt(["-" * w for w in widths]))
        lines.append(
            f"total: avg weight bits {t['avg_w_bits']:.3f}, size {t['size_bytes'] / 1e6:.4g} MB, "
            f"{t['bops'] / 1e9:.4g} GBOPs"
        )
        return "\n".join(lines)

    def summary(self) -> str:
        """A few lines: solver and status, budget, totals, objective, bit-width histogram."""
        t = self.totals
        weighted = [layer for layer in self.layer_info if layer.has_weights]
        hist_w = _histogram(self.w_bits[layer.name] for layer in weighted)
        hist_a = _histogram(self.a_bits.values())
        sat = {True: "satisfied", False: "NOT satisfied", None: "not checked"}[self.budget_satisfied]
        lines = [
            f"Plan for {len(self.layer_info)} layers ({len(self.pinned)} pinned); "
            f"solver {self.solver} ({self.status}, {self.solve_time_s:.3g} s)",
            f"budget: {self.budget or 'none'} ({sat})",
            f"avg weight bits {t['avg_w_bits']:.3f}; size {t['size_bytes'] / 1e6:.4g} MB; "
            f"{t['bops'] / 1e9:.4g} GBOPs"
            + "".join(f"; {k} {v:.4g}" for k, v in self.costs.items()),
            f"weight bits {hist_w}; activation bits {hist_a}",
        ]
        if self.objective is not None:
            obj = f"objective ({self.objective_name or 'custom'}) {self.objective:.6g}"
            if self.bound is not None and self.status != "optimal":
                obj += f", proven lower bound {self.bound:.6g}"
            lines.append(obj)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        t = self.totals
        return {
            "format_version": PLAN_FORMAT_VERSION,
            "layers": [
                {**layer.to_dict(), "w_bits": self.w_bits[layer.name], "a_bits": self.a_bits[layer.name]}
                for layer in self.layer_info
            ],
            "totals": {**t, **{f"cost_{k}": v for k, v in self.costs.items()}},
            "objective": self.objective,
            "bound": self.bound,
            "objective_name": self.objective_name,
            "solver": self.solver,
            "status": self.status,
            "solve_time_s": self.solve_time_s,
            "budget": self.budget,
            "budget_satisfied": self.budget_satisfied,
            "pinned": list(self.pinned),
            "measured_with": self.measured_with,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str | None = None) -> "Plan":
        where = f" in {source}" if source else ""
        if not isinstance(data, Mapping):
            raise PlanError(f"a plan must be a JSON object{where}, got {type(data).__name__}")
        if data.get("format_version") != PLAN_FORMAT_VERSION:
            raise PlanError(
                f"unknown plan format_version {data.get('format_version')!r}{where}; "
                f"this library reads {PLAN_FORMAT_VERSION}"
            )
        _check_field_types(data, where)
        try:
            rows = data["layers"]
            infos = [LayerInfo(**{k: r[k] for k in ("name", "kind", "params", "macs")},
                               fixed_bits=r.get("fixed_bits"), group=r.get("group")) for r in rows]
            w = {r["name"]: r["w_bits"] for r in rows}
            a = {r["name"]: r["a_bits"] for r in rows}
            stored = data.get("totals", {})
            costs = {k[len("cost_"):]: float(v) for k, v in stored.items() if k.startswith("cost_")}
            plan = cls(layer_info=infos, w_bits=w, a_bits=a, objective=data.get("objective"),
                       bound=data.get("bound"), objective_name=data.get("objective_name"),
                       solver=data.get("solver", "unknown"), status=data.get("status", "unknown"),
                       solve_time_s=float(data.get("solve_time_s", 0.0)), budget=data.get("budget"),
                       budget_satisfied=data.get("budget_satisfied"), pinned=list(data.get("pinned", [])),
                       costs=costs, measured_with=data.get("measured_with"))
        except (KeyError, TypeError) as exc:
            raise PlanError(f"malformed plan{where}: missing or wrong field {exc}") from None
        except ProfileError as exc:
            raise PlanError(f"malformed plan{where}: {exc}") from None
        for key, value in plan.totals.items():
            if key in stored and abs(float(stored[key]) - value) > _TOTALS_RTOL * max(1.0, abs(value)):
                raise PlanError(
                    f"plan{where} says {key} = {stored[key]} but its per-layer bits give {value}; "
                    "the file was edited inconsistently (fix the bits or drop the 'totals' entry)"
                )
        return plan

    def save(self, path: str | os.PathLike) -> Path:
        """Write the plan as JSON atomically; returns the path."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Plan":
        return cls.from_dict(read_json(path, PlanError), source=str(path))


_NUMBER, _TEXT = "a number", "a string"
#: Optional top-level fields of a plan file and what each must hold (None/null is allowed for all).
_FIELD_TYPES = {"objective": _NUMBER, "bound": _NUMBER, "solve_time_s": _NUMBER, "objective_name": _TEXT,
                "solver": _TEXT, "status": _TEXT, "budget": _TEXT}


def _check_field_types(data: Mapping, where: str) -> None:
    """Refuse a plan file whose fields hold the wrong kind of value, naming each field."""
    def is_number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    defects = []
    for key, kind in _FIELD_TYPES.items():
        value = data.get(key)
        if value is not None and not (is_number(value) if kind is _NUMBER else isinstance(value, str)):
            defects.append(f"{key} must be {kind} or null, got {value!r}")
    if not isinstance(data.get("layers"), list) or not all(isinstance(r, Mapping) for r in data["layers"]):
        defects.append("layers must be a list of objects (one per layer)")
    totals = data.get("totals", {})
    if not isinstance(totals, Mapping) or not all(is_number(v) for v in totals.values()):
        defects.append(f"totals must be an object of numbers, got {str(totals)[:80]}")
    if not isinstance(data.get("pinned", []), list):
        defects.append(f"pinned must be a list of layer names, got {data.get('pinned')!r}")
    if not isinstance(data.get("measured_with", {}), (Mapping, type(None))):
        defects.append(f"measured_with must be an object (a quantizer configuration) or null, "
                       f"got {data.get('measured_with')!r}")
    if data.get("budget_satisfied") not in (None, True, False):
        defects.append(f"budget_satisfied must be true, false or null, got {data.get('budget_satisfied')!r}")
    if defects:
        raise PlanError(f"malformed plan{where}: " + "; ".join(defects))


def recorded_quantizer(profile: Profile) -> dict[str, Any] | None:
    """The quantizer configuration ``profile`` records for its sensitivities (a copy), or None."""
    recorded = profile.metadata.get("quant_config")
    return dict(recorded) if isinstance(recorded, Mapping) else None


def _histogram(values) -> str:
    counts: dict[int, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return "{" + ", ".join(f"{b}: {n}" for b, n in sorted(counts.items())) + "}" if counts else "{}"
