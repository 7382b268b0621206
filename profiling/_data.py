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
(images, labels) pairs, e.g. a DataLoader. A tensor is validated batch by batch (checking a
whole set at once makes temporaries the size of the set).

One more form is read lazily instead: a map-style ``torch.utils.data.Dataset`` of ``(image,
label)`` items (e.g. a ``Subset`` of an ImageFolder, as ``mixqvit profile`` passes), whose
batches are read again on every pass, so the images never all sit in memory. Its transform
must be deterministic (no random augmentation), as every pass must see the same images.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch

from quant.data_utils import iter_batches

from .errors import CalibrationDataError

__all__ = ["CalibSet", "as_calib_set", "DEFAULT_BATCH_SIZE"]


DEFAULT_BATCH_SIZE = 32


@dataclass
class CalibSet:
    """Calibration batches (in memory, or read on demand from a dataset), with labels when every
    batch had them."""

    images: Sequence[torch.Tensor]
    labels: Sequence[torch.Tensor] | None
    _whole: torch.Tensor | None = field(default=None, repr=False, compare=False)  # the batches' storage

    @property
    def size(self) -> int:
        """Number of images."""
        if isinstance(self.images, _DatasetBatches):
            return len(self.images.reader.order)
        return sum(int(b.shape[0]) for b in self.images)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one image, (C, H, W)."""
        return tuple(int(s) for s in self.images[0].shape[1:])

    def all_images(self) -> torch.Tensor:
        """Every image in one tensor (N, C, H, W) -- the batches are views of it."""
        if isinstance(self.images, _DatasetBatches):
            return torch.cat(list(self.images))
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

    def shuffled(self, seed: int) -> "CalibSet":
        """The same images (and labels) in a seeded random order, cut like the first batch:
        any prefix of the batches is then a random sample of the set (early stopping)."""
        perm = torch.randperm(self.size, generator=torch.Generator().manual_seed(seed))
        if isinstance(self.images, _DatasetBatches):
            return self.images.reader.view([self.images.reader.order[i] for i in perm.tolist()])
        whole = self.all_images().index_select(0, perm.to(self.images[0].device))
        labels = None if self.labels is None else torch.cat(self.labels).index_select(0, perm)
        size = int(self.images[0].shape[0])
        return CalibSet(list(whole.split(size)), None if labels is None else list(labels.split(size)), whole)

    def rebatched(self, batch_size: int | None) -> "CalibSet":
        """The same images cut into batches of at most `batch_size` (None: as they are)."""
        if batch_size is None:
            return self
        _check_batch_size(batch_size)
        if isinstance(self.images, _DatasetBatches):
            return self.images.reader.view(batch_size=batch_size)
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
    re-cut to `batch_size`; a map-style Dataset of (image, label) items is read lazily, batch
    by batch (None: `DEFAULT_BATCH_SIZE`)."""
    if batch_size is not None:
        _check_batch_size(batch_size)
    if isinstance(calib_data, CalibSet):
        return calib_data.rebatched(batch_size)
    if (isinstance(calib_data, torch.utils.data.Dataset) and hasattr(calib_data, "__len__")
            and not isinstance(calib_data, torch.utils.data.IterableDataset)):
        if len(calib_data) == 0:
            raise CalibrationDataError("calibration data is empty; give at least one image")
        return _DatasetReader(calib_data, list(range(len(calib_data))), batch_size or DEFAULT_BATCH_SIZE).view()
    if (isinstance(calib_data, torch.Tensor) and calib_data.dim() == 4) or _is_pair(calib_data):
        return _from_tensor(*(calib_data if isinstance(calib_data, (tuple, list)) else (calib_data, None)),
                            batch_size)
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


def _from_tensor(x: torch.Tensor, y: torch.Tensor | None, batch_size: int | None) -> CalibSet:
    """Views of one tensor (no copy), validated batch by batch by quant's reader."""
    step = max(1, batch_size or len(x))
    images, labels = list(x.detach().split(step)), None if y is None else list(y.detach().split(step))
    try:
        for _ in iter_batches(images if labels is None else list(zip(images, labels)), batch_size=None):
            pass
    except (TypeError, ValueError) as exc:
        raise CalibrationDataError(str(exc)) from None
    if not len(x):
        raise CalibrationDataError("calibration data is empty; give at least one image")
    whole = x.detach().float()  # a copy only when the images are not float32 already
    return CalibSet(list(whole.split(step)), None if labels is None else [t.long() for t in labels], whole)


def _is_pair(data: Any) -> bool:
    return (isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)
            and data[0].dim() == 4 and data[1].dim() == 1 and len(data[0]) == len(data[1]))


class _DatasetReader:
    """Reads batches of a map-style dataset of ``(image, label)`` items in a given order; the
    last batch read is kept, so a batch's images and then its labels cost one read."""

    def __init__(self, dataset: Any, order: list[int], batch_size: int) -> None:
        self.dataset, self.order, self.batch_size = dataset, order, batch_size
        self._last: tuple[int, torch.Tensor, torch.Tensor | None] | None = None

    def view(self, order: list[int] | None = None, batch_size: int | None = None) -> CalibSet:
        """A `CalibSet` over this dataset (another order or batch size: a new reader)."""
        reader = self if order is None and batch_size is None else _DatasetReader(
            self.dataset, self.order if order is None else order, batch_size or self.batch_size)
        labels_known = reader.batch(0)[1] is not None
        return CalibSet(_DatasetBatches(reader, 0), _DatasetBatches(reader, 1) if labels_known else None)

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._last is not None and self._last[0] == i:
            return self._last[1], self._last[2]
        rows = self.order[i * self.batch_size:(i + 1) * self.batch_size]
        items = []
        for j in rows:
            try:
                item = self.dataset[j]
            except Exception as exc:  # noqa: BLE001 - a file that cannot be read, named by the dataset's error
                raise CalibrationDataError(f"cannot read calibration item {j} of the dataset: {exc}") from None
            items.append(item if isinstance(item, (tuple, list)) else (item, None))
        try:
            x = torch.stack([item[0] for item in items]).float()
            ys = [item[1] for item in items]
            y = None if any(v is None for v in ys) else torch.as_tensor(ys, dtype=torch.long)
            x, y = next(iter_batches((x, y) if y is not None else x, batch_size=None))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise CalibrationDataError(f"calibration items {rows[0]}..{rows[-1]} of the dataset: {exc}; "
                                       "expected (image tensor (C, H, W), class index) items") from None
        self._last = (i, x, y)
        return x, y


class _DatasetBatches(Sequence):
    """The image (part 0) or label (part 1) batches of a `_DatasetReader`, read on access."""

    def __init__(self, reader: _DatasetReader, part: int) -> None:
        self.reader, self.part = reader, part

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, i: int) -> torch.Tensor:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self.reader.batch(i % len(self))[self.part]
