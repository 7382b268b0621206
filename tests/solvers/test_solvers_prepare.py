"""Preprocessing: tie merging, exact infeasibility proofs, pruning that keeps the optimum."""
from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings

from mckp_bruteforce import brute_force
from mckp_strategies import problems
from solvers import InfeasibleError, Problem
from solvers.prepare import prepare

pytestmark = pytest.mark.filterwarnings("ignore::solvers.NonBindingLimitWarning")


def test_ties_merge_into_one_group_with_summed_tables():
    p = Problem(
        loss=[[1.0, 2.0], [3.0, 0.0], [5.0, 1.0]],
        costs={"size": [[1, 2], [1, 3], [2, 4]]},
        limits={"size": 7},
        tied=[[2, 0]],
    )
    prepared = prepare(p)
    assert [g.tolist() for g in prepared.groups] == [[0, 2], [1]]
    assert prepared.loss[0].tolist() == [3.0, 0.0]  # [6, 3] shifted by its least entry
    assert prepared.loss[1].tolist() == [3.0, 0.0]
    assert prepared.offset == 3.0 + 0.0
    assert prepared.costs[0, 0].tolist() == [3.0, 6.0]
    assert prepared.expand(np.array([1, 0])).tolist() == [1, 0, 1]


def test_dominated_and_duplicate_options_are_pruned():
    # option 1 is worse than option 0 in loss and cost; options 2 and 3 are identical
    p = Problem(loss=[[1.0, 2.0, 0.5, 0.5]], costs={"size": [[1, 2, 3, 3]]}, limits={"size": 3})
    assert prepare(p).allowed.tolist() == [[True, False, True, False]]


def test_unlimited_costs_do_not_protect_dominated_options():
    # option 1 is cheaper only in an unlimited resource: never needed
    p = Problem(loss=[[1.0, 2.0]], costs={"size": [[1, 1]], "bops": [[5, 1]]}, limits={"size": 1})
    prepared = prepare(p)
    assert prepared.resources == ("size",)
    assert prepared.allowed.tolist() == [[True, False]]


def test_options_that_cannot_fit_are_pruned():
    # the room above the minimum total (2) is 1, so option 2 (extra 2) fits in no plan
    p = Problem(loss=[[3.0, 2.0, 0.0]] * 2, costs={"size": [[1, 2, 3]] * 2}, limits={"size": 3})
    assert prepare(p).allowed.tolist() == [[True, True, False]] * 2


def test_below_minimum_error_reports_exact_minimum_with_ties_and_forbidden_options():
    p = Problem(
        loss=[[np.inf, 1.0, 0.0], [1.0, 1.0, 0.0], [np.inf, np.inf, 1.0]],
        costs={"size": [[1, 2, 3], [1, 2, 3], [1, 2, 3]]},
        limits={"size": 6.5},
        tied=[[0, 1]],
    )
    with pytest.raises(InfeasibleError) as info:
        prepare(p)
    assert info.value.violations == {"size": (6.5, 7.0)}  # 2 + 2 (tied, option 0 forbidden) + 3


def test_prepare_proves_joint_infeasibility_when_a_group_has_nothing_left():
    p = Problem(loss=[[1.0, 1.0]], costs={"size": [[1, 0]], "bops": [[0, 1]]}, limits={"size": 0, "bops": 0})
    with pytest.raises(InfeasibleError, match="reachable alone but not all together") as info:
        prepare(p)
    assert info.value.jointly and info.value.violations == {"size": (0.0, 0.0), "bops": (0.0, 0.0)}


def test_non_binding_note_uses_lowest_loss_plan():
    p = Problem(loss=[[1.0, 0.0], [0.0, 1.0]], costs={"size": [[1, 2], [1, 3]]}, limits={"size": 4})
    ((name, note),) = prepare(p).non_binding
    assert name == "size" and re.search(r"'size' does not bind.*totals 3 <= limit 4", note)


def test_a_limit_met_by_the_lowest_loss_plan_may_still_bind():
    """size alone is met by the lowest-loss plan, but bops forces a switch that needs size."""
    p = Problem(loss=[[2.0, 0.0, 1.0]], costs={"size": [[0.5, 0, 1]], "bops": [[0, 2, 0]]},
                limits={"size": 0.75, "bops": 1})
    assert prepare(p).non_binding == ()
    assert brute_force(p.loss, p.costs, p.limits).choice.tolist() == [0]  # size decides between 0 and 2


def test_a_limit_no_plan_exceeds_is_noted_and_left_out_of_conflicts():
    p = Problem(loss=[[1.0, 0.0]], costs={"size": [[1, 2]], "bops": [[0, 1]]}, limits={"size": 9, "bops": 0.5})
    prepared = prepare(p)
    assert [name for name, _ in prepared.non_binding] == ["size"]
    assert "size" not in prepared.alone_minima


@settings(max_examples=150, deadline=None, derandomize=True)
@given(fields=problems())
def test_pruning_keeps_the_optimum(fields):
    """Brute force on the prepared groups gives the brute-force optimum of the original."""
    reference = brute_force(**fields)
    try:
        prepared = prepare(Problem(**fields))
    except InfeasibleError:
        assert reference.optimum is None
        return
    costs = {name: prepared.costs[r] for r, name in enumerate(prepared.resources)}
    limits = dict(zip(prepared.resources, prepared.limits.tolist()))
    reduced = brute_force(prepared.loss, costs, limits)
    shifted = None if reduced.optimum is None else reduced.optimum + prepared.offset
    assert shifted == (None if reference.optimum is None else pytest.approx(reference.optimum, rel=1e-12, abs=1e-12))
    if reduced.choice is not None:
        expanded = prepared.expand(reduced.choice)
        assert Problem(**fields).violations_of(expanded) == []
