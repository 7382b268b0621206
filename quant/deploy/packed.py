"""The packed format: one safetensors file holding a fake-quantized model at its plan's widths.

Tensors (names are the model's qualified names):

* ``<layer>.weight.codes`` (uint8): each quantized weight's integer codes minus ``qmin``, packed at
  the site's bit-width (:mod:`quant.deploy.packing`: little-endian bit stream, no padding but the
  last byte), so they take ``ceil(numel * bits / 8)`` bytes;
* ``<layer>.weight.scale`` (float32, one per output channel) and ``<layer>.weight.zero_point``
  (written only when some channel's zero point is not 0: bit-packed like the codes when they are
  integers on the grid, as asymmetric grids have, else float32);
* every other parameter and persistent buffer, in its own dtype: the folded LayerNorms, biases,
  position embeddings and tokens, float layers.

The safetensors metadata key ``"mixqvit"`` holds JSON: format and version, the architecture
(:mod:`quant.deploy.arch`), the ``QuantConfig``, every site's kind and bits, each quantized
weight's shape and grid (bits, qmin, qmax, channel axis) and each activation quantizer's kind,
bits and parameters (scalars, exact: a float32 printed as its float64 value reads back
bit-identical).

Size: the codes take what ``allocator.Plan.size_bytes`` counts (to within one byte per weight
tensor); everything else is the overhead that :class:`PackedLayout` itemises.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from allocator.atomic import write_bytes

from ..config import QuantConfig
from .errors import PackedFormatError
from .packing import pack_codes, unpack_codes
from .rebuild import assign_tensor, check_layout, install_act, install_weight, skeleton
from .state import ActState, ExportState, UniformGrid, WeightState

__all__ = ["PACKED_FORMAT", "PACKED_VERSION", "PackedLayout", "packed_payload", "save_packed", "load_packed"]

PACKED_FORMAT = "mixqvit-packed"
PACKED_VERSION = 1
_META_KEY = "mixqvit"


@dataclass(frozen=True)
class PackedLayout:
    """Where the bytes of a packed file go. ``file_bytes`` is the sum of the other four."""

    code_bytes: int      # bit-packed weight codes: the plan's size_bytes, rounded up per tensor
    qparam_bytes: int    # per-channel weight scales (and non-zero zero points), float32
    float_bytes: int     # every non-quantized tensor (LayerNorms, biases, embeddings, float layers)
    header_bytes: int    # safetensors header: tensor index + the JSON metadata
    file_bytes: int

    @property
    def overhead_bytes(self) -> int:
        return self.file_bytes - self.code_bytes


def _number(t: torch.Tensor) -> Any:
    return t.detach().float().cpu().tolist()


def _grid_meta(grid: UniformGrid) -> dict[str, Any]:
    return {"qmin": grid.qmin, "qmax": grid.qmax, "channel_axis": grid.channel_axis}


def _act_meta(a: ActState) -> dict[str, Any]:
    if a.kind == "uniform":
        return {"kind": a.kind, "bits": a.bits, "scale": _number(a.grid.scale),
                "zero_point": _number(a.grid.zero_point), **_grid_meta(a.grid)}
    return {"kind": a.kind, "bits": a.bits, "scale": _number(a.log_scale)}


def _zero_point_tensor(w: WeightState) -> tuple[str | None, torch.Tensor | None]:
    """How a weight's zero points are stored: not at all when all are 0 (symmetric grids),
    bit-packed like the codes when they are integers in ``qmin..qmax`` (asymmetric grids),
    else float32."""
    zp, grid = w.grid.zero_point, w.grid
    if not bool(zp.abs().max() > 0):
        return None, None
    if grid.integer_zero_point() and grid.qmin <= zp.min() and zp.max() <= grid.qmax:
        return "packed", torch.from_numpy(pack_codes((zp - grid.qmin).to(torch.int64).numpy(), w.bits))
    return "float", zp.contiguous()


def packed_payload(state: ExportState, spec: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, int]]:
    """The tensors and metadata of the packed file, and the byte count of each tensor class."""
    tensors: dict[str, torch.Tensor] = {}
    counts = {"code_bytes": 0, "qparam_bytes": 0, "float_bytes": 0}
    weights_meta = {}
    for param, w in state.weights.items():
        codes = pack_codes((w.codes - w.grid.qmin).numpy(), w.bits)
        tensors[f"{param}.codes"] = torch.from_numpy(codes)
        tensors[f"{param}.scale"] = w.grid.scale.contiguous()
        zp_mode, zp = _zero_point_tensor(w)
        if zp is not None:
            tensors[f"{param}.zero_point"] = zp
        counts["code_bytes"] += codes.size
        counts["qparam_bytes"] += w.grid.scale.numel() * 4 + (0 if zp is None else zp.numel() * zp.element_size())
        weights_meta[param] = {"site": w.site, "bits": w.bits, "shape": list(w.codes.shape),
                               "zero_point": zp_mode, **_grid_meta(w.grid)}
    for name, t in state.floats.items():
        tensors[name] = t.contiguous()
        counts["float_bytes"] += t.numel() * t.element_size()
    meta = {
        "format": PACKED_FORMAT, "version": PACKED_VERSION, "model": spec, "quant_config": state.config,
        "sites": {n: {"kind": state.site_kinds[n], "w_bits": w, "a_bits": a} for n, (w, a) in state.site_bits.items()},
        "weights": weights_meta,
        "acts": {name: _act_meta(a) for name, a in state.acts.items()},
    }
    return tensors, meta, counts


def save_packed(state: ExportState, path: str | os.PathLike, spec: dict[str, Any]) -> PackedLayout:
    """Write the packed file atomically; return its byte layout."""
    from safetensors.torch import save as safetensors_bytes

    tensors, meta, counts = packed_payload(state, spec)
    data = safetensors_bytes(tensors, metadata={_META_KEY: json.dumps(meta, separators=(",", ":"))})
    write_bytes(path, data)
    header = len(data) - sum(counts.values())
    return PackedLayout(header_bytes=header, file_bytes=len(data), **counts)


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import SafetensorError
    from safetensors.torch import load as safetensors_load

    if not path.is_file():
        raise FileNotFoundError(f"packed model file {path} does not exist")
    data = path.read_bytes()
    try:
        tensors = safetensors_load(data)
        header_len = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8:8 + header_len]).get("__metadata__") or {}
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise PackedFormatError(f"{path} is not a safetensors file ({exc})") from None
    if _META_KEY not in metadata:
        raise PackedFormatError(f"{path} is a safetensors file but not a packed mixqvit model (no '{_META_KEY}' "
                                "metadata); write one with quant.export(qmodel, path, format='packed')")
    try:
        meta = json.loads(metadata[_META_KEY])
    except ValueError as exc:
        raise PackedFormatError(f"{path}: its '{_META_KEY}' metadata is not JSON ({exc}); the file is corrupt") from None
    if not isinstance(meta, dict) or meta.get("format") != PACKED_FORMAT or meta.get("version") != PACKED_VERSION:
        meta = meta if isinstance(meta, dict) else {}
        raise PackedFormatError(f"{path} has format {meta.get('format')!r} version {meta.get('version')!r}; "
                                f"this library reads {PACKED_FORMAT!r} version {PACKED_VERSION}")
    missing = [k for k in ("model", "quant_config", "sites", "weights", "acts") if k not in meta]
    if missing:
        raise PackedFormatError(f"{path}: the metadata lacks {missing}; the file is corrupt")
    return tensors, meta


def _grid(meta: dict[str, Any], scale: Any, zero_point: Any) -> UniformGrid:
    def t(v: Any) -> torch.Tensor:
        return v.float() if isinstance(v, torch.Tensor) else torch.tensor(v, dtype=torch.float32)

    return UniformGrid(t(scale), t(zero_point), int(meta["qmin"]), int(meta["qmax"]), meta["channel_axis"])


def _read_zero_point(tensors: dict[str, torch.Tensor], param: str, w: dict[str, Any], scale: torch.Tensor) -> torch.Tensor:
    mode = w["zero_point"]
    if mode is None:
        return torch.zeros_like(scale)
    stored = tensors.get(f"{param}.zero_point")
    if mode not in ("packed", "float") or stored is None:
        raise PackedFormatError(f"the zero points of '{param}' are missing or of unknown kind {mode!r}; the file is corrupt")
    if mode == "float":
        return stored.float()
    codes = unpack_codes(stored.numpy(), int(w["bits"]), scale.numel()) + int(w["qmin"])
    return torch.from_numpy(codes).float().reshape(scale.shape)


def load_packed(path: str | os.PathLike) -> nn.Module:
    """Rebuild the fake-quantized model stored by ``quant.export(..., format="packed")``.

    Its logits equal those of the model that was exported (same float32 arithmetic). The
    quantizers are frozen (:mod:`quant.deploy.frozen`): bits cannot be changed. The model keeps
    ``quant_config`` and ``model_spec`` (so it can be exported again, e.g. to ONNX). Raises
    :class:`PackedFormatError` for a file that is not a packed model or does not match the
    architecture it names.
    """
    path = Path(path)
    tensors, meta = _read(path)
    try:
        config = QuantConfig.from_dict(meta["quant_config"]) if meta["quant_config"] else QuantConfig()
    except (ValueError, TypeError) as exc:
        raise PackedFormatError(f"{path}: its quantization config is not understood by this version ({exc})") from None
    model = skeleton(meta["model"], config)
    weights = meta["weights"]
    weight_parts = {f"{p}.{part}" for p in weights for part in ("codes", "scale", "zero_point")}
    floats = {k: v for k, v in tensors.items() if k not in weight_parts}
    shapes = {k: tuple(v.shape) for k, v in floats.items()} | {p: tuple(w["shape"]) for p, w in weights.items()}
    check_layout(model, meta["sites"], shapes)
    for name, value in floats.items():
        assign_tensor(model, name, value)
    for param, w in weights.items():
        try:
            packed, scale = tensors[f"{param}.codes"], tensors[f"{param}.scale"]
        except KeyError as exc:
            raise PackedFormatError(f"{path}: tensor {exc} is missing") from None
        zero_point = _read_zero_point(tensors, param, w, scale)
        count = int(np.prod(w["shape"]))
        codes = torch.from_numpy(unpack_codes(packed.numpy(), int(w["bits"]), count) + int(w["qmin"]))
        install_weight(model, w["site"], int(w["bits"]), codes.reshape(w["shape"]), _grid(w, scale, zero_point))
    for name, a in meta["acts"].items():
        if a["kind"] == "uniform":
            install_act(model, name, "uniform", int(a["bits"]), _grid(a, a["scale"], a["zero_point"]), None)
        else:
            install_act(model, name, a["kind"], int(a["bits"]), None, torch.tensor(a["scale"], dtype=torch.float32))
    model.model_spec = meta["model"]
    return model.eval()
