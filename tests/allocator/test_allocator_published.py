"""Published allocations reproduced through the allocator (tests/data/README.md names the sources).

* HAWQ-V3 (Yao, Dong et al., ICML 2021): ResNet-18/50, 4 or 8 bits per layer, tied layer
  pairs, one limit at a time (size, BOPs or measured latency at 0.25/0.5/0.75 of the way from
  all-4-bit to all-8-bit). Posed as a weight-only `Profile` (activations follow weights, as in
  HAWQ-V3's BOPs = MACs x b x b) with ``weight_sensitivity = trace x delta_w^2`` and the
  measured latency as a custom cost table. 17 published configurations are the optimum; for
  ResNet-50 size 0.25 the published one is worse than the ILP optimum, so the solver must do at
  least as well.
* LIMPQ (Tang et al., ECCV 2022): ResNet-50, joint (w, a) in {2..6}^2 per layer (25 options x
  52 layers), BitOps <= uniform W3A4 and compression ratio 12.2 at once, with LIMPQ's own MAC
  counting. Posed as a `Profile` with ``weight_sensitivity = alpha x weight indicator`` and
  ``act_sensitivity = act indicator`` (objective "sensitivity"), and once directly as a
  `solvers.Problem`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from allocator import Budget, LayerInfo, Plan, Profile, solve
from solvers import Problem, available_solvers, solve_problem
from solvers.backends import is_exact

DATA = Path(__file__).resolve().parents[1] / "data"
HAWQ = json.loads((DATA / "hawq_v3_resnet.json").read_text())
LIMPQ = json.loads((DATA / "limpq_resnet50.json").read_text())
EXACT = [s for s in available_solvers() if is_exact(s)]
HAWQ_CASES = [(net, case) for net, n in HAWQ["networks"].items() for case in n["published_bits"]]
KNOWN_SUBOPTIMAL = ("resnet50", "size_0.25")  # HAWQ["networks"]["resnet50"]["known_exception"]

# The parameter counts are stored in M (ResNet-50) and in units of 2**20 (ResNet-18); scaled
# back they are exact integers (limits are relative, so the unit does not matter otherwise).
_PARAM_UNIT = {"resnet18": 2**20, "resnet50": 10**6}


# ---- HAWQ-V3 ---------------------------------------------------------------------------------

def hawq_profile(net: str) -> Profile:
    n = HAWQ["networks"][net]
    group = {i: f"tied{g}" for g, pair in enumerate(n["tied"]) for i in pair}
    layers = [
        LayerInfo(name, "conv", int(round(p * _PARAM_UNIT[net])), int(round(bops * 1e6)), group=group.get(i))
        for i, (name, p, bops) in enumerate(zip(n["layers"], n["parameters"], n["bops_fp32"]))
    ]
    trace = np.array(n["hutchinson_trace"])
    sens = np.stack([trace * np.array(n["delta_w_4bit_sq"]), trace * np.array(n["delta_w_8bit_sq"])], axis=1)
    latency = np.stack([n["latency_int4"], n["latency_int8"]], axis=1)
    return Profile(layers, (4, 8), weight_sensitivity=sens, cost_tables={"latency": latency},
                   metric="hessian_trace_x_delta_w_sq", metadata={"source": HAWQ["source"]})


def hawq_budget(profile: Profile, case: str) -> Budget:
    """``low + frac * (high - low)`` between the all-4-bit and all-8-bit totals."""
    kind, frac = case.split("_")
    frac = float(frac)
    low, high = Plan.uniform(profile, 4, 4), Plan.uniform(profile, 8, 8)
    if kind == "size":
        return Budget(size_mb=(low.size_bytes + frac * (high.size_bytes - low.size_bytes)) / 1e6)
    if kind == "bops":
        return Budget(bops=low.bops + frac * (high.bops - low.bops))
    lo, hi = low.costs["latency"], high.costs["latency"]
    return Budget(latency=lo + frac * (hi - lo))


def hawq_objective(profile: Profile, bits: list[int]) -> float:
    return float(sum(profile.weight_sensitivity[l, profile.bits.index(b)] for l, b in enumerate(bits)))


def test_hawq_fixture_has_the_18_cases():
    assert len(HAWQ_CASES) == 18
    assert "size_0.25" in HAWQ["networks"]["resnet50"]["known_exception"]


@pytest.mark.parametrize("solver", EXACT)
@pytest.mark.parametrize("net,case", HAWQ_CASES)
def test_hawq_v3_published_allocation(net, case, solver):
    profile = hawq_profile(net)
    published = HAWQ["networks"][net]["published_bits"][case]
    plan = solve(profile, hawq_budget(profile, case), solver=solver, objective="sensitivity")
    got = [plan.w_bits[name] for name in profile.names]
    assert plan.status == "optimal" and plan.budget_satisfied
    if (net, case) == KNOWN_SUBOPTIMAL:
        pub_plan = Plan(list(profile.layers), dict(zip(profile.names, published)), dict(zip(profile.names, published)))
        assert pub_plan.size_bytes <= hawq_budget(profile, case).size_mb * 1e6  # published one is feasible
        assert plan.objective <= hawq_objective(profile, published) + 1e-12
        assert got != published
    else:
        assert got == published
        assert plan.objective == pytest.approx(hawq_objective(profile, published), rel=1e-12)


# ---- LIMPQ -------------------------------------------------------------------------------------

def limpq_tables() -> tuple[np.ndarray, np.ndarray]:
    """(weight, act) indicator tables (52, 5), after LIMPQ's wired-point erasure: an entry at
    b-1 bits lower than the one at b bits is replaced by 1e8 (never chosen)."""
    bits = LIMPQ["bits"]
    out = []
    for key in ("weight_indicator", "act_indicator"):
        t = np.array([[LIMPQ[key][name][str(b)] for b in bits] for name in LIMPQ["layers"]])
        wired = np.zeros_like(t, dtype=bool)
        wired[:, :-1] = t[:, :-1] < t[:, 1:]
        out.append(np.where(wired, 1e8, t))
    return out[0], out[1]


def limpq_size_limit_bits(include_fixed: bool) -> float:
    params = np.array(LIMPQ["params"])
    fixed = LIMPQ["fc_params"] + LIMPQ["stem_params"]
    limit = 32 * (params.sum() + fixed) / LIMPQ["compression_ratio"]
    return limit if include_fixed else limit - 8 * fixed


def limpq_profile(macs_key: str = "macs_limpq_counting", with_fixed_layers: bool = False) -> Profile:
    weight, act = limpq_tables()
    layers = [LayerInfo(name, "conv", p, m) for name, p, m in zip(LIMPQ["layers"], LIMPQ["params"], LIMPQ[macs_key])]
    ws, acts = LIMPQ["alpha"] * weight, act
    if with_fixed_layers:
        # stem and fc stay at 8 bits and, in LIMPQ's counting, outside the BitOps sum (macs 0)
        layers = ([LayerInfo("stem", "conv", LIMPQ["stem_params"], 0, fixed_bits=8)] + layers
                  + [LayerInfo("fc", "linear", LIMPQ["fc_params"], 0, fixed_bits=8)])
        pad = np.zeros((1, 5))
        ws, acts = np.vstack([pad, ws, pad]), np.vstack([pad, acts, pad])
    return Profile(layers, tuple(LIMPQ["bits"]), weight_sensitivity=ws, act_sensitivity=acts,
                   metric="limpq_indicator", metadata={"source": LIMPQ["source"]})


def limpq_budget(profile: Profile, include_fixed: bool = False) -> Budget:
    w, a = LIMPQ["bitops_reference"]
    bops = sum(layer.macs * w * a for layer in profile.layers)
    return Budget(bops=bops, size_mb=limpq_size_limit_bits(include_fixed) / 8e6)


def assert_limpq_policy(plan: Plan) -> None:
    assert [plan.w_bits[n] for n in LIMPQ["layers"]] == LIMPQ["published_w_bits"]
    assert [plan.a_bits[n] for n in LIMPQ["layers"]] == LIMPQ["published_a_bits"]


@pytest.mark.parametrize("solver", EXACT)
def test_limpq_joint_policy_through_the_allocator(solver):
    profile = limpq_profile()
    assert len(profile.layers) == 52
    plan = solve(profile, limpq_budget(profile), solver=solver, objective="sensitivity")
    assert plan.status == "optimal" and plan.budget_satisfied
    assert_limpq_policy(plan)
    assert plan.objective == pytest.approx(LIMPQ["published_objective"], abs=1e-5)


def test_limpq_with_stem_and_fc_as_pinned_layers():
    """The fixed 8-bit layers modelled as pinned layers (bits outside 2..6) give the same policy."""
    profile = limpq_profile(with_fixed_layers=True)
    plan = solve(profile, limpq_budget(profile, include_fixed=True), objective="sensitivity")
    assert plan.w_bits["stem"] == plan.w_bits["fc"] == 8
    assert_limpq_policy(plan)


def test_limpq_as_a_solvers_problem():
    """The same problem written as LIMPQ's ILP, straight into `solvers`."""
    weight, act = limpq_tables()
    bits = np.array(LIMPQ["bits"])
    w_of, a_of = np.repeat(bits, 5), np.tile(bits, 5)        # option k = (w, a)
    loss = act[:, np.repeat(np.arange(5)[None, :], 5, axis=0).ravel()] + LIMPQ["alpha"] * weight[:, np.repeat(np.arange(5), 5)]
    macs = np.array(LIMPQ["macs_limpq_counting"], dtype=float)[:, None]
    params = np.array(LIMPQ["params"], dtype=float)[:, None]
    problem = Problem(loss=loss, costs={"bitops": macs * w_of * a_of, "size": params * w_of},
                      limits={"bitops": float(macs.sum() * 12), "size": limpq_size_limit_bits(False)})
    sol = solve_problem(problem, solver="auto")
    assert w_of[sol.choice].tolist() == LIMPQ["published_w_bits"]
    assert a_of[sol.choice].tolist() == LIMPQ["published_a_bits"]


def test_limpq_true_mac_counts_change_the_optimum():
    """With true MACs the published policy breaks the BitOps limit (by 0.49%), as the data notes."""
    profile = limpq_profile("macs_true")
    budget = limpq_budget(profile)
    names = LIMPQ["layers"]
    published = Plan(list(profile.layers), dict(zip(names, LIMPQ["published_w_bits"])),
                     dict(zip(names, LIMPQ["published_a_bits"])))
    assert published.bops / budget.bops == pytest.approx(1.0049, abs=1e-4)
    plan = solve(profile, budget, objective="sensitivity")
    assert plan.bops <= budget.bops
    changed = sum(plan.w_bits[n] != published.w_bits[n] for n in names) + \
        sum(plan.a_bits[n] != published.a_bits[n] for n in names)
    assert changed == 5
