"""Calibration passes run in float64, so the calibrated model does not depend on the CPU.

A float32 forward pass gives results that differ in the last bits from one CPU's kernels to
another's (AVX-512, AVX2 and SSE GEMMs sum in different orders). Calibration turns those bits
into discrete choices -- GPTQ's error feedback makes a rounding decision from every earlier
column's error, a range search takes the argmin of near-equal errors -- and a few flipped codes
moved up to 5% of the test images of a shipped model quantized on another CPU. In float64 the
kernel-to-kernel differences are ~1e-16 relative; the statistics and Hessians are rounded to
float32 afterwards, where the same value rounds the same way on every CPU, so every CPU
calibrates the same model. A float32 weight or LayerNorm parameter survives the round trip
float32 -> float64 -> float32 exactly, so the model itself is unchanged.

:func:`computing_in` is the context in which :func:`quant.calibrate` runs its data passes: the
model's floating parameters and buffers are cast to ``dtype`` on entry and each is put back to its
own dtype on exit (tensors created during the passes -- statistics, Hessians -- keep theirs).
The caller casts the images it feeds.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["computing_in", "calibration_dtype"]


def calibration_dtype(name: str) -> torch.dtype | None:
    """The dtype calibration passes run in for ``QuantConfig.calib_dtype`` (``None``: the model's)."""
    return {"float64": torch.float64, "model": None}[name]


def _floating_tensors(model: nn.Module) -> Iterator[tuple[nn.Module, str, bool, torch.Tensor]]:
    """(owner, attribute, is_parameter, tensor) of every floating parameter and buffer."""
    for module in model.modules():
        for name, p in module._parameters.items():
            if p is not None and p.is_floating_point():
                yield module, name, True, p
        for name, b in module._buffers.items():
            if b is not None and b.is_floating_point():
                yield module, name, False, b


def _cast(module: nn.Module, name: str, is_param: bool, tensor: torch.Tensor, dtype: torch.dtype) -> None:
    if tensor.dtype == dtype:
        return
    if is_param:  # the same Parameter object: whoever holds it keeps it
        tensor.data = tensor.data.to(dtype)
    else:
        module._buffers[name] = tensor.to(dtype)


@contextmanager
def computing_in(model: nn.Module, dtype: torch.dtype | None) -> Iterator[nn.Module]:
    """Within the block ``model`` computes in ``dtype`` (``None``: unchanged); on exit every
    floating parameter and buffer that existed on entry gets its entry dtype back."""
    if dtype is None:
        yield model
        return
    entry = {(id(m), n): t.dtype for m, n, _, t in _floating_tensors(model)}
    for m, n, is_param, t in list(_floating_tensors(model)):
        _cast(m, n, is_param, t, dtype)
    try:
        yield model
    finally:
        for m, n, is_param, t in list(_floating_tensors(model)):
            if (id(m), n) in entry:
                _cast(m, n, is_param, t, entry[(id(m), n)])
