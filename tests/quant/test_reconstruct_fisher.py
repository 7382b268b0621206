"""Learned rounding with BRECQ's output-gradient weighting (``rounding_loss="fisher"``)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from quant import QuantConfig, quantize
from quant.adaround import find_units
from quant.lsq import make_quantizers_learnable
from quant.reconstruct import _at_block, _block_error, fit_rounding, output_fisher, reconstruct

from quant_helpers import build_tiny

CFG = QuantConfig(edge_bits=None)
_QUANTIZED: dict = {}


def _quantized(kind: str, images: torch.Tensor) -> tuple:
    if kind not in _QUANTIZED:
        model = build_tiny(kind)
        _QUANTIZED[kind] = model, quantize(model, "W3A3", images, config=CFG)
    return _QUANTIZED[kind]


@pytest.mark.parametrize("kind", ["vit", "deit"])
def test_head_weights_are_the_squared_probability_gap(kind, calib_images):
    """For the unit whose output is the logits, the gradient of the summed KL divergence is
    softmax(quantized) - softmax(float) per image (the DeiT averages its two heads, which halves
    it: the scaling to mean 1 removes that)."""
    model, qmodel = _quantized(kind, calib_images)
    heads = ["head", "head_dist"] if kind == "deit" else ["head"]
    fisher = output_fisher(qmodel, model, calib_images, heads, batch_size=16)
    with torch.no_grad():
        gap = (F.softmax(qmodel(calib_images).double(), -1) - F.softmax(model(calib_images).double(), -1)).pow(2)
    expected = gap / gap.mean()
    for head in heads:
        assert fisher[head].shape == expected.shape
        torch.testing.assert_close(fisher[head].double(), expected, rtol=1e-3, atol=1e-5)


@settings(max_examples=6, deadline=None)
@given(kind=st.sampled_from(["vit", "deit", "swin"]), batch_size=st.sampled_from([5, 16, 32]))
def test_weights_are_per_image_mean_one_and_leave_the_model_as_it_was(kind, batch_size, calib_images):
    """Each unit's weights have its output's shape, are >= 0 with mean 1, do not depend on how
    the images are batched (each image's gradient is its own), and computing them leaves no
    gradient on the model and the caller's requires_grad flags as they were."""
    model, qmodel = _quantized(kind, calib_images)
    names = find_units(qmodel, "all")
    fisher = output_fisher(qmodel, model, calib_images, names, batch_size=batch_size)
    reference = output_fisher(qmodel, model, calib_images, names, batch_size=len(calib_images))
    for name in names:
        out = _at_block(qmodel, qmodel.get_submodule(name), calib_images, 8, output=True)
        w = fisher[name]
        assert w.shape == out.shape, name
        assert bool((w >= 0).all()) and float(w.double().mean()) == pytest.approx(1.0, rel=1e-5), name
        torch.testing.assert_close(w, reference[name], rtol=1e-3, atol=1e-4 * float(w.max()))
    assert all(p.grad is None and p.requires_grad for p in qmodel.parameters())
    assert all(not m._forward_hooks for m in qmodel.modules())


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), batch_size=st.integers(1, 50), seed=st.integers(0, 1000))
def test_block_error_does_not_depend_on_batching_and_unit_weights_change_nothing(n, batch_size, seed):
    gen = torch.Generator().manual_seed(seed)
    unit = torch.nn.Linear(6, 3).double()
    inputs, targets = torch.randn(n, 4, 6, generator=gen).double(), torch.randn(n, 4, 3, generator=gen).double()
    whole = _block_error(unit, inputs, targets, n)
    assert _block_error(unit, inputs, targets, batch_size) == pytest.approx(whole, rel=1e-12)
    assert _block_error(unit, inputs, targets, batch_size, torch.ones_like(targets)) == pytest.approx(whole, rel=1e-12)
    with torch.no_grad():
        direct = float((unit(inputs) - targets).pow(2).mean() / max(float(targets.var()), 1e-12))
    assert whole == pytest.approx(direct, rel=1e-12)
    weight = torch.rand(targets.shape, generator=gen).double() * 2
    with torch.no_grad():
        weighted = float(((unit(inputs) - targets).pow(2) * weight).mean() / max(float(targets.var()), 1e-12))
    assert _block_error(unit, inputs, targets, batch_size, weight) == pytest.approx(weighted, rel=1e-12)


@pytest.mark.parametrize("loss", ["fisher", "fisher-mean"])
def test_fisher_rounding_is_deterministic_used_and_reports_weighted_errors(loss, calib_images):
    """The same seed gives the same model; the weighting changes the fit; the report's errors
    are the weighted errors (recomputed for a block with weights measured on a fresh copy: per
    image, or with "fisher-mean" their mean over the images)."""
    def rounded(loss: str) -> tuple:
        model = build_tiny("vit")
        qmodel = quantize(model, "W3A3", calib_images, config=CFG)
        report: list = []
        reconstruct(qmodel, model, calib_images, steps=0, rounding_steps=30, batch_size=16, seed=0,
                    rounding_loss=loss, report=report)
        return model, qmodel, report

    (model, a, _), (_, b, _), (_, plain, _) = rounded(loss), rounded(loss), rounded("mse")
    for (n, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), n
    assert any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), plain.state_dict().values()))
    # the report as fit_rounding leaves the model (reconstruct's settle pass then nudges scales)
    a = quantize(model, "W3A3", calib_images, config=CFG)
    report = fit_rounding(a, model, calib_images, make_quantizers_learnable(a), steps=30, batch_size=16,
                          loss=loss)
    assert all(f.end_error <= f.start_error for f in report)
    fresh = quantize(model, "W3A3", calib_images, config=CFG)
    fit = next(f for f in report if f.block.startswith("blocks.") and not f.reverted)
    weight = output_fisher(fresh, model, calib_images, [fit.block], batch_size=16)[fit.block]
    if loss == "fisher-mean":
        weight = weight.mean(0, keepdim=True).expand_as(weight)
    inputs = _at_block(a, a.get_submodule(fit.block), calib_images, 16, output=False)
    target = _at_block(model, model.get_submodule(fit.block), calib_images, 16, output=True)
    assert _block_error(a.get_submodule(fit.block), inputs, target, 16, weight) == pytest.approx(fit.end_error,
                                                                                                rel=1e-4)
    assert _block_error(a.get_submodule(fit.block), inputs, target, 16) != pytest.approx(fit.end_error, rel=1e-3)
    with pytest.raises(ValueError, match="rounding_loss='l1'; expected one of"):
        reconstruct(a, model, calib_images, steps=0, rounding_steps=5, rounding_loss="l1")
