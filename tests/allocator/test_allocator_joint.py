"""Joint-aware selection (`allocator.joint`): candidates are exact and feasible, the choice is the
score's minimum over them, and with every plan as a candidate it is the score's global optimum
(checked by enumerating all plans independently)."""
from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest

from allocator import Budget, Plan, PlanError, Profile
from allocator.joint import candidate_plans, solve_joint
from allocator.kbest import k_best
from allocator.solving import pose
from allocator_helpers import quiet, reference_loss, reference_totals, tiny_profile


def hashed_score(plans):
    """A deterministic 'joint' score unrelated to the additive objective."""
    return [zlib.crc32(repr(sorted(p.w_bits.items()) + sorted(p.a_bits.items())).encode()) / 2**32 for p in plans]


def test_choice_is_the_scores_minimum_over_feasible_candidates():
    profile = tiny_profile()
    uniform = Plan.uniform(profile, 4, 4)  # the demo's budget: its size and BOPs, pins freed
    budget = Budget(size_mb=uniform.size_bytes / 1e6, bops=uniform.bops)
    free = {"embed": None, "head": None}
    choice = quiet(solve_joint, profile, budget=budget, score=hashed_score, k=5, perturbed=6, extra=[uniform],
                   pinned=free)
    values = hashed_score([c.plan for c in choice.candidates])
    assert choice.scores == values
    assert choice.chosen == int(np.argmin(values))
    assert choice.plan is choice.candidates[choice.chosen].plan
    keys = [(tuple(c.plan.w_bits.values()), tuple(c.plan.a_bits.values())) for c in choice.candidates]
    assert len(set(keys)) == len(keys)
    for c in choice.candidates:
        assert c.plan.budget_satisfied
        assert c.source.startswith("extra") or c.objective <= choice.optimum * 1.1 + 1e-12
    # the first five are the exact five best of the additive objective, in order
    posed = quiet(pose, profile, budget, pinned=free)
    best = quiet(k_best, posed.problem, k=5)
    assert [c.objective for c in choice.candidates[:5]] == pytest.approx(best.objectives)
    assert [(c.plan.w_bits, c.plan.a_bits) for c in choice.candidates].count((uniform.w_bits, uniform.a_bits)) == 1


def test_same_seed_same_choice_and_other_seed_may_differ_only_in_perturbed():
    profile = tiny_profile(seed=3)
    run = lambda seed: quiet(candidate_plans, profile, budget=3.0, k=2, perturbed=5, sigma=1.0, gap=0.5, seed=seed)
    a, b = run(0), run(0)
    assert [c.plan.w_bits for c in a[0]] == [c.plan.w_bits for c in b[0]]
    assert [c.plan.w_bits for c in a[0][:2]] == [c.plan.w_bits for c in run(7)[0][:2]]


def all_plans(profile: Profile, avg_bits: float):
    """Every feasible (w, a) plan of ``profile`` under avg_bits and uniform-BOPs, by enumeration."""
    bits = list(profile.bits)
    per_layer = [[(l.fixed_bits, l.fixed_bits)] if l.fixed_bits is not None else
                 ([(b, b) for b in bits] if l.kind == "matmul" else [(w, a) for w in bits for a in bits])
                 for l in profile.layers]
    params = sum(l.params for l in profile.layers)
    ref_bops = sum(l.macs * avg_bits * avg_bits for l in profile.layers)
    for combo in itertools.product(*per_layer):
        w = {l.name: c[0] for l, c in zip(profile.layers, combo)}
        a = {l.name: c[1] for l, c in zip(profile.layers, combo)}
        t = reference_totals(profile, w, a)
        if t["avg_w_bits"] * params <= avg_bits * params and t["bops"] <= ref_bops:
            obj = sum(reference_loss(profile, i, w[l.name], a[l.name]) for i, l in enumerate(profile.layers)
                      if l.fixed_bits is None)
            yield w, a, obj


def test_with_every_plan_as_candidate_the_choice_is_the_scores_global_optimum():
    profile = tiny_profile(bits=(2, 4))
    plans = list(all_plans(profile, 3.0))
    choice = quiet(solve_joint, profile, budget=3.0, score=hashed_score, k=10_000, perturbed=0)
    assert choice.kbest_complete and len(choice.candidates) == len(plans)
    reference = [Plan(layer_info=list(profile.layers), w_bits=w, a_bits=a) for w, a, _ in plans]
    best = reference[int(np.argmin(hashed_score(reference)))]
    assert choice.plan.w_bits == best.w_bits and choice.plan.a_bits == best.a_bits
    assert choice.optimum == pytest.approx(min(obj for _, _, obj in plans))


def test_an_extra_plan_over_budget_is_refused():
    profile = tiny_profile()
    with pytest.raises(PlanError, match="breaks the budget"):
        quiet(solve_joint, profile, budget=3.0, score=hashed_score, extra=[Plan.uniform(profile, 8, 8)])


@pytest.mark.parametrize("score, match", [(lambda plans: [0.0], "one number per plan"),
                                          (lambda plans: [float("nan")] * len(plans), "NaN")])
def test_a_bad_score_is_refused(score, match):
    with pytest.raises(ValueError, match=match):
        quiet(solve_joint, tiny_profile(), budget=4.0, score=score, k=2, perturbed=1)


@pytest.mark.parametrize("kwargs", [{"k": 0}, {"perturbed": -1}, {"sigma": -1.0}, {"gap": float("inf")}])
def test_bad_counts_are_refused(kwargs):
    with pytest.raises(ValueError):
        quiet(candidate_plans, tiny_profile(), budget=4.0, **kwargs)


def test_quadratic_candidates_are_the_quadratic_models_best_plans():
    from allocator.quadratic import Interactions, quadratic_model, solve_quadratic

    profile = tiny_profile(seed=5)
    L = len(profile.names)
    rng = np.random.default_rng(1)
    single = rng.uniform(0.1, 1.0, L)
    q = rng.normal(0, 0.5, (L, L))
    pair = single[:, None] + single[None, :] + np.triu(q, 1) + np.triu(q, 1).T
    np.fill_diagonal(pair, single)
    table = Interactions(tuple(profile.names), 2, 2, single, pair)
    free = {"embed": None, "head": None}
    choice = quiet(solve_joint, profile, budget=3.0, score=hashed_score, k=1, perturbed=0, pinned=free,
                   interactions=table, quadratic=3)
    posed = quiet(pose, profile, 3.0, pinned=free)
    model = quadratic_model(posed, table)
    best = solve_quadratic(model, m=3)
    bits = lambda sol: [(int(posed.grid.w_bits[l, k]), int(posed.grid.a_bits[l, k])) for l, k in enumerate(sol.choice)]
    plan_bits = lambda plan: [(plan.w_bits[n], plan.a_bits[n]) for n in profile.names]
    # a quadratic plan equal to the additive optimum is not listed twice
    expected = [s for s in best if bits(s) != plan_bits(choice.candidates[0].plan)]
    quads = [c for c in choice.candidates if c.source.startswith("quadratic")]
    assert len(quads) == len(expected) >= 1
    for c, s in zip(quads, expected):
        assert c.plan.budget_satisfied and plan_bits(c.plan) == bits(s)
        assert c.objective == pytest.approx(posed.problem.objective_of(s.choice))
    assert choice.chosen == int(np.argmin(choice.scores))
