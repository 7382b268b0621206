"""Reading the calibrated quantizer state of a fake-quantized model, for every exporter.

Exporters never re-derive a range: they read what the quantizer modules hold after
calibration (and after QAT, GPTQ or any other pass), so that a change in how ranges or
roundings are computed flows into the exported files untouched. Concretely:

* a weighted site (``QuantLinear``/``QuantConv2d``) with ``w_bits`` set: the weight as its
  forward pass uses it (:meth:`quantized_weight`) and the grid of its weight quantizer's
  :class:`~quant.quantizers.UniformQuantizer` (``scale``, ``zero_point``, ``qmin``, ``qmax``,
  ``channel_axis``). The integer codes are recovered from the two and checked to reproduce
  the weight, so a weight path that leaves the grid is refused instead of exported wrongly;
* an activation quantizer with ``bits`` set: its inner quantizer after
  :meth:`~quant.act_quantizers.ActQuantizer.materialize` -- uniform (scale, zero point, qmin, qmax)
  or logarithmic (scale, base);
* everything else in the ``state_dict`` (folded LayerNorms, biases, embeddings, float layers)
  is plain float data.

Models loaded from a packed file (:mod:`quant.deploy.frozen`) hold the same inner quantizers,
so they can be exported again (e.g. packed -> ONNX).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..config import QuantConfig
from ..discovery import find_quantizable_layers
from ..engine import quant_sites
from ..errors import PlanMismatchError
from ..modules import QuantSite
from ..act_quantizers import ActQuantizer
from ..quantizers import LogQuantizer, UniformQuantizer, WeightQuantizer
from .errors import ExportError
from .frozen import FrozenActQuantizer, FrozenWeightQuantizer

__all__ = ["UniformGrid", "WeightState", "ActState", "ExportState", "collect_state", "check_plan"]

#: A weight may sit this far (in units of its step) from its grid point: GPTQ's straight-through
#: sum ``w + (q - w)`` is on the grid up to float rounding only.
GRID_TOLERANCE = 2.0 ** -10

_ACT_TYPES = (ActQuantizer, FrozenActQuantizer)
_WEIGHT_TYPES = (WeightQuantizer, FrozenWeightQuantizer)


@dataclass(frozen=True)
class UniformGrid:
    """The levels ``(k - zero_point) * scale``, ``k = qmin..qmax`` of a uniform quantizer;
    ``scale``/``zero_point`` are float32 of shape ``()`` or ``(C,)`` along ``channel_axis``."""

    scale: torch.Tensor
    zero_point: torch.Tensor
    qmin: int
    qmax: int
    channel_axis: int | None

    @classmethod
    def of(cls, q: UniformQuantizer) -> "UniformGrid":
        return cls(q.scale.detach().float().cpu().clone(), q.zero_point.detach().float().cpu().clone(),
                   int(q.qmin), int(q.qmax), q.channel_axis)

    def broadcast(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``t`` (scale or zero point) shaped to broadcast against ``like`` along the channel axis."""
        if self.channel_axis is None or t.dim() == 0:
            return t
        shape = [1] * like.dim()
        shape[self.channel_axis] = -1
        return t.reshape(shape)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """``(codes - zero_point) * scale`` in float32, the arithmetic of ``fake_quantize``."""
        q = codes.float()
        return (q - self.broadcast(self.zero_point, q)) * self.broadcast(self.scale, q)

    def integer_zero_point(self) -> bool:
        return bool(torch.equal(self.zero_point, torch.round(self.zero_point)))


@dataclass(frozen=True)
class WeightState:
    """A quantized weight: its integer codes (``qmin..qmax``, the weight's shape) on ``grid``."""

    site: str
    bits: int
    codes: torch.Tensor
    grid: UniformGrid

    @property
    def param(self) -> str:
        return f"{self.site}.weight"


@dataclass(frozen=True)
class ActState:
    """A quantized activation: ``kind`` ``"uniform"`` (with ``grid``) or ``"log2"``/``"logsqrt2"``
    (levels ``log_scale * base^-k`` and 0, ``bits`` bits)."""

    module: str
    kind: str
    bits: int
    grid: UniformGrid | None = None
    log_scale: torch.Tensor | None = None


@dataclass
class ExportState:
    """Everything an exporter needs, read from a quantized model (see the module docstring)."""

    site_bits: dict[str, tuple[int | None, int | None]]
    site_kinds: dict[str, str]
    weights: dict[str, WeightState]          # by parameter name ("blocks.0.attn.qkv.weight")
    acts: dict[str, ActState]                # by quantizer module name ("blocks.0.attn.qkv.act_quant")
    floats: dict[str, torch.Tensor]          # every other state_dict entry
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def size_bytes(self) -> float:
        """Weights at their widths (float ones at 32 bits): what ``allocator.Plan.size_bytes`` counts."""
        total = 0.0
        for name, (w, _) in self.site_bits.items():
            if self.site_kinds[name] in ("linear", "conv"):
                numel = self.weights[f"{name}.weight"].codes.numel() if w is not None else self.floats[f"{name}.weight"].numel()
                total += numel * (w if w is not None else 32) / 8
        return total


def _weight_state(name: str, site: nn.Module) -> WeightState:
    wq_module = site.weight_quant
    with torch.no_grad():
        wq = site.quantized_weight().detach().float().cpu()
    inner = getattr(wq_module, "quantizer", None)
    if not isinstance(inner, UniformQuantizer):
        raise ExportError(f"the weight quantizer of '{name}' ({type(wq_module).__name__}) holds no uniform grid "
                          "(a UniformQuantizer at .quantizer); only uniform weight quantizers can be exported")
    grid = UniformGrid.of(inner)
    bits = int(wq_module.bits)
    if grid.qmax - grid.qmin + 1 > 2 ** bits:
        raise ExportError(f"'{name}': the weight grid has {grid.qmax - grid.qmin + 1} levels, more than {bits} bits hold")
    scale = grid.broadcast(grid.scale, wq)
    zp = grid.broadcast(grid.zero_point, wq)
    codes = torch.round(wq / scale + zp)
    off = (grid.dequantize(codes) - wq).abs() / scale
    if not bool((off <= GRID_TOLERANCE).all()) or codes.min() < grid.qmin or codes.max() > grid.qmax:
        raise ExportError(
            f"the quantized weight of '{name}' is not on its quantizer's grid (largest distance "
            f"{float(off.max()):.3g} steps, codes {int(codes.min())}..{int(codes.max())} vs {grid.qmin}..{grid.qmax}); "
            "a weight path that bypasses the weight quantizer's UniformQuantizer cannot be exported")
    return WeightState(name, bits, codes.to(torch.int64), grid)


def _act_state(name: str, q: nn.Module) -> ActState:
    if isinstance(q, ActQuantizer):
        q.materialize()  # NotCalibratedError names the site when calibration is missing
    inner = q.quantizer
    if isinstance(inner, UniformQuantizer):
        return ActState(name, "uniform", int(q.bits), grid=UniformGrid.of(inner))
    if isinstance(inner, LogQuantizer):
        if int(inner.bits) != int(q.bits):
            raise ExportError(f"'{name}': the log quantizer holds {inner.bits} bits but the site asks for {q.bits}")
        return ActState(name, inner.base, int(q.bits), log_scale=inner.scale.detach().float().cpu().clone())
    raise ExportError(f"activation quantizer '{name}' uses a {type(inner).__name__}; exportable are "
                      "UniformQuantizer and LogQuantizer")


def collect_state(qmodel: nn.Module) -> ExportState:
    """Read the exportable state of ``qmodel`` (a model from :func:`quant.quantize`, from QAT, or
    loaded from a packed file). Refuses a float model, a model with nothing quantized, an
    uncalibrated one and quantizers no exporter knows."""
    try:
        sites = quant_sites(qmodel)
    except TypeError as exc:
        raise ExportError(f"not a quantized model: {exc}") from None
    bits = {n: (s.w_bits, s.a_bits) for n, s in sites.items()}
    if all(b == (None, None) for b in bits.values()):
        raise ExportError("the model has no quantized site (every weight and activation is float); "
                          "quantize it first, e.g. quant.quantize(model, plan, calib_data)")
    kinds = {n: s.kind for n, s in sites.items()}
    weights: dict[str, WeightState] = {}
    for name, site in sites.items():
        if isinstance(site, QuantSite) and site.kind in ("linear", "conv") and site.w_bits is not None:
            ws = _weight_state(name, site)
            weights[ws.param] = ws
    acts: dict[str, ActState] = {}
    quantizer_prefixes: list[str] = []
    for name, module in qmodel.named_modules():
        if isinstance(module, _ACT_TYPES + _WEIGHT_TYPES):
            quantizer_prefixes.append(name + ".")
            if isinstance(module, _ACT_TYPES) and module.bits is not None:
                acts[name] = _act_state(name, module)
    floats = {k: v.detach().cpu().clone() for k, v in qmodel.state_dict().items()
              if k not in weights and not k.startswith(tuple(quantizer_prefixes))}
    config = getattr(qmodel, "quant_config", None)
    return ExportState(bits, kinds, weights, acts, floats, config.to_dict() if isinstance(config, QuantConfig) else {})


def check_plan(state: ExportState, plan: Any, qmodel: nn.Module) -> None:
    """Raise :class:`PlanMismatchError` unless the model's bits are exactly ``plan``'s."""
    from ..api import resolve_plan

    config = getattr(qmodel, "quant_config", QuantConfig())
    wanted = resolve_plan(plan, find_quantizable_layers(qmodel), config)
    diff = [f"{n}: plan W{w}A{a}, model W{state.site_bits[n][0]}A{state.site_bits[n][1]}"
            for n, (w, a) in wanted.items() if state.site_bits[n] != (w, a)]
    if diff:
        more = f" (and {len(diff) - 5} more)" if len(diff) > 5 else ""
        raise PlanMismatchError(
            f"the model was not quantized with this plan: {'; '.join(diff[:5])}{more}. "
            "Quantize the model with the plan (quant.quantize(model, plan, calib_data)) before exporting it.",
            [], [])
