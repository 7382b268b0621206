"""Packed export: reload gives the same logits, the file is the plan's size plus stated overhead,
and everything that cannot be exported is refused."""
from __future__ import annotations

import pytest
import torch
from export_helpers import TINY_SPECS, MixedPlan, rel_l2, tiny
from quant_helpers import make_images

import quant
from quant import PlanMismatchError, QuantConfig
from quant.deploy import ExportError, PackedFormatError, export, load_packed
from quant.deploy.packing import packed_nbytes


@pytest.fixture(scope="module")
def calib():
    return make_images(32, seed=1)


@pytest.fixture(scope="module")
def images():
    return make_images(16, seed=2)


def _export(qmodel, kind, path, **kw):
    arch, kwargs = TINY_SPECS[kind]
    return export(qmodel, path, format="packed", arch=arch, model_kwargs=kwargs, **kw)


@pytest.mark.parametrize("kind", sorted(TINY_SPECS))
@pytest.mark.parametrize("plan", ["W8A8", "W4A4", "mixed"])
def test_reload_gives_the_same_logits_and_size(kind, plan, calib, images, tmp_path):
    model = tiny(kind)
    if plan == "mixed":
        plan = MixedPlan(quant.find_quantizable_layers(model))
    qmodel = quant.quantize(model, plan, calib)
    result = _export(qmodel, kind, tmp_path / "m.safetensors", plan=plan)
    loaded = load_packed(result.path)
    with torch.no_grad():
        want, got = qmodel(images), loaded(images)
    assert rel_l2(want, got) <= 1e-6
    # size: the codes are what a plan's size_bytes counts, rounded up to whole bytes per tensor
    sites = {n: s for n, s in quant.quant_sites(qmodel).items() if s.kind != "matmul"}
    expected_codes = sum(packed_nbytes(s.weight.numel(), s.w_bits) for s in sites.values())
    size_bytes = sum(s.weight.numel() * s.w_bits / 8 for s in sites.values())
    layout = result.layout
    assert result.size_bytes == size_bytes
    assert layout.code_bytes == expected_codes
    assert size_bytes <= layout.code_bytes < size_bytes + len(sites)
    # every byte of the file is accounted for
    assert result.file_bytes == result.path.stat().st_size
    assert layout.file_bytes == layout.code_bytes + layout.qparam_bytes + layout.float_bytes + layout.header_bytes
    # a float32 scale per output channel, and zero points packed at the layer's width where it has non-zero ones
    def qparam_bytes(site) -> int:
        has_zp = bool(site.weight_quant.quantizer.zero_point.abs().max() > 0)
        return 4 * site.weight.shape[0] + (packed_nbytes(site.weight.shape[0], site.w_bits) if has_zp else 0)

    assert layout.qparam_bytes == sum(qparam_bytes(s) for s in sites.values())
    floats = {k: v for k, v in qmodel.state_dict().items()
              if "_quant." not in k and not (k.endswith(".weight") and k[:-7] in sites)}
    assert layout.float_bytes == sum(v.numel() * v.element_size() for v in floats.values())


def test_asymmetric_weights_and_reexport_of_a_loaded_model(calib, images, tmp_path):
    qmodel = quant.quantize(tiny("vit"), "W3A3", calib, config=QuantConfig(weight_symmetric=False, softmax="logsqrt2"))
    first = _export(qmodel, "vit", tmp_path / "a.safetensors")
    loaded = load_packed(first.path)
    with torch.no_grad():
        assert rel_l2(qmodel(images), loaded(images)) <= 1e-6
    # the loaded model knows its architecture and exports to the same bytes
    again = export(loaded, tmp_path / "b.safetensors", format="packed")
    assert again.path.read_bytes() == first.path.read_bytes()
    assert first.layout.qparam_bytes > 4 * sum(s.weight.shape[0] for s in quant.quant_sites(qmodel).values()
                                               if s.kind != "matmul")  # zero points stored
    symmetric = quant.quantize(tiny("vit"), "W3A3", calib, config=QuantConfig(weight_symmetric=True))
    result = _export(symmetric, "vit", tmp_path / "c.safetensors")
    assert result.layout.qparam_bytes == 4 * sum(s.weight.shape[0] for s in quant.quant_sites(symmetric).values()
                                                 if s.kind != "matmul")  # scales only


def test_loaded_model_has_fixed_bits(calib, tmp_path):
    qmodel = quant.quantize(tiny("swin"), "W4A4", calib)
    loaded = load_packed(_export(qmodel, "swin", tmp_path / "s.safetensors").path)
    site = quant.quant_sites(loaded)["layers.0.blocks.0.attn.qkv"]
    assert (site.w_bits, site.a_bits) == (4, 4)
    site.set_bits(4, 4)  # unchanged bits are fine
    with pytest.raises(ExportError, match="fixed.*quantize the float model again"):
        site.set_bits(8, 4)


def test_refusals(calib, tmp_path):
    model = tiny("vit")
    out = tmp_path / "x.safetensors"
    with pytest.raises(ExportError, match="not a quantized model"):
        _export(model, "vit", out)
    with pytest.raises(ExportError, match="not a quantized model"):
        export(torch.nn.Sequential(torch.nn.Linear(2, 2)), out, format="packed", arch="VisionTransformer")
    prepared = quant.prepare(model)
    with pytest.raises(ExportError, match="no quantized site"):
        _export(quant.calibrate(prepared, calib), "vit", out)
    uncalibrated = quant.prepare(model)
    for s in quant.quant_sites(uncalibrated).values():
        s.set_bits(4, 4)
    with pytest.raises(quant.NotCalibratedError, match="run quant.calibrate"):
        _export(uncalibrated, "vit", out)
    qmodel = quant.quantize(model, "W4A4", calib)
    with pytest.raises(ExportError, match="needs the architecture"):
        export(qmodel, out, format="packed")
    with pytest.raises(ExportError, match="does not rebuild this model"):
        export(qmodel, out, format="packed", arch="VisionTransformer", model_kwargs={**TINY_SPECS["vit"][1], "depth": 3})
    with pytest.raises(ExportError, match="does not rebuild this model.*shape"):
        export(qmodel, out, format="packed", arch="VisionTransformer", model_kwargs={**TINY_SPECS["vit"][1], "embed_dim": 64})
    with pytest.raises(ExportError, match="format='zip'"):
        export(qmodel, out, format="zip")
    with pytest.raises(PlanMismatchError, match="not quantized with this plan.*plan W3A3, model W4A4"):
        _export(qmodel, "vit", out, plan="W3A3")
    with pytest.raises(PlanMismatchError, match="lacks"):
        _export(qmodel, "vit", out, plan=MixedPlan(quant.find_quantizable_layers(tiny("swin"))))
    site = quant.quant_sites(qmodel)["blocks.0.mlp.fc1"]
    site.quantized_weight = lambda: site.weight * 1.0001  # a weight path off the quantizer's grid
    with pytest.raises(ExportError, match="not on its quantizer's grid"):
        _export(qmodel, "vit", out)
    assert not out.exists()  # nothing half-written by any refusal


def test_bad_files_are_refused(calib, tmp_path):
    plain = tmp_path / "plain.safetensors"
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(2)}, str(plain))
    with pytest.raises(PackedFormatError, match="not a packed mixqvit model"):
        load_packed(plain)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(PackedFormatError, match="not a safetensors file"):
        load_packed(junk)
    with pytest.raises(FileNotFoundError):
        load_packed(tmp_path / "missing.safetensors")
    for bad, message in (("{not json", "not JSON"), ('{"format": "mixqvit-packed", "version": 1}', "lacks"),
                         ('{"format": "other", "version": 1}', "this library reads")):
        save_file({"a": torch.zeros(2)}, str(plain), metadata={"mixqvit": bad})
        with pytest.raises(PackedFormatError, match=message):
            load_packed(plain)


def test_learned_quantizer_parameters_are_exported_as_they_are(calib, images, tmp_path):
    """QAT state (LSQ step sizes, a real-valued offset) is read from the quantizers, not re-derived."""
    qmodel = quant.quantize(tiny("deit"), "W4A4", calib)
    site = quant.quant_sites(qmodel)["blocks.1.mlp.fc1"]
    site.weight_quant.make_learnable(site.weight)
    grid = site.weight_quant.quantizer
    offset = grid.make_offset_learnable()
    with torch.no_grad():
        grid.scale.mul_(1.1)
        offset.add_(0.25)  # zero points off the integers: stored as float32
    result = _export(qmodel, "deit", tmp_path / "q.safetensors")
    with torch.no_grad():
        assert rel_l2(qmodel(images), load_packed(result.path)(images)) <= 1e-6
