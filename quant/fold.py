"""Reparameterisation of post-LayerNorm channel-wise quantization (RepQ-ViT style).

A per-channel quantizer on the LayerNorm output ``y`` with channel ranges
``[mid_c - w_c/2, mid_c + w_c/2]`` equals a *per-tensor* quantizer with range
``[-w_ref/2, w_ref/2]`` applied to ``y'_c = (y_c - mid_c) / r_c`` with ``r_c = w_c / w_ref``.
That transform is absorbed exactly (in real arithmetic) into the model:

* LayerNorm: ``gamma'_c = gamma_c / r_c``, ``beta'_c = (beta_c - mid_c) / r_c``;
* each following linear layer: ``W'[:, c] = W[:, c] * r_c``, ``b' = b + W @ mid``,

since ``W y + b = (W diag(r)) y' + (b + W mid)``. Inference then needs only the cheap
per-tensor quantizer. Computed in float64 and cast back, so the float model changes by
rounding only (the tests check 1e-5 relative error of the logits).

The clipped mode caps every channel width ``w_c`` at the ``p``-th percentile of the
distribution of widths (outlier channels): their extreme activations are clipped, and their
folded weight columns grow by at most ``cap / w_ref`` instead of ``max_c w_c / w_ref``, which
keeps the following layer's per-output-channel weight ranges from being dominated by a
few columns.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

__all__ = ["ChannelTransform", "channel_transform", "fold_layernorm"]

#: Smallest channel width relative to the reference width; keeps r_c > 0 for dead channels.
MIN_RELATIVE_WIDTH = 1e-4


class ChannelTransform(NamedTuple):
    """Per-channel centre ``mid``, ratio ``r`` to the reference width, and that width."""

    mid: torch.Tensor
    r: torch.Tensor
    ref_width: float


def channel_transform(lo: torch.Tensor, hi: torch.Tensor, clip_percentile: float | None) -> ChannelTransform:
    """Per-channel centre and width ratio from calibrated per-channel ranges ``[lo, hi]``.

    ``clip_percentile`` (0-100, ``None`` or 100 = no clipping) caps each width at that
    percentile of all channel widths.
    """
    if lo.shape != hi.shape or lo.dim() != 1 or lo.numel() == 0:
        raise ValueError(f"channel_transform expects two equal 1-D non-empty ranges, got {tuple(lo.shape)} and {tuple(hi.shape)}")
    lo64, hi64 = lo.double(), hi.double()
    width = (hi64 - lo64).clamp(min=0.0)
    if clip_percentile is not None and clip_percentile < 100.0:
        cap = torch.quantile(width, clip_percentile / 100.0)
        width = torch.minimum(width, cap)
    ref = float(width.mean())
    if not ref > 0.0:
        ref = 1.0
    width = width.clamp(min=ref * MIN_RELATIVE_WIDTH)
    return ChannelTransform((lo64 + hi64) / 2.0, width / ref, ref)


@torch.no_grad()
def fold_layernorm(norm: nn.LayerNorm, consumers: list[nn.Module], transform: ChannelTransform) -> None:
    """Fold ``y' = (y - mid) / r`` into ``norm`` and its inverse into every consumer (in place).

    Consumers need ``weight`` ``(out, C)``; a zero ``bias`` is created when absent (Swin's
    patch-merging reduction has none).
    """
    mid, r, _ = transform
    if norm.weight is None:
        raise ValueError("fold_layernorm needs a LayerNorm with elementwise_affine=True")
    if norm.bias is None:
        norm.bias = nn.Parameter(torch.zeros_like(norm.weight))
    dev = norm.weight.device
    mid, r = mid.to(dev), r.to(dev)
    gamma, beta = norm.weight.double(), norm.bias.double()
    norm.weight.copy_((gamma / r).to(norm.weight.dtype))
    norm.bias.copy_(((beta - mid) / r).to(norm.bias.dtype))
    for layer in consumers:
        if layer.bias is None:
            layer.bias = nn.Parameter(torch.zeros(layer.weight.shape[0], device=dev, dtype=layer.weight.dtype))
        bias = layer.bias
        w = layer.weight.double()
        bias.copy_((bias.double() + w @ mid).to(bias.dtype))
        layer.weight.copy_((w * r[None, :]).to(layer.weight.dtype))
