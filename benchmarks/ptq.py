"""Post-training quantization accuracy: float vs uniform W8A8/W6A6/W4A4/W3A3, per post-LN mode.

    python -m benchmarks.ptq [--models fmnist_vit fmnist_deit fmnist_swin] [--bits 8 6 4 3]
                             [--modes clipped channel tensor] [--n-calib 256] [--n-test 2000]

Uses the trained Fashion-MNIST models shipped with mixqvit when they load
(``mixqvit.models.load_shipped``); otherwise the same architectures with random weights
(stated in the output, and accuracy is then meaningless: read the agreement with the float
model's top-1 and the logit error instead). Uniform plans are strings ("W4A4"): the patch
embedding and the heads stay at 8 bits (``QuantConfig.edge_bits``). Calibration images are a
class-balanced subset of the *train* split; accuracy is on the first ``--n-test`` test images.
Calibration time covers ``quantize`` (copy, one calibration pass, LayerNorm folding) plus the
weight range search of the first forward. Torch runs on one thread.
Writes benchmarks/results/ptq.json.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(1)

from quant import QuantConfig, quantize  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "ptq.json"
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


def load_data(n_calib: int, n_test: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """Calibration images, test images and labels: Fashion-MNIST, else random tensors."""
    try:
        from mixqvit.data import calibration_subset, load_fashion_mnist

        calib, _ = calibration_subset(n_calib, seed=0)
        test_x, test_y = load_fashion_mnist("test")
        return calib, test_x[:n_test], test_y[:n_test], "Fashion-MNIST"
    except (FileNotFoundError, ImportError, OSError) as exc:
        g = torch.Generator().manual_seed(0)
        calib = torch.randn(n_calib, 1, 28, 28, generator=g)
        test_x = torch.randn(n_test, 1, 28, 28, generator=g)
        return calib, test_x, torch.randint(0, 10, (n_test,), generator=g), f"RANDOM data ({type(exc).__name__})"


@torch.no_grad()
def logits(model: torch.nn.Module, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    return torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)])


def evaluate(out: torch.Tensor, ref: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    return {
        "top1": float((out.argmax(1) == labels).float().mean()),
        "agree_float": float((out.argmax(1) == ref.argmax(1)).float().mean()),
        "logit_rel_err": float((out - ref).norm() / ref.norm()),
    }


def run(models: list[str], bits: list[int], modes: list[str], n_calib: int, n_test: int) -> dict:
    calib, test_x, test_y, data_src = load_data(n_calib, n_test)
    rows = []
    sources = {}
    for name in models:
        model, sources[name] = load_model(name)
        ref = logits(model, test_x)
        rows.append({"model": name, "plan": "float", "post_ln": "-", "calib_s": 0.0, **evaluate(ref, ref, test_y)})
        print_row(rows[-1])
        for b in bits:
            for mode in modes:
                t = time.perf_counter()
                qmodel = quantize(model, f"W{b}A{b}", calib, QuantConfig(post_ln=mode))
                logits(qmodel, test_x[:1])
                calib_s = time.perf_counter() - t
                rows.append({"model": name, "plan": f"W{b}A{b}", "post_ln": mode, "calib_s": calib_s,
                             **evaluate(logits(qmodel, test_x), ref, test_y)})
                print_row(rows[-1])
    return {"data": data_src, "models": sources, "n_calib": n_calib, "n_test": n_test, "rows": rows}


HEADER = f"{'model':<12} {'plan':<6} {'post_ln':<8} {'top1':>7} {'agree':>7} {'logit err':>9} {'calib s':>8}"


def print_row(r: dict) -> None:
    print(f"{r['model']:<12} {r['plan']:<6} {r['post_ln']:<8} {r['top1']:>7.4f} {r['agree_float']:>7.4f} "
          f"{r['logit_rel_err']:>9.4f} {r['calib_s']:>8.2f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--bits", nargs="+", type=int, default=[8, 6, 4, 3])
    ap.add_argument("--modes", nargs="+", default=["clipped", "channel", "tensor"])
    ap.add_argument("--n-calib", type=int, default=256)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    print(HEADER)
    t0 = time.perf_counter()
    result = run(args.models, args.bits, args.modes, args.n_calib, args.n_test)
    result.update(command="python -m benchmarks.ptq " + " ".join(argv or []), threads=torch.get_num_threads(),
                  torch=torch.__version__, machine=platform.machine(), total_s=time.perf_counter() - t0)
    print(f"\ndata: {result['data']}; calibration images: {args.n_calib}; test images: {args.n_test}")
    for name, src in result["models"].items():
        print(f"{name}: {src}")
    print("first (patch embedding) and last (head) layers at 8 bits; float rows show the float model")
    print("\nsummary:\n" + HEADER)
    for r in result["rows"]:
        print_row(r)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
