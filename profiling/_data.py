"""Materialise calibration data once as a list of (images, labels | None) batches.

Memory: profiling runs the network on one batch at a time, so its peak memory is set by
``batch_size`` (default `DEFAULT_BATCH_SIZE`), not by the number of calibration images: one big
tensor (``profile_model(model, images)``) is cut into batches like any other input, and batches
of an iterable larger than ``batch_size`` are cut too. The batches are views of one tensor, so
results do not depend on how the caller batched the data.

Profiling walks the calibration set many times (one pass per layer and bit-width), so it is
read once into memory instead of re-iterating a possibly random DataLoader, which also makes
every pass see exactly the same images (determinism) and lets the data be hashed for
checkpoints. Accepted forms are those of quant's shared reader (`quant.data_utils.iter_batches`):
a tensor (N, C, H, W), an (images, labels) pair, or an iterable of such tensors or of
(images, labels) pairs, e.g. a DataLoader.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch

from quant.data_utils import iter_batches

from .errors import CalibrationDataError

__all__ = ["CalibSet", "as_calib_set", "DEFAULT_BATCH_SIZE"]


DEFAULT_BATCH_SIZE = 32


@dataclass
class CalibSet:
    """Calibration batches held in memory, with labels when every batch had them."""

    images: list[torch.Tensor]
    labels: list[torch.Tensor] | None
    _whole: torch.Tensor | None = field(default=None, repr=False, compare=False)  # the batches' storage

    @property
    def size(self) -> int:
        """Number of images."""
        return sum(int(b.shape[0]) for b in self.images)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one image, (C, H, W)."""
        return tuple(int(s) for s in self.images[0].shape[1:])

    def all_images(self) -> torch.Tensor:
        """Every image in one tensor (N, C, H, W) -- the batches are views of it."""
        if self._whole is not None:
            return self._whole
        return self.images[0] if len(self.images) == 1 else torch.cat(self.images)

    def fingerprint(self) -> str:
        """SHA-256 of the image bytes (and labels), so a checkpoint can tell data sets apart.
        Independent of how the images are cut into batches."""
        h = hashlib.sha256()
        h.update(str((self.size,) + self.input_shape).encode())
        for b in self.images:
            h.update(b.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        if self.labels is not None:
            for y in self.labels:
                h.update(y.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
        return h.hexdigest()

    def require_labels(self, why: str) -> list[torch.Tensor]:
        """The label batches, or a clear error naming the option that needs them."""
        if self.labels is None:
            raise CalibrationDataError(
                f"{why} needs labels, but the calibration data gave images only; pass an iterable "
                "of (images, labels) pairs (e.g. a DataLoader over a labelled dataset)"
            )
        return self.labels

    def rebatched(self, batch_size: int | None) -> "CalibSet":
        """The same images cut into batches of at most `batch_size` (None: as they are)."""
        if batch_size is None:
            return self
        _check_batch_size(batch_size)
        images = self.all_images()
        labels = None if self.labels is None else torch.cat(self.labels)
        return CalibSet(list(images.split(batch_size)), None if labels is None else list(labels.split(batch_size)),
                        images)


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}; expected an int >= 1 (images per forward pass)")


def as_calib_set(calib_data: torch.Tensor | Iterable[Any], batch_size: int | None = DEFAULT_BATCH_SIZE) -> CalibSet:
    """Read `calib_data` (tensor, (images, labels) pair, iterable of tensors or of (images, labels)
    pairs) into memory, through quant's shared reader `quant.data_utils.iter_batches`, as
    batches of at most `batch_size` images (None: the batches as given). A `CalibSet` is
    re-cut to `batch_size`."""
    if batch_size is not None:
        _check_batch_size(batch_size)
    if isinstance(calib_data, CalibSet):
        return calib_data.rebatched(batch_size)
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
    calib = CalibSet(images, [y for y in labels if y is not None] if all(have) else None)
    return calib.rebatched(batch_size)
