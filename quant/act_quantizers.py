"""Activation quantizers: an observer of calibration statistics plus a uniform or log quantizer.

* :class:`ActObserver` records bit-independent statistics (running min/max, optional
  per-channel min/max, a random subsample of values) once;
* :class:`ActQuantizer` calibrates any bit-width from them later, so profiling and plan
  switching never need the calibration data again.

Every quantizer has ``bits`` (``None`` = pass-through float) and ``set_bits``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .errors import NotCalibratedError
from .quantizers import LogQuantizer, UniformQuantizer
from .ranges import check_bits, estimate_range, log_base_search, log_scale_search, qparams_from_range

__all__ = ["ActObserver", "ActQuantizer"]


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
        #: bumped whenever the statistics change, so parameters derived from them know they are stale
        self.version = 0

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
        self.version += 1
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
        self.version += 1

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
        self.version += 1

    def finish(self) -> None:
        """Stop observing and drop the random generator (keeps the module deep-copyable)."""
        self.active = False
        self._gen = None


class ActQuantizer(nn.Module):
    """Activation fake quantizer: an :class:`ActObserver` plus a uniform or log quantizer.

    ``kind``: ``"uniform"`` (per-tensor, range from ``method``), ``"log2"``/``"logsqrt2"``
    (scale = observed maximum for ``"minmax"``, else the MSE-best phase of the level grid). ``fixed_range`` (set by LayerNorm folding) overrides the
    calibrated range of a uniform quantizer. Parameters are computed lazily for the current
    bit-width, so ``set_bits`` after ``calibrate`` needs no new data, and kept per bit-width
    until the statistics or the fixed range change: switching plans (``PlanSwitcher``) repeats
    no range search.
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
        if kind not in ("uniform", "log", "log2", "logsqrt2"):
            raise ValueError(f"ActQuantizer kind must be 'uniform', 'log', 'log2' or 'logsqrt2', got {kind!r}")
        self.kind, self.method, self.symmetric = kind, method, symmetric
        self.percentile, self.grid, self.name = percentile, grid, name
        self.bits: int | None = None
        self.observer = ActObserver(max_samples, seed, channel_stats)
        self.quantizer: nn.Module = UniformQuantizer() if kind == "uniform" else LogQuantizer("log2" if kind == "log" else kind)
        self.fixed_range: tuple[float, float] | None = None
        self._installed_bits: int | None = None
        #: bits -> the parameters ``_derive`` computed, valid while ``_derived_from`` holds
        self._derived: dict[int, Any] = {}
        self._derived_from: tuple | None = None

    def set_bits(self, bits: int | None) -> None:
        self.bits = check_bits(bits, "activation bits")
        self._installed_bits = None

    def invalidate(self) -> None:
        """Mark parameters stale (after new statistics or a new fixed range)."""
        self._installed_bits = None
        self._derived = {}

    def set_fixed_range(self, lo: float, hi: float) -> None:
        """Use ``[lo, hi]`` instead of the calibrated range (LayerNorm-folded inputs)."""
        self.fixed_range = (float(lo), float(hi))
        self.invalidate()

    def _install(self, bits: int, device: torch.device) -> None:
        source = (self.observer.version, self.fixed_range, device)
        if source != self._derived_from:
            self._derived, self._derived_from = {}, source
        if bits not in self._derived:
            self._derived[bits] = self._derive(bits, device)
        derived = self._derived[bits]
        if self.kind == "uniform":
            self.quantizer.set_qparams(derived)  # copies
        else:
            self.quantizer.base, scale = derived
            self.quantizer.bits, self.quantizer.scale = bits, scale.clone()

    def _derive(self, bits: int, device: torch.device) -> Any:
        """From the statistics at ``bits``: the uniform ``QParams``, or the log ``(base, scale)``."""
        obs = self.observer
        if self.kind != "uniform":
            if not obs.calibrated:
                raise NotCalibratedError(self._uncalibrated_message())
            max_val, base = obs.max_val.clamp(min=1e-8), self.quantizer.base
            if self.kind == "log" and obs.sample.numel():  # base and scale searched per bit-width
                base, max_val = log_base_search(obs.sample, max_val, bits)
            elif self.method != "minmax" and obs.sample.numel():
                max_val = log_scale_search(obs.sample, max_val, bits, self.kind)[0]
            return base, max_val.to(device)
        if self.fixed_range is not None:
            lo, hi = (torch.tensor(v, device=device) for v in self.fixed_range)
        elif not obs.calibrated:
            raise NotCalibratedError(self._uncalibrated_message())
        elif self.method == "minmax":
            lo, hi = obs.min_val, obs.max_val
        else:
            lo, hi = estimate_range(obs.sample[None, :], self.method, bits, self.symmetric, self.percentile, self.grid)
            lo, hi = lo[0], hi[0]
        return qparams_from_range(lo.to(device), hi.to(device), bits, self.symmetric)

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
