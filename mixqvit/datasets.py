"""Data for a loaded model: calibration images and the evaluation set.

Either a Fashion-MNIST directory of IDX files (calibration from the train split, test from the
test split) or an ImageFolder (one sub-directory per class, e.g. ImageNet val), transformed with
the model's timm data config (:class:`mixqvit.loaded.LoadedModel`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from . import data as fmnist_data
from .errors import DataLoadError
from .loaded import FMNIST_INPUT, LoadedModel

__all__ = ["EvalData", "load_calibration", "load_test"]


@dataclass
class EvalData:
    """Labelled images to evaluate on: tensors in memory, or a Dataset read batch by batch."""

    images: torch.Tensor | None
    labels: torch.Tensor | None
    dataset: Any = None
    description: str = ""

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.dataset)

    def loader(self, batch_size: int, workers: int = 0) -> torch.utils.data.DataLoader:
        if self.images is not None:
            return fmnist_data.make_loader(self.images, self.labels, batch_size=batch_size)
        return fmnist_data.make_loader(self.dataset, batch_size=batch_size, num_workers=workers)

    def shard(self, rank: int, size: int) -> "EvalData":
        """The contiguous part ``rank`` of ``size`` (torchrun: each process evaluates one)."""
        if size == 1:
            return self
        from quant.dist import split_evenly

        part = split_evenly(len(self), size)[rank]
        if self.images is not None:
            return EvalData(self.images[part.start:part.stop], self.labels[part.start:part.stop],
                            description=self.description)
        return EvalData(None, None, torch.utils.data.Subset(self.dataset, list(part)), self.description)

    def num_classes(self) -> int | None:
        """Classes of an ImageFolder (its sub-directories), or 1 + the largest label in memory."""
        ds = self.dataset
        while isinstance(ds, torch.utils.data.Subset):
            ds = ds.dataset
        if ds is not None:
            return len(ds.classes) if hasattr(ds, "classes") else None
        return None if self.labels is None or not len(self.labels) else int(self.labels.max()) + 1


def _is_fashion_mnist_dir(root: Path) -> bool:
    try:
        fmnist_data.fashion_mnist_files("test", root)
        return True
    except FileNotFoundError:
        return False


def _data_root(data: str | os.PathLike | None, loaded: LoadedModel) -> tuple[str, Path | None]:
    """Decide the data kind: ("fashion-mnist", root or None for the default) or ("folder", root)."""
    if data is None:
        if loaded.fashion_mnist:
            return "fashion-mnist", None
        raise DataLoadError(
            f"model {loaded.name!r} needs --data: an ImageFolder directory (one sub-directory of images "
            "per class, e.g. ImageNet val) or a Fashion-MNIST directory of IDX files"
        )
    root = Path(data).expanduser()
    if not root.exists():
        raise DataLoadError(f"data path {root} does not exist; expected a Fashion-MNIST IDX directory or an ImageFolder")
    if not root.is_dir():
        raise DataLoadError(f"data path {root} is a file; expected a directory (Fashion-MNIST IDX files or an ImageFolder)")
    if _is_fashion_mnist_dir(root):
        return "fashion-mnist", root
    return "folder", root


def _check_fmnist_fits(loaded: LoadedModel) -> None:
    if tuple(loaded.input_size) != FMNIST_INPUT:
        raise DataLoadError(
            f"Fashion-MNIST images are {FMNIST_INPUT} (C, H, W) but model {loaded.name!r} expects "
            f"{tuple(loaded.input_size)}; pass --data with an ImageFolder for this model"
        )


def _image_folder(root: Path, loaded: LoadedModel):
    """ImageFolder with the model's transform: Fashion-MNIST normalisation or its timm data config."""
    if loaded.fashion_mnist:
        make = lambda: fmnist_data.image_folder(root, loaded.input_size)  # noqa: E731
    else:
        def make():
            from timm.data import create_transform
            from torchvision import datasets, transforms

            tf = create_transform(input_size=loaded.input_size, interpolation=loaded.interpolation,
                                  mean=loaded.mean, std=loaded.std, crop_pct=loaded.crop_pct)
            if loaded.input_size[0] == 1:
                tf = transforms.Compose([transforms.Grayscale(1), tf])
            return datasets.ImageFolder(str(root), transform=tf)
    try:
        dataset = make()
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataLoadError(
            f"{root} is neither a Fashion-MNIST directory (no t10k-images-idx3-ubyte[.gz]) nor an ImageFolder "
            f"with images in one sub-directory per class ({exc})"
        ) from None
    return dataset


def _stack(dataset, indices: Sequence[int], what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The images at `indices` in one tensor, filled in place (no list of copies to stack: the
    peak memory is the images once)."""
    images: torch.Tensor | None = None
    labels = []
    for j, i in enumerate(indices):
        try:
            x, y = dataset[int(i)]
        except Exception as exc:  # PIL / IO errors name the file
            raise DataLoadError(f"cannot read {what} image {dataset.samples[int(i)][0]}: {exc}") from None
        if images is None:
            images = torch.empty((len(indices), *x.shape), dtype=x.dtype)
        images[j] = x
        labels.append(int(y))
    return images, torch.tensor(labels, dtype=torch.long)


def _fmnist_split(loaded: LoadedModel, root: Path | None, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One Fashion-MNIST split for ``loaded``, a missing or corrupt file as a DataLoadError."""
    _check_fmnist_fits(loaded)
    try:
        return fmnist_data.load_fashion_mnist(split, root)
    except (FileNotFoundError, ValueError) as exc:
        raise DataLoadError(str(exc)) from None


def load_calibration(loaded: LoadedModel, data: str | os.PathLike | None, n: int,
                     seed: int = 0, lazy: bool = False) -> Any:
    """``n`` class-balanced, seeded calibration images and labels, in memory.

    Fashion-MNIST: drawn from the train split (never from the test images accuracy is reported
    on). ImageFolder: drawn from the folder itself (for ImageNet val this is the usual PTQ
    practice; the evaluation then includes the calibration images). With ``lazy`` an ImageFolder
    gives a ``Subset`` of (image, label) items instead, which profiling reads batch by batch on
    every pass, so peak memory does not grow with ``n`` (Fashion-MNIST's 28x28 images stay in
    memory: the whole split is read anyway).
    """
    if n < 1:
        raise DataLoadError(f"--calib must be at least 1 image, got {n}")
    kind, root = _data_root(data, loaded)
    if kind == "fashion-mnist":
        images, labels = _fmnist_split(loaded, root, "train")
        if n > len(labels):
            raise DataLoadError(f"--calib {n} exceeds the {len(labels)} Fashion-MNIST training images")
        idx = fmnist_data.calibration_indices(labels, n, seed)
        return images[idx].clone(), labels[idx].clone()
    dataset = _image_folder(root, loaded)
    if n > len(dataset):
        raise DataLoadError(f"--calib {n} exceeds the {len(dataset)} images in {root}")
    try:
        idx = fmnist_data.calibration_indices(torch.tensor(dataset.targets), n, seed)
    except ValueError as exc:
        raise DataLoadError(f"cannot draw a class-balanced calibration set from {root}: {exc}") from None
    if lazy:
        return torch.utils.data.Subset(dataset, idx.tolist())
    return _stack(dataset, idx.tolist(), "calibration")


def load_check(loaded: LoadedModel, data: str | os.PathLike | None, n: int, calib_n: int,
               seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` class-balanced, seeded images and labels from the pool :func:`load_calibration` draws
    ``calib_n`` from (with the same ``seed``), none of them a calibration image: what a
    reconstruction is checked on (``--reconstruct-check``)."""
    if n < 1:
        raise DataLoadError(f"--reconstruct-check must be at least 1 image, got {n}")
    kind, root = _data_root(data, loaded)
    if kind == "fashion-mnist":
        images, labels = _fmnist_split(loaded, root, "train")
    else:
        dataset = _image_folder(root, loaded)
        labels = torch.tensor(dataset.targets)
    try:
        idx = fmnist_data.check_indices(labels, n, calib_n, seed)
    except ValueError as exc:
        raise DataLoadError(f"--reconstruct-check {n}: {exc} (of {root or 'the Fashion-MNIST training split'})") from None
    if kind == "fashion-mnist":
        return images[idx].clone(), labels[idx].clone()
    return _stack(dataset, idx.tolist(), "check")


def load_test(loaded: LoadedModel, data: str | os.PathLike | None, limit: int | None = None,
              seed: int = 0) -> EvalData:
    """The evaluation set: the Fashion-MNIST test split (first ``limit`` images) or the ImageFolder.

    For an ImageFolder a ``limit`` takes a seeded class-balanced subset (its files are sorted
    by class, so the first images would all share one label).
    """
    if limit is not None and limit < 1:
        raise DataLoadError(f"--test-limit must be at least 1, got {limit}")
    kind, root = _data_root(data, loaded)
    if kind == "fashion-mnist":
        images, labels = _fmnist_split(loaded, root, "test")
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        where = root or fmnist_data.DEFAULT_FASHION_MNIST_ROOT
        return EvalData(images, labels, description=f"Fashion-MNIST test, {len(labels)} images ({where})")
    dataset = _image_folder(root, loaded)
    if limit is not None and limit < len(dataset):
        idx = fmnist_data.calibration_indices(torch.tensor(dataset.targets), limit, seed)
        dataset = torch.utils.data.Subset(dataset, idx.tolist())
    return EvalData(None, None, dataset, description=f"ImageFolder {root}, {len(dataset)} images")

