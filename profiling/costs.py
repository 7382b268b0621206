"""Per-site parameter count and multiply-accumulates (MACs) per sample.

Why measured with a forward pass: token counts depend on the input size, patching, class /
distillation tokens and Swin's windows and patch merging. One forward of a single zero image with
shape hooks reads them exactly, for any input shape, instead of re-deriving each architecture's
formula.

* linear: ``params = in * out`` (the weight; biases stay in high precision and are not part of the
  bit allocation), ``macs = tokens * in * out`` where tokens = all leading dimensions.
* conv: ``params = weight.numel()``, ``macs = out_pixels * out_ch * (in_ch / groups) * kh * kw``.
* matmul (attention products, no weights, ``params = 0``): per attention call with input
  (G, N, C) -- G = windows for Swin, 1 for ViT -- and H heads of width d:
  q @ k^T costs ``G * H * N * N * d`` MACs and attn @ v the same.

Sizes and BOPs follow (`size_bits`, `bops`): ``size = params * w_bits`` bits and
``BOPs = macs * w_bits * a_bits`` (``a_bits * a_bits`` for a matmul, both operands activations).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn as nn

from ._sites import Site, discover_sites

__all__ = ["LayerCost", "layer_costs", "size_bits", "bops"]


@dataclass(frozen=True)
class LayerCost:
    """Cost of one site: weight count and MACs for one sample of the given input shape."""

    name: str
    kind: str
    params: int
    macs: int


def _attention_dims(attn: nn.Module) -> tuple[int, int]:
    """(heads, head_dim) of a timm attention module (Attention, WindowAttention, ...)."""
    heads = int(attn.num_heads)
    head_dim = getattr(attn, "head_dim", None)
    if head_dim is None:
        qkv = getattr(attn, "qkv", None)
        if qkv is None or not hasattr(qkv, "out_features"):
            raise ValueError(
                f"cannot read the head width of {type(attn).__name__}: it has no head_dim and no "
                "fused qkv Linear"
            )
        head_dim = qkv.out_features // 3 // heads
    return heads, int(head_dim)


def layer_costs(
    model: nn.Module,
    input_shape: Sequence[int],
    sites: Sequence[Any] | None = None,
) -> list[LayerCost]:
    """Parameter count and MACs per sample of every quantizable site of `model`.

    `input_shape` is one image's shape (C, H, W). Sites default to
    `quant.find_quantizable_layers(model)`; the returned list is in the same order.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) <= 0:
        raise ValueError(f"input_shape must be one image's (C, H, W), got {tuple(input_shape)}")
    found = discover_sites(model, sites)
    macs: dict[str, int] = {s.name: 0 for s in found}
    hooks = []
    by_attn: dict[int, list[Site]] = {}
    for s in found:
        if s.kind == "matmul":
            by_attn.setdefault(id(s.module), []).append(s)

    def linear_hook(site: Site):
        def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
            tokens = out.numel() // out.shape[-1]
            macs[site.name] += tokens * mod.in_features * mod.out_features
        return hook

    def conv_hook(site: Site):
        def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
            w = mod.weight
            macs[site.name] += out.numel() * (w.shape[1] * w[0, 0].numel())
        return hook

    def attn_hook(group: list[Site]):
        def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
            x = inp[0]
            windows, tokens = x.shape[0], x.shape[-2]
            heads, head_dim = _attention_dims(mod)
            for s in group:
                macs[s.name] += windows * heads * tokens * tokens * head_dim
        return hook

    try:
        for s in found:
            if s.kind == "linear":
                hooks.append(s.module.register_forward_hook(linear_hook(s)))
            elif s.kind == "conv":
                hooks.append(s.module.register_forward_hook(conv_hook(s)))
        for group in by_attn.values():
            hooks.append(group[0].module.register_forward_hook(attn_hook(group)))
        was_training = model.training
        model.eval()
        try:
            param = next(model.parameters(), None)
            dev = param.device if param is not None else torch.device("cpu")
            with torch.no_grad():
                model(torch.zeros((1, *shape), device=dev))
        finally:
            model.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    out = []
    for s in found:
        params = 0 if s.kind == "matmul" else int(s.module.weight.numel())
        out.append(LayerCost(s.name, s.kind, params, int(macs[s.name])))
    missing = [c.name for c in out if c.macs == 0]
    if missing:
        raise ValueError(
            f"sites {missing} were not executed by a forward pass of shape {shape}; they cannot be "
            "costed (is the input shape right for this model?)"
        )
    return out


def size_bits(cost: LayerCost, w_bits: int) -> int:
    """Storage of the site's weights at `w_bits` bits per weight, in bits (0 for matmul)."""
    return cost.params * int(w_bits)


def bops(cost: LayerCost, w_bits: int, a_bits: int) -> int:
    """Bit operations per sample: MACs x w_bits x a_bits (a_bits x a_bits for a matmul)."""
    if cost.kind == "matmul":
        return cost.macs * int(a_bits) * int(a_bits)
    return cost.macs * int(w_bits) * int(a_bits)
