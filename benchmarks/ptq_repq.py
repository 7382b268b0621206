"""PTQ side by side with a re-implementation of RepQ-ViT, and ablations of every ingredient.

    python -m benchmarks.ptq_repq [--models fmnist_vit fmnist_deit fmnist_swin] [--bits 3 4 6]
                                  [--settings all edge] [--calib-seeds 0 1 2]
                                  [--methods repq default ...] [--n-test 10000] [--fit-seeds 1]
                                  [--tag NAME]

Settings (the two of issue 16):

* ``all``: every layer at b bits, 32 calibration images;
* ``edge``: first (patch embedding) and last (heads) layers at 8 bits, 256 calibration images
  (the demo's).

Methods are ``QuantConfig`` variants (:data:`METHODS`): ``repq`` is
``QuantConfig.preset("repq")``; ``default`` is ``QuantConfig()`` as shipped; ``seq`` and ``v1``
the presets of those names (``v1``: the default before issue 16); ``+name``/``-name`` variants switch one ingredient on (over ``v1``) or
off (from ``default``); ``default+recon`` adds the optional output reconstruction of the
quantizer scales (``quant.reconstruct.reconstruct`` with :data:`RECON`'s arguments; ``-drop``: QDrop),
``default+round`` learned weight rounding unit by unit before it (``-only``: without the
network-wide scale stage; ``-blocks``: rounding only inside the transformer blocks, the weights
outside them keeping GPTQ's rounding, as before the units outside the blocks were added;
``-only100``/``-only400``: 100 / 400 instead of 200 steps per unit; ``-drop``: QDrop inside each
unit's fit, ``rounding_drop=0.5``). Every cell is a fresh ``quantize`` of the float model on a
class-balanced draw of train images (one per calibration seed), evaluated on the first ``--n-test`` test
images (``--fit-seeds k``: a method that reconstructs runs k times per draw with different
reconstruction seeds, whose batch order alone moves top-1 by a few tenths). Calibration time is the wall and process-CPU time of ``quantize`` plus the first
forward (lazy range searches); the CPU time is robust to other jobs on the machine, so the
summary's time ratios use it. Torch runs on one thread.

Writes benchmarks/results/ptq_repq.json (or ptq_repq_<tag>.json).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(1)

from benchmarks.ptq import RESULTS_DIR, device_name, evaluate, load_data, load_model, logits  # noqa: E402
from quant import QuantConfig, quantize  # noqa: E402
from quant.outliers import plant_outliers  # noqa: E402
from quant.reconstruct import reconstruct  # noqa: E402

MODELS = ("fmnist_vit", "fmnist_deit", "fmnist_swin")
SETTINGS = {"all": (None, 32), "edge": (8, 256)}  # name -> (edge_bits, calibration images)

#: The default before issue 16 (clipped channel-wise post-LN with fixed ranges, MSE ranges,
#: log2 softmax, round-to-nearest), as overrides of today's default.
V1 = QuantConfig.preset("v1").to_dict()

#: Method name -> (preset, overrides). "+x": ingredient x over v1; "-x": x removed from the default.
METHODS: dict[str, tuple[str, dict]] = {
    "repq": ("repq", {}),
    "default": ("default", {}),
    "seq": ("seq", {}),
    "v1": ("v1", {}),
    "+logsqrt2": ("default", {**V1, "softmax": "logsqrt2"}),
    "+actsearch": ("default", {**V1, "act_method": "search"}),
    "+actsearch-full": ("default", {**V1, "act_method": "search", "calib_samples": 2**22}),
    "+wasym": ("default", {**V1, "weight_symmetric": False}),
    "+wsearch": ("default", {**V1, "weight_method": "search"}),
    "+channel": ("default", {**V1, "post_ln": "channel"}),
    "+lnsearch": ("default", {**V1, "post_ln_range": "search"}),
    "+seq": ("default", {**V1, "sequential": True}),
    "+gptq": ("default", {**V1, "weight_rounding": "gptq"}),
    "-gptq": ("default", {"weight_rounding": "nearest"}),
    "+actorder": ("default", {"gptq_act_order": True}),  # GPTQ columns by decreasing Hessian diagonal
    "+damp0.1": ("default", {"gptq_damp": 0.1}),
    "-logsearch": ("default", {"softmax": "logsqrt2"}),  # the default before the searched log base
    "-logsearch+log2": ("default", {"softmax": "log2"}),
    "-actsearch": ("default", {"act_method": "mse"}),
    "-lnsearch": ("default", {"post_ln_range": "fixed"}),
    "+seq+wasym": ("default", {"sequential": True, "weight_symmetric": False}),
    "repq+gptq": ("repq", {"weight_rounding": "gptq"}),
    "default+recon": ("default", {}),  # then quant.reconstruct.reconstruct (RECON[method])
    "default+recon-drop": ("default", {}),
    "default+round": ("default", {}),
    "default+round-only": ("default", {}),
    "default+round-blocks": ("default", {}),
    "default+round-only100": ("default", {}),
    "default+round-only400": ("default", {}),
    "default+round-drop": ("default", {}),
    "default+round-fisher": ("default", {}),
    "default+round-fishermean": ("default", {}),
    "default+round-decided": ("default", {}),
    "default+round-checked": ("default", {}),
}

#: Arguments of ``quant.reconstruct.reconstruct`` for the methods that reconstruct after calibrating.
RECON = {"default+recon": dict(steps=300), "default+recon-drop": dict(steps=300, drop=0.5),
         # learned rounding unit by unit (AdaRound/BRECQ, with the unit's scales), then the scales network-wide
         "default+round": dict(rounding_steps=200, steps=300),
         "default+round-only": dict(rounding_steps=200, steps=0),  # the unit stage alone
         "default+round-blocks": dict(rounding_steps=200, steps=0, rounding_units="blocks"),
         # the unit stage with half / twice the steps per unit
         "default+round-only100": dict(rounding_steps=100, steps=0),
         "default+round-only400": dict(rounding_steps=400, steps=0),
         # the unit stage with QDrop: half of each activation quantizer's outputs kept float per step
         "default+round-drop": dict(rounding_steps=200, steps=0, rounding_drop=0.5),
         # the unit stage with each output element's error weighted by its squared output gradient
         "default+round-fisher": dict(rounding_steps=200, steps=0, rounding_loss="fisher"),
         "default+round-fishermean": dict(rounding_steps=200, steps=0, rounding_loss="fisher-mean"),
         # the rounding variables at 10x the learning rate and 100x the regulariser: with the defaults
         # 200 Adam steps move each V by at most ~2, and 85-90% of the offsets end undecided
         "default+round-decided": dict(rounding_steps=200, steps=0, rounding_lr=0.1, rounding_reg=1.0),
         # the unit stage kept only if it lowers the KL from the float model on 256 training images
         # outside the calibration set, as `mixqvit quantize --reconstruct-check 256` does
         "default+round-checked": dict(rounding_steps=200, steps=0, check_images=256)}


def with_check_data(recon: dict | None, n_calib: int, seed: int) -> dict | None:
    """``recon`` with its ``check_images`` count replaced by those images: drawn from the training
    split outside the calibration draw of ``n_calib`` images (``seed``), as ``mixqvit quantize
    --reconstruct-check N`` draws them."""
    if not recon or "check_images" not in recon:
        return recon
    images = _check_subset(recon["check_images"], n_calib, seed)
    return {k: v for k, v in recon.items() if k != "check_images"} | {"check_data": images}


@functools.lru_cache(maxsize=4)
def _check_subset(n: int, n_calib: int, seed: int) -> torch.Tensor:
    """``mixqvit.data.check_subset``, read once per draw rather than once per cell."""
    from mixqvit.data import check_subset

    return check_subset(n, n_calib, seed)


def method_config(method: str, edge_bits: int | None, seed: int) -> QuantConfig:
    if method not in METHODS:
        raise SystemExit(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    preset, overrides = METHODS[method]
    return QuantConfig.preset(preset, **{**overrides, "edge_bits": edge_bits, "seed": seed})


def run_cell(model: torch.nn.Module, bits: int, calib: torch.Tensor, cfg: QuantConfig, test_x: torch.Tensor,
             ref: torch.Tensor, test_y: torch.Tensor, recon: dict | None = None, fit_seed: int = 0) -> dict:
    t, c = time.perf_counter(), time.process_time()
    qmodel, report = quantize(model, f"W{bits}A{bits}", calib, config=cfg), []
    if recon:
        reconstruct(qmodel, model, calib, seed=fit_seed, report=report, **recon)
    logits(qmodel, test_x[:1])
    calib_s, calib_cpu_s = time.perf_counter() - t, time.process_time() - c
    checked = {"check": dataclasses.asdict(report[-1])} if recon and "check_data" in recon else {}
    return {"calib_s": calib_s, "calib_cpu_s": calib_cpu_s, **checked, **evaluate(logits(qmodel, test_x), ref, test_y)}


def write_json(result: dict, out: Path) -> None:
    """Atomic write (a partial file is never left behind)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)


def run(models: list[str], bits: list[int], settings: list[str], methods: list[str], seeds: list[int],
        n_test: int, planted: dict | None, partial: Path | None = None, fit_seeds: int = 1) -> dict:
    """All cells; with ``partial``, the rows so far are rewritten there after every cell (a long
    run on a shared machine keeps what it measured if it is stopped). A method that reconstructs
    runs ``fit_seeds`` times per draw, with reconstruction seeds ``draw + 1000 k`` (k = 0: the
    draw's own seed, as with one): its random batch order alone moves a cell's top-1 by up to
    0.3 (DeiT W4A4, every layer at 4 bits, draw 0, fit seeds 0-4: 89.60-89.92)."""
    rows, sources, data_src = [], {}, None
    for name in models:
        model, sources[name] = load_model(name)
        if planted is not None:
            model = plant_outliers(model, **planted)
            sources[name] += f"; outliers planted {planted}"
        ref = None
        for setting in settings:
            edge_bits, n_calib = SETTINGS[setting]
            for seed in seeds:
                calib, test_x, test_y, data_src = load_data(n_calib, n_test, None, seed)
                if ref is None:  # the test images are the same for every draw
                    ref = logits(model, test_x)
                for b in bits:
                    for method, k in ((m, k) for m in methods for k in range(fit_seeds if m in RECON else 1)):
                        cfg = method_config(method, edge_bits, seed)
                        fit_seed = seed + 1000 * k
                        row = {"model": name, "setting": setting, "bits": b, "method": method, "calib_seed": seed,
                               "fit_seed": fit_seed, "float_top1": float((ref.argmax(1) == test_y).float().mean()),
                               **run_cell(model, b, calib, cfg, test_x, ref, test_y,
                                          with_check_data(RECON.get(method), n_calib, seed), fit_seed)}
                        rows.append(row)
                        if partial is not None:
                            write_json({"complete": False, "rows": rows}, partial)
                        print(f"{name:<12} {setting:<5} W{b}A{b} {method:<11} seed {seed} fit {fit_seed} top1 "
                              f"{100 * row['top1']:6.2f} calib {row['calib_s']:6.2f}s ({row['calib_cpu_s']:6.2f} cpu)",
                              flush=True)
    return {"data": data_src, "models": sources, "n_test": n_test, "calib_seeds": seeds, "fit_seeds": fit_seeds,
            "settings": settings,
            "methods": {m: method_config(m, None, 0).to_dict() for m in methods}, "rows": rows}


def summarise(rows: list[dict], methods: list[str]) -> list[dict]:
    """Mean top-1 (and CPU calibration time) over calibration seeds per model, setting, bits, method."""
    keys = sorted({(r["model"], r["setting"], r["bits"]) for r in rows}, key=lambda k: (k[0], k[1], -k[2]))
    out = []
    for model, setting, b in keys:
        entry = {"model": model, "setting": setting, "bits": b}
        for m in methods:
            sel = [r for r in rows if (r["model"], r["setting"], r["bits"], r["method"]) == (model, setting, b, m)]
            if sel:
                entry[m] = 100 * statistics.mean(r["top1"] for r in sel)
                entry[m + " cpu_s"] = statistics.mean(r["calib_cpu_s"] for r in sel)
                entry["float"] = 100 * statistics.mean(r["float_top1"] for r in sel)
        out.append(entry)
    return out


def print_summary(summary: list[dict], methods: list[str]) -> None:
    print("\nmean top-1 over calibration seeds (CPU seconds of calibration in brackets)")
    print(f"{'model':<12} {'setting':<7} {'bits':<5} {'float':>6} " + " ".join(f"{m:>18}" for m in methods))
    for e in summary:
        cells = " ".join(f"{e[m]:>8.2f} ({e[m + ' cpu_s']:>6.2f}s)" if m in e else f"{'-':>18}" for m in methods)
        print(f"{e['model']:<12} {e['setting']:<7} W{e['bits']}A{e['bits']} {e['float']:>6.2f} {cells}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--bits", nargs="+", type=int, default=[3, 4, 6])
    ap.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=["all", "edge"])
    ap.add_argument("--methods", nargs="+", default=["repq", "default"],
                    help=f"any of {', '.join(METHODS)}; names starting with '-' go comma-separated after '=' "
                         "(--methods=default,-gptq)")
    ap.add_argument("--calib-seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--n-test", type=int, default=10000)
    ap.add_argument("--plant", type=float, default=None, metavar="FACTOR",
                    help="plant outlier channels of this factor (quant.plant_outliers, 4 channels per LayerNorm)")
    ap.add_argument("--fit-seeds", type=int, default=1,
                    help="reconstruction seeds per draw for the methods that reconstruct (draw + 1000 k)")
    ap.add_argument("--tag", default=None, help="results/ptq_repq_<tag>.json")
    args = ap.parse_args(argv)
    args.methods = [m for arg in args.methods for m in arg.split(",") if m]
    for m in args.methods:
        method_config(m, None, 0)  # fail before any work
    planted = None if args.plant is None else {"channels": 4, "factor": args.plant, "seed": 0}
    out = RESULTS_DIR / (f"ptq_repq_{args.tag}.json" if args.tag else "ptq_repq.json")
    t0 = time.perf_counter()
    partial = out.with_name(out.stem + ".partial.json")
    if args.fit_seeds < 1:
        raise SystemExit(f"--fit-seeds {args.fit_seeds}: expected a positive integer")
    result = run(args.models, args.bits, args.settings, args.methods, args.calib_seeds, args.n_test, planted, partial,
                 args.fit_seeds)
    result["summary"] = summarise(result["rows"], args.methods)
    cmd = argv if argv is not None else sys.argv[1:]
    result.update(command="python -m benchmarks.ptq_repq " + " ".join(cmd), threads=torch.get_num_threads(),
                  torch=torch.__version__, machine=platform.machine(), device_name=device_name(torch.device("cpu")),
                  total_s=time.perf_counter() - t0)
    print_summary(result["summary"], args.methods)
    write_json(result, out)
    partial.unlink(missing_ok=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
