"""Rebuilding a fake-quant model skeleton from an architecture description, and installing
exported state into it (shared by the packed loader and the export-time compatibility check).

The skeleton is ``quant.prepare(build_model(spec), config)``: the same module tree and names as
the exported model, with random weights. Calibration is not replayed: the file's tensors replace
every parameter (LayerNorm folding included: Swin's patch-merging reduction gains the bias that
folding created), and frozen quantizers carry the file's quantizer parameters.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from ..config import QuantConfig
from ..engine import prepare, quant_sites
from ..act_quantizers import ActQuantizer
from ..quantizers import LogQuantizer, UniformQuantizer, WeightQuantizer
from ..ranges import QParams
from .arch import build_model
from .errors import PackedFormatError
from .frozen import FrozenActQuantizer, FrozenWeightQuantizer
from .state import UniformGrid

__all__ = ["skeleton", "check_layout", "assign_tensor", "install_weight", "install_act"]


def skeleton(spec: Mapping[str, Any], config: QuantConfig) -> nn.Module:
    """The prepared (uncalibrated, all-float) model of ``spec``."""
    return prepare(build_model(spec), config)


def _slot(model: nn.Module, name: str) -> tuple[nn.Module, str, torch.Tensor | None]:
    prefix, _, attr = name.rpartition(".")
    try:
        module = model.get_submodule(prefix) if prefix else model
    except AttributeError:
        raise PackedFormatError(f"tensor '{name}': the rebuilt model has no module '{prefix}'") from None
    known = attr in module._parameters or attr in module._buffers
    if not known and not (hasattr(module, attr) and getattr(module, attr) is None):  # an absent bias is a None attribute
        raise PackedFormatError(f"tensor '{name}': module '{prefix}' ({type(module).__name__}) has no parameter '{attr}'")
    return module, attr, getattr(module, attr)


def check_layout(model: nn.Module, sites: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Raise :class:`PackedFormatError` unless ``model`` has exactly the quantizable ``sites`` and,
    for each tensor name, a slot of that shape (or an absent bias of the right length), and
    unless ``shapes`` covers every parameter and persistent buffer outside the quantizers."""
    have = {n: s.kind for n, s in quant_sites(model).items()}
    want = {n: v["kind"] for n, v in sites.items()}
    if have != want:
        missing = [n for n in want if n not in have]
        extra = [n for n in have if n not in want]
        raise PackedFormatError(
            f"the architecture does not match the exported layers (file-only: {missing[:5]}, "
            f"architecture-only: {extra[:5]}, or different kinds); the description is for another model")
    for name, shape in shapes.items():
        module, attr, current = _slot(model, name)
        if current is None:
            weight = getattr(module, "weight", None)
            if attr != "bias" or weight is None or tuple(shape) != (weight.shape[0],):
                raise PackedFormatError(f"tensor '{name}' of shape {tuple(shape)} has no place in the rebuilt model")
        elif tuple(current.shape) != tuple(shape):
            raise PackedFormatError(f"tensor '{name}': shape {tuple(shape)} in the file, "
                                    f"{tuple(current.shape)} in the rebuilt model; the description is for another model")
    quantizers = tuple(n + "." for n, m in model.named_modules()
                       if isinstance(m, (ActQuantizer, WeightQuantizer, FrozenActQuantizer, FrozenWeightQuantizer)))
    lacking = [k for k in model.state_dict() if k not in shapes and not k.startswith(quantizers)]
    if lacking:
        raise PackedFormatError(f"the file lacks {len(lacking)} tensor(s) of the model, e.g. {lacking[:5]}")


@torch.no_grad()
def assign_tensor(model: nn.Module, name: str, value: torch.Tensor) -> None:
    """Put ``value`` into parameter/buffer ``name`` (creating an absent bias as a parameter)."""
    module, attr, current = _slot(model, name)
    if current is None:
        setattr(module, attr, nn.Parameter(value.clone()))
    else:
        current.copy_(value)


def _uniform(grid: UniformGrid) -> UniformQuantizer:
    q = UniformQuantizer(channel_axis=grid.channel_axis)
    q.set_qparams(QParams(grid.scale.clone(), grid.zero_point.clone(), grid.qmin, grid.qmax))
    return q


def install_weight(model: nn.Module, site: str, bits: int, codes: torch.Tensor, grid: UniformGrid) -> None:
    """Set ``site``'s weight to the dequantized ``codes`` and freeze its quantizer on ``grid``."""
    layer = model.get_submodule(site)
    assign_tensor(model, f"{site}.weight", grid.dequantize(codes))
    layer.weight_quant = FrozenWeightQuantizer(bits, _uniform(grid), f"{site}.weight_quant")


def install_act(model: nn.Module, name: str, kind: str, bits: int, grid: UniformGrid | None,
                log_scale: torch.Tensor | None) -> None:
    """Replace activation quantizer ``name`` by a frozen one with the given parameters."""
    if kind == "uniform":
        inner: nn.Module = _uniform(grid)
    else:
        inner = LogQuantizer(kind)
        inner.scale = log_scale.clone()
        inner.bits = bits
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, FrozenActQuantizer(kind, bits, inner, name))
