"""Resumable sensitivity results: a JSON checkpoint rewritten atomically after each layer.

The file holds a *fingerprint* (model class, parameter hash, site names, bits, metric,
baseline, which tables, calibration-data hash, quantizer config, early-stopping rule) and the
finished rows (with early stopping, also the images each pair used; files without them load). A run
that finds a checkpoint with the same fingerprint reuses its rows; a different fingerprint is
refused (`CheckpointMismatchError`) naming each differing field, because silently mixing rows
measured under different conditions would corrupt the profile. Writes go to a temporary file in
the same directory followed by ``os.replace`` (:mod:`allocator.atomic`), so an interrupted run
leaves either the previous or the new complete file, never a truncated one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from allocator.atomic import write_json
from quant.errors import CheckpointMismatchError

__all__ = ["SensitivityCheckpoint", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "mixqvit-sensitivity-checkpoint/1"


class SensitivityCheckpoint:
    """Rows finished so far (site name -> weight / activation row) for one fingerprint."""

    def __init__(self, path: str | os.PathLike | None, fingerprint: dict[str, Any]):
        self.path = None if path is None else Path(path)
        self.fingerprint = json.loads(json.dumps(fingerprint))  # normalise tuples -> lists
        self.weight: dict[str, list[float]] = {}
        self.act: dict[str, list[float]] = {}
        self.images: dict[str, dict[str, list[int]]] = {}  # early stopping: images per pair
        self.done: list[str] = []
        if self.path is not None and self.path.exists():
            self._load()

    def _load(self) -> None:
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointMismatchError(
                f"checkpoint {self.path} is not readable JSON ({exc}); delete it to start over"
            ) from exc
        if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointMismatchError(
                f"{self.path} is not a sensitivity checkpoint (format "
                f"{doc.get('format') if isinstance(doc, dict) else type(doc).__name__!r}, expected "
                f"{CHECKPOINT_FORMAT!r}); pass another checkpoint path"
            )
        stored = doc.get("fingerprint", {})
        diffs = [
            f"{key}: checkpoint has {_short(stored.get(key))}, this run has {_short(value)}"
            for key, value in self.fingerprint.items() if stored.get(key) != value
        ]
        diffs += [f"{key}: only in the checkpoint" for key in stored if key not in self.fingerprint]
        if diffs:
            raise CheckpointMismatchError(
                f"checkpoint {self.path} was written for a different run and cannot be resumed:\n  "
                + "\n  ".join(diffs)
                + "\nDelete the file or pass another checkpoint path to measure from scratch."
            )
        self.weight = {k: list(v) for k, v in doc.get("weight", {}).items()}
        self.act = {k: list(v) for k, v in doc.get("act", {}).items()}
        self.images = {k: {t: list(c) for t, c in v.items()} for k, v in doc.get("images", {}).items()}
        self.done = list(doc.get("done", []))

    def record(self, name: str, weight_row: list[float] | None, act_row: list[float] | None,
               images: dict[str, list[int]] | None = None) -> None:
        """Store one finished layer (with the images each pair used, under early stopping) and
        rewrite the file atomically."""
        if images is not None:
            self.images[name] = {t: [int(c) for c in counts] for t, counts in images.items()}
        if weight_row is not None:
            self.weight[name] = [float(v) for v in weight_row]
        if act_row is not None:
            self.act[name] = [float(v) for v in act_row]
        if name not in self.done:
            self.done.append(name)
        if self.path is not None:
            write_json(self.path, {
                "format": CHECKPOINT_FORMAT,
                "fingerprint": self.fingerprint,
                "done": self.done,
                "weight": self.weight,
                "act": self.act,
                **({"images": self.images} if self.images else {}),
            })


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."
