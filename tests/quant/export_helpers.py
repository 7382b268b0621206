"""Shared pieces of the export tests: tiny models described the way a packed file records them."""
from __future__ import annotations

import torch

from quant.deploy.arch import build_model

#: (timm class, kwargs) of one tiny model per supported family (sizes as in quant_helpers).
TINY_SPECS = {
    "vit": ("VisionTransformer", dict(img_size=32, patch_size=8, in_chans=1, num_classes=10, embed_dim=32,
                                      depth=2, num_heads=2)),
    "deit": ("VisionTransformerDistilled", dict(img_size=32, patch_size=8, in_chans=1, num_classes=10,
                                                embed_dim=32, depth=2, num_heads=2)),
    "swin": ("SwinTransformer", dict(img_size=32, patch_size=2, in_chans=1, num_classes=10, window_size=4,
                                     embed_dim=16, depths=(1, 1), num_heads=(1, 2))),
}


def tiny(kind: str) -> torch.nn.Module:
    arch, kwargs = TINY_SPECS[kind]
    return build_model({"arch": arch, "model_kwargs": kwargs})


class MixedPlan:
    """A plan object (``w_bits``/``a_bits`` dicts, as ``allocator.Plan`` has) cycling through
    2..8 bits over the sites, so one model exercises every packing width."""

    def __init__(self, sites, widths=(2, 3, 4, 5, 6, 8)):
        self.w_bits, self.a_bits = {}, {}
        for i, s in enumerate(sites):
            w, a = widths[i % len(widths)], widths[(i + 2) % len(widths)]
            self.w_bits[s.name] = a if s.kind == "matmul" else w
            self.a_bits[s.name] = a


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / a.norm())
