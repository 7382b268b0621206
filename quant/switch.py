"""``PlanSwitcher``: calibrate a fake-quant copy once, then switch it from plan to plan.

``quantize`` does prepare + calibrate + set bits for one plan. Calibration statistics do not
depend on the bits, so evaluating many plans (the demo: uniform and mixed at four budgets; a
joint-aware allocator scoring candidate plans) reuses one calibrated copy and only re-sets the
bits, which gives the same model as a fresh ``quantize`` call per plan at a fraction of the cost.
Like ``quantize``, every ``apply`` ends with :func:`quant.settle.settle_constant_inputs` (the
positions of the image-independent quantizer inputs found once, then a probe pass up to the last
of them per plan): ``set_bits`` drops the previous plan's scale nudges with the rest of the
installed parameters, and the nudges are recomputed for the new bits.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from .api import resolve_plan
from .config import QuantConfig
from .discovery import find_quantizable_layers
from .engine import calibrate, prepare, quant_sites
from .settle import ConstantInputs, SettleReport, recording_input_shape

__all__ = ["PlanSwitcher"]


class PlanSwitcher:
    """A calibrated fake-quant copy of ``model`` whose bits follow whichever plan was applied last."""

    def __init__(self, model: nn.Module, calib_data: Any, *, config: QuantConfig | None = None,
                 verbose: bool = False) -> None:
        self.config = config if config is not None else QuantConfig()
        self._layers = find_quantizable_layers(model)
        self.qmodel = prepare(model, self.config)
        with recording_input_shape(self.qmodel) as shapes:
            calibrate(self.qmodel, calib_data, verbose=verbose)
        self._sites = quant_sites(self.qmodel)
        self._constants = ConstantInputs(self.qmodel, shapes[0])
        #: what the last :meth:`apply` did to keep constant quantizer inputs off rounding boundaries
        self.settled: SettleReport | None = None

    def apply(self, plan: Any) -> nn.Module:
        """Set every site's bits from ``plan`` (an ``allocator.Plan`` or "W4A4"); returns the
        quantized model (the same object each time), in eval mode, with its image-independent
        quantizer inputs settled (:attr:`settled`)."""
        for name, (w, a) in resolve_plan(plan, self._layers, self.config).items():
            self._sites[name].set_bits(w, a)
        self.settled = self._constants.settle()
        return self.qmodel.eval()
