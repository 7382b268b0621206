"""Fused SDPA path of the quantized attention modules and the skipping of disabled quantizers.

While every quantizer of an attention module's products is off, QuantAttention and
QuantWindowAttention use torch's fused ``scaled_dot_product_attention``; the result must equal the
explicit (site-by-site) computation to 1e-6, and any reason to go through the sites (bits set,
an observing quantizer, a hook on a product) must switch the fused path off.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quant import QuantAttention, QuantWindowAttention, calibrate, prepare, quant_sites
from quant.modules import _act_off

from quant_helpers import build_tiny, make_images

TOL = {"rtol": 1e-6, "atol": 1e-6}


def _attention_modules(qmodel) -> list[torch.nn.Module]:
    return [m for m in qmodel.modules() if isinstance(m, (QuantAttention, QuantWindowAttention))]


def _explicit_everywhere(qmodel):
    """Force the explicit path in every attention module (a no-op hook on each product)."""
    handles = []
    for m in _attention_modules(qmodel):
        handles += [m.matmul_qk.register_forward_pre_hook(lambda mod, args: None),
                    m.matmul_av.register_forward_pre_hook(lambda mod, args: None)]
    return handles


@pytest.mark.parametrize("kind", ["vit", "deit", "swin"])
def test_prepared_model_with_everything_off_is_the_float_model(kind):
    """Fused path == explicit path == timm's own float model, to 1e-6 (swin includes shift masks)."""
    model = build_tiny(kind)
    qmodel = prepare(model)
    x = make_images(6, seed=3)
    calls = []
    for m in _attention_modules(qmodel):
        m.matmul_qk.a_quant.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        ref = model(x)
        explicit_handles = _explicit_everywhere(qmodel)
        explicit = qmodel(x)
        assert calls, "hooks on the products must force the explicit path"
        for h in explicit_handles:
            h.remove()
        calls.clear()
        for m in _attention_modules(qmodel):
            m.matmul_qk.a_quant._forward_hooks.clear()
        fused = qmodel(x)
    torch.testing.assert_close(fused, explicit, **TOL)
    torch.testing.assert_close(fused, ref, **TOL)


def _vit_attention(seed: int = 0) -> QuantAttention:
    qmodel = prepare(build_tiny("vit", seed))
    return next(m for m in qmodel.modules() if isinstance(m, QuantAttention))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), mask=st.sampled_from(["none", "bool", "float", "causal"]),
       tokens=st.integers(1, 9))
def test_fused_vit_attention_matches_explicit_with_masks(seed, mask, tokens):
    attn = _vit_attention()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, tokens, 32, generator=g)
    attn_mask, is_causal = None, mask == "causal"
    if mask == "bool":
        attn_mask = torch.rand(tokens, tokens, generator=g) > 0.3
        attn_mask |= torch.eye(tokens, dtype=torch.bool)  # every row keeps one key
    elif mask == "float":
        attn_mask = torch.randn(2, 1, tokens, tokens, generator=g)
    with torch.no_grad():
        fused = attn(x, attn_mask=attn_mask, is_causal=is_causal)
        h = attn.matmul_av.register_forward_hook(lambda *a: None)
        explicit = attn(x, attn_mask=attn_mask, is_causal=is_causal)
        h.remove()
    torch.testing.assert_close(fused, explicit, **TOL)


def test_quantized_or_observing_products_take_the_explicit_path(calib_images):
    qmodel = prepare(build_tiny("vit"))
    attn = _attention_modules(qmodel)[0]
    seen = []
    attn.matmul_qk.b_quant.observer.update = lambda t: seen.append(t.shape)  # calibration observes k^T
    calibrate(qmodel, calib_images[:4])
    assert seen, "calibration must see the attention products"
    x = make_images(2, seed=5)
    with torch.no_grad():
        fused = qmodel(x)
        quant_sites(qmodel)[f"{_name(qmodel, attn)}.matmul_av"].set_bits(None, 4)
        assert not attn.matmul_av.exact()
        quantized = qmodel(x)
    assert not torch.allclose(fused, quantized, rtol=1e-4, atol=1e-4)


def _name(qmodel, module) -> str:
    return next(n for n, m in qmodel.named_modules() if m is module)


def test_disabled_quantizers_are_skipped_but_hooks_still_fire():
    qmodel = prepare(build_tiny("deit"))
    site = quant_sites(qmodel)["blocks.0.mlp.fc1"]
    assert _act_off(site.act_quant)
    called = []
    h = site.act_quant.register_forward_hook(lambda *a: called.append("act"))
    with torch.no_grad():
        qmodel(make_images(1))
    h.remove()
    assert called == ["act"]
    site.act_quant.observer.active = True
    assert not _act_off(site.act_quant)
    site.act_quant.observer.active = False
    site.set_bits(None, 8)
    assert not _act_off(site.act_quant)
