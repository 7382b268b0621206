"""Sensitivity rows measured by several processes (torchrun), merged into one checkpoint.

Each process records the layers it measures in its own part file beside the checkpoint
(``<checkpoint>.part<rank>``, same fingerprint), so an interrupted multi-process run loses at
most one layer per process; on start every process also reads the rows of any part files left
by an earlier run. At the end the rows of all processes are gathered, every process gets the
whole tables, and rank 0 writes the merged checkpoint and removes the part files.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from quant import dist

from .checkpoint import SensitivityCheckpoint

__all__ = ["PartCheckpoints"]


class PartCheckpoints:
    """This process's part of a sensitivity checkpoint, and the merge of all parts into `main`."""

    def __init__(self, path: str | os.PathLike | None, fingerprint: dict[str, Any],
                 main: SensitivityCheckpoint) -> None:
        self.main, self.path = main, None if path is None else Path(path)
        rank, _ = dist.world()
        if self.path is not None:
            for old in sorted(self.path.parent.glob(self.path.name + ".part*")):
                part = SensitivityCheckpoint(old, fingerprint)
                _absorb(main, part.weight, part.act, part.done, part.images)  # refuses a foreign part file
        self.mine = SensitivityCheckpoint(None if self.path is None else f"{self.path}.part{rank}", fingerprint)
        self.mine.weight, self.mine.act, self.mine.done = dict(main.weight), dict(main.act), list(main.done)
        self.mine.images = dict(main.images)
        dist.barrier()  # every process has read the old part files before any writes its own

    def record(self, name: str, weight_row: list[float] | None, act_row: list[float] | None,
               images: dict[str, list[int]] | None = None) -> None:
        """Store one finished layer in this process's part file."""
        self.mine.record(name, weight_row, act_row, images)

    def merge(self) -> None:
        """Gather every process's rows into `main` (all processes); rank 0 writes it and
        removes the part files."""
        mine = self.mine
        for part in dist.all_gather_objects((mine.weight, mine.act, mine.done, mine.images)):
            _absorb(self.main, *part)
        if dist.is_main() and self.path is not None and self.main.done:
            last = self.main.done[-1]
            self.main.record(last, self.main.weight.get(last), self.main.act.get(last))  # writes the whole file
            for old in self.path.parent.glob(self.path.name + ".part*"):
                old.unlink(missing_ok=True)
        dist.barrier()


def _absorb(main: SensitivityCheckpoint, weight: dict[str, list[float]], act: dict[str, list[float]],
            done: list[str], images: dict[str, dict[str, list[int]]]) -> None:
    """Add the finished layers of one part (its rows and images used) that `main` lacks."""
    for name in done:
        if name not in main.done:
            for mine, theirs in ((main.weight, weight), (main.act, act), (main.images, images)):
                if name in theirs:
                    mine[name] = theirs[name]
            main.done.append(name)
