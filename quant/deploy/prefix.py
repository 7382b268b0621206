"""Prefix tokens are constants of the model until attention mixes them: export torch's values.

A ViT's prefix tokens (timm's ``num_prefix_tokens``: the class token, DeiT's distillation
token, register tokens) enter the first block as ``cls_token (+ pos_embed[:, :P])``, the same
for every image. Until the first attention mixes them with the patches -- through the block's
LayerNorm, the qkv input quantizer, the qkv product and the quantizers on ``q``, ``k`` and
``v`` -- everything computed from them is a constant too. A runtime recomputes those constants
with its own kernels, and a constant within float rounding of a quantizer's level boundary is
then rounded one way by torch and perhaps the other way by the runtime -- in every image, not
in a rare one (the shipped ViT at W4A4: its class token's first 4-bit code is 1.8e-7 of a step
from a boundary; onnxruntime's LayerNorm, like torch's own on a CPU without AVX-512, rounds it
the other way and moves every image's logits by about 10%).

So the exporter asks torch for those quantizer outputs (:func:`prefix_constants`) and writes
them into the graph as constants: every runtime, on any CPU, then computes the prefix rows
exactly as the fake-quant model did where it was exported. Only quantized outputs are folded
(a float value carries float noise only, which no later rounding turns into a step unless it
reaches a quantizer, and those are the ones folded).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..device import model_device
from ..modules import QuantAttention

__all__ = ["PrefixConstant", "TOKEN_AXES", "prefix_constants"]

#: The token axis of the input of each first-block quantizer that sees one token per row, as
#: :class:`~quant.modules.QuantAttention` lays them out: x (B, N, C), q * scale (B, H, N, D),
#: k^T (B, H, D, N), v (B, H, N, D).
TOKEN_AXES = {"attn.qkv.act_quant": 1, "attn.matmul_qk.a_quant": 2, "attn.matmul_qk.b_quant": 3,
              "attn.matmul_av.b_quant": 2}


class PrefixConstant(NamedTuple):
    """The first ``value.shape[axis]`` positions along ``axis`` of a quantizer's output; ``value``
    has batch size 1 (float32, on the CPU)."""

    axis: int
    value: torch.Tensor


def _first_block(qmodel: nn.Module) -> nn.Module | None:
    blocks = getattr(qmodel, "blocks", None)
    if not isinstance(blocks, (nn.Sequential, nn.ModuleList)) or len(blocks) == 0:
        return None
    block = blocks[0]
    return block if isinstance(getattr(block, "attn", None), QuantAttention) else None


def prefix_constants(qmodel: nn.Module, active: set[str], input_shape: tuple[int, ...],
                     seed: int = 0) -> dict[str, PrefixConstant]:
    """Torch's outputs at the prefix-token positions of the first block's per-token quantizers,
    by quantizer module name (``"blocks.0.attn.qkv.act_quant"``); only those named in ``active``
    (the quantized ones). Empty for a model without prefix tokens or without a timm-style
    ``blocks[0].attn``.

    Measured, not assumed: the model runs on two different random images and a quantizer is
    folded only where the two agree bit for bit at the prefix positions (a model whose prefix
    rows depend on the image keeps computing them)."""
    prefix = getattr(qmodel, "num_prefix_tokens", 0)
    block = _first_block(qmodel)
    if not isinstance(prefix, int) or prefix <= 0 or block is None:
        return {}
    names = {f"blocks.0.{k}": axis for k, axis in TOKEN_AXES.items() if f"blocks.0.{k}" in active}
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module, args, out):
            seen[name] = out.detach().float().cpu().clone()
        return hook

    handles = [qmodel.get_submodule(n).register_forward_hook(keep(n)) for n in names]
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(2, *input_shape, generator=generator)
    was_training = qmodel.training
    try:
        qmodel.eval()
        with torch.no_grad():
            qmodel(images.to(model_device(qmodel)))
    finally:
        qmodel.train(was_training)
        for h in handles:
            h.remove()
    found: dict[str, PrefixConstant] = {}
    for name, axis in names.items():
        out = seen.get(name)
        if out is None or out.dim() <= axis or out.shape[axis] <= prefix:
            continue
        rows = out.narrow(axis, 0, prefix)
        if torch.equal(rows[0], rows[1]):
            found[name] = PrefixConstant(axis, rows[:1].contiguous())
    return found
