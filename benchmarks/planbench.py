"""Shared harness of the plan benchmarks (ranking, importance): one shipped model, many plans.

One calibration (`quant.PlanSwitcher`) serves every plan; each plan gets its joint calibration
KL (`profiling.joint_damage` on the 256 calibration images against the float logits) and its
per-image correctness on all 10,000 test images (kept, for exact McNemar tests between plans).
Results are cached by the plan's bits, so a plan reached by two routes is evaluated once.
Calibration images and profile follow the demo: 256 class-balanced training images, seed 0,
bits 2,3,4,6,8; profiles are cached in ``benchmarks/results/profiles/`` (small JSON). Profiles
and plans are quantized with ``QuantConfig.preset(QUANT_PRESET)``: "v1", the library default
when the results in ``benchmarks/results/{ranking,importance}_*.json`` were measured (the
profiles record it), so a rerun reproduces them whatever the current default is.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Sequence  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from allocator import Budget, Plan, Profile  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PROFILE_DIR = RESULTS_DIR / "profiles"
MODELS = ("fmnist_vit", "fmnist_swin", "fmnist_deit")
BITS = (2, 3, 4, 6, 8)
CALIB, SEED = 256, 0
QUANT_PRESET = "v1"


def plan_key(plan: Plan) -> tuple:
    return tuple((plan.w_bits[n], plan.a_bits[n]) for n in plan.w_bits)


def demo_budget(profile: Profile, b: int) -> tuple[Plan, Budget, dict]:
    """The demo's budget at b bits: size and BOPs of uniform WbAb (pins freed for the mixed plan)."""
    uniform = Plan.uniform(profile, w_bits=b, a_bits=b)
    return uniform, Budget(size_mb=uniform.size_bytes / 1e6, bops=uniform.bops), {n: None for n in uniform.pinned}


class ModelBench:
    """A shipped model with its calibration set, profile, calibrated switcher and test set."""

    def __init__(self, name: str, threads: int = 1, verbose: bool = True):
        from mixqvit.data import calibration_indices, load_fashion_mnist
        from mixqvit.models import load_shipped
        from quant import PlanSwitcher, QuantConfig

        torch.set_num_threads(threads)
        self.name = name
        self.model, self.info = load_shipped(name)
        train_x, train_y = load_fashion_mnist("train")
        idx = calibration_indices(train_y, CALIB, SEED)
        self.calib = train_x[idx].clone()
        self.calib_labels = train_y[idx].clone()
        del train_x, train_y
        self.test_x, self.test_y = load_fashion_mnist("test")
        self.config = QuantConfig.preset(QUANT_PRESET)
        self.profile = self._profile(verbose)
        self.switcher = PlanSwitcher(self.model, self.calib, config=self.config)
        with torch.no_grad():
            self.calib_logits = self.model(self.calib)
        self._kl: dict[tuple, float] = {}
        self._correct: dict[tuple, np.ndarray] = {}

    def _profile(self, verbose: bool) -> Profile:
        path = PROFILE_DIR / f"{self.name}.json"
        if path.is_file():
            return Profile.load(path)
        from mixqvit.data import make_loader
        from profiling import profile_model

        loader = make_loader(self.calib, self.calib_labels, batch_size=64)
        profile = profile_model(self.model, loader, bits=BITS, verbose=verbose, seed=SEED, config=self.config)
        profile.metadata.setdefault("model", self.name)
        PROFILE_DIR.mkdir(parents=True, exist_ok=True)
        profile.save(path)
        return profile

    def joint_kl(self, plans: Sequence[Plan]) -> list[float]:
        """Joint calibration KL of each plan (cached)."""
        from profiling import joint_damage

        todo = [p for p in plans if plan_key(p) not in self._kl]
        for plan, kl in zip(todo, joint_damage(self.switcher, todo, self.calib, self.calib_logits)):
            self._kl[plan_key(plan)] = kl
        return [self._kl[plan_key(p)] for p in plans]

    @torch.no_grad()
    def correct(self, plan: Plan | str, batch_size: int = 500) -> np.ndarray:
        """Per-test-image correctness (bool, 10,000) of the plan (cached)."""
        key = plan if isinstance(plan, str) else plan_key(plan)
        if key not in self._correct:
            model = self.switcher.apply(plan) if plan != "float" else self.model
            hits = [(model(self.test_x[s:s + batch_size]).argmax(-1) == self.test_y[s:s + batch_size])
                    for s in range(0, len(self.test_y), batch_size)]
            self._correct[key] = torch.cat(hits).numpy()
        return self._correct[key]

    def top1(self, plan: Plan | str) -> float:
        return float(self.correct(plan).mean())


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> tuple[int, int, float]:
    """Exact two-sided McNemar test of paired correctness: (a right b wrong, a wrong b right, p)."""
    n01 = int((a & ~b).sum())
    n10 = int((~a & b).sum())
    n = n01 + n10
    if n == 0:
        return n01, n10, 1.0
    from scipy.stats import binomtest

    return n01, n10, float(binomtest(min(n01, n10), n, 0.5).pvalue)  # exact binomial on the discordant pairs


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fn(*args, **kwargs)
