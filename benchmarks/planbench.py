"""Shared harness of the plan benchmarks (ranking, importance): one shipped model, many plans.

One calibration (`quant.PlanSwitcher`) serves every plan; each plan gets its joint calibration
KL (`profiling.joint_damage` on the 256 calibration images against the float logits) and its
per-image correctness on all 10,000 test images (kept, for exact McNemar tests between plans).
Results are cached by the plan's bits, so a plan reached by two routes is evaluated once.
Calibration images and profile follow the demo: 256 class-balanced training images, seed 0,
bits 2,3,4,6,8; profiles are cached in ``benchmarks/results/profiles/`` (small JSON: ``<model>.json``
for preset "v1", ``<model>_<preset>.json`` otherwise; the quantizer configuration is recorded in
the profile and checked on loading). Profiles and plans are quantized with
``QuantConfig.preset(preset)``; the harness default is "v1", the library default when the first
results in ``benchmarks/results/{ranking,importance}_*.json`` were measured, so a rerun
reproduces them whatever the current default is.

Per-image test correctness and joint KL are also cached on disk
(``benchmarks/results/evals/<model>_<preset>.json``, 1,250 bytes per plan), keyed by the plan's
bits and valid only for the same quantizer source code (a hash of ``quant/*.py`` and the
configuration): a rerun, or another benchmark, re-evaluates no plan it has already seen.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import base64  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Sequence  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from allocator import Budget, Plan, Profile  # noqa: E402
from allocator.atomic import write_json  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PROFILE_DIR = RESULTS_DIR / "profiles"
EVAL_DIR = RESULTS_DIR / "evals"
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

    def __init__(self, name: str, threads: int = 1, verbose: bool = True, preset: str = QUANT_PRESET):
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
        self.preset = preset
        self.config = QuantConfig.preset(preset)
        self.profile = self._profile(verbose)
        self.switcher = PlanSwitcher(self.model, self.calib, config=self.config)
        with torch.no_grad():
            self.calib_logits = self.model(self.calib)
        self._eval_path = EVAL_DIR / f"{name}_{preset}.json"
        self._stamp = _quant_stamp(self.config)
        self._kl: dict[tuple, float] = {}
        self._correct: dict[tuple, np.ndarray] = {}
        self._load_evals()

    def check_images(self, n: int) -> torch.Tensor:
        """``n`` training images outside the calibration set, as ``mixqvit quantize
        --reconstruct-check n`` draws them for the demo's calibration (256 images, seed 0)."""
        from mixqvit.data import check_subset

        return check_subset(n, CALIB, SEED)

    def _profile(self, verbose: bool) -> Profile:
        path = PROFILE_DIR / (f"{self.name}.json" if self.preset == "v1" else f"{self.name}_{self.preset}.json")
        if path.is_file():
            from quant import QuantConfig

            profile = Profile.load(path)
            recorded = profile.metadata.get("quant_config")
            # a field the record lacks did not exist when it was profiled: it had its former meaning
            if not isinstance(recorded, dict) or QuantConfig.from_record(recorded) != self.config:
                raise ValueError(f"{path} was profiled with quantizer {recorded}, not preset {self.preset!r} "
                                 f"({self.config.to_dict()}); delete it to re-profile")
            return profile
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
        self._save_evals()
        return [self._kl[plan_key(p)] for p in plans]

    @torch.no_grad()
    def correct(self, plan: Plan | str, batch_size: int = 500) -> np.ndarray:
        """Per-test-image correctness (bool, 10,000) of the plan (cached)."""
        key = plan if isinstance(plan, str) else plan_key(plan)
        if key not in self._correct:
            self._correct[key] = self.correct_of(self.switcher.apply(plan) if plan != "float" else self.model,
                                                 batch_size)
            self._save_evals()
        return self._correct[key]

    @torch.no_grad()
    def correct_of(self, model: torch.nn.Module, batch_size: int = 500) -> np.ndarray:
        """Per-test-image correctness (bool, 10,000) of any model (not cached: e.g. a rounded one)."""
        hits = [(model(self.test_x[s:s + batch_size]).argmax(-1) == self.test_y[s:s + batch_size])
                for s in range(0, len(self.test_y), batch_size)]
        return torch.cat(hits).numpy()

    def _load_evals(self) -> None:
        """Evaluations cached by an earlier run with the same quantizer source and configuration."""
        if not self._eval_path.is_file():
            return
        data = json.loads(self._eval_path.read_text())
        if data.get("stamp") != self._stamp or data.get("n_test") != len(self.test_y):
            return  # the quantizer changed since: every plan is evaluated afresh
        for text, row in data["plans"].items():
            key = tuple(json.loads(text)) if text.startswith("[") else text
            key = tuple(tuple(wa) for wa in key) if isinstance(key, tuple) else key
            if "correct" in row:
                self._correct[key] = unpack_correct(row["correct"], len(self.test_y))
            if "kl" in row:
                self._kl[key] = row["kl"]

    def _save_evals(self) -> None:
        plans: dict[str, dict] = {}
        for key in set(self._correct) | set(self._kl):
            text = json.dumps([[int(w), int(a)] for w, a in key]) if isinstance(key, tuple) else key
            row = plans.setdefault(text, {})
            if key in self._correct:
                row["correct"] = pack_correct(self._correct[key])
            if key in self._kl:
                row["kl"] = self._kl[key]
        write_json(self._eval_path, {"model": self.name, "preset": self.preset, "stamp": self._stamp,
                                     "n_test": len(self.test_y), "plans": plans})

    def top1(self, plan: Plan | str) -> float:
        return float(self.correct(plan).mean())


def suffix(preset: str, tag: str = "") -> str:
    """File-name suffix of a result: the preset unless it is the harness default, then the tag."""
    return "".join(f"_{part}" for part in (preset if preset != QUANT_PRESET else "", tag) if part)


def pack_correct(correct: np.ndarray) -> str:
    """Per-image correctness (bool array) as base64 of its packed bits."""
    return base64.b64encode(np.packbits(np.asarray(correct, dtype=bool)).tobytes()).decode("ascii")


def unpack_correct(text: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:n].astype(bool)


def _quant_stamp(config) -> str:
    """Hash of the quantizer's source and configuration: cached evaluations hold only while it holds."""
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode())
    import quant

    root = Path(quant.__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()[:16]


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
