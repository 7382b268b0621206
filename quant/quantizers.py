"""Fake quantizers (nn.Modules) built on :mod:`quant.ranges`.

* :class:`UniformQuantizer` - holds ``scale``/``zero_point`` (buffers; :meth:`make_learnable`
  turns the scale into an LSQ parameter for QAT) and applies the uniform fake quantization.
* :class:`LogQuantizer` - log2 / log-sqrt2 quantizer for softmax probabilities.
* :class:`WeightQuantizer` - data-free: derives its range from the weight it is given,
  caching parameters per bit-width so profiling can switch bit-widths cheaply.

Activation quantizers (observer + one of these) are in :mod:`quant.act_quantizers`.

Every quantizer has ``bits`` (``None`` = pass-through float) and ``set_bits``.

Inference (nothing needs a gradient) takes a fast path: the same arithmetic as
:func:`quant.ranges.fake_quantize` / :func:`quant.ranges.log_quantize`, operation for operation,
but in place on one fresh tensor (the straight-through terms, which need autograd, are exact
no-ops there), so a quantized activation costs a few passes over memory instead of eight
allocations; a weight is fake-quantized once per (weight, bits, grid) and reused. The results
are bit-identical to the reference formulas (tested), so they stay equal to the exported
ONNX graph, which writes torch's ``round(x / s + z)`` as Div, Add and a unit-scale
``QuantizeLinear`` (``quant.deploy.onnx_export``) -- a fused ``x * (1/s)`` kernel would not be.
"""
from __future__ import annotations

import torch
from torch import nn

from .ranges import (LOG_MAX_EXPONENT, QParams, check_bits, estimate_range, fake_quantize, log_quantize,
                     qparams_from_range)

__all__ = ["UniformQuantizer", "LogQuantizer", "WeightQuantizer", "fake_quantize_nograd", "log_quantize_nograd"]


def _needs_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd would record an operation on any of ``tensors`` now."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def fake_quantize_nograd(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int,
                         qmax: int) -> torch.Tensor:
    """:func:`quant.ranges.fake_quantize` without autograd, bit for bit: ``x / s + z``, clamped,
    rounded, ``- z``, ``* s`` -- the same operations in the same order, applied in place to one
    new tensor (``x`` is not modified). The straight-through ``y + (round(y) - y)`` equals
    ``round(y)`` (the difference of a float and its nearest integer is exact) except that it
    turns ``round(-0.3) = -0.0`` into ``+0.0``; ``q + (0.0 - z)`` instead of ``q - z`` does the
    same (``-0.0 + 0.0 = +0.0``; for ``z != 0`` the two are the same operation), so even the
    signs of zeros match the reference."""
    out = torch.div(x, scale)
    return out.add_(zero_point).clamp_(qmin, qmax).round_().add_(0.0 - zero_point).mul_(scale)


def log_quantize_nograd(x: torch.Tensor, scale: torch.Tensor, bits: int, base: str) -> torch.Tensor:
    """:func:`quant.ranges.log_quantize`, bit for bit, in place on one new tensor.

    The reference computes ``code = clamp(round(-log2(r) * k), min=0)`` and ``scale *
    exp2(-code / k)``; negation commutes exactly with ``* k``, ``round`` (half to even is
    symmetric) and ``/ k``, so ``u = clamp(round(log2(r) * k), max=0)`` is ``-code`` (up to the
    sign of a zero, which ``exp2`` ignores) and two negations are saved."""
    steps = 1 if base == "log2" else 2
    max_code = min(2**bits - 2, LOG_MAX_EXPONENT * steps)
    u = torch.div(x, scale).clamp_(min=0.0).log2_()
    if steps != 1:  # * 1 and / 1 are exact identities
        u.mul_(steps)
    u.round_().clamp_(max=0.0)
    below = u < -max_code  # code > max_code: the zero level
    if steps != 1:
        u.div_(steps)
    return u.exp2_().mul_(scale).masked_fill_(below, 0.0)


def _broadcast(t: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """Reshape a per-channel vector ``t`` so it broadcasts along ``axis`` of ``x``."""
    if axis is None or t.dim() == 0:
        return t
    shape = [1] * x.dim()
    shape[axis] = -1
    return t.reshape(shape)


def _tensor_key(t: torch.Tensor) -> tuple[int, int]:
    """Storage and in-place version of ``t`` (inference tensors have no version counter)."""
    return t.data_ptr(), 0 if t.is_inference() else t._version


def _replace(current: torch.Tensor, value: torch.Tensor, learnable: bool) -> torch.Tensor:
    """``value`` as the new ``scale``/``zero_point``: copied into ``current`` when that is a
    learnable parameter of the same shape, a new parameter when learnable, else a plain tensor."""
    value = value.detach()
    if learnable and current.shape == value.shape:
        current.copy_(value)
        return current
    return nn.Parameter(value.clone()) if learnable else value.clone()


class UniformQuantizer(nn.Module):
    """Uniform fake quantizer ``(round(clamp(x/s + z, qmin, qmax)) - z) * s``.

    ``channel_axis=None`` is per-tensor; otherwise ``scale``/``zero_point`` are vectors along
    that axis. Parameters are set with :meth:`set_qparams` by the owner (weight or activation
    quantizer); the straight-through estimator makes it usable in QAT.
    """

    def __init__(self, channel_axis: int | None = None) -> None:
        super().__init__()
        self.channel_axis = channel_axis
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0.0))
        self.qmin, self.qmax = 0, 255
        self.learnable = False
        self.learnable_offset = False

    def set_qparams(self, qp: QParams) -> None:
        """Install ``(scale, zero_point, qmin, qmax)`` (resizing if needed; a learnable scale or
        offset stays the same ``nn.Parameter`` when its shape is unchanged, so an optimiser
        holding it keeps working)."""
        scale, zp, self.qmin, self.qmax = qp
        with torch.no_grad():
            self.scale = _replace(self.scale, scale, self.learnable)  # computed from the data: already on its device
            self.zero_point = _replace(self.zero_point, zp.to(self.scale.device), self.learnable_offset)

    def make_learnable(self) -> nn.Parameter:
        """Turn ``scale`` into an ``nn.Parameter`` (LSQ); returns it. Owners stop re-deriving it."""
        if not self.learnable:
            self.scale = nn.Parameter(self.scale.detach().clone())
            self.learnable = True
        return self.scale

    def make_offset_learnable(self) -> nn.Parameter:
        """Turn ``zero_point`` into an ``nn.Parameter`` (LSQ+ learned offset); returns it.

        The offset is learned as a real number in code units: the levels are
        ``(k - z) * s``, i.e. LSQ+'s ``beta = -z * s``. Inside the range the straight-through
        gradient w.r.t. ``z`` is 0; clipped values pull the range towards themselves.
        """
        if not self.learnable_offset:
            self.zero_point = nn.Parameter(self.zero_point.detach().clone().float())
            self.learnable_offset = True
        return self.zero_point

    def levels(self) -> int:
        """Number of distinct integer codes, ``qmax - qmin + 1``."""
        return self.qmax - self.qmin + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = _broadcast(self.scale, x, self.channel_axis)
        zp = _broadcast(self.zero_point, x, self.channel_axis)
        quantize = fake_quantize if _needs_grad(x, scale, zp) else fake_quantize_nograd
        return quantize(x.float(), scale, zp, self.qmin, self.qmax).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"channel_axis={self.channel_axis}, qmin={self.qmin}, qmax={self.qmax}, learnable={self.learnable}, "
                f"learnable_offset={self.learnable_offset}")


class LogQuantizer(nn.Module):
    """Logarithmic quantizer for attention probabilities (values in ``[0, s]``).

    Levels are ``s * base^-k`` plus an exact 0, at most ``2^b`` in all, with ``base`` 2
    (``"log2"``) or sqrt(2) (``"logsqrt2"``); see :func:`quant.ranges.log_quantize`. Softmax
    outputs are concentrated near 0 with a few large values that matter most, which a
    log grid represents with constant relative error. Gradient: straight-through (identity).
    """

    def __init__(self, base: str = "log2") -> None:
        super().__init__()
        if base not in ("log2", "logsqrt2"):
            raise ValueError(f"LogQuantizer base must be 'log2' or 'logsqrt2', got {base!r}")
        self.base = base
        self.register_buffer("scale", torch.tensor(1.0))
        self.bits = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        if not _needs_grad(xf):  # the straight-through sum below, in place: xq - xf + xf
            return log_quantize_nograd(xf, self.scale, self.bits, self.base).sub_(xf).add_(xf).to(x.dtype)
        xq = log_quantize(xf, self.scale, self.bits, self.base)
        return (xf + (xq - xf).detach()).to(x.dtype)

    def extra_repr(self) -> str:
        return f"base={self.base}, bits={self.bits}"


class WeightQuantizer(nn.Module):
    """Data-free weight quantizer: range from the weight itself (minmax/percentile/mse).

    Parameters are cached per bit-width and recomputed whenever the weight tensor changes
    (``_version`` counter), e.g. after LayerNorm folding or an optimiser step, unless the
    scale was made learnable for QAT.
    """

    def __init__(
        self,
        method: str = "mse",
        per_channel: bool = True,
        symmetric: bool = True,
        percentile: float = 99.99,
        grid: int = 40,
        gptq_damp: float = 0.01,
        gptq_act_order: bool = False,
    ) -> None:
        super().__init__()
        self.method, self.per_channel, self.symmetric = method, per_channel, symmetric
        self.percentile, self.grid, self.gptq_damp = percentile, grid, gptq_damp
        self.gptq_act_order = gptq_act_order
        self.bits: int | None = None
        self.quantizer = UniformQuantizer(channel_axis=0 if per_channel else None)
        #: ``X^T X / n`` of the layer's calibration inputs; when set, weights are rounded by GPTQ
        self.register_buffer("hessian", None, persistent=False)
        self._cache: dict[int, QParams] = {}
        self._rounded: dict[int, torch.Tensor] = {}
        self._cache_key: tuple[int, int] | None = None
        self._installed: tuple[int, int, int] | None = None
        #: the last no-grad forward's output and what it was computed from (see :meth:`_frozen`)
        self._out: tuple[tuple, tuple, torch.Tensor] | None = None

    def set_bits(self, bits: int | None) -> None:
        self.bits = check_bits(bits, "weight bits")
        self._out = None

    def qparams(self, weight: torch.Tensor, bits: int) -> QParams:
        """Quantization parameters of ``weight`` at ``bits`` (cached while the weight is unchanged)."""
        self._check_cache(weight)
        if bits not in self._cache:
            w = weight.detach()
            rows = w.reshape(w.shape[0], -1) if self.per_channel else w.reshape(1, -1)
            lo, hi = estimate_range(rows, self.method, bits, self.symmetric, self.percentile, self.grid)
            if not self.per_channel:
                lo, hi = lo[0], hi[0]
            self._cache[bits] = qparams_from_range(lo, hi, bits, self.symmetric)
        return self._cache[bits]

    def _check_cache(self, weight: torch.Tensor) -> None:
        """Forget cached parameters and GPTQ roundings when the weight tensor changed."""
        key = (weight.data_ptr(), weight._version)
        if key != self._cache_key:
            self._cache, self._rounded, self._cache_key = {}, {}, key

    def set_hessian(self, hessian: torch.Tensor | None) -> None:
        """Round by GPTQ with this input Hessian from now on (``None``: round to nearest)."""
        self.hessian = None if hessian is None else hessian.detach().float()
        self._rounded, self._out = {}, None

    def rounded(self, weight: torch.Tensor, bits: int) -> torch.Tensor:
        """``weight`` fake-quantized at ``bits``: GPTQ-rounded when a Hessian is set, else to
        nearest; on the grid of :meth:`qparams` either way (cached per bit-width)."""
        qp = self.qparams(weight, bits)
        if self.hessian is None:
            return fake_quantize(weight, _broadcast(qp.scale, weight, 0 if self.per_channel else None),
                                 _broadcast(qp.zero_point, weight, 0 if self.per_channel else None), qp.qmin, qp.qmax)
        return self._gptq(weight, bits)[0]

    def _gptq(self, weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(GPTQ rounding, its error-compensated pre-rounding weights) at ``bits``, cached."""
        if bits not in self._rounded:
            from .gptq import gptq_quantize

            self._rounded[bits] = gptq_quantize(weight, self.hessian, self.qparams(weight, bits), self.gptq_damp,
                                                with_latent=True, act_order=self.gptq_act_order)
        return self._rounded[bits]

    def make_learnable(self, weight: torch.Tensor) -> nn.Parameter:
        """Install the calibrated scale for ``weight`` at the current bits and make it an LSQ
        parameter (QAT). Later weight updates no longer re-derive it; ``set_bits`` does.

        With GPTQ rounding, ``weight`` is first overwritten (in place) by GPTQ's error-compensated
        weights, whose nearest rounding is the GPTQ result (those past the clamping range moved a
        quarter step inside it, so their straight-through gradient is on): QAT starts from
        exactly the PTQ model, with latent weights as generic as round-to-nearest's."""
        if self.bits is None:
            raise ValueError("make_learnable needs weight bits; call set_bits first")
        qp = self.qparams(weight, self.bits)
        if self.hessian is not None:
            axis = 0 if self.per_channel else None
            scale, zp = _broadcast(qp.scale, weight, axis), _broadcast(qp.zero_point, weight, axis)
            with torch.no_grad():
                code = torch.clamp(self._gptq(weight, self.bits)[1] / scale + zp, qp.qmin + 0.25, qp.qmax - 0.25)
                weight.copy_(((code - zp) * scale).to(weight.dtype))
            self.set_hessian(None)
        self.quantizer.set_qparams(qp)
        self._installed = (weight.data_ptr(), weight._version, self.bits)
        return self.quantizer.make_learnable()

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.bits is None:
            return weight
        state = (weight.data_ptr(), weight._version, self.bits)
        learned = self.quantizer.learnable and self._installed is not None and self._installed[2] == self.bits
        if state != self._installed and not learned:  # weight or bits changed: re-derive the range
            self.quantizer.set_qparams(self.qparams(weight, self.bits))
            self._installed = state
        if not _needs_grad(weight, self.quantizer.scale, self.quantizer.zero_point):
            return self._frozen(weight, learned)
        if self.hessian is not None and not learned:
            return self.rounded(weight, self.bits) + (weight - weight.detach())  # exact values, straight-through
        return self.quantizer(weight)

    def __getstate__(self) -> dict:
        """Pickled (``torch.save`` of a model, ``copy.deepcopy``) without the inference cache:
        it is a copy of the weight, recomputed on the first forward."""
        state = self.__dict__.copy()
        state["_out"] = None
        return state

    def _frozen(self, weight: torch.Tensor, learned: bool) -> torch.Tensor:
        """The forward's value when nothing needs a gradient, computed once per (weight, bits,
        grid) and reused: inference does no per-call weight work. GPTQ: the cached rounding
        itself (the straight-through ``+ (w - w.detach())`` adds zeros). Keyed on the storage and
        in-place version of the weight and of the grid's tensors, so an optimiser step, a
        ``load_state_dict`` or a move to another device recomputes it. Callers must not modify
        the returned tensor."""
        grid = self.quantizer
        tensors = (weight, grid.scale, grid.zero_point)  # held, so no other tensor can take their place
        key = (*map(_tensor_key, tensors), grid.qmin, grid.qmax, self.bits, learned, self.hessian is None,
               torch.is_inference_mode_enabled())  # an inference tensor cannot be saved for a later backward
        cached = self._out
        if cached is None or cached[1] != key or any(a is not b for a, b in zip(cached[0], tensors)):
            with torch.no_grad():
                out = self.rounded(weight, self.bits) if self.hessian is not None and not learned else grid(weight)
            self._out = cached = (tensors, key, out)
        return cached[2]

    def extra_repr(self) -> str:
        return f"bits={self.bits}, method={self.method}, per_channel={self.per_channel}, symmetric={self.symmetric}"
