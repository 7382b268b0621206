"""Joint-aware selection: exact candidates from the additive model, chosen by a joint score.

Why: the additive objective (per-layer damages measured one layer at a time, summed) tells good
plans from bad ones but cannot rank near-optimal plans against each other (issue 14: among plans
within 10% of the optimum its Kendall tau with top-1 was about 0), while the damage of the whole
plan measured jointly (one forward pass over the calibration images) ranks them well. So the
allocator proposes and a joint score disposes:

1. candidates, all feasible under the budget:
   * the ``k`` best distinct plans of the additive objective, exactly (`allocator.kbest`);
   * ``perturbed`` further plans, each the exact optimum of the additive objective with every
     loss multiplied by ``exp(sigma * z)`` (z standard normal, seeded) and kept only if its true
     additive objective is within ``gap`` of the optimum: near-optimal plans that differ in more
     than one layer, which the k best (a few hundredths of a percent apart) do not;
   * with ``interactions`` (measured pairwise terms, `allocator.quadratic`): the ``quadratic``
     best plans of the quadratic model (additive objective plus interaction terms), solved
     exactly by `allocator.quadratic.solve_quadratic`, whatever their additive objective;
   * ``extra`` plans the caller supplies (the demo: the uniform plan of the same size and BOPs),
     checked against the budget.
2. ``score(plans) -> values`` (lower is better; e.g. ``profiling.joint_damage`` on the
   calibration images) is called once on all candidates; the lowest wins, ties to the earlier
   candidate (so to the additive optimum first).
3. opt-in (``polish`` > 0 evaluations): local search from the winner on the same score
   (`allocator.polish`: raise one layer a level and lower up to two others, or swap two layers'
   bits, under the budget), which may leave the near-optimal neighbourhood.

What is proven, and in which model: the first k candidates are the k best plans of the additive
model (exact, tested against brute force); the chosen plan has the lowest joint score among the
candidates scored, and its additive objective is within ``gap`` of the proven additive optimum
(or it is a quadratic or ``extra`` plan, reported as such); a quadratic candidate with status
"optimal" is the proven optimum of the quadratic model (the i-th: among plans not listed before).
With ``polish``, the returned plan is feasible,
scores no higher than the winning candidate, and is a local minimum of the score under the
polish move set when ``polished.stopped == "local minimum"`` (else the evaluation cap or time
limit came first). Nothing is claimed about the joint score over all plans: that optimisation is
a black box here.

Torch-free: the score arrives as a callable.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from solvers import Problem, Solution, solve_problem

from .budget import Budget
from .errors import PlanError
from .kbest import k_best
from .objective import DEFAULT_ALPHA, Objective
from .plan import Plan
from .polish import PolishResult, check_polish_options, polish_posed
from .profile import Profile
from .quadratic import Interactions, quadratic_model, solve_quadratic
from .solving import Posed, check_solver_name, decode, pose

__all__ = ["JointChoice", "Candidate", "candidate_plans", "choice_of", "solve_joint"]

Score = Callable[[Sequence[Plan]], Sequence[float]]


@dataclass(frozen=True)
class Candidate:
    """A feasible plan, where it came from, and its additive objective."""

    plan: Plan
    source: str          # "k-best 1" (the optimum), "k-best 2", ..., "perturbed 3", "quadratic 1", "extra 1"
    objective: float     # additive objective (the posed problem's units)


@dataclass
class JointChoice:
    """The outcome of `solve_joint`: the chosen plan, every candidate and its scores.

    ``optimum`` is the proven optimum of the additive objective; ``kbest_complete`` says whether
    fewer than k plans exist at all; times are wall-clock seconds. With polishing, ``plan`` is
    the polished plan, ``polished`` says how it was reached, and ``chosen`` is the candidate it
    started from.
    """

    plan: Plan
    chosen: int
    candidates: list[Candidate]
    scores: list[float]
    optimum: float
    gap: float
    kbest_complete: bool
    candidates_time_s: float
    score_time_s: float
    notes: list[str] = field(default_factory=list)
    polished: PolishResult | None = None

    @property
    def source(self) -> str:
        start = self.candidates[self.chosen].source
        if self.polished is None:
            return start
        return f"{start} + polish ({len(self.polished.moves)} moves, {self.polished.stopped})"

    def table(self) -> str:
        """One line per candidate: source, additive objective, joint score, chosen mark."""
        lines = [f"{'candidate':14s} {'additive':>10s} {'joint':>10s}"]
        for i, (c, s) in enumerate(zip(self.candidates, self.scores)):
            lines.append(f"{c.source:14s} {c.objective:10.5g} {s:10.5g}" + ("  <- chosen" if i == self.chosen else ""))
        return "\n".join(lines)


def _check_counts(k: int, perturbed: int, sigma: float, gap: float) -> None:
    for name, value, low in (("k", k, 1), ("perturbed", perturbed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    for name, value in (("sigma", sigma), ("gap", gap)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < np.inf:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _perturbed(posed: Posed, optimum: float, n: int, sigma: float, gap: float, seed: int, solver: str,
               seen: set[tuple[int, ...]]) -> list[tuple[np.ndarray, float]]:
    """Up to ``n`` new near-optimal choices: exact optima of randomly re-weighted losses."""
    problem = posed.problem
    rng = np.random.default_rng(seed)
    out = []
    limit = optimum + gap * abs(optimum)
    for _ in range(4 * n):
        if len(out) == n:
            break
        noisy = problem.loss * np.exp(sigma * rng.standard_normal(problem.loss.shape))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            sol = solve_problem(Problem(loss=noisy, costs=problem.costs, limits=problem.limits, tied=problem.tied),
                                solver=solver)
        key = tuple(int(c) for c in sol.choice)
        objective = problem.objective_of(sol.choice)
        if key in seen or objective > limit:
            continue
        seen.add(key)
        out.append((sol.choice, objective))
    return out


def choice_of(plan: Plan, posed: Posed, i: int = 0, label: str | None = None) -> np.ndarray:
    """Option index per layer of plan number ``i`` in the posed problem; PlanError if it cannot compete.

    ``label`` names the plan in errors (default: "extra plan <i + 1>").
    """
    grid, problem = posed.grid, posed.problem
    label = f"extra plan {i + 1}" if label is None else label
    names = [layer.name for layer in plan.layer_info]
    if names != [layer.name for layer in posed.profile.layers]:
        raise PlanError(f"{label} is for other layers than the profile's; build it from this profile")
    choice = np.empty(len(names), dtype=np.int64)
    for l, name in enumerate(names):
        hit = np.flatnonzero((grid.w_bits[l] == plan.w_bits[name]) & (grid.a_bits[l] == plan.a_bits[name])
                             & np.isfinite(problem.loss[l]))
        if not hit.size:
            raise PlanError(f"{label}: layer {name!r} at W{plan.w_bits[name]}A{plan.a_bits[name]} is not "
                            "an option of this problem (check bits, pins and ties)")
        choice[l] = hit[0]
    broken = problem.violations_of(choice)
    if broken:
        raise PlanError(f"{label} breaks the budget {posed.budget}: " + "; ".join(broken)
                        + "; only feasible plans compete")
    return choice


def candidate_plans(profile: Profile, *, budget: Budget | float | str | Mapping, k: int = 3, perturbed: int = 8,
                    sigma: float = 0.3, gap: float = 0.10, extra: Sequence[Plan] = (), seed: int = 0,
                    objective: Objective = "mixqvit", alpha: float = DEFAULT_ALPHA, tie_wa: bool = False,
                    pinned: Mapping[str, int | None] | None = None, solver: str = "auto",
                    interactions: Interactions | None = None, quadratic: int = 1,
                    quadratic_time_limit: float = 10.0) -> tuple[list[Candidate], float, bool]:
    """The k best plans of the additive objective, ``perturbed`` near-optimal others, the
    ``quadratic`` best plans of the quadratic model (with ``interactions`` only), then ``extra``.

    Returns (distinct candidates, proven additive optimum, whether the k-best list is every plan).
    """
    _check_counts(k, perturbed, sigma, gap)
    check_solver_name(solver)
    posed = pose(profile, budget, objective=objective, alpha=alpha, tie_wa=tie_wa, pinned=pinned)
    best = k_best(posed.problem, k=k, solver=solver)
    optimum = best.solutions[0].objective
    found = [(sol.choice, sol.objective, f"k-best {i + 1}") for i, sol in enumerate(best.solutions)]
    seen = {tuple(int(c) for c in sol.choice) for sol in best.solutions}
    found += [(choice, value, f"perturbed {j + 1}") for j, (choice, value)
              in enumerate(_perturbed(posed, optimum, perturbed, sigma, gap, seed, solver, seen))]
    if interactions is not None:
        model = quadratic_model(posed, interactions)
        for j, sol in enumerate(solve_quadratic(model, m=quadratic, time_limit=quadratic_time_limit)):
            key = tuple(int(c) for c in sol.choice)
            if key not in seen:
                seen.add(key)
                found.append((sol.choice, posed.problem.objective_of(sol.choice),
                              f"quadratic {j + 1}" + ("" if sol.status == "optimal" else " (unproven)")))
    for i, plan in enumerate(extra):
        choice = choice_of(plan, posed, i)
        if tuple(int(c) for c in choice) not in seen:
            seen.add(tuple(int(c) for c in choice))
            found.append((choice, posed.problem.objective_of(choice), f"extra {i + 1}"))
    first = best.solutions[0]
    candidates = []
    for i, (choice, value, source) in enumerate(found):
        sol = first if i == 0 else Solution(choice=choice, objective=value, status="feasible", bound=optimum,
                                            time_s=0.0, solver=first.solver, usage=posed.problem.usage_of(choice))
        candidates.append(Candidate(decode(posed, sol), source, value))
    return candidates, optimum, best.complete


def solve_joint(profile: Profile, *, budget: Budget | float | str | Mapping, score: Score, k: int = 3,
                perturbed: int = 8, sigma: float = 0.3, gap: float = 0.10, extra: Sequence[Plan] = (),
                seed: int = 0, objective: Objective = "mixqvit", alpha: float = DEFAULT_ALPHA,
                tie_wa: bool = False, pinned: Mapping[str, int | None] | None = None,
                solver: str = "auto", interactions: Interactions | None = None, quadratic: int = 1,
                quadratic_time_limit: float = 10.0, polish: int = 0, polish_batch: int = 16,
                polish_time_limit: float | None = None) -> JointChoice:
    """Choose, by ``score``, among exact near-optimal plans of the additive objective (module doc).

    Args:
        profile, budget, objective, alpha, tie_wa, pinned, solver: as for `allocator.solve`.
        score: callable taking a list of plans, returning one number per plan, lower better
            (e.g. joint KL on calibration images); called once.
        k: how many best additive plans to take (k=1 and perturbed=0: the additive optimum,
            scored against the ``extra`` plans only).
        perturbed, sigma, gap: near-optimal plans from re-weighted losses (see module doc).
        extra: further feasible plans to compete (e.g. the uniform plan of the same budget).
        interactions, quadratic, quadratic_time_limit: measured pairwise interaction terms; the
            ``quadratic`` best plans of the quadratic model (exact, within the time limit) compete.
        seed: seeds the perturbations (same inputs and seed -> same choice).
        polish, polish_batch, polish_time_limit: opt-in local search from the chosen candidate
            (`allocator.polish.polish`): at most ``polish`` plans scored, ``polish_batch`` per
            call of ``score``; 0 (default) polishes nothing.

    Raises:
        BudgetInfeasibleError, ValueError: as `allocator.solve`; PlanError for an extra plan
        that is not an option of the posed problem or breaks the budget; ValueError if
        ``score`` returns a wrong number of values or NaN.
    """
    check_polish_options(polish, polish_batch, polish_time_limit)
    start = time.perf_counter()
    candidates, optimum, complete = candidate_plans(
        profile, budget=budget, k=k, perturbed=perturbed, sigma=sigma, gap=gap, extra=extra, seed=seed,
        objective=objective, alpha=alpha, tie_wa=tie_wa, pinned=pinned, solver=solver,
        interactions=interactions, quadratic=quadratic, quadratic_time_limit=quadratic_time_limit)
    made = time.perf_counter()
    values = [float(v) for v in score([c.plan for c in candidates])]
    scored = time.perf_counter()
    if len(values) != len(candidates) or any(np.isnan(values)):
        raise ValueError(f"score returned {len(values)} values for {len(candidates)} plans"
                         + (" (with NaN)" if any(np.isnan(values)) else "") + "; it must give one number per plan")
    chosen = int(np.argmin(values))
    plan = candidates[chosen].plan
    plan.solver = f"{plan.solver}+joint({len(candidates)})"
    polished = None
    if polish:
        with warnings.catch_warnings():  # candidate_plans posed this problem and warned already
            warnings.simplefilter("ignore", UserWarning)
            posed = pose(profile, budget, objective=objective, alpha=alpha, tie_wa=tie_wa, pinned=pinned)
        polished = polish_posed(posed, choice_of(plan, posed, label="the chosen candidate"), score=score,
                                max_evals=polish, batch=polish_batch, time_limit=polish_time_limit,
                                start_score=values[chosen], optimum=optimum)
        plan = polished.plan
        plan.solver = f"{candidates[chosen].plan.solver}+{plan.solver}"
    plan.solve_time_s = time.perf_counter() - start
    return JointChoice(plan, chosen, candidates, values, optimum, gap, complete, made - start, scored - made,
                       polished=polished)
