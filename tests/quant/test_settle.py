"""quant.settle: image-independent activation-quantizer inputs are kept off rounding boundaries."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from quant import PlanSwitcher, QuantConfig, quantize
from quant.act_quantizers import ActQuantizer
from quant.deploy.prefix import TOKEN_AXES
from quant.settle import MARGIN, MAX_STEPS, STEP, ConstantInputs, code_coordinates, settle_constant_inputs
from quant_helpers import build_tiny, make_images

SHAPE = (1, 32, 32)


def _act_quantizers(qmodel: nn.Module) -> dict[str, ActQuantizer]:
    return {n: m for n, m in qmodel.named_modules() if isinstance(m, ActQuantizer) and m.bits is not None}


def _prefix_inputs(qmodel: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Oracle independent of the pass: the first block's per-token quantizer inputs at the
    prefix-token positions (the same for every image by construction), for the first image."""
    prefix = qmodel.num_prefix_tokens
    seen = {}
    handles = []
    for key, axis in TOKEN_AXES.items():
        name = f"blocks.0.{key}"
        def hook(module, args, name=name, axis=axis):
            seen[name] = args[0].detach().narrow(axis, 0, prefix)[0].reshape(-1)
        handles.append(qmodel.get_submodule(name).register_forward_pre_hook(hook))
    with torch.no_grad():
        qmodel(images)
    for h in handles:
        h.remove()
    return seen


def _half_distance(quantizer: nn.Module, x: torch.Tensor) -> float:
    y, lo, hi = code_coordinates(quantizer, x, quantizer.scale.detach())
    y = y.double()
    half = torch.floor(y) + 0.5
    d = torch.where((half >= lo) & (half <= hi), (y - half).abs(), math.inf)
    return float(d.min())


def _scales(qmodel: nn.Module) -> dict[str, torch.Tensor]:
    """Each quantizer's installed scale (installed now if the next forward would)."""
    out = {}
    for name, aq in _act_quantizers(qmodel).items():
        aq.materialize()
        out[name] = aq.quantizer.scale.detach().clone()
    return out


def _unnudged_scales(qmodel: nn.Module) -> dict[str, torch.Tensor]:
    """Each quantizer's scale as its statistics give it at its bits (``set_bits`` re-installs)."""
    for aq in _act_quantizers(qmodel).values():
        aq.set_bits(aq.bits)
    return _scales(qmodel)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["vit", "deit"]), seed=st.integers(0, 50), bits=st.sampled_from([2, 3, 4, 8]),
       preset=st.sampled_from(["default", "repq", "v1"]))
def test_constant_inputs_end_a_margin_from_every_rounding_half(kind, seed, bits, preset):
    """Symmetric and asymmetric grids, fixed (folded) and searched ranges, log2 / searched log softmax."""
    qmodel = quantize(build_tiny(kind, seed), f"W{bits}A{bits}", make_images(16, seed=seed + 1),
                      config=QuantConfig.preset(preset))
    scales = _scales(qmodel)
    constants = _prefix_inputs(qmodel, make_images(2, seed=seed + 100))
    assert constants
    quantizers = _act_quantizers(qmodel)
    for name, x in constants.items():
        assert _half_distance(quantizers[name].quantizer, x) >= MARGIN, name
    # each scale moved by at most the stated bound, and set_bits drops the nudge
    for name, before in _unnudged_scales(qmodel).items():
        assert abs(float(scales[name] / before) - 1) <= MAX_STEPS * STEP * (1 + 1e-6), name


def test_the_pass_is_deterministic_and_switching_equals_quantizing():
    model, calib, x = build_tiny("deit", 3), make_images(16, seed=4), make_images(5, seed=5)
    a, b = quantize(model, "W3A3", calib), quantize(model, "W3A3", calib)
    switcher = PlanSwitcher(model, calib)
    switcher.apply("W8A8")
    c = switcher.apply("W3A3")
    for name, aq in _act_quantizers(a).items():
        assert torch.equal(aq.quantizer.scale, _act_quantizers(b)[name].quantizer.scale)
        assert torch.equal(aq.quantizer.scale, _act_quantizers(c)[name].quantizer.scale)
    with torch.no_grad():
        assert torch.equal(a(x), c(x))
    assert switcher.settled is not None and switcher.settled.quantizers


def test_a_model_without_prefix_tokens_is_left_alone():
    qmodel = quantize(build_tiny("swin"), "W3A3", make_images(16))
    scales = _scales(qmodel)
    assert ConstantInputs(qmodel, SHAPE).positions == {}
    report = settle_constant_inputs(qmodel, SHAPE)
    assert report.quantizers == [] and report.forwards == 0
    for name, before in _unnudged_scales(qmodel).items():
        assert torch.equal(scales[name], before)


def test_a_constant_planted_on_a_half_is_moved_off_it():
    qmodel = quantize(build_tiny("vit", 1), "W4A4", make_images(16))
    name = "blocks.0.attn.matmul_qk.b_quant"  # k of the class token
    aq = _act_quantizers(qmodel)[name]
    x = _prefix_inputs(qmodel, make_images(2, seed=9))[name]
    grid = aq.quantizer
    element = x[x.abs().argmax()]  # the farthest from zero: a scale nudge moves it the most
    z = float(grid.zero_point)
    k = grid.qmax - 1 if float(element) > 0 else grid.qmin  # the half next to the grid's end
    with torch.no_grad():
        grid.scale.copy_(torch.tensor(float(element) / (k + 0.5 - z)))
    assert _half_distance(grid, element[None]) < 1e-5
    report = settle_constant_inputs(qmodel, SHAPE)
    entry = next(q for q in report.quantizers if q.name == name)
    assert entry.distance_before < 1e-5 and entry.factor != 1.0 and entry.distance >= MARGIN
    assert entry in report.nudged
    assert _half_distance(grid, _prefix_inputs(qmodel, make_images(2, seed=9))[name]) >= MARGIN
    assert report.unsettled == []


class _ConstantThenLog(nn.Module):
    """A constant row concatenated to an image-dependent one, into a log (softmax-style) quantizer."""

    def __init__(self, constant: torch.Tensor, kind: str) -> None:
        super().__init__()
        self.register_buffer("constant", constant)
        self.q = ActQuantizer(kind=kind, method="minmax")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        rows = images.flatten(1).softmax(-1)
        return self.q(torch.cat([self.constant.expand(len(images), -1), rows], dim=1))


@pytest.mark.parametrize("kind", ["log2", "logsqrt2"])
def test_the_log_quantizer_constant_on_a_half_is_moved(kind):
    steps = 1 if kind == "log2" else 2
    # log2(x / s) * steps = -2.5: on the half between codes 2 and 3 (scale 1, as set below)
    constant = torch.tensor([[2.0 ** (-2.5 / steps), 0.0, 1.0]])
    model = _ConstantThenLog(constant, kind)
    model.q.observer.update(torch.tensor([0.0, 1.0]))
    model.q.set_bits(4)
    model.q.materialize()
    assert float(model.q.quantizer.scale) == 1.0
    report = settle_constant_inputs(model, (1, 4, 4))
    (entry,) = report.quantizers
    assert entry.constants == 3 and entry.distance_before < 1e-6
    assert entry.factor != 1.0 and entry.distance >= MARGIN
    # the exact zero (log2 = -inf) and the top level (1.0 = the scale) count as no boundary
    assert abs(math.log2(entry.factor)) * steps >= MARGIN * (1 - 1e-6)


def test_clamped_constants_are_not_boundaries():
    model = _ConstantThenLog(torch.tensor([[-5.0, 7.0]]), "uniform")
    model.q.observer.update(torch.tensor([0.0, 1.0]))  # range [0, 1]: -5 and 7 clamp to the ends
    model.q.set_bits(3)
    model.q.materialize()
    report = settle_constant_inputs(model, (1, 2, 2))
    (entry,) = report.quantizers
    assert entry.factor == 1.0 and entry.distance == math.inf


@pytest.mark.parametrize("kwargs", [{"margin": 0.0}, {"margin": 0.5}, {"step": 0.0}, {"max_steps": 10**4}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match="settle_constant_inputs"):
        settle_constant_inputs(build_tiny("vit"), SHAPE, **kwargs)


def test_bad_input_shape_is_refused():
    qmodel = quantize(build_tiny("vit"), "W4A4", make_images(8))
    with pytest.raises(ValueError, match="shape of one image"):
        settle_constant_inputs(qmodel, (0, 32))


def test_set_bits_drops_a_nudge_and_apply_computes_it_again():
    """Tiny ViT seed 1: its class token is some channel's calibrated minimum after the first
    LayerNorm, and the folded post-LN grid (range [-w/2, w/2], 2^b - 1 steps, z = 2^(b-1)) puts
    a channel's minimum exactly on the half between codes 0 and 1 -- at every bit-width."""
    switcher = PlanSwitcher(build_tiny("vit", 1), make_images(16))
    name = "blocks.0.attn.qkv.act_quant"
    aq = _act_quantizers(switcher.apply("W3A3"))[name]
    (nudge,) = switcher.settled.nudged
    assert nudge.name == name and nudge.distance_before == 0.0 and nudge.distance >= MARGIN
    nudged = aq.quantizer.scale.clone()
    aq.set_bits(3)
    aq.materialize()  # the statistics' scale again: no stale nudge
    assert float(nudged / aq.quantizer.scale) == pytest.approx(nudge.factor, rel=1e-6)
    switcher.apply("W4A4")
    assert switcher.settled.nudged[0].distance_before == 0.0  # the same half at 4 bits
    switcher.apply("W3A3")
    assert torch.equal(aq.quantizer.scale, nudged)


def test_settling_after_reconstruction_keeps_the_learned_scales_learnable():
    """The call that ends ``quant.reconstruct``: scales that are LSQ parameters are nudged in place."""
    from quant.reconstruct import reconstruct

    model, calib = build_tiny("deit", 2), make_images(16, seed=3)
    qmodel = quantize(model, "W3A3", calib)
    reconstruct(qmodel, model, calib, steps=2)
    params = {n: aq.quantizer.scale for n, aq in _act_quantizers(qmodel).items() if aq.kind == "uniform"}
    assert all(isinstance(p, nn.Parameter) for p in params.values())
    settle_constant_inputs(qmodel, calib.shape[1:])
    assert all(aq.quantizer.scale is params[n] for n, aq in _act_quantizers(qmodel).items() if n in params)
    quantizers = _act_quantizers(qmodel)
    for name, x in _prefix_inputs(qmodel, make_images(2, seed=7)).items():
        assert _half_distance(quantizers[name].quantizer, x) >= MARGIN, name
