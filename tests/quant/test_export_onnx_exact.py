"""The ONNX graph computes what the fake-quant model computes, operation for operation, where
that is possible: the quantizer's rounding, and the prefix tokens' input-independent values.

* ``QuantizeLinear(x, s, z)`` is ``round(x / s) + z``; torch's quantizer is ``round(x / s + z)``,
  whose sum rounds to float first. Inputs within a few ulps of every level boundary tell the two
  apart, and the exported quantizer must agree with torch on all of them.
* The class/distillation tokens' values up to the first attention are the same for every image;
  the graph must carry torch's values of them and not recompute them (a runtime's LayerNorm can
  round such a constant across a level boundary in every image).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from export_helpers import tiny
from quant_helpers import make_images

import quant
from quant.deploy.onnx_export import _QDQAct, _use_int4, to_onnx
from quant.deploy.prefix import TOKEN_AXES, prefix_constants
from quant.deploy.state import ActState, ExportState, UniformGrid
from quant.ranges import fake_quantize

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

#: (bits, qmin, qmax, zero point): unsigned 4 and 8 bits shifted, signed unshifted, 3 bits in a wider container
GRIDS = [(4, 0, 15, 8), (8, 0, 255, 131), (4, -8, 7, 0), (3, 0, 7, 3)]


class _One(torch.nn.Module):
    def __init__(self, act: ActState) -> None:
        super().__init__()
        self.q = _QDQAct(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.q(x)


def _near_boundaries(scale: torch.Tensor, zero_point: float, qmin: int, qmax: int) -> torch.Tensor:
    """Every x whose x / s + z lies within 4 float32 ulps of a half level, from both sides."""
    half = (torch.arange(qmin - 1, qmax + 1, dtype=torch.float64) + 0.5 - zero_point) * scale.double()
    base = half.float()
    values, up, down = [base], base.clone(), base.clone()
    for _ in range(4):
        up = torch.nextafter(up, torch.full_like(up, float("inf")))
        down = torch.nextafter(down, torch.full_like(down, float("-inf")))
        values += [up, down]
    return torch.cat(values)


@pytest.mark.parametrize("bits,qmin,qmax,zero_point", GRIDS)
def test_exported_quantizer_rounds_as_torch_does(bits, qmin, qmax, zero_point):
    scale = torch.tensor(0.2502332627773285)  # the shipped ViT's first 4-bit step
    grid = UniformGrid(scale, torch.tensor(float(zero_point)), qmin, qmax, None)
    act = ActState("q", "uniform", bits, grid=grid)
    x = _near_boundaries(scale, zero_point, qmin, qmax)
    proto = to_onnx(_One(act), (x.numel(),))
    _use_int4(proto, ExportState({}, {}, {}, {"q": act}, {}))
    got = ort.InferenceSession(proto.SerializeToString()).run(["logits"], {"images": x[None].numpy()})[0][0]
    want = fake_quantize(x, scale, grid.zero_point, qmin, qmax).numpy()
    assert np.array_equal(got, want)
    plain = ((torch.round(x / scale) + zero_point).clamp(qmin, qmax) - zero_point) * scale  # ONNX's own formula
    assert zero_point == 0 or not torch.equal(plain, torch.from_numpy(want))  # the inputs do tell them apart


def _prefix_outputs(proto, names: list[str], images: torch.Tensor) -> dict[str, np.ndarray]:
    """onnxruntime's values of the named quantizers' outputs (their DequantizeLinear)."""
    graph = proto.graph
    found = {}
    for name in names:
        nodes = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[1] == f"{name}.inner.scale"]
        assert len(nodes) == 1, name
        found[name] = nodes[0].output[0]
        graph.output.append(onnx.helper.make_tensor_value_info(found[name], onnx.TensorProto.FLOAT, None))
    out = ort.InferenceSession(proto.SerializeToString()).run(list(found.values()), {"images": images.numpy()})
    return dict(zip(names, out))


@pytest.mark.parametrize("kind,prefix", [("vit", 1), ("deit", 2)])
def test_prefix_tokens_are_exported_as_torch_constants(kind, prefix, tmp_path):
    qmodel = quant.quantize(tiny(kind), "W4A4", make_images(32, seed=1))
    path = quant.export(qmodel, tmp_path / "m.onnx", format="onnx").path
    names = [f"blocks.0.{k}" for k in TOKEN_AXES]
    images = make_images(6, seed=5)
    seen = {}
    hooks = [qmodel.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o)) for n in names]
    with torch.no_grad():
        qmodel(images)
    for h in hooks:
        h.remove()
    proto = onnx.load(str(path))
    inits = {i.name: i for i in proto.graph.initializer}
    for token in ("cls_token", "dist_token")[:prefix]:  # a runtime computing the tokens' path differently ...
        inits[token].CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(inits[token]) + 0.25, token))
    got = _prefix_outputs(proto, names, images)
    for name in names:  # ... still gets torch's quantized values at the prefix positions, in every image
        axis = TOKEN_AXES[name.removeprefix("blocks.0.")]
        want = seen[name].narrow(axis, 0, prefix)
        assert torch.equal(torch.from_numpy(got[name]).narrow(axis, 0, prefix), want), name


def test_prefix_constants_only_where_the_model_has_them():
    vit = quant.quantize(tiny("vit"), "W4A4", make_images(32, seed=1))
    active = {n for n, m in vit.named_modules() if isinstance(m, quant.ActQuantizer) and m.bits}
    found = prefix_constants(vit, active, (1, 32, 32))
    assert {n: c.axis for n, c in found.items()} == {f"blocks.0.{k}": a for k, a in TOKEN_AXES.items()}
    assert all(c.value.shape[0] == 1 and c.value.shape[c.axis] == 1 for c in found.values())
    swin = quant.quantize(tiny("swin"), "W4A4", make_images(32, seed=1))
    assert prefix_constants(swin, active, (1, 32, 32)) == {}  # no prefix tokens


class _MixTokens(torch.nn.Module):
    """Adds the mean over tokens to every token: the class token then depends on the image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x.mean(dim=1, keepdim=True)


def test_prefix_rows_that_depend_on_the_image_are_not_folded():
    model = tiny("vit")
    model.norm_pre = _MixTokens()
    qmodel = quant.quantize(model, "W4A4", make_images(32, seed=1))
    active = {n for n, m in qmodel.named_modules() if isinstance(m, quant.ActQuantizer) and m.bits}
    assert prefix_constants(qmodel, active, (1, 32, 32)) == {}
