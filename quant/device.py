"""Where a model lives, and whether a device asked for exists on this machine.

Library functions run where the model is (its first parameter's device) and move each batch
there, so one call works on CPU, CUDA or MPS alike; :func:`check_device` turns a device this
machine lacks into a one-line error instead of a traceback deep inside torch.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["model_device", "check_device"]


def model_device(model: nn.Module) -> torch.device:
    """The device of `model`'s first parameter (or buffer); CPU for a model with neither."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def check_device(device: str | torch.device) -> torch.device:
    """`device` as a torch.device this machine has, or a one-line ``ValueError`` saying why not."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {device!r} is not a torch device name ({exc}); use e.g. 'cpu' or 'cuda'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: this machine has no usable CUDA GPU (torch.cuda.is_available() "
                             "is False); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r}: MPS is not available on this machine; use --device cpu")
    return dev
