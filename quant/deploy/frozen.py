"""Quantizers with fixed parameters, for models rebuilt from an exported file.

A packed file holds integer weights and calibrated quantizer parameters, not the float weights
and calibration statistics from which :class:`~quant.quantizers.WeightQuantizer` and
:class:`~quant.act_quantizers.ActQuantizer` derive theirs. A rebuilt model therefore carries these
frozen stand-ins: same ``bits``/``kind`` attributes and the same inner quantizer modules
(:class:`~quant.quantizers.UniformQuantizer`, :class:`~quant.quantizers.LogQuantizer`), so the
quantized layers run unchanged and the model can be exported again; changing their bits is
refused, since nothing to re-derive a range from is left.
"""
from __future__ import annotations

import torch
from torch import nn

from .errors import ExportError

__all__ = ["FrozenWeightQuantizer", "FrozenActQuantizer"]


def _refuse_change(what: str, have: int, asked: int | None) -> None:
    if asked != have:
        raise ExportError(
            f"{what} was loaded from an exported file: its bits ({have}) and quantizer parameters are fixed, "
            f"so it cannot be set to {asked}; quantize the float model again to use other bits")


class FrozenWeightQuantizer(nn.Module):
    """A weight quantizer whose grid (``self.quantizer``) was read from a file."""

    def __init__(self, bits: int, quantizer: nn.Module, name: str = "") -> None:
        super().__init__()
        self.bits, self.quantizer, self.name = int(bits), quantizer, name

    def set_bits(self, bits: int | None) -> None:
        _refuse_change(f"weight quantizer '{self.name}'", self.bits, bits)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        # The stored weight is already on the grid; quantizing it again is exact (idempotent)
        # and keeps the module a real quantizer if the weight is ever changed.
        return self.quantizer(weight)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, frozen"


class FrozenActQuantizer(nn.Module):
    """An activation quantizer (uniform or log) whose parameters were read from a file."""

    def __init__(self, kind: str, bits: int, quantizer: nn.Module, name: str = "") -> None:
        super().__init__()
        self.kind, self.bits, self.quantizer, self.name = kind, int(bits), quantizer, name

    def set_bits(self, bits: int | None) -> None:
        _refuse_change(f"activation quantizer '{self.name}'", self.bits, bits)

    def materialize(self) -> None:
        """Nothing to compute: the parameters are fixed (same interface as ``ActQuantizer``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantizer(x)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, bits={self.bits}, frozen"
