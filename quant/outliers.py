"""``plant_outliers``: give a model ImageNet-like outlier channels without changing its function.

Large pretrained ViTs have a few LayerNorm output channels whose ranges are tens of times
wider than the rest, which ruins per-tensor activation quantizers; small models trained on
Fashion-MNIST have none, so on them clipping and channel-wise ranges cannot show their worth.
This transformation plants such channels: for each LayerNorm that feeds only linear layers
(:func:`quant.find_post_ln_groups`), a few channels ``c`` get ``gamma_c, beta_c`` multiplied by
``factor`` and every consumer's input column ``W[:, c]`` divided by it. Since
``W[:, c] / s * (s * y_c) = W[:, c] * y_c``, the function is unchanged (up to float rounding;
computed in float64), only the LayerNorm's output distribution changes.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .discovery import find_post_ln_groups

__all__ = ["plant_outliers"]


@torch.no_grad()
def plant_outliers(model: nn.Module, channels: int = 4, factor: float = 20.0, seed: int = 0) -> nn.Module:
    """A copy of ``model`` in which ``channels`` random channels (seeded, per LayerNorm) of every
    post-LayerNorm group are ``factor`` times wider, with the inverse folded into the consumers.

    ``model`` is not modified. Raises ``ValueError`` for ``channels < 1``, more channels than a
    LayerNorm has, or ``factor <= 0``.
    """
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"plant_outliers: channels={channels!r}; expected an int >= 1")
    if not factor > 0:
        raise ValueError(f"plant_outliers: factor={factor!r}; expected a positive number")
    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    for group in find_post_ln_groups(out):
        norm = out.get_submodule(group.norm)
        if norm.weight is None:
            raise ValueError(f"plant_outliers: LayerNorm '{group.norm}' has no affine weight to scale")
        width = norm.weight.numel()
        if channels > width:
            raise ValueError(f"plant_outliers: channels={channels} but LayerNorm '{group.norm}' has only {width}")
        idx = torch.randperm(width, generator=gen)[:channels].to(norm.weight.device)
        scale = torch.ones(width, dtype=torch.float64, device=norm.weight.device)
        scale[idx] = float(factor)
        norm.weight.copy_((norm.weight.double() * scale).to(norm.weight.dtype))
        if norm.bias is not None:
            norm.bias.copy_((norm.bias.double() * scale).to(norm.bias.dtype))
        for name in group.consumers:
            layer = out.get_submodule(name)
            layer.weight.copy_((layer.weight.double() / scale[None, :]).to(layer.weight.dtype))
    return out
