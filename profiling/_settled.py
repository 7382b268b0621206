"""Each (layer, bits) pair of the sensitivity sweep settled as `quant.quantize` settles a plan.

`quant.quantize` and `quant.PlanSwitcher.apply` end with `quant.settle`: the quantizers whose
inputs are the same for every image (a ViT's prefix tokens before the first attention, a Swin's
zero-padded window tokens) get their scale nudged off rounding halves. A sensitivity measured
without that pass measures a slightly different quantizer from the one that later applies the
plan (and one whose result depends on the CPU's float kernels in every image at once), so the
sweep runs the same pass for each pair: after a site takes the pair's bits, before its forward.

With a float baseline only the measured site's quantizers are on, so a pair needs the pass only
when one of that site's activation quantizers has constant inputs. With ``baseline_bits`` every
site is on: the baseline itself is settled once, and each pair is settled from it and put back.
A pair settles to the same scales on every calibration batch (the pass sees the model, never the
batch), so it is settled on the first and its scales are installed again on the others.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
import torch
from torch import nn

from quant.act_quantizers import ActQuantizer
from quant.settle import ConstantInputs

__all__ = ["PairSettler"]


class PairSettler:
    """Settles the sweep's pairs; :meth:`baseline` once, then :meth:`pair` around each pair and
    :meth:`restore_site` when a site goes back to the baseline."""

    def __init__(self, qmodel: nn.Module, image_shape: Sequence[int], baseline_float: bool) -> None:
        self.constants = ConstantInputs(qmodel, image_shape)
        self.baseline_float = baseline_float
        #: the settled baseline's scales of the quantizers with constant inputs (quantized baseline)
        self.base_scales: dict[ActQuantizer, torch.Tensor] = {}
        #: (site, w_bits, a_bits) -> the settled scales of every quantized quantizer with constant inputs
        self.pair_scales: dict[tuple[nn.Module, int | None, int | None], dict[ActQuantizer, torch.Tensor]] = {}

    def baseline(self) -> None:
        """Settle the baseline (every site at ``baseline_bits``); nothing is on with a float one."""
        if self.baseline_float or not self.constants.positions:
            return
        self.constants.settle()
        self.base_scales = {q: q.quantizer.scale.detach().clone() for q in self.constants.positions
                            if q.bits is not None}

    def needed(self, site: nn.Module) -> bool:
        if not self.constants.positions:
            return False
        return not self.baseline_float or any(m in self.constants.positions for m in site.modules())

    @contextmanager
    def pair(self, site: nn.Module) -> Iterator[None]:
        """While active, ``site`` at the pair's bits (set just before) with the constants settled
        from unnudged scales, as `quant.quantize` settles a plan; on exit the other quantizers get
        the settled baseline's scales back."""
        if not self.needed(site):
            yield
            return
        own = {m for m in site.modules() if isinstance(m, ActQuantizer)}
        key = (site, site.w_bits, site.a_bits)
        if key in self.pair_scales:
            self._install(self.pair_scales[key])
        else:
            for q in self.base_scales:
                q.set_bits(q.bits)  # re-installs the parameters from the statistics: the nudge is dropped
            self.constants.settle()
            self.pair_scales[key] = {q: q.quantizer.scale.detach().clone() for q in self.constants.positions
                                     if q.bits is not None}
        try:
            yield
        finally:
            self._restore([q for q in self.base_scales if q not in own])

    def restore_site(self, site: nn.Module) -> None:
        """After ``site`` went back to the baseline bits (which re-installs its unnudged
        parameters): its quantizers get the settled baseline's scales back."""
        self._restore([m for m in site.modules() if m in self.base_scales])

    def _restore(self, quantizers: list[ActQuantizer]) -> None:
        self._install({q: self.base_scales[q] for q in quantizers})

    @staticmethod
    def _install(scales: dict[ActQuantizer, torch.Tensor]) -> None:
        for q, scale in scales.items():
            q.materialize()  # installed now, so the next forward does not overwrite the copy
            q.quantizer.scale.copy_(scale)
