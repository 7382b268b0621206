"""Keep the C heap from fragmenting during profiling's large passes (LRP, calibration).

Why: glibc's malloc serves a request above its *mmap threshold* (128 KiB at start) with a
mapping of its own, returned to the system when freed, and the rest from its heap. Each time a
mapped block is freed, glibc raises the threshold to that block's size (up to 32 MiB), so from
then on tensors of up to that size come from the heap. LRP's forward and backward make and free
hundreds of MB of such tensors per batch; on the heap they fragment, and the peak resident
memory of ``mixqvit profile`` crept up with the number of LRP batches (+7.4%, +12.5%, +14.8% from 32
to 256 images in three runs, `benchmarks/profiling.py --memory`), which is why batching alone did
not make memory independent of the calibration set.

Two remedies, each where it is cheapest. `trim_heap` (``malloc_trim``) after every LRP batch
hands the freed pages back once per batch, so the next batch does not stand on the fragments of
the last: the CLI's peak grew +4.0% from 32 to 256 images (1598 -> 1662 MB) against +12.2%
without, at no measurable CPU cost (23.6 / 155.6 s against 25.0 / 154.9 s). `bounded_heap` holds
the threshold at glibc's 128 KiB start value around calibration (one pass of larger batches), so
every large tensor there is a mapping of its own and goes back to the system when freed. Holding
it around LRP as well kept the peak flatter still (+1.1% to +1.4%) but cost LRP +23% CPU (3.25
instead of 2.64 forward-equivalents on DeiT-S), and around the sensitivity's many passes it
would cost more (``MALLOC_MMAP_THRESHOLD_=131072`` for the whole process: +28% to +42%). On exit
the threshold is left fixed at 32 MiB (glibc's own adjustment stops at that value, and glibc
cannot be told to adjust it again) and the freed heap is handed back with ``malloc_trim``.

Only allocation changes: the computed numbers do not depend on it (tensors stay 64-byte
aligned). Where the C library is not glibc (macOS, Windows, musl) or the user tuned malloc
through the environment (``MALLOC_MMAP_THRESHOLD_``, ``GLIBC_TUNABLES``), it does nothing;
``MIXQVIT_HEAP_BOUND=0`` switches it off (glibc as it is: less CPU, memory that grows with the
calibration set).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from typing import Any, Iterator

__all__ = ["bounded_heap", "trim_heap"]

_M_TRIM_THRESHOLD = -1  # mallopt parameters, <malloc.h>
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024  # glibc's start value (DEFAULT_MMAP_THRESHOLD_MIN)
MMAP_THRESHOLD_AFTER = 32 * 1024 * 1024  # the cap of glibc's own adjustment on 64-bit systems
_USER_TUNED = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")

_lock = threading.Lock()
_depth = 0


def _load_glibc() -> Any:
    """The process's C library when it is glibc, malloc is not tuned by the user and the bound is
    not switched off (``MIXQVIT_HEAP_BOUND=0``), else None."""
    if any(k in os.environ for k in _USER_TUNED) or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return None
    if os.environ.get("MIXQVIT_HEAP_BOUND", "1") == "0":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only
        libc.mallopt, libc.malloc_trim  # noqa: B018
    except (OSError, TypeError, AttributeError):  # no dlopen(NULL) (Windows), or not glibc
        return None
    return libc


_LIBC = _load_glibc()


@contextlib.contextmanager
def bounded_heap() -> Iterator[None]:
    """Serve large allocations by their own mappings while the block runs (see the module text).

    Re-entrant and shared between threads: the outermost block sets and resets the threshold.
    """
    global _depth
    libc = _LIBC
    if libc is None:
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_AFTER)
                libc.mallopt(_M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD_AFTER)
                libc.malloc_trim(0)


def trim_heap() -> None:
    """Hand the heap's free pages back to the system now (``malloc_trim``; a no-op where the bound
    is off). Cheap enough to call after every batch of a repeated pass: freed space is returned
    once per batch instead of every large tensor being mapped afresh, so a batch's peak does not
    stand on the fragments of the batches before it."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
