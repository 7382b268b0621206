"""Exceptions raised by :mod:`quant`.

Every message says what was given, what was expected and how to fix it, so that a
caller (the CLI, the profiler, a notebook user) can act on it without reading our source.
"""
from __future__ import annotations

__all__ = [
    "QuantError",
    "UnsupportedModelError",
    "PlanMismatchError",
    "NotCalibratedError",
    "CheckpointMismatchError",
]


class QuantError(RuntimeError):
    """Base class of all errors raised by the quantization engine."""


class UnsupportedModelError(QuantError, TypeError):
    """The model (or one of its modules) is not a structure the engine knows how to quantize.

    ``module_name`` is the qualified name of the offending module ("" for the model itself)
    and ``class_name`` its class, so tools can point at it.
    """

    def __init__(self, message: str, module_name: str = "", class_name: str = "") -> None:
        super().__init__(message)
        self.module_name = module_name
        self.class_name = class_name


class PlanMismatchError(QuantError, ValueError):
    """A bit-width plan does not name exactly the quantizable layers of the model.

    ``missing`` lists layers the model has but the plan lacks, ``extra`` lists layers the
    plan names but the model lacks.
    """

    def __init__(self, message: str, missing: list[str], extra: list[str]) -> None:
        super().__init__(message)
        self.missing = list(missing)
        self.extra = list(extra)


class NotCalibratedError(QuantError):
    """An activation quantizer was asked to quantize before ``calibrate`` gave it statistics."""


class CheckpointMismatchError(QuantError, ValueError):
    """A checkpoint on disk (QAT or sensitivity) was written by a different run (model, plan, data or settings).

    ``differences`` maps each differing field to ``(in the checkpoint, now)``.
    """

    def __init__(self, message: str, differences: dict | None = None) -> None:
        super().__init__(message)
        self.differences = dict(differences or {})
