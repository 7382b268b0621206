"""Quantization-aware training in the 2-bit regime: uniform W2A2 vs a mixed plan of the same size
and BOPs, PTQ only vs QAT, with and without distillation from the float model.

    python -m benchmarks.qat                 # full run (about 25-30 min on one free core)
    python -m benchmarks.qat --quick         # smoke run (a minute; numbers meaningless)

Model: a shipped Fashion-MNIST model (``--model``, default ``fmnist_vit``; also ``fmnist_deit``,
``fmnist_swin``), else the same architecture with random weights (stated in the output;
accuracies are then meaningless).

Plans. *uniform W2A2*: every layer at 2-bit weights and activations, the patch embedding and
the head at 8 bits (the convention; ``quant.QuantConfig.edge_bits``). *mixed*: the allocator's
plan (``allocator.solve``, Mix-QViT objective) under the uniform plan's size and BOPs as limits,
on a profile (``profiling.profile_model``, bits 2,3,4,6,8) in which the first and last layers are
*not* pinned. With them pinned at 8 bits and no candidate below 2 bits, the only plan that fits
W2A2's size and BOPs is the uniform one itself, so the freedom the mixed plan uses is exactly to
re-spend the edge layers' bits where the profile says they matter most.

QAT (``quant.qat``) starts from the PTQ model of the same plan (``--n-calib`` class-balanced
training images), trains ``--steps`` AdamW steps of ``--batch-size`` images drawn from the
Fashion-MNIST training split (seeded), cosine learning-rate decay, LSQ/LSQ+ quantizers; with
distillation the loss is ``(1-a)*CE + a*T^2*KL`` to the float model (``--kd-weight a``,
``--kd-temperature T``), without it the CE alone. Top-1 on the first ``--n-test`` test images.
Torch runs on ``--threads`` threads (default 1). Writes benchmarks/results/qat.json for the ViT,
qat_<model>.json for the others.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BITS = (2, 3, 4, 6, 8)


def load_model(name: str) -> tuple[torch.nn.Module, str]:
    """The shipped trained model ``name``, else a seeded random-init one; returns (model, source)."""
    from mixqvit.models import build_model, load_shipped

    try:
        model, info = load_shipped(name)
        return model.eval(), f"{name} trained (test acc {info.get('test_accuracy', float('nan')):.4f})"
    except (FileNotFoundError, ValueError, OSError) as exc:
        torch.manual_seed(0)
        return build_model(name).eval(), f"{name} RANDOM weights ({type(exc).__name__}: shipped model unavailable)"


def load_data(n_train: int | None, n_calib: int, n_test: int, seed: int):
    """Training pool (images, labels), calibration images+labels, test images and labels."""
    from mixqvit.data import calibration_indices, load_fashion_mnist

    train_x, train_y = load_fashion_mnist("train")
    if n_train is not None and n_train < len(train_y):
        idx = calibration_indices(train_y, n_train, seed)
        train_x, train_y = train_x[idx].clone(), train_y[idx].clone()
    cidx = calibration_indices(train_y, n_calib, seed)
    test_x, test_y = load_fashion_mnist("test")
    return (train_x, train_y), (train_x[cidx].clone(), train_y[cidx].clone()), test_x[:n_test], test_y[:n_test]


@torch.no_grad()
def top1(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    model.eval()
    correct = sum(int((model(x[i : i + batch]).argmax(-1) == y[i : i + batch]).sum()) for i in range(0, len(x), batch))
    return correct / len(y)


def make_plans(model: torch.nn.Module, calib: tuple[torch.Tensor, torch.Tensor], seed: int, verbose: bool):
    """(uniform W2A2 with 8-bit edges, mixed plan within its size and BOPs, profile seconds)."""
    from allocator import Budget, Plan, solve
    from profiling import profile_model
    from quant import find_quantizable_layers

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*calib), batch_size=64)
    t0 = time.perf_counter()
    profile = profile_model(model, loader, bits=BITS, pin_first_last=None, seed=seed, verbose=verbose)
    profile_s = time.perf_counter() - t0
    edges = {s.name: 8 for s in find_quantizable_layers(model) if s.role in ("first", "last")}
    uniform = Plan.uniform(profile, w_bits=2, a_bits=2, pinned=edges)
    mixed = solve(profile, budget=Budget(size_mb=uniform.size_bytes / 1e6, bops=uniform.bops))
    for key in ("size_bytes", "bops"):
        if getattr(mixed, key) > getattr(uniform, key) * (1 + 1e-9):
            raise AssertionError(f"mixed plan exceeds the uniform plan's {key}")
    return uniform, mixed, profile_s


def plan_columns(plan) -> dict[str, float]:
    """Average weight bits (parameter-weighted), activation bits (MAC-weighted), size, BOPs."""
    macs = sum(layer.macs for layer in plan.layer_info)
    avg_a = sum(layer.macs * plan.a_bits[layer.name] for layer in plan.layer_info) / macs
    return {"avg_w_bits": plan.avg_w_bits, "avg_a_bits": avg_a, "size_kb": plan.size_bytes / 1e3,
            "mbops": plan.bops / 1e6}


HEADER = (f"{'plan':<12} {'method':<10} {'W bits':>6} {'A bits':>6} {'size KB':>8} {'MBOPs':>8} "
          f"{'top1':>7} {'vs float':>8} {'steps':>6} {'train s':>8}")


def print_row(r: dict[str, Any]) -> None:
    def f(key: str, width: int, spec: str) -> str:
        value = r.get(key)
        return format(value, f"{width}{spec}") if isinstance(value, (int, float)) else format("-", f">{width}")

    print(f"{r['plan']:<12} {r['method']:<10} {f('avg_w_bits', 6, '.2f')} {f('avg_a_bits', 6, '.2f')} "
          f"{f('size_kb', 8, '.1f')} {f('mbops', 8, '.1f')} {r['top1']:>7.4f} {r['top1'] - r['float_top1']:>+8.4f} "
          f"{f('steps', 6, 'd')} {f('train_s', 8, '.0f')}", flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from quant import QATConfig, qat, quantize

    model, source = load_model(args.model)
    train, calib, test_x, test_y = load_data(args.n_train, args.n_calib, args.n_test, args.seed)
    float_top1 = top1(model, test_x, test_y)
    rows = [{"plan": "float", "method": "-", "top1": float_top1, "float_top1": float_top1,
             "avg_w_bits": 32.0, "avg_a_bits": 32.0}]
    print(HEADER)
    print_row(rows[0])
    uniform, mixed, profile_s = make_plans(model, calib, args.seed, verbose=False)
    plans = {"uniform W2A2": uniform, "mixed": mixed}
    variants = [("PTQ", None), ("QAT", 0.0), ("QAT+KD", args.kd_weight)]
    for label, plan in plans.items():
        for method, kd_weight in variants:
            t0 = time.perf_counter()
            history: list[dict[str, float]] = []
            if kd_weight is None:
                qmodel = quantize(model, plan, calib[0])
            else:
                config = QATConfig(epochs=1, lr=args.lr, kd_temperature=args.kd_temperature, kd_weight=kd_weight,
                                   seed=args.seed, max_steps=args.steps, batch_size=args.batch_size)
                qmodel, history = qat(model, plan, train, config=config, calib_data=calib[0], verbose=args.verbose)
            train_s = time.perf_counter() - t0
            row = {"plan": label, "method": method, **plan_columns(plan), "top1": top1(qmodel, test_x, test_y),
                   "float_top1": float_top1, "steps": sum(r["steps"] for r in history) if history else 0,
                   "train_s": train_s, "final_loss": history[-1]["loss"] if history else None,
                   "train_acc": history[-1]["train_acc"] if history else None}
            rows.append(row)
            print_row(row)
    return {"model": source, "rows": rows, "profile_s": profile_s,
            "mixed_plan": {"w_bits": mixed.w_bits, "a_bits": mixed.a_bits, "solver": mixed.solver},
            "uniform_plan": {"w_bits": uniform.w_bits, "a_bits": uniform.a_bits}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: few steps, small data (numbers meaningless)")
    ap.add_argument("--model", default="fmnist_vit", choices=["fmnist_vit", "fmnist_deit", "fmnist_swin"],
                    help="shipped model (default fmnist_vit)")
    ap.add_argument("--steps", type=int, default=250, help="QAT optimiser steps per run (default 250)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--n-train", type=int, default=None, help="class-balanced training subset (default: all 60000)")
    ap.add_argument("--n-calib", type=int, default=256)
    ap.add_argument("--n-test", type=int, default=5000)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--kd-weight", type=float, default=0.5)
    ap.add_argument("--kd-temperature", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--verbose", action="store_true", help="QAT progress bars and per-epoch lines")
    ap.add_argument("--out", type=Path, default=None,
                    help="results JSON (default results/qat.json for fmnist_vit, results/qat_<model>.json otherwise)")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = RESULTS_DIR / ("qat.json" if args.model == "fmnist_vit" else f"qat_{args.model}.json")
    if args.quick:
        args.steps, args.n_train, args.n_calib, args.n_test = min(args.steps, 3), args.n_train or 1000, 32, 200
    torch.set_num_threads(args.threads)
    from allocator.atomic import write_json
    from mixqvit.report import json_safe

    t0 = time.perf_counter()
    result = run(args)
    result.update(command="python -m benchmarks.qat " + " ".join(argv if argv is not None else []),
                  settings={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                  threads=torch.get_num_threads(), torch=torch.__version__, machine=platform.machine(),
                  total_s=time.perf_counter() - t0)
    print(f"\nmodel: {result['model']}; profile {result['profile_s']:.0f} s; total {result['total_s']:.0f} s; "
          f"{args.steps} QAT steps of {args.batch_size} images, lr {args.lr}, KD weight {args.kd_weight} T "
          f"{args.kd_temperature}; top-1 on {args.n_test} test images")
    print("patch embedding and head at 8 bits in the uniform plan; the mixed plan has the same size and BOPs at most")
    write_json(args.out, json_safe(result))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
