"""One shared reader for calibration data.

Everything that consumes ``calib_data`` (PTQ calibration, sensitivity profiling, LRP) goes
through :func:`iter_images`, so that the accepted forms are the same everywhere: a tensor of
images ``(N, C, H, W)``, or an iterable of such tensors, or of ``(images, labels, ...)``
tuples/lists such as a ``torch.utils.data.DataLoader`` yields.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

__all__ = ["iter_images"]


def _check_batch(batch: torch.Tensor, where: str) -> torch.Tensor:
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
    return batch


def iter_images(calib_data: Any, batch_size: int = 64) -> Iterator[torch.Tensor]:
    """Yield image batches ``(n, C, H, W)`` from any accepted form of ``calib_data``.

    A single tensor is cut into chunks of ``batch_size`` images (to bound memory); batches
    from an iterable are passed through unchanged. For an item that is a tuple or list
    (``(images, labels)`` from a DataLoader) the first element is the images.

    Raises ``TypeError`` for an unrecognised form and ``ValueError`` for a tensor that is not
    a 4-D floating-point image batch, naming what was given.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(calib_data, torch.Tensor):
        data = _check_batch(calib_data, "the tensor")
        for start in range(0, data.shape[0], batch_size):
            yield data[start : start + batch_size]
        return
    if isinstance(calib_data, (str, bytes)) or not isinstance(calib_data, Iterable):
        raise TypeError(
            f"calib_data must be a tensor (N, C, H, W) or an iterable of image tensors or of "
            f"(images, labels) pairs; got {type(calib_data).__name__}"
        )
    for index, item in enumerate(calib_data):
        if isinstance(item, (tuple, list)):
            if not item or not isinstance(item[0], torch.Tensor):
                raise TypeError(
                    f"calib_data item {index} is a {type(item).__name__} whose first element is "
                    f"{type(item[0]).__name__ if item else 'missing'}; expected (images, labels)"
                )
            item = item[0]
        if not isinstance(item, torch.Tensor):
            raise TypeError(
                f"calib_data item {index} is a {type(item).__name__}; expected an image tensor "
                f"(N, C, H, W) or an (images, labels) pair"
            )
        yield _check_batch(item, f"item {index}")
