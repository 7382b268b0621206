"""Shared pieces of the application tests: a tiny timm ViT spec and a synthetic ImageFolder."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

TINY = {"img_size": 16, "patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 2, "num_classes": 3}
ARCH = "vit_tiny_patch16_224"
MODEL_ARGS = ["--model", ARCH, "--model-kwargs", json.dumps(TINY)]


def write_image_folder(root: Path, per_class: int = 8, size: int = 20, seed: int = 0, prefix: str = "class") -> Path:
    """3 classes x ``per_class`` RGB PNGs whose brightness depends on the class, so a model can tell them apart."""
    rng = np.random.default_rng(seed)
    for c in range(3):
        (root / f"{prefix}{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = (rng.random((size, size, 3)) * 80 + c * 60).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"{prefix}{c}" / f"{i}.png")
    return root
