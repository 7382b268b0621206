"""What a calibration produces on this CPU's kernels: run as a script under other kernels.

    python tests/quant/calib_state.py IN.pt OUT.pt

reads a tiny model (its family, float weights) and calibration images from ``IN.pt`` -- made by
the caller: random initialisation itself differs across kernels -- and saves
:func:`calibrated_state` of the model quantized at W3A3 with ``IN.pt``'s ``calib_dtype``, and the
ATen CPU capability it ran with. ``tests/quant/test_calib_precision.py`` compares it with the
same computed in the test's own process.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quant import QuantConfig, quant_sites, quantize  # noqa: E402
from quant_helpers import build_tiny  # noqa: E402


def calibrated_state(model: torch.nn.Module, images: torch.Tensor, calib_dtype: str) -> dict[str, torch.Tensor]:
    """Every tensor calibration decides: the quantized model's state (scales, zero points, folded
    LayerNorms), each site's GPTQ-rounded weight and its input Hessian."""
    qmodel = quantize(model, "W3A3", images, config=QuantConfig(calib_dtype=calib_dtype))
    state = {f"state.{k}": v.detach().clone() for k, v in qmodel.state_dict().items()}
    with torch.no_grad():
        for name, site in quant_sites(qmodel).items():
            if hasattr(site, "weight_quant"):
                state[f"weight.{name}"] = site.quantized_weight().clone()
                if site.weight_quant.hessian is not None:
                    state[f"hessian.{name}"] = site.weight_quant.hessian.clone()
    return state


if __name__ == "__main__":
    given = torch.load(sys.argv[1])
    torch.set_num_threads(1)
    model = build_tiny(given["kind"])
    model.load_state_dict(given["weights"])
    torch.save({"capability": torch.backends.cpu.get_cpu_capability(),
                "state": calibrated_state(model, given["images"], given["calib_dtype"])}, sys.argv[2])
