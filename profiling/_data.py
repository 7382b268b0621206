"""Materialise calibration data once as a list of (images, labels | None) batches.

Profiling walks the calibration set many times (one pass per layer and bit-width), so it is
read once into memory instead of re-iterating a possibly random DataLoader, which also makes
every pass see exactly the same images (determinism) and lets the data be hashed for
checkpoints. Accepted forms follow the project contract: a tensor (N, C, H, W), or an iterable
of such tensors or of (images, labels) pairs, e.g. a DataLoader.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterable

import torch

from .errors import CalibrationDataError

__all__ = ["CalibSet", "as_calib_set"]


@dataclass
class CalibSet:
    """Calibration batches held in memory, with labels when every batch had them."""

    images: list[torch.Tensor]
    labels: list[torch.Tensor] | None

    @property
    def size(self) -> int:
        """Number of images."""
        return sum(int(b.shape[0]) for b in self.images)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one image, (C, H, W)."""
        return tuple(int(s) for s in self.images[0].shape[1:])

    def fingerprint(self) -> str:
        """SHA-256 of the image bytes (and labels), so a checkpoint can tell data sets apart."""
        h = hashlib.sha256()
        for i, b in enumerate(self.images):
            t = b.detach().to("cpu", torch.float32).contiguous()
            h.update(str(tuple(t.shape)).encode())
            h.update(t.numpy().tobytes())
            if self.labels is not None:
                h.update(self.labels[i].detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
        return h.hexdigest()

    def require_labels(self, why: str) -> list[torch.Tensor]:
        """The label batches, or a clear error naming the option that needs them."""
        if self.labels is None:
            raise CalibrationDataError(
                f"{why} needs labels, but the calibration data gave images only; pass an iterable "
                "of (images, labels) pairs (e.g. a DataLoader over a labelled dataset)"
            )
        return self.labels


def _split(item: Any, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(item, torch.Tensor):
        return item, None
    if isinstance(item, (tuple, list)) and len(item) >= 1 and isinstance(item[0], torch.Tensor):
        labels = item[1] if len(item) >= 2 and isinstance(item[1], torch.Tensor) else None
        return item[0], labels
    raise CalibrationDataError(
        f"calibration batch {index} is a {type(item).__name__}; expected a tensor (N, C, H, W) or "
        "an (images, labels) pair of tensors"
    )


def as_calib_set(calib_data: torch.Tensor | Iterable[Any]) -> CalibSet:
    """Read `calib_data` (tensor, iterable of tensors, or of (images, labels) pairs) into memory."""
    if isinstance(calib_data, torch.Tensor):
        batches: Iterable[Any] = [calib_data]
    else:
        try:
            batches = iter(calib_data)
        except TypeError as exc:
            raise CalibrationDataError(
                f"calib_data is a {type(calib_data).__name__}; expected a tensor (N, C, H, W) or an "
                "iterable of tensors or (images, labels) pairs"
            ) from exc
    images: list[torch.Tensor] = []
    labels: list[torch.Tensor | None] = []
    for i, item in enumerate(batches):
        x, y = _split(item, i)
        if x.dim() != 4:
            raise CalibrationDataError(
                f"calibration batch {i} has shape {tuple(x.shape)}; expected (N, C, H, W)"
            )
        if x.shape[0] == 0:
            continue
        if y is not None and (y.dim() != 1 or y.shape[0] != x.shape[0]):
            raise CalibrationDataError(
                f"calibration batch {i}: labels of shape {tuple(y.shape)} do not match "
                f"{x.shape[0]} images; expected a 1-D tensor of class indices"
            )
        if images and x.shape[1:] != images[0].shape[1:]:
            raise CalibrationDataError(
                f"calibration batch {i} has image shape {tuple(x.shape[1:])}, the first batch "
                f"{tuple(images[0].shape[1:])}; all images must share one shape"
            )
        images.append(x.detach().float())
        labels.append(None if y is None else y.detach().long())
    if not images:
        raise CalibrationDataError("calibration data is empty; give at least one image")
    have = [y is not None for y in labels]
    return CalibSet(images, [y for y in labels if y is not None] if all(have) else None)
