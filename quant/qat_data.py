"""QAT training data and per-epoch statistics (helpers of :mod:`quant.qat`).

`_TrainSet` turns any accepted ``train_data`` into per-epoch batches reproducible from
``(seed, epoch)``; `_EpochStats` holds the running sums an epoch record is made of (saved in
mid-epoch checkpoints, so a resumed run reports the same history as an unbroken one).
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from .data_utils import _is_tensor_pair, iter_batches
from .digest import tensor_digest

__all__ = ["TrainSet", "EpochStats"]

Batch = tuple[torch.Tensor, torch.Tensor | None]


class TrainSet:
    """Training data as per-epoch batches, reproducible from ``(seed, epoch)``.

    Tensors (images, or an (images, labels) pair) are shuffled by a seeded permutation per
    epoch and cut into ``batch_size`` batches (the ragged last batch is dropped, so every step
    sees the same batch size). An iterable (e.g. a DataLoader) is iterated once per epoch as
    it is; it must be re-iterable and have a length, and it must give the same batches in the
    same order for a resumed run to equal an unbroken one.
    """

    def __init__(self, data: Any, batch_size: int, seed: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.seed = batch_size, seed
        self.images: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.loader: Any = None
        if isinstance(data, torch.Tensor) or _is_tensor_pair(data):
            self.images, self.labels = next(iter_batches(data, batch_size=None))  # validates
            if self.images.shape[0] == 0:
                raise ValueError("train_data holds no images")
            self.steps_per_epoch = max(1, self.images.shape[0] // batch_size)
            return
        if not hasattr(data, "__iter__") or isinstance(data, (str, bytes)):
            raise TypeError(f"train_data must be an images tensor, an (images, labels) pair of tensors or a "
                            f"DataLoader-like iterable of batches; got {type(data).__name__}")
        if iter(data) is data or not hasattr(data, "__len__"):
            raise TypeError(f"train_data is a one-shot iterator or has no length ({type(data).__name__}); QAT "
                            "iterates it once per epoch: pass a tensor pair, a list of batches or a DataLoader")
        if len(data) == 0:
            raise ValueError("train_data holds no batches")
        self.loader, self.steps_per_epoch = data, len(data)

    def batches(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        """The batches of ``epoch``, starting after the first ``skip`` (a resumed epoch)."""
        if self.loader is not None:
            for i, batch in enumerate(iter_batches(self.loader, batch_size=None)):
                if i >= skip:
                    yield batch
            return
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        n = self.images.shape[0]
        perm = torch.randperm(n, generator=gen)
        bs = min(self.batch_size, n)
        for i in range(skip, self.steps_per_epoch):
            idx = perm[i * bs : (i + 1) * bs]
            yield self.images[idx], None if self.labels is None else self.labels[idx]

    def calibration(self, n: int) -> torch.Tensor:
        """``n`` images for PTQ calibration: a seeded random subset of tensors, or the first
        batches of an iterable."""
        if self.images is not None:
            gen = torch.Generator().manual_seed(self.seed)
            idx = torch.randperm(self.images.shape[0], generator=gen)[:n].sort().values
            return self.images[idx]
        out, have = [], 0
        for images, _ in iter_batches(self.loader, batch_size=None):
            out.append(images[: n - have])
            have += out[-1].shape[0]
            if have >= n:
                break
        return torch.cat(out)

    def fingerprint(self) -> str:
        if self.images is not None:
            return f"tensors:{tensor_digest([self.images, self.labels])}"
        first = next(iter_batches(self.loader, batch_size=None))
        return f"{type(self.loader).__name__}[{len(self.loader)}]:{tensor_digest(first)}"


@dataclass
class EpochStats:
    """Running sums of one epoch (saved in mid-epoch checkpoints so the record survives a resume)."""

    steps: int = 0
    seen: int = 0
    loss: float = 0.0
    ce: float = 0.0
    kd: float = 0.0
    labelled: int = 0
    correct: int = 0
    time_s: float = 0.0

    def add(self, n: int, loss: float, parts: dict[str, float], correct: int | None) -> None:
        self.steps += 1
        self.seen += n
        self.loss += loss * n
        self.ce += (0.0 if math.isnan(parts["ce"]) else parts["ce"]) * n
        self.kd += (0.0 if math.isnan(parts["kd"]) else parts["kd"]) * n
        if correct is not None:
            self.correct += correct
            self.labelled += n

    def record(self, epoch: int, lr: float, kd_on: bool) -> dict[str, float]:
        nan = float("nan")
        seen = max(self.seen, 1)
        return {"epoch": epoch, "steps": self.steps, "loss": self.loss / seen,
                "ce": self.ce / seen if self.labelled else nan, "kd": self.kd / seen if kd_on else nan,
                "train_acc": self.correct / self.labelled if self.labelled else nan,
                "lr_end": lr, "time_s": self.time_s}
