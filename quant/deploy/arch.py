"""What a packed file records to rebuild the float architecture: a timm name or class, and kwargs.

``{"arch": "VisionTransformer", "model_kwargs": {"embed_dim": 128, ...}}`` rebuilds with the
class itself (the three supported timm classes, as the shipped demo models are built);
``{"arch": "deit_tiny_patch16_224", "model_kwargs": {...}}`` with
``timm.create_model(arch, pretrained=False, **model_kwargs)``. Nothing else is imported, so a
file cannot make the loader run arbitrary code. The weights are random until the file's tensors
replace every one of them (the initialisation is seeded and leaves the caller's RNG untouched).
"""
from __future__ import annotations

import importlib
import json
from typing import Any, Mapping

import torch
from torch import nn

from .errors import ExportError, PackedFormatError

__all__ = ["TIMM_CLASSES", "model_spec", "build_model"]

#: Class name -> module of the timm classes the quantizer supports.
TIMM_CLASSES = {
    "VisionTransformer": "timm.models.vision_transformer",
    "VisionTransformerDistilled": "timm.models.deit",
    "SwinTransformer": "timm.models.swin_transformer",
}


def model_spec(arch: str, model_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON-ready description ``{"arch", "model_kwargs"}``; tuples become lists."""
    if not isinstance(arch, str) or not arch:
        raise ExportError(f"arch must be a timm model name or one of {sorted(TIMM_CLASSES)}, got {arch!r}")
    kwargs = dict(model_kwargs or {})
    try:
        kwargs = json.loads(json.dumps(kwargs))
    except (TypeError, ValueError) as exc:
        raise ExportError(f"model_kwargs must be JSON-serialisable (numbers, strings, lists): {exc}") from None
    return {"arch": arch, "model_kwargs": kwargs}


def build_model(spec: Mapping[str, Any]) -> nn.Module:
    """A freshly built float model of the architecture ``spec`` describes, in eval mode."""
    arch, kwargs = spec.get("arch"), spec.get("model_kwargs", {})
    if not isinstance(arch, str) or not isinstance(kwargs, dict):
        raise PackedFormatError(f"malformed model description {dict(spec)!r}; expected {{'arch': str, 'model_kwargs': dict}}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            if arch in TIMM_CLASSES:
                cls = getattr(importlib.import_module(TIMM_CLASSES[arch]), arch)
                return cls(**kwargs).eval()
            import timm

            if not timm.is_model(arch):
                raise ExportError(f"arch {arch!r} is neither a timm model name nor one of {sorted(TIMM_CLASSES)}")
            return timm.create_model(arch, pretrained=False, **kwargs).eval()
        except TypeError as exc:
            raise ExportError(f"cannot build {arch!r} with model_kwargs {kwargs}: {exc}") from None
