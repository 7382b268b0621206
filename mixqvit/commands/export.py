"""``mixqvit export``: quantize a model with a plan and write a deployable file (packed or ONNX)."""
from __future__ import annotations

import argparse
import re
from typing import Any

from ..errors import MixQViTError
from ..options import (add_data_args, add_model_args, add_plan_arg, add_quiet_arg, check_data_path, out_directory,
                       read_plan)
from ..ptq import add_ptq_args, load_check_images, plan_config, ptq_config, quantize_from_args

HELP = "quantize with a plan and write a deployable file: bit-packed safetensors or ONNX (QDQ)"
DESCRIPTION = ("Quantize a model with a plan JSON or a uniform setting such as W4A4 (PTQ calibration on a "
               "calibration subset) and write it to --out: 'packed' is a safetensors file with every weight "
               "bit-packed at its plan width (reload with quant.load_packed), 'onnx' an ONNX model with "
               "QuantizeLinear/DequantizeLinear pairs for onnxruntime (needs pip install 'mixqvit[export]').")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    add_plan_arg(p, "W4A4")
    add_data_args(p, calib_default=256)
    add_ptq_args(p)
    p.add_argument("--format", choices=["packed", "onnx"], default="packed",
                   help="packed: safetensors with bit-packed integer weights (default); onnx: QDQ ONNX model")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="directory for the file (<model>.safetensors or <model>.onnx)")
    add_quiet_arg(p)


def architecture_of(loaded: Any) -> tuple[str, dict[str, Any]]:
    """The timm class or model name and constructor keywords a loaded model was built with
    (what a packed file records to rebuild it)."""
    info = loaded.info
    record = info.get("model")
    if isinstance(record, dict) and isinstance(record.get("timm_class"), str):  # a mixqvit training record
        return record["timm_class"], dict(record.get("kwargs") or {})
    if isinstance(info.get("arch"), str):  # a timm name, or a checkpoint config {"arch", "model_kwargs"}
        return info["arch"], dict(info.get("model_kwargs") or {})
    raise MixQViTError(f"cannot tell how {loaded.name} was built (its record names no timm class or model name), "
                       "so a packed file could not rebuild it; use --format onnx, or a checkpoint with a .json config")


def run(args: argparse.Namespace) -> int:
    from quant import export

    from ..datasets import load_calibration
    from ..loading import load_model

    chosen = ptq_config(args)
    plan = read_plan(args.plan)
    config = plan_config(chosen, plan)
    out_dir = out_directory(args.out)
    check_data_path(args.data)
    weights = {"weights": args.weights} if getattr(args, "weights", None) else {}
    loaded = load_model(args.model, args.pretrained, args.model_kwargs, **weights)
    arch, kwargs = architecture_of(loaded) if args.format == "packed" else (None, None)
    calib = load_calibration(loaded, args.data, args.calib, args.seed)
    qmodel = quantize_from_args(args, config, loaded.model, plan, calib[0], verbose=not args.quiet,
                                check=load_check_images(args, loaded))
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", loaded.name)
    path = out_dir / f"{slug}.{'safetensors' if args.format == 'packed' else 'onnx'}"
    result = export(qmodel, path, format=args.format, plan=plan, arch=arch, model_kwargs=kwargs)
    print(f"wrote {result.path}: {result.file_bytes:,} bytes; the plan's weights at their widths take "
          f"{result.size_bytes:,.0f} bytes")
    if result.layout is not None:
        lay = result.layout
        print(f"  packed weight codes {lay.code_bytes:,} + per-channel scales {lay.qparam_bytes:,} + float tensors "
              f"(LayerNorms, biases, embeddings) {lay.float_bytes:,} + header {lay.header_bytes:,} bytes")
    return 0
