"""`stdout_silenced`: keep what native solver code writes to the process's stdout off it.

HiGHS (through highspy, scipy's `milp`/`linprog` and PuLP's HiGHS adapter) writes to file
descriptor 1 from C++: its copyright banner when the first instance of a process is built,
before any option can turn output off, and on large or troubled solves progress and warning
lines even with output switched off. A library's callers (the CLI's plan table, piped JSON)
must not see it, and Python-level redirection (`contextlib.redirect_stdout`) cannot catch
writes to the descriptor, so it is pointed at /dev/null for the duration. Python's own buffer
is flushed first so nothing of ours is lost or reordered. While it is active, output of other
threads to stdout is dropped too.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["stdout_silenced"]


@contextmanager
def stdout_silenced() -> Iterator[None]:
    """Send file descriptor 1 to /dev/null inside the block (restored whatever happens)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
