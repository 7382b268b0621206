"""QAT checkpoints: what identifies a run, and atomic save / verified load.

A checkpoint is a ``torch.save`` of plain data: the quantized model's ``state_dict``, the
optimiser's, the RNG states, the step counters, the history, and a *fingerprint* of the run
(plan, quantization config, hyper-parameters, digests of the float model, teacher and data).
It holds no pickled classes, so it loads with ``torch.load(weights_only=True)``.

Resuming rebuilds the QAT model exactly as a fresh run does (PTQ calibration is
deterministic; :func:`quant.lsq.make_quantizers_learnable` fixes every parameter shape) and
then loads the state into it, which is why a ``state_dict`` suffices here although one cannot
be loaded into a merely prepared model (calibration decides shapes, folds LayerNorms and sets
ranges that live outside the ``state_dict``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from allocator.atomic import atomic_path

from .errors import CheckpointMismatchError

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "save_checkpoint", "load_checkpoint", "check_fingerprint"]

CHECKPOINT_FORMAT = "mixqvit-qat-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus format and version) to ``path`` atomically: a temporary file in
    the same directory, then a rename, so a crash mid-write leaves the previous checkpoint."""
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on the CPU)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors have many types
        raise CheckpointMismatchError(
            f"{path} is not a readable QAT checkpoint ({type(exc).__name__}: {exc}); delete it or pass "
            "another checkpoint path") from exc
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatchError(f"{path} is not a QAT checkpoint (no '{CHECKPOINT_FORMAT}' marker); "
                                      "delete it or pass another checkpoint path")
    if data.get("version") != CHECKPOINT_VERSION:
        raise CheckpointMismatchError(f"{path} has checkpoint version {data.get('version')}, this library "
                                      f"reads version {CHECKPOINT_VERSION}; delete it to start over")
    return data


def check_fingerprint(saved: dict[str, Any], current: dict[str, Any], path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointMismatchError` naming every field where ``saved`` and
    ``current`` differ (the checkpoint belongs to another run)."""
    diff = {k: (saved.get(k), current.get(k)) for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)}
    if diff:
        shown = "; ".join(_describe(k, a, b) for k, (a, b) in diff.items())
        raise CheckpointMismatchError(
            f"checkpoint {path} was written by a different QAT run ({shown}). Resume with the same "
            "model, plan, data and settings, or delete the file / pass another checkpoint path to start over.",
            diff,
        )


def _describe(key: str, saved: Any, now: Any) -> str:
    if isinstance(saved, dict) and isinstance(now, dict):  # e.g. the plan: name the differing entries
        keys = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
        more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
        return f"{key} differs at {', '.join(keys[:3])}{more}"
    return f"{key}: checkpoint {_short(saved)} vs now {_short(now)}"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
