"""GPTQ rounding: error-compensating weight quantization from the layer's input Hessian.

Re-implemented from the description in Frantar et al., "GPTQ: Accurate Post-Training
Quantization for Generative Pre-trained Transformers" (ICLR 2023). For a linear layer with
weight ``W`` (out x in) and calibration inputs ``X`` (n x in), the output error of a quantized
``Q`` is ``||(W - Q) X^T||^2 = tr((W-Q) H (W-Q)^T)`` with ``H = X^T X``. The input columns are
rounded one at a time; the rounding error of column ``j``, divided by the ``j``-th diagonal of
the (Cholesky-factored) inverse Hessian, is spread over the columns not yet rounded, which
is the optimal compensation of the optimal-brain-surgeon step. Rows are independent, so every
output channel is done at once, on the per-channel grid (scale, zero point) that the weight
quantizer derives from the unmodified weight: the result lies on that grid, so exporting it
as integer codes with the quantizer's scales is exact.

Works at any bit-width per layer (mixed plans): the Hessian is bit-independent.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .ranges import QParams

__all__ = ["HessianAccumulator", "layer_input_rows", "gptq_quantize"]

#: Columns rounded per block before the lazy update of the remaining columns.
BLOCK = 128


def layer_input_rows(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The rows ``X`` (n x in_features) that multiply the layer's flattened weight.

    Linear: every token. Conv: every receptive field (``F.unfold``), channel-major as the
    weight's ``(out, C*kh*kw)`` view. Grouped convolutions are not supported.
    """
    if isinstance(getattr(layer, "in_features", None), int):
        return x.reshape(-1, x.shape[-1])
    groups = getattr(layer, "groups", 1)
    if groups != 1:
        raise ValueError(f"GPTQ supports ungrouped convolutions only; this one has groups={groups}")
    cols = F.unfold(x, layer.weight.shape[-2:], dilation=layer.dilation, padding=layer.padding, stride=layer.stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


class HessianAccumulator:
    """Running ``X^T X / n`` (accumulated in float64) and mean of a layer's input rows."""

    def __init__(self) -> None:
        self.sum: torch.Tensor | None = None
        self.row_sum: torch.Tensor | None = None
        self.n = 0

    def add(self, rows: torch.Tensor) -> None:
        """Add ``rows`` (n x in). The product is taken of the rows centred on their own mean
        (a float32 GEMM, the fast path, unless the rows are float64: a float64 calibration pass,
        :mod:`quant.precision`) and the mean's part added back in float64: a LayerNorm fold
        later subtracts ``mid mid^T``-sized terms, and a raw float32 ``X^T X`` of channels far
        from zero with narrow ranges would lose the whole folded moment to cancellation."""
        if rows.shape[0] == 0:
            return  # nothing to add (its mean would be NaN)
        rows = rows.detach()
        rows = rows if rows.dtype == torch.float64 else rows.float()
        mean = rows.double().mean(dim=0)
        centred = rows - mean.to(rows.dtype)
        c_sum = centred.sum(dim=0).double()
        mean_f = mean.to(rows.dtype).double()  # what was subtracted, exactly
        xtx = ((centred.T @ centred).double() + mean_f[:, None] * c_sum[None, :] + c_sum[:, None] * mean_f[None, :]
               + rows.shape[0] * mean_f[:, None] * mean_f[None, :])
        total = c_sum + rows.shape[0] * mean_f
        if self.sum is None:
            self.sum, self.row_sum = xtx, total
        else:
            self.sum, self.row_sum = self.sum + xtx, self.row_sum + total
        self.n += rows.shape[0]

    def fold(self, mid: torch.Tensor, r: torch.Tensor) -> None:
        """Re-express the statistics for inputs ``(x - mid) / r`` (a LayerNorm fold, per channel):
        ``E[x'x'^T] = (E[xx^T] - mid E[x]^T - E[x] mid^T + mid mid^T) / (r r^T)``."""
        if self.sum is None:
            return
        mid, r = mid.double().to(self.sum.device), r.double().to(self.sum.device)
        mean = self.row_sum / self.n
        second = self.sum / self.n - mid[:, None] * mean[None, :] - mean[:, None] * mid[None, :] + mid[:, None] * mid[None, :]
        self.sum = second / (r[:, None] * r[None, :]) * self.n
        self.row_sum = (mean - mid) / r * self.n

    def hessian(self) -> torch.Tensor:
        if self.sum is None or self.n == 0:
            raise ValueError("no layer inputs were recorded; the layer was never reached by the calibration data")
        return self.sum / self.n


def _damped_inverse_factor(H: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of ``(H + d I)^-1`` with ``d = damp * mean(diag H)``.

    From a handful of calibration images ``H`` is singular, and in floating point the damped
    matrix or its inverse can fail to factor: the damping then grows tenfold (up to 1000x),
    which moves GPTQ towards round-to-nearest rather than failing. A statistic that came out
    indefinite (measured: one calibration image through a folded LayerNorm) is replaced by its
    nearest positive semi-definite matrix (negative eigenvalues set to 0) before that.
    """
    eye = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    for candidate in (H, None):
        if candidate is None:  # the nearest PSD matrix of the symmetrised statistic
            values, vectors = torch.linalg.eigh((H + H.T) / 2)
            candidate = (vectors * values.clamp(min=0)) @ vectors.T
        base = max(float(torch.diagonal(candidate).mean()), 1e-12)
        for factor in (1.0, 10.0, 100.0, 1000.0):
            lower, info = torch.linalg.cholesky_ex(candidate + eye * (damp * factor * base + 1e-12))
            if int(info) == 0:
                upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(lower), upper=True)
                if int(info) == 0:
                    return upper
    raise ValueError("gptq_quantize: the layer's input Hessian cannot be factored even with 1000x damping; "
                     "use QuantConfig(weight_rounding='nearest') for this model")


def _quantize_column(w: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """``(clamp(round(w / s + z)) - z) * s``, in place on one new tensor (the loop's hot spot)."""
    return w.div(scale).add_(zp).round_().clamp_(qmin, qmax).sub_(zp).mul_(scale)


@torch.no_grad()
def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, qp: QParams, damp: float = 0.01,
                  with_latent: bool = False, act_order: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``weight`` (out x ...) fake-quantized on the per-channel grid ``qp`` by GPTQ.

    With ``with_latent`` also returns the error-compensated weights just before each column was
    rounded: rounding them to nearest on the same grid gives the result, so QAT can start
    from them and reproduce the GPTQ model exactly.

    ``hessian`` is ``X^T X / n`` of the inputs (in x in, ``in`` = the flattened weight's
    columns). ``qp``'s scale/zero point are per output channel ``(out,)`` or scalars.
    Columns whose input is always zero are rounded to nearest (they never affect the output).
    ``damp`` adds ``damp * mean(diag H)`` to the diagonal for a well-conditioned inverse.
    ``act_order`` rounds the columns in decreasing order of ``diag H`` (GPTQ's "act-order"):
    the inputs with the most energy are rounded first, while every other column is still free
    to absorb their error. The grid is per output channel, so the order changes which errors
    are compensated, never the grid. Returns a tensor of ``weight``'s shape and dtype on the grid.
    """
    shape, dtype = weight.shape, weight.dtype
    W = weight.detach().reshape(shape[0], -1).double().clone()
    cols = W.shape[1]
    H = hessian.detach().double().to(W.device).clone()
    if H.shape != (cols, cols):
        raise ValueError(f"gptq_quantize: Hessian of shape {tuple(H.shape)} for a weight with {cols} input columns")
    scale = qp.scale.double().to(W.device).reshape(-1).expand(W.shape[0])
    zp = qp.zero_point.double().to(W.device).reshape(-1).expand(W.shape[0])
    order = torch.argsort(torch.diagonal(H), descending=True, stable=True) if act_order else None
    if order is not None:
        W, H = W[:, order], H[order][:, order]
    dead = torch.diagonal(H) <= 0
    H[dead, dead] = 1.0
    Hinv = _damped_inverse_factor(H, damp)
    Q = torch.empty_like(W)
    latent = torch.empty_like(W)
    for i1 in range(0, cols, BLOCK):
        i2 = min(i1 + BLOCK, cols)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        diag = Hinv1.diagonal().tolist()
        Q1 = Q[:, i1:i2]
        for i in range(i2 - i1):
            w = W1[:, i]  # final: later columns' updates never touch column i again
            q = _quantize_column(w, scale, zp, qp.qmin, qp.qmax)
            Q1[:, i] = q
            W1[:, i + 1:].addr_(w.sub(q).div_(diag[i]), Hinv1[i, i + 1:], alpha=-1)
        latent[:, i1:i2] = W1
        W[:, i2:] -= (W1 - Q1).div_(Hinv1.diagonal()) @ Hinv[i1:i2, i2:]
    if order is not None:
        inverse = torch.argsort(order)
        Q, latent = Q[:, inverse], latent[:, inverse]
    if with_latent:
        return Q.reshape(shape).to(dtype), latent.reshape(shape).to(dtype)
    return Q.reshape(shape).to(dtype)
