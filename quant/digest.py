"""Digests of tensors and modules: one way, used wherever a run must recognise its inputs.

A resumable run (QAT checkpoints, sensitivity checkpoints) stores digests of the model and data
it was started with and refuses to resume on different ones; both use these functions so that
"the same model" means the same thing everywhere: equal names, dtypes, shapes and bytes.
"""
from __future__ import annotations

import hashlib
from typing import Iterable

import torch
from torch import nn

__all__ = ["tensor_digest", "module_digest"]


def _update(h: "hashlib._Hash", t: torch.Tensor) -> None:
    t = t.detach().to("cpu").contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.dtype == torch.bfloat16:
        t = t.float()
    h.update(t.numpy().tobytes())


def tensor_digest(tensors: Iterable[torch.Tensor | None]) -> str:
    """SHA-256 (hex, 16 chars) of the dtypes, shapes and bytes of ``tensors`` (``None`` allowed)."""
    h = hashlib.sha256()
    for t in tensors:
        if t is None:
            h.update(b"none")
        else:
            _update(h, t)
    return h.hexdigest()[:16]


def module_digest(module: nn.Module) -> str:
    """Digest of a module's ``state_dict`` (names and values)."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        _update(h, t)
    return h.hexdigest()[:16]
