"""How the shipped models' quantized predictions move on another x86 CPU, and why.

    nice -n 10 python -m benchmarks.cross_cpu [--models fmnist_vit fmnist_deit fmnist_swin]
        [--settings native avx2 sse4.2] [--bits 3 4] [--mixed] [--rounding STEPS] [--n-test 10000] [--tag T]
    python -m benchmarks.cross_cpu --table-from benchmarks/results/cross_cpu_*.json   (the table of finished runs)

Another CPU is emulated on this one by restricting torch's kernels with the environment
variables of ``benchmarks.export.OTHER_CPUS`` (``avx2``, ``sse4.2``; ``native``: none). They are
read when torch loads, so each setting runs in its own subprocess (one thread, as every
benchmark). For each model and plan (uniform WbAb on the cached default profile
``benchmarks/results/profiles/<model>_default.json``; with ``--mixed`` also the mixed plan
``allocator.solve`` finds under the uniform plan's size and BOPs) there are two ways to run:

* evaluate-only: the model quantized natively is exported (``quant.export``, packed) and every
  setting loads that same file and predicts the test images -- only inference kernels differ;
* re-quantize: every setting quantizes anew (``quant.quantize``, default ``QuantConfig``, 256
  calibration images) and predicts -- calibration runs on the other kernels too. With
  ``--rounding STEPS`` each plan is then given learned rounding as the demo's "top-1 + rounding"
  column is (``mixqvit.ptq.quantize_plan(..., rounding_steps=STEPS)``, seed 0), and both modes
  use the rounded model.

Reading the table: one row per model, plan and setting. "top-1" and "images differing" are per
mode; images are counted against the natively quantized fake-quant model, so the native
evaluate-only row checks the packed round trip (0 expected). If evaluate-only holds while
re-quantize moves, the drift comes from calibration, and the other columns say which of its
outputs carry it: the images that differ on native kernels when the native model gets this
setting's integer weight codes alone, its activation scales alone (the log scale for the
softmax), or its activation zero points alone, or is replaced by this setting's whole re-quantized model;
then the counts themselves -- weight codes that differ (by layer), activation scales and zero
points that differ (largest change: relative, and in steps), and the other float tensors of the
state (folded LayerNorms, biases, weight grids; largest change relative to the tensor's largest
magnitude). Writes ``benchmarks/results/cross_cpu[_tag].json``.
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
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from benchmarks.export import _SHORT, OTHER_CPUS, _git_commit, _logits  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PROFILE_DIR = RESULTS_DIR / "profiles"
SETTINGS = {"native": {}, **OTHER_CPUS}
CALIB = 256


def _plans(model: str, bits: list[int], mixed: bool) -> list[tuple[str, object]]:
    from allocator import Budget, Plan, Profile, solve

    profile = Profile.load(PROFILE_DIR / f"{model}_default.json")
    plans = []
    for b in bits:
        uniform = Plan.uniform(profile, b, b)
        plans.append((f"W{b}A{b}", uniform))
        if mixed:
            plans.append((f"mixed <=W{b}A{b}",
                          solve(profile, budget=Budget(size_mb=uniform.size_bytes / 1e6, bops=uniform.bops))))
    return plans


def _state(qmodel: torch.nn.Module) -> dict:
    """What calibration produced: integer weight codes, activation quantizer parameters (scale,
    zero point; log scale), and every other float tensor (folded LayerNorms, biases, weight grids)."""
    from quant.deploy.state import collect_state

    state = collect_state(qmodel)
    scales, zero_points = {}, {}
    for name, a in state.acts.items():
        scales[name] = a.log_scale if a.grid is None else a.grid.scale
        if a.grid is not None:
            zero_points[name] = a.grid.zero_point
    floats = dict(state.floats)
    for w in state.weights.values():
        floats[f"{w.param} scale"], floats[f"{w.param} zero point"] = w.grid.scale, w.grid.zero_point
    return {"codes": {w.param: w.codes.to(torch.int16) for w in state.weights.values()}, "act_scales": scales,
            "act_zero_points": zero_points, "floats": floats}


def _worker(model: str, setting: str, bits: list[int], mixed: bool, rounding: int, n_test: int, work: Path) -> int:
    """One setting's subprocess: predictions of both modes and the re-quantized state, to ``work``."""
    from tqdm import tqdm

    from mixqvit.commands.export import architecture_of
    from mixqvit.datasets import load_calibration, load_test
    from mixqvit.loading import load_model
    from mixqvit.ptq import quantize_plan
    from quant import QuantConfig, export, load_packed

    loaded = load_model(model)
    calib = load_calibration(loaded, None, CALIB)[0]
    images = load_test(loaded, None, n_test).images
    arch, kwargs = architecture_of(loaded)
    out = {"capability": torch.backends.cpu.get_cpu_capability(), "plans": {}}
    for label, plan in tqdm(_plans(model, bits, mixed), desc=f"{model} {setting}"):
        t0 = time.perf_counter()
        qmodel = quantize_plan(loaded.model, plan, calib, QuantConfig(), rounding_steps=rounding, seed=0)
        quantize_s = time.perf_counter() - t0
        export(qmodel, work / f"{model} {label} {setting}.safetensors", format="packed", plan=plan, arch=arch,
               model_kwargs=kwargs)
        t0 = time.perf_counter()
        requantized = _logits(qmodel, images).argmax(1)
        eval_s = time.perf_counter() - t0
        natively_quantized = load_packed(work / f"{model} {label} native.safetensors")
        out["plans"][label] = {"requantize": requantized, "evaluate_only": _logits(natively_quantized, images).argmax(1),
                               "state": _state(qmodel), "quantize_s": quantize_s, "eval_s": eval_s}
    torch.save(out, work / f"{model} {setting}.pt")
    return 0


def _differing(mine: dict[str, torch.Tensor], native: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Name -> elements that differ from native's, and the largest difference (absolute, and
    relative to the largest magnitude in native's tensor), for the tensors that differ at all."""
    out = {}
    for name, want in native.items():
        got = mine[name]
        if (n := int((got != want).sum())):
            diff = (got.double() - want.double()).abs()
            out[name] = {"n": n, "max_abs": float(diff.max()),
                         "max_rel": float(diff.max() / want.double().abs().max().clamp_min(1e-30))}
    return out


def _with(packed: Path, state: dict, part: str) -> torch.nn.Module:
    """The model of the packed file with one ``part`` of another setting's ``state`` swapped in:
    its integer weight codes (on the file's grids), or its activation scales, or zero points."""
    from quant import load_packed
    from quant.deploy.state import UniformGrid

    model = load_packed(packed)
    with torch.no_grad():
        if part == "codes":
            for param, codes in state["codes"].items():
                site = model.get_submodule(param.removesuffix(".weight"))
                site.weight.copy_(UniformGrid.of(site.weight_quant.quantizer).dequantize(codes))
        for name, value in state[f"act_{part}"].items() if part != "codes" else ():
            getattr(model.get_submodule(name).quantizer, part.removesuffix("s")).copy_(value)
    return model


def run_model(model: str, settings: list[str], bits: list[int], mixed: bool, rounding: int, n_test: int,
              work: Path) -> list[dict]:
    """Run each setting's subprocess (native first: it writes the files the others evaluate) and
    compare each with native. Here, on native kernels, the native model is also evaluated with each
    setting's weight codes, or its activation quantizer parameters, swapped in, and each setting's
    whole re-quantized model: which part of calibration's output carries the drift."""
    from mixqvit.datasets import load_test
    from mixqvit.loading import load_model
    from quant import load_packed

    runs = {}
    for setting in ["native"] + [s for s in settings if s != "native"]:
        env = {**os.environ, **SETTINGS[setting], "OMP_NUM_THREADS": "1"}
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "benchmarks.cross_cpu", "--worker", setting, "--models", model,
                        "--bits", *map(str, bits), "--rounding", str(rounding), "--n-test", str(n_test),
                        "--work", str(work)]
                       + ["--mixed"] * mixed, env=env, check=True, cwd=Path(__file__).resolve().parents[1])
        runs[setting] = torch.load(work / f"{model} {setting}.pt")
        print(f"[{model}] {setting} ({runs[setting]['capability']}): {time.perf_counter() - t0:.0f} s", flush=True)
    test = load_test(load_model(model), None, n_test)
    rows = []
    for label, native in runs["native"]["plans"].items():
        for setting in settings:
            mine = runs[setting]["plans"][label]
            packed = work / f"{model} {label} native.safetensors"
            swapped = {} if setting == "native" else {  # native's own parts: nothing to swap
                "codes_alone": _with(packed, mine["state"], "codes"),
                "act_scales_alone": _with(packed, mine["state"], "scales"),
                "act_zero_points_alone": _with(packed, mine["state"], "zero_points"),
                "whole_model_native_kernels": load_packed(work / f"{model} {label} {setting}.safetensors")}
            diff = {key: _differing(mine["state"][key], native["state"][key]) for key in native["state"]}
            rows.append({
                "model": model, "plan": label, "setting": setting, "capability": runs[setting]["capability"],
                **{f"{mode}_{key}": value for mode in ("evaluate_only", "requantize") for key, value in (
                    ("top1", float((mine[mode] == test.labels).float().mean()) * 100),
                    ("images_differing", int((mine[mode] != native["requantize"]).sum())))},
                **{f"{key}_images_differing": int((_logits(m, test.images).argmax(1) != native["requantize"]).sum())
                   for key, m in swapped.items()},
                "weight_codes_differing": sum(d["n"] for d in diff["codes"].values()),
                "weight_codes": sum(c.numel() for c in native["state"]["codes"].values()),
                "act_quantizers": len(native["state"]["act_scales"]),
                **{f"{key}_differing": d for key, d in diff.items()},
                "quantize_s": mine["quantize_s"], "eval_s": mine["eval_s"], "n_test": len(test.labels),
                "rounding_steps": rounding})
    return rows


_SWAPS = ("codes_alone", "act_scales_alone", "act_zero_points_alone", "whole_model_native_kernels")


def _largest(differing: dict[str, dict], key: str) -> str:
    return f"{max(d[key] for d in differing.values()):.1e}" if differing else "-"


def _table(rows: list[dict]) -> str:
    head = ("model", "plan", "setting", "evaluate-only: top-1 / images differing",
            "re-quantize: top-1 / images differing",
            "images differing on native kernels: its codes / act. scales / act. zero points alone / its whole model",
            "weight codes differing (layers)", "act. scales differing (max rel.)", "act. zero points differing (steps)",
            "other float tensors differing (max rel.)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        layers = ", ".join(f"{n.removesuffix('.weight')} {d['n']:,}" for n, d in r["codes_differing"].items())
        lines.append("| " + " | ".join([
            _SHORT.get(r["model"], r["model"]), r["plan"] + (" + rounding" if r.get("rounding_steps") else ""), r["setting"],
            f"{r['evaluate_only_top1']:.2f} / {r['evaluate_only_images_differing']:,}",
            f"{r['requantize_top1']:.2f} / {r['requantize_images_differing']:,}",
            " / ".join(f"{r[k + '_images_differing']:,}" if k + "_images_differing" in r else "-" for k in _SWAPS),
            f"{r['weight_codes_differing']:,} of {r['weight_codes']:,}" + (f" ({layers})" if layers else ""),
            f"{len(r['act_scales_differing'])} of {r['act_quantizers']} ({_largest(r['act_scales_differing'], 'max_rel')})",
            ", ".join(f"{n} ({d['max_abs']:g})" for n, d in r["act_zero_points_differing"].items())
            or "0",
            f"{len(r['floats_differing'])} ({_largest(r['floats_differing'], 'max_rel')})"]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["fmnist_vit", "fmnist_deit", "fmnist_swin"])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--bits", nargs="+", type=int, default=[3, 4], help="uniform WbAb plans (default 3 4)")
    p.add_argument("--mixed", action="store_true", help="also the mixed plan under each uniform plan's size and BOPs")
    p.add_argument("--rounding", type=int, default=0, metavar="STEPS",
                   help="learned rounding with STEPS Adam steps per unit after quantizing, as the demo's rounded rows")
    p.add_argument("--n-test", type=int, default=10000)
    p.add_argument("--tag", default="", help="results go to cross_cpu_<tag>.json")
    p.add_argument("--table-from", type=Path, nargs="+", help="print the table of finished runs' JSON files and exit")
    p.add_argument("--worker", choices=list(SETTINGS), help=argparse.SUPPRESS)  # a setting's subprocess,
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)                 # writing to this folder
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.worker:
        return _worker(args.models[0], args.worker, args.bits, args.mixed, args.rounding, args.n_test, args.work)
    if args.table_from:
        print(_table([r for path in args.table_from for r in json.loads(path.read_text())["rows"]]))
        return 0
    t0 = time.perf_counter()
    rows = []
    for model in args.models:
        with tempfile.TemporaryDirectory() as work:
            rows += run_model(model, args.settings, args.bits, args.mixed, args.rounding, args.n_test, Path(work))
    print(_table(rows))
    from allocator.atomic import write_json
    from quant import QuantConfig

    out = RESULTS_DIR / f"cross_cpu{'_' + args.tag if args.tag else ''}.json"
    write_json(out, {"command": " ".join(["python -m benchmarks.cross_cpu", *(argv if argv is not None else sys.argv[1:])]),
                     "rows": rows, "settings": {s: SETTINGS[s] for s in args.settings}, "calib": CALIB,
                     "quant_config": QuantConfig().to_dict(), "threads": 1, "niceness": os.nice(0), "total_s": time.perf_counter() - t0,
                     "torch": torch.__version__, "python": platform.python_version(), "git_commit": _git_commit()})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
