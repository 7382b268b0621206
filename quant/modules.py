"""Quantized replacements of the quantizable layers.

Each replacement keeps the float module's parameters under the same names (``weight``,
``bias``, ``relative_position_bias_table`` ...), so a prepared model's ``state_dict`` is the
float one plus quantizer buffers, and qualified names (``blocks.0.attn.qkv``) do not change.

Every quantization site (:class:`QuantLinear`, :class:`QuantConv2d`, :class:`QuantMatMul`)
implements the :class:`QuantSite` protocol: ``kind``, ``w_bits``, ``a_bits`` and
``set_bits(w_bits, a_bits)`` with ``None`` meaning float for that part.

:class:`QuantAttention` (timm ``Attention``) and :class:`QuantWindowAttention` (timm
``WindowAttention``) compute attention with explicit matrix products so that ``q @ k^T`` and
``attn @ v`` are sites (``matmul_qk``, ``matmul_av``) instead of a fused SDPA kernel. While
those products are exact float (their quantizers off, not observing, no hooks on them, no
attention dropout in training), the attention modules use torch's fused
``scaled_dot_product_attention`` instead: same values to float rounding, so a prepared model with
everything off costs what the float model costs (sensitivity profiling runs such models for
every (layer, bits) pair). Likewise a disabled quantizer is skipped without a module call.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _nn_module

from .config import QuantConfig
from .act_quantizers import ActQuantizer
from .quantizers import WeightQuantizer
from .ranges import check_bits

__all__ = [
    "QuantSite",
    "QuantLinear",
    "QuantConv2d",
    "QuantMatMul",
    "QuantAttention",
    "QuantWindowAttention",
    "make_act_quantizer",
    "make_weight_quantizer",
]


@runtime_checkable
class QuantSite(Protocol):
    """What profiling / allocation code may rely on for each quantizable site."""

    kind: str

    @property
    def w_bits(self) -> int | None: ...

    @property
    def a_bits(self) -> int | None: ...

    def set_bits(self, w_bits: int | None, a_bits: int | None) -> None: ...


def _hooked(m: nn.Module) -> bool:
    """Whether forward/backward hooks (module-local or global) watch `m`: then it must be called."""
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
                or _nn_module._global_forward_hooks or _nn_module._global_forward_pre_hooks
                or _nn_module._global_backward_hooks or _nn_module._global_backward_pre_hooks)


def _act_off(q: ActQuantizer) -> bool:
    """True when calling `q` would return its input untouched and unobserved (bits None, observer
    inactive, no hooks), so the caller may skip the module call."""
    return q.bits is None and not q.observer.active and not _hooked(q)


def _quantized_act(q: ActQuantizer, x: torch.Tensor) -> torch.Tensor:
    """``q(x)``, or ``x`` itself without a module call when `q` is off (`_act_off`)."""
    return x if _act_off(q) else q(x)


def _weight_off(q: WeightQuantizer) -> bool:
    """True when calling `q` would return the weight untouched (bits None, no hooks)."""
    return q.bits is None and not _hooked(q)


def _site_seed(config: QuantConfig, name: str, slot: int) -> int:
    """Deterministic per-quantizer seed (stable across runs, independent of dict order)."""
    import zlib

    return (config.seed * 1_000_003 + zlib.crc32(f"{name}#{slot}".encode())) % (2**63)


def make_act_quantizer(
    config: QuantConfig, name: str, slot: int = 0, kind: str = "uniform", post_ln: bool = False
) -> ActQuantizer:
    """Activation quantizer for site ``name`` built from ``config``.

    ``post_ln`` marks the input of a linear layer fed by a LayerNorm: it then also records
    per-channel statistics, used by the ``"clipped"``/``"channel"`` folding.
    """
    return ActQuantizer(
        kind=kind,
        method=config.act_method,
        symmetric=config.act_symmetric,
        percentile=config.percentile,
        grid=config.mse_grid,
        max_samples=config.calib_samples,
        seed=_site_seed(config, name, slot),
        channel_stats=post_ln and config.post_ln != "tensor",
        name=name,
    )


def make_weight_quantizer(config: QuantConfig) -> WeightQuantizer:
    return WeightQuantizer(
        method=config.weight_method,
        per_channel=config.weight_per_channel,
        symmetric=config.weight_symmetric,
        percentile=config.percentile,
        grid=config.mse_grid,
        gptq_damp=config.gptq_damp,
        gptq_act_order=config.gptq_act_order,
    )


class _WeightedSite(nn.Module):
    """Shared bits handling of layers with a weight and one input activation."""

    kind = "linear"
    act_quant: ActQuantizer
    weight_quant: WeightQuantizer

    @property
    def w_bits(self) -> int | None:
        return self.weight_quant.bits

    @property
    def a_bits(self) -> int | None:
        return self.act_quant.bits

    def set_bits(self, w_bits: int | None, a_bits: int | None) -> None:
        """Weight and input-activation bit-widths (``None`` = float)."""
        check_bits(w_bits, "w_bits")
        check_bits(a_bits, "a_bits")
        self.weight_quant.set_bits(w_bits)
        self.act_quant.set_bits(a_bits)

    def quantized_weight(self) -> torch.Tensor:
        """The weight as the forward pass uses it (fake-quantized when ``w_bits`` is set)."""
        return self.weight if _weight_off(self.weight_quant) else self.weight_quant(self.weight)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        """The input activation as the layer uses it (fake-quantized when ``a_bits`` is set)."""
        return _quantized_act(self.act_quant, x)


class QuantLinear(_WeightedSite):
    """``nn.Linear`` with fake-quantized input and weight; bias stays float.

    ``post_ln`` records that the input comes from a LayerNorm (a fold target).
    """

    kind = "linear"

    def __init__(self, linear: nn.Linear, act_quant: ActQuantizer, weight_quant: WeightQuantizer,
                 post_ln: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.act_quant, self.weight_quant = act_quant, weight_quant
        self.post_ln = post_ln

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self._input(x), self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, post_ln={self.post_ln}"


class QuantConv2d(_WeightedSite):
    """``nn.Conv2d`` (the patch embedding) with fake-quantized input image and weight."""

    kind = "conv"

    def __init__(self, conv: nn.Conv2d, act_quant: ActQuantizer, weight_quant: WeightQuantizer) -> None:
        super().__init__()
        if conv.padding_mode != "zeros":
            raise ValueError(f"QuantConv2d supports padding_mode='zeros' only, got {conv.padding_mode!r}")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.padding = conv.kernel_size, conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups
        self.weight = conv.weight
        self.bias = conv.bias
        self.act_quant, self.weight_quant = act_quant, weight_quant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self._input(x), self.quantized_weight(), self.bias,
                        self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"


class QuantMatMul(nn.Module):
    """``a @ b`` of two activations, each fake-quantized.

    There are no weights: both operands follow ``a_bits``; ``w_bits`` is accepted (plans
    set it equal to ``a_bits``) and ignored, so weight-only settings leave it float.
    ``a_quant`` is the log2 quantizer for attention probabilities in ``attn @ v``.
    """

    kind = "matmul"

    def __init__(self, a_quant: ActQuantizer, b_quant: ActQuantizer) -> None:
        super().__init__()
        self.a_quant, self.b_quant = a_quant, b_quant

    @property
    def w_bits(self) -> int | None:
        return self.a_quant.bits

    @property
    def a_bits(self) -> int | None:
        return self.a_quant.bits

    def set_bits(self, w_bits: int | None, a_bits: int | None) -> None:
        check_bits(w_bits, "w_bits")
        check_bits(a_bits, "a_bits")
        self.a_quant.set_bits(a_bits)
        self.b_quant.set_bits(a_bits)

    def exact(self) -> bool:
        """True when this product is plain float ``a @ b``: both quantizers off and unobserved,
        no hooks on the product (an attention module may then compute it fused)."""
        return _act_off(self.a_quant) and _act_off(self.b_quant) and not _hooked(self)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(_quantized_act(self.a_quant, a), _quantized_act(self.b_quant, b))


def make_matmuls(config: QuantConfig, attn_name: str) -> tuple[QuantMatMul, QuantMatMul]:
    """The two attention products of attention module ``attn_name``."""
    qk_name, av_name = f"{attn_name}.matmul_qk", f"{attn_name}.matmul_av"
    qk = QuantMatMul(make_act_quantizer(config, qk_name, 0), make_act_quantizer(config, qk_name, 1))
    probs = make_act_quantizer(config, av_name, 0, kind=config.softmax)
    av = QuantMatMul(probs, make_act_quantizer(config, av_name, 1))
    return qk, av


def _additive_mask(attn: torch.Tensor, attn_mask: torch.Tensor | None, is_causal: bool) -> torch.Tensor:
    """Add an SDPA-style mask (bool keep-mask or additive float) or a causal mask to scores."""
    n = attn.shape[-1]
    if is_causal:
        return attn + attn.new_full((attn.shape[-2], n), float("-inf")).triu_(1)
    if attn_mask is None:
        return attn
    if attn_mask.dtype == torch.bool:
        return attn.masked_fill(~attn_mask, float("-inf"))
    return attn + attn_mask


def _fusable(matmul_qk: QuantMatMul, matmul_av: QuantMatMul, attn_drop: nn.Module, training: bool) -> bool:
    """Whether an attention module may use fused SDPA: both products (and so the softmax
    quantizer, ``matmul_av.a_quant``) exact float, and no attention dropout to reproduce."""
    dropping = training and getattr(attn_drop, "p", 0.0) > 0
    return not dropping and matmul_qk.exact() and matmul_av.exact()


class QuantAttention(nn.Module):
    """timm ``Attention`` with explicit, quantized ``q @ k^T`` and ``attn @ v``.

    Children are registered in execution order (qkv, matmul_qk, matmul_av, proj) so that
    ``named_modules`` lists sites in forward order.
    """

    def __init__(self, attn: nn.Module, matmul_qk: QuantMatMul, matmul_av: QuantMatMul) -> None:
        super().__init__()
        self.num_heads, self.head_dim = attn.num_heads, attn.head_dim
        self.attn_dim = getattr(attn, "attn_dim", attn.num_heads * attn.head_dim)
        self.scale = attn.scale
        self.qkv = attn.qkv
        self.q_norm, self.k_norm = attn.q_norm, attn.k_norm
        self.matmul_qk = matmul_qk
        self.attn_drop = attn.attn_drop
        self.matmul_av = matmul_av
        self.norm = getattr(attn, "norm", nn.Identity())
        self.proj, self.proj_drop = attn.proj, attn.proj_drop

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if _fusable(self.matmul_qk, self.matmul_av, self.attn_drop, self.training):
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=None if is_causal else attn_mask,
                                               is_causal=is_causal, scale=self.scale)
        else:
            x = self._explicit(q, k, v, attn_mask, is_causal)
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        x = self.norm(x)
        return self.proj_drop(self.proj(x))

    def _explicit(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  attn_mask: torch.Tensor | None, is_causal: bool) -> torch.Tensor:
        """Attention through the (quantized) product sites; (B, heads, N, head_dim)."""
        attn = self.matmul_qk(q * self.scale, k.transpose(-2, -1))
        attn = _additive_mask(attn, attn_mask, is_causal).softmax(dim=-1)
        return self.matmul_av(self.attn_drop(attn), v)


class QuantWindowAttention(nn.Module):
    """timm Swin ``WindowAttention`` with explicit, quantized products.

    The relative position bias and the shifted-window mask are added to the (quantized)
    scores before the softmax, in float, exactly as timm's non-fused path does.
    """

    def __init__(self, attn: nn.Module, matmul_qk: QuantMatMul, matmul_av: QuantMatMul) -> None:
        super().__init__()
        self.dim, self.num_heads = attn.dim, attn.num_heads
        self.window_size, self.window_area = attn.window_size, attn.window_area
        self.scale = attn.scale
        self.relative_position_bias_table = attn.relative_position_bias_table
        self.register_buffer("relative_position_index", attn.relative_position_index, persistent=False)
        self.qkv = attn.qkv
        self.matmul_qk = matmul_qk
        self.attn_drop = attn.attn_drop
        self.matmul_av = matmul_av
        self.proj, self.proj_drop = attn.proj, attn.proj_drop

    def _get_rel_pos_bias(self) -> torch.Tensor:
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(self.window_area, self.window_area, -1).permute(2, 0, 1).contiguous()
        return bias.unsqueeze(0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B_, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        if _fusable(self.matmul_qk, self.matmul_av, self.attn_drop, self.training):
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=self._fused_mask(mask, B_, N), scale=self.scale)
        else:
            x = self._explicit(q, k, v, mask)
        x = x.transpose(1, 2).reshape(B_, N, -1)
        return self.proj_drop(self.proj(x))

    def _fused_mask(self, mask: torch.Tensor | None, B_: int, N: int) -> torch.Tensor:
        """Relative position bias plus the shifted-window mask as one additive SDPA mask."""
        bias = self._get_rel_pos_bias()
        if mask is None:
            return bias
        num_win = mask.shape[0]
        mask = mask.view(1, num_win, 1, N, N).expand(B_ // num_win, -1, self.num_heads, -1, -1)
        return bias + mask.reshape(-1, self.num_heads, N, N)

    def _explicit(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  mask: torch.Tensor | None) -> torch.Tensor:
        """Attention through the (quantized) product sites; (windows, heads, N, head_dim)."""
        N = q.shape[-2]
        attn = self.matmul_qk(q * self.scale, k.transpose(-2, -1))
        attn = attn + self._get_rel_pos_bias()
        if mask is not None:
            num_win = mask.shape[0]
            attn = attn.view(-1, num_win, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        attn = self.attn_drop(attn.softmax(dim=-1))
        return self.matmul_av(attn, v)
