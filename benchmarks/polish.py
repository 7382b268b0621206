"""Does local search on the joint calibration KL ("polish") find better plans than the joint choice?

    python -m benchmarks.polish [--models fmnist_vit fmnist_swin fmnist_deit] [--budgets 2 3 4]
                                [--preset default] [--max-evals 120] [--batch 12] [--threads 1]
                                [--scores half full fresh fresh_joint oracle] [--tag NAME]
                                [--oracle-start additive_optimum|joint_choice]

For each shipped model and demo budget (size and BOPs of uniform WbAb, pins freed as in the
demo): today's joint choice (`allocator.joint.solve_joint` with the demo's options, k=3 best +
8 perturbed + uniform, joint KL on the 256 calibration images), then `allocator.polish.polish`
from it, capped at ``--max-evals`` scored plans, ``--batch`` plans per call, with each of the
scores named:

* ``full``: the joint KL on all 256 calibration images (the score the joint choice minimised);
* ``half``: the joint KL on a fixed half of them (128, every other image of the class-balanced
  set), so the other half is held out: if the polished plan's KL falls on the half it searched
  but not on the held-out half, the search fits the calibration images rather than the model;
* ``fresh``: the joint KL on 512 training images outside the calibration set (the quantizer's
  scales and GPTQ rounding are fitted to the calibration images, and the joint choice was made
  on them); 512 further fresh images are held out from every search;
* ``fresh_joint``: the same score for the whole joint-aware step: `solve_joint(score=...,
  polish=--max-evals)` chooses among the candidates on the fresh images (``fresh_choice``) and
  polishes from there; its CPU time covers candidates, scoring and polish.
* ``oracle``: a selection ceiling, not a method. The cross-entropy against the true labels on
  the searched half of the TEST set (the 5,000 even-indexed images; computed as the joint KL to
  one-hot label logits, which equals it exactly, so the shared-prefix caching of
  `profiling.joint_damage` applies), polished from the additive optimum (the plan the gain is
  measured against) or, with ``--oracle-start joint_choice``, from the joint choice (where the
  other scores start; ``fresh_joint`` starts from its own). Its top-1 on the held-out half (the
  5,000 odd-indexed test images) is the honest estimate of what choosing a plan can gain; on the
  searched half it is the optimistic one. With ``oracle`` the run also reads the plans already
  evaluated in benchmarks/results/ranking_<model>*.json (same preset, per-image correctness
  stored) and reports the best of each budget's against the additive optimum of the same files,
  chosen on all 10,000 test images and on the searched half (``stored_plans``, no model runs;
  those files may predate a quantizer change, so their plans are compared among themselves:
  ``optimum_reproduced`` says whether today's optimum has the same bits and the same per-image
  correctness, ``optimum_images_changed`` on how many of the 10,000 images its correctness
  differs when the bits are the same).

Each plan (additive optimum, joint choice, polished) gets its top-1 on all 10,000 test images
(exact McNemar against the additive optimum and against the joint choice), on each test half
(even / odd indices; McNemar against the additive optimum on the odd half, which no search
sees) and its joint KL on both calibration halves and on both fresh halves; so does the plan
after every accepted move (what a run capped at that move's evaluation count returns:
`allocator.polish.Move`). The polish step's CPU seconds (``time.process_time``, one torch
thread) are recorded.
Writes benchmarks/results/polish_<model>[_<preset>][_<tag>].json.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from allocator import Plan  # noqa: E402
from allocator.atomic import write_json  # noqa: E402
from allocator.joint import solve_joint  # noqa: E402
from allocator.polish import polish  # noqa: E402

from .planbench import (MODELS, RESULTS_DIR, ModelBench, demo_budget, mcnemar_exact, plan_key, quiet,  # noqa: E402
                        suffix)
from .ranking import JOINT  # noqa: E402

SCORES = ("half", "full", "fresh", "fresh_joint", "oracle")
FRESH = 1024  # training images outside the calibration set (the quantizer is calibrated on the others)
LABEL_LOGIT = 1e4  # one-hot "logits" of the true labels: softmax 1 at the label, exp(-1e4) == 0.0 elsewhere


def _halves(mb: ModelBench) -> dict:
    """Image sets with their float logits: the searched half of the calibration set (even
    positions) and the held-out half; FRESH class-balanced training images outside the
    calibration set, in two halves (the first is the ``fresh`` score's, the second no search sees);
    the ``oracle`` score's even-indexed test images with one-hot logits of their labels (the KL to
    those is the cross-entropy against the labels, exactly: every other term is 0.0 * finite)."""
    import torch

    from mixqvit.data import calibration_indices, load_fashion_mnist

    from .planbench import CALIB, SEED

    train_x, train_y = load_fashion_mnist("train")
    calib = set(calibration_indices(train_y, CALIB, SEED).tolist())
    fresh = [i for i in calibration_indices(train_y, FRESH + CALIB, SEED + 1).tolist() if i not in calib][:FRESH]
    images = train_x[fresh].clone()
    with torch.no_grad():
        logits = mb.model(images)
    labels = torch.nn.functional.one_hot(mb.test_y[0::2], logits.shape[1]).double() * LABEL_LOGIT
    return {"searched": (mb.calib[0::2], mb.calib_logits[0::2]), "held_out": (mb.calib[1::2], mb.calib_logits[1::2]),
            "fresh_searched": (images[0::2], logits[0::2]), "fresh_held_out": (images[1::2], logits[1::2]),
            "test_searched": (mb.test_x[0::2], labels)}


def _kls(mb: ModelBench, plan, halves: dict) -> dict:
    """KL of ``plan`` on the held-out calibration half and on both fresh halves (and all 1,024)."""
    out = {key: _kl_on(mb, [plan], halves[name])[0] for key, name in
           (("kl_held_out_half", "held_out"), ("kl_fresh_searched", "fresh_searched"),
            ("kl_fresh_held_out", "fresh_held_out"))}
    out["kl_fresh"] = (out["kl_fresh_searched"] + out["kl_fresh_held_out"]) / 2  # equal halves: the mean over all
    return out


def _kl_on(mb: ModelBench, plans: list, half: tuple) -> list[float]:
    from profiling import joint_damage

    return joint_damage(mb.switcher, plans, half[0], half[1])


def _test_halves(correct, opt) -> dict:
    """Top-1 on the searched (even) and held-out (odd) test halves; McNemar against the additive
    optimum on the held-out half."""
    return {"top1_test_searched": float(correct[0::2].mean()), "top1_test_held_out": float(correct[1::2].mean()),
            "mcnemar_vs_optimum_held_out": mcnemar_exact(correct[1::2], opt[1::2])}


def _move_row(mb: ModelBench, move, halves: dict, opt) -> dict:
    """An accepted move with its plan's top-1 and KL: the result of polishing capped at its evaluations."""
    correct = mb.correct(move.plan)
    return {"changes": list(move.changes), "score": move.score, "evaluations": move.evaluations,
            "top1": float(correct.mean()), **_test_halves(correct, opt), **_kls(mb, move.plan, halves),
            "mcnemar_vs_optimum": mcnemar_exact(correct, opt)}


def stored_plans(model: str, preset: str, budget: str, optimum: Plan, correct: np.ndarray) -> dict | None:
    """The best of the ``budget`` plans evaluated in benchmarks/results/ranking_<model>*.json (of
    ``preset``) against the additive optimum ("k-best 1") of the same file, from the stored
    per-image test correctness: the best on all 10,000 test images (in-sample) and the best on
    the searched (even) half with its top-1 on the held-out (odd) half; whether the stored
    optimum is today's ``optimum`` with today's per-image ``correct``. Files from a test set of
    another size are skipped (the earliest record no size: theirs is the test set's). None without
    such a file."""
    import json

    from .planbench import unpack_correct

    n_test, rows = len(correct), []
    for path in sorted(RESULTS_DIR.glob(f"ranking_{model}*.json")):
        data = json.loads(path.read_text())
        if data.get("preset", "v1") == preset and data.get("n_test", n_test) == n_test:
            rows += [dict(r, file=path.name, hits=unpack_correct(r["correct"], n_test))
                     for r in data["plans"] if r["budget"] == budget and "correct" in r]
    optima = [r for r in rows if "k-best 1" in r["sources"]]
    if not optima:
        return None
    opt = optima[0]["hits"]
    same_bits = [list(wa) for wa in plan_key(optimum)] == optima[0]["bits"]
    changed = int((opt != correct).sum()) if same_bits else None

    def row(r: dict) -> dict:
        return {"file": r["file"], "sources": r["sources"], "top1": float(r["hits"].mean()), **_test_halves(r["hits"], opt),
                "mcnemar_vs_optimum": mcnemar_exact(r["hits"], opt), "bits": r["bits"]}

    return {"n_plans": len(rows), "files": sorted({r["file"] for r in rows}), "optimum_reproduced": changed == 0,
            "optimum_images_changed": changed, "additive_optimum": row(optima[0]),
            "best_all": row(max(rows, key=lambda r: r["hits"].mean())),
            "best_searched_half": row(max(rows, key=lambda r: r["hits"][0::2].mean()))}


def run_budget(mb: ModelBench, b: int, halves: dict, scores: list[str], max_evals: int, batch: int,
               oracle_start: str = "additive_optimum") -> dict:
    profile = mb.profile
    uniform, budget, free = demo_budget(profile, b)
    cpu = time.process_time()
    choice = quiet(solve_joint, profile, budget=budget, score=mb.joint_kl, extra=[uniform], pinned=free, **JOINT)
    joint_cpu = time.process_time() - cpu  # small when the candidates' KL is cached from an earlier run
    plans = {"additive_optimum": choice.candidates[0].plan, "joint_choice": choice.plan}
    opt = mb.correct(plans["additive_optimum"])
    out: dict = {"joint": {"source": choice.source, "n_candidates": len(choice.candidates), "cpu_time_s": joint_cpu,
                           "score": choice.scores[choice.chosen]}, "polish": {}}
    for name in scores:
        origin = oracle_start if name == "oracle" else "joint_choice"  # fresh_joint: its own choice
        if name == "full":  # not mb.joint_kl: its disk cache would be timed too
            score = lambda ps: _kl_on(mb, ps, (mb.calib, mb.calib_logits))  # noqa: E731
            start = choice.scores[choice.chosen]
        else:  # scored afresh on its images (one evaluation)
            images = halves[{"half": "searched", "oracle": "test_searched"}.get(name, "fresh_searched")]
            score, start = (lambda ps, images=images: _kl_on(mb, ps, images)), None
        cpu = time.process_time()
        if name == "fresh_joint":  # the candidates chosen among on the fresh images too, then polished
            again = quiet(solve_joint, profile, budget=budget, score=score, extra=[uniform], pinned=free,
                          polish=max_evals, polish_batch=batch, **JOINT)
            res = again.polished
            plans["fresh_choice"] = again.candidates[again.chosen].plan
        else:
            res = quiet(polish, profile, plans[origin], budget=budget, score=score, pinned=free, max_evals=max_evals,
                        batch=batch, start_score=start)
        cpu = time.process_time() - cpu  # fresh_joint: candidates, their scores and the polish
        plans[f"polished_{name}"] = res.plan
        out["polish"][name] = {"start": "fresh_choice" if name == "fresh_joint" else origin, "cpu_time_s": cpu,
                               "wall_s": res.time_s, "stopped": res.stopped,
                               "evaluations": res.evaluations, "calls": res.calls, "neighbours": res.neighbours,
                               "checked": res.checked, "start_score": res.start_score, "score": res.score,
                               "moves": [_move_row(mb, m, halves, opt) for m in res.moves]}
        print(f"[{mb.name}] W{b}A{b} polish/{name}: {len(res.moves)} moves, {res.start_score:.4f} -> {res.score:.4f}, "
              f"{res.stopped} ({res.evaluations} scored of {res.neighbours} neighbours), {cpu:.1f} s CPU", flush=True)
    pick = mb.correct(plans["joint_choice"])
    rows = {}
    for name, plan in plans.items():
        correct = mb.correct(plan)
        rows[name] = {"top1": float(correct.mean()), **_test_halves(correct, opt), "kl_calib": mb.joint_kl([plan])[0],
                      "kl_searched_half": _kl_on(mb, [plan], halves["searched"])[0], **_kls(mb, plan, halves),
                      "additive": plan.objective,
                      "mcnemar_vs_optimum": mcnemar_exact(correct, opt),
                      "mcnemar_vs_joint": mcnemar_exact(correct, pick),
                      "bits": [list(wa) for wa in plan_key(plan)]}
    out["plans"] = rows
    line = ", ".join(f"{k} {100 * v['top1']:.2f}" for k, v in rows.items())
    print(f"[{mb.name}] W{b}A{b}: {line}", flush=True)
    if "oracle" in scores:
        _print_halves(mb.name, b, rows)
        stored = stored_plans(mb.name, mb.preset, f"W{b}A{b}", plans["additive_optimum"], opt)
        if stored is not None:
            print(f"[{mb.name}] W{b}A{b} {stored['n_plans']} stored plans ({', '.join(stored['files'])}); optimum "
                  f"reproduced: {stored['optimum_reproduced']} (images changed: {stored['optimum_images_changed']})")
            _print_halves(mb.name, b, {f"stored {k} ({', '.join(stored[k]['sources'])})": stored[k]
                                       for k in ("additive_optimum", "best_all", "best_searched_half")})
        out["stored_plans"] = stored
    return out


def _print_halves(model: str, b: int, rows: dict) -> None:
    """Top-1 (%) on the searched test half, the held-out half and all, with the held-out McNemar p."""
    print(f"[{model}] W{b}A{b} {'plan':<52} {'searched':>8} {'held-out':>8} {'all':>6} {'p held-out':>10}")
    for name, r in rows.items():
        print(f"[{model}] W{b}A{b} {name:<52} {100 * r['top1_test_searched']:8.2f} {100 * r['top1_test_held_out']:8.2f} "
              f"{100 * r['top1']:6.2f} {r['mcnemar_vs_optimum_held_out'][2]:10.2g}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--budgets", nargs="+", type=int, default=[2, 3, 4])
    parser.add_argument("--preset", default="default", help="quantizer: QuantConfig.preset name")
    parser.add_argument("--max-evals", type=int, default=120, help="most plans the polish step scores")
    parser.add_argument("--batch", type=int, default=12, help="plans per call of the score")
    parser.add_argument("--scores", nargs="+", choices=SCORES, default=["half", "full"])
    parser.add_argument("--oracle-start", choices=("additive_optimum", "joint_choice"), default="additive_optimum",
                        help="the plan the oracle score polishes from")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tag", default="")
    args = parser.parse_args(argv)
    for m in args.models:
        mb = ModelBench(m, threads=args.threads, preset=args.preset)
        mb._eval_path = mb._eval_path.with_name(f"{m}_{args.preset}_polish.json")  # its own cache: no write races
        res = {"model": m, "preset": args.preset, "n_test": len(mb.test_y), "max_evals": args.max_evals,
               "batch": args.batch, "joint_options": dict(JOINT), "budgets": {},
               "machine": {"platform": platform.platform(), "threads": args.threads}}
        halves = _halves(mb)
        for b in sorted(args.budgets):
            res["budgets"][f"W{b}A{b}"] = run_budget(mb, b, halves, args.scores, args.max_evals, args.batch,
                                                     args.oracle_start)
            write_json(RESULTS_DIR / f"polish_{m}{suffix(args.preset, args.tag)}.json", res)


if __name__ == "__main__":
    main()
