"""Deployable files of the shipped models: sizes on disk, and how faithfully they compute.

    nice -n 10 python -m benchmarks.export [--models fmnist_vit fmnist_deit fmnist_swin]
                                           [--n-test 10000] [--calib 256] [--threads 1] [--out PATH]
                                           [--no-other-cpus]
    python -m benchmarks.export --table-from benchmarks/results/export.json [more.json]   (the README's tables)

For each model: profile it as the demo does (``profiling.profile_model`` through
``mixqvit.evaluation.profile_loaded`` on the calibration images and labels, bits 2,3,4,6,8), then for uniform W8A8, uniform W4A4 and the mixed plan
``allocator.solve(profile, budget=3.0)`` quantize (PTQ, 256 class-balanced training images) and

* write the packed file (``quant.export(..., format="packed")``), reload it and compare its
  logits with the in-memory fake-quant model's on the test images;
* write the ONNX file and run it in onnxruntime (graph optimisations on, as deployed); compare
  its logits and top-1 with the fake-quant model's on the test images;
* controls -- how far the fake-quant model moves against ITSELF, which bounds the agreement any
  other runtime can be asked for: (a) the first LayerNorm's bias moved by one float32 ulp; (b) the
  same packed model evaluated by torch in a subprocess restricted to other CPU kernels, as another
  x86 CPU runs it: AVX2 (``ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2
  ONEDNN_MAX_CPU_ISA=AVX2``) and no vector extensions past SSE4.2 (``ATEN_CPU_CAPABILITY=default
  MKL_ENABLE_INSTRUCTIONS=SSE4_2 ONEDNN_MAX_CPU_ISA=SSE41``); logits and top-1 against the
  in-process model. Float noise of an ulp flips a few activation codes at level boundaries and
  the flips spread: another runtime cannot be asked to agree more closely than torch agrees with
  itself on another CPU.

Sizes: the float model as safetensors, the packed and ONNX files, the plan's ``size_bytes``
(weights at their widths), and the packed file's overhead (per-channel scales, float tensors,
header). A second table gives the packed size of every plan in the demo's table (uniform and
mixed at W6A6..W2A2, solved as the demo solves them: under the uniform plan's size and BOPs with
the patch embedding and head free); export only, no evaluation. Torch and onnxruntime run on
``--threads`` threads. Writes benchmarks/results/export.json (``--out`` overrides).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "export.json"
BITS = (2, 3, 4, 6, 8)
#: torch's CPU kernels as other x86 CPUs get them (ATen's dispatch, MKL's GEMM, oneDNN's conv).
OTHER_CPUS = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "sse4.2": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}


def _logits(fn, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([torch.as_tensor(fn(images[i:i + batch])) for i in range(0, len(images), batch)])


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / a.norm())


def _one_ulp_control(qmodel: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``qmodel`` with the first LayerNorm's bias moved by one float32 ulp: how far the
    fake-quant model's own logits move under float noise of the size other kernels introduce."""
    import copy

    other = copy.deepcopy(qmodel)
    norm = next(m for m in other.modules() if isinstance(m, torch.nn.LayerNorm) and m.bias is not None)
    with torch.no_grad():
        norm.bias.copy_(torch.nextafter(norm.bias, torch.full_like(norm.bias, float("inf"))))
    return other


def _torch_elsewhere(packed: Path, images: Path, kernels: str, threads: int, work: Path) -> tuple[torch.Tensor, str]:
    """Logits of the packed model on ``images`` from a fresh torch limited to ``OTHER_CPUS[kernels]``
    (the kernels are chosen when torch loads, hence a subprocess), and the capability it ran with."""
    out = work / f"logits_{kernels}.pt"
    env = {**os.environ, **OTHER_CPUS[kernels], "OMP_NUM_THREADS": str(threads)}
    subprocess.run([sys.executable, "-m", "benchmarks.export", "--logits-of", str(packed), "--images", str(images),
                    "--threads", str(threads), "--out", str(out)], env=env, check=True,
                   cwd=Path(__file__).resolve().parents[1])
    result = torch.load(out)
    return result["logits"], result["capability"]


def _agreement(want: torch.Tensor, got: torch.Tensor, labels: torch.Tensor) -> dict:
    """Relative L2 of ``got``'s logits to ``want``'s (all images, median image, images above 1e-3),
    top-1 of ``got`` and the predictions that differ."""
    per_image = (want - got).norm(dim=1) / want.norm(dim=1)
    return {"rel_l2": _rel(want, got), "median_image_rel": float(per_image.median()),
            "images_rel_gt_1e-3": int((per_image > 1e-3).sum()),
            "top1": float((got.argmax(1) == labels).float().mean()) * 100,
            "predictions_differing": int((want.argmax(1) != got.argmax(1)).sum())}


def _logits_of_packed(packed: Path, images: Path, out: Path) -> int:
    """The subprocess side of :func:`_torch_elsewhere`."""
    from quant import load_packed

    logits = _logits(load_packed(packed), torch.load(images))
    torch.save({"logits": logits, "capability": torch.backends.cpu.get_cpu_capability()}, out)
    return 0


def _plans(profile):
    from allocator import Budget, NonBindingLimitWarning, Plan, solve

    main = [("W8A8", Plan.uniform(profile, 8, 8)), ("W4A4", Plan.uniform(profile, 4, 4)),
            ("mixed <=3 bits", solve(profile, budget=3.0))]
    demo = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonBindingLimitWarning)
        for b in (6, 4, 3, 2):
            uniform = Plan.uniform(profile, b, b)
            mixed = solve(profile, budget=Budget(size_mb=uniform.size_bytes / 1e6, bops=uniform.bops),
                          pinned={n: None for n in uniform.pinned})
            demo += [(f"uniform W{b}A{b}", uniform), (f"mixed <= W{b}A{b}", mixed)]
    return main, demo


def run_model(name: str, n_test: int, n_calib: int, threads: int, work: Path,
              other_cpus: bool = True) -> tuple[list[dict], list[dict]]:
    import onnxruntime as ort
    from safetensors.torch import save as safetensors_bytes

    from mixqvit.commands.export import architecture_of
    from mixqvit.datasets import load_calibration, load_test
    from mixqvit.loading import load_model
    from mixqvit.evaluation import profile_loaded
    from quant import export, load_packed, quantize

    loaded = load_model(name)
    model, (arch, kwargs) = loaded.model, architecture_of(loaded)
    calib_pair = load_calibration(loaded, None, n_calib)
    calib = calib_pair[0]
    test = load_test(loaded, None, n_test)
    images, labels = test.images, test.labels
    images_file = work / f"{name}_test_images.pt"
    torch.save(images, images_file)
    float_bytes = len(safetensors_bytes({k: v.contiguous() for k, v in model.state_dict().items()}))
    t0 = time.perf_counter()
    profile = profile_loaded(loaded, calib_pair, bits=BITS, verbose=False, seed=0)  # as the demo profiles
    print(f"[{name}] profiled in {time.perf_counter() - t0:.0f} s; float safetensors {float_bytes:,} bytes", flush=True)
    main, demo = _plans(profile)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    rows = []
    for label, plan in main:
        qmodel = quantize(model, plan, calib)
        want = _logits(qmodel, images)
        top1_fq = float((want.argmax(1) == labels).float().mean()) * 100
        packed = export(qmodel, work / f"{name}.safetensors", format="packed", plan=plan, arch=arch, model_kwargs=kwargs)
        reloaded = _logits(load_packed(packed.path), images)
        t0 = time.perf_counter()
        onnx_file = export(qmodel, work / f"{name}.onnx", format="onnx", plan=plan)
        onnx_s = time.perf_counter() - t0
        session = ort.InferenceSession(str(onnx_file.path), options)
        got = _agreement(want, _logits(lambda x: session.run(["logits"], {"images": x.numpy()})[0], images), labels)
        elsewhere = {}
        for kernels in OTHER_CPUS if other_cpus else ():
            logits, capability = _torch_elsewhere(packed.path, images_file, kernels, threads, work)
            elsewhere[kernels] = {"capability": capability, **_agreement(want, logits, labels)}
        lay = packed.layout
        rows.append({
            "model": name, "plan": label, "avg_w_bits": plan.avg_w_bits, "avg_a_bits": plan.avg_a_bits,
            "plan_size_bytes": plan.size_bytes, "float_bytes": float_bytes, "packed_bytes": packed.file_bytes,
            "packed_code_bytes": lay.code_bytes, "packed_qparam_bytes": lay.qparam_bytes,
            "packed_float_bytes": lay.float_bytes, "packed_header_bytes": lay.header_bytes,
            "onnx_bytes": onnx_file.file_bytes, "packed_rel_l2": _rel(want, reloaded), "top1_fake_quant": top1_fq,
            "onnxruntime": got, "top1_diff_points": got["top1"] - top1_fq,
            "one_ulp_ln_bias": _agreement(want, _logits(_one_ulp_control(qmodel), images), labels),
            "torch_other_cpus": elsewhere, "n_test": len(labels), "onnx_export_s": onnx_s,
        })
        others = ", ".join(f"torch {k} rel {v['rel_l2']:.2e} top-1 {v['top1']:.2f}" for k, v in elsewhere.items())
        print(f"[{name}] {label}: packed {packed.file_bytes:,} B (plan {plan.size_bytes:,.0f}), onnx "
              f"{onnx_file.file_bytes:,} B, packed rel {rows[-1]['packed_rel_l2']:.1e}, onnx rel {got['rel_l2']:.2e}, "
              f"top-1 {top1_fq:.2f} / ORT {got['top1']:.2f}; {others}", flush=True)
    sizes = []
    for label, plan in demo:
        qmodel = quantize(model, plan, calib)
        packed = export(qmodel, work / f"{name}_demo.safetensors", format="packed", plan=plan, arch=arch, model_kwargs=kwargs)
        sizes.append({"model": name, "plan": label, "avg_w_bits": plan.avg_w_bits, "plan_size_bytes": plan.size_bytes,
                      "packed_bytes": packed.file_bytes, "overhead_bytes": packed.layout.overhead_bytes,
                      "float_bytes": float_bytes})
    return rows, sizes


_SHORT = {"fmnist_vit": "ViT", "fmnist_deit": "DeiT", "fmnist_swin": "Swin"}


def _sci(value: float, digits: int = 1) -> str:
    """``5.4e-3`` (no exponent padding), ``0`` for an exact zero."""
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.{digits}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _agreement_cell(a: dict) -> str:
    return f"{_sci(a['rel_l2'])} ({_sci(a['median_image_rel'], 0)}; {a['images_rel_gt_1e-3']:,})"


def _table(rows: list[dict]) -> str:
    """The README's table: sizes, then each runtime's logits against the in-process fake-quant
    model's -- relative L2 over all images (median image; images above 1e-3) -- and top-1."""
    others = sorted({k for r in rows for k in r["torch_other_cpus"]})
    head = ("model", "plan", "avg W bits", "plan size (B)", "packed (B)", "ONNX (B)", "packed rel. L2",
            "onnxruntime rel. L2", *(f"torch, {k} kernels" for k in others), "1-ulp control",
            "top-1 fake-quant / onnxruntime" + "".join(f" / torch {k}" for k in others))
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        elsewhere = [r["torch_other_cpus"].get(k) for k in others]
        top1 = [r["top1_fake_quant"], r["onnxruntime"]["top1"], *(a["top1"] for a in elsewhere if a)]
        lines.append("| " + " | ".join([
            _SHORT.get(r["model"], r["model"]), r["plan"], f"{r['avg_w_bits']:.2f}", f"{r['plan_size_bytes']:,.0f}",
            f"{r['packed_bytes']:,}", f"{r['onnx_bytes']:,}", _sci(r["packed_rel_l2"]),
            _agreement_cell(r["onnxruntime"]), *(_agreement_cell(a) if a else "-" for a in elsewhere),
            _agreement_cell(r["one_ulp_ln_bias"]), " / ".join(f"{t:.2f}" for t in top1)]) + " |")
    return "\n".join(lines)


def _size_table(sizes: list[dict]) -> str:
    """The README's demo-plan sizes: one row per budget, plan size / packed file per model and kind."""
    models = list(dict.fromkeys(s["model"] for s in sizes))
    cell = {(s["model"], s["plan"]): f"{s['plan_size_bytes']:,.0f} / {s['packed_bytes']:,}" for s in sizes}
    budgets = list(dict.fromkeys(s["plan"].split()[-1] for s in sizes))
    labels = {"uniform": "uniform {}", "mixed": "mixed <= {}"}  # as _plans names them
    head = ["budget"] + [f"{_SHORT.get(m, m)} {kind}" for m in models for kind in labels]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for b in budgets:
        lines.append("| " + " | ".join([b] + [cell.get((m, labels[kind].format(b)), "-")
                                              for m in models for kind in labels]) + " |")
    return "\n".join(lines)


def _git_commit() -> str:
    """The commit the run measured (with ``+dirty`` when tracked files differ from it)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["fmnist_vit"])
    p.add_argument("--n-test", type=int, default=10000)
    p.add_argument("--calib", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--no-other-cpus", action="store_true", help="skip the torch-on-other-CPU-kernels control")
    p.add_argument("--table-from", type=Path, nargs="+", help="print the tables of finished runs' JSON files and exit")
    p.add_argument("--logits-of", type=Path, help=argparse.SUPPRESS)  # the control's subprocess: a packed file,
    p.add_argument("--images", type=Path, help=argparse.SUPPRESS)     # a tensor file; logits to --out
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.logits_of is not None:
        return _logits_of_packed(args.logits_of, args.images, args.out)
    if args.table_from:  # the tables of finished runs, without running them again
        results = [json.loads(path.read_text()) for path in args.table_from]
        print(_table([r for res in results for r in res["rows"]]),
              _size_table([s for res in results for s in res["demo_plan_sizes"]]), sep="\n\n")
        return 0
    rows, sizes = [], []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        for name in args.models:
            r, s = run_model(name, args.n_test, args.calib, args.threads, Path(work), not args.no_other_cpus)
            rows += r
            sizes += s
    print(_table(rows))
    print()
    print(_size_table(sizes))
    import onnxruntime

    from allocator.atomic import write_json
    from quant import QuantConfig

    result = {"rows": rows, "demo_plan_sizes": sizes, "quant_config": QuantConfig().to_dict(),
              "n_test": args.n_test, "calib": args.calib,
              "threads": args.threads, "profile_bits": list(BITS), "total_s": time.perf_counter() - t0,
              "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "other_cpus": OTHER_CPUS,
              "git_commit": _git_commit()}
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
