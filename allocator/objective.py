"""Objectives: the loss each layer incurs with each bit-width option.

Notation: L layers, importance ``I_l >= 0`` (LRP relevance), sensitivity tables
``S^w_l(b)`` and ``S^a_l(b)`` (loss increase when layer l's weights / input activations are
quantized to b bits; an absent table contributes 0).

* ``"mixqvit"`` (default, after Mix-QViT): importance is normalised to mean 1 over the layers,
  ``Ĩ_l = L * I_l / sum_j I_j``, and mixed with a uniform weight::

      ω_l = (1 - α) + α * Ĩ_l,        loss_l(w, a) = ω_l * (S^w_l(w) + S^a_l(a))

  ``α`` in [0, 1] (default 0.5) sets how much importance re-weights the measured sensitivity:
  α = 0 ignores importance, α = 1 scales each layer's sensitivity by its relative importance
  alone. The mean of ω is 1 whatever α, so losses stay on the sensitivity metric's scale.
  Without an importance vector it falls back to ``"sensitivity"`` with a warning.
* ``"sensitivity"``: the same with α = 0, ``loss_l(w, a) = S^w_l(w) + S^a_l(a)``.
* ``"importance"``: importance only, with quantization-noise power as the proxy for damage
  (uniform quantization noise variance scales as ``4^-b``)::

      loss_l(w, a) = Ĩ_l * (4^-w + 4^-a)      (the 4^-w term is dropped for matmul layers,
                                                which have no weights)

* a callable ``f(profile, w_bits, a_bits) -> (L, K) array``: ``w_bits``/``a_bits`` are (L, K)
  integer arrays with the bits each option gives each layer. Entries may be ``+inf`` to forbid
  an option; NaN and ``-inf`` are refused.

Entries for bit-widths the profile has no measurement of (a pinned layer at 8 bits when
``bits`` are 2..6) are NaN here; `solve` replaces them by 0 for pinned layers.
"""
from __future__ import annotations

import warnings
from typing import Callable, Union

import numpy as np

from .errors import ObjectiveError
from .profile import Profile

__all__ = ["OBJECTIVES", "DEFAULT_ALPHA", "ObjectiveFn", "Objective", "normalised_importance",
           "layer_weights", "loss_table", "check_alpha"]

OBJECTIVES = ("mixqvit", "sensitivity", "importance")
DEFAULT_ALPHA = 0.5

ObjectiveFn = Callable[[Profile, np.ndarray, np.ndarray], np.ndarray]
Objective = Union[str, ObjectiveFn]


def check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0 <= alpha <= 1:
        raise ObjectiveError(f"alpha must be a number in [0, 1] (default {DEFAULT_ALPHA}), got {alpha!r}")
    return float(alpha)


def normalised_importance(profile: Profile) -> np.ndarray:
    """``Ĩ = L * I / sum(I)``: mean 1 over the layers."""
    if profile.importance is None:
        raise ObjectiveError("the profile has no importance vector; use objective='sensitivity'")
    imp = profile.importance
    return len(imp) * imp / imp.sum()


def layer_weights(profile: Profile, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """``ω_l = (1 - α) + α * Ĩ_l`` (all ones when α = 0 or importance is absent)."""
    alpha = check_alpha(alpha)
    if alpha == 0 or profile.importance is None:
        return np.ones(len(profile.layers))
    return (1 - alpha) + alpha * normalised_importance(profile)


def _lookup(profile: Profile, bits: np.ndarray) -> np.ndarray:
    """Column of each bit-width in ``profile.bits``; -1 where the profile has no such column."""
    col = np.full(bits.shape, -1, dtype=np.int64)
    for k, b in enumerate(profile.bits):
        col[bits == b] = k
    return col


def _table_term(table: np.ndarray | None, col: np.ndarray) -> np.ndarray:
    if table is None:
        return np.zeros(col.shape)
    rows = np.arange(col.shape[0])[:, None]
    out = table[rows, np.maximum(col, 0)].astype(float)
    out[col < 0] = np.nan
    return out


def _sensitivity_loss(profile: Profile, w_bits: np.ndarray, a_bits: np.ndarray, alpha: float) -> np.ndarray:
    if profile.weight_sensitivity is None and profile.act_sensitivity is None:
        raise ObjectiveError(
            "the profile has neither weight_sensitivity nor act_sensitivity, so a sensitivity-based "
            "objective is undefined; measure sensitivity, or use objective='importance'"
        )
    s = _table_term(profile.weight_sensitivity, _lookup(profile, w_bits))
    s = s + _table_term(profile.act_sensitivity, _lookup(profile, a_bits))
    return layer_weights(profile, alpha)[:, None] * s


def _importance_loss(profile: Profile, w_bits: np.ndarray, a_bits: np.ndarray) -> np.ndarray:
    imp = normalised_importance(profile)[:, None]
    has_w = np.array([layer.has_weights for layer in profile.layers])[:, None]
    return imp * (np.where(has_w, 4.0 ** -w_bits.astype(float), 0.0) + 4.0 ** -a_bits.astype(float))


def loss_table(profile: Profile, w_bits: np.ndarray, a_bits: np.ndarray,
               objective: Objective = "mixqvit", alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """Loss of giving layer l ``(w_bits[l, k], a_bits[l, k])``, shape (L, K); see module docstring."""
    w_bits = np.asarray(w_bits)
    a_bits = np.asarray(a_bits)
    if callable(objective):
        out = np.asarray(objective(profile, w_bits.copy(), a_bits.copy()), dtype=float)
        if out.shape != w_bits.shape:
            raise ObjectiveError(
                f"objective {getattr(objective, '__name__', objective)!r} returned shape {out.shape}, "
                f"expected {w_bits.shape} (layers x options)"
            )
        if np.isnan(out).any() or np.isneginf(out).any():
            raise ObjectiveError(
                f"objective {getattr(objective, '__name__', objective)!r} returned NaN or -inf entries; "
                "losses must be finite (or +inf to forbid an option)"
            )
        return out
    if objective == "mixqvit":
        if profile.importance is None:
            warnings.warn(
                "objective 'mixqvit' needs an importance vector, which this profile lacks; "
                "falling back to objective='sensitivity'",
                UserWarning, stacklevel=4,
            )
            return _sensitivity_loss(profile, w_bits, a_bits, 0.0)
        return _sensitivity_loss(profile, w_bits, a_bits, check_alpha(alpha))
    if objective == "sensitivity":
        return _sensitivity_loss(profile, w_bits, a_bits, 0.0)
    if objective == "importance":
        return _importance_loss(profile, w_bits, a_bits)
    raise ObjectiveError(
        f"unknown objective {objective!r}; expected one of {list(OBJECTIVES)} or a callable "
        "f(profile, w_bits, a_bits) -> (L, K) array"
    )
