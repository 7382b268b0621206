"""The demo models' training recipes: hyper-parameters per shipped model, recorded in its json."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TrainConfig", "RECIPES"]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run. Recorded in the model's json."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.1
    crop_padding: int = 0
    hflip: bool = True
    grad_clip: float | None = 1.0
    distill: str | None = None  # None | "hard" | "soft"
    distill_tau: float = 1.0  # temperature for soft distillation
    teacher: str | None = None  # name of the teacher model when distill is set
    eval_batch_size: int = 500

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if self.distill not in (None, "hard", "soft"):
            raise ValueError(f"distill must be None, 'hard' or 'soft', got {self.distill!r}")


# Epoch counts are chosen so each run stays within 30 minutes on a 2-core CPU; the measured
# times are in each model's json and in the README.
RECIPES: dict[str, TrainConfig] = {
    "fmnist_vit": TrainConfig(epochs=18),
    "fmnist_deit": TrainConfig(epochs=14, distill="hard", teacher="fmnist_swin"),
    "fmnist_swin": TrainConfig(epochs=16),
}
