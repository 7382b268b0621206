"""Why learned rounding cannot be made CPU-independent by precision alone: a trace of the fit.

    nice -n 10 python -m benchmarks.fit_divergence [--model fmnist_vit] [--bits 3] [--steps 200]
        [--dtype float64] [--settings native sse4.2] [--tag T]

Runs ``quant.reconstruct.fit_rounding`` (every unit, ``--steps`` Adam steps each, seed 0) on the
shipped model quantized with the default ``QuantConfig`` on the demo's 256 calibration images,
once per kernel setting of ``benchmarks.export.OTHER_CPUS`` (each in its own subprocess, one
thread), with both models and the images cast to ``--dtype`` for the fit (``float64``: what a
"float64 fit" would do; ``float32``: the library's fit). The loss of every fit step is recorded,
unit after unit; the table gives, for each setting against native kernels, the first step whose
loss differs, then the largest relative difference of the loss up to a number of steps later,
and each unit's share of weight codes that end differently. Writes
``benchmarks/results/fit_divergence[_tag].json``.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from contextlib import ExitStack  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from allocator.atomic import write_json  # noqa: E402
from benchmarks.export import OTHER_CPUS, _git_commit  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SETTINGS = {"native": {}, **OTHER_CPUS}
CALIB = 256
#: Steps after the first difference at which the largest difference so far is reported.
HORIZONS = (0, 50, 100, 200, 400, 800, 1600)


def _worker(model: str, bits: int, steps: int, dtype: str, out: Path) -> None:
    """One setting's subprocess: the loss trace and the final weight codes of each unit."""
    import quant.reconstruct as rec
    from mixqvit.datasets import load_calibration
    from mixqvit.loading import load_model
    from quant import QuantConfig, quantize
    from quant.deploy.state import collect_state
    from quant.lsq import make_quantizers_learnable
    from quant.precision import computing_in

    torch.set_num_threads(1)
    loaded = load_model(model)
    calib = load_calibration(loaded, None, CALIB)[0]
    qmodel = quantize(loaded.model, f"W{bits}A{bits}", calib, config=QuantConfig())
    trace: list[float] = []
    unit_loss = rec._unit_loss

    def recorded(*args):
        loss = unit_loss(*args)
        trace.append(float(loss.detach()))
        return loss

    rec._unit_loss = recorded  # the loss of every fit step, unit after unit
    learned = make_quantizers_learnable(qmodel)
    cast = getattr(torch, dtype)
    with ExitStack() as stack:
        for net in (qmodel, loaded.model):
            stack.enter_context(computing_in(net, cast))
        fits = rec.fit_rounding(qmodel, loaded.model, calib.to(cast), learned, steps,
                                gen=torch.Generator().manual_seed(0))
    # back in float32: each hardened weight is its grid value up to float32 rounding
    codes = {name: w.codes for name, w in collect_state(qmodel).weights.items()}
    torch.save({"trace": trace, "units": [f.block for f in fits], "codes": codes,
                "capability": torch.backends.cpu.get_cpu_capability()}, out)


def _compare(native: dict, other: dict) -> dict:
    a, b = torch.tensor(native["trace"], dtype=torch.float64), torch.tensor(other["trace"], dtype=torch.float64)
    rel = ((a - b).abs() / a.abs().clamp(min=1e-300)).tolist()
    first = next((i for i, r in enumerate(rel) if r > 0), None)
    growth = {} if first is None else {
        str(h): max(rel[first:first + h + 1]) for h in HORIZONS if first + h < len(rel)}
    units = {}
    for unit in native["units"]:
        names = [n for n in native["codes"] if n == unit or n.startswith(unit + ".")]
        total = sum(native["codes"][n].numel() for n in names)
        moved = sum(int((native["codes"][n] != other["codes"][n]).sum()) for n in names)
        units[unit] = moved / total if total else 0.0
    return {"evaluations": len(rel), "first_difference": first, "first_relative": rel[first] if first is not None else 0.0,
            "largest_relative_within": growth, "codes_differing_by_unit": units}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="fmnist_vit")
    ap.add_argument("--bits", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=["native", "sse4.2"])
    ap.add_argument("--tag", default="")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _worker(args.model, args.bits, args.steps, args.dtype, Path(args.out))
        return 0
    runs = {}
    with tempfile.TemporaryDirectory() as work:
        for setting in ["native"] + [s for s in args.settings if s != "native"]:
            out = Path(work) / f"{setting}.pt"
            subprocess.run([sys.executable, "-m", "benchmarks.fit_divergence", "--worker", setting, "--out", str(out),
                            "--model", args.model, "--bits", str(args.bits), "--steps", str(args.steps),
                            "--dtype", args.dtype], env={**os.environ, **SETTINGS[setting], "OMP_NUM_THREADS": "1"},
                           check=True, cwd=Path(__file__).resolve().parents[1])
            runs[setting] = torch.load(out)
    rows = [{"setting": s, "capability": runs[s]["capability"], **_compare(runs["native"], runs[s])}
            for s in args.settings if s != "native"]
    print(f"{args.model} W{args.bits}A{args.bits}, {args.steps} steps per unit, fit in {args.dtype}")
    print(f"{'setting':8} {'first diff':>10} " + " ".join(f"{'+' + str(h):>9}" for h in HORIZONS)
          + "  codes differing (per unit)")
    for r in rows:
        growth = " ".join(f"{r['largest_relative_within'].get(str(h), float('nan')):9.1e}" for h in HORIZONS)
        units = ", ".join(f"{u} {share:.1%}" for u, share in r["codes_differing_by_unit"].items())
        print(f"{r['setting']:8} {str(r['first_difference']):>10} {growth}  {units}")
    result = {"command": "python -m benchmarks.fit_divergence " + " ".join(argv if argv is not None else sys.argv[1:]),
              "commit": _git_commit(), "model": args.model, "bits": args.bits, "steps": args.steps,
              "dtype": args.dtype, "horizons": HORIZONS, "rows": rows}
    out = write_json(RESULTS_DIR / f"fit_divergence{'_' + args.tag if args.tag else ''}.json", result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
