"""Opt-in early stopping of sensitivity pairs: stop a (layer, bits) pair once its mean damage is known.

A pair's damage is a mean over calibration images. After each batch the running mean and its
standard error (SE = sample std / sqrt(n), from the per-image damages) are checked, and the
pair stops -- its remaining batches are skipped -- when, with at least ``min_images`` images
seen, either

* the estimate is precise: ``SE <= rtol * |mean|``, or
* the damage is negligible next to the same layer's largest damage in the same table (normally
  its lowest bit-width): ``|mean| + 2 SE <= negligible * max_b |mean_b|`` -- an error this small
  cannot change which bit-width the allocator prefers for the layer by more than that fraction
  of the layer's own damage scale.

Why it is sound only on a random image order: a prefix of the calibration set must be a random
sample of it, but an ImageFolder's images come sorted by class. `measure_sensitivity` therefore
visits the images in a seeded random order when early stopping is on (``seed``). Everything is
decided from the data in that fixed order, so the same inputs and seed give the same tables and
the same number of images per pair, which the profile records. Without early stopping every pair
sees every image and nothing here runs.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

__all__ = ["EarlyStop", "RunningMean", "should_stop"]


@dataclass(frozen=True)
class EarlyStop:
    """When a (layer, bits) pair may stop before the end of the calibration set (see module doc)."""

    rtol: float = 0.05
    negligible: float = 0.01
    min_images: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("rtol", "negligible"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1 or math.isnan(v):
                raise ValueError(f"EarlyStop {name}={v!r}; expected a number in [0, 1) (0 disables that test)")
        if isinstance(self.min_images, bool) or not isinstance(self.min_images, int) or self.min_images < 2:
            raise ValueError(f"EarlyStop min_images={self.min_images!r}; expected an int >= 2 (a standard error "
                             "needs two images)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"EarlyStop seed={self.seed!r}; expected an int (the image order's seed)")

    def to_dict(self) -> dict[str, Any]:
        """The rule as plain JSON values (profile metadata, checkpoint fingerprint)."""
        return asdict(self)


class RunningMean:
    """Sum, sum of squares and count of one pair's per-image damages (float64)."""

    __slots__ = ("n", "total", "squares")

    def __init__(self) -> None:
        self.n, self.total, self.squares = 0, 0.0, 0.0

    def add(self, damage: torch.Tensor) -> None:
        d = damage.detach().to("cpu", torch.float64)
        self.n += int(d.numel())
        self.total += float(d.sum())
        self.squares += float((d * d).sum())

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    @property
    def se(self) -> float:
        """Standard error of the mean (inf with fewer than two images)."""
        if self.n < 2:
            return math.inf
        var = max(self.squares - self.total * self.total / self.n, 0.0) / (self.n - 1)
        return math.sqrt(var / self.n)


def should_stop(stat: RunningMean, table_max: float, rule: EarlyStop) -> bool:
    """Whether a pair with running statistics `stat` may stop; `table_max` is the largest
    ``|mean|`` among its layer's pairs of the same table."""
    if stat.n < rule.min_images:
        return False
    mean, se = abs(stat.mean), stat.se
    if mean > 0 and se <= rule.rtol * mean:
        return True
    return table_max > 0 and mean + 2 * se <= rule.negligible * table_max
