"""Exceptions of :mod:`quant.deploy`."""
from __future__ import annotations

from ..errors import QuantError

__all__ = ["ExportError", "PackedFormatError"]


class ExportError(QuantError, ValueError):
    """The model cannot be exported as asked (not quantized, an unsupported quantizer, a plan or
    an architecture description that does not match it, an unknown format)."""


class PackedFormatError(QuantError, ValueError):
    """A file is not a readable packed mixqvit model (wrong format, version, or corrupt)."""
