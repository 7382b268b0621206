"""Tiny random-init timm models (one of each supported family) and image data for quant tests."""
from __future__ import annotations

import torch
from timm.models.deit import VisionTransformerDistilled
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer

TINY_BUILDERS = {
    "vit": lambda: VisionTransformer(img_size=32, patch_size=8, in_chans=1, num_classes=10,
                                     embed_dim=32, depth=2, num_heads=2),
    "deit": lambda: VisionTransformerDistilled(img_size=32, patch_size=8, in_chans=1, num_classes=10,
                                               embed_dim=32, depth=2, num_heads=2),
    "swin": lambda: SwinTransformer(img_size=32, patch_size=2, in_chans=1, num_classes=10, window_size=4,
                                    embed_dim=16, depths=(1, 1), num_heads=(1, 2)),
}


def build_tiny(kind: str, seed: int = 0) -> torch.nn.Module:
    """A tiny random-init model of family ``kind`` in eval mode (deterministic in ``seed``)."""
    torch.manual_seed(seed)
    return TINY_BUILDERS[kind]().eval()


def make_images(n: int = 32, seed: int = 1, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, size, size, generator=g)
