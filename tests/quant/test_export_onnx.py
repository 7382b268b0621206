"""ONNX QDQ export: a standard graph (integer weight initializers, Q/DQ pairs with the plan's
ranges, the log softmax quantizer in plain ops) that onnxruntime runs to the fake-quant logits.

onnxruntime's float kernels (GEMM order, LayerNorm) differ from torch's by float rounding, and a
quantizer turns a rounding difference at a level boundary into a whole step; so most images match
to float precision and a rare one is off by a step's effect (see README, "Deployable files").
"""
from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
from export_helpers import TINY_SPECS, MixedPlan, tiny
from quant_helpers import make_images

import quant
from quant.deploy import ExportError, export, load_packed
from quant.deploy.state import collect_state

onnx = pytest.importorskip("onnx")  # the [export] extra; part of [dev], so CI runs these
ort = pytest.importorskip("onnxruntime")


def _per_image_error(want: torch.Tensor, got: torch.Tensor) -> torch.Tensor:
    return (want - got).norm(dim=1) / want.norm(dim=1)


@pytest.fixture(scope="module", params=["vit", "swin"])
def exported(request, tmp_path_factory):
    model = tiny(request.param)
    plan = MixedPlan(quant.find_quantizable_layers(model))
    qmodel = quant.quantize(model, plan, make_images(32, seed=1))
    folder = tmp_path_factory.mktemp("onnx")
    source = qmodel
    if request.param == "swin":  # the Swin goes packed -> load_packed -> ONNX: a reloaded model exports too
        arch, kwargs = TINY_SPECS["swin"]
        source = load_packed(export(qmodel, folder / "swin.safetensors", arch=arch, model_kwargs=kwargs).path)
    return qmodel, plan, export(source, folder / f"{request.param}.onnx", format="onnx", plan=plan)


def test_onnxruntime_matches_the_fake_quant_model(exported):
    qmodel, _, result = exported
    images = make_images(24, seed=2)
    session = ort.InferenceSession(str(result.path))
    got = torch.from_numpy(session.run(["logits"], {"images": images.numpy()})[0])
    with torch.no_grad():
        want = qmodel(images)
    errors = _per_image_error(want, got)
    assert float(errors.median()) < 1e-5  # the same function, to float precision
    assert float((want - got).norm() / want.norm()) < 1e-2  # and no image far off
    assert result.file_bytes == result.path.stat().st_size


def test_graph_is_standard_qdq(exported):
    qmodel, plan, result = exported
    graph = onnx.load(str(result.path)).graph
    ops = collections.Counter(n.op_type for n in graph.node)
    uniform_acts = [m for m in qmodel.modules() if isinstance(m, quant.ActQuantizer) and m.bits and m.kind == "uniform"]
    assert ops["QuantizeLinear"] == len(uniform_acts)
    assert ops["Clip"] >= sum(1 for m in uniform_acts if m.bits < 8 and m.bits != 4)  # 2,3,5,6 bits in int8
    four_bit_points = [i for i in graph.initializer if i.name.endswith("act_quant.dequantize_zero_point.int4")]
    assert len(four_bit_points) == sum(1 for n, m in qmodel.named_modules()
                                       if n.endswith("act_quant") and m.bits == 4)  # 4-bit inputs: int4, no Clip
    assert {"Log", "Round", "Where"} <= set(ops)  # the log2 softmax quantizer in standard ops
    assert "ai.onnx" not in {o.domain for o in onnx.load(str(result.path)).opset_import} - {""}
    inits = {i.name: i for i in graph.initializer}
    sites = {n: s for n, s in quant.quant_sites(qmodel).items() if s.kind != "matmul"}
    state = collect_state(qmodel)
    int4 = (onnx.TensorProto.INT4, onnx.TensorProto.UINT4)
    for name, site in sites.items():
        init = inits[f"{name}.weight_quant.codes"]
        assert (init.data_type in int4) == (site.w_bits <= 4)  # half a byte per code up to 4 bits
        codes = onnx.numpy_helper.to_array(init).astype(np.int64)
        assert codes.shape == tuple(site.weight.shape)
        assert np.array_equal(codes, state.weights[f"{name}.weight"].codes.numpy())
        if init.data_type in int4:
            assert len(init.raw_data) == (codes.size + 1) // 2  # two codes a byte, not varints
        grid = site.weight_quant.quantizer
        assert grid.qmax - grid.qmin + 1 <= 2 ** site.w_bits
        assert grid.qmin <= codes.min() and codes.max() <= grid.qmax  # the plan's width, not the container's
        assert not any(n.startswith(f"{name}.weight") and i.data_type == onnx.TensorProto.FLOAT
                       and len(i.dims) > 1 for n, i in inits.items())  # no float copy of the weight


def test_batch_is_dynamic(exported):
    _, _, result = exported
    session = ort.InferenceSession(str(result.path))
    for n in (1, 5):
        out = session.run(["logits"], {"images": make_images(n, seed=3).numpy()})[0]
        assert out.shape == (n, 10)


def test_learned_non_integer_offsets_are_refused(tmp_path):
    qmodel = quant.quantize(tiny("vit"), "W4A4", make_images(32, seed=1))
    act = qmodel.get_submodule("blocks.0.mlp.fc1.act_quant")
    act.materialize()
    act.quantizer.zero_point = act.quantizer.zero_point + 0.5  # what an LSQ+ offset can learn
    with pytest.raises(ExportError, match="non-integer zero point.*format='packed'"):
        export(qmodel, tmp_path / "m.onnx", format="onnx")
    assert not (tmp_path / "m.onnx").exists()
