"""The inference fast path of the fake quantizers is the reference arithmetic, bit for bit.

Inference (no gradient needed) fake-quantizes in place (``quant.quantizers.fake_quantize_nograd``,
``log_quantize_nograd``) and reuses each weight's quantized value; training and anything else that
needs a gradient uses ``quant.ranges.fake_quantize`` / ``log_quantize``. Both must give the same
bits -- the exported ONNX ``QuantizeLinear`` computes ``round(x / s) + z``, which a fused
``round(x * (1 / s))`` kernel does not -- so these tests compare raw float32 bit patterns.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quant import QuantConfig, WeightQuantizer, quant_sites, quantize
from quant.quantizers import LogQuantizer, UniformQuantizer, fake_quantize_nograd, log_quantize_nograd
from quant.ranges import QParams, fake_quantize, log_quantize

from quant_helpers import build_tiny, make_images


def bits_of(t: torch.Tensor) -> torch.Tensor:
    """Raw float32 bit patterns (tells -0.0 from 0.0 and compares NaNs by payload)."""
    return t.detach().float().contiguous().view(torch.int32)


def boundary_data(scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int, seed: int) -> torch.Tensor:
    """Values on the rounding ties ``(k + 0.5) * s - z*s`` of every code (and one float32 step either
    side), far outside the range, signed zeros, infinities and plain random values, shape (4, n)."""
    g = torch.Generator().manual_seed(seed)
    k = torch.arange(qmin - 3, qmax + 3, dtype=torch.float32) + 0.5
    ties = ((k[None, :] - zero_point.reshape(-1, 1)) * scale.reshape(-1, 1)).expand(4, -1)
    special = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), 1e30, -1e30, 1e-30, -1e-30])
    rand = torch.randn(4, 64, generator=g) * scale.reshape(-1, 1) * (qmax - qmin) / 2
    cols = [ties, torch.nextafter(ties, torch.full_like(ties, 1e9)), torch.nextafter(ties, torch.full_like(ties, -1e9)),
            special.expand(4, -1), rand]
    return torch.cat(cols, dim=1)


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(2, 8), seed=st.integers(0, 10_000), symmetric=st.booleans(), per_channel=st.booleans())
def test_uniform_fast_path_is_the_reference_formula_bit_for_bit(bits, seed, symmetric, per_channel):
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(4 if per_channel else 1, generator=g) * 0.3 + 1e-3
    if symmetric:
        qmin, qmax, zp = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1, torch.zeros_like(scale)
    else:
        qmin, qmax = 0, 2**bits - 1
        zp = torch.randint(0, qmax + 1, scale.shape, generator=g).float()
    x = boundary_data(scale, zp, qmin, qmax, seed)
    s, z = (scale.reshape(-1, 1), zp.reshape(-1, 1)) if per_channel else (scale[0], zp[0])
    if not per_channel:
        x = x[:1]
    ref = fake_quantize(x, s, z, qmin, qmax)
    fast = fake_quantize_nograd(x, s, z, qmin, qmax)
    assert torch.equal(bits_of(fast), bits_of(ref))


def test_tie_data_separates_division_from_reciprocal_multiplication():
    """The data above is sharp enough to catch ``x * (1/s)``: on it, some codes differ."""
    found = 0
    for seed in range(20):
        scale = torch.rand(4, generator=torch.Generator().manual_seed(seed)) * 0.3 + 1e-3
        x = boundary_data(scale, torch.zeros(4), -128, 127, seed)[:, :-8 - 64]
        s = scale.reshape(-1, 1)
        found += int((torch.round(x / s) != torch.round(x * (1.0 / s))).sum())
    assert found > 0


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(2, 8), seed=st.integers(0, 10_000), base=st.sampled_from(["log2", "logsqrt2"]))
def test_log_fast_path_is_the_reference_formula_bit_for_bit(bits, seed, base):
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand((), generator=g) * 0.9 + 0.05
    probs = torch.softmax(torch.randn(3, 40, generator=g) * 4, dim=-1).reshape(-1)
    steps = torch.arange(0, 70, dtype=torch.float32)
    levels = scale * torch.exp2(-steps / (1 if base == "log2" else 2))
    mids = levels * 2 ** -0.25  # near the log-domain ties between neighbouring levels
    special = torch.tensor([0.0, -0.0, -0.3, 1.0, 3.0, 1e-30, float("inf"), float("nan")])
    x = torch.cat([probs, levels, mids, torch.nextafter(mids, torch.zeros_like(mids)), special])
    assert torch.equal(bits_of(log_quantize_nograd(x, scale, bits, base)), bits_of(log_quantize(x, scale, bits, base)))


@pytest.mark.parametrize("base", ["log2", "logsqrt2"])
def test_log_quantizer_inference_equals_its_training_forward(base):
    q = LogQuantizer(base)
    q.bits, q.scale = 3, torch.tensor(0.7)
    x = torch.cat([torch.softmax(torch.randn(8, 16, generator=torch.Generator().manual_seed(0)) * 3, -1).reshape(-1),
                   torch.tensor([0.0, 0.69, 0.71, 2.0, 5.0])])
    with torch.no_grad():
        fast = q(x)
    slow = q(x.clone().requires_grad_(True))
    assert slow.requires_grad and not fast.requires_grad
    assert torch.equal(bits_of(fast), bits_of(slow))


def test_uniform_quantizer_takes_the_fast_path_only_without_gradients():
    q = UniformQuantizer()
    q.set_qparams(QParams(torch.tensor(0.05), torch.tensor(3.0), 0, 15))
    x = torch.randn(100, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fast = q(x)
    q.make_learnable()
    slow = q(x)  # a learnable scale: the autograd formula
    assert slow.requires_grad and slow.grad_fn is not None
    assert torch.equal(bits_of(fast), bits_of(slow))


def _weight_quantizer(bits: int = 4) -> tuple[WeightQuantizer, torch.nn.Parameter]:
    wq = WeightQuantizer(method="minmax")
    wq.set_bits(bits)
    w = torch.nn.Parameter(torch.randn(6, 5, generator=torch.Generator().manual_seed(0)))
    return wq, w


def test_weight_is_quantized_once_and_recomputed_when_anything_it_depends_on_changes():
    wq, w = _weight_quantizer()
    with torch.no_grad():
        first = wq(w)
        assert wq(w) is first  # no per-call weight work
        assert torch.equal(first, fake_quantize(w, wq.quantizer.scale[:, None], wq.quantizer.zero_point[:, None],
                                                wq.quantizer.qmin, wq.quantizer.qmax))
        w.mul_(2.0)  # an optimiser step / load_state_dict
        second = wq(w)
        assert second is not first and torch.allclose(second, 2 * first)
        wq.set_bits(2)
        assert wq(w).unique().numel() <= 4 * w.shape[0]
        wq.set_bits(4)
        assert torch.equal(wq(w), second)
        wq.make_learnable(w)
        before = wq(w)
        wq.quantizer.scale.mul_(0.5)  # a QAT step on the learned step size
        assert not torch.equal(wq(w), before)
    slow = wq(w)  # gradients wanted: computed afresh with autograd
    assert slow.grad_fn is not None
    with torch.no_grad():
        assert torch.equal(bits_of(wq(w)), bits_of(slow))


def test_gptq_weight_inference_value_is_the_cached_rounding():
    wq, w = _weight_quantizer()
    x = torch.randn(64, 5, generator=torch.Generator().manual_seed(1))
    wq.set_hessian(x.T @ x / 64)
    with torch.no_grad():
        fast = wq(w)
        assert wq(w) is fast
    slow = wq(w)
    assert slow.grad_fn is not None and torch.equal(fast, slow)
    wq.set_hessian(None)  # back to round to nearest: recomputed
    with torch.no_grad():
        assert not torch.equal(wq(w), fast)


@pytest.mark.parametrize("kind", ["vit", "swin"])
@pytest.mark.parametrize("rounding", ["nearest", "gptq"])
def test_quantized_model_inference_equals_its_autograd_forward(kind, rounding):
    """Whole models (every site, log softmax quantizer, post-LN folds): the no-grad logits are the
    autograd forward's, bit for bit."""
    images = make_images(8, seed=3)
    qmodel = quantize(build_tiny(kind), "W3A4", make_images(16), config=QuantConfig(weight_rounding=rounding))
    with torch.no_grad():
        fast = qmodel(images)
        again = qmodel(images)
    slow = qmodel(images.clone().requires_grad_(True))
    assert slow.grad_fn is not None
    assert torch.equal(bits_of(fast), bits_of(again))
    assert torch.equal(bits_of(fast), bits_of(slow))
    for site in quant_sites(qmodel).values():  # the exporters' view is unchanged too
        if hasattr(site, "weight_quant"):
            with torch.no_grad():
                cached = site.quantized_weight()
            assert torch.equal(cached, site.weight_quant(site.weight))


def test_activation_ranges_are_searched_once_per_bit_width(monkeypatch):
    """Switching plans repeats no range search; new statistics do."""
    from quant import ActQuantizer, calibrate

    calls = []
    derive = ActQuantizer._derive
    monkeypatch.setattr(ActQuantizer, "_derive", lambda self, bits, device: calls.append(bits) or derive(self, bits, device))
    calib, images = make_images(16), make_images(4, seed=3)
    qmodel = quantize(build_tiny("vit"), "W3A3", calib, config=QuantConfig(weight_rounding="nearest"))
    calls.clear()  # quantize's own searches (its settle pass installs the plan's bits, edges at 8)
    sites = quant_sites(qmodel)

    def logits(bits: int) -> torch.Tensor:
        for s in sites.values():
            s.set_bits(bits, bits)
        with torch.no_grad():
            return qmodel(images)

    at3, at4 = logits(3), logits(4)
    searched = len(calls)
    assert searched > 0 and set(calls) == {3, 4}
    assert torch.equal(logits(3), at3) and torch.equal(logits(4), at4) and len(calls) == searched
    calibrate(qmodel, make_images(16, seed=5))  # other statistics: searched again, other ranges
    assert not torch.equal(logits(3), at3) and len(calls) > searched


def test_a_weight_cached_in_inference_mode_still_serves_a_backward_pass():
    """Frozen weights, an input that needs a gradient: the cached weight takes part in autograd."""
    wq, w = _weight_quantizer()
    w.requires_grad_(False)
    with torch.inference_mode():
        wq(w)
    x = torch.randn(3, 5, requires_grad=True)
    torch.nn.functional.linear(x, wq(w)).sum().backward()
    assert x.grad is not None and torch.equal(x.grad, wq(w).sum(0).expand(3, -1))


def test_saved_models_do_not_carry_the_inference_cache(tmp_path):
    import copy

    wq, w = _weight_quantizer()
    with torch.no_grad():
        cached = wq(w)
    assert wq._out is not None and copy.deepcopy(wq)._out is None
    torch.save(wq, tmp_path / "wq.pt")
    loaded = torch.load(tmp_path / "wq.pt", weights_only=False)
    assert loaded._out is None
    with torch.no_grad():
        assert torch.equal(loaded(w), cached)
