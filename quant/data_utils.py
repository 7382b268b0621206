"""One shared reader for calibration (and training) data.

Everything that consumes ``calib_data`` (PTQ calibration, sensitivity profiling, LRP, QAT) goes
through :func:`iter_batches` (or :func:`iter_images`, which drops the labels), so that the
accepted forms are the same everywhere:

* a tensor of images ``(N, C, H, W)`` (no labels);
* a pair ``(images, labels)`` of tensors, ``images`` ``(N, C, H, W)`` and ``labels`` ``(N,)``;
* an iterable of image tensors, or of ``(images, labels, ...)`` tuples/lists, such as a
  ``torch.utils.data.DataLoader`` yields.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

__all__ = ["iter_batches", "iter_images"]

Batch = tuple[torch.Tensor, torch.Tensor | None]


def _check_images(batch: torch.Tensor, where: str) -> torch.Tensor:
    if batch.dim() != 4:
        raise ValueError(
            f"calib_data: {where} has shape {tuple(batch.shape)}; expected a batch of images "
            f"(N, C, H, W). For a single image use image.unsqueeze(0)."
        )
    if not batch.is_floating_point():
        raise ValueError(
            f"calib_data: {where} has dtype {batch.dtype}; expected a floating-point tensor of "
            f"normalised images (convert with .float() and normalise as for training)."
        )
    if not bool(torch.isfinite(batch).all()):
        bad = int((~torch.isfinite(batch)).flatten(1).any(1).sum())
        raise ValueError(
            f"calib_data: {where} holds NaN or infinite values in {bad} of its {len(batch)} images; "
            "calibration ranges computed from them would make the quantized model output NaN. "
            "Drop or repair those images (torch.isfinite(images).flatten(1).all(1) selects the good ones)."
        )
    return batch


def _check_labels(labels: Any, images: torch.Tensor, where: str) -> torch.Tensor | None:
    """Labels of a batch: ``None`` when absent, else a 1-D integer tensor matching the images."""
    if labels is None or not isinstance(labels, torch.Tensor):
        return None  # e.g. (images, paths) from a custom dataset: no usable class labels
    if labels.dim() != 1 or labels.shape[0] != images.shape[0] or labels.is_floating_point():
        raise ValueError(
            f"calib_data: {where} has labels of shape {tuple(labels.shape)} and dtype {labels.dtype}; "
            f"expected a 1-D integer tensor of {images.shape[0]} class indices, one per image"
        )
    return labels


def _is_tensor_pair(data: Any) -> bool:
    """``(images (N,C,H,W), labels (N,))`` given as one pair rather than as a list of batches."""
    return (
        isinstance(data, (tuple, list)) and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
        and data[0].dim() == 4 and data[1].dim() == 1
    )


def _chunks(images: torch.Tensor, labels: torch.Tensor | None, batch_size: int | None) -> Iterator[Batch]:
    step = images.shape[0] if batch_size is None else batch_size
    for start in range(0, images.shape[0], max(step, 1)):
        yield images[start : start + step], None if labels is None else labels[start : start + step]


def _raw_batches(calib_data: Any, batch_size: int | None) -> Iterator[tuple[torch.Tensor, Any, str]]:
    """``(images, second element or None, where)`` per batch, images validated, labels not."""
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (or None for whole tensors), got {batch_size}")
    if isinstance(calib_data, torch.Tensor):
        for images, _ in _chunks(_check_images(calib_data, "the tensor"), None, batch_size):
            yield images, None, "the tensor"
        return
    if _is_tensor_pair(calib_data):
        images = _check_images(calib_data[0], "the images of the (images, labels) pair")
        labels = _check_labels(calib_data[1], images, "the (images, labels) pair")
        for x, y in _chunks(images, labels, batch_size):
            yield x, y, "the (images, labels) pair"
        return
    if isinstance(calib_data, (str, bytes)) or not isinstance(calib_data, Iterable):
        raise TypeError(
            f"calib_data must be a tensor (N, C, H, W), an (images, labels) pair of tensors, or an "
            f"iterable of image tensors or of (images, labels) pairs; got {type(calib_data).__name__}"
        )
    for index, item in enumerate(calib_data):
        second = None
        if isinstance(item, (tuple, list)):
            if not item or not isinstance(item[0], torch.Tensor):
                raise TypeError(
                    f"calib_data item {index} is a {type(item).__name__} whose first element is "
                    f"{type(item[0]).__name__ if item else 'missing'}; expected (images, labels)"
                )
            item, second = item[0], (item[1] if len(item) > 1 else None)
        if not isinstance(item, torch.Tensor):
            raise TypeError(
                f"calib_data item {index} is a {type(item).__name__}; expected an image tensor "
                f"(N, C, H, W) or an (images, labels) pair"
            )
        yield _check_images(item, f"item {index}"), second, f"item {index}"


def iter_batches(calib_data: Any, batch_size: int | None = 64) -> Iterator[Batch]:
    """Yield ``(images, labels | None)`` batches from any accepted form of ``calib_data``.

    A tensor, or an ``(images, labels)`` pair of tensors, is cut into chunks of ``batch_size``
    images (to bound memory; ``None`` yields it whole); batches from an iterable are passed
    through unchanged. For an item that is a tuple or list the first element is the images and
    the second, when it is a tensor, the labels (1-D integer, one per image); a second element
    that is not a tensor (e.g. file names) gives ``None``.

    Raises ``TypeError`` for an unrecognised form and ``ValueError`` for a tensor that is not
    a 4-D floating-point image batch or labels that do not match their images, naming what
    was given.
    """
    for images, second, where in _raw_batches(calib_data, batch_size):
        yield images, _check_labels(second, images, where)


def iter_images(calib_data: Any, batch_size: int = 64) -> Iterator[torch.Tensor]:
    """Yield image batches ``(n, C, H, W)`` from any accepted form of ``calib_data``
    (:func:`iter_batches` without the labels, which are not even looked at: calibration works
    with any second element, e.g. segmentation masks or soft targets)."""
    for images, _, _ in _raw_batches(calib_data, batch_size):
        yield images
