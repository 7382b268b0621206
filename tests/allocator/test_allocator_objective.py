"""Objectives: the documented formulas, checked on hand-computed numbers."""
from __future__ import annotations

import numpy as np
import pytest

from allocator import LayerInfo, ObjectiveError, Profile, loss_table, solve
from allocator_helpers import quiet

LAYERS = [LayerInfo("a", "linear", 10, 100), LayerInfo("m", "matmul", 0, 50), LayerInfo("b", "linear", 30, 300)]
WS = np.array([[4.0, 1.0], [0.0, 0.0], [2.0, 0.5]])
AS = np.array([[3.0, 1.0], [6.0, 2.0], [1.0, 0.25]])
IMP = np.array([1.0, 2.0, 3.0])  # normalised: L*I/sum = [0.5, 1.0, 1.5]


def profile(**kw) -> Profile:
    args = dict(weight_sensitivity=WS, act_sensitivity=AS, importance=IMP)
    args.update(kw)
    return Profile(LAYERS, (2, 4), **args)


W = np.array([[2, 2, 4, 4]] * 3)   # the four (w, a) pairs of bits (2, 4)
A = np.array([[2, 4, 2, 4]] * 3)


def test_mixqvit_formula():
    alpha = 0.4
    omega = (1 - alpha) + alpha * np.array([0.5, 1.0, 1.5])
    got = loss_table(profile(), W, A, "mixqvit", alpha)
    # layer a, option (w=4, a=2): omega_a * (WS[a,4b] + AS[a,2b]) = 0.8 * (1 + 3)
    assert got[0, 2] == pytest.approx(omega[0] * (1.0 + 3.0))
    # layer b, option (2, 4): 1.2 * (2 + 0.25)
    assert got[2, 1] == pytest.approx(omega[2] * (2.0 + 0.25))
    # matmul: weight row is 0, only the activation term
    assert got[1, 3] == pytest.approx(omega[1] * 2.0)


def test_sensitivity_is_alpha_zero():
    np.testing.assert_allclose(loss_table(profile(), W, A, "sensitivity"), loss_table(profile(), W, A, "mixqvit", 0.0))
    assert loss_table(profile(), W, A, "sensitivity")[0, 0] == pytest.approx(4.0 + 3.0)


def test_absent_table_contributes_zero():
    got = loss_table(profile(act_sensitivity=None), W, A, "sensitivity")
    assert got[0, 1] == pytest.approx(4.0)  # (w=2, a=4): only the weight term


def test_importance_objective_noise_proxy():
    got = loss_table(profile(), W, A, "importance")
    assert got[0, 1] == pytest.approx(0.5 * (4.0**-2 + 4.0**-4))
    assert got[1, 3] == pytest.approx(1.0 * 4.0**-4)  # matmul: no weight term


def test_mixqvit_without_importance_falls_back_with_warning():
    p = profile(importance=None)
    with pytest.warns(UserWarning, match="falling back to objective='sensitivity'"):
        got = loss_table(p, W, A, "mixqvit")
    np.testing.assert_allclose(got, loss_table(p, W, A, "sensitivity"))


def test_importance_objective_needs_importance():
    with pytest.raises(ObjectiveError, match="no importance vector"):
        loss_table(profile(importance=None), W, A, "importance")


def test_sensitivity_objective_needs_a_table():
    with pytest.raises(ObjectiveError, match="neither weight_sensitivity nor act_sensitivity"):
        loss_table(profile(weight_sensitivity=None, act_sensitivity=None), W, A, "sensitivity")


def test_unknown_objective_name():
    with pytest.raises(ObjectiveError, match="unknown objective 'hessian'"):
        solve(profile(), 4.0, objective="hessian")


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), "0.5"])
def test_alpha_out_of_range(alpha):
    with pytest.raises(ObjectiveError, match=r"alpha must be a number in \[0, 1\]"):
        solve(profile(), 4.0, alpha=alpha)


def test_callable_objective_receives_option_bits_and_drives_the_choice():
    seen = {}

    def prefer_low_bits_for_b(p, w_bits, a_bits):
        seen["shape"] = w_bits.shape
        out = np.zeros(w_bits.shape)
        out[0] = 1.0 / w_bits[0]          # a wants many bits
        out[2] = w_bits[2] / 100.0        # b wants few
        return out

    plan = quiet(solve, profile(), "W4A4", objective=prefer_low_bits_for_b)
    assert seen["shape"] == (3, 4)
    assert plan.w_bits["a"] == 4 and plan.w_bits["b"] == 2
    assert plan.objective_name == "prefer_low_bits_for_b"


def test_callable_objective_wrong_shape():
    with pytest.raises(ObjectiveError, match=r"returned shape \(3,\), expected \(3, 4\)"):
        solve(profile(), 4.0, objective=lambda p, w, a: np.zeros(3))


def test_callable_objective_nan():
    with pytest.raises(ObjectiveError, match="NaN or -inf"):
        solve(profile(), 4.0, objective=lambda p, w, a: np.full(w.shape, np.nan))


def test_alpha_changes_the_plan_when_importance_disagrees_with_sensitivity():
    # equal sensitivities, importance says layer b matters 5x more
    layers = [LayerInfo("a", "linear", 100, 100), LayerInfo("b", "linear", 100, 100)]
    p = Profile(layers, (2, 8), weight_sensitivity=np.array([[1.0, 0.0], [0.9, 0.0]]),
                importance=np.array([1.0, 5.0]))
    only_sens = solve(p, "W5", objective="sensitivity")
    mixed = solve(p, "W5", alpha=1.0)
    assert only_sens.w_bits == {"a": 8, "b": 2}
    assert mixed.w_bits == {"a": 2, "b": 8}
