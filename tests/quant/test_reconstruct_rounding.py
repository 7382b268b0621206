"""Learned weight rounding (quant.adaround) and its unit-wise stage in quant.reconstruct (transformer
blocks and the modules around the quantized weights outside them)."""
import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quant import QuantConfig, quant_sites, quantize
from quant.adaround import LearnedRounding, attach_rounding, beta_schedule, find_blocks, find_units
from quant.deploy.state import collect_state
from quant.lsq import make_quantizers_learnable
from quant.quantizers import WeightQuantizer
from quant.reconstruct import _at_block, _block_error, _fit_unit, _too_few_images, fit_rounding, reconstruct

from quant_helpers import build_tiny

CFG = QuantConfig(edge_bits=None)  # the default: GPTQ rounding, every layer at the plan's bits


def _weighted(qmodel: torch.nn.Module) -> dict:
    return {n: s for n, s in quant_sites(qmodel).items() if getattr(s, "weight_quant", None) is not None}


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), bits=st.sampled_from([2, 3, 4, 8]), symmetric=st.booleans(),
       spread=st.floats(0.5, 3.0), ties=st.booleans())
def test_rounding_starts_at_the_quantizers_own_rounding(seed, bits, symmetric, spread, ties):
    """Hard codes before any step are the quantizer's ``round(clamp(w / s + z))`` -- also for
    weights past the clamping range and exactly half-way between two codes."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.nn.Parameter(torch.randn(6, 20, generator=g), requires_grad=False)
    wq = WeightQuantizer(method="mse", symmetric=symmetric)
    wq.set_bits(bits)
    wq.make_learnable(weight)
    s, z = wq.quantizer.scale[:, None], wq.quantizer.zero_point[:, None]
    with torch.no_grad():
        if ties:  # half-way points, where round-half-to-even and "h >= 1/2" could disagree
            k = torch.randint(wq.quantizer.qmin, wq.quantizer.qmax, weight.shape, generator=g).float()
            weight.copy_((k + 0.5 - z) * s)
        else:
            weight.mul_(spread)  # some past the range
        expected = wq(weight).clone()
    rounding = LearnedRounding(weight, wq)
    with torch.no_grad():
        assert torch.equal(wq(weight), expected)
        assert float(rounding.codes().min()) >= wq.quantizer.qmin and float(rounding.codes().max()) <= wq.quantizer.qmax
        rounding.soft = True  # the soft start is the latent weight itself inside the range (paper's init)
        inside = ((weight / s + z) > wq.quantizer.qmin) & ((weight / s + z) < wq.quantizer.qmax)
        assert torch.allclose(wq(weight)[inside], weight[inside], rtol=1e-4, atol=1e-4 * float(s.max()))
        rounding.harden_()
        assert torch.equal(weight, expected) and torch.equal(wq(weight), expected)


@pytest.mark.parametrize("kind", ["vit", "swin"])
def test_attached_rounding_is_bit_identical_to_the_gptq_model(kind, calib_images):
    model = build_tiny(kind)
    qmodel = quantize(model, "W3A3", calib_images, config=CFG)
    with torch.no_grad():
        gptq = qmodel(calib_images)
        make_quantizers_learnable(qmodel)
        roundings = [r for u in find_units(qmodel) for r in attach_rounding(qmodel.get_submodule(u)).values()]
        assert len(roundings) == len(_weighted(qmodel))
        assert torch.equal(qmodel(calib_images), gptq)
        for r in roundings:
            r.harden_()
        assert torch.equal(qmodel(calib_images), gptq)


def _rounded(kind: str, images: torch.Tensor, seed: int = 0, bits: int = 3, **kwargs) -> tuple:
    model = build_tiny(kind)
    qmodel = quantize(model, f"W{bits}A{bits}", images, config=CFG)
    report = []
    reconstruct(qmodel, model, images, steps=0, rounding_steps=kwargs.pop("rounding_steps", 30), batch_size=16,
                seed=seed, report=report, **kwargs)
    return model, qmodel, report


@settings(max_examples=4, deadline=None)
@given(kind=st.sampled_from(["vit", "deit", "swin"]), bits=st.sampled_from([2, 3, 4]))
def test_hardened_weights_lie_on_the_grid_and_export(kind, bits, calib_images):
    _, qmodel, report = _rounded(kind, calib_images, bits=bits, rounding_steps=15)
    assert any(f.flipped > 0 for f in report), "some rounding decision changed"
    state = collect_state(qmodel)  # refuses weights off their grid
    for name, site in _weighted(qmodel).items():
        grid = site.weight_quant.quantizer
        s = grid.scale.reshape(-1, *[1] * (site.weight.dim() - 1))
        z = grid.zero_point.reshape(-1, *[1] * (site.weight.dim() - 1))
        with torch.no_grad():
            used = site.quantized_weight()
            codes = used / s + z
            assert torch.allclose(codes, codes.round(), atol=1e-3), name
            assert float(codes.min()) >= grid.qmin - 1e-3 and float(codes.max()) <= grid.qmax + 1e-3
            exported = state.weights[f"{name}.weight"]
            assert torch.equal(used, exported.grid.dequantize(exported.codes)), name
            assert torch.equal(site.weight, used), name  # hardened: the stored weight is the grid value itself


@pytest.mark.parametrize("kind", ["vit", "deit", "swin"])
def test_fitted_block_error_is_at_most_the_start(kind, calib_images):
    model = build_tiny(kind)
    start = quantize(model, "W3A3", calib_images, config=CFG)
    fitted = quantize(model, "W3A3", calib_images, config=CFG)
    learned = make_quantizers_learnable(fitted)
    report = fit_rounding(fitted, model, calib_images, learned, steps=30, batch_size=16, units="blocks")
    assert [f.block for f in report] == find_blocks(fitted)
    assert all(f.end_error <= f.start_error for f in report)
    assert any(f.end_error < f.start_error for f in report), "the fit lowers some block's error"
    # the first block sees the same inputs in both models: recompute its errors independently
    first = report[0].block
    outputs = []
    model.get_submodule(first).register_forward_hook(lambda m, a, out: outputs.append(out.detach()))
    with torch.no_grad():
        model(calib_images)
    inputs = _at_block(start, start.get_submodule(first), calib_images, 16, output=False)
    before = _block_error(start.get_submodule(first), inputs, outputs[0], 16)
    after = _block_error(fitted.get_submodule(first), inputs, outputs[0], 16)
    assert before == pytest.approx(report[0].start_error, rel=1e-5)
    assert after == pytest.approx(report[0].end_error, rel=1e-5)
    assert after <= before


def test_rounding_is_deterministic_for_a_seed(calib_images):
    runs = [_rounded("vit", calib_images, seed=0)[1] for _ in range(2)]
    with torch.no_grad():
        assert torch.equal(runs[0](calib_images), runs[1](calib_images))
    for (n, a), b in zip(runs[0].state_dict().items(), runs[1].state_dict().values()):
        assert torch.equal(a, b), n


def test_rounding_with_qdrop_is_deterministic_used_and_leaves_no_hook(calib_images):
    """QDrop inside the unit fit (``rounding_drop``): the same seed gives the same model, the
    dropping changes the fit (so the hooks were active), every hook is gone afterwards, and the
    errors the report keeps are measured without dropping (recomputed for a block, and no fitted
    unit ends above its start)."""
    runs = [_rounded("vit", calib_images, seed=0, rounding_drop=0.5) for _ in range(2)]
    plain = _rounded("vit", calib_images, seed=0)[1]
    (model, a, report), (_, b, _) = runs
    for (n, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), n
    assert any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), plain.state_dict().values()))
    assert all(not m._forward_hooks for m in a.modules()), "no dropping hook is left behind"
    assert all(f.end_error <= f.start_error for f in report)
    # a block (it holds activation quantizers): its reported error is the error without dropping
    fit = next(f for f in report if f.block.startswith("blocks."))
    inputs = _at_block(a, a.get_submodule(fit.block), calib_images, 16, output=False)
    target = _at_block(model, model.get_submodule(fit.block), calib_images, 16, output=True)
    assert _block_error(a.get_submodule(fit.block), inputs, target, 16) == pytest.approx(fit.end_error, rel=1e-5)
    with pytest.raises(ValueError, match="rounding_drop=1.0; expected 0 <= rounding_drop < 1"):
        _rounded("vit", calib_images, rounding_drop=1.0)


def test_rounding_then_scales_keeps_the_caller_flags_and_weights_on_grid(calib_images):
    model = build_tiny("deit")
    qmodel = quantize(model, "W3A3", calib_images, config=CFG)
    reconstruct(qmodel, model, calib_images, steps=5, rounding_steps=10, batch_size=16)
    assert all(p.requires_grad for p in qmodel.parameters()), "the caller's requires_grad flags come back"
    collect_state(qmodel)  # every weight still on its (re-fitted) grid


def test_bad_arguments_are_refused(calib_images):
    model = build_tiny("vit")
    qmodel = quantize(model, "W3A3", calib_images, config=CFG)
    for kwargs, match in [(dict(steps=0), "at least one > 0"), (dict(steps=0, rounding_steps=-1), "both >= 0"),
                          (dict(rounding_steps=5, rounding_lr=0.0), "rounding_lr > 0"),
                          (dict(rounding_steps=5, rounding_reg=-1.0), "rounding_reg >= 0")]:
        with pytest.raises(ValueError, match=match):
            reconstruct(qmodel, model, calib_images, **kwargs)
    with pytest.raises(ValueError, match="make_quantizers_learnable"):
        site = _weighted(qmodel)["blocks.0.attn.qkv"]
        LearnedRounding(site.weight, site.weight_quant)  # grid not installed yet
    with pytest.raises(ValueError, match="rounding_units='bogus'; expected one of"):
        reconstruct(qmodel, model, calib_images, steps=0, rounding_steps=5, rounding_units="bogus")
    flat = torch.nn.Sequential(torch.nn.Linear(4, 4))
    for units, match in [("all", "no quantized weight;"), ("blocks", "no transformer block .*; pass units='all'")]:
        with pytest.raises(ValueError, match=match):
            fit_rounding(flat, flat, torch.randn(2, 4), make_quantizers_learnable(qmodel), steps=1, units=units)


def test_beta_schedule_warms_up_then_anneals_from_20_to_2():
    steps = 100
    betas = [beta_schedule(s, steps) for s in range(steps)]
    assert all(b is None for b in betas[:20])
    assert betas[20] == pytest.approx(20.0) and betas[-1] == pytest.approx(2.0)
    assert all(a >= b for a, b in zip(betas[20:], betas[21:]))


_QUANTIZED: dict = {}


def _quantized(kind: str, images: torch.Tensor, bits: int = 3) -> tuple:
    """(float, quantized) tiny model, built once per (kind, bits) for the structural tests."""
    if (kind, bits) not in _QUANTIZED:
        model = build_tiny(kind)
        _QUANTIZED[kind, bits] = model, quantize(model, f"W{bits}A{bits}", images, config=CFG)
    return _QUANTIZED[kind, bits]


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(["vit", "deit", "swin"]), data=st.data())
def test_every_quantized_weight_lies_in_exactly_one_unit(kind, data, calib_images):
    """Whichever weights are quantized, each lies in exactly one unit with units='all'; with
    'blocks' the units are the blocks alone; the units are disjoint."""
    _, qmodel = _quantized(kind, calib_images)
    sites = _weighted(qmodel)
    float_sites = data.draw(st.sets(st.sampled_from(sorted(sites))))
    try:
        for name in float_sites:
            sites[name].weight_quant.set_bits(None)
        quantized = [n for n in sites if n not in float_sites]
        units = find_units(qmodel)
        assert find_units(qmodel, "blocks") == find_blocks(qmodel)
        assert set(find_blocks(qmodel)) <= set(units)
        for a in units:
            assert not any(b.startswith(a + ".") for b in units if b != a), "units are disjoint"
        for name in quantized:
            assert sum(name == u or name.startswith(u + ".") for u in units) == 1, name
        for u in set(units) - set(find_blocks(qmodel)):  # a unit outside the blocks holds a quantized weight
            assert any(n == u or n.startswith(u + ".") for n in quantized), u
            assert not any(b.startswith(u + ".") for b in find_blocks(qmodel)), "no block inside a non-block unit"
    finally:
        for name in float_sites:
            sites[name].weight_quant.set_bits(3)


def test_units_outside_the_blocks_of_each_family(calib_images):
    expected = {"vit": ["patch_embed", "head"], "deit": ["patch_embed", "head", "head_dist"],
                "swin": ["patch_embed", "layers.1.downsample", "head"]}
    for kind, names in expected.items():
        qmodel = _quantized(kind, calib_images)[1]
        assert [u for u in find_units(qmodel) if u not in find_blocks(qmodel)] == names, kind


@pytest.mark.parametrize("kind", ["vit", "deit", "swin"])
def test_fitted_units_outside_the_blocks_end_at_most_at_their_start(kind, calib_images):
    """Every unit's error (recomputed independently for the units outside the blocks, on the
    inputs it was fitted on, against the GPTQ start) ends <= its start; some fall."""
    model = build_tiny(kind)
    start = quantize(model, "W3A3", calib_images, config=CFG)
    fitted = quantize(model, "W3A3", calib_images, config=CFG)
    report = fit_rounding(fitted, model, calib_images, make_quantizers_learnable(fitted), steps=30, batch_size=16)
    assert sorted(f.block for f in report) == sorted(find_units(fitted))
    assert all(f.end_error <= f.start_error for f in report)
    outside = [f for f in report if f.block not in find_blocks(fitted)]
    assert any(f.end_error < f.start_error and f.flipped > 0 for f in outside), "the fit lowers some non-block unit"
    for f in outside:
        inputs = _at_block(fitted, fitted.get_submodule(f.block), calib_images, 16, output=False)
        target = _at_block(model, model.get_submodule(f.block), calib_images, 16, output=True)
        before = _block_error(start.get_submodule(f.block), inputs, target, 16)
        after = _block_error(fitted.get_submodule(f.block), inputs, target, 16)
        assert before == pytest.approx(f.start_error, rel=1e-5), f.block
        assert after == pytest.approx(f.end_error, rel=1e-5), f.block
        assert after <= before * (1 + 1e-6), f.block


def test_units_are_fitted_in_forward_order_not_registration_order(calib_images):
    model = build_tiny("deit")
    qmodel = quantize(model, "W3A3", calib_images, config=CFG)
    for net in (model, qmodel):  # the heads registered first
        net._modules = dict(sorted(net._modules.items(), key=lambda kv: not kv[0].startswith("head")))
    assert find_units(qmodel)[:2] == ["head", "head_dist"]
    report = fit_rounding(qmodel, model, calib_images, make_quantizers_learnable(qmodel), steps=2, batch_size=16)
    assert [f.block for f in report] == ["patch_embed", "blocks.0", "blocks.1", "head", "head_dist"]


def test_at_8_bits_every_unit_starts_close_to_the_float_unit(calib_images):
    """The float model's output of a unit is a fair target for the quantized unit (e.g. the
    post-LayerNorm fold does not change what a unit outputs): at W8A8 each starts near it."""
    for kind in ("deit", "swin"):
        model, qmodel = _quantized(kind, calib_images, bits=8)
        qmodel = copy.deepcopy(qmodel)
        report = fit_rounding(qmodel, model, calib_images, make_quantizers_learnable(qmodel), steps=1, batch_size=16)
        assert all(f.start_error < 1e-2 for f in report), [(f.block, f.start_error) for f in report]


@pytest.mark.parametrize("unit", ["head", "patch_embed"])
def test_a_unit_fitted_to_its_own_output_ends_as_it_started(unit, calib_images):
    """Target = the unit's own GPTQ output: any flip can only make it worse, so the unit is put
    back (or nothing flipped) and its output stays bit-identical."""
    model, qmodel = _quantized("vit", calib_images)
    qmodel = copy.deepcopy(qmodel)
    learned = make_quantizers_learnable(qmodel)
    module = qmodel.get_submodule(unit)
    inputs = _at_block(qmodel, module, calib_images, 16, output=False)
    with torch.no_grad():
        own = module(inputs)
    fit = _fit_unit(unit, module, inputs, own, 20, 1e-1, 0.01, [], learned, 16, torch.Generator().manual_seed(0))
    assert fit.start_error == 0.0 and fit.end_error == 0.0
    assert fit.reverted or fit.flipped == 0.0
    with torch.no_grad():
        assert torch.equal(module(inputs), own)


def test_blocks_only_leaves_the_weights_outside_the_blocks_as_gptq_rounded(calib_images):
    model, gptq = _quantized("swin", calib_images)
    qmodel = copy.deepcopy(gptq)
    report = []
    reconstruct(qmodel, model, calib_images, steps=0, rounding_steps=5, batch_size=16, rounding_units="blocks",
                report=report)
    assert [f.block for f in report] == find_blocks(qmodel)
    outside = [n for n in _weighted(qmodel) if not n.startswith(tuple(b + "." for b in find_blocks(qmodel)))]
    with torch.no_grad():
        for name in outside:
            assert torch.equal(_weighted(qmodel)[name].quantized_weight(), _weighted(gptq)[name].quantized_weight())


def test_a_units_batches_do_not_depend_on_the_units_fitted_before_it(calib_images):
    """DeiT's head_dist sees the same inputs whether or not the head (fitted just before it) is
    quantized; with the scales fixed its fit must then be bit-identical."""
    model, base = _quantized("deit", calib_images)
    runs = []
    for head_float in (False, True):
        qmodel = copy.deepcopy(base)
        if head_float:
            qmodel.head.weight_quant.set_bits(None)
        report = fit_rounding(qmodel, model, calib_images, make_quantizers_learnable(qmodel), steps=20,
                              batch_size=8, scales=False)
        assert ("head" in [f.block for f in report]) != head_float
        runs.append(([f for f in report if f.block == "head_dist"][0], qmodel.head_dist.weight.detach().clone()))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])
    assert runs[0][0].flipped > 0, "the head_dist fit did something"


@pytest.mark.parametrize("kind", ["deit", "swin"])
def test_heads_with_fewer_images_than_features_keep_their_rounding(kind, calib_images):
    """The tiny heads read 32 features: with 16 images they are skipped (left bit-identical to
    GPTQ), with 32 fitted; units with a token axis are fitted either way."""
    model, gptq = _quantized(kind, calib_images)
    heads = {"deit": ["head", "head_dist"], "swin": ["head"]}[kind]
    for n_images in (16, 32):
        qmodel = copy.deepcopy(gptq)
        report = fit_rounding(qmodel, model, calib_images[:n_images], make_quantizers_learnable(qmodel), steps=15,
                              batch_size=8)
        skipped = [f.block for f in report if f.skipped]
        assert skipped == (heads if n_images == 16 else []), n_images
        assert all(f.flipped == 0 and f.start_error == f.end_error for f in report if f.skipped)
        assert any(f.flipped > 0 for f in report if f.block not in heads)
        if n_images == 16:
            with torch.no_grad():
                for head in heads:
                    assert torch.equal(_weighted(qmodel)[_head_site(kind, head)].quantized_weight(),
                                       _weighted(gptq)[_head_site(kind, head)].quantized_weight())


def _head_site(kind: str, head: str) -> str:
    return "head.fc" if kind == "swin" else head


@settings(max_examples=40, deadline=None)
@given(images=st.integers(1, 64), width=st.integers(1, 64), tokens=st.integers(1, 5), classes=st.integers(1, 12))
def test_only_per_image_outputs_with_fewer_images_than_features_are_too_few(images, width, tokens, classes):
    per_image = _too_few_images(torch.zeros(images, width), torch.zeros(images, classes))
    assert per_image == (images < width)
    spatial = torch.zeros(images, tokens, tokens, width)  # a Swin head's input: pooled inside the unit
    assert _too_few_images(spatial, torch.zeros(images, classes)) == (images < width)
    assert not _too_few_images(torch.zeros(images, tokens, width), torch.zeros(images, tokens, width))
