"""Where and how a command runs: ``--device``, ``--threads``, ``--workers``, and torchrun.

Every torch command calls :func:`setup` first. It checks the device (a GPU this machine lacks
is a one-line error, exit status 2, before any work), sets torch's thread count, and -- when
the command was started by ``torchrun --nproc-per-node N -m mixqvit ...`` -- joins the process
group (gloo on CPU, nccl on CUDA, one GPU per process) so that the library shares the work out:
``profile`` splits LRP batches and sensitivity layers, ``quantize --eval`` the test images,
``qat`` trains with DistributedDataParallel. Rank 0 alone writes files and prints results.
"""
from __future__ import annotations

import argparse
import atexit
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import argtypes
from .errors import OptionError

if TYPE_CHECKING:  # solve/compare build their parsers without importing torch
    import torch

__all__ = ["Runtime", "add_runtime_args", "setup"]


@dataclass(frozen=True)
class Runtime:
    """The resolved settings of this process."""

    device: torch.device
    workers: int
    rank: int
    world_size: int

    @property
    def main(self) -> bool:
        """Whether this process writes files and prints results (rank 0)."""
        return self.rank == 0


def add_runtime_args(p: argparse.ArgumentParser, *, workers: bool = True, threads: int | None = None,
                     distributed: bool = True) -> None:
    """``--device``, ``--threads`` (and ``--workers`` for commands that read test images).

    ``threads``: the default thread count (``None``: torch's choice; ``mixqvit train`` pins 1,
    which its bit-for-bit reproducibility is stated for). ``distributed=False``: a command that
    runs as one process (its ``--device`` help says so; :func:`setup` refuses torchrun)."""
    where = ("; under torchrun a bare 'cuda' gives each process its own GPU (cuda:LOCAL_RANK)" if distributed
             else "; one process (not for torchrun)")
    p.add_argument("--device", default="cpu", help=f"cpu, cuda, cuda:1, ... (default cpu){where}")
    p.add_argument("--threads", type=argtypes.positive_int, default=threads, metavar="N",
                   help="torch CPU threads per process (default: " + ("torch's choice" if threads is None else
                                                                   str(threads)) + ")")
    if workers:
        p.add_argument("--workers", type=argtypes.non_negative_int, default=0, metavar="N",
                       help="DataLoader worker processes decoding test images (default 0: in the main process)")


def setup(args: argparse.Namespace, *, distributed: bool = True) -> Runtime:
    """Apply ``--threads``, check ``--device``, join torchrun's process group if any
    (``distributed=False``: refuse to run under torchrun, whose processes would all do the same
    work and write the same files)."""
    import os

    import torch
    from quant import check_device, dist

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if not distributed and world_size > 1:
        raise OptionError(f"mixqvit {getattr(args, 'command', '')} runs as one process, not under torchrun "
                          f"(WORLD_SIZE={world_size}); start it with plain `mixqvit` (or python -m mixqvit)")
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        device = dist.local_device(check_device(args.device))
    except ValueError as exc:
        raise OptionError(f"--device {args.device}: {exc}") from None
    if distributed and dist.init_from_env(device):
        atexit.register(dist.shutdown)
    rank, world_size = dist.world()
    return Runtime(device, int(getattr(args, "workers", 0) or 0), rank, world_size)
