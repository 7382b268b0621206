"""Malformed input is rejected when the `Problem` is built, with the field named."""
from __future__ import annotations

import math

import numpy as np
import pytest

from solvers import AUTO_SOLVER, Problem, available_solvers, solve_problem

GOOD = {
    "loss": np.array([[1.0, 0.5, 0.1], [2.0, 1.0, 0.2], [1.5, 0.7, 0.3]]),
    "costs": {"size": np.array([[1.0, 2.0, 3.0]] * 3), "bops": np.array([[1.0, 4.0, 9.0]] * 3)},
    "limits": {"size": 6.0},
    "tied": [[0, 2]],
}


def make(**changes):
    return Problem(**{**GOOD, **changes})


def test_good_problem_is_normalised_read_only():
    p = make()
    assert p.loss.dtype == np.float64 and not p.loss.flags.writeable
    assert all(not table.flags.writeable for table in p.costs.values())
    assert p.tied == ((0, 2),) and p.limits == {"size": 6.0}
    assert (p.n_layers, p.n_options) == (3, 3)


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"loss": np.ones(3)}, ValueError, r"Problem\.loss: .*2-D.*\(3,\)"),
        ({"loss": np.ones((0, 3))}, ValueError, r"Problem\.loss: .*non-empty"),
        ({"loss": [["a", "b"]]}, ValueError, r"Problem\.loss: expected a numeric"),
        ({"loss": np.array([[1.0, np.nan, 0.0]] * 3)}, ValueError, r"Problem\.loss: NaN at layer 0, option 1"),
        ({"loss": np.array([[1.0, -np.inf, 0.0]] * 3)}, ValueError, r"Problem\.loss: -inf at layer 0, option 1"),
        ({"loss": np.array([[1.0, 1.0, 1.0], [np.inf] * 3, [1.0] * 3])}, ValueError,
         r"Problem\.loss: layer\(s\) \[1\] have no allowed option"),
        ({"costs": {"size": np.ones((3, 2))}}, ValueError, r"Problem\.costs\['size'\]: shape \(3, 2\) does not match .*\(3, 3\)"),
        ({"costs": {"size": np.array([[1.0, np.nan, 1.0]] * 3)}}, ValueError, r"Problem\.costs\['size'\]: NaN"),
        ({"costs": {"size": np.array([[1.0, -2.0, 1.0]] * 3)}}, ValueError,
         r"Problem\.costs\['size'\]: negative cost -2\.0 at layer 0, option 1"),
        ({"costs": {"size": np.array([[1.0, np.inf, 1.0]] * 3)}}, ValueError, r"Problem\.costs\['size'\]: infinite cost"),
        ({"costs": [np.ones((3, 3))]}, TypeError, r"Problem\.costs: expected a dict"),
        ({"costs": {1: np.ones((3, 3))}, "limits": {}}, TypeError, r"Problem\.costs: resource names must be str"),
        ({"limits": {"latency": 3.0}}, ValueError, r"Problem\.limits\['latency'\]: names a resource that is not in Problem\.costs \(known: \['bops', 'size'\]\)"),
        ({"limits": {"size": math.nan}}, ValueError, r"Problem\.limits\['size'\]: NaN"),
        ({"limits": {"size": -1.0}}, ValueError, r"Problem\.limits\['size'\]: -1\.0 is negative"),
        ({"limits": {"size": "6"}}, TypeError, r"Problem\.limits\['size'\]: expected a real number"),
        ({"tied": [[0, 3]]}, ValueError, r"Problem\.tied\[0\]: layer index 3 is out of range for 3 layers"),
        ({"tied": [[0, -1]]}, ValueError, r"Problem\.tied\[0\]: layer index -1 is out of range"),
        ({"tied": [[0, 0]]}, ValueError, r"Problem\.tied\[0\]: layer 0 appears twice in this group"),
        ({"tied": [[0, 1], [1, 2]]}, ValueError, r"Problem\.tied\[1\]: layer 1 appears also in Problem\.tied\[0\]"),
        ({"tied": [[]]}, ValueError, r"Problem\.tied\[0\]: empty group"),
        ({"tied": [[0, 1.0]]}, TypeError, r"Problem\.tied\[0\]: layer indices must be int"),
        ({"tied": "01"}, TypeError, r"Problem\.tied: expected a list of lists"),
        ({"tied": [[0, 1]], "loss": np.array([[1.0, np.inf, np.inf], [np.inf, 1.0, 1.0], [1.0] * 3])}, ValueError,
         r"Problem\.tied\[0\]: layers \[0, 1\] share no allowed option.*\{0: \[0\], 1: \[1, 2\]\}"),
    ],
)
def test_malformed_input_names_the_field(changes, error, match):
    with pytest.raises(error, match=match):
        make(**changes)


def test_tie_with_partly_different_allowed_options_is_fine():
    # layer 0 allows {0, 1}, layer 2 allows {1, 2}: the tie is restricted to option 1
    loss = np.array([[0.0, 5.0, np.inf], [1.0, 1.0, 1.0], [np.inf, 5.0, 0.0]])
    solution = solve_problem(make(loss=loss, limits={}), solver=AUTO_SOLVER)
    assert solution.choice[0] == solution.choice[2] == 1


def test_unknown_solver_lists_available_ones():
    with pytest.raises(ValueError, match=r"solver 'cplex' is not a known solver; available: \['auto', ") as info:
        solve_problem(make(), solver="cplex")
    for name in available_solvers():
        assert repr(name) in str(info.value)


@pytest.mark.parametrize("time_limit", [0, -1.0, math.inf, math.nan])
def test_bad_time_limit(time_limit):
    with pytest.raises(ValueError, match="time_limit: expected a positive finite number"):
        solve_problem(make(), time_limit=time_limit)


def test_problem_type_checked():
    with pytest.raises(TypeError, match="expected a solvers.Problem"):
        solve_problem(GOOD)


def test_auto_uses_the_named_constant():
    assert AUTO_SOLVER in available_solvers()
    assert solve_problem(make(), solver="auto").solver == AUTO_SOLVER
