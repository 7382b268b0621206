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

from .datasets import EvalData
from .errors import DataLoadError
from .loaded import LoadedModel

__all__ = ["evaluate_top1", "profile_loaded", "warn_if_classes_differ"]


@torch.no_grad()
def evaluate_top1(model: nn.Module, data: EvalData, *, batch_size: int = 250, verbose: bool = True,
                  desc: str = "eval", workers: int = 0) -> float:
    """Top-1 accuracy of ``model`` in eval mode on ``data`` (on the model's device), with progress
    when verbose; ``workers`` DataLoader processes decode folder images. Under torchrun each
    process evaluates a contiguous share and the counts are summed, so every process returns
    the accuracy on the whole set. The model's train/eval mode is restored afterwards."""
    from quant import dist

    was_training = model.training
    model.eval()
    try:
        rank, size = dist.world()
        correct, total = _top1(model, data.shard(rank, size), batch_size, verbose, desc, workers)
    finally:
        model.train(was_training)
    if size > 1:
        counts = dist.all_reduce_sum(torch.tensor([correct, total], dtype=torch.float64,
                                                  device=_device_of(model)))
        correct, total = int(counts[0]), int(counts[1])
    if total == 0:
        raise DataLoadError(f"no images to evaluate in {data.description or 'the data'}")
    return correct / total


def _device_of(model: nn.Module) -> torch.device:
    from quant import model_device

    return model_device(model)


def warn_if_classes_differ(model: nn.Module, data: EvalData) -> None:
    """A warning line when the evaluation data's class count is not the model's (top-1 is then
    meaningless: e.g. a 4-class folder against a 1000-class ImageNet model)."""
    import sys

    have, want = data.num_classes(), getattr(model, "num_classes", None)
    if have is not None and isinstance(want, int) and have != want:
        print(f"warning: {data.description or 'the evaluation data'} has {have} classes but the model predicts "
              f"{want}; top-1 compares class indices, so it is only meaningful when the folder's sorted class "
              "names are the model's classes", file=sys.stderr, flush=True)


def _top1(model: nn.Module, data: EvalData, batch_size: int, verbose: bool, desc: str,
          workers: int) -> tuple[int, int]:
    from quant.progress import Progress

    device = _device_of(model)
    correct = total = 0
    progress = Progress(-(-len(data) // batch_size), desc, "batches", enabled=verbose)
    for images, labels in data.loader(batch_size, workers):
        progress.update(1)
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
    progress.close()
    return correct, total


def profile_loaded(loaded: LoadedModel, calib: torch.Tensor | tuple[torch.Tensor, torch.Tensor], *,
                   bits: Sequence[int], verbose: bool = True, batch_size: int = 64, **options: Any):
    """Profile ``loaded.model`` on calibration data (``profiling.profile_model`` with ``options``).

    ``calib`` is an images tensor, any ``calib_data`` form, or an ``(images, labels)`` pair as
    :func:`mixqvit.datasets.load_calibration` returns (fed in batches of ``batch_size`` with their labels, for
    metrics that need them). The model's name, source and input size go into the metadata.
    """
    from profiling import profile_model as _profile

    if isinstance(calib, tuple):  # (images, labels) in memory: profiling cuts the pair into batches
        calib = (calib[0], calib[1])  # without copying the images (a loader's batches would be copied)
    if "weights" in loaded.info:  # where the weights came from (e.g. random) goes into the profile
        options["metadata"] = {"weights": loaded.info["weights"], **options.get("metadata", {})}
    prof = _profile(loaded.model, calib, bits=tuple(bits), verbose=verbose, batch_size=batch_size, **options)
    prof.metadata.setdefault("model", loaded.name)
    prof.metadata.setdefault("model_source", loaded.source)
    prof.metadata.setdefault("input_size", list(loaded.input_size))
    return prof
