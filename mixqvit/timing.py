"""Wall-clock timing of a block, for the times the commands and the demo print."""
from __future__ import annotations

import time
from typing import Any

__all__ = ["Timer"]


class Timer:
    """``with Timer() as t: ...``; then ``t.seconds`` (wall clock, perf_counter)."""

    def __enter__(self) -> "Timer":
        self._start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self._start
