"""Calibration passes after the float statistics pass: GPTQ Hessians and sequential calibration.

Both use forward pre-hooks that are removed afterwards, so the model's forward code stays free
of calibration logic.

* :func:`recording_hessians` (``weight_rounding="gptq"``): during the float statistics pass,
  every linear/conv site accumulates ``X^T X`` and the mean of its input; after LayerNorm
  folding the accumulators of the folded layers are re-expressed in the folded coordinates
  (``HessianAccumulator.fold``), so no extra pass is needed. Bit-independent, batched.
* :func:`sequential_pass` (``sequential=True``, bits on): the whole calibration set as one
  batch; in forward order, each site with quantized activations re-calibrates its activation
  quantizer(s) on what the already-quantized layers before it produce, and (with GPTQ) takes
  its Hessian from those inputs before its weight is rounded, like RepQ-ViT's and GPTQ's
  layer-by-layer calibration. One forward pass instead of one per layer.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .gptq import HessianAccumulator, layer_input_rows
from .modules import QuantConv2d, QuantLinear
from .act_quantizers import ActQuantizer

__all__ = ["recording_hessians", "sequential_pass"]

_WEIGHTED = (QuantLinear, QuantConv2d)


def _run(qmodel: nn.Module, batches: Iterable[torch.Tensor], device: torch.device) -> None:
    was_training = qmodel.training
    qmodel.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                qmodel(batch.to(device))
    finally:
        qmodel.train(was_training)


@contextmanager
def recording_hessians(qmodel: nn.Module, enabled: bool = True) -> Iterator[dict[nn.Module, HessianAccumulator]]:
    """While active, every weighted site accumulates ``X^T X`` of its inputs (in whatever pass
    runs: the float statistics pass of :func:`quant.calibrate`). Yields site -> accumulator."""
    sites = [m for m in qmodel.modules() if isinstance(m, _WEIGHTED)] if enabled else []
    acc = {m: HessianAccumulator() for m in sites}

    def record(module: nn.Module, args: tuple) -> None:
        acc[module].add(layer_input_rows(module, args[0]))

    handles = [m.register_forward_pre_hook(record) for m in sites]
    try:
        yield acc
    finally:
        for h in handles:
            h.remove()


def _recalibrate(aq: ActQuantizer, x: torch.Tensor) -> None:
    """Replace `aq`'s statistics by those of `x` (a folded post-LN input keeps its fixed range)."""
    if aq.bits is None or aq.fixed_range is not None:
        return
    aq.observer.reset()
    aq.observer.update(x)
    aq.observer.finish()
    aq.invalidate()


def sequential_pass(qmodel: nn.Module, images: torch.Tensor, device: torch.device, gptq: bool) -> None:
    """One quantized pass of ``images`` in which each activation quantizer (and, with ``gptq``,
    each weight's Hessian) is re-calibrated from its actual, upstream-quantized input."""
    hooks = []

    def act_hook(module: ActQuantizer, args: tuple) -> None:
        _recalibrate(module, args[0])

    def weight_hook(module: nn.Module, args: tuple) -> None:
        if module.weight_quant.bits is not None:
            acc = HessianAccumulator()
            acc.add(layer_input_rows(module, args[0]))
            module.weight_quant.set_hessian(acc.hessian())

    for m in qmodel.modules():
        if isinstance(m, ActQuantizer):
            hooks.append(m.register_forward_pre_hook(act_hook))
        elif gptq and isinstance(m, _WEIGHTED):
            hooks.append(m.register_forward_pre_hook(weight_hook))
    try:
        _run(qmodel, [images], device)
    finally:
        for h in hooks:
            h.remove()
