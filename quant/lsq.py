"""Making a calibrated fake-quant model trainable (QAT): LSQ step sizes and LSQ+ offsets.

Every quantizer that quantizes something under the plan starts from its PTQ calibration and
becomes trainable, except the log2 softmax quantizer:

* weight quantizers (per output channel, symmetric): the step size ``s`` is learned (LSQ,
  Esser et al. 2020); straight-through rounding passes gradients to the weights;
* uniform activation quantizers (per tensor): ``s`` is learned, and for asymmetric ones the
  offset too (LSQ+, Bhalgat et al. 2020; learned in code units, ``beta = -z * s``). This
  includes the clipped channel-wise post-LayerNorm quantizer: after calibration it is folded
  into the LayerNorm and the following linear layer, which leaves a per-tensor quantizer that
  trains like the others, while the folded LayerNorm affine and weights train as parameters;
* the log2 quantizer of attention probabilities stays **frozen** at its calibrated scale. Its
  levels ``s * 2^-k`` form a scale-equivariant grid: with straight-through rounding of the
  exponent, ``d/ds [s * 2^-round(log2(s/x))] = 0`` for every value inside the range, so the
  only step-size gradient would come from probabilities clipped above ``s``, which the
  calibrated maximum (about 1) leaves almost none of. It still passes straight-through
  gradients to ``q``, ``k`` and the layers before them.

Learning rates (:func:`param_groups`): LSQ scales the step-size gradient so that step sizes
change at the same relative rate as the weights. Adam normalises gradient magnitudes away, so
the equivalent under Adam is a per-quantizer learning rate ``lr * mean|s0| / mean|W|``
(``mean|W|`` over all quantized weights): a weight moves by about ``lr`` per step, i.e.
``lr / mean|W|`` relative, and so does each step size. Offsets, in code units, get
``lr / mean|W|``. :meth:`LearnedQuantizers.project_` keeps step sizes positive and offsets in
the code range after each optimiser step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .engine import quant_sites
from .modules import QuantMatMul
from .act_quantizers import ActQuantizer
from .quantizers import UniformQuantizer, WeightQuantizer
from .ranges import MIN_SCALE

__all__ = ["LearnedQuantizers", "make_quantizers_learnable", "param_groups", "LOG_FROZEN_REASON"]

LOG_FROZEN_REASON = (
    "log2 softmax quantizer: frozen at its calibrated scale (the straight-through step-size gradient "
    "of a log2 grid is zero inside the range; gradients still flow through it to q, k and earlier layers)"
)


@dataclass
class LearnedQuantizers:
    """The trainable quantizers of a QAT model, keyed by the quantizer's module name
    (e.g. ``"blocks.0.attn.qkv.weight_quant"``).

    ``weight`` / ``act``: the :class:`UniformQuantizer` whose ``scale`` (and, for activations
    with :attr:`UniformQuantizer.learnable_offset`, ``zero_point``) are parameters.
    ``frozen``: quantizers that quantize but are not trained, with the reason.
    ``weight_ref``: mean absolute value of all quantized weights (the LSQ learning-rate reference).
    """

    weight: dict[str, UniformQuantizer] = field(default_factory=dict)
    act: dict[str, UniformQuantizer] = field(default_factory=dict)
    frozen: dict[str, str] = field(default_factory=dict)
    weight_ref: float = 1.0

    def step_sizes(self) -> dict[str, nn.Parameter]:
        """Quantizer name -> learned step size."""
        return {name: q.scale for name, q in {**self.weight, **self.act}.items()}

    def offsets(self) -> dict[str, nn.Parameter]:
        """Quantizer name -> learned LSQ+ offset (asymmetric activation quantizers)."""
        return {name: q.zero_point for name, q in self.act.items() if q.learnable_offset}

    def parameters(self) -> list[nn.Parameter]:
        """All learned quantizer parameters (step sizes, then offsets)."""
        return list(self.step_sizes().values()) + list(self.offsets().values())

    @torch.no_grad()
    def project_(self) -> None:
        """Keep every step size >= MIN_SCALE and every offset inside ``[qmin, qmax]``
        (an optimiser step may overshoot; a non-positive step size is meaningless)."""
        for q in {**self.weight, **self.act}.values():
            q.scale.clamp_(min=MIN_SCALE)
            if q.learnable_offset:
                q.zero_point.clamp_(q.qmin, q.qmax)

    def summary(self) -> dict[str, Any]:
        """Counts for logs and results: learned step sizes, offsets, frozen quantizers."""
        return {"weight_step_sizes": len(self.weight), "act_step_sizes": len(self.act),
                "offsets": len(self.offsets()), "frozen": dict(self.frozen)}


def _act_quantizers(name: str, site: nn.Module) -> list[tuple[str, ActQuantizer]]:
    if isinstance(site, QuantMatMul):
        return [(f"{name}.a_quant", site.a_quant), (f"{name}.b_quant", site.b_quant)]
    return [(f"{name}.act_quant", site.act_quant)]


def make_quantizers_learnable(qmodel: nn.Module, offsets: bool = True) -> LearnedQuantizers:
    """Turn the calibrated quantizers of ``qmodel`` (from :func:`quant.quantize`) into LSQ
    parameters, in place, at the bits currently set; returns what was made learnable.

    Weight step sizes start from the weight range calibration, activation step sizes and
    offsets from the activation statistics (or the folded post-LN range): the PTQ model and
    the model returned here compute the same function. ``offsets=False`` keeps the calibrated
    zero points fixed (plain LSQ). Quantizers that are off (float under the plan) are skipped.
    Call before building the optimiser; afterwards every parameter shape is final, so a
    ``state_dict`` of the trained model loads into a model rebuilt the same way.
    """
    learned = LearnedQuantizers()
    weight_abs, weight_count = 0.0, 0
    for name, site in quant_sites(qmodel).items():
        wq: WeightQuantizer | None = getattr(site, "weight_quant", None)
        if wq is not None and wq.bits is not None:
            wq.make_learnable(site.weight)
            learned.weight[f"{name}.weight_quant"] = wq.quantizer
            weight_abs += float(site.weight.detach().abs().sum())
            weight_count += site.weight.numel()
        for qname, aq in _act_quantizers(name, site):
            if aq.bits is None:
                continue
            if aq.kind != "uniform":
                aq.materialize()  # fixed now, so the state_dict holds its final value
                learned.frozen[qname] = LOG_FROZEN_REASON
                continue
            aq.make_learnable(offset=offsets and not aq.symmetric)
            learned.act[qname] = aq.quantizer
    if weight_count:
        learned.weight_ref = max(weight_abs / weight_count, MIN_SCALE)
    return learned


def param_groups(qmodel: nn.Module, learned: LearnedQuantizers, lr: float, weight_decay: float = 0.0) -> list[dict[str, Any]]:
    """Optimiser parameter groups: the model's own parameters (weight decay on matrices only)
    and one group per learned step size / offset with the LSQ-equivalent learning rate (see
    the module docstring). Each group carries ``base_lr`` (its learning rate before any
    schedule) and a ``name``. Quantizer parameters never get weight decay."""
    quant_ids = {id(p) for p in learned.parameters()}
    decay, no_decay = [], []
    for pname, p in qmodel.named_parameters():
        if id(p) in quant_ids or not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "pos_embed" not in pname and not pname.endswith("_token") else no_decay).append(p)
    groups = [{"params": decay, "lr": lr, "base_lr": lr, "weight_decay": weight_decay, "name": "weights"},
              {"params": no_decay, "lr": lr, "base_lr": lr, "weight_decay": 0.0, "name": "weights_no_decay"}]
    ref = learned.weight_ref
    for name, s in learned.step_sizes().items():
        group_lr = lr * float(s.detach().abs().mean()) / ref
        groups.append({"params": [s], "lr": group_lr, "base_lr": group_lr, "weight_decay": 0.0, "name": f"{name}.scale"})
    for name, z in learned.offsets().items():
        groups.append({"params": [z], "lr": lr / ref, "base_lr": lr / ref, "weight_decay": 0.0, "name": f"{name}.zero_point"})
    return [g for g in groups if g["params"]]
