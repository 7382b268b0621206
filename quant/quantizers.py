"""Fake quantizers (nn.Modules) built on :mod:`quant.ranges`.

* :class:`UniformQuantizer` - holds ``scale``/``zero_point`` (buffers; :meth:`make_learnable`
  turns the scale into an LSQ parameter for QAT) and applies the uniform fake quantization.
* :class:`LogQuantizer` - log2 / log-sqrt2 quantizer for softmax probabilities.
* :class:`WeightQuantizer` - data-free: derives its range from the weight it is given,
  caching parameters per bit-width so profiling can switch bit-widths cheaply.
* :class:`ActQuantizer` - an :class:`ActObserver` plus a uniform or log quantizer. The
  observer records bit-independent statistics (running min/max, optional per-channel
  min/max, a random subsample of values) once; any bit-width is calibrated from them later.

Every quantizer has ``bits`` (``None`` = pass-through float) and ``set_bits``.
"""
from __future__ import annotations

import torch
from torch import nn

from .errors import NotCalibratedError
from .ranges import QParams, check_bits, estimate_range, fake_quantize, log_quantize, log_scale_search, qparams_from_range

__all__ = ["UniformQuantizer", "LogQuantizer", "WeightQuantizer", "ActObserver", "ActQuantizer"]


def _broadcast(t: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """Reshape a per-channel vector ``t`` so it broadcasts along ``axis`` of ``x``."""
    if axis is None or t.dim() == 0:
        return t
    shape = [1] * x.dim()
    shape[axis] = -1
    return t.reshape(shape)


def _replace(current: torch.Tensor, value: torch.Tensor, learnable: bool) -> torch.Tensor:
    """``value`` as the new ``scale``/``zero_point``: copied into ``current`` when that is a
    learnable parameter of the same shape, a new parameter when learnable, else a plain tensor."""
    value = value.detach()
    if learnable and current.shape == value.shape:
        current.copy_(value)
        return current
    return nn.Parameter(value.clone()) if learnable else value.clone()


class UniformQuantizer(nn.Module):
    """Uniform fake quantizer ``(clamp(round(x/s)+z, qmin, qmax) - z) * s``.

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
        return fake_quantize(x.float(), scale, zp, self.qmin, self.qmax).to(x.dtype)

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
    ) -> None:
        super().__init__()
        self.method, self.per_channel, self.symmetric = method, per_channel, symmetric
        self.percentile, self.grid, self.gptq_damp = percentile, grid, gptq_damp
        self.bits: int | None = None
        self.quantizer = UniformQuantizer(channel_axis=0 if per_channel else None)
        #: ``X^T X / n`` of the layer's calibration inputs; when set, weights are rounded by GPTQ
        self.register_buffer("hessian", None, persistent=False)
        self._cache: dict[int, QParams] = {}
        self._rounded: dict[int, torch.Tensor] = {}
        self._cache_key: tuple[int, int] | None = None
        self._installed: tuple[int, int, int] | None = None

    def set_bits(self, bits: int | None) -> None:
        self.bits = check_bits(bits, "weight bits")

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
        self._rounded = {}

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
                                                with_latent=True)
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
        if self.hessian is not None and not learned:
            return self.rounded(weight, self.bits) + (weight - weight.detach())  # exact values, straight-through
        return self.quantizer(weight)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, method={self.method}, per_channel={self.per_channel}, symmetric={self.symmetric}"


class ActObserver(nn.Module):
    """Bit-independent activation statistics gathered during calibration.

    Records the running min/max over all values, optionally per-channel (last dim) min/max,
    and a uniform random subsample of at most ``max_samples`` values (deterministic given
    ``seed``) for percentile/MSE calibration. Statistics are non-persistent buffers: they
    move with ``.to(device)`` but stay out of ``state_dict``.
    """

    def __init__(self, max_samples: int = 16384, seed: int = 0, channel_stats: bool = False) -> None:
        super().__init__()
        self.max_samples, self.seed, self.channel_stats = max_samples, seed, channel_stats
        self.active = False
        self._gen: torch.Generator | None = None
        self.register_buffer("min_val", torch.tensor(float("inf")), persistent=False)
        self.register_buffer("max_val", torch.tensor(float("-inf")), persistent=False)
        self.register_buffer("ch_min", torch.empty(0), persistent=False)
        self.register_buffer("ch_max", torch.empty(0), persistent=False)
        self.register_buffer("sample", torch.empty(0), persistent=False)
        #: channel (last-dim index) of each sampled value, with ``channel_stats``
        self.register_buffer("sample_channel", torch.empty(0, dtype=torch.long), persistent=False)
        self.n_seen = 0

    def reset(self) -> None:
        """Forget all statistics and restart the (seeded) subsampling stream."""
        dev = self.min_val.device
        self.min_val = torch.tensor(float("inf"), device=dev)
        self.max_val = torch.tensor(float("-inf"), device=dev)
        self.ch_min = torch.empty(0, device=dev)
        self.ch_max = torch.empty(0, device=dev)
        self.sample = torch.empty(0, device=dev)
        self.sample_channel = torch.empty(0, dtype=torch.long, device=dev)
        self.n_seen = 0
        self._gen = torch.Generator().manual_seed(self.seed)

    @property
    def calibrated(self) -> bool:
        return self.n_seen > 0

    def _randint(self, high: int, size: int, device: torch.device) -> torch.Tensor:
        if self._gen is None:
            self._gen = torch.Generator().manual_seed(self.seed)
        return torch.randint(high, (size,), generator=self._gen).to(device)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        x = x.detach().float()
        flat = x.reshape(-1)
        m = flat.numel()
        if m == 0:
            return
        if self.min_val.device != x.device:  # statistics live where the activations are
            self.to(x.device)
        self.min_val = torch.minimum(self.min_val, flat.min())
        self.max_val = torch.maximum(self.max_val, flat.max())
        if self.channel_stats:
            rows = x.reshape(-1, x.shape[-1])
            cmin, cmax = rows.amin(dim=0), rows.amax(dim=0)
            if self.ch_min.numel() == 0:
                self.ch_min, self.ch_max = cmin, cmax
            else:
                self.ch_min, self.ch_max = torch.minimum(self.ch_min, cmin), torch.maximum(self.ch_max, cmax)
        cap, seen = self.max_samples, self.n_seen
        channels = x.shape[-1] if self.channel_stats else 0
        if seen + m <= cap:
            keep_old, take_new = None, None
        else:
            # Keep the sample uniform over everything seen: old and new values in proportion.
            k_new = min(m, max(1, round(cap * m / (seen + m))))
            k_old = min(cap - k_new, self.sample.numel())
            keep_old = self._randint(self.sample.numel(), k_old, x.device) if k_old > 0 else None
            take_new = self._randint(m, k_new, x.device)
        self.sample = self._merge(self.sample, flat, keep_old, take_new)
        if channels:
            chan = torch.arange(m, device=x.device) % channels
            self.sample_channel = self._merge(self.sample_channel, chan, keep_old, take_new)
        self.n_seen = seen + m

    @staticmethod
    def _merge(old: torch.Tensor, new: torch.Tensor, keep_old: torch.Tensor | None,
               take_new: torch.Tensor | None) -> torch.Tensor:
        """``old`` + ``new`` when everything fits, else the chosen entries of each."""
        if take_new is None:
            return torch.cat([old, new])
        return torch.cat([old[keep_old] if keep_old is not None else old[:0], new[take_new]])

    @torch.no_grad()
    def fold(self, mid: torch.Tensor, r: torch.Tensor) -> None:
        """Re-express the statistics in the coordinates ``(x - mid) / r`` of a LayerNorm fold
        (per channel), so the folded per-tensor quantizer calibrates from them like any other."""
        if not self.channel_stats or self.ch_min.numel() != mid.numel():
            raise ValueError("ActObserver.fold needs per-channel statistics of as many channels as the transform")
        mid, r = mid.to(self.ch_min), r.to(self.ch_min)
        self.ch_min, self.ch_max = (self.ch_min - mid) / r, (self.ch_max - mid) / r
        self.min_val, self.max_val = self.ch_min.min(), self.ch_max.max()
        if self.sample.numel():
            self.sample = (self.sample - mid[self.sample_channel]) / r[self.sample_channel]

    def finish(self) -> None:
        """Stop observing and drop the random generator (keeps the module deep-copyable)."""
        self.active = False
        self._gen = None


class ActQuantizer(nn.Module):
    """Activation fake quantizer: an :class:`ActObserver` plus a uniform or log quantizer.

    ``kind``: ``"uniform"`` (per-tensor, range from ``method``), ``"log2"``/``"logsqrt2"``
    (scale = observed maximum for ``"minmax"``, else the MSE-best phase of the level grid). ``fixed_range`` (set by LayerNorm folding) overrides the
    calibrated range of a uniform quantizer. Parameters are computed lazily for the current
    bit-width, so ``set_bits`` after ``calibrate`` needs no new data.
    """

    def __init__(
        self,
        kind: str = "uniform",
        method: str = "mse",
        symmetric: bool = False,
        percentile: float = 99.99,
        grid: int = 40,
        max_samples: int = 16384,
        seed: int = 0,
        channel_stats: bool = False,
        name: str = "",
    ) -> None:
        super().__init__()
        if kind not in ("uniform", "log2", "logsqrt2"):
            raise ValueError(f"ActQuantizer kind must be 'uniform', 'log2' or 'logsqrt2', got {kind!r}")
        self.kind, self.method, self.symmetric = kind, method, symmetric
        self.percentile, self.grid, self.name = percentile, grid, name
        self.bits: int | None = None
        self.observer = ActObserver(max_samples, seed, channel_stats)
        self.quantizer: nn.Module = UniformQuantizer() if kind == "uniform" else LogQuantizer(kind)
        self.fixed_range: tuple[float, float] | None = None
        self._installed_bits: int | None = None

    def set_bits(self, bits: int | None) -> None:
        self.bits = check_bits(bits, "activation bits")
        self._installed_bits = None

    def invalidate(self) -> None:
        """Mark parameters stale (after new statistics or a new fixed range)."""
        self._installed_bits = None

    def set_fixed_range(self, lo: float, hi: float) -> None:
        """Use ``[lo, hi]`` instead of the calibrated range (LayerNorm-folded inputs)."""
        self.fixed_range = (float(lo), float(hi))
        self.invalidate()

    def _install(self, bits: int, device: torch.device) -> None:
        obs = self.observer
        if self.kind != "uniform":
            if not obs.calibrated:
                raise NotCalibratedError(self._uncalibrated_message())
            max_val = obs.max_val.clamp(min=1e-8)
            if self.method != "minmax" and obs.sample.numel():
                max_val = log_scale_search(obs.sample, max_val, bits, self.kind)
            self.quantizer.bits = bits
            self.quantizer.scale = max_val.to(device)
            return
        if self.fixed_range is not None:
            lo, hi = (torch.tensor(v, device=device) for v in self.fixed_range)
        elif not obs.calibrated:
            raise NotCalibratedError(self._uncalibrated_message())
        elif self.method == "minmax":
            lo, hi = obs.min_val, obs.max_val
        else:
            lo, hi = estimate_range(obs.sample[None, :], self.method, bits, self.symmetric, self.percentile, self.grid)
            lo, hi = lo[0], hi[0]
        self.quantizer.set_qparams(qparams_from_range(lo.to(device), hi.to(device), bits, self.symmetric))

    def materialize(self) -> None:
        """Compute the quantization parameters for the current bits now instead of at the next
        forward, so that their shapes and values are fixed before an optimiser is built or a
        ``state_dict`` is loaded. No-op when the quantizer is off (``bits is None``)."""
        if self.bits is not None and self._installed_bits != self.bits:
            self._install(self.bits, self.observer.min_val.device)
            self._installed_bits = self.bits

    def make_learnable(self, offset: bool = False) -> nn.Parameter:
        """Install the calibrated parameters at the current bits and make the scale an LSQ
        parameter (QAT); with ``offset`` the zero point becomes a learned LSQ+ offset too
        (``self.quantizer.zero_point``). Only for uniform quantizers; ``set_bits`` re-derives
        both from the statistics. Returns the scale parameter."""
        if self.bits is None or self.kind != "uniform":
            raise ValueError(f"make_learnable needs a uniform quantizer with bits set; have kind={self.kind}, bits={self.bits}")
        self.materialize()
        if offset:
            self.quantizer.make_offset_learnable()
        return self.quantizer.make_learnable()

    def _uncalibrated_message(self) -> str:
        where = f" at '{self.name}'" if self.name else ""
        return (
            f"activation quantizer{where} has no calibration statistics; run "
            f"quant.calibrate(qmodel, calib_data) (or use quant.quantize) before setting activation bits"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer.active:
            self.observer.update(x)
        if self.bits is None:
            return x
        if self._installed_bits != self.bits:
            self._install(self.bits, x.device)
            self._installed_bits = self.bits
        return self.quantizer(x)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, bits={self.bits}, method={self.method}, fixed_range={self.fixed_range}"
