"""Pure tensor functions: quantization parameters, fake quantization, range estimation.

Kept free of ``nn.Module`` state so that the weight and activation quantizers (and QAT)
share one implementation of the arithmetic, and so it can be property-tested directly.

Conventions: a range is a pair ``(lo, hi)`` of tensors of shape ``(C,)`` (per channel) or
``()`` (per tensor). Ranges are always widened to contain 0, so that 0 is exactly
representable (padding, ReLU/GELU zeros, masked attention) and the zero point is an integer.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from allocator.bits import BITS_RANGE_TEXT, MAX_BITS, MIN_BITS

__all__ = [
    "QParams",
    "round_ste",
    "fake_quantize",
    "qparams_from_range",
    "estimate_range",
    "check_bits",
    "log_quantize",
    "log_scale_search",
    "log_base_search",
    "SEARCH_PERCENTILES",
]

#: Smallest scale ever used; guards zero-width ranges (constant channels, dead units).
MIN_SCALE = 1e-10


def check_bits(bits: int | None, what: str = "bits") -> int | None:
    """Validate a bit-width: ``None`` (float) or an int in the supported range (``allocator.bits``)."""
    if bits is None:
        return None
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"{what} must be an int in {BITS_RANGE_TEXT} or None (float); got {bits!r}")
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"{what}={bits} is outside the supported {BITS_RANGE_TEXT} (use None for float)")
    return bits


class QParams(NamedTuple):
    """``(scale, zero_point, qmin, qmax)``; scale and zero_point are float tensors."""

    scale: torch.Tensor
    zero_point: torch.Tensor
    qmin: int
    qmax: int


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest with a straight-through gradient (d round(x)/dx := 1)."""
    return x + (torch.round(x) - x).detach()


def fake_quantize(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int
) -> torch.Tensor:
    """``(round(clamp(x/s + z, qmin, qmax)) - z) * s`` with straight-through rounding.

    Clamping before rounding (as LSQ does; identical values since ``z``, ``qmin``, ``qmax``
    are integers) gives the usual STE: gradient w.r.t. ``x`` is 1 where ``x/s + z`` lies in
    ``[qmin, qmax]`` and 0 where clamped; w.r.t. ``scale`` it is the LSQ gradient, so a
    learnable scale works. ``scale``/``zero_point`` must already broadcast against ``x``.
    """
    q = round_ste(torch.clamp(x / scale + zero_point, qmin, qmax))
    return (q - zero_point) * scale


def qparams_from_range(lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool) -> QParams:
    """Scale and zero point of a ``bits``-bit uniform quantizer covering ``[lo, hi]``.

    Symmetric: zero point 0; signed levels ``-2^(b-1) .. 2^(b-1)-1`` with
    ``s = max|x| / (2^(b-1)-1)``, or unsigned ``0 .. 2^b-1`` when every ``lo >= 0`` (so a
    non-negative tensor does not waste its sign bit). Asymmetric: ``0 .. 2^b-1`` with
    ``s = (hi-lo)/(2^b-1)`` and integer ``z = round(-lo/s)``.
    """
    check_bits(bits)
    lo = torch.minimum(lo.float(), torch.zeros_like(lo, dtype=torch.float32))
    hi = torch.maximum(hi.float(), torch.zeros_like(hi, dtype=torch.float32))
    if symmetric:
        if bool((lo >= 0).all()):
            qmin, qmax = 0, 2**bits - 1
            scale = hi / qmax
        else:
            qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
            scale = torch.maximum(-lo, hi) / qmax
        scale = scale.clamp(min=MIN_SCALE)
        return QParams(scale, torch.zeros_like(scale), qmin, qmax)
    qmin, qmax = 0, 2**bits - 1
    scale = ((hi - lo) / qmax).clamp(min=MIN_SCALE)
    zero_point = torch.clamp(torch.round(-lo / scale), qmin, qmax)
    return QParams(scale, zero_point, qmin, qmax)


def _quantile_rows(rows: torch.Tensor, qs: list[float]) -> torch.Tensor:
    """Per-row quantiles ``(len(qs), C)``, each row sorted once for all ``qs`` (bit-identical to
    one ``torch.quantile`` call per q, several times faster); also works past
    ``torch.quantile``'s input-size limit. Interpolated in float64 and rounded to the rows' dtype:
    a float32 interpolation differs in the last bit between CPU kernels (with and without FMA)."""
    n = rows.shape[1]
    if rows.numel() <= 8_000_000:
        wide = rows.double()
        return torch.quantile(wide, torch.tensor(qs, dtype=wide.dtype, device=rows.device), dim=1).to(rows.dtype)
    ks = [min(max(int(round(q * (n - 1))) + 1, 1), n) for q in qs]
    return torch.stack([rows.kthvalue(k, dim=1).values for k in ks])


#: Candidate percentiles of the ``"search"`` method (RepQ-ViT's activation range search).
SEARCH_PERCENTILES = (99.9, 99.99, 99.999)


def _lowest_error(rows: torch.Tensor, candidates, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the candidate range ``(lo, hi)`` with the smallest squared quantization error
    of the row's values (the first one on ties). The errors are summed in float64: a float32 sum
    depends on the CPU's kernels (the order they add in), and near-equal candidates would then be
    chosen differently on another CPU."""
    best_err = best_lo = best_hi = None
    for lo, hi in candidates:
        scale, zp, qmin, qmax = qparams_from_range(lo, hi, bits, symmetric)
        err = (fake_quantize(rows, scale[:, None], zp[:, None], qmin, qmax) - rows).double().pow(2).sum(dim=1)
        if best_err is None:
            best_err, best_lo, best_hi = err, lo.clone(), hi.clone()
            continue
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_lo = torch.where(better, lo, best_lo)
        best_hi = torch.where(better, hi, best_hi)
    return best_lo, best_hi


def estimate_range(
    rows: torch.Tensor,
    method: str,
    bits: int,
    symmetric: bool,
    percentile: float = 99.99,
    grid: int = 40,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipping range ``(lo, hi)`` of each row of ``rows`` (shape ``(C, n)``) for ``bits`` bits.

    ``"minmax"`` and ``"percentile"`` do not depend on ``bits``; ``"mse"`` tries
    ``grid`` shrink factors ``a`` in [0.1, 1] of the min-max range (``[a*lo, a*hi]``) and keeps,
    per row, the one with the smallest squared quantization error of the row's values.
    ``"search"`` (RepQ-ViT) tries the ranges ``[q(1-p), q(p)]`` between the row's quantiles
    for ``p`` in :data:`SEARCH_PERCENTILES` and keeps the one with the smallest squared error.
    """
    rows = rows.detach().float()
    if rows.dim() != 2 or rows.shape[1] == 0:
        raise ValueError(f"estimate_range expects a non-empty (C, n) tensor, got shape {tuple(rows.shape)}")
    if method == "minmax":
        return rows.amin(dim=1), rows.amax(dim=1)
    if method == "percentile":
        p = percentile / 100.0
        lo, hi = _quantile_rows(rows, [1.0 - p, p])
        return lo, hi
    if method == "mse":
        lo0, hi0 = rows.amin(dim=1), rows.amax(dim=1)
        return _lowest_error(rows, ((lo0 * a, hi0 * a) for a in torch.linspace(1.0, 0.1, grid).tolist()), bits, symmetric)
    if method == "search":
        bounds = _quantile_rows(rows, [q for p in SEARCH_PERCENTILES for q in (1.0 - p / 100.0, p / 100.0)])
        return _lowest_error(rows, zip(bounds[0::2], bounds[1::2]), bits, symmetric)
    raise ValueError(f"unknown range method {method!r}; expected 'minmax', 'percentile', 'mse' or 'search'")


#: Largest exponent of a log quantizer level: 2^-64 is far below any meaningful probability,
#: and keeping levels normal float32 numbers keeps the arithmetic exact.
LOG_MAX_EXPONENT = 64


def log_quantize(x: torch.Tensor, scale: torch.Tensor, bits: int, base: str) -> torch.Tensor:
    """Nearest (in the log domain) of the levels ``scale * base^-k``, ``k = 0..K``, or 0.

    ``base`` is ``"log2"`` (2) or ``"logsqrt2"`` (sqrt 2). ``K = 2^bits - 2`` (capped at
    2^-64), so with the zero level there are at most ``2^bits`` levels. Values above ``scale``
    clip to ``scale``. No gradient (callers add the straight-through estimator).
    """
    steps = 1 if base == "log2" else 2
    max_code = min(2**bits - 2, LOG_MAX_EXPONENT * steps)
    with torch.no_grad():
        ratio = (x.float() / scale).clamp(min=0.0)
        code = torch.round(-torch.log2(ratio) * steps).clamp(min=0.0)  # log2(0) = -inf -> inf
        xq = scale * torch.exp2(-code / steps)
        return torch.where(code > max_code, torch.zeros_like(xq), xq)


def log_scale_search(sample: torch.Tensor, max_val: torch.Tensor, bits: int, base: str, grid: int = 16) -> tuple[torch.Tensor, float]:
    """(scale, squared error) of a log quantizer minimising squared error on ``sample``.

    Only the phase of the level grid within one step matters (levels are ``s * base^-k``),
    so candidates are ``max_val * base^(-j/grid)``, ``j = 0..grid-1``; ``j = 0`` is plain
    max scaling. This aligns a level with the typical probability when attention is flat
    (where max scaling can be off by almost half a step for every value).
    """
    steps = 1 if base == "log2" else 2
    best, best_err = max_val, float("inf")
    for j in range(grid):
        scale = max_val * 2.0 ** (-j / (grid * steps))
        err = float((log_quantize(sample, scale, bits, base) - sample).pow(2).sum())
        if err < best_err:
            best, best_err = scale, err
    return best, best_err


def log_base_search(sample: torch.Tensor, max_val: torch.Tensor, bits: int) -> tuple[str, torch.Tensor]:
    """(base, scale) of the log quantizer with the smaller squared error on ``sample``.

    The two grids trade range for resolution: with ``2^b`` levels, sqrt(2) steps reach
    ``2^-(2^b-2)/2`` and base-2 steps twice as deep. At 3 bits sqrt(2) stops at 2^-3 of the
    scale, so on a 7x7 window (probabilities near 1/49) it sets most of the attention to
    zero; at 4 bits and up it is usually the finer choice. Ties keep base 2.
    """
    found = {base: log_scale_search(sample, max_val, bits, base) for base in ("log2", "logsqrt2")}
    base = min(found, key=lambda b: found[b][1])
    return base, found[base][0]
