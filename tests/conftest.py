"""Shared test settings: one torch thread (the CI machine has 2 cores and oversubscription is slow)."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # the torch-free packages are testable without torch
    pass
