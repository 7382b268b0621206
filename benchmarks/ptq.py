"""Post-training quantization accuracy: float vs uniform W8A8/W6A6/W4A4/W3A3, per post-LN mode.

    python -m benchmarks.ptq [--models fmnist_vit fmnist_deit fmnist_swin] [--bits 8 6 4 3]
                             [--modes clipped channel tensor] [--n-calib 256] [--n-test 2000]
                             [--calib-seeds 0 1 2] [--device cpu|cuda] [--tag NAME | --out PATH]
                             [--data DIR]

Uses the trained Fashion-MNIST models shipped with mixqvit when they load
(``mixqvit.models.load_shipped``); otherwise the same architectures with random weights
(stated in the output, and accuracy is then meaningless: read the agreement with the float
model's top-1 and the logit error instead). Uniform plans are strings ("W4A4"): the patch
embedding and the heads stay at 8 bits (``QuantConfig.edge_bits``). Calibration images are a
class-balanced subset of the *train* split, one per ``--calib-seeds`` entry (several seeds show
how much of a difference between modes is the draw of calibration images); accuracy is on the
first ``--n-test`` test images.
Calibration time covers ``quantize`` (copy, one calibration pass, LayerNorm folding) plus the
weight range search of the first forward. Torch runs on one CPU thread.

``--device cuda`` moves the model there (``quantize`` prepares and calibrates on the model's
device) and feeds the images in batches; CUDA work is synchronised before each timer stops, so
calibration times compare with the CPU ones. The device name is recorded in the JSON.
Writes benchmarks/results/ptq.json on the CPU and ptq_<tag>.json otherwise (the tag defaults to
the device type, so a GPU run never overwrites the CPU results); ``--out`` overrides both.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(1)

from quant import QuantConfig, quantize  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MODELS = ("fmnist_vit", "fmnist_deit", "fmnist_swin")


def load_model(name: str) -> tuple[torch.nn.Module, str]:
    """The shipped trained model, else a seeded random-init one; returns (model, source)."""
    from mixqvit.models import build_model, load_shipped

    try:
        model, info = load_shipped(name)
        return model.eval(), f"trained (test acc {info.get('test_accuracy', float('nan')):.4f})"
    except (FileNotFoundError, ValueError) as exc:
        torch.manual_seed(0)
        return build_model(name).eval(), f"RANDOM weights ({type(exc).__name__}: shipped model unavailable)"


def load_data(n_calib: int, n_test: int, root: Path | None = None,
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """Calibration images, test images and labels: Fashion-MNIST (from ``root``, else the default
    location), else random tensors."""
    try:
        from mixqvit.data import calibration_subset, load_fashion_mnist

        calib, _ = calibration_subset(n_calib, seed=seed, root=root)
        test_x, test_y = load_fashion_mnist("test", root)
        return calib, test_x[:n_test], test_y[:n_test], "Fashion-MNIST"
    except (FileNotFoundError, ImportError, OSError) as exc:
        # the calibration draw follows `seed`; the test images are the same for every seed
        calib = torch.randn(n_calib, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
        g = torch.Generator().manual_seed(2**31 - 1)
        test_x = torch.randn(n_test, 1, 28, 28, generator=g)
        return calib, test_x, torch.randint(0, 10, (n_test,), generator=g), f"RANDOM data ({type(exc).__name__})"


def device_name(device: torch.device) -> str:
    """Human-readable name of the accelerator (GPU model) or of the CPU, for the results file."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def resolve_device(name: str) -> torch.device:
    """``torch.device(name)``, refusing a CUDA device that this torch build cannot see."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name} given but torch {torch.__version__} sees no CUDA device; "
                         "use --device cpu or run on a machine with a GPU")
    return device


def default_out(device: torch.device, tag: str | None) -> Path:
    """results/ptq.json for a plain CPU run, results/ptq_<tag>.json otherwise (tag: device type)."""
    tag = tag if tag is not None else ("" if device.type == "cpu" else device.type)
    return RESULTS_DIR / (f"ptq_{tag}.json" if tag else "ptq.json")


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work so that wall-clock timers cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def logits(model: torch.nn.Module, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Model outputs for CPU images ``x``, fed in batches on the model's device; returned on the CPU."""
    device = next(model.parameters()).device
    return torch.cat([model(x[i : i + batch].to(device)).float().cpu() for i in range(0, len(x), batch)])


def evaluate(out: torch.Tensor, ref: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    return {
        "top1": float((out.argmax(1) == labels).float().mean()),
        "agree_float": float((out.argmax(1) == ref.argmax(1)).float().mean()),
        "logit_rel_err": float((out - ref).norm() / ref.norm()),
    }


def run(models: list[str], bits: list[int], modes: list[str], n_calib: int, n_test: int,
        device: torch.device | None = None, root: Path | None = None, calib_seeds: list[int] = (0,)) -> dict:
    device = device if device is not None else torch.device("cpu")
    calibs = {}
    for seed in calib_seeds:
        calibs[seed], test_x, test_y, data_src = load_data(n_calib, n_test, root, seed)
    rows = []
    sources = {}
    for name in models:
        model, sources[name] = load_model(name)
        model = model.to(device)
        ref = logits(model, test_x)
        rows.append({"model": name, "plan": "float", "post_ln": "-", "calib_seed": None, "calib_s": 0.0,
                     **evaluate(ref, ref, test_y)})
        print_row(rows[-1])
        for b in bits:
            for mode in modes:
                for seed, calib in calibs.items():
                    sync(device)
                    t = time.perf_counter()
                    qmodel = quantize(model, f"W{b}A{b}", calib, config=QuantConfig(post_ln=mode))
                    logits(qmodel, test_x[:1])
                    sync(device)
                    calib_s = time.perf_counter() - t
                    rows.append({"model": name, "plan": f"W{b}A{b}", "post_ln": mode, "calib_seed": seed,
                                 "calib_s": calib_s, **evaluate(logits(qmodel, test_x), ref, test_y)})
                    print_row(rows[-1])
    return {"data": data_src, "models": sources, "n_calib": n_calib, "n_test": n_test,
            "calib_seeds": list(calibs), "rows": rows}


HEADER = (f"{'model':<12} {'plan':<6} {'post_ln':<8} {'seed':>4} {'top1':>7} {'agree':>7} {'logit err':>9} "
          f"{'calib s':>8}")


def print_row(r: dict) -> None:
    seed = "-" if r["calib_seed"] is None else r["calib_seed"]
    print(f"{r['model']:<12} {r['plan']:<6} {r['post_ln']:<8} {seed:>4} {r['top1']:>7.4f} {r['agree_float']:>7.4f} "
          f"{r['logit_rel_err']:>9.4f} {r['calib_s']:>8.2f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--bits", nargs="+", type=int, default=[8, 6, 4, 3])
    ap.add_argument("--modes", nargs="+", default=["clipped", "channel", "tensor"])
    ap.add_argument("--n-calib", type=int, default=256)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--calib-seeds", nargs="+", type=int, default=[0],
                    help="seeds of the class-balanced calibration subsets (default 0)")
    ap.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda[:N]")
    ap.add_argument("--tag", default=None,
                    help="results file suffix: results/ptq_<tag>.json (default: none on cpu, the device type otherwise)")
    ap.add_argument("--out", type=Path, default=None, help="results file (overrides --tag)")
    ap.add_argument("--data", type=Path, default=None, help="Fashion-MNIST directory (default: mixqvit's default)")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    out = args.out if args.out is not None else default_out(device, args.tag)
    print(f"device: {device} ({device_name(device)})")
    print(HEADER)
    t0 = time.perf_counter()
    result = run(args.models, args.bits, args.modes, args.n_calib, args.n_test, device, args.data, args.calib_seeds)
    cmd = argv if argv is not None else sys.argv[1:]
    result.update(command="python -m benchmarks.ptq " + " ".join(cmd), threads=torch.get_num_threads(),
                  torch=torch.__version__, machine=platform.machine(), device=str(device),
                  device_name=device_name(device), total_s=time.perf_counter() - t0)
    print(f"\ndevice: {result['device']} ({result['device_name']})")
    print(f"data: {result['data']}; calibration images: {args.n_calib} (seeds {args.calib_seeds}); "
          f"test images: {args.n_test}")
    for name, src in result["models"].items():
        print(f"{name}: {src}")
    print("first (patch embedding) and last (head) layers at 8 bits; float rows show the float model")
    print("\nsummary:\n" + HEADER)
    for r in result["rows"]:
        print_row(r)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
