"""Keep the image-independent inputs of activation quantizers off rounding boundaries.

In a ViT the prefix tokens (class token, DeiT's distillation token) enter the first block as
the same rows for every image, so everything computed from them until attention mixes them
with the patches -- the first LayerNorm's output, ``q``, ``k`` and ``v`` -- is a constant of
the model (so are a Swin's zero-padded window tokens). A constant whose code coordinate
(``x / s + z`` of a uniform quantizer, ``log2(x / s)`` in level units of the log quantizer)
lies within float rounding of a half ``k + 0.5`` is rounded one way by one CPU's kernels and
the other way by another's, and then *every* image moves. It is not rare: the folded
post-LayerNorm grid spans a channel's calibrated range ``[-w/2, w/2]`` in ``2^b - 1`` steps with
``z = 2^(b-1)``, which puts each channel's calibrated minimum exactly on the half between codes
0 and 1, at every bit-width -- and a class token that is some channel's minimum is that minimum
in every calibration image (the shipped ViT: 0.49999982 of a step with AVX-512 kernels,
0.50000030 with SSE ones; top-1 +0.10 to +0.28 points on AVX2 or SSE4.2 kernels). An image-dependent
value near a boundary flips in a few images only, which averages out.

:class:`ConstantInputs` finds the constants by measurement: seeded random probe images, the
activations in float (quantized ones coincide across images by chance), an element is constant
where all probes give the same bits. :meth:`ConstantInputs.settle` then goes quantizer by
quantizer in forward order and multiplies a quantizer's scale by the first of ``1``, ``1 + step``,
``1 - step``, ``1 + 2 step``, ... that puts every constant code coordinate at least ``margin``
steps from a rounding half that changes the output (the halves inside ``[qmin, qmax]``: values
beyond a clamp end round to the end level either way); each quantizer sees its constants as the
already-settled quantizers before it make them. The values enter the choice only through
``distance >= margin``, so CPUs whose float results differ by much less than the margin choose
the same factor; a larger scale first, because it puts a minimum on the half inside the grid,
as the folded grid already does with the maximum (which lands on ``qmax + 0.5``). The scale
changes by at most ``max_steps * step`` relative (1e-2 by default; 1e-4 to 2.1e-3 on the shipped
models), and the scale is the scale: export and QAT read it as any other.

The factor lives on the installed quantizer parameters only: ``ActQuantizer.set_bits``
re-installs the parameters derived from the statistics, so a nudge never outlives the bits it
was computed for, and :func:`quant.quantize` and :meth:`quant.PlanSwitcher.apply` run the pass
after setting bits (both with the same probes, so switching plans still equals quantizing).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from .act_quantizers import ActQuantizer
from .device import model_device
from .quantizers import LogQuantizer, UniformQuantizer
from .ranges import LOG_MAX_EXPONENT

__all__ = ["settle_constant_inputs", "ConstantInputs", "SettleReport", "SettledQuantizer", "UnsettledWarning", "recording_input_shape",
           "code_coordinates", "MARGIN", "STEP", "MAX_STEPS", "PROBES"]

#: Required distance (in quantization steps) of a constant from a rounding half. Kernel-to-kernel
#: differences of LayerNorm and GEMM outputs are ~1e-6 of a step at 3-4 bits and ~1e-4 at 8 bits.
MARGIN = 1e-3
#: Relative granularity of the scale nudge, and the number of steps tried each way.
STEP, MAX_STEPS = 1e-4, 100
#: Random probe images fed to find the constant elements (seeded, so every caller sees the same).
PROBES = 3


@dataclass(frozen=True)
class SettledQuantizer:
    """One activation quantizer with image-independent input elements.

    ``constants``: how many input elements are the same for every image; ``factor``: what its
    scale was multiplied by (1.0: left alone); ``distance_before`` / ``distance``: the smallest
    distance, in steps, of a constant's code coordinate from a rounding half inside the grid,
    before and after (``inf`` when none is near one)."""

    name: str
    constants: int
    factor: float
    distance_before: float
    distance: float


@dataclass
class SettleReport:
    """What :func:`settle_constant_inputs` did: every quantizer with constant inputs, in forward
    order, and how many (probe) forward passes it took."""

    quantizers: list[SettledQuantizer] = field(default_factory=list)
    forwards: int = 0
    margin: float = MARGIN

    @property
    def nudged(self) -> list[SettledQuantizer]:
        return [q for q in self.quantizers if q.factor != 1.0]

    @property
    def unsettled(self) -> list[SettledQuantizer]:
        """Quantizers no factor within the bound could clear (their best one was applied)."""
        return [q for q in self.quantizers if q.distance < self.margin]


def code_coordinates(quantizer: nn.Module, x: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """``(y, lo, hi)``: the values ``quantizer`` rounds for inputs ``x`` with step ``scale``,
    computed with the quantizer's own float32 operations, and the first and last rounding half
    that changes its output (``lo <= k + 0.5 <= hi``)."""
    if isinstance(quantizer, UniformQuantizer):
        if scale.numel() != 1:
            raise ValueError("settle_constant_inputs: activation quantizers are per-tensor; got a scale of shape "
                             f"{tuple(scale.shape)}")
        y = torch.div(x.float(), scale.reshape(())).add_(quantizer.zero_point.detach().reshape(()))
        return y, quantizer.qmin + 0.5, quantizer.qmax - 0.5
    if isinstance(quantizer, LogQuantizer):
        steps = 1 if quantizer.base == "log2" else 2
        max_code = min(2**quantizer.bits - 2, LOG_MAX_EXPONENT * steps)
        y = torch.div(x.float(), scale.reshape(())).clamp_(min=0.0).log2_()
        if steps != 1:
            y.mul_(steps)
        return y, -max_code - 0.5, -0.5  # round(y) is clamped at 0 and zeroed below -max_code
    raise TypeError(f"settle_constant_inputs: unknown activation quantizer {type(quantizer).__name__}")


def _distance(quantizer: nn.Module, x: torch.Tensor, scale: torch.Tensor) -> float:
    """Smallest distance (steps) of ``x``'s code coordinates from a half that matters; inf if none."""
    y, lo, hi = code_coordinates(quantizer, x, scale)
    y = y.double()
    half = torch.floor(y) + 0.5  # the nearest half of every y
    d = torch.where(torch.isfinite(y) & (half >= lo) & (half <= hi), (y - half).abs(), math.inf)
    return float(d.min()) if d.numel() else math.inf


def _factors(step: float, max_steps: int) -> Iterator[float]:
    """1, then 1 + step, 1 - step, 1 + 2 step, ...: the smallest nudge first, up before down."""
    yield 1.0
    for j in range(1, max_steps + 1):
        yield 1.0 + j * step
        yield 1.0 - j * step


def _choose_scale(quantizer: nn.Module, x: torch.Tensor, margin: float, step: float,
                  max_steps: int) -> tuple[float, torch.Tensor, float, float]:
    """``(factor, new scale, distance before, distance after)``: the first factor that keeps all of
    ``x`` ``margin`` away from the halves, else the one that keeps them farthest."""
    scale = quantizer.scale.detach()
    before = _distance(quantizer, x, scale)
    best = (1.0, scale, before)
    for f in _factors(step, max_steps):
        candidate = scale if f == 1.0 else (scale.double() * f).to(scale.dtype)
        d = before if f == 1.0 else _distance(quantizer, x, candidate)
        if d >= margin:
            return f, candidate, before, d
        if d > best[2]:
            best = (f, candidate, d)
    return best[0], best[1], before, best[2]


class _Stop(Exception):
    """Raised by a hook to end a probe forward once the last quantizer of interest was seen."""


def _inputs(qmodel: nn.Module, probes: torch.Tensor, watched: list[ActQuantizer],
            stop_after: ActQuantizer | None) -> dict[ActQuantizer, list[torch.Tensor]]:
    """Each watched quantizer's inputs as ``(probes, -1)`` rows, one per call, in the order the
    forward pass first calls them (inputs that are not batch-major are left out). With
    ``stop_after`` the pass ends once that quantizer has been called."""
    n = probes.shape[0]
    seen: dict[ActQuantizer, list[torch.Tensor]] = {}

    def hook(module: ActQuantizer, args: tuple) -> None:
        x = args[0].detach()
        if x.dim() and x.shape[0] % n == 0:  # (images x ...) along dim 0
            seen.setdefault(module, []).append(x.reshape(n, -1))
        if module is stop_after:
            raise _Stop

    handles = [q.register_forward_pre_hook(hook) for q in watched]
    try:
        qmodel(probes)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return seen


@contextmanager
def _activations_float(quantizers: list[ActQuantizer]) -> Iterator[None]:
    """While active the quantizers pass their input through; their installed parameters (and a
    nudge or a learned scale in them) stay as they are, unlike with ``set_bits``."""
    saved = [q.bits for q in quantizers]
    for q in quantizers:
        q.bits = None
    try:
        yield
    finally:
        for q, bits in zip(quantizers, saved):
            q.bits = bits


def _constant_positions(qmodel: nn.Module, probes: torch.Tensor,
                        quantizers: list[ActQuantizer]) -> dict[ActQuantizer, list[torch.Tensor]]:
    """Per quantizer with any, per call: the input positions that do not depend on the image.
    Found with the activations in float: quantized activations take few distinct values, so two
    images can agree on an image-dependent element by coincidence; float values do not."""
    with _activations_float(quantizers):
        seen = _inputs(qmodel, probes, quantizers, None)
    masks = {q: [(rows == rows[:1]).all(dim=0) for rows in calls] for q, calls in seen.items()}
    return {q: m for q, m in masks.items() if any(bool(x.any()) for x in m)}


def _constant_values(qmodel: nn.Module, probes: torch.Tensor, positions: dict[ActQuantizer, list[torch.Tensor]],
                     watched: list[ActQuantizer]) -> dict[ActQuantizer, torch.Tensor]:
    """The quantized model's input values of each watched quantizer at its constant positions
    (where the probes agree there too), stopping after the last watched quantizer."""
    seen = _inputs(qmodel, probes, watched, watched[-1])
    return {q: torch.cat([rows[0][mask.to(rows.device) & (rows == rows[:1]).all(dim=0)]
                          for rows, mask in zip(seen[q], positions[q])])
            for q in watched if q in seen}


def _probe_images(input_shape: Sequence[int], n: int, device: torch.device) -> torch.Tensor:
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"settle_constant_inputs: input_shape {tuple(input_shape)} is not the shape of one "
                         "image, e.g. (3, 224, 224)")
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(0)).to(device)


class ConstantInputs:
    """Where the activation quantizers of ``qmodel`` see image-independent inputs, for images
    of ``input_shape`` (C, H, W), and :meth:`settle` to keep those inputs off rounding halves.

    The positions are structural -- they depend on neither the bits nor the scales -- so they
    are found once, in one float forward pass of :data:`PROBES` seeded random images (every
    activation quantizer watched), and each :meth:`settle` only runs the quantized model up to
    the last quantizer that has any (for a ViT: the patch embedding and the first block's
    attention inputs). :class:`quant.PlanSwitcher` keeps one for all its plans.
    """

    @torch.no_grad()
    def __init__(self, qmodel: nn.Module, input_shape: Sequence[int]) -> None:
        self.qmodel = qmodel
        self.input_shape = tuple(int(s) for s in input_shape)
        probes = _probe_images(self.input_shape, PROBES, model_device(qmodel))
        quantizers = [m for m in qmodel.modules() if isinstance(m, ActQuantizer)]
        was_training = qmodel.training
        qmodel.eval()
        try:
            #: quantizer -> per call, the mask of its image-independent input elements (forward order)
            self.positions = _constant_positions(qmodel, probes, quantizers) if quantizers else {}
        finally:
            qmodel.train(was_training)

    @torch.no_grad()
    def settle(self, *, margin: float = MARGIN, step: float = STEP, max_steps: int = MAX_STEPS) -> SettleReport:
        """Nudge the scale of every quantized activation quantizer whose image-independent input
        elements lie within ``margin`` steps of a rounding half, in place (see the module
        docstring): quantizer by quantizer in forward order, the first factor ``1 + step``,
        ``1 - step``, ``1 + 2 step``, ... (at most ``max_steps`` each way) that clears all of
        them, else the one that keeps them farthest (listed in ``unsettled``). One partial
        forward pass, plus one per nudged quantizer that has others after it. Deterministic."""
        if not (0 < margin < 0.5) or not (0 < step) or max_steps < 0 or max_steps * step >= 1:
            raise ValueError(f"settle_constant_inputs: margin={margin}, step={step}, max_steps={max_steps}; expected "
                             "0 < margin < 0.5, step > 0 and 0 <= max_steps * step < 1")
        qmodel = self.qmodel
        report = SettleReport(margin=margin)
        order = [q for q in self.positions if q.bits is not None]
        if not order:
            return report
        names = {m: n for n, m in qmodel.named_modules()}
        for aq in order:  # the parameters for the current bits, before reading or nudging them
            aq.materialize()
        probes = _probe_images(self.input_shape, PROBES, model_device(qmodel))
        was_training = qmodel.training
        qmodel.eval()
        try:
            constants = _constant_values(qmodel, probes, self.positions, order)
            report.forwards = 1
            for i, aq in enumerate(order):
                values = constants.get(aq, torch.empty(0, device=aq.quantizer.scale.device))
                factor, scale, before, after = _choose_scale(aq.quantizer, values, margin, step, max_steps)
                report.quantizers.append(SettledQuantizer(names[aq], int(values.numel()), factor, before, after))
                if factor == 1.0:
                    continue
                aq.quantizer.scale.copy_(scale)
                if i + 1 < len(order):  # the later constants now come from the new scale
                    constants.update(_constant_values(qmodel, probes, self.positions, order[i + 1:]))
                    report.forwards += 1
        finally:
            qmodel.train(was_training)
        return report


class UnsettledWarning(UserWarning):
    """Some quantizer's image-independent inputs stay within the margin of a rounding half after
    settling (``report.unsettled``): the model may predict differently on another CPU."""

    def __init__(self, message: str, report: SettleReport) -> None:
        super().__init__(message)
        self.report = report


def settle_constant_inputs(qmodel: nn.Module, input_shape: Sequence[int], *, margin: float = MARGIN,
                           step: float = STEP, max_steps: int = MAX_STEPS) -> SettleReport:
    """Keep the image-independent inputs of ``qmodel``'s activation quantizers at least ``margin``
    steps from a rounding half by nudging their scales, in place: ``ConstantInputs(qmodel,
    input_shape).settle(...)`` (one float probe pass to find them, then
    :meth:`ConstantInputs.settle`). ``input_shape`` is one image's shape (C, H, W). Call it
    after the bits are set (``quantize`` and ``PlanSwitcher.apply`` do), and again after
    anything that changes weights or scales (``quant.reconstruct`` and ``quant.qat`` do).
    Warns (:class:`UnsettledWarning`, carrying the report) when no nudge within ``max_steps``
    cleared some quantizer; calling it again continues from the nudged scales."""
    report = ConstantInputs(qmodel, input_shape).settle(margin=margin, step=step, max_steps=max_steps)
    if report.unsettled:
        listed = ", ".join(f"{q.name} ({q.distance:.2g} steps)" for q in report.unsettled)
        warnings.warn(UnsettledWarning(
            f"settle_constant_inputs: no scale within {max_steps * step:.2%} keeps the image-independent inputs of "
            f"{listed} {margin} steps from a rounding half; the model may predict differently on another CPU. "
            "Calling settle_constant_inputs again nudges further.", report), stacklevel=2)
    return report


@contextmanager
def recording_input_shape(model: nn.Module) -> Iterator[list[tuple[int, ...]]]:
    """While active, the first input ``model`` is called with leaves its per-image shape in the
    yielded list (for :func:`settle_constant_inputs` after a calibration pass over any form of
    ``calib_data``)."""
    shapes: list[tuple[int, ...]] = []

    def hook(module: nn.Module, args: tuple) -> None:
        if not shapes and args and isinstance(args[0], torch.Tensor):
            shapes.append(tuple(args[0].shape[1:]))

    handle = model.register_forward_pre_hook(hook)
    try:
        yield shapes
    finally:
        handle.remove()
