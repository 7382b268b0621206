"""Tiny random-init timm models and data shared by the profiling tests (built in milliseconds)."""
from __future__ import annotations

import torch
from timm.models.deit import VisionTransformerDistilled
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer

torch.set_num_threads(1)


def tiny_vit(seed: int = 0, **kw) -> VisionTransformer:
    torch.manual_seed(seed)
    args = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10, in_chans=1)
    return VisionTransformer(**{**args, **kw}).eval()


def tiny_deit(seed: int = 0) -> VisionTransformerDistilled:
    torch.manual_seed(seed)
    return VisionTransformerDistilled(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                                      num_classes=10, in_chans=1).eval()


def tiny_swin(seed: int = 0, **kw) -> SwinTransformer:
    torch.manual_seed(seed)
    args = dict(img_size=32, patch_size=2, window_size=4, embed_dim=16, depths=(1, 1), num_heads=(2, 4),
                num_classes=10, in_chans=1)
    return SwinTransformer(**{**args, **kw}).eval()


BUILDERS = {"vit": tiny_vit, "deit": tiny_deit, "swin": tiny_swin}


def images(n: int = 8, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 32, 32, generator=g)


def labels(n: int = 8, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 10, (n,), generator=g)


