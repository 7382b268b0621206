"""``quantize``: the one-call PTQ entry point, and plan resolution.

A plan says which bit-width each site gets. It is either an ``allocator.Plan`` (anything
with ``w_bits`` and ``a_bits`` dicts, name -> int or None; duck-typed so quant does not import
allocator) or a uniform string such as ``"W4A4"`` / ``"W4A8"`` (``A32``/``W32`` = float).
With a string, the first (patch embedding) and last (classifier head) layers get
``config.edge_bits`` (8 by default), as is conventional in ViT quantization.
"""
from __future__ import annotations

from typing import Any

from allocator.bits import parse_uniform

from torch import nn

from .config import QuantConfig
from .discovery import LayerSite, find_quantizable_layers
from .engine import calibrate, prepare, quant_sites
from .errors import PlanMismatchError
from .ranges import check_bits
from .settle import recording_input_shape, settle_constant_inputs

__all__ = ["measured_config", "quantize", "resolve_plan"]

def _plan_dicts(plan: Any) -> tuple[dict, dict]:
    if not (hasattr(plan, "w_bits") and hasattr(plan, "a_bits")):
        raise TypeError(
            f"plan must be an allocator.Plan (with .w_bits/.a_bits dicts) or a string like 'W4A4'; "
            f"got {type(plan).__name__}"
        )
    w, a = plan.w_bits, plan.a_bits
    if not isinstance(w, dict) or not isinstance(a, dict):
        raise TypeError(f"plan.w_bits and plan.a_bits must be dicts name -> int, got {type(w).__name__}/{type(a).__name__}")
    return w, a


def _names_preview(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def resolve_plan(plan: Any, sites: list[LayerSite], config: QuantConfig = QuantConfig()) -> dict[str, tuple[int | None, int | None]]:
    """Site name -> ``(w_bits, a_bits)`` for every site, in forward order.

    Raises :class:`PlanMismatchError` if a Plan misses sites of the model or names sites it
    lacks (both lists in the message), and ``ValueError``/``TypeError`` for bad bit values.
    """
    names = [s.name for s in sites]
    if isinstance(plan, str):
        w, a = parse_uniform(plan)
        edge = config.edge_bits
        return {s.name: ((edge, edge) if edge is not None and s.role in ("first", "last") else (w, a)) for s in sites}
    w_bits, a_bits = _plan_dicts(plan)
    known = set(names)
    planned = set(w_bits) | set(a_bits)
    missing = [n for n in names if n not in w_bits or n not in a_bits]
    extra = sorted(planned - known)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"the plan lacks {len(missing)} layer(s) of the model: {_names_preview(missing)}")
        if extra:
            parts.append(f"the plan names {len(extra)} layer(s) the model lacks: {_names_preview(extra)}")
        raise PlanMismatchError(
            "plan does not match the model: " + "; ".join(parts)
            + ". Make the plan from a profile of this model (quant.find_quantizable_layers lists its layers).",
            missing, extra,
        )
    out = {}
    for n in names:
        out[n] = (check_bits(w_bits[n], f"plan.w_bits['{n}']"), check_bits(a_bits[n], f"plan.a_bits['{n}']"))
    return out


def measured_config(plan: Any) -> QuantConfig | None:
    """The quantizer ``plan`` was optimised for: the configuration its profile measured the
    sensitivities with (``Plan.measured_with``, read by :meth:`QuantConfig.from_record`), or None
    for a string plan or a plan that records none. An unreadable record raises ``ValueError``."""
    recorded = getattr(plan, "measured_with", None)
    if recorded is None:
        return None
    try:
        return QuantConfig.from_record(dict(recorded))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the plan's measured_with is not a quantizer configuration this version reads ({exc})") from None


def quantize(model: nn.Module, plan: Any, calib_data: Any, *, config: QuantConfig | None = None,
             verbose: bool = False) -> nn.Module:
    """Post-training quantization: a new fake-quantized copy of ``model`` following ``plan``.

    ``config`` None (the default) applies the quantizer the plan was optimised for
    (:func:`measured_config`), else ``QuantConfig()``; give one to apply another.
    ``model`` is not modified. Steps: :func:`prepare` (copy, on the model's device),
    :func:`calibrate` on ``calib_data`` (one float pass; LayerNorm folding; the passes that
    ``config`` asks for) with each site at the plan's bits, then
    :func:`quant.settle.settle_constant_inputs` (image-independent quantizer inputs kept off
    rounding boundaries, so the result does not depend on the CPU's float kernels in every
    image at once). Deterministic for a given ``config.seed``. Returned in eval mode.
    The plan is checked against the model before any work is done.
    """
    if config is None:
        config = measured_config(plan) or QuantConfig()
    bits = resolve_plan(plan, find_quantizable_layers(model), config)
    qmodel = prepare(model, config)
    sites = quant_sites(qmodel)
    for name, (w, a) in bits.items():  # before calibrate: sequential calibration needs them
        sites[name].set_bits(w, a)
    with recording_input_shape(qmodel) as shapes:
        calibrate(qmodel, calib_data, verbose=verbose)
    settle_constant_inputs(qmodel, shapes[0])
    return qmodel.eval()
