"""ONNX export: QuantizeLinear/DequantizeLinear pairs that onnxruntime runs.

The fake-quant model is copied and each quantizer is swapped for an export module whose forward
is one custom torch op, which ``torch.onnx.export`` (the torch.export-based exporter) translates
into standard ONNX through ``custom_translation_table``:

* a quantized weight becomes an integer initializer (its codes, in the smallest of int4/uint4/
  int8/uint8/int16/uint16 that holds ``qmin..qmax``; int4 codes take half a byte) feeding
  ``DequantizeLinear`` with the per-channel scales and zero points (``axis=0``); the float weight
  is not in the file;
* a uniform activation quantizer becomes ``QuantizeLinear -> DequantizeLinear``, in torch's
  arithmetic to the bit. ``QuantizeLinear(x, s, z)`` computes ``round(x / s) + z`` (true division,
  half to even, as ``torch.round``), but the fake-quant model computes ``round(x / s + z)``: the
  sum is rounded to float first, and for ``z != 0`` a value within an ulp of ``k + 1/2 - z``
  lands on the half and rounds the other way (measured: 55 codes in 2e8 on the shipped ViT). So
  a grid with ``z != 0`` is written ``Div(x, s) -> Add(z) -> QuantizeLinear(scale 1, zero 0)``,
  the same two float operations as torch, then ``DequantizeLinear(s, z)``; with ``z = 0`` the
  plain pair is already exact. ONNX's integer types are 4, 8 or 16 bits wide, so a b-bit grid
  lives in a wider container and a ``Clip`` to the plan's range keeps the codes in it (omitted
  when that range is the container's); grids of at most 4 bits use int4/uint4 (re-typed after
  export, :func:`_use_int4`);
* the first block's quantizers at the prefix-token positions (class/distillation tokens) are
  constants of the model: torch's values are written in (:mod:`quant.deploy.prefix`);
* the log2/log-sqrt2 softmax quantizer is written out in standard ops by tracing
  :func:`quant.ranges.log_quantize` itself (Div, Log, Round, Max, Pow, Where ...).

Values come from :mod:`quant.deploy.state` (the calibrated quantizers), never re-derived.
"""
from __future__ import annotations

import copy
import inspect
import json
import os
import warnings
from typing import Any

import torch
from torch import nn

from allocator.atomic import write_bytes

from ..ranges import fake_quantize, log_quantize
from .errors import ExportError
from .packing import pack_codes
from .prefix import PrefixConstant, prefix_constants
from .state import ActState, ExportState, UniformGrid, WeightState

__all__ = ["OPSET", "save_onnx", "export_module", "to_onnx"]

#: QuantizeLinear/DequantizeLinear with int16 and int4 containers need opset 21.
OPSET = 21

_CONTAINERS = ((torch.int8, -128, 127), (torch.uint8, 0, 255), (torch.int16, -32768, 32767), (torch.uint16, 0, 65535))


@torch.library.custom_op("mixqvit_export::qdq", mutates_args=())
def _qdq(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, offset: torch.Tensor, lo: torch.Tensor,
         hi: torch.Tensor, unit: torch.Tensor, origin: torch.Tensor, qmin: int, qmax: int, narrow: bool,
         shifted: bool) -> torch.Tensor:
    return fake_quantize(x, scale, offset, qmin, qmax)


@_qdq.register_fake
def _(x, scale, zero_point, offset, lo, hi, unit, origin, qmin, qmax, narrow, shifted):
    return torch.empty_like(x)


@torch.library.custom_op("mixqvit_export::dequantize", mutates_args=())
def _dequantize(codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int) -> torch.Tensor:
    grid = UniformGrid(scale, zero_point.float(), 0, 0, None if axis < 0 else axis)
    return grid.dequantize(codes)


@_dequantize.register_fake
def _(codes, scale, zero_point, axis):
    return torch.empty(codes.shape, dtype=torch.float32, device=codes.device)


def _translation_table() -> dict:
    from onnxscript import opset21 as op

    def qdq(x, scale, zero_point, offset, lo, hi, unit, origin, qmin: int, qmax: int, narrow: bool, shifted: bool):
        if shifted:  # torch's x / s + z (two roundings), then round: QuantizeLinear with scale 1, zero 0
            x = op.Add(op.Div(x, scale), offset)
        if narrow:
            x = op.Clip(x, lo, hi)
        codes = op.QuantizeLinear(x, unit, origin) if shifted else op.QuantizeLinear(x, scale, zero_point)
        return op.DequantizeLinear(codes, scale, zero_point)

    def dequantize(codes, scale, zero_point, axis: int):
        if axis < 0:
            return op.DequantizeLinear(codes, scale, zero_point)
        return op.DequantizeLinear(codes, scale, zero_point, axis=axis)

    return {torch.ops.mixqvit_export.qdq.default: qdq, torch.ops.mixqvit_export.dequantize.default: dequantize}


def _container(grid: UniformGrid, what: str) -> tuple[torch.dtype, bool]:
    """Smallest ONNX integer type holding ``qmin..qmax``, and whether the grid is narrower."""
    if not grid.integer_zero_point():
        raise ExportError(f"{what} has a non-integer zero point (an LSQ+ learned offset); ONNX zero points are "
                          "integers, so export this model with format='packed'")
    for dtype, lo, hi in _CONTAINERS:
        if lo <= grid.qmin and grid.qmax <= hi:
            return dtype, (grid.qmin, grid.qmax) != (lo, hi)
    raise ExportError(f"{what}: codes {grid.qmin}..{grid.qmax} fit no ONNX integer type (int8/uint8/int16/uint16)")


class _QDQAct(nn.Module):
    """A uniform per-tensor activation quantizer as (Div, Add when ``z != 0``) Clip, QuantizeLinear,
    DequantizeLinear: torch's arithmetic (module docstring)."""

    def __init__(self, a: ActState) -> None:
        super().__init__()
        g = a.grid
        if g.scale.dim() != 0:
            raise ExportError(f"activation quantizer '{a.module}' is per-channel; the ONNX export writes per-tensor ones")
        dtype, self.narrow = _container(g, f"activation quantizer '{a.module}'")
        self.bits, self.qmin, self.qmax = a.bits, g.qmin, g.qmax
        self.shifted = bool(g.zero_point != 0)
        clip_unit = torch.tensor(1.0) if self.shifted else g.scale  # code units after the shift, else x's (z = 0)
        self.register_buffer("scale", g.scale.clone())
        self.register_buffer("zero_point", g.zero_point.to(dtype))
        self.register_buffer("offset", g.zero_point.clone())
        self.register_buffer("lo", g.qmin * clip_unit)
        self.register_buffer("hi", g.qmax * clip_unit)
        self.register_buffer("unit", torch.tensor(1.0))
        self.register_buffer("origin", torch.zeros((), dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _qdq(x, self.scale, self.zero_point, self.offset, self.lo, self.hi, self.unit, self.origin,
                    self.qmin, self.qmax, self.narrow, self.shifted)


class _PrefixFolded(nn.Module):
    """A uniform activation quantizer whose input's first positions along ``axis`` (the prefix
    tokens) are replaced by the quantized constants torch computed (:mod:`quant.deploy.prefix`).
    The constants pass through the quantizer again, which returns them unchanged (a value on the
    grid is its own fake quantization, checked here in torch's arithmetic, which the graph's
    follows): the Concat stays in float before QuantizeLinear, so every DequantizeLinear still
    feeds its MatMul directly (onnxruntime fuses a float input times a 4-bit DequantizeLinear
    weight into MatMulNBits, which quantizes the input to int8 on the fly)."""

    def __init__(self, inner: _QDQAct, constant: PrefixConstant, name: str) -> None:
        super().__init__()
        self.inner, self.axis, self.bits = inner, constant.axis, inner.bits  # bits: the sites ask whether it is on
        value = constant.value.float()
        again = fake_quantize(value, inner.scale, inner.offset, inner.qmin, inner.qmax)
        if not torch.equal(again, value):
            raise ExportError(f"the prefix-token constants of '{name}' are not on its quantizer's grid "
                              f"(largest distance {float((again - value).abs().max()):.3g}); cannot fold them")
        self.register_buffer("prefix", value.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.prefix.shape[self.axis]
        rest = x.narrow(self.axis, n, x.shape[self.axis] - n)
        return self.inner(torch.cat([self.prefix.expand(x.shape[0], *self.prefix.shape[1:]), rest], dim=self.axis))


class _LogAct(nn.Module):
    """The log2 / log-sqrt2 quantizer, traced into standard ONNX ops."""

    def __init__(self, a: ActState) -> None:
        super().__init__()
        self.bits, self.base = a.bits, a.kind
        self.register_buffer("scale", a.log_scale.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return log_quantize(x, self.scale, self.bits, self.base)


class _DQWeight(nn.Module):
    """A quantized weight as an integer initializer and DequantizeLinear; ignores the float weight."""

    def __init__(self, w: WeightState) -> None:
        super().__init__()
        dtype, _ = _container(w.grid, f"the weight of '{w.site}'")
        self.bits = w.bits
        self.axis = -1 if w.grid.channel_axis is None else w.grid.channel_axis
        self.register_buffer("codes", w.codes.to(dtype))
        self.register_buffer("scale", w.grid.scale.clone())
        self.register_buffer("zero_point", w.grid.zero_point.to(dtype))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return _dequantize(self.codes, self.scale, self.zero_point, self.axis)


def export_module(qmodel: nn.Module, state: ExportState,
                  prefix: dict[str, PrefixConstant] | None = None) -> nn.Module:
    """A CPU copy of ``qmodel`` whose quantizers are the export modules above (same logits as
    ``qmodel`` in torch, up to the float32 rounding of the dequantization), those named in
    ``prefix`` with their prefix-token constants folded in."""
    m = copy.deepcopy(qmodel).cpu().eval()
    for w in state.weights.values():
        layer = m.get_submodule(w.site)
        layer.weight_quant = _DQWeight(w)
        layer.weight = nn.Parameter(torch.empty(0), requires_grad=False)  # the codes replace it
    for name, a in state.acts.items():
        parent, _, child = name.rpartition(".")
        module: nn.Module = _QDQAct(a) if a.kind == "uniform" else _LogAct(a)
        if prefix and name in prefix and isinstance(module, _QDQAct):
            module = _PrefixFolded(module, prefix[name], name)
        setattr(m.get_submodule(parent) if parent else m, child, module)
    return m


def _input_shape(model: nn.Module) -> tuple[int, int, int]:
    pe = getattr(model, "patch_embed", None)
    size, proj = getattr(pe, "img_size", None), getattr(pe, "proj", None)
    if not (isinstance(size, (tuple, list)) and len(size) == 2 and isinstance(getattr(proj, "in_channels", None), int)):
        raise ExportError("cannot tell the model's input size; pass input_shape=(C, H, W)")
    return (proj.in_channels, int(size[0]), int(size[1]))


def _int4_type(grid: UniformGrid) -> int | None:
    """ONNX INT4/UINT4 when ``qmin..qmax`` fits in it (opset 21), else None."""
    from onnx import TensorProto

    if -8 <= grid.qmin and grid.qmax <= 7:
        return TensorProto.INT4
    if 0 <= grid.qmin and grid.qmax <= 15:
        return TensorProto.UINT4
    return None


def _int4_tensor(name: str, kind: int, values: torch.Tensor) -> Any:
    """An INT4/UINT4 initializer, two codes a byte (first in the low nibble, as ONNX lays them
    out: the little-endian stream of :func:`~quant.deploy.packing.pack_codes`); a list of ints
    would be stored as varints, about 1.5 bytes a code."""
    from onnx import helper

    nibbles = values.to(torch.int64).reshape(-1).numpy() & 0xF  # two's complement for INT4
    return helper.make_tensor(name, kind, list(values.shape), pack_codes(nibbles, 4).tobytes(), raw=True)


def _use_int4(proto: Any, state: ExportState) -> int:
    """Re-type the codes and zero points of every grid of at most 4 bits as INT4/UINT4, so a
    4-bit weight takes half a byte in the file and onnxruntime sees the plan's width. Zero
    points get a fresh initializer per quantizer (the exporter shares equal constants between
    quantizers of different widths). Returns the number of quantizers re-typed."""
    from onnx import numpy_helper

    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producer = {out: node for node in graph.node for out in node.output}

    def fresh(name: str, kind: int, values: torch.Tensor) -> str:
        graph.initializer.append(_int4_tensor(name, kind, values))
        return name

    retyped = 0
    for w in state.weights.values():
        kind, name = _int4_type(w.grid), f"{w.site}.weight_quant.codes"
        users = consumers.get(name, [])
        if kind is None or name not in inits or len(users) != 1 or users[0].op_type != "DequantizeLinear":
            continue
        inits[name].CopyFrom(_int4_tensor(name, kind, w.codes))
        users[0].input[2] = fresh(f"{w.site}.weight_quant.zero_point.int4", kind, w.grid.zero_point)
        retyped += 1
    for a in state.acts.values():
        # Activations only when the grid fills the int4 range, so that the Clip goes: onnxruntime
        # (1.32) fails to load Clip -> QuantizeLinear with a 4-bit zero point.
        kind = _int4_type(a.grid) if a.kind == "uniform" and (a.grid.qmin, a.grid.qmax) in ((-8, 7), (0, 15)) else None
        scale = next((n for n in (f"{a.module}.scale", f"{a.module}.inner.scale") if n in inits), None)
        dequantize = [n for n in consumers.get(scale, []) if n.op_type == "DequantizeLinear"]
        if kind is None or len(dequantize) != 1:
            continue  # not 4 bits, or its scale was merged with another quantizer's: keep int8
        dq = dequantize[0]
        q = producer.get(dq.input[0])
        clip = producer.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
        if clip is None or clip.op_type != "Clip" or consumers.get(q.output[0]) != [dq] \
                or len(consumers.get(clip.output[0], [])) != 1 or not {q.input[2], dq.input[2]} <= inits.keys():
            continue
        q.input[0] = clip.input[0]
        graph.node.remove(clip)
        for node, role in ((q, "quantize"), (dq, "dequantize")):  # Q's zero is 0 after a shift, DQ's is z
            value = torch.from_numpy(numpy_helper.to_array(inits[node.input[2]]).copy())
            node.input[2] = fresh(f"{a.module}.{role}_zero_point.int4", kind, value)
        retyped += 1
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return retyped


def _strip_debug_info(proto: Any) -> None:
    """Drop what the exporter records for debugging (each node's torch stack trace and module
    path, intermediate shapes): it is most of a small model's file and no runtime reads it."""
    for node in proto.graph.node:
        del node.metadata_props[:]
    del proto.graph.value_info[:]


def to_onnx(module: nn.Module, shape: tuple[int, ...]) -> Any:
    """The ONNX ``ModelProto`` of an export module (from :func:`export_module`): input ``images``
    ``(N, *shape)`` with a dynamic N, output ``logits``, the custom quantizer ops translated."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracing notices
        program = torch.onnx.export(
            module, (torch.zeros(2, *shape),), dynamo=True, opset_version=OPSET, input_names=["images"],
            output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},),
            custom_translation_table=_translation_table(), verbose=False)
    proto = program.model_proto
    _strip_debug_info(proto)
    return proto


def save_onnx(qmodel: nn.Module, state: ExportState, path: str | os.PathLike, *,
              input_shape: tuple[int, ...] | None = None) -> int:
    """Export to an ONNX file (input ``images`` (N, C, H, W), output ``logits``, dynamic N);
    returns the file's size in bytes."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (the exporter's translation library)
    except ImportError as exc:
        raise ExportError(f"format='onnx' needs onnx and onnxscript ({exc}); pip install 'mixqvit[export]'") from None
    if "custom_translation_table" not in inspect.signature(torch.onnx.export).parameters:
        raise ExportError(f"format='onnx' needs torch >= 2.6 (the dynamo exporter's custom_translation_table); "
                          f"this is torch {torch.__version__}: upgrade torch or use format='packed'")
    shape = tuple(input_shape) if input_shape is not None else _input_shape(qmodel)
    proto = to_onnx(export_module(qmodel, state, prefix_constants(qmodel, set(state.acts), shape)), shape)
    _use_int4(proto, state)
    sites = {n: {"w_bits": w, "a_bits": a} for n, (w, a) in state.site_bits.items()}
    onnx.helper.set_model_props(proto, {"mixqvit.sites": json.dumps(sites), "mixqvit.quant_config": json.dumps(state.config)})
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    write_bytes(path, data)
    return len(data)
