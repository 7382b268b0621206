"""``mixqvit demo``: uniform against mixed precision on the shipped Fashion-MNIST models.

For each model: evaluate the float model; profile it on a class-balanced calibration subset of
the training images; for each budget b (2, 3, 4, 6 bits) quantize it uniformly (WbAb, patch
embedding and head pinned at 8 bits) and with the mixed plan the allocator finds under the
*same* size and BOPs as that uniform model; evaluate both on the test set.  One table (JSON and
Markdown) and PNG plots go to the report directory.

Why the mixed budget is "size <= uniform size and BOPs <= uniform BOPs" rather than the
shorthand "WbAb": with 8-bit pinned layers counted, a uniform WbAb model already averages a bit
more than b weight bits, so the shorthand would forbid the very model it is compared against
(and be infeasible at 2 bits).  Budgeting on the uniform model's own totals makes the
comparison exact: the mixed model never costs more.

The uniform baselines follow the usual convention (first and last layer at 8 bits); the mixed
plan may choose those two layers' bits too (their sensitivity is measured like any other
layer's).  Without that freedom the 2-bit budget would leave the allocator nothing to decide:
every other layer of uniform W2A2 already sits at the lowest candidate bit-width.

The mixed plan is chosen jointly (`allocator.joint.solve_joint`): the allocator's objective adds
up damages measured one layer at a time, which tells good plans from bad but cannot rank
near-optimal ones (measured on the shipped ViT: at W6A6 the additive optimum's joint KL on the
calibration images was 0.020 against uniform's 0.016). So the exact k best plans of the additive
objective, near-optimal plans from re-weighted losses and the uniform plan itself (same size and
BOPs) compete on their KL to the float logits on the calibration images, the whole plan applied;
the lowest wins, so the chosen plan is never worse than uniform by that measure. The table's
"plan" column says which candidate won.
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .datasets import load_calibration, load_check, load_test
from .evaluation import evaluate_top1, profile_loaded
from .loading import load_model
from .timing import Timer
from .errors import OptionError
from .plots import plot_accuracy_vs_size, plot_bit_allocation, plot_profile_heatmaps
from .ptq import DEFAULT_ROUNDING_STEPS, quantize_plan
from .report import Table, demo_table

__all__ = ["run_demo", "DemoResult", "DEFAULT_BUDGETS", "DEFAULT_BITS"]

DEFAULT_BUDGETS = (6, 4, 3, 2)
DEFAULT_BITS = (2, 3, 4, 6, 8)
_RTOL = 1e-9


@dataclass
class DemoResult:
    """What the demo produced: the table, its rows and every file written."""

    table: Table
    rows: list[dict[str, Any]]
    files: list[Path] = field(default_factory=list)


def _log(verbose: bool, message: str) -> None:
    if verbose:
        print(message, flush=True)


def _mixed_budget(uniform):
    from allocator import Budget

    return Budget(size_mb=uniform.size_bytes / 1e6, bops=uniform.bops)


def _check_not_larger(mixed, uniform, label: str) -> None:
    """The mixed plan must not cost more than the uniform one (guards the table's claim)."""
    for key in ("size_bytes", "bops"):
        m, u = getattr(mixed, key), getattr(uniform, key)
        if m > u * (1 + _RTOL):
            raise AssertionError(f"mixed plan at {label} has {key} {m} > uniform {u}")


def _plan_source(choice, uniform) -> str:
    """The table's "plan" column: which candidate had the lowest calibration KL."""
    plan, n = choice.plan, len(choice.candidates)
    if (plan.w_bits, plan.a_bits) == (uniform.w_bits, uniform.a_bits):
        return f"uniform (lowest calib KL of {n})"
    if choice.chosen == 0:
        return f"ILP optimum (lowest calib KL of {n})"
    return f"{choice.source} (lowest calib KL of {n})"


def _run_model(spec: str, out_dir: Path, calib_n: int, test_limit: int | None, data: str | None,
               bits: Sequence[int], budgets: Sequence[int], solver: str, seed: int,
               verbose: bool, device: str = "cpu", rounding_steps: int = 0,
               check_images: int = 0) -> tuple[list[dict[str, Any]], list[Path]]:
    from allocator import NonBindingLimitWarning, Plan
    from allocator.joint import solve_joint
    from profiling import joint_damage
    from quant import PlanSwitcher

    files: list[Path] = []
    loaded = load_model(spec)
    loaded.model.to(device)
    name = loaded.name
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    calib = load_calibration(loaded, data, calib_n, seed)
    check = load_check(loaded, data, check_images, calib_n, seed)[0] if rounding_steps and check_images else None
    test = load_test(loaded, data, test_limit)
    _log(verbose, f"[{name}] calibration: {len(calib[0])} images; test: {test.description}")

    with Timer() as t:
        acc_float = evaluate_top1(loaded.model, test, verbose=verbose, desc=f"{name} float")
    _log(verbose, f"[{name}] float top-1 {acc_float:.4f} ({t.seconds:.0f} s)")

    with Timer() as t:
        profile = profile_loaded(loaded, calib, bits=bits, verbose=verbose, seed=seed)
    _log(verbose, f"[{name}] profiled {len(profile.layers)} layers at bits {list(profile.bits)} in {t.seconds:.0f} s")
    model_dir = out_dir / slug
    model_dir.mkdir(parents=True, exist_ok=True)
    files.append(profile.save(model_dir / "profile.json"))

    switcher = PlanSwitcher(loaded.model, calib[0])
    with torch.no_grad():
        float_logits = loaded.model.eval()(calib[0])
    rows: list[dict[str, Any]] = [{
        "model": name, "method": "float", "budget": "FP32", "avg_w_bits": 32.0, "avg_a_bits": 32.0,
        "size_mb": profile.total_params * 4 / 1e6, "gbops": profile.total_macs * 32 * 32 / 1e9, "top1": acc_float,
        "top1_rounded": None, "rounding_kept": None,
        "solver": None, "solve_time_s": None,
    }]
    uniform_rows, mixed_rows, allocations = [], [], {}
    points: dict[str, list] = {"uniform": [], "mixed": []}
    if rounding_steps:
        points.update({"uniform + rounding": [], "mixed + rounding": []})
    for b in sorted(budgets, reverse=True):
        label = f"W{b}A{b}"
        uniform = Plan.uniform(profile, w_bits=b, a_bits=b)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonBindingLimitWarning)
            choice = solve_joint(profile, budget=_mixed_budget(uniform), solver=solver, extra=[uniform],
                                 pinned={name: None for name in uniform.pinned},
                                 score=lambda plans: joint_damage(switcher, plans, calib[0], float_logits))
        mixed = choice.plan
        _check_not_larger(mixed, uniform, label)
        kl_uniform = next(s for c, s in zip(choice.candidates, choice.scores)
                          if (c.plan.w_bits, c.plan.a_bits) == (uniform.w_bits, uniform.a_bits))
        source = _plan_source(choice, uniform)
        solved_by = (mixed.solver, mixed.solve_time_s)
        calib_kl = {"uniform": kl_uniform, "mixed": choice.scores[choice.chosen]}
        files.append(mixed.save(model_dir / f"plan_mixed_{label}.json"))
        for method, plan, bucket in (("uniform", uniform, uniform_rows), ("mixed", mixed, mixed_rows)):
            with Timer() as t:
                acc = evaluate_top1(switcher.apply(plan), test, verbose=verbose, desc=f"{name} {method} {label}")
            stats = {"avg_w_bits": plan.avg_w_bits, "avg_a_bits": plan.avg_a_bits, "size_mb": plan.size_bytes / 1e6,
                     "gbops": plan.bops / 1e9}
            acc_rounded, rounding_kept = None, None
            if rounding_steps:
                with Timer() as tr:
                    report: list = []
                    rounded = quantize_plan(loaded.model, plan, calib[0], switcher.config, rounding_steps=rounding_steps,
                                            seed=seed, check=check, report=report)
                    rounding_kept = report[-1].kept if check is not None else None
                    acc_rounded = evaluate_top1(rounded, test, verbose=verbose, desc=f"{name} {method} {label} rounded")
                del rounded
                points[f"{method} + rounding"].append((stats["size_mb"], acc_rounded, label))
                _log(verbose, f"[{name}] {method:7s} {label}: top-1 {acc_rounded:.4f} with learned rounding "
                              f"({rounding_steps} steps per unit, {tr.seconds:.0f} s; "
                              f"{'kept' if rounding_kept else 'put back by the held-out check'})")
            bucket.append({
                "model": name, "method": method, "budget": label if method == "uniform" else f"<= {label}",
                **stats, "top1": acc, "top1_rounded": acc_rounded, "rounding_kept": rounding_kept,
                "calib_kl": calib_kl[method],
                "plan_source": source if method == "mixed" else None,
                "solver": solved_by[0] if method == "mixed" else None,
                "solve_time_s": solved_by[1] if method == "mixed" else None,
            })
            points[method].append((stats["size_mb"], acc, label))
            _log(verbose, f"[{name}] {method:7s} {label}: top-1 {acc:.4f}, {stats['avg_w_bits']:.2f} avg W bits, "
                          f"{stats['size_mb']:.4f} MB, {stats['gbops']:.3f} GBOPs ({t.seconds:.0f} s)")
        allocations[f"{label} budget: mixed plan ({mixed.solver}, avg W {mixed.avg_w_bits:.2f} bits)"] = (
            [mixed.w_bits[n] for n in mixed.names], [mixed.a_bits[n] for n in mixed.names])
    rows += uniform_rows + mixed_rows

    files.append(plot_bit_allocation(profile.names, allocations, out_dir / f"{slug}_bit_allocation.png",
                                     title=f"{name}: per-layer bits of the mixed plans"))
    files.append(plot_profile_heatmaps(profile.names, profile.bits, out_dir / f"{slug}_importance_sensitivity.png",
                                       importance=profile.importance, weight_sensitivity=profile.weight_sensitivity,
                                       act_sensitivity=profile.act_sensitivity,
                                       title=f"{name}: importance and sensitivity ({profile.metric})"))
    files.append(plot_accuracy_vs_size(points, out_dir / f"{slug}_accuracy_vs_size.png",
                                       float_point=(rows[0]["size_mb"], acc_float),
                                       title=f"{name}: top-1 vs size ({test.description.split(',')[0]})"))
    return rows, files, test.description


def run_demo(models: Sequence[str] | None = ("fmnist_vit",), calib: int = 256, test_limit: int | None = None,
             out_dir: str | os.PathLike = "report", data: str | None = None,
             bits: Sequence[int] = DEFAULT_BITS, budgets: Sequence[int] = DEFAULT_BUDGETS,
             solver: str = "auto", seed: int = 0, verbose: bool = True, device: str = "cpu",
             rounding_steps: int = DEFAULT_ROUNDING_STEPS, check_images: int = 0) -> DemoResult:
    """Run the demo on ``models`` (None = all shipped models; any name `mixqvit.loading.load_model` accepts)
    on ``device``.

    With ``rounding_steps > 0`` every uniform and mixed plan is also quantized afresh and given
    learned rounding (``quant.reconstruct(..., rounding_steps=...)``, the ``--reconstruct-rounding``
    of ``mixqvit quantize|export``), reported next to the calibrated model as "top-1 + rounding";
    with ``check_images > 0`` it is kept only if it lowers the KL from the float model on that many
    images of the calibration pool outside the calibration set (``--reconstruct-check``), else
    the row is the calibrated model's.

    Prints the table and returns it with the list of files written under ``out_dir``:
    ``demo.json``/``demo.md`` (the table), and per model ``<model>/profile.json``,
    ``<model>/plan_mixed_W<b>A<b>.json`` and three PNG plots.
    """
    from .models import available_models

    names = list(models) if models is not None else available_models()
    missing_bits = sorted(set(budgets) - set(bits))
    if missing_bits:
        raise OptionError(f"budgets {missing_bits} are not among the candidate bits {list(bits)}; add them to --bits")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    files: list[Path] = []
    described: list[str] = []
    for name in names:
        r, f, description = _run_model(name, out, calib, test_limit, data, bits, budgets, solver, seed, verbose,
                                       device, rounding_steps, check_images)
        rows += r
        files += f
        if description not in described:
            described.append(description)
    notes = [
        f"Top-1 on {'; '.join(described)}; calibration and profiling on {calib} class-balanced images "
        f"(seed {seed}; for Fashion-MNIST drawn from the training split).",
        "Size counts the weights of the quantizable layers; GBOPs = sum of MACs x weight bits x activation bits per image.",
        "Uniform WbAb keeps the patch embedding and the head at 8 bits; the mixed plan is solved under the uniform "
        "model's own size and BOPs (never larger), choosing every layer's bits (those two included) from "
        + ",".join(map(str, bits)) + ".",
        "avg A bits is MAC-weighted; solve time is the allocator's wall-clock time for that budget.",
        "calib KL: KL divergence of the quantized model's logits from the float model's on the calibration images, "
        "with the whole plan applied. The mixed plan is the candidate with the lowest calib KL among the exact k best "
        "plans of the additive objective, near-optimal plans of re-weighted losses and the uniform plan (plan column); "
        "its solve time includes scoring the candidates.",
    ]
    if rounding_steps:
        put_back = [f"{r['model']} {r['method']} {r['budget']}" for r in rows if r.get("rounding_kept") is False]
        checked = (f", kept only if it lowers the KL from the float model on {check_images} images of the calibration "
                   f"pool outside the calibration set (--reconstruct-check {check_images}); put back, so equal to "
                   "top-1: " + (", ".join(put_back) if put_back else "none")) if check_images else ""
        notes.append(f"top-1 + rounding: the same plan quantized with learned rounding ({rounding_steps} Adam steps per "
                     f"unit; mixqvit quantize|export --reconstruct-rounding {rounding_steps} --seed {seed} "
                     f"--calib {calib} reproduces it){checked}.")
    table = demo_table(rows, title="Mix-QViT demo: uniform vs mixed precision", notes=notes)
    files += list(table.write(out, "demo"))
    print(table.to_text())
    if verbose:
        print("wrote " + ", ".join(str(f) for f in files))
    return DemoResult(table, rows, files)
