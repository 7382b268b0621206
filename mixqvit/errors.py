"""Errors of the application layer.

Everything a user can get wrong from the command line (a path that does not exist, a model
name timm does not know, a budget string that does not parse, data that does not fit the
model) is raised as a :class:`MixQViTError`.  The CLI turns these into one line on stderr and
exit status 2, so each message must stand on its own: what was given, what was expected, and
how to fix it.
"""
from __future__ import annotations

__all__ = [
    "MixQViTError",
    "ModelLoadError",
    "DataLoadError",
    "BudgetParseError",
    "InputFileError",
    "OptionError",
]


class MixQViTError(Exception):
    """Base class: a user-facing error whose message is a complete one-line explanation."""


class ModelLoadError(MixQViTError):
    """A model could not be built or loaded (unknown name, bad checkpoint, download failed)."""


class DataLoadError(MixQViTError):
    """A data set could not be found, read, or does not fit the model."""


class BudgetParseError(MixQViTError, ValueError):
    """A budget string (``3``, ``W4A8``, ``size_mb=1.5 bops=2e9``) does not parse."""


class InputFileError(MixQViTError):
    """An input file (profile, plan, checkpoint) is missing or malformed."""


class OptionError(MixQViTError, ValueError):
    """Options that contradict each other (e.g. a demo budget that is not a candidate bit-width)."""
