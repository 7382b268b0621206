"""The three demo models shipped with mixqvit, and loading their trained weights.

All three are stock ``timm`` classes (so everything that understands timm vision transformers
understands them) sized for 28x28 grayscale Fashion-MNIST and for training on a laptop CPU:

- ``fmnist_vit``: ``VisionTransformer``, patch 7 -> 4x4 = 16 tokens + class token, width 128,
  depth 6. Patch 7 rather than 4: in equal CPU time it learned far faster (pilot, 15k images,
  ~2 CPU-minutes: 84.4% test accuracy for patch 7 vs 72.9% for patch 4 at width 96), so within a
  30-minute budget it ends more accurate.
- ``fmnist_deit``: ``VisionTransformerDistilled``, the same backbone plus a distillation token and
  a second head ``head_dist``; trained with DeiT hard distillation from ``fmnist_swin``
  (see ``mixqvit.train``). In eval mode its output is the mean of both heads' logits.
- ``fmnist_swin``: ``SwinTransformer``, patch 4 -> 7x7 tokens, padded by timm to 8x8 and split
  into 2x2 windows of 4x4 (shifted by 2 in every second block, with Swin's attention mask), then
  patch merging to 4x4 (width 128) where one window covers the map. Patch 2 (14x14 tokens,
  windows of 7) learned more slowly per CPU-second (pilot: 73.5% vs 81.0% test accuracy after
  15k images x 2 epochs, at 125 vs 70 CPU-seconds).

Trained weights live in ``mixqvit/assets/models/<name>.safetensors`` with ``<name>.json`` beside
them (architecture, training recipe, seed, epochs, train time, measured test accuracy).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

__all__ = [
    "ASSETS_DIR",
    "MODEL_CONFIGS",
    "ModelConfig",
    "available_models",
    "build_model",
    "count_parameters",
    "load_shipped",
    "shipped_paths",
]

ASSETS_DIR = Path(__file__).resolve().parent / "assets" / "models"


@dataclass(frozen=True)
class ModelConfig:
    """One demo architecture: the timm class and the keyword arguments it is built with."""

    name: str
    family: str  # "vit" | "deit" | "swin"
    kwargs: dict[str, Any] = field(default_factory=dict)
    input_size: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10

    @property
    def timm_class(self) -> str:
        return {"vit": "VisionTransformer", "deit": "VisionTransformerDistilled", "swin": "SwinTransformer"}[
            self.family
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description, recorded next to the weights."""
        return {
            "name": self.name,
            "family": self.family,
            "timm_class": self.timm_class,
            "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in self.kwargs.items()},
            "input_size": list(self.input_size),
            "num_classes": self.num_classes,
        }


_VIT_BACKBONE = dict(
    img_size=28,
    patch_size=7,
    in_chans=1,
    num_classes=10,
    embed_dim=128,
    depth=6,
    num_heads=4,
    mlp_ratio=2.0,
    qkv_bias=True,
    drop_rate=0.0,
    drop_path_rate=0.0,
)

MODEL_CONFIGS: dict[str, ModelConfig] = {
    "fmnist_vit": ModelConfig("fmnist_vit", "vit", dict(_VIT_BACKBONE)),
    "fmnist_deit": ModelConfig("fmnist_deit", "deit", dict(_VIT_BACKBONE)),
    "fmnist_swin": ModelConfig(
        "fmnist_swin",
        "swin",
        dict(
            img_size=28,
            patch_size=4,
            in_chans=1,
            num_classes=10,
            embed_dim=64,
            depths=(2, 4),
            num_heads=(2, 4),
            window_size=4,
            mlp_ratio=2.0,
            qkv_bias=True,
            drop_rate=0.0,
            drop_path_rate=0.0,
        ),
    ),
}


def available_models() -> list[str]:
    """Names accepted by :func:`build_model` and :func:`load_shipped`."""
    return list(MODEL_CONFIGS)


def _config(name: str) -> ModelConfig:
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model {name!r}; expected one of {available_models()}")
    return MODEL_CONFIGS[name]


def build_model(name: str) -> nn.Module:
    """A freshly initialised demo model (weights drawn from torch's global RNG: seed it first)."""
    cfg = _config(name)
    if cfg.family == "vit":
        from timm.models.vision_transformer import VisionTransformer

        return VisionTransformer(**cfg.kwargs)
    if cfg.family == "deit":
        from timm.models.deit import VisionTransformerDistilled

        return VisionTransformerDistilled(**cfg.kwargs)
    from timm.models.swin_transformer import SwinTransformer

    return SwinTransformer(**cfg.kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (buffers such as Swin's relative-position index excluded)."""
    return sum(p.numel() for p in model.parameters())


def shipped_paths(name: str, directory: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(weights, info) paths of a trained model: ``<dir>/<name>.safetensors`` and ``<dir>/<name>.json``."""
    _config(name)
    d = Path(directory) if directory is not None else ASSETS_DIR
    return d / f"{name}.safetensors", d / f"{name}.json"


def load_shipped(name: str, directory: str | os.PathLike | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Load a trained demo model in eval mode and its info dict.

    ``directory`` defaults to the weights shipped in the package. The info holds, among others,
    ``test_accuracy`` (10,000 test images) and ``test_accuracy_first500`` (first 500 test images,
    for quick checks), both measured right after training. Raises ``FileNotFoundError`` with the
    command that recreates missing files, and ``ValueError`` if the files were made for a
    different architecture than the current code builds.
    """
    from safetensors.torch import load_file

    weights, info_path = shipped_paths(name, directory)
    for p in (weights, info_path):
        if not p.is_file():
            raise FileNotFoundError(
                f"trained model file {p} not found; train it with `mixqvit train {name} --out-dir {p.parent}`"
            )
    info = json.loads(info_path.read_text())
    expected = _config(name).to_dict()
    if info.get("model") != expected:
        raise ValueError(
            f"{info_path} describes architecture {info.get('model')} but the code builds {expected}; "
            f"retrain with `mixqvit train {name} --out-dir {info_path.parent} --force`"
        )
    model = build_model(name)
    model.load_state_dict(load_file(str(weights)), strict=True)
    model.eval()
    return model, info
