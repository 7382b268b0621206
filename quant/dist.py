"""The little of ``torch.distributed`` the library uses, in one place (quant is the lowest torch
package, so profiling and the app share it from here).

Under ``torchrun`` every process runs the same program; a function that supports several
processes asks :func:`world` for its rank and the number of processes, works on its share
(:func:`shard`), and combines the shares with the collectives below. Without an initialised
process group everything degrades to the single-process case (rank 0 of 1), so library code
needs no separate path.

:func:`init_from_env` starts the process group when ``torchrun``'s environment variables are
present: ``gloo`` on CPU, ``nccl`` when the processes use CUDA devices.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence, TypeVar

import torch
import torch.distributed as tdist

__all__ = ["world", "is_distributed", "is_main", "init_from_env", "shutdown", "shard", "split_evenly", "balanced_cuts",
           "all_gather_objects", "broadcast_object", "all_reduce_sum", "barrier", "local_device", "spawn"]

T = TypeVar("T")


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` without a process group."""
    if not is_distributed():
        return 0, 1
    return tdist.get_rank(), tdist.get_world_size()


def is_main() -> bool:
    """True on the process that writes files and prints results (rank 0)."""
    return world()[0] == 0


def local_device(device: str | torch.device) -> torch.device:
    """`device` for this process: a bare ``"cuda"`` under torchrun means ``cuda:LOCAL_RANK``."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return dev


def init_from_env(device: str | torch.device = "cpu") -> bool:
    """Join the process group described by torchrun's environment (``WORLD_SIZE`` > 1).

    Backend ``nccl`` for CUDA devices, ``gloo`` otherwise. Returns whether a group of more than
    one process is now active; a no-op without torchrun or when already initialised.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not tdist.is_available():
        return False
    if not tdist.is_initialized():
        dev = local_device(device)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        tdist.init_process_group(backend=backend)
    return is_distributed()


def shutdown() -> None:
    """Leave the process group (end of a torchrun program)."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def split_evenly(n: int, parts: int) -> list[range]:
    """``range(n)`` cut into `parts` contiguous ranges whose lengths differ by at most one."""
    base, extra = divmod(n, parts)
    out, start = [], 0
    for p in range(parts):
        stop = start + base + (1 if p < extra else 0)
        out.append(range(start, stop))
        start = stop
    return out


def shard(items: Sequence[T], costs: Sequence[float] | None = None) -> list[T]:
    """This process's share of `items`: contiguous, balanced by `costs` (default: equal).

    Contiguous shares keep work that shares a cached prefix (the layers of one transformer
    block) on one process; the cut points minimise the largest share's cost greedily.
    """
    rank, size = world()
    if size == 1:
        return list(items)
    if costs is None:
        return [items[i] for i in split_evenly(len(items), size)[rank]]
    bounds = balanced_cuts(costs, size)
    return list(items[bounds[rank]:bounds[rank + 1]])


def balanced_cuts(costs: Sequence[float], parts: int) -> list[int]:
    """Cut points ``0 = c_0 <= ... <= c_parts = len(costs)`` of contiguous parts of near-equal
    cost: each inner cut is the index whose running total is closest to ``p / parts`` of the whole."""
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + float(c))
    n, cuts = len(costs), [0]
    for p in range(1, parts):
        ideal = prefix[-1] * p / parts
        cuts.append(min(range(cuts[-1], n + 1), key=lambda j: abs(prefix[j] - ideal)))
    return cuts + [n]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's `obj`, in rank order (``[obj]`` without a process group)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world()[1]
    tdist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every process."""
    if not is_distributed():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of `t` over all processes (in place; returned for chaining)."""
    if is_distributed():
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t


def barrier() -> None:
    """Wait for every process (no-op alone)."""
    if is_distributed():
        tdist.barrier()


def spawn(fn: Callable[..., Any], nprocs: int, *args: Any, timeout_s: float = 120.0) -> list[Any]:
    """Run ``fn(*args)`` in `nprocs` fresh local processes joined in one ``gloo`` group (CPU)
    and return their results in rank order -- what ``torchrun --nproc-per-node N`` does, from
    Python (used by the tests). `fn` must be importable by name (a module-level function)."""
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_spawned, args=(nprocs, tmp, fn, args, timeout_s), nprocs=nprocs, join=True)
        return [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=False) for r in range(nprocs)]


def _spawned(rank: int, nprocs: int, tmp: str, fn: Callable[..., Any], args: tuple, timeout_s: float) -> None:
    import datetime

    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{os.path.join(tmp, 'rendezvous')}", rank=rank,
                             world_size=nprocs, timeout=datetime.timedelta(seconds=timeout_s))
    try:
        result = fn(*args)
        torch.save(result, os.path.join(tmp, f"rank{rank}.pt"))
    finally:
        tdist.destroy_process_group()
