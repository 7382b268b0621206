"""CUDA gives the CPU's profile within float tolerance (runs only where a CUDA GPU exists; the
prepared benchmarks/gpu_check.py does the same at DeiT-S size, and the CLI, QAT and ViT-B timing)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from profiling import profile_model

from _profiling_fixtures import images, labels, tiny_deit, tiny_swin

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("build", [tiny_deit, tiny_swin])
def test_cuda_profile_equals_cpu_profile(build):
    """Importance within 1e-4 relative; each damage within 5% relative or 1e-3 of the table's
    largest (a last-bit difference can move a value across a rounding boundary: one step)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    data = [(images(6), labels(6))]
    cpu = profile_model(build(), data, bits=(2, 4, 8), batch_size=4, verbose=False)
    gpu = profile_model(build().cuda(), data, bits=(2, 4, 8), batch_size=4, verbose=False)
    np.testing.assert_allclose(gpu.importance, cpu.importance, rtol=1e-4)
    for a, b in ((gpu.weight_sensitivity, cpu.weight_sensitivity), (gpu.act_sensitivity, cpu.act_sensitivity)):
        tol = np.maximum(0.05 * np.abs(b), 1e-3 * np.abs(b).max())
        assert np.all(np.abs(a - b) <= tol), np.max(np.abs(a - b) / tol)
