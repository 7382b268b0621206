"""The options each layer may choose, as the solver sees them (option index k of K).

* Joint weight/activation choice (the profile has ``act_sensitivity``): option ``k = i*B + j``
  is ``(w, a) = (bits[i], bits[j])``, K = B**2.
* ``tie_wa=True``, or a weight-only profile (no ``act_sensitivity``): option k is
  ``(bits[k], bits[k])``, K = B. Without activation measurements the activations follow the
  weights (as in HAWQ-V3, whose BOPs are MACs x b x b).
* A ``matmul`` layer (product of two activations) has no weights: only its diagonal options
  ``w == a`` are allowed, and the plan reports ``w_bits == a_bits`` for it.
* A pinned layer (``LayerInfo.fixed_bits`` or ``solve(pinned=...)``) may take one option only.
  Its bits may lie outside ``bits`` (e.g. 8 when bits are 2..6): the allowed column then stands
  for the fixed bits, every cost of that layer is evaluated at the fixed bits, and its loss is 0
  (a constant, irrelevant to the choice).
* Layers sharing a ``LayerInfo.group`` are tied (same option index); pinning one member pins the
  whole group.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ._validate import check_bits_value
from .profile import Profile

__all__ = ["OptionGrid", "build_options", "resolve_pins"]


@dataclass(frozen=True)
class OptionGrid:
    """Per-layer option bits and masks of one posed problem (arrays are (L, K))."""

    pairs: bool               # True: K = B**2 (w, a) pairs; False: K = B with w == a
    w_col: np.ndarray         # (K,) column of bits giving each option's weight bits
    a_col: np.ndarray         # (K,) column of bits giving each option's activation bits
    w_bits: np.ndarray        # (L, K) weight bits a layer gets with each option (pins applied)
    a_bits: np.ndarray        # (L, K) activation bits
    allowed: np.ndarray       # (L, K) bool
    pins: dict[int, int]      # layer index -> fixed bits
    tied: list[list[int]]     # groups of layer indices passed to the solver

    @property
    def n_options(self) -> int:
        return self.w_col.shape[0]


def resolve_pins(profile: Profile, overrides: Mapping[str, int | None] | None) -> dict[int, int]:
    """Merge ``LayerInfo.fixed_bits`` with per-call overrides and spread pins over tied groups.

    An override of ``None`` frees a layer the profile pins, so the allocator may choose its bits
    like any other layer's (its costs still count, and its sensitivity must have been measured).
    """
    pins = {i: layer.fixed_bits for i, layer in enumerate(profile.layers) if layer.fixed_bits is not None}
    for name, b in (overrides or {}).items():
        try:
            i = profile.index(name)
        except KeyError as exc:
            raise ValueError(f"pinned: {exc.args[0]}") from None
        if b is None:
            pins.pop(i, None)
            continue
        defects: list[str] = []
        check_bits_value(b, f"pinned[{name!r}]", defects)
        if defects:
            raise ValueError(defects[0])
        pins[i] = int(b)
    groups = _groups(profile)
    for members in groups.values():
        fixed = {pins[i] for i in members if i in pins}
        if len(fixed) > 1:
            names = [profile.layers[i].name for i in members]
            raise ValueError(
                f"tied layers {names} are pinned to different bits {sorted(fixed)}; pin them to one value"
            )
        if fixed:
            (b,) = fixed
            for i in members:
                pins[i] = b
    return pins


def _groups(profile: Profile) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, layer in enumerate(profile.layers):
        if layer.group is not None:
            groups.setdefault(layer.group, []).append(i)
    return groups


def build_options(profile: Profile, tie_wa: bool = False,
                  pinned: Mapping[str, int | None] | None = None) -> OptionGrid:
    """Enumerate the options of every layer of ``profile`` (see the module docstring)."""
    bits = np.asarray(profile.bits, dtype=np.int64)
    B = len(bits)
    pairs = profile.has_act_choices and not tie_wa
    if pairs:
        w_col = np.repeat(np.arange(B), B)
        a_col = np.tile(np.arange(B), B)
    else:
        w_col = a_col = np.arange(B)
    L, K = len(profile.layers), len(w_col)
    w_bits = np.broadcast_to(bits[w_col], (L, K)).copy()
    a_bits = np.broadcast_to(bits[a_col], (L, K)).copy()
    allowed = np.ones((L, K), dtype=bool)
    for l, layer in enumerate(profile.layers):
        if not layer.has_weights:
            allowed[l] = w_col == a_col
            w_bits[l] = a_bits[l]  # no weights: report w == a, and BOPs become macs * a * a
    pins = resolve_pins(profile, pinned)
    for l, b in pins.items():
        hit = np.flatnonzero((bits[w_col] == b) & (bits[a_col] == b))
        col = int(hit[0]) if hit.size else 0
        allowed[l] = False
        allowed[l, col] = True
        w_bits[l] = b
        a_bits[l] = b
    tied = [m for m in _groups(profile).values() if len(m) > 1 and not all(i in pins for i in m)]
    return OptionGrid(pairs=pairs, w_col=w_col, a_col=a_col, w_bits=w_bits, a_bits=a_bits,
                      allowed=allowed, pins=pins, tied=tied)
