"""Local search on a joint score (`allocator.polish`): the move set equals an independent
enumeration from its definition, the result is feasible, never scores above its start, and is a
local minimum when it says so; runs are deterministic and bad input is refused clearly."""
from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from allocator import Budget, BudgetInfeasibleError, Plan, PlanError, Profile, solve
from allocator.joint import choice_of, solve_joint
from allocator.polish import neighbours, polish
from allocator.solving import pose
from allocator_helpers import profiles, quick, quiet, reference_totals, tiny_profile

FREE = {"embed": None, "head": None}


def hashed_score(plans):
    """A deterministic score unrelated to the additive objective (many local minima)."""
    return [zlib.crc32(repr(sorted(p.w_bits.items()) + sorted(p.a_bits.items())).encode()) / 2**32 for p in plans]


def bits_of(plan) -> tuple:
    return tuple((plan.w_bits[n], plan.a_bits[n]) for n in plan.w_bits)


def as_plan(profile: Profile, bits: tuple) -> Plan:
    names = [layer.name for layer in profile.layers]
    return Plan(layer_info=list(profile.layers), w_bits={n: w for n, (w, _) in zip(names, bits)},
                a_bits={n: a for n, (_, a) in zip(names, bits)})


# ---- an independent reference of the move set, from the module's definition ----------------

def options(profile: Profile, layer) -> list[tuple[int, int]]:
    """The (w, a) bits a free layer may take (pinned layers never move)."""
    bits = list(profile.bits)
    if layer.kind == "matmul" or profile.act_sensitivity is None:
        return [(b, b) for b in bits]
    return [(w, a) for w in bits for a in bits]


def steps(profile: Profile, layer, wa: tuple[int, int], sign: int) -> list[tuple[int, int]]:
    """Options one level away in weight bits, activation bits or both, all in direction ``sign``."""
    level = list(profile.bits).index
    out = []
    for w, a in options(profile, layer):
        dw, da = level(w) - level(wa[0]), level(a) - level(wa[1])
        if dw in (0, sign) and da in (0, sign) and (dw, da) != (0, 0):
            out.append((w, a))
    return out


def reference_neighbours(profile: Profile, bits: tuple, avg_bits: float) -> set[tuple]:
    """Every feasible plan of the move set, by plain enumeration over units (groups move as one)."""
    layers = profile.layers
    units: list[list[int]] = []
    for g in sorted({layer.group for layer in layers if layer.group is not None}):
        units.append([i for i, layer in enumerate(layers) if layer.group == g])
    units += [[i] for i, layer in enumerate(layers) if layer.group is None]
    units = [u for u in units if layers[u[0]].fixed_bits is None]
    params = sum(layer.params for layer in layers)
    ref_bops = sum(layer.macs * avg_bits * avg_bits for layer in layers)

    def feasible(new: tuple) -> bool:
        w = {layer.name: wa[0] for layer, wa in zip(layers, new)}
        a = {layer.name: wa[1] for layer, wa in zip(layers, new)}
        t = reference_totals(profile, w, a)
        ok = t["avg_w_bits"] * params <= avg_bits * params * (1 + 1e-9)
        return ok and (profile.act_sensitivity is None or t["bops"] <= ref_bops * (1 + 1e-9))

    def changed(changes: list[tuple[list[int], tuple[int, int]]]) -> tuple:
        new = list(bits)
        for unit, wa in changes:
            for i in unit:
                new[i] = wa
        return tuple(new)

    found = set()
    for u in units:
        for up in steps(profile, layers[u[0]], bits[u[0]], +1):
            others = [v for v in units if v is not u]
            for n_down in (0, 1, 2):
                for downs in itertools.combinations(others, n_down):
                    for targets in itertools.product(*[steps(profile, layers[v[0]], bits[v[0]], -1) for v in downs]):
                        found.add(changed([(u, up), *zip(downs, targets)]))
    for u, v in itertools.combinations(units, 2):
        wu, wv = bits[u[0]], bits[v[0]]
        if wu != wv and wv in options(profile, layers[u[0]]) and wu in options(profile, layers[v[0]]):
            found.add(changed([(u, wv), (v, wu)]))
    return {new for new in found if new != bits and feasible(new)}


def budgets(profile: Profile, fraction: float) -> float:
    """An average-bits budget between the smallest and the largest bits."""
    return profile.bits[0] + fraction * (profile.bits[-1] - profile.bits[0])


def feasible_start(profile: Profile, avg_bits: float, seed: int):
    """A feasible plan (optimum of randomly re-weighted losses): not the additive optimum, so moves
    exist. A budget below every plan of the profile leaves nothing to polish: the example is
    discarded (hypothesis ``assume``), not counted as passed."""
    from allocator.joint import candidate_plans

    try:
        cands, _, _ = quiet(candidate_plans, profile, budget=avg_bits, k=1, perturbed=1, sigma=3.0, gap=1e9, seed=seed)
    except BudgetInfeasibleError:
        assume(False)
    return cands[-1].plan


# ---- properties -----------------------------------------------------------------------------

@quick
@given(profiles(max_layers=4, cost_tables=False), st.floats(0.0, 1.0), st.integers(0, 50))
def test_move_set_equals_the_reference_enumeration(profile, fraction, seed):
    avg = budgets(profile, fraction)
    start = feasible_start(profile, avg, seed)
    posed = quiet(pose, profile, avg)
    choice = choice_of(start, posed)
    listed = [bits_of(quiet(lambda c: _decode(posed, c), c)) for c in neighbours(posed, choice)]
    assert len(listed) == len(set(listed)), "a plan is listed twice"
    assert set(listed) == reference_neighbours(profile, bits_of(start), avg)


def _decode(posed, choice):
    from solvers import Solution

    from allocator.solving import decode

    return decode(posed, Solution(choice=choice, objective=0.0, status="feasible", bound=0.0, time_s=0.0,
                                  solver="t", usage=posed.problem.usage_of(choice)))


@quick
@given(profiles(max_layers=4, cost_tables=False), st.floats(0.0, 1.0), st.integers(0, 50))
def test_uncapped_polish_ends_feasible_monotone_at_a_brute_force_local_minimum(profile, fraction, seed):
    avg = budgets(profile, fraction)
    start = feasible_start(profile, avg, seed)
    calls = []

    def score(plans):
        calls.append(len(plans))
        return hashed_score(plans)

    res = quiet(polish, profile, start, budget=avg, score=score, max_evals=10**6, batch=3)
    assert res.stopped == "local minimum" and res.local_minimum
    t = reference_totals(profile, res.plan.w_bits, res.plan.a_bits)
    params = sum(layer.params for layer in profile.layers)
    assert t["avg_w_bits"] * params <= avg * params * (1 + 1e-9)
    assert res.plan.budget_satisfied
    assert res.score == hashed_score([res.plan])[0] <= res.start_score == hashed_score([start])[0]
    trail = [res.start_score] + [m.score for m in res.moves]
    assert all(b < a for a, b in zip(trail, trail[1:])), "every accepted move lowers the score strictly"
    assert all(n <= 3 for n in calls) and len(calls) == res.calls
    around = reference_neighbours(profile, bits_of(res.plan), avg)
    assert res.neighbours == res.checked == len(around)
    if around:
        assert min(hashed_score([as_plan(profile, b) for b in sorted(around)])) >= res.score


@quick
@given(profiles(max_layers=5, cost_tables=False), st.floats(0.2, 0.8), st.integers(0, 50), st.integers(0, 12),
       st.integers(1, 5))
def test_capped_polish_is_feasible_monotone_within_its_cap_and_deterministic(profile, fraction, seed, cap, batch):
    assume(len(profile.bits) >= 2 and sum(layer.fixed_bits is None for layer in profile.layers) >= 2)
    avg = budgets(profile, fraction)
    start = feasible_start(profile, avg, seed)
    res, again = (quiet(polish, profile, start, budget=avg, score=hashed_score, max_evals=cap, batch=batch)
                  for _ in range(2))
    assert res.plan.budget_satisfied and res.score <= res.start_score
    assert res.evaluations <= cap
    if res.stopped == "evaluation cap":
        assert res.evaluations == cap and res.checked < res.neighbours
    assert bits_of(res.plan) == bits_of(again.plan)
    assert [(m.changes, m.score, m.evaluations) for m in res.moves] == \
        [(m.changes, m.score, m.evaluations) for m in again.moves]


def test_polish_reaches_the_neighbour_the_additive_model_ranks_last_when_the_score_prefers_it():
    """Only one plan scores 0, the neighbour of the additive optimum scored last: polishing scores
    batch after batch until it finds it, moves there, and stops at a proven local minimum."""
    profile = tiny_profile()
    budget = Budget(size_mb=Plan.uniform(profile, 4, 4).size_bytes / 1e6, bops=Plan.uniform(profile, 4, 4).bops)
    start = quiet(solve, profile, budget, pinned=FREE)
    posed = quiet(pose, profile, budget, pinned=FREE)
    target = neighbours(posed, choice_of(start, posed))[-1]  # the additive model's least favoured neighbour
    target_bits = bits_of(_decode(posed, target))

    def score(plans):
        return [0.0 if bits_of(p) == target_bits else 1.0 for p in plans]

    res = quiet(polish, profile, start, budget=budget, pinned=FREE, score=score, max_evals=10**5, batch=4)
    assert bits_of(res.plan) == target_bits and res.score == 0.0 and len(res.moves) == 1
    assert all("->" in change for change in res.moves[0].changes)
    assert res.local_minimum and res.moves[0].evaluations <= res.evaluations


def test_joint_with_polish_starts_from_the_chosen_candidate_and_never_scores_higher():
    profile = tiny_profile(seed=2)
    uniform = Plan.uniform(profile, 4, 4)
    budget = Budget(size_mb=uniform.size_bytes / 1e6, bops=uniform.bops)
    plain = quiet(solve_joint, profile, budget=budget, score=hashed_score, extra=[uniform], pinned=FREE)
    polished = quiet(solve_joint, profile, budget=budget, score=hashed_score, extra=[uniform], pinned=FREE,
                     polish=10**5, polish_batch=5)
    assert plain.polished is None and polished.chosen == plain.chosen
    assert polished.polished.start_score == plain.scores[plain.chosen]
    assert hashed_score([polished.plan])[0] == polished.polished.score <= min(plain.scores)
    assert polished.plan.budget_satisfied and polished.polished.local_minimum
    assert polished.source.startswith(plain.source + " + polish")
    assert polished.plan.bound == pytest.approx(plain.optimum)


def test_a_spent_time_limit_scores_nothing_and_returns_the_start():
    profile = tiny_profile()
    start = quiet(solve, profile, 4.0)
    res = quiet(polish, profile, start, budget=4.0, score=hashed_score, time_limit=1e-12, start_score=0.5)
    assert res.stopped == "time limit" and res.evaluations == 0 and res.checked == 0
    assert bits_of(res.plan) == bits_of(start) and res.score == 0.5 and res.calls == 0


@pytest.mark.parametrize("kwargs, match", [({"max_evals": -1}, "max_evals"), ({"batch": 0}, "batch"),
                                           ({"max_evals": 2.5}, "max_evals"), ({"time_limit": 0}, "time_limit"),
                                           ({"start_score": float("nan")}, "NaN")])
def test_bad_options_are_refused(kwargs, match):
    profile = tiny_profile()
    start = quiet(solve, profile, 4.0)
    with pytest.raises(ValueError, match=match):
        quiet(polish, profile, start, budget=4.0, score=hashed_score, **kwargs)


@pytest.mark.parametrize("score, match", [(lambda plans: [0.0] * (len(plans) + 1), "one number per plan"),
                                          (lambda plans: [float("nan")] * len(plans), "NaN")])
def test_a_bad_score_is_refused(score, match):
    profile = tiny_profile()
    start = quiet(solve, profile, 4.0)
    with pytest.raises(ValueError, match=match):
        quiet(polish, profile, start, budget=4.0, score=score)


def test_a_start_over_budget_or_for_another_profile_is_refused():
    profile = tiny_profile()
    with pytest.raises(PlanError, match="the plan to polish breaks the budget"):
        quiet(polish, profile, Plan.uniform(profile, 8, 8), budget=3.0, score=hashed_score)
    other = tiny_profile(pins=False)
    renamed = Profile([type(l)(l.name + "_x", l.kind, l.params, l.macs) for l in other.layers], other.bits,
                      weight_sensitivity=other.weight_sensitivity, act_sensitivity=other.act_sensitivity)
    with pytest.raises(PlanError, match="the plan to polish is for other layers"):
        quiet(polish, profile, Plan.uniform(renamed, 2, 2), budget=3.0, score=hashed_score)
    with pytest.raises(ValueError, match="polish_batch|batch"):
        quiet(solve_joint, profile, budget=3.0, score=hashed_score, polish=5, polish_batch=0)


def test_no_neighbour_fits_when_every_layer_is_at_its_lowest_bits():
    profile = tiny_profile(pins=False)
    low = Plan.uniform(profile, 2, 2)
    res = quiet(polish, profile, low, budget=Budget(size_mb=low.size_bytes / 1e6, bops=low.bops), score=hashed_score)
    assert res.neighbours == 0 and res.local_minimum and res.moves == [] and res.calls == 1
    assert np.isclose(res.score, hashed_score([low])[0])


@quick
@given(profiles(max_layers=5, cost_tables=False), st.floats(0.2, 0.8), st.integers(0, 50), st.integers(1, 4))
def test_a_run_capped_at_a_moves_evaluation_count_stops_at_that_moves_plan(profile, fraction, seed, batch):
    assume(len(profile.bits) >= 2 and sum(layer.fixed_bits is None for layer in profile.layers) >= 2)  # moves exist
    avg = budgets(profile, fraction)
    start = feasible_start(profile, avg, seed)
    full = quiet(polish, profile, start, budget=avg, score=hashed_score, max_evals=10**6, batch=batch)
    for i, move in enumerate(full.moves):
        capped = quiet(polish, profile, start, budget=avg, score=hashed_score, max_evals=move.evaluations, batch=batch)
        assert bits_of(capped.plan) == bits_of(move.plan) and capped.score == move.score
        assert [m.changes for m in capped.moves] == [m.changes for m in full.moves[:i + 1]]
