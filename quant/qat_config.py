"""`QATConfig`: *how* quantization-aware training runs, as one small serialisable object.

:func:`quant.qat` takes *what* it trains with (model, plan, data, teacher, checkpoint path,
device) as arguments and *how* (schedule, loss weights, seed, PTQ settings of the starting
point) as one ``QATConfig``, so a run's recipe can be stored, compared (checkpoint
fingerprints) and passed around as a unit, like torchao's small quantization configs.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .config import QuantConfig

__all__ = ["QATConfig"]


@dataclass(frozen=True)
class QATConfig:
    """Settings of a QAT run (validated on construction).

    Attributes:
        epochs: passes over the training data.
        lr: peak learning rate of the weights (AdamW); quantizer step sizes and offsets get the
            LSQ-equivalent rates derived from it (:func:`quant.lsq.param_groups`). Cosine decay
            over the run. The default suits short runs (60 steps of 128 images on a Fashion-MNIST
            ViT at W2A2: 5e-4 and 1e-3 recovered 75% top-1, 1e-4 69%, 2e-3 72%); lower it for long
            runs on large models.
        batch_size: global batch size for tensor training data (under DistributedDataParallel
            it is split across the processes, so the optimisation is the same at any world size).
        weight_decay: AdamW weight decay of weight matrices (never of quantizer parameters).
        kd_temperature, kd_weight: distillation temperature ``T`` and weight ``alpha`` of
            ``(1 - alpha) * CE + alpha * T^2 * KL`` (:func:`quant.distill.qat_loss`).
        seed: the one source of randomness (batch order, dropout).
        max_steps: stop after this many optimiser steps in all (the schedule spans them).
        checkpoint_every: also checkpoint every this many steps (mid-epoch).
        learn_offsets: learn asymmetric activation offsets (LSQ+); ``False``: plain LSQ.
        calib_size: calibration images taken from the training data when no ``calib_data``.
        quant: :class:`QuantConfig` of the PTQ starting point.
    """

    epochs: int = 1
    lr: float = 5e-4
    batch_size: int = 64
    weight_decay: float = 0.0
    kd_temperature: float = 2.0
    kd_weight: float = 0.5
    seed: int = 0
    max_steps: int | None = None
    checkpoint_every: int | None = None
    learn_offsets: bool = True
    calib_size: int = 256
    quant: QuantConfig = field(default_factory=QuantConfig)

    def __post_init__(self) -> None:
        def positive_int(name: str, value: Any, optional: bool = False) -> None:
            if optional and value is None:
                return
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"QATConfig.{name} must be an int >= 1{' or None' if optional else ''}, got {value!r}")

        positive_int("epochs", self.epochs)
        positive_int("batch_size", self.batch_size)
        positive_int("calib_size", self.calib_size)
        positive_int("max_steps", self.max_steps, optional=True)
        positive_int("checkpoint_every", self.checkpoint_every, optional=True)
        if not self.lr > 0:
            raise ValueError(f"QATConfig.lr must be > 0, got {self.lr!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"QATConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if not self.kd_temperature > 0:
            raise ValueError(f"QATConfig.kd_temperature must be > 0, got {self.kd_temperature!r}")
        if not 0.0 <= self.kd_weight <= 1.0:
            raise ValueError("QATConfig.kd_weight must lie in [0, 1] (0 = labels only, 1 = distillation only), "
                             f"got {self.kd_weight!r}")
        if not isinstance(self.quant, QuantConfig):
            raise TypeError(f"QATConfig.quant must be a quant.QuantConfig, got {type(self.quant).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (the PTQ settings nested under ``"quant"``)."""
        return {**asdict(self), "quant": self.quant.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QATConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"QATConfig.from_dict: unknown fields {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        fields = dict(data)
        if isinstance(fields.get("quant"), dict):
            fields["quant"] = QuantConfig.from_dict(fields["quant"])
        return cls(**fields)
