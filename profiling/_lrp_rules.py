"""The AttnLRP rules behind `profiling.lrp`: a relevance recorder, the rule-modified backward
passes (autograd functions whose forward values are exact) and the patched forwards of the
supported timm modules, installed and removed by `lrp_mode`.

Why these rules is explained in `profiling.lrp` and docs/lrp.md; this module is how.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._sites import Site
from .errors import LRPUnsupportedError

__all__ = ["DEFAULT_EPSILON", "lrp_mode"]

#: Epsilon of the epsilon rule. 0 (LRP-0, the eps -> 0 limit) by default: in the gradient x input
#: formulation no division by z is ever computed, so no stabiliser is needed for numerical safety;
#: a positive value absorbs relevance of weakly activated outputs (a denoising choice) and costs
#: one extra element-wise pass per linear layer in the backward pass.
DEFAULT_EPSILON = 0.0


# --------------------------------------------------------------------------------------------
# Recording relevance during the backward pass.
# --------------------------------------------------------------------------------------------
@dataclass
class _Recorder:
    """Per-sample sums of |relevance| captured during one backward pass.

    ``softmax=True`` also accounts for the relevance absorbed by each softmax (for
    `lrp_conservation`); importance does not need it, so it is off by default.
    """

    batch: int
    softmax: bool = False
    abs_sum: dict[str, torch.Tensor] = field(default_factory=dict)
    softmax_absorbed: torch.Tensor | None = None

    def add(self, name: str, value: torch.Tensor, grad: torch.Tensor, factor: float = 1.0) -> None:
        """Accumulate ``factor * sum |value * grad|`` per sample under `name` (factor a power of 2)."""
        a = (value * grad).abs_().reshape(self.batch, -1).sum(1)
        if factor != 1.0:
            a = a * factor
        self.abs_sum[name] = self.abs_sum.get(name, 0) + a

    def add_absorbed(self, r: torch.Tensor) -> None:
        self.softmax_absorbed = r if self.softmax_absorbed is None else self.softmax_absorbed + r

    def watch(self, name: str, t: torch.Tensor) -> None:
        """Record the relevance ``t * dF/dt`` of tensor t under `name` when the backward reaches it."""
        if not t.requires_grad:
            return
        value = t.detach()
        t.register_hook(lambda grad: self.add(name, value, grad))


# --------------------------------------------------------------------------------------------
# Rules as autograd functions: exact forward value, rule-modified backward. Each one replaces a
# composition of autograd primitives by a single node with a hand-written backward, which
# computes the same numbers with fewer passes over memory (the 0.5 factors of the half rule are
# powers of two, so moving them onto the smallest tensor changes no bit).
# --------------------------------------------------------------------------------------------
class _EpsilonGrad(torch.autograd.Function):
    """Identity forward; backward scales the gradient by z / (z + eps * sign(z)) (epsilon rule).

    The factor is computed in the backward pass only, so the forward pass costs nothing extra.
    """

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(z)
        ctx.eps = eps
        return z.view_as(z)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (z,) = ctx.saved_tensors
        denom = torch.where(z >= 0, z + ctx.eps, z - ctx.eps)
        return grad * z / denom, None


def _epsilon(z: torch.Tensor, eps: float) -> torch.Tensor:
    """Epsilon rule on a linear output z (no-op for eps <= 0, i.e. LRP-0)."""
    if eps <= 0 or not z.requires_grad:
        return z
    return _EpsilonGrad.apply(z, eps)


class _IdentityRule(torch.autograd.Function):
    """y = fn(x) element-wise; backward sends ``grad * y / x`` (``slope`` where x == 0).

    For fn with fn(0) == 0 (GELU): the rule needs ``x == 0`` to be the only place where
    ``y / x`` is not a number.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor],
                slope: float) -> torch.Tensor:
        y = fn(x)
        ctx.save_for_backward(x, y)
        ctx.slope = slope
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        x, y = ctx.saved_tensors
        # y / x is 0/0 = nan exactly where x == 0 (fn(0) == 0); elsewhere finite.
        ratio = torch.nan_to_num_(y / x, nan=ctx.slope)
        return ratio.mul_(grad), None, None


def _identity_rule(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                   slope_at_zero: float) -> torch.Tensor:
    """Identity rule for y = fn(x) element-wise: backward sends grad * y / x, so x*g_x = y*g_y."""
    if not x.requires_grad:
        with torch.no_grad():
            return fn(x)
    return _IdentityRule.apply(x, fn, slope_at_zero)


class _LayerNormRule(torch.autograd.Function):
    """LayerNorm with the standard deviation held constant in the backward pass (identity rule):
    ``g_x = c - mean(c)``, ``c = g_y * weight / std``. Weight and bias get their ordinary
    gradients (bias relevance is what `lrp_conservation` books as absorbed).

    The forward is the explicit formula rather than the fused kernel on purpose: the epsilon
    rule (``epsilon > 0``) divides by ``z + eps`` and so amplifies last-bit differences of
    near-zero outputs; the explicit forward keeps the relevance identical to the reference
    numbers (tests/profiling/data/lrp_reference.json) at no measurable cost.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                ndim: int, eps: float) -> torch.Tensor:
        dims = tuple(range(-ndim, 0))
        centred = x - x.mean(dim=dims, keepdim=True)
        std = torch.sqrt((centred * centred).mean(dim=dims, keepdim=True) + eps)
        xhat = centred / std
        y = xhat if weight is None else xhat * weight
        if bias is not None:
            y = y + bias
        ctx.save_for_backward(xhat, weight, std)
        ctx.ndim = ndim
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        xhat, weight, std = ctx.saved_tensors
        dims = tuple(range(-ctx.ndim, 0))
        lead = tuple(range(g.dim() - ctx.ndim))
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            c = (g * weight if weight is not None else g) / std
            gx = c - c.mean(dim=dims, keepdim=True)
        if weight is not None and ctx.needs_input_grad[1]:
            gw = (g * xhat).sum(lead)
        if ctx.needs_input_grad[2]:
            gb = g.sum(lead)
        return gx, gw, gb, None, None


class _AttentionRule(torch.autograd.Function):
    """``out = softmax(q k^T + bias) v`` (q already scaled) with the AttnLRP rules in one node.

    Backward: half rule on both operands of both products, softmax by gradient x input; records
    the relevance at the ``matmul_av`` output and at the ``matmul_qk`` output (the scores before
    the bias) and, for a recorder with ``softmax``, what the softmax absorbs. Equivalent to
    autograd through ``half(q) @ half(k)^T -> +bias -> softmax -> half(probs) @ half(v)`` with
    tensor hooks, but without materialising the halved N x N gradients.
    """

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                bias: torch.Tensor | None, rec: _Recorder, name: str) -> torch.Tensor:
        scores = q @ k.transpose(-2, -1)
        logits = scores if bias is None else scores + bias
        probs = logits.softmax(dim=-1)
        out = probs @ v
        ctx.save_for_backward(q, k, v, scores, logits if rec.softmax else None, probs, out)
        ctx.rec, ctx.name = rec, name
        return out

    @staticmethod
    def backward(ctx: Any, g_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        q, k, v, scores, logits, probs, out = ctx.saved_tensors
        rec, name = ctx.rec, ctx.name
        rec.add(f"{name}.matmul_av", out, g_out)
        # G = g_out v^T is twice the gradient reaching probs (half rule); S = softmax'(G) is twice
        # the gradient reaching the logits and the scores.
        G = g_out @ v.transpose(-2, -1)
        S = torch._softmax_backward_data(G, probs, -1, probs.dtype)
        if rec.softmax:
            absorbed = ((probs * G).reshape(rec.batch, -1).sum(1)
                        - (logits * S).reshape(rec.batch, -1).sum(1)) * 0.5
            rec.add_absorbed(absorbed)
        rec.add(f"{name}.matmul_qk", scores, S, factor=0.5)
        need = ctx.needs_input_grad
        gq = (S @ k).mul_(0.25) if need[0] else None
        gk = (S.transpose(-2, -1) @ q).mul_(0.25) if need[1] else None
        gv = (probs.transpose(-2, -1) @ g_out).mul_(0.5) if need[2] else None
        gb = S * 0.5 if need[3] else None
        return gq, gk, gv, gb, None, None


# --------------------------------------------------------------------------------------------
# Rule-modified forwards of the supported timm modules.
# --------------------------------------------------------------------------------------------
def _layer_norm_forward(mod: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return _LayerNormRule.apply(x, mod.weight, mod.bias, len(mod.normalized_shape), mod.eps)


def _gelu_forward(mod: nn.Module, x: torch.Tensor) -> torch.Tensor:
    approximate = getattr(mod, "approximate", "none")
    return _identity_rule(lambda t: F.gelu(t, approximate=approximate), x, slope_at_zero=0.5)


def _attend(rec: _Recorder, name: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            bias: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T + bias) v with the half rule on both products; q already scaled."""
    return _AttentionRule.apply(q, k, v, bias, rec, name)


def _vit_attention_forward(rec: _Recorder, name: str, mod: nn.Module, x: torch.Tensor,
                           attn_mask: torch.Tensor | None = None, is_causal: bool = False
                           ) -> torch.Tensor:
    if attn_mask is not None or is_causal:
        raise LRPUnsupportedError(f"{name}: attention masks are not supported by the LRP rules")
    B, N, _ = x.shape
    qkv = mod.qkv(x).reshape(B, N, 3, mod.num_heads, mod.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = mod.q_norm(q), mod.k_norm(k)
    out = _attend(rec, name, q * mod.scale, k, v, None)
    out = out.transpose(1, 2).reshape(B, N, mod.attn_dim)
    out = mod.norm(out)
    return mod.proj_drop(mod.proj(out))


def _window_attention_forward(rec: _Recorder, name: str, mod: nn.Module, x: torch.Tensor,
                              mask: torch.Tensor | None = None) -> torch.Tensor:
    B_, N, _ = x.shape
    qkv = mod.qkv(x).reshape(B_, N, 3, mod.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    bias = mod._get_rel_pos_bias()
    if mask is not None:
        num_win = mask.shape[0]
        bias = bias.unsqueeze(1) + mask.unsqueeze(1).unsqueeze(0)  # 1, nW, H, N, N
        bias = bias.expand(B_ // num_win, -1, -1, -1, -1).reshape(B_, mod.num_heads, N, N)
    out = _attend(rec, name, q * mod.scale, k, v, bias)
    out = out.transpose(1, 2).reshape(B_, N, -1)
    return mod.proj_drop(mod.proj(out))


@functools.lru_cache(maxsize=1)
def _timm_classes() -> dict[str, tuple[type, ...]]:
    """The module classes LRP has a rule for, by role (imported lazily, as quant.discovery does).

    Recognised with ``isinstance`` (subclasses included), never by class name: a class merely
    *named* like a supported one is refused rather than explained with the wrong rule.
    """
    from timm.layers import (ClassifierHead, DropPath, LayerScale, LayerScale2d, Mlp, PatchEmbed,
                             SelectAdaptivePool2d)
    from timm.layers.activations import GELU as TimmGELU
    from timm.layers.adaptive_avgmax_pool import FastAdaptiveAvgPool
    from timm.models.swin_transformer import (PatchMerging, SwinTransformer, SwinTransformerBlock,
                                              SwinTransformerStage, WindowAttention)
    from timm.models.vision_transformer import Attention, Block, VisionTransformer

    return {
        "vit_attention": (Attention,),
        "window_attention": (WindowAttention,),
        "gelu": (nn.GELU, TimmGELU),
        # Leaves whose own computation is linear (or a no-op in eval mode): plain gradient x input
        # is the right LRP rule for them.
        "linear_leaf": (nn.Linear, nn.Conv2d, nn.Dropout, nn.Identity, DropPath, nn.Flatten, LayerScale,
                        LayerScale2d, FastAdaptiveAvgPool, nn.AdaptiveAvgPool2d, nn.AvgPool2d),
        # Containers whose forward only composes their children with residual additions, token
        # selection, reshapes, window partitioning and pooling (all linear).
        "container": (VisionTransformer, Block, Mlp, PatchEmbed, nn.Sequential, SwinTransformer,
                      SwinTransformerStage, SwinTransformerBlock, PatchMerging, ClassifierHead,
                      SelectAdaptivePool2d),
    }


def _attention_kind(mod: nn.Module) -> str | None:
    """"vit" / "window" for supported timm attention modules, "unsupported" for a gated ViT
    attention, None for anything else."""
    classes = _timm_classes()
    if isinstance(mod, classes["vit_attention"]):
        return "unsupported" if getattr(mod, "gate", None) is not None else "vit"
    if isinstance(mod, classes["window_attention"]):
        return "window"
    return None


def _check_supported(model: nn.Module) -> None:
    classes = _timm_classes()
    bad: dict[str, str] = {}
    inside_attention: list[str] = []
    for name, mod in model.named_modules():
        if any(name.startswith(p + ".") for p in inside_attention):
            continue
        kind = _attention_kind(mod)
        if kind == "unsupported":
            bad.setdefault(type(mod).__name__, name)
            continue
        if kind is not None:
            inside_attention.append(name)
            for sub in ("q_norm", "k_norm", "norm"):
                m = getattr(mod, sub, None)
                if m is not None and not isinstance(m, (nn.Identity, nn.LayerNorm)):
                    bad.setdefault(type(m).__name__, f"{name}.{sub}")
            continue
        if isinstance(mod, (nn.LayerNorm,) + classes["gelu"] + classes["linear_leaf"]):
            continue
        if isinstance(mod, classes["container"]) and any(True for _ in mod.children()):
            continue
        bad.setdefault(type(mod).__name__, name or "<model>")
    if bad:
        listing = ", ".join(f"{cls} (e.g. {where!r})" for cls, where in sorted(bad.items()))
        raise LRPUnsupportedError(
            f"{type(model).__name__} contains modules without an LRP rule: {listing}. Supported: "
            "timm ViT/DeiT/Swin built from Linear, Conv2d, LayerNorm, GELU, Attention, "
            "WindowAttention, pooling and dropout. Pass importance=False to profile without LRP."
        )


@contextmanager
def lrp_mode(model: nn.Module, sites: Sequence[Site], rec: _Recorder,
             epsilon: float = DEFAULT_EPSILON) -> Iterator[None]:
    """Temporarily give `model` the rule-modified backward pass and relevance hooks.

    Forward values are unchanged (up to floating-point reassociation in LayerNorm and the
    explicit attention). Everything is restored on exit, also after an exception.
    """
    _check_supported(model)
    site_names = {s.name for s in sites if s.kind != "matmul"}
    patched: list[nn.Module] = []
    handles = []

    def patch(mod: nn.Module, fn: Callable[..., torch.Tensor]) -> None:
        mod.forward = fn  # instance attribute shadows the class method; removed on exit
        patched.append(mod)

    def linear_hook(name: str) -> Callable[..., torch.Tensor]:
        record = name in site_names

        def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> torch.Tensor:
            out = _epsilon(out, epsilon)
            if record:
                rec.watch(name, out)
            return out
        return hook

    try:
        for name, mod in model.named_modules():
            kind = _attention_kind(mod)
            if kind == "vit":
                patch(mod, lambda *a, _n=name, _m=mod, **kw: _vit_attention_forward(rec, _n, _m, *a, **kw))
            elif kind == "window":
                patch(mod, lambda *a, _n=name, _m=mod, **kw: _window_attention_forward(rec, _n, _m, *a, **kw))
            elif isinstance(mod, nn.LayerNorm):
                patch(mod, lambda x, _m=mod: _layer_norm_forward(_m, x))
            elif isinstance(mod, _timm_classes()["gelu"]):
                patch(mod, lambda x, _m=mod: _gelu_forward(_m, x))
            elif isinstance(mod, (nn.Linear, nn.Conv2d)):
                handles.append(mod.register_forward_hook(linear_hook(name)))
        yield
    finally:
        for h in handles:
            h.remove()
        for mod in patched:
            del mod.forward
