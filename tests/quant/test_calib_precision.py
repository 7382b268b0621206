"""Calibration in float64 (``QuantConfig.calib_dtype``, :mod:`quant.precision`): the model comes
back unchanged in its own dtype, and another CPU's kernels calibrate the same quantized model."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from quant.gptq import HessianAccumulator
from quant.precision import computing_in
from quant_helpers import build_tiny, make_images

from calib_state import calibrated_state

#: The kernels of a CPU without AVX (ATen's scalar code, MKL and oneDNN at SSE4), as `make test`
#: reruns the recorded tests with: float32 GEMMs and reductions sum in another order there.
OTHER_KERNELS = {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"}


def _floating(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in list(model.named_parameters()) + list(model.named_buffers()) if v.is_floating_point()}


@settings(max_examples=6, deadline=None)
@given(kind=st.sampled_from(["vit", "deit", "swin"]), seed=st.integers(0, 100),
       dtype=st.sampled_from([torch.float64, torch.float16]))
def test_computing_in_restores_every_tensor(kind, seed, dtype):
    model = build_tiny(kind, seed)
    model.register_buffer("created_later", None)
    before = {k: v.detach().clone() for k, v in _floating(model).items()}
    params = dict(model.named_parameters())
    with computing_in(model, dtype):
        assert all(v.dtype == dtype for v in _floating(model).values())
        model.created_later = torch.ones(3, dtype=torch.float64)  # made inside: keeps its dtype
    after = _floating(model)
    assert after.pop("created_later").dtype == torch.float64
    assert after.keys() == before.keys()
    for k, v in after.items():
        assert v.dtype == before[k].dtype, k
        if dtype == torch.float64:  # float32 -> float64 -> float32 is exact
            assert torch.equal(v, before[k]), k
    assert all(p is params[k] for k, p in model.named_parameters())  # optimisers keep their Parameters


def test_computing_in_restores_after_an_error():
    model = build_tiny("vit")
    with pytest.raises(RuntimeError):
        with computing_in(model, torch.float64):
            model(torch.zeros(1, 1, 32, 32))  # float32 images into a float64 model
    assert {v.dtype for v in _floating(model).values()} == {torch.float32}


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 40), d=st.integers(1, 12), offset=st.floats(-1e4, 1e4), seed=st.integers(0, 2**31 - 1))
def test_hessian_of_float64_rows_is_exact(n, d, offset, seed):
    """Rows far from zero (a LayerNorm output before folding): float64 rows give X^T X to float64
    rounding, where float32 rows lose ~1e-7 of it."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(n, d, generator=g, dtype=torch.float64) + offset
    acc = HessianAccumulator()
    acc.add(rows[: n // 2])
    acc.add(rows[n // 2:])
    exact = rows.T @ rows
    assert torch.allclose(acc.sum, exact, rtol=1e-12, atol=1e-12 * float(exact.abs().max()))
    assert torch.allclose(acc.row_sum, rows.sum(dim=0), rtol=1e-12, atol=1e-12 * float(rows.abs().sum()))


@pytest.mark.parametrize("kind", ["vit", "swin"])
def test_other_kernels_calibrate_the_same_model(kind, tmp_path):
    """Quantized here and in a process pinned to SSE kernels (which sum float32 in another order),
    the float64 calibration gives bit-identical scales, zero points, folded LayerNorms, GPTQ
    weights and Hessians."""
    model, images = build_tiny(kind, 3), make_images(48, seed=4)
    given, out = tmp_path / "given.pt", tmp_path / "state.pt"
    torch.save({"kind": kind, "weights": model.state_dict(), "images": images, "calib_dtype": "float64"}, given)
    env = {**os.environ, **OTHER_KERNELS, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(Path(__file__).resolve().parent / "calib_state.py"), str(given), str(out)],
                   env=env, check=True, capture_output=True, timeout=600)
    other = torch.load(out)
    assert other["capability"] == "DEFAULT"  # the child really ran ATen's scalar kernels
    mine = calibrated_state(model, images, "float64")
    assert mine.keys() == other["state"].keys()
    differing = [k for k, v in mine.items() if not torch.equal(v, other["state"][k])]
    assert not differing, differing
