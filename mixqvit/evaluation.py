"""Measuring a loaded model on data: top-1 accuracy on an evaluation set, and its profile.

Both are the application layer's thin, typed front doors to what the library packages do:
:func:`evaluate_top1` reads an :class:`~mixqvit.datasets.EvalData` batch by batch (in memory or
from an ImageFolder) and :func:`profile_loaded` runs ``profiling.profile_model`` with the
model's name, source and input size recorded in the profile's metadata.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from . import data as fmnist_data
from .datasets import EvalData
from .errors import DataLoadError
from .loading import LoadedModel

__all__ = ["evaluate_top1", "profile_loaded"]


@torch.no_grad()
def evaluate_top1(model: nn.Module, data: EvalData, *, batch_size: int = 250, verbose: bool = True,
                  desc: str = "eval") -> float:
    """Top-1 accuracy of ``model`` in eval mode on ``data`` (on the model's device), with a tqdm bar
    when verbose. The model's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        return _top1(model, data, batch_size, verbose, desc)
    finally:
        model.train(was_training)


def _top1(model: nn.Module, data: EvalData, batch_size: int, verbose: bool, desc: str) -> float:
    from tqdm.auto import tqdm

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    correct = total = 0
    batches = tqdm(data.loader(batch_size), desc=desc, total=None if data.images is None else
                   -(-len(data) // batch_size), disable=None if verbose else True, leave=False)
    for images, labels in batches:
        try:
            logits = model(images.to(device))
        except RuntimeError as exc:
            if total == 0 and ("shape" in str(exc) or "size" in str(exc)):
                raise DataLoadError(
                    f"model rejected input of shape {tuple(images.shape[1:])}: {str(exc).splitlines()[0]}"
                ) from None
            raise
        correct += int((logits.argmax(-1).cpu() == labels).sum())
        total += len(labels)
    if total == 0:
        raise DataLoadError(f"no images to evaluate in {data.description or 'the data'}")
    return correct / total


def profile_loaded(loaded: LoadedModel, calib: torch.Tensor | tuple[torch.Tensor, torch.Tensor], *,
                   bits: Sequence[int], verbose: bool = True, batch_size: int = 64, **options: Any):
    """Profile ``loaded.model`` on calibration data (``profiling.profile_model`` with ``options``).

    ``calib`` is an images tensor, any ``calib_data`` form, or an ``(images, labels)`` pair as
    :func:`mixqvit.datasets.load_calibration` returns (fed in batches of ``batch_size`` with their labels, for
    metrics that need them). The model's name, source and input size go into the metadata.
    """
    from profiling import profile_model as _profile

    if isinstance(calib, tuple):  # (images, labels) in memory -> batches of pairs
        calib = fmnist_data.make_loader(calib[0], calib[1], batch_size=batch_size)
    prof = _profile(loaded.model, calib, bits=tuple(bits), verbose=verbose, **options)
    prof.metadata.setdefault("model", loaded.name)
    prof.metadata.setdefault("model_source", loaded.source)
    prof.metadata.setdefault("input_size", list(loaded.input_size))
    return prof
