"""Progress of long work, visible both on a terminal and in a log file.

On a terminal a tqdm bar; when stderr is not a terminal (a batch job, ``nohup``, CI, a pipe to
a log), where a bar writes nothing useful, a plain line every ``every_s`` seconds or every
``every_frac`` of the work, whichever comes first, with the rate and an ETA::

    sensitivity: 124/620 pairs (20%) 3m12s elapsed, ETA 12m48s

One helper for every long loop of the library (LRP batches, sensitivity pairs, evaluation, QAT
steps), so the behaviour is the same everywhere. Under torchrun only rank 0 reports.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, TextIO

from tqdm.auto import tqdm

from .dist import is_main

__all__ = ["Progress", "format_seconds"]


def format_seconds(s: float) -> str:
    """``"42s"``, ``"3m12s"``, ``"2h05m"``."""
    s = max(0.0, float(s))
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


class Progress:
    """Count work done towards `total`; a tqdm bar on a terminal, periodic lines otherwise.

    ``enabled=False`` (``verbose=False``) or a process other than rank 0: silent. ``stream``
    (default ``sys.stderr``) and ``clock`` exist for tests.
    """

    def __init__(self, total: int, desc: str, unit: str = "it", *, enabled: bool = True, initial: int = 0,
                 every_s: float = 30.0, every_frac: float = 0.1, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.desc, self.unit = int(total), desc, unit
        self.n = self.start_n = int(initial)
        self.every_s, self.every_frac = every_s, every_frac
        self.stream = sys.stderr if stream is None else stream
        self.clock = clock
        self.enabled = enabled and is_main() and self.total > 0
        self.bar = None
        self.t0 = self.last_t = clock()
        self.last_n = self.n
        self.postfix: dict[str, Any] = {}
        if self.enabled and _isatty(self.stream):
            self.bar = tqdm(total=self.total, initial=self.n, desc=desc, unit=unit, leave=False, file=self.stream)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1, **postfix: Any) -> None:
        """`n` more units done; `postfix` values (e.g. a running loss) are shown too."""
        self.n += n
        self.postfix.update(postfix)
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(**postfix)
            return
        now = self.clock()
        due_time = now - self.last_t >= self.every_s
        due_frac = self.n - self.last_n >= self.every_frac * self.total
        if due_time or due_frac or self.n >= self.total:
            self._line(now)

    def _line(self, now: float) -> None:
        elapsed = now - self.t0
        done = self.n - self.start_n
        pct = 100.0 * self.n / self.total
        text = f"{self.desc}: {self.n}/{self.total} {self.unit} ({pct:.0f}%) {format_seconds(elapsed)} elapsed"
        if 0 < done and self.n < self.total:
            text += f", ETA {format_seconds(elapsed / done * (self.total - self.n))}"
        if self.postfix:
            text += " " + " ".join(f"{k}={v}" for k, v in self.postfix.items())
        print(text, file=self.stream, flush=True)
        self.last_t, self.last_n = now, self.n

    def close(self) -> None:
        """Finish: close the bar (a log already has its 100% line)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
