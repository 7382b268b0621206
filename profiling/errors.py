"""Exceptions raised by `profiling`; every message says what was given and what was expected."""
from __future__ import annotations

# One mismatch error for every resumable run (QAT and sensitivity checkpoints): quant defines it.
from quant.errors import CheckpointMismatchError

__all__ = [
    "ProfilingError",
    "LRPUnsupportedError",
    "CheckpointMismatchError",
    "CalibrationDataError",
]


class ProfilingError(Exception):
    """Base class of every error raised by the profiling package."""


class LRPUnsupportedError(ProfilingError, TypeError):
    """The model contains a module whose relevance rule is not implemented.

    Gradient x input gives wrong relevance silently on an unknown non-linearity, so the
    propagator refuses such a model instead of returning numbers.
    """


class CalibrationDataError(ProfilingError, ValueError):
    """Calibration data is empty, malformed, or lacks labels a metric needs."""
