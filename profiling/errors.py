"""Exceptions raised by `profiling`; every message says what was given and what was expected."""
from __future__ import annotations

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


class CheckpointMismatchError(ProfilingError, ValueError):
    """A sensitivity checkpoint on disk was written for another model, bit set or data set."""


class CalibrationDataError(ProfilingError, ValueError):
    """Calibration data is empty, malformed, or lacks labels a metric needs."""
