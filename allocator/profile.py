"""`Profile` and `LayerInfo`: what the profiler measured about each quantizable layer.

A profile is everything the allocator needs and nothing torch-specific, so a profile made on a
GPU box can be solved on a laptop. It is stored as JSON with a ``format_version``; loading
checks every field and reports every defect at once (`ProfileError`).

Table conventions (``B = len(bits)``):

* ``importance``: shape ``(L,)``, >= 0, not all zero (e.g. LRP relevance per layer).
* ``weight_sensitivity`` / ``act_sensitivity``: shape ``(L, B)``; entry ``[l, k]`` is the loss
  increase (``metric``, e.g. KL of the logits) when layer ``l``'s weights / input activations
  are quantized to ``bits[k]`` and everything else stays at ``baseline_bits`` (None = float).
  A ``matmul`` layer (attention product) has no weights, so its weight row must be 0.
* ``cost_tables``: optional custom resources, e.g. measured latency. Shape ``(L, B)`` means the
  cost depends on the weight bits only (column k = ``bits[k]``); shape ``(L, B*B)`` gives one
  entry per (w, a) pair, column ``i*B + j`` = ``(bits[i], bits[j])``. Values finite and >= 0.
  With them, published tables (e.g. HAWQ-V3's int4/int8 latencies) can be posed exactly.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ._jsonio import atomic_write_json, read_json
from ._validate import as_float_array, check_bits_value, describe_bad_entries, is_int
from .errors import ProfileError

__all__ = ["LayerInfo", "Profile", "KINDS", "FORMAT_VERSION", "RESERVED_RESOURCES"]

#: Layer kinds. "matmul" is a product of two activations (attention q@k^T, attn@v).
KINDS = ("linear", "conv", "matmul")

#: Version of the JSON layout written by `Profile.save`; `Profile.load` refuses others.
FORMAT_VERSION = 1

#: Resource names computed by the allocator itself; a custom cost table may not take them.
RESERVED_RESOURCES = ("avg_bits", "size", "size_mb", "bops")

_LAYER_FIELDS = ("name", "kind", "params", "macs", "fixed_bits", "group")
_REQUIRED_LAYER_FIELDS = ("name", "kind", "params", "macs")
_PROFILE_FIELDS = (
    "format_version", "layers", "bits", "importance", "weight_sensitivity", "act_sensitivity",
    "metric", "baseline_bits", "metadata", "cost_tables",
)


def _layer_defects(name: Any, kind: Any, params: Any, macs: Any, fixed_bits: Any, group: Any,
                   where: str) -> list[str]:
    defects: list[str] = []
    if not isinstance(name, str) or not name:
        defects.append(f"{where}: name must be a non-empty string, got {name!r}")
    if kind not in KINDS:
        defects.append(f"{where}: unknown kind {kind!r}; expected one of {list(KINDS)}")
    for field_name, value in (("params", params), ("macs", macs)):
        if not is_int(value):
            defects.append(f"{where}: {field_name} must be an integer count, got {value!r}")
        elif value < 0:
            defects.append(f"{where}: {field_name} must be >= 0, got {value}")
    if kind == "matmul" and is_int(params) and params != 0:
        defects.append(f"{where}: a matmul layer has no weights, so params must be 0, got {params}")
    if kind in ("linear", "conv") and is_int(params) and params == 0:
        defects.append(f"{where}: a {kind} layer must have params > 0")
    if fixed_bits is not None:
        check_bits_value(fixed_bits, f"{where}: fixed_bits", defects)
    if group is not None and (not isinstance(group, str) or not group):
        defects.append(f"{where}: group must be a non-empty string or null, got {group!r}")
    return defects


@dataclass(frozen=True)
class LayerInfo:
    """One quantizable layer.

    ``params``: weight count (0 for matmul); ``macs``: multiply-accumulates per sample;
    ``fixed_bits``: pin the layer to this bit-width (weights and activations), e.g. 8 for the
    patch embedding and head; ``group``: layers sharing a group name must take the same bits
    (e.g. layers that share an input quantizer).
    """

    name: str
    kind: str
    params: int
    macs: int
    fixed_bits: int | None = None
    group: str | None = None

    def __post_init__(self) -> None:
        defects = _layer_defects(self.name, self.kind, self.params, self.macs, self.fixed_bits,
                                 self.group, where=f"layer {self.name!r}")
        if defects:
            raise ProfileError(defects)
        object.__setattr__(self, "params", int(self.params))
        object.__setattr__(self, "macs", int(self.macs))
        if self.fixed_bits is not None:
            object.__setattr__(self, "fixed_bits", int(self.fixed_bits))

    @property
    def has_weights(self) -> bool:
        return self.kind != "matmul"

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in _LAYER_FIELDS}


def _layer_from_dict(d: Any, i: int, defects: list[str]) -> LayerInfo | None:
    where = f"layers[{i}]"
    if not isinstance(d, Mapping):
        defects.append(f"{where} must be an object with fields {list(_REQUIRED_LAYER_FIELDS)}, got {d!r}")
        return None
    if isinstance(d.get("name"), str):
        where += f" ({d['name']!r})"
    missing = [k for k in _REQUIRED_LAYER_FIELDS if k not in d]
    unknown = sorted(set(d) - set(_LAYER_FIELDS))
    local = []
    if missing:
        local.append(f"{where}: missing field(s) {missing}")
    if unknown:
        local.append(f"{where}: unknown field(s) {unknown}; known fields are {list(_LAYER_FIELDS)}")
    if not missing:
        local += _layer_defects(d["name"], d["kind"], d["params"], d["macs"], d.get("fixed_bits"),
                                d.get("group"), where)
    defects += local
    if local:
        return None
    return LayerInfo(**{k: d.get(k) for k in _LAYER_FIELDS})


class Profile:
    """Per-layer measurements a bit allocation is computed from (see module docstring)."""

    def __init__(
        self,
        layers: Sequence[LayerInfo],
        bits: Sequence[int],
        importance: np.ndarray | Sequence[float] | None = None,
        weight_sensitivity: np.ndarray | Sequence[Sequence[float]] | None = None,
        act_sensitivity: np.ndarray | Sequence[Sequence[float]] | None = None,
        metric: str = "kl",
        baseline_bits: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        cost_tables: Mapping[str, Any] | None = None,
    ):
        defects: list[str] = []
        self.layers: list[LayerInfo] = list(layers)
        self.bits: tuple[int, ...] = tuple(bits) if isinstance(bits, (list, tuple, np.ndarray)) else bits
        self._check_layers(defects)
        self._check_bits(defects)
        L = len(self.layers)
        B = len(self.bits) if isinstance(self.bits, tuple) else 0
        names = [getattr(layer, "name", "?") for layer in self.layers]
        col = (lambda k: f"{self.bits[k]} bits") if B else None

        self.importance = None
        if importance is not None:
            arr = as_float_array(importance, "importance", [(L,)], defects)
            if arr is not None:
                describe_bad_entries(arr, "importance", defects, names)
                if np.all(np.isfinite(arr)) and np.all(arr >= 0) and arr.sum() <= 0:
                    defects.append("importance is all zero; it cannot be normalised (omit it instead)")
                self.importance = arr
        self.weight_sensitivity = self._table(weight_sensitivity, "weight_sensitivity", L, B, names, col, defects)
        self.act_sensitivity = self._table(act_sensitivity, "act_sensitivity", L, B, names, col, defects)
        if self.weight_sensitivity is not None and not defects:
            for l, layer in enumerate(self.layers):
                if not layer.has_weights and np.any(self.weight_sensitivity[l] != 0):
                    defects.append(
                        f"weight_sensitivity row of matmul layer {layer.name!r} must be 0 "
                        f"(it has no weights), got {self.weight_sensitivity[l].tolist()}"
                    )

        if not isinstance(metric, str) or not metric:
            defects.append(f"metric must be a non-empty string such as 'kl', got {metric!r}")
        self.metric = metric
        if baseline_bits is not None:
            check_bits_value(baseline_bits, "baseline_bits", defects)
        self.baseline_bits = baseline_bits

        metadata = {} if metadata is None else metadata
        if not isinstance(metadata, Mapping):
            defects.append(f"metadata must be a JSON object (dict), got {type(metadata).__name__}")
            metadata = {}
        else:
            try:
                json.dumps(metadata, allow_nan=False)
            except (TypeError, ValueError) as exc:
                defects.append(f"metadata must be JSON-serialisable without NaN/inf: {exc}")
        self.metadata = dict(metadata)

        self.cost_tables: dict[str, np.ndarray] = {}
        if cost_tables is not None:
            if not isinstance(cost_tables, Mapping):
                defects.append(f"cost_tables must map resource names to tables, got {type(cost_tables).__name__}")
            else:
                for key, table in cost_tables.items():
                    if not isinstance(key, str) or not key.isidentifier():
                        defects.append(f"cost table name must be an identifier such as 'latency', got {key!r}")
                        continue
                    if key in RESERVED_RESOURCES:
                        defects.append(
                            f"cost table name {key!r} is reserved (computed from params/macs); "
                            f"reserved names are {list(RESERVED_RESOURCES)}"
                        )
                        continue
                    arr = as_float_array(table, f"cost_tables[{key!r}]", [(L, B), (L, B * B)], defects)
                    if arr is not None:
                        describe_bad_entries(arr, f"cost_tables[{key!r}]", defects, names)
                        arr.flags.writeable = False
                        self.cost_tables[key] = arr
        if defects:
            raise ProfileError(defects)

    # -- validation -----------------------------------------------------------------------
    def _check_layers(self, defects: list[str]) -> None:
        if not self.layers:
            defects.append("layers is empty; a profile needs at least one layer")
        seen: dict[str, int] = {}
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, LayerInfo):
                defects.append(f"layers[{i}] must be a LayerInfo, got {type(layer).__name__}")
                continue
            if layer.name in seen:
                defects.append(f"duplicate layer name {layer.name!r} at layers[{seen[layer.name]}] and layers[{i}]")
            seen.setdefault(layer.name, i)
        groups: dict[str, list[LayerInfo]] = {}
        for layer in self.layers:
            if isinstance(layer, LayerInfo) and layer.group is not None:
                groups.setdefault(layer.group, []).append(layer)
        for g, members in groups.items():
            has_w = {m.has_weights for m in members}
            if len(has_w) > 1:
                defects.append(
                    f"group {g!r} mixes matmul and weighted layers {[m.name for m in members]}; "
                    "tied layers must have the same options"
                )
            pins = {m.fixed_bits for m in members if m.fixed_bits is not None}
            if len(pins) > 1:
                defects.append(f"group {g!r} pins its layers to different bits {sorted(pins)}; tied layers must agree")

    def _check_bits(self, defects: list[str]) -> None:
        bits = self.bits
        if not isinstance(bits, tuple) or not bits:
            defects.append(f"bits must be a non-empty list of candidate bit-widths such as [2, 3, 4, 8], got {bits!r}")
            self.bits = ()
            return
        before = len(defects)
        for k, b in enumerate(bits):
            check_bits_value(b, f"bits[{k}]", defects)
        if len(defects) == before:
            self.bits = tuple(int(b) for b in bits)
            if list(self.bits) != sorted(set(self.bits)):
                defects.append(f"bits must be strictly increasing without repeats, got {list(self.bits)}")
        else:
            self.bits = ()

    @staticmethod
    def _table(value, name, L, B, names, col, defects) -> np.ndarray | None:
        if value is None:
            return None
        arr = as_float_array(value, name, [(L, B)], defects)
        if arr is None:
            return None
        describe_bad_entries(arr, name, defects, names, col)
        arr.flags.writeable = False
        return arr

    # -- convenience ----------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def __len__(self) -> int:
        return len(self.layers)

    def index(self, name: str) -> int:
        """Position of the layer called ``name``; KeyError naming close matches otherwise."""
        for i, layer in enumerate(self.layers):
            if layer.name == name:
                return i
        import difflib

        close = difflib.get_close_matches(name, self.names, n=3)
        hint = f"; did you mean {close}?" if close else ""
        raise KeyError(f"no layer named {name!r} in the profile{hint}")

    @property
    def has_act_choices(self) -> bool:
        """True when activation bits are chosen per layer (an activation table is present)."""
        return self.act_sensitivity is not None

    @property
    def total_params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    def __repr__(self) -> str:
        tables = [n for n in ("importance", "weight_sensitivity", "act_sensitivity") if getattr(self, n) is not None]
        return (
            f"Profile({len(self.layers)} layers, bits={list(self.bits)}, tables={tables}, "
            f"cost_tables={sorted(self.cost_tables)}, metric={self.metric!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Profile):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # mutable container semantics: equality by content, not hashable

    # -- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-ready dict (``format_version`` included); inverse of `from_dict`."""
        def tolist(a):
            return None if a is None else a.tolist()

        return {
            "format_version": FORMAT_VERSION,
            "metric": self.metric,
            "baseline_bits": self.baseline_bits,
            "bits": list(self.bits),
            "layers": [layer.to_dict() for layer in self.layers],
            "importance": tolist(self.importance),
            "weight_sensitivity": tolist(self.weight_sensitivity),
            "act_sensitivity": tolist(self.act_sensitivity),
            "cost_tables": {k: v.tolist() for k, v in self.cost_tables.items()},
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str | None = None) -> "Profile":
        """Build a profile from `to_dict` output, reporting every defect in one `ProfileError`."""
        if not isinstance(data, Mapping):
            raise ProfileError(f"a profile must be a JSON object, got {type(data).__name__}", source)
        defects: list[str] = []
        version = data.get("format_version")
        if "format_version" not in data:
            defects.append(f"missing field 'format_version' (this library writes {FORMAT_VERSION})")
        elif version != FORMAT_VERSION or not is_int(version):
            raise ProfileError(
                f"unknown format_version {version!r}; this library reads format_version {FORMAT_VERSION} "
                "(re-create the profile with this version of mixqvit, or upgrade mixqvit)", source)
        for key in ("layers", "bits"):
            if key not in data:
                defects.append(f"missing field {key!r}")
        unknown = sorted(set(data) - set(_PROFILE_FIELDS))
        if unknown:
            defects.append(f"unknown field(s) {unknown}; known fields are {list(_PROFILE_FIELDS)}")
        layers: list[LayerInfo] = []
        raw_layers = data.get("layers", [])
        if not isinstance(raw_layers, list):
            defects.append(f"layers must be a list of layer objects, got {type(raw_layers).__name__}")
            raw_layers = []
        for i, d in enumerate(raw_layers):
            layer = _layer_from_dict(d, i, defects)
            if layer is not None:
                layers.append(layer)
        if defects:
            # Array shapes depend on the layer list, so report layer/field defects first.
            raise ProfileError(defects, source)
        kwargs = {k: data.get(k) for k in ("importance", "weight_sensitivity", "act_sensitivity",
                                           "cost_tables")}
        try:
            return cls(layers=layers, bits=data["bits"], metric=data.get("metric", "kl"),
                       baseline_bits=data.get("baseline_bits"), metadata=data.get("metadata") or {},
                       **kwargs)
        except ProfileError as exc:
            raise ProfileError(exc.defects, source) from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write the profile as JSON atomically (temp file + ``os.replace``); returns the path."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Profile":
        """Read and validate a profile written by `save` (or by hand)."""
        return cls.from_dict(read_json(path, ProfileError), source=str(path))
