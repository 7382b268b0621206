"""Learned weight rounding (AdaRound), fitted block by block (BRECQ).

Re-implemented from the descriptions in Nagel et al., "Up or Down? Adaptive Rounding for
Post-Training Quantization" (ICML 2020) and Li et al., "BRECQ: Pushing the Limit of Post-Training
Quantization by Block Reconstruction" (ICLR 2021).

Rounding to nearest (or GPTQ's rounding) decides each weight's integer code from that weight
alone. AdaRound instead learns, per weight, whether to round down or up: with ``base =
floor(w / s + z)`` on the weight quantizer's per-channel grid, the code is ``clamp(base + h(V),
qmin, qmax)`` where ``h(V) = clamp(sigmoid(V) (zeta - gamma) + gamma, 0, 1)`` is a rectified
sigmoid (``zeta = 1.1``, ``gamma = -0.1``: it reaches 0 and 1 exactly, so a decided weight stops
receiving gradient). ``V`` is fitted so that the quantized block's output matches the float
block's, with a regulariser ``1 - |2h - 1|^beta`` whose exponent ``beta`` is annealed from 20 to 2
(after a warm-up without it) so that every ``h`` ends at 0 or 1. Afterwards each weight is
*hardened* to ``base + [V >= 0]`` (``h(V) >= 1/2`` exactly when ``V >= 0``) and written back as a
grid value, so export and packing see ordinary integer codes on the same grid.

Starting point: ``base`` is taken of the weight the quantizer holds after
:func:`quant.make_quantizers_learnable`, i.e. GPTQ's error-compensated weights when the model was
GPTQ-rounded, whose nearest rounding *is* GPTQ's result. ``V`` starts at the inverse of the
fractional part (the soft weight equals that latent weight, as in the paper) and its sign is
set to the current rounding, so the hardened model before any step is bit-identical to the
GPTQ-rounded one (tested). The weight step size may be learned jointly: codes are ``base + h``
with ``base`` fixed, times the (learned) scale.

BRECQ's unit is a block: each transformer block (a module whose class name ends in ``Block``) is
fitted in forward order on the inputs that the already-fitted quantized units before it
produce, against the float model's output of the same block. The quantized weights outside the
blocks (the patch embedding, Swin's patch merging, the heads) would otherwise keep GPTQ's
layer-wise rounding, and at 3-4 bits on every layer they carry a share of the error that no
block can undo; :func:`find_units` therefore also makes each of them part of a unit: the
outermost module around it that holds no block (``patch_embed``, ``layers.1.downsample``,
``head``, ``head_dist``). Such a module's output is what the next block or the loss sees, and it
is not changed by the post-LayerNorm fold (which rescales a LayerNorm's output and the next
linear's input columns, both inside the unit), so it can be matched to the float model's output
of the same module exactly as a block's is (a head with fewer calibration images than input
features is left alone: :func:`quant.reconstruct._too_few_images`). A unit whose hardened output
error on the calibration inputs ends above its starting error is put back as it started, so the
stage never makes a unit worse on the calibration data.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .quantizers import UniformQuantizer, WeightQuantizer, _broadcast

__all__ = ["LearnedRounding", "attach_rounding", "find_blocks", "find_units", "UNITS", "beta_schedule", "ZETA", "GAMMA"]

#: Stretch of the rectified sigmoid (the paper's zeta and gamma).
ZETA, GAMMA = 1.1, -0.1


def _h(v: torch.Tensor) -> torch.Tensor:
    """Rectified sigmoid: the soft rounding offset in [0, 1]."""
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def _h_inverse(h: torch.Tensor) -> torch.Tensor:
    """``V`` with ``_h(V) = h`` for ``h`` in [0, 1] (finite: the stretch keeps the logit bounded)."""
    p = (h - GAMMA) / (ZETA - GAMMA)
    return torch.log(p) - torch.log1p(-p)


class LearnedRounding(nn.Module):
    """The learned rounding of one weight quantizer whose grid is installed and learnable
    (:meth:`quant.quantizers.WeightQuantizer.make_learnable`).

    While attached it replaces the quantizer's output through a forward hook: the soft weight
    ``(clamp(base + h(V)) - z) * s`` while :attr:`soft` is set, the hardened one otherwise.
    :meth:`harden_` writes the hardened grid values into the layer's weight and detaches.
    """

    def __init__(self, weight: nn.Parameter, weight_quant: WeightQuantizer) -> None:
        super().__init__()
        grid = weight_quant.quantizer
        if weight_quant.bits is None or not grid.learnable:
            raise ValueError("LearnedRounding needs a weight quantizer with bits set and its grid installed "
                             "(quant.make_quantizers_learnable(qmodel) first)")
        self.weight, self.weight_quant, self.grid = weight, weight_quant, grid
        with torch.no_grad():
            s, z = self._s_z()
            code = weight.detach().float() / s + z  # the ops of fake_quantize, before its clamp
            base = torch.floor(code)
            start = torch.round(torch.clamp(code, grid.qmin, grid.qmax))  # the current rounding
            up = (start - base) >= 1  # clamped codes: either choice gives the same code
            v = _h_inverse((code - base).clamp(0.0, 1.0))
            v = torch.where(up, v.clamp(min=0.0), v.clamp(max=-1e-4))  # sign = the current rounding
        self.register_buffer("base", base)
        self.v = nn.Parameter(v)
        self.soft = False
        self._hook = weight_quant.register_forward_hook(self._replace)

    def _s_z(self) -> tuple[torch.Tensor, torch.Tensor]:
        g: UniformQuantizer = self.grid
        return _broadcast(g.scale, self.weight, g.channel_axis), _broadcast(g.zero_point, self.weight, g.channel_axis)

    def offsets(self) -> torch.Tensor:
        """``h(V)``, the soft rounding offsets in [0, 1]."""
        return _h(self.v)

    def codes(self) -> torch.Tensor:
        """The hardened integer codes (as floats) on the quantizer's grid."""
        return torch.clamp(self.base + (self.v.detach() >= 0).float(), self.grid.qmin, self.grid.qmax)

    def quantized(self) -> torch.Tensor:
        """The weight as the layer uses it now (soft or hard)."""
        s, z = self._s_z()
        if self.soft:
            code = torch.clamp(self.base + self.offsets(), self.grid.qmin, self.grid.qmax)
            return (code - z) * s
        return (self.codes() + (0.0 - z)) * s  # fake_quantize's ops: bit-identical to its output

    def regulariser(self, beta: float) -> torch.Tensor:
        """Mean of ``1 - |2 h(V) - 1|^beta``: 0 when every offset is 0 or 1."""
        return (1 - (2 * self.offsets() - 1).abs().pow(beta)).mean()

    def _replace(self, module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        return self.quantized().to(out.dtype)

    @torch.no_grad()
    def harden_(self) -> None:
        """Write the hardened grid values into the layer's weight and stop replacing the
        quantizer's output: the quantizer then rounds them to these same codes."""
        self.soft = False
        self.weight.copy_(self.quantized().to(self.weight.dtype))
        self.detach_()

    def detach_(self) -> None:
        """Stop replacing the quantizer's output (the weight is left as it is)."""
        self._hook.remove()


def attach_rounding(block: nn.Module) -> dict[str, LearnedRounding]:
    """A :class:`LearnedRounding` for every quantized weight inside ``block`` (by site name)."""
    out = {}
    for name, module in block.named_modules():
        wq = getattr(module, "weight_quant", None)
        if isinstance(wq, WeightQuantizer) and wq.bits is not None:
            out[name] = LearnedRounding(module.weight, wq)
    return out


def find_blocks(model: nn.Module) -> list[str]:
    """Names of the transformer blocks (outermost modules whose class name ends in ``Block``),
    in registration order, which is the forward order for timm's ViT, DeiT and Swin."""
    names: list[str] = []
    for name, module in model.named_modules():
        if name and type(module).__name__.endswith("Block") and not any(name.startswith(b + ".") for b in names):
            names.append(name)
    return names


#: Which weights :func:`find_units` puts in units: ``"all"`` every quantized weight, ``"blocks"``
#: only those inside transformer blocks (BRECQ's units alone; the others keep their rounding).
UNITS = ("all", "blocks")


def find_units(model: nn.Module, units: str = "all") -> list[str]:
    """Names of the modules that learned rounding fits one at a time, in registration order.

    The transformer blocks (:func:`find_blocks`) and, with ``units="all"``, for every quantized
    weight outside them the outermost module containing it that contains no block (never the
    model itself: in a model without blocks, each weight's top-level child). Outermost, so that
    layers that only make sense together (Swin's patch-merging LayerNorm and linear, a patch
    embedding's convolution and norm) are fitted together on the output that the rest of the
    network sees. The units are disjoint and every quantized weight
    lies in exactly one of them (with ``"all"``). Forward order may differ from registration
    order; :func:`quant.reconstruct.fit_rounding` sorts them by a forward pass.
    """
    if units not in UNITS:
        raise ValueError(f"find_units: units={units!r}; expected one of {UNITS}")
    blocks = find_blocks(model)
    if units == "blocks":
        return blocks
    inside = tuple(b + "." for b in blocks)
    chosen = set(blocks)
    for name, module in model.named_modules():
        wq = getattr(module, "weight_quant", None)
        if not name or name.startswith(inside) or not (isinstance(wq, WeightQuantizer) and wq.bits is not None):
            continue
        parts = name.split(".")
        prefixes = (".".join(parts[:i]) for i in range(1, len(parts) + 1))
        chosen.add(next(p for p in prefixes if not any(b == p or b.startswith(p + ".") for b in blocks)))
    return [name for name, _ in model.named_modules() if name in chosen]


def beta_schedule(step: int, steps: int, warmup: float = 0.2, start: float = 20.0, end: float = 2.0) -> float | None:
    """The regulariser's exponent at ``step`` of ``steps``: ``None`` (no regulariser) during the
    first ``warmup`` share, then annealed from ``start`` to ``end`` (cosine)."""
    first = int(warmup * steps)
    if step < first:
        return None
    t = (step - first) / max(steps - first - 1, 1)
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * t))
