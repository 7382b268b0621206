"""Loading models: the shipped demo models, checkpoints and timm names, and saving them back.

Models are named three ways (:func:`load_model`):

* a shipped demo model: ``fmnist_vit``, ``fmnist_deit``, ``fmnist_swin`` (Fashion-MNIST, 1x28x28);
* a checkpoint path: ``file.safetensors`` with ``file.json`` beside it (written by
  :func:`mixqvit.checkpoints.save_checkpoint` or by ``mixqvit train``), or a torch file (``.pt``/``.pth``/``.bin``)
  holding a whole module or ``{"arch", "model_kwargs", "state_dict"}``;
* any ``timm`` model name, with ``pretrained=True`` for its published weights (downloaded by
  timm; needs internet the first time, and fails at once without it unless they are cached),
  ``weights=FILE`` for a plain ``torch.save(model.state_dict())`` ``.pth``/``.pt`` or a bare
  ``.safetensors`` of that architecture, and ``model_kwargs`` for its constructor. With neither
  the weights are a seeded random initialisation (the same in every command): a warning line
  says so and ``info["weights"]`` records it (profiles carry it in their metadata).

The result is a :class:`LoadedModel`: the module in eval mode plus its data config, so
:mod:`mixqvit.datasets` can feed it images the way it was trained on them.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping

from . import models as shipped_models
from .checkpoints import CHECKPOINT_SUFFIXES, load_checkpoint, load_state, read_state_dict
from .errors import ModelLoadError
from .loaded import HUB_PREFIXES, RANDOM_INIT_SEED, LoadedModel, build_timm, fmnist_loaded, timm_loaded

__all__ = ["LoadedModel", "load_model"]


def _looks_like_path(spec: str) -> bool:
    if spec.startswith(HUB_PREFIXES):  # "hf-hub:timm/name": a timm name with a slash
        return False
    return os.sep in spec or spec.endswith(CHECKPOINT_SUFFIXES + (".json",)) or Path(spec).exists()


def load_model(spec: str, pretrained: bool = False, model_kwargs: Mapping[str, Any] | None = None,
               weights: str | os.PathLike | None = None) -> LoadedModel:
    """Load a model named by ``spec``: shipped name, checkpoint path or timm name (module docstring).

    ``weights`` (timm names only): a state_dict file for the architecture. Raises
    :class:`ModelLoadError` (unknown name, missing or unreadable checkpoint, failed download,
    weights that do not fit) with a message that says which of the forms was expected.
    """
    spec = str(spec)
    if weights is not None and (pretrained or spec in shipped_models.available_models() or _looks_like_path(spec)):
        raise ModelLoadError(f"--weights {weights} goes with a timm model name (the architecture), not with "
                             f"{'--pretrained' if pretrained else repr(spec)}")
    if spec in shipped_models.available_models():
        if pretrained or model_kwargs:
            raise ModelLoadError(
                f"{spec!r} is a shipped demo model with its own trained weights; --pretrained and "
                "--model-kwargs apply to timm model names only"
            )
        try:
            model, info = shipped_models.load_shipped(spec)
        except (FileNotFoundError, ValueError) as exc:
            raise ModelLoadError(str(exc)) from None
        return fmnist_loaded(model, spec, "shipped", info)
    if _looks_like_path(spec):
        if pretrained or model_kwargs:
            raise ModelLoadError(f"--pretrained and --model-kwargs apply to timm model names, not to checkpoint {spec}")
        return load_checkpoint(Path(spec))
    model = build_timm(spec, pretrained, model_kwargs)
    info = {"arch": spec, "pretrained": bool(pretrained), "model_kwargs": dict(model_kwargs or {})}
    if weights is not None:
        load_state(model, read_state_dict(Path(weights)), str(weights))
        info["weights"] = f"file {weights}"
    elif pretrained:
        info["weights"] = "pretrained (timm)"
    else:
        info["weights"] = f"random (seed {RANDOM_INIT_SEED}; no --pretrained, no --weights)"
        from quant.dist import is_main

        if is_main():  # under torchrun one line, not one per process
            print(f"warning: {spec} has RANDOM weights (no --pretrained, no --weights FILE): its accuracy and "
                  "profile say nothing about the trained model", file=sys.stderr, flush=True)
    return timm_loaded(model, spec, "timm", info)
