"""Materialise calibration data once as a list of (images, labels | None) batches.

Profiling walks the calibration set many times (one pass per layer and bit-width), so it is
read once into memory instead of re-iterating a possibly random DataLoader, which also makes
every pass see exactly the same images (determinism) and lets the data be hashed for
checkpoints. Accepted forms are those of quant's shared reader (`quant.data_utils.iter_batches`):
a tensor (N, C, H, W), an (images, labels) pair, or an iterable of such tensors or of
(images, labels) pairs, e.g. a DataLoader.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterable

import torch

from quant.data_utils import iter_batches

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


def as_calib_set(calib_data: torch.Tensor | Iterable[Any]) -> CalibSet:
    """Read `calib_data` (tensor, (images, labels) pair, iterable of tensors or of (images, labels)
    pairs) into memory, through quant's shared reader `quant.data_utils.iter_batches`."""
    images: list[torch.Tensor] = []
    labels: list[torch.Tensor | None] = []
    try:
        for i, (x, y) in enumerate(iter_batches(calib_data, batch_size=None)):
            if x.shape[0] == 0:
                continue
            if images and x.shape[1:] != images[0].shape[1:]:
                raise CalibrationDataError(
                    f"calibration batch {i} has image shape {tuple(x.shape[1:])}, the first batch "
                    f"{tuple(images[0].shape[1:])}; all images must share one shape"
                )
            images.append(x.detach().float())
            labels.append(None if y is None else y.detach().long())
    except (TypeError, ValueError) as exc:
        if isinstance(exc, CalibrationDataError):
            raise
        raise CalibrationDataError(str(exc)) from None
    if not images:
        raise CalibrationDataError("calibration data is empty; give at least one image")
    have = [y is not None for y in labels]
    return CalibSet(images, [y for y in labels if y is not None] if all(have) else None)
