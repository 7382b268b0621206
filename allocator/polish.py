"""Local search on a joint score ("polish"): leave the near-optimal neighbourhood of the additive model.

Why: `allocator.joint.solve_joint` chooses among plans that are near-optimal for the additive
objective. At W2A2 the best of those is only ~1.3 points of top-1 above the additive optimum
(issue 14), so no choice among them can gain more; plans the joint score prefers may lie farther
away. Polishing walks from a feasible plan (the joint choice) over feasible neighbouring plans,
judged by the joint score alone.

The move set of a plan x (a *unit* is a layer, or a tied group moving as one; pinned layers never
move; a *step* of a unit changes its weight bits, its activation bits, or both, by one level of
the profile's bits, all in the same direction, to an option the unit may take):

* **raise**: one unit one step up, and zero, one or two other units one step down each;
* **swap**: two units exchange their options (each may take the other's);

restricted to the plans that meet every limit of the budget and differ from x. Each round scores a
batch of not yet scored neighbours with one call of ``score`` (so a caller can batch forward
passes), in order of their additive objective (lowest first; ties in enumeration order), and
accepts the lowest-scored neighbour as soon as one scores strictly below the current plan.
Neighbours scored earlier are not scored again (every value is cached by plan), and none of them
can be below the current plan: each accepted plan is the lowest value seen so far.

What is proven (tests: random budgets, brute-force enumeration of the move set on small
profiles): the result meets every limit; its score is <= the starting plan's (only strictly
improving moves are accepted); with ``stopped == "local minimum"`` every plan of its move set was
scored and none scored lower, so it is a local minimum of the score under this move set. With
``stopped`` "evaluation cap" or "time limit" only ``checked`` of its ``neighbours`` were scored.
The same inputs give the same result, unless the time limit stops it (wall-clock). Nothing is
claimed about the score's global minimum, nor about what the score predicts (top-1): that is
measured (`benchmarks.polish`).

Torch-free: the score arrives as a callable, as for `allocator.joint.solve_joint`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from solvers import Solution
from solvers.problem import FEASIBILITY_RTOL

from .budget import Budget
from .objective import DEFAULT_ALPHA, Objective
from .plan import Plan
from .profile import Profile
from .solving import Posed, decode, pose

__all__ = ["PolishResult", "Move", "neighbours", "polish", "polish_posed"]

Score = Callable[[Sequence[Plan]], Sequence[float]]


@dataclass(frozen=True)
class Move:
    """An accepted move: what changed (layer or group: old -> new bits), the score after it, how
    many neighbours had been scored when it was accepted, and the plan it led to. Polishing with
    ``max_evals`` equal to that count scores the same batches up to this move and stops here."""

    changes: tuple[str, ...]
    score: float
    evaluations: int
    plan: Plan


@dataclass
class PolishResult:
    """The outcome of `polish`.

    ``stopped`` is "local minimum" (every neighbour of ``plan`` scored, none lower), "evaluation
    cap" or "time limit"; ``neighbours`` is the number of distinct feasible plans in the final
    plan's move set and ``checked`` how many of them (the first in scoring order) have a score;
    ``evaluations`` counts the neighbours scored (at most ``max_evals``), ``calls`` the calls of
    ``score`` (one more when the start's score was not given); ``time_s`` is wall-clock.
    """

    plan: Plan
    score: float
    start_score: float
    moves: list[Move]
    stopped: str
    neighbours: int
    checked: int
    evaluations: int
    calls: int
    time_s: float

    @property
    def local_minimum(self) -> bool:
        return self.stopped == "local minimum"


@dataclass(frozen=True)
class _Units:
    """The movable units of a posed problem with their summed option tables."""

    members: list[list[int]]
    allowed: np.ndarray            # (U, K) options every member may take
    loss: np.ndarray               # (U, K) summed loss (inf where not allowed)
    costs: dict[str, np.ndarray]   # limited resource -> (U, K) summed cost
    names: list[str]


def _units(posed: Posed) -> _Units:
    """Tied groups and untied layers that have more than one option (pinned layers never move)."""
    grid, problem = posed.grid, posed.problem
    tied = [list(g) for g in grid.tied]
    grouped = {i for g in tied for i in g}
    members = [g for g in tied] + [[l] for l in range(problem.n_layers) if l not in grouped]
    allowed = np.array([np.all([grid.allowed[l] & np.isfinite(problem.loss[l]) for l in m], axis=0)
                        for m in members]).reshape(len(members), problem.n_options)
    movable = allowed.sum(axis=1) > 1
    members = [m for m, ok in zip(members, movable) if ok]
    allowed = allowed[movable]
    loss = np.array([problem.loss[m].sum(axis=0) for m in members]).reshape(allowed.shape)
    loss = np.where(allowed, loss, np.inf)
    costs = {r: np.array([problem.costs[r][m].sum(axis=0) for m in members]).reshape(allowed.shape)
             for r in problem.limits}
    layer_names = [layer.name for layer in posed.profile.layers]
    names = [layer_names[m[0]] if len(m) == 1 else "{" + ", ".join(layer_names[i] for i in m) + "}"
             for m in members]
    return _Units(members, allowed, loss, costs, names)


def _steps(units: _Units, posed: Posed, current: np.ndarray) -> tuple[np.ndarray, ...]:
    """Every one-level step of every unit: (unit, option, up?, loss delta, (n, R) cost deltas)."""
    w_col, a_col = posed.grid.w_col, posed.grid.a_col
    rows = []
    for u, c in enumerate(current):
        dw, da = w_col - w_col[c], a_col - a_col[c]
        for up, sign in ((True, 1), (False, -1)):
            hit = np.flatnonzero(units.allowed[u] & np.isin(dw, (0, sign)) & np.isin(da, (0, sign))
                                 & ((dw != 0) | (da != 0)))
            rows += [(u, int(k), up) for k in hit]
    unit, option, up = (np.array([r[i] for r in rows], dtype=t).reshape(len(rows))
                        for i, t in ((0, np.int64), (1, np.int64), (2, bool)))
    dloss, dcost = _deltas(units, current, unit, option)
    return unit, option, up, dloss, dcost


def _deltas(units: _Units, current: np.ndarray, unit: np.ndarray, option: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Change of summed loss (n,) and of every limited cost (n, R) when ``unit`` takes ``option``."""
    base = current[unit]
    dloss = units.loss[unit, option] - units.loss[unit, base]
    dcost = np.zeros((len(unit), len(units.costs)))
    for r, table in enumerate(units.costs.values()):
        dcost[:, r] = table[unit, option] - table[unit, base]
    return dloss, dcost


def _moves(units: _Units, posed: Posed, choice: np.ndarray) -> np.ndarray:
    """The move set of ``choice`` (an option per layer): feasible moves only, each a distinct plan.

    Returns an (M, 6) array of (unit, new option) x 3 (-1 where a move changes fewer units),
    ordered by the change of the additive objective (stable: enumeration order breaks ties).
    A swap of two options one step apart is the raise-and-lower move already listed, so it is
    left out; every other pair of moves changes a different set of units or options.
    """
    usage = posed.problem.usage_of(choice)  # pinned layers count too
    room = np.array([posed.problem.limits[r] * (1 + FEASIBILITY_RTOL) - usage[r] for r in units.costs], dtype=float)
    current = _unit_choice(units, choice)
    unit, option, up, dloss, dcost = _steps(units, posed, current)
    ups, downs = np.flatnonzero(up), np.flatnonzero(~up)
    blocks: list[np.ndarray] = []
    gains: list[np.ndarray] = []

    def keep(steps: list[np.ndarray]) -> None:
        """Keep the feasible moves made of the given steps (index arrays of equal length)."""
        total_loss = sum(dloss[s] for s in steps)
        total_cost = sum(dcost[s] for s in steps)
        ok = np.all(total_cost <= room, axis=1)
        rows = np.full((int(ok.sum()), 6), -1, dtype=np.int64)
        for i, s in enumerate(steps):
            rows[:, 2 * i], rows[:, 2 * i + 1] = unit[s[ok]], option[s[ok]]
        blocks.append(rows)
        gains.append(total_loss[ok])

    d1, d2 = np.triu_indices(len(downs), 1)
    d1, d2 = downs[d1], downs[d2]
    distinct = unit[d1] != unit[d2]
    d1, d2 = d1[distinct], d2[distinct]
    for s in ups:
        keep([np.array([s])])
        one = downs[unit[downs] != unit[s]]
        keep([np.full(len(one), s), one])
        two = (unit[d1] != unit[s]) & (unit[d2] != unit[s])
        keep([np.full(int(two.sum()), s), d1[two], d2[two]])
    u1, u2 = np.triu_indices(len(current), 1)
    c1, c2 = current[u1], current[u2]
    w_col, a_col = posed.grid.w_col, posed.grid.a_col
    dw, da = w_col[c2] - w_col[c1], a_col[c2] - a_col[c1]
    one_step = (np.abs(dw) <= 1) & (np.abs(da) <= 1) & (dw * da >= 0)  # also the raise-and-lower move
    swap = (c1 != c2) & ~one_step & units.allowed[u1, c2] & units.allowed[u2, c1]
    u1, u2, c1, c2 = u1[swap], u2[swap], c1[swap], c2[swap]
    l1, k1 = _deltas(units, current, u1, c2)
    l2, k2 = _deltas(units, current, u2, c1)
    ok = np.all(k1 + k2 <= room, axis=1)
    blocks.append(np.stack([u1[ok], c2[ok], u2[ok], c1[ok], np.full(int(ok.sum()), -1), np.full(int(ok.sum()), -1)],
                           axis=1))
    gains.append((l1 + l2)[ok])
    order = np.argsort(np.concatenate(gains), kind="stable")
    return np.concatenate(blocks)[order]


def _apply(units: _Units, choice: np.ndarray, move: np.ndarray) -> np.ndarray:
    """The option per layer after ``move`` (every member of a changed unit takes its new option)."""
    new = choice.copy()
    for u, k in move.reshape(3, 2):
        if u >= 0:
            new[units.members[u]] = k
    return new


def _describe(units: _Units, posed: Posed, choice: np.ndarray, move: np.ndarray) -> tuple[str, ...]:
    """Each change of ``move`` as "layer (or {group}) WxAy->WuAv"."""
    grid = posed.grid
    text = []
    for u, k in move.reshape(3, 2):
        if u >= 0:
            l, c = units.members[u][0], choice[units.members[u][0]]
            old, new = f"W{grid.w_bits[l, c]}A{grid.a_bits[l, c]}", f"W{grid.w_bits[l, k]}A{grid.a_bits[l, k]}"
            text.append(f"{units.names[u]} {old}->{new}")
    return tuple(text)


def _unit_choice(units: _Units, choice: np.ndarray) -> np.ndarray:
    return np.array([choice[m[0]] for m in units.members], dtype=np.int64)


def neighbours(posed: Posed, choice: np.ndarray) -> list[np.ndarray]:
    """The feasible plans (option per layer) of ``choice``'s move set, in the order they are scored."""
    units = _units(posed)
    choice = np.asarray(choice, dtype=np.int64)
    return [_apply(units, choice, m) for m in _moves(units, posed, choice)]


def check_polish_options(max_evals: int, batch: int, time_limit: float | None) -> None:
    """Raise ValueError naming a bad cap, batch size or time limit (before anything is scored)."""
    for name, value, low in (("max_evals", max_evals, 0), ("batch", batch, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if time_limit is not None and (isinstance(time_limit, bool) or not isinstance(time_limit, (int, float))
                                   or not time_limit > 0):
        raise ValueError(f"time_limit must be a number of seconds > 0 or None, got {time_limit!r}")


def _scored(score: Score, plans: list[Plan]) -> list[float]:
    values = [float(v) for v in score(plans)]
    if len(values) != len(plans) or any(np.isnan(values)):
        raise ValueError(f"score returned {len(values)} values for {len(plans)} plans"
                         + (" (with NaN)" if any(np.isnan(values)) else "") + "; it must give one number per plan")
    return values


def polish_posed(posed: Posed, choice: np.ndarray, *, score: Score, max_evals: int = 100, batch: int = 16,
                 time_limit: float | None = None, start_score: float | None = None,
                 optimum: float | None = None) -> PolishResult:
    """`polish` on a posed problem, from a feasible ``choice`` (option index per layer).

    ``optimum`` (the proven additive optimum, if known) is recorded as the plans' bound.
    """
    check_polish_options(max_evals, batch, time_limit)
    choice = np.asarray(choice, dtype=np.int64).copy()
    broken = posed.problem.violations_of(choice)
    if broken:
        raise ValueError("polish must start from a feasible plan; the start breaks the budget "
                         f"{posed.budget}: " + "; ".join(broken))
    start = time.perf_counter()
    problem = posed.problem

    def plan_of(c: np.ndarray) -> Plan:
        plan = decode(posed, Solution(choice=c, objective=problem.objective_of(c), status="feasible", bound=np.nan,
                                      time_s=0.0, solver="polish", usage=problem.usage_of(c)))
        plan.bound = optimum
        return plan

    evaluations = calls = 0
    if start_score is None:
        start_score = _scored(score, [plan_of(choice)])[0]
        calls = 1
    start_score = float(start_score)
    if np.isnan(start_score):
        raise ValueError("start_score is NaN; pass the start plan's score or None to have it scored")
    cache = {tuple(int(c) for c in choice): start_score}
    units = _units(posed)
    current, value, moves = choice, start_score, []
    while True:  # one pass per accepted move
        order = _moves(units, posed, current)
        best: tuple[float, np.ndarray, np.ndarray] | None = None
        pointer, stopped = 0, ""  # moves before ``pointer`` lead to scored plans
        while best is None:  # score the next batch of unscored neighbours until one improves
            take: list[tuple[int, np.ndarray]] = []
            room = min(batch, max_evals - evaluations)
            while pointer < len(order):
                new = _apply(units, current, order[pointer])
                if tuple(int(x) for x in new) not in cache:  # a plan scored before is not below ``value``
                    if len(take) == room:
                        break
                    take.append((pointer, new))
                pointer += 1
            if not take:
                stopped = "local minimum" if pointer == len(order) else "evaluation cap"
                break
            if time_limit is not None and time.perf_counter() - start >= time_limit:
                pointer = take[0][0]  # not scored: no claim on them
                stopped = "time limit"
                break
            values = _scored(score, [plan_of(c) for _, c in take])
            evaluations += len(take)
            calls += 1
            for (i, c), v in zip(take, values):
                cache[tuple(int(x) for x in c)] = v
                if v < value and (best is None or v < best[0]):
                    best = (v, c, order[i])
        if best is None:
            break
        moves.append(Move(_describe(units, posed, current, best[2]), best[0], evaluations, plan_of(best[1])))
        value, current = best[0], best[1]
    plan = plan_of(current)
    elapsed = time.perf_counter() - start
    plan.solver = f"polish({len(moves)} moves, {evaluations} scored)"
    plan.solve_time_s = elapsed
    return PolishResult(plan, value, start_score, moves, stopped, len(order), pointer, evaluations, calls, elapsed)


def polish(profile: Profile, plan: Plan, *, budget: Budget | float | str | Mapping, score: Score,
           max_evals: int = 100, batch: int = 16, time_limit: float | None = None,
           start_score: float | None = None, objective: Objective = "mixqvit", alpha: float = DEFAULT_ALPHA,
           tie_wa: bool = False, pinned: Mapping[str, int | None] | None = None) -> PolishResult:
    """Lower ``score`` by local search from ``plan`` under ``budget`` (module doc: moves, proof).

    Args:
        profile, budget, objective, alpha, tie_wa, pinned: as for `allocator.solve`; the objective
            only orders the moves (lowest additive change first).
        plan: the feasible starting plan (e.g. `solve_joint`'s choice).
        score: callable taking a list of plans, returning one number per plan, lower better;
            called once per round on up to ``batch`` plans. It must be a function of the plan
            (each plan is scored once).
        max_evals: most neighbours scored (0: none; the start is scored apart when
            ``start_score`` is None).
        batch: plans per call of ``score``.
        time_limit: wall-clock seconds, checked before each call (None: no limit).
        start_score: the starting plan's score if known (saves one evaluation).

    Raises:
        BudgetInfeasibleError, ValueError: as `allocator.solve`; PlanError if ``plan`` is not an
        option of the posed problem; ValueError if ``plan`` breaks the budget, for bad options,
        or if ``score`` returns a wrong number of values or NaN.
    """
    from .joint import choice_of

    posed = pose(profile, budget, objective=objective, alpha=alpha, tie_wa=tie_wa, pinned=pinned)
    return polish_posed(posed, choice_of(plan, posed, label="the plan to polish"), score=score,
                        max_evals=max_evals, batch=batch, time_limit=time_limit, start_score=start_score)
