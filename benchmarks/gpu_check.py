"""GPU check: run once on a machine with a CUDA GPU; prints PASS/FAIL per check and writes
benchmarks/results/gpu_check.json. Exit status 0 only when every check passes.

    python -m benchmarks.gpu_check              # all checks, about 3-6 minutes on one H100/H200
    python -m benchmarks.gpu_check --skip-vitb  # without the 256-image ViT-B timing (~1 minute)

What it runs and what it checks (random-init timm models: no download; TF32 off so that CUDA
computes in true float32 like the CPU):

1. ``profile_cuda_equals_cpu``: ``profiling.profile_model`` of a 4-block DeiT-S
   (``deit_small_patch16_224``, depth 4, 224x224) on the same 8 random images, bits (2, 4, 8),
   once on the CPU and once on ``cuda``. Checks: LRP importance equal within 1e-3 relative; every
   sensitivity entry within 5% relative of the CPU's, or within 1e-3 of the table's largest value
   in absolute terms (a rounding boundary crossed by a last-bit difference changes a quantized
   value by one step); the per-layer ranking of the mean damage identical for the 10 most
   sensitive layers.
2. ``quantized_logits_cuda_equals_cpu``: ``quant.quantize(..., "W4A4")`` of the same model
   calibrated on the same images on each device; logits of 16 other images within 1e-2 of the
   logit scale (max |cuda - cpu| / max |cpu|), arg-max equal on at least 15 of 16.
3. ``cli_cuda``: ``mixqvit profile | solve | quantize --eval`` with ``--device cuda`` on
   random-init ``deit_small_patch16_224`` (full depth) and a synthetic 224x224 ImageFolder of 12
   images (``--calib 8 --bits 4,8 --batch-size 8``): exit status 0 each, the profile's metadata
   says ``input_shape`` [3, 224, 224], ``quantize`` prints a top-1 line.
4. ``fast_path_cuda_bitwise``: a W4A4 2-block DeiT-S on ``cuda``: the no-grad logits (in-place
   fake quantization, cached weights) equal the autograd forward's bit for bit.
5. ``train_cuda``: ``mixqvit.train.train_model`` (what ``mixqvit train --device cuda`` runs) for 3
   steps of ``fmnist_vit`` on 256 Fashion-MNIST images, evaluated on 500: the info records the
   device and the saved weights load.
6. ``qat_cuda``: 3 QAT steps of a 2-block DeiT-S at W4A4 on ``cuda`` (model, teacher and
   evaluation stay on the GPU): finite losses, the returned model's parameters on CUDA.
7. ``vitb_256_under_5min``: ``profile_model`` of random-init ``vit_base_patch16_224`` on 256
   random images, default bits (2, 3, 4, 5, 6, 8), batch size 64, on ``cuda``: wall time
   < 300 s (also reported: the LRP and sensitivity times, peak ``torch.cuda.max_memory_allocated``).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results" / "gpu_check.json"


def _model(depth: int | None = None, name: str = "deit_small_patch16_224") -> torch.nn.Module:
    import timm

    with torch.random.fork_rng():
        torch.manual_seed(0)
        kwargs = {} if depth is None else {"depth": depth}
        return timm.create_model(name, pretrained=False, **kwargs).eval()


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def check_profile(dev: str) -> dict:
    from profiling import profile_model

    x = _images(8, 0)
    cpu = profile_model(_model(4), x, bits=(2, 4, 8), batch_size=8, verbose=False)
    gpu = profile_model(_model(4).to(dev), x, bits=(2, 4, 8), batch_size=8, verbose=False)
    return profile_agreement(cpu, gpu)


def profile_agreement(cpu, gpu) -> dict:
    """How far profile `gpu` is from profile `cpu` (criteria in the module docstring, check 1)."""
    imp_rel = float(np.max(np.abs(gpu.importance - cpu.importance) / np.abs(cpu.importance)))
    worst = 0.0
    for a, b in ((gpu.weight_sensitivity, cpu.weight_sensitivity), (gpu.act_sensitivity, cpu.act_sensitivity)):
        scale = float(np.max(np.abs(b)))
        err = np.abs(a - b) / np.maximum(0.05 * np.abs(b), 1e-3 * scale)  # <= 1 passes
        worst = max(worst, float(np.max(err)))
    mean_cpu = (cpu.weight_sensitivity + cpu.act_sensitivity).mean(1)
    mean_gpu = (gpu.weight_sensitivity + gpu.act_sensitivity).mean(1)
    top_cpu, top_gpu = list(np.argsort(-mean_cpu)[:10]), list(np.argsort(-mean_gpu)[:10])
    return {"importance_max_rel_diff": imp_rel, "sensitivity_worst_normalised_err": worst,
            "top10_ranking_equal": top_cpu == top_gpu,
            "pass": imp_rel <= 1e-3 and worst <= 1.0 and top_cpu == top_gpu}


def check_quantized_logits(dev: str) -> dict:
    from quant import quantize

    calib, test = _images(8, 0), _images(16, 1)
    logits = {}
    for where in ("cpu", dev):
        q = quantize(_model(4).to(where), "W4A4", calib.to(where))
        with torch.no_grad():
            logits[where] = q(test.to(where)).cpu()
    diff = float((logits[dev] - logits["cpu"]).abs().max() / logits["cpu"].abs().max())
    agree = int((logits[dev].argmax(1) == logits["cpu"].argmax(1)).sum())
    return {"max_diff_over_scale": diff, "argmax_agree_of_16": agree, "pass": diff <= 1e-2 and agree >= 15}


def check_cli(dev: str) -> dict:
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(0)
        for i in range(12):
            d = root / "data" / f"class{i % 3}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray((rng.random((224, 224, 3)) * 255).astype(np.uint8)).save(d / f"{i}.png")
        common = ["--model", "deit_small_patch16_224", "--data", str(root / "data"), "--calib", "8",
                  "--device", dev, "--quiet"]
        cmds = {
            "profile": ["profile", *common, "--bits", "4,8", "--batch-size", "8", "--out", str(root / "p.json")],
            "solve": ["solve", str(root / "p.json"), "--budget", "6", "--out", str(root / "plan.json")],
            "quantize": ["quantize", *common, "--plan", str(root / "plan.json"), "--eval"],
        }
        result: dict = {}
        for name, args in cmds.items():
            t0 = time.perf_counter()
            run = subprocess.run([sys.executable, "-m", "mixqvit", *args], capture_output=True, text=True)
            result[name] = {"rc": run.returncode, "s": round(time.perf_counter() - t0, 1),
                            "out": run.stdout.strip().splitlines()[-1:] + run.stderr.strip().splitlines()[-2:]}
        md = json.loads((root / "p.json").read_text())["metadata"] if (root / "p.json").exists() else {}
    ok = all(r["rc"] == 0 for r in result.values()) and md.get("input_shape") == [3, 224, 224] \
        and any("top-1" in line for line in result["quantize"]["out"])
    return {**result, "pass": ok}


def check_fast_path(dev: str) -> dict:
    """The no-grad fake-quant path (in place, cached weights) on the device equals its autograd
    forward bit for bit, as on the CPU (tests/quant/test_quant_fast_path.py)."""
    from quant import quantize

    q = quantize(_model(2).to(dev), "W4A4", _images(8, 0).to(dev))
    x = _images(4, 1).to(dev)
    with torch.no_grad():
        fast = q(x)
    slow = q(x.clone().requires_grad_(True)).detach()
    same = bool(torch.equal(fast.view(torch.int32), slow.view(torch.int32)))
    return {"bitwise_equal": same, "pass": same}


def check_train(dev: str) -> dict:
    """``mixqvit train``'s function on the device: 3 steps of fmnist_vit, evaluation included."""
    from mixqvit.models import load_shipped
    from mixqvit.train import train_model

    with tempfile.TemporaryDirectory() as tmp:
        info = train_model("fmnist_vit", out_dir=tmp, device=dev, epochs=1, train_limit=256, test_limit=500,
                           max_steps=3, verbose=False)
        model, _ = load_shipped("fmnist_vit", Path(tmp))  # saved from the device, loads on the CPU
    ok = info["device"].startswith(torch.device(dev).type) and 0.0 <= info["test_accuracy"] <= 1.0
    return {"device": info["device"], "loss": info["history"][-1]["loss"], "test_accuracy": info["test_accuracy"],
            "loaded_params": sum(p.numel() for p in model.parameters()), "pass": ok}


def check_qat(dev: str) -> dict:
    from quant import QATConfig, qat

    images, labels = _images(12, 2), torch.arange(12) % 3
    qmodel, history = qat(_model(2), "W4A4", (images, labels), config=QATConfig(batch_size=4, max_steps=3),
                          device=dev, verbose=False)
    on_cuda = all(p.device.type == torch.device(dev).type for p in qmodel.parameters())
    return {"loss": history[-1]["loss"], "params_on_device": on_cuda,
            "pass": on_cuda and bool(np.isfinite(history[-1]["loss"]))}


def check_vitb(dev: str) -> dict:
    from profiling import profile_model

    model, x = _model(None, "vit_base_patch16_224").to(dev), _images(256, 3)
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    prof = profile_model(model, x, batch_size=64, verbose=True)
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    return {"wall_s": round(wall, 1), "timings_s": prof.metadata["timings_s"],
            "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20), "pass": wall < 300}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-vitb", action="store_true", help="skip the 256-image ViT-B timing")
    ap.add_argument("--device", default="cuda", help="device under test (default cuda; 'cpu' only checks the "
                    "script itself: CPU against CPU, without the ViT-B timing)")
    args = ap.parse_args(argv)
    if args.device == "cpu":
        args.skip_vitb = True
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing checked")
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    checks = {"profile_cuda_equals_cpu": check_profile, "quantized_logits_cuda_equals_cpu": check_quantized_logits,
              "cli_cuda": check_cli, "fast_path_cuda_bitwise": check_fast_path, "qat_cuda": check_qat,
              "train_cuda": check_train, "vitb_256_under_5min": check_vitb}
    if args.skip_vitb:
        checks.pop("vitb_256_under_5min")
    name = torch.cuda.get_device_name(0) if args.device != "cpu" else "cpu (script self-check)"
    report = {"device": name, "torch": torch.__version__, "checks": {}}
    for name, fn in checks.items():
        t0 = time.perf_counter()
        try:
            res = fn(args.device)
        except Exception as exc:  # noqa: BLE001 - a failed check is reported, the others still run
            res = {"pass": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
        res["check_s"] = round(time.perf_counter() - t0, 1)
        report["checks"][name] = res
        shown = {k: v for k, v in res.items() if k not in ("traceback",)}
        print(f"{'PASS' if res['pass'] else 'FAIL'} {name}: {json.dumps(shown, default=str)}", flush=True)
    out = RESULTS if args.device != "cpu" else RESULTS.with_name("gpu_check_selftest.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {out}")
    return 0 if all(r["pass"] for r in report["checks"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
