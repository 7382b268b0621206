"""Does the held-out check of learned rounding predict what the test set sees?

    python -m benchmarks.check_fidelity benchmarks/results/ptq_repq_f64_*.json
        benchmarks/results/ptq_repq_f64round_*.json [--calibrated default]
        [--rounded default+round-only] [--checked default+round-checked]

No model runs: the rows of ``benchmarks.ptq_repq`` files are pooled. For every fit measured
both unchecked (``--rounded``) and checked (``--checked``: the same fit, same calibration draw
and seed, then kept only if it lowers the KL from the float model on 256 training images
outside the calibration set, ``quant.reconstruct``'s ``check_data``), and for the calibrated
model it starts from (``--calibrated``), it lists what the rounding did on the held-out images
(the check's KL before and after) and on the 10,000 test images: the share of images on which the
quantized model predicts the float model's class ("agreement", the test's measure of fidelity)
and top-1. A check that tracks fidelity puts back the fits whose test agreement falls; whether
top-1 follows is the question users care about. Prints the table and the counts; writes nothing.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def pair_fits(rows: list[dict], calibrated: str, rounded: str, checked: str) -> list[dict]:
    """One entry per checked fit whose unchecked twin and calibrated start are in ``rows``."""
    index = {(r["model"], r["setting"], r["bits"], r["calib_seed"], r["method"], r.get("fit_seed", r["calib_seed"])): r
             for r in rows}
    out = []
    for (model, setting, bits, seed, method, fit), row in sorted(index.items()):
        if method != checked or "check" not in row:
            continue
        twin = index.get((model, setting, bits, seed, rounded, fit))
        start = next((r for k, r in index.items() if k[:5] == (model, setting, bits, seed, calibrated)), None)
        if twin is None or start is None:
            continue
        out.append({"model": model, "setting": setting, "bits": bits, "calib_seed": seed, "fit_seed": fit,
                    "kl_before": row["check"]["kl_before"], "kl_after": row["check"]["kl_after"],
                    "kept": row["check"]["kept"],
                    "agree_before": 100 * start["agree_float"], "agree_after": 100 * twin["agree_float"],
                    "top1_before": 100 * start["top1"], "top1_after": 100 * twin["top1"],
                    "top1_checked": 100 * row["top1"]})
    return out


def counts(fits: list[dict]) -> dict:
    """How often the check's verdict matches the sign of the test's agreement and top-1 change."""
    agree_up = [f["agree_after"] > f["agree_before"] for f in fits]
    top1_up = [f["top1_after"] > f["top1_before"] for f in fits]
    kept = [f["kept"] for f in fits]
    return {"fits": len(fits), "kept": sum(kept),
            "verdict_matches_agreement": sum(k == a for k, a in zip(kept, agree_up)),
            "verdict_matches_top1": sum(k == t for k, t in zip(kept, top1_up)),
            "top1_checked_minus_unchecked": sum(f["top1_checked"] - f["top1_after"] for f in fits) / max(len(fits), 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--calibrated", default="default")
    ap.add_argument("--rounded", default="default+round-only")
    ap.add_argument("--checked", default="default+round-checked")
    args = ap.parse_args(argv)
    rows = [r for f in args.files for r in json.loads(f.read_text())["rows"]]
    fits = pair_fits(rows, args.calibrated, args.rounded, args.checked)
    if not fits:
        raise SystemExit(f"no {args.checked} row has both a {args.rounded} twin and a {args.calibrated} start "
                         "in the given files")
    print("| model | setting | bits | draw | held-out KL before -> after | check | test agreement before -> after "
          "| top-1 before -> rounded (checked) |")
    print("|---|---|---|---|---|---|---|---|")
    for f in fits:
        print(f"| {f['model']} | {f['setting']} | W{f['bits']}A{f['bits']} | {f['calib_seed']} | "
              f"{f['kl_before']:.4f} -> {f['kl_after']:.4f} | {'kept' if f['kept'] else 'put back'} | "
              f"{f['agree_before']:.2f} -> {f['agree_after']:.2f} | {f['top1_before']:.2f} -> {f['top1_after']:.2f} "
              f"({f['top1_checked']:.2f}) |")
    c = counts(fits)
    print(f"\n{c['fits']} fits, {c['kept']} kept; the check's verdict matches the sign of the test agreement's change "
          f"in {c['verdict_matches_agreement']}, of top-1's in {c['verdict_matches_top1']}; checked minus unchecked "
          f"top-1, mean {c['top1_checked_minus_unchecked']:+.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
