"""A quadratic allocation model: the additive objective plus measured pairwise interaction terms.

Why: the additive objective sums damages measured one layer at a time (all others float). At
2-3 bits, where every layer is damaged at once, the damages do not add up (issue 14): two layers
quantized together can hurt more (or less) than the sum of their damages alone. The second-order
term of that approximation is measurable: ``q_ij = D(i, j) - D(i) - D(j)``, the joint damage of
layers i and j quantized together at a low bit-width minus their damages alone
(`profiling.pair_damage`, on the calibration set). This module turns such a table into the model

    cost(x) = sum_l loss_l(x_l) + sum_{i<j} q_ij * g_i(x_i) * g_j(x_j),

``loss`` the posed additive problem's losses and ``g_l(o) = sqrt(S_l(o) / S_l(measured))`` the
size of layer l's error at option o relative to the measured one (S the profile's own
sensitivity, weights + activations, unweighted). Why the square root: for a damage that is
quadratic in the logit error (KL near zero), D(i, j) = |e_i + e_j|^2, so q_ij = 2 <e_i, e_j>
scales with the product of the two error norms, sqrt(D_i) * sqrt(D_j), at fixed direction.
Which bit-widths the interaction is measured at is the caller's: the scaling to other options is
the model's assumption, not a measurement.

`solve_quadratic` minimises it *exactly* (for this model) as a mixed-integer linear programme:
one binary per allowed (layer, option), the products linearised with Glover's construction
(``w_lo = x_lo * h_l`` with ``h_l = sum_{j>l} q_lj g_j(x_j)``, four linear inequalities per
(l, o) from valid bounds on ``h_l``, exact at every integer point), solved by HiGHS
(`scipy.optimize.milp`) with relative gap 0. ``m > 1`` adds no-good cuts: the m best distinct
plans of the model, best first. Proven (tested against brute force): each returned plan is
feasible and, when ``status == "optimal"``, its model cost is the minimum over all feasible
plans not returned before it (to HiGHS's absolute gap, 1e-6). A time limit that stops HiGHS
first returns its best plan with status "feasible" (no claim), or none.

Torch-free: the interaction table arrives as arrays.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from solvers import Problem

from ._jsonio import atomic_write_json, read_json
from .objective import loss_table
from .solving import Posed

__all__ = ["Interactions", "QuadraticModel", "QuadraticSolution", "quadratic_model", "solve_quadratic", "usable_options"]

# HiGHS's default absolute MIP gap: "optimal" means within this of the true minimum
MIP_ABS_GAP = 1e-6


@dataclass(frozen=True)
class Interactions:
    """Measured damages of single layers and pairs at ``W{w_bits}A{a_bits}`` (all others float).

    ``single`` (L,) and ``pair`` (L, L) are indexed like ``names``; NaN marks what was not
    measured (such pairs get no interaction term). ``q`` is the interaction table.
    """

    names: tuple[str, ...]
    w_bits: int
    a_bits: int
    single: np.ndarray
    pair: np.ndarray

    def __post_init__(self) -> None:
        L = len(self.names)
        single = np.asarray(self.single, dtype=float)
        pair = np.asarray(self.pair, dtype=float)
        if single.shape != (L,) or pair.shape != (L, L):
            raise ValueError(f"Interactions: single must have shape ({L},) and pair ({L}, {L}) for {L} names; "
                             f"got {single.shape} and {pair.shape}")
        if len(set(self.names)) != L:
            raise ValueError("Interactions: layer names must be distinct")
        if np.isinf(single).any() or np.isinf(pair).any():
            raise ValueError("Interactions: damages must be finite (NaN marks an unmeasured entry)")
        if not np.array_equal(np.isnan(pair), np.isnan(pair).T) or not np.allclose(
                np.nan_to_num(pair), np.nan_to_num(pair).T, rtol=0, atol=0):
            raise ValueError("Interactions: pair must be symmetric (D(i, j) == D(j, i))")
        object.__setattr__(self, "single", single)
        object.__setattr__(self, "pair", pair)

    @property
    def q(self) -> np.ndarray:
        """``q_ij = D(i, j) - D(i) - D(j)`` (L, L), symmetric, zero on the diagonal and where unmeasured."""
        q = self.pair - self.single[:, None] - self.single[None, :]
        q[~np.isfinite(q)] = 0.0
        np.fill_diagonal(q, 0.0)
        return q

    def to_dict(self) -> dict:
        nan = lambda a: [None if np.isnan(v) else float(v) for v in a]  # noqa: E731
        return {"names": list(self.names), "w_bits": self.w_bits, "a_bits": self.a_bits,
                "single": nan(self.single), "pair": [nan(row) for row in self.pair]}

    @classmethod
    def from_dict(cls, data: dict) -> "Interactions":
        num = lambda a: np.array([np.nan if v is None else v for v in a], dtype=float)  # noqa: E731
        try:
            return cls(tuple(data["names"]), int(data["w_bits"]), int(data["a_bits"]), num(data["single"]),
                       np.array([num(row) for row in data["pair"]]).reshape(len(data["names"]), -1))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"Interactions.from_dict: malformed table ({exc}); expected names, w_bits, a_bits, "
                             "single, pair") from None

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "Interactions":
        return cls.from_dict(read_json(path, ValueError))


@dataclass(frozen=True)
class QuadraticModel:
    """``cost(x) = problem.objective_of(x) + sum_{i<j} q[i, j] * scale[i, x_i] * scale[j, x_j]``."""

    problem: Problem
    scale: np.ndarray  # (L, K) g_l(o), 0 for forbidden options
    q: np.ndarray      # (L, L) symmetric, zero diagonal

    def interaction_of(self, choice: np.ndarray) -> float:
        g = self.scale[np.arange(len(choice)), choice]
        return float(g @ np.triu(self.q, 1) @ g)

    def objective_of(self, choice: np.ndarray) -> float:
        return self.problem.objective_of(choice) + self.interaction_of(choice)


@dataclass(frozen=True)
class QuadraticSolution:
    choice: np.ndarray
    objective: float     # model cost, recomputed from the choice
    status: str          # "optimal" (proven, see module doc) or "feasible"
    time_s: float


def quadratic_model(posed: Posed, interactions: Interactions) -> QuadraticModel:
    """The quadratic model of a posed problem with the interaction terms ``interactions.q``."""
    profile, grid = posed.profile, posed.grid
    if tuple(interactions.names) != tuple(profile.names):
        raise ValueError("interactions were measured for other layers than the profile's; measure them on this "
                         "model (profiling.pair_damage with profile.names)")
    damage = loss_table(profile, grid.w_bits, grid.a_bits, "sensitivity")
    L = len(profile.layers)
    at = loss_table(profile, np.full((L, 1), interactions.w_bits), np.full((L, 1), interactions.a_bits),
                    "sensitivity")[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.sqrt(np.clip(damage, 0.0, None) / at[:, None])
    scale[~np.isfinite(scale) | ~(at[:, None] > 0) | ~grid.allowed] = 0.0  # unmeasured: no interaction
    return QuadraticModel(posed.problem, scale, interactions.q)


def usable_options(p: Problem) -> np.ndarray:
    """Allowed options that can be part of a feasible plan: with every other layer at its cheapest
    option (ties ignored, so this only relaxes) the option still meets every limit. Dropping the
    rest changes no feasible plan and tightens the bounds of the linearisation."""
    ok = np.isfinite(p.loss)
    for key, limit in p.limits.items():
        if not ok.any(axis=1).all():
            break  # a layer has no usable option: no feasible plan at all
        cost = np.where(ok, p.costs[key], np.inf)
        cheapest = cost.min(axis=1)
        others = cheapest.sum() - cheapest
        ok &= cost + others[:, None] <= limit + 1e-9 * max(abs(limit), 1.0)
    return ok


def _milp_parts(model: QuadraticModel):
    """Variables [x (allowed l, o) | w (same) | h (L)] with objective and constraints (module doc)."""
    p, g = model.problem, model.scale
    L, K = p.loss.shape
    upper = np.triu(model.q, 1)
    ls, os_ = np.nonzero(usable_options(p))
    n = len(ls)
    col = -np.ones((L, K), dtype=np.int64)
    col[ls, os_] = np.arange(n)
    nv = 2 * n + L
    qg = upper[:, ls] * g[ls, os_][None, :]          # (L, n): coefficient of x_jo in h_l
    lo, hi = np.zeros(L), np.zeros(L)  # bounds of h_l: each later layer at its extreme option
    for j in range(L):
        mine = ls == j
        lo[:j] += qg[:j, mine].min(axis=1)
        hi[:j] += qg[:j, mine].max(axis=1)
    rows, cols, vals, lb, ub = [], [], [], [], []

    def row(entries: Sequence[tuple[int, float]], low: float, high: float) -> None:
        r = len(lb)
        for c, v in entries:
            rows.append(r)
            cols.append(c)
            vals.append(v)
        lb.append(low)
        ub.append(high)

    for l in range(L):  # one option per layer
        row([(c, 1.0) for c in col[l] if c >= 0], 1.0, 1.0)
    for group in p.tied:  # tied layers take the same option index
        for m in group[1:]:
            for o in range(K):
                a, b = col[group[0], o], col[m, o]
                if a >= 0 and b >= 0:
                    row([(a, 1.0), (b, -1.0)], 0.0, 0.0)
                elif a >= 0 or b >= 0:
                    row([(max(a, b), 1.0)], 0.0, 0.0)
    for key, limit in p.limits.items():
        cost = p.costs[key]
        row([(c, float(cost[ls[c], os_[c]])) for c in range(n)], -np.inf, float(limit))
    for l in range(L):
        h = 2 * n + l
        row([(h, 1.0)] + [(c, -float(qg[l, c])) for c in range(n) if ls[c] > l and qg[l, c] != 0.0], 0.0, 0.0)
        mine = [c for c in range(n) if ls[c] == l]
        row([(n + c, 1.0) for c in mine] + [(h, -1.0)], 0.0, 0.0)
        for c in mine:  # w = x * h, exact at integer x given lo[l] <= h <= hi[l]
            row([(n + c, 1.0), (c, -lo[l])], 0.0, np.inf)
            row([(n + c, 1.0), (c, -hi[l])], -np.inf, 0.0)
            row([(n + c, 1.0), (h, -1.0), (c, -hi[l])], -hi[l], np.inf)
            row([(n + c, 1.0), (h, -1.0), (c, -lo[l])], -np.inf, -lo[l])
    base = p.loss.min(axis=1, where=np.isfinite(p.loss), initial=np.inf)
    c_obj = np.concatenate([p.loss[ls, os_] - base[ls], g[ls, os_], np.zeros(L)])
    a = coo_matrix((vals, (rows, cols)), shape=(len(lb), nv)).tocsr()
    bounds = Bounds(np.concatenate([np.zeros(n), np.minimum(lo[ls], 0.0), lo]),
                    np.concatenate([np.ones(n), np.maximum(hi[ls], 0.0), hi]))
    integrality = np.concatenate([np.ones(n), np.zeros(n + L)])
    return c_obj, a, np.array(lb), np.array(ub), bounds, integrality, ls, os_


def solve_quadratic(model: QuadraticModel, *, m: int = 1, time_limit: float = 10.0) -> list[QuadraticSolution]:
    """The ``m`` best distinct feasible plans of the quadratic model, best first (module doc).

    Fewer than ``m`` come back when fewer plans exist (none: the problem is infeasible) or the
    time limit ends the search; the limit covers the whole call. A plan HiGHS could not prove
    optimal has status "feasible" and ends the list.
    """
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"m must be a positive integer, got {m!r}")
    if not time_limit > 0:
        raise ValueError(f"time_limit must be a positive number of seconds, got {time_limit!r}")
    start = time.perf_counter()
    if not usable_options(model.problem).any(axis=1).all():
        return []  # some layer has no option that fits the limits: no feasible plan
    c_obj, a, lb, ub, bounds, integrality, ls, os_ = _milp_parts(model)
    L, n = model.problem.n_layers, len(ls)
    cuts: list[np.ndarray] = []
    out: list[QuadraticSolution] = []
    while len(out) < m:
        left = time_limit - (time.perf_counter() - start)
        if left <= 0:
            break
        constraints = [LinearConstraint(a, lb, ub)]
        if cuts:  # no-good cuts: every earlier plan is excluded
            cut = np.zeros((len(cuts), len(c_obj)))
            for r, choice in enumerate(cuts):
                cut[r, [int(np.flatnonzero((ls == l) & (os_ == choice[l]))[0]) for l in range(L)]] = 1.0
            constraints.append(LinearConstraint(cut, -np.inf, L - 1))
        res = milp(c_obj, constraints=constraints, integrality=integrality, bounds=bounds,
                   options={"time_limit": left, "mip_rel_gap": 0.0, "presolve": True})
        if res.x is None:
            break  # infeasible (no further plan) or no plan before the time limit
        x = res.x[:n] > 0.5
        choice = np.empty(L, dtype=np.int64)
        choice[ls[x]] = os_[x]
        if model.problem.violations_of(choice):
            raise RuntimeError("HiGHS returned a plan that breaks a limit: " + "; ".join(model.problem.violations_of(choice)))
        status = "optimal" if res.status == 0 else "feasible"
        out.append(QuadraticSolution(choice, model.objective_of(choice), status, time.perf_counter() - start))
        cuts.append(choice)
        if status != "optimal":
            break
    return out
