"""Preprocessing shared by every backend: merge ties, check feasibility, prune options.

1. Tied layers become one super-layer ("group") whose option k has the summed loss and costs of
   its members' options k, so no backend needs to know about ties.
2. Each limit is compared with the smallest total any plan can reach (the sum of per-group
   minima). A limit below it is infeasible whatever the other limits say: `InfeasibleError`
   names every such resource, its limit and that minimum. This is exact and cheap, so backends
   never see a problem that is infeasible for a single resource.
3. Limits that do not bind are noted (`PreparedProblem.non_binding`; `solve_problem` turns the
   notes into `NonBindingLimitWarning`s once a plan is found, so no warning precedes an
   infeasibility report): a limit at or above the largest total any plan reaches never binds,
   and when the lowest-loss plan meets every limit, none of them binds. A limit of the first
   kind is left out of "not all together" reports (it is no part of any conflict). A limit
   that the lowest-loss plan meets while another limit forces a change may still bind, so it
   is not noted. An infinite limit is dropped.
4. Each group's loss row is shifted by its smallest allowed entry (`offset` keeps the sum of
   the shifts): a constant added to one layer's losses changes no choice, so it must not reach
   a backend, where it would only inflate the objective that relative tolerances (the exact
   search's 1e-10, a MIP solver's gaps) are measured against, and so let a huge constant row
   blur the choices of every other layer. Backends therefore see losses >= 0, 0 at each group's
   best option, and report objectives and bounds in these shifted units (`solve_problem` adds
   `offset` back; it recomputes objectives from the caller's table). Validation has already
   refused losses whose plan objectives could overflow.
5. Options are pruned when no optimal plan needs them: an option whose extra cost over its
   group's cheapest option exceeds the limit's slack (limit - sum of minima) is in no feasible
   plan, and an option that another option of its group matches or beats in loss and in every
   limited cost is never needed (of equal options the lowest index is kept). Pruned options
   keep their original indices (marked +inf in `loss`), so expanding back is just reading the
   group's choice for each member layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InfeasibleError
from .problem import FEASIBILITY_RTOL, Problem

__all__ = ["PreparedProblem", "prepare"]


@dataclass(frozen=True, eq=False)
class PreparedProblem:
    """What a backend solves: groups x options, limited resources only, dominated options gone.

    Attributes:
        loss: (G, K) merged loss, shifted so each group's smallest is 0; +inf marks an option the
            group may not take (forbidden or pruned).
        costs: (R, G, K) merged costs of the limited resources (any value where loss is +inf).
        limits: (R,) limits, in the order of `resources`.
        resources: names of the limited resources.
        groups: original layer indices of each group (ascending; groups ordered by first layer).
        n_layers: number of layers of the original problem.
        alone_minima: resource -> (limit, smallest total reachable for that resource alone), for
            the finite limits that some plan exceeds (the ones a joint infeasibility involves).
        non_binding: (limit name, message) per limit that does not bind (see the module docstring).
        offset: the sum of the shifts: an objective or bound of `loss` plus `offset` is in the
            caller's units.
    """

    loss: np.ndarray
    costs: np.ndarray
    limits: np.ndarray
    resources: tuple[str, ...]
    groups: tuple[np.ndarray, ...]
    n_layers: int
    alone_minima: dict[str, tuple[float, float]]
    non_binding: tuple[tuple[str, str], ...] = ()
    offset: float = 0.0

    @property
    def n_groups(self) -> int:
        return self.loss.shape[0]

    @property
    def n_options(self) -> int:
        return self.loss.shape[1]

    @property
    def allowed(self) -> np.ndarray:
        """(G, K) mask of the options a group may take."""
        return np.isfinite(self.loss)

    def expand(self, group_choice: np.ndarray) -> np.ndarray:
        """Map one option per group back to one option per original layer."""
        group_choice = np.asarray(group_choice, dtype=np.int64)
        if group_choice.shape != (self.n_groups,):
            raise ValueError(f"expected {self.n_groups} group choices, got shape {group_choice.shape}")
        choice = np.empty(self.n_layers, dtype=np.int64)
        for members, option in zip(self.groups, group_choice):
            choice[members] = option
        return choice

    def group_objective(self, group_choice: np.ndarray) -> float:
        return float(self.loss[np.arange(self.n_groups), group_choice].sum())

    def group_usage(self, group_choice: np.ndarray) -> np.ndarray:
        """(R,) totals of the limited resources for one option per group."""
        return self.costs[:, np.arange(self.n_groups), group_choice].sum(axis=1)


def _groups(problem: Problem) -> tuple[np.ndarray, ...]:
    if not problem.tied:
        return tuple(np.arange(problem.n_layers, dtype=np.int64)[:, None])
    tied_layers = {layer for group in problem.tied for layer in group}
    groups = [np.array(sorted(group), dtype=np.int64) for group in problem.tied]
    groups += [np.array([layer], dtype=np.int64) for layer in range(problem.n_layers) if layer not in tied_layers]
    groups.sort(key=lambda members: int(members[0]))
    return tuple(groups)


def _masked_min(values: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Minimum over options (last axis) of the allowed entries."""
    return np.where(allowed, values, np.inf).min(axis=-1)


def _non_binding(loss: np.ndarray, costs: np.ndarray, limits: np.ndarray, maxima: np.ndarray,
                 names: list[str]) -> list[tuple[str, str]]:
    """Messages for the limits that do not bind: each one no plan can exceed, and every one when
    the lowest-loss plan meets them all (of a group's equally low options, the one using the
    least of all limits together, relative to each limit)."""
    never = maxima <= limits
    notes = [
        (name, f"limit on {name!r} does not bind: no plan exceeds it (the largest total is "
        f"{maxima[r]:.10g} <= limit {limits[r]:.10g}); the limit changes nothing")
        for r, name in enumerate(names) if never[r]
    ]
    if not names or never.all():
        return notes
    lowest_loss = loss == loss.min(axis=1, keepdims=True)  # +inf never equals a finite minimum
    share = np.einsum("rgk,r->gk", costs[~never], 1.0 / np.maximum(limits[~never], np.finfo(float).tiny))
    pick = np.where(lowest_loss, share, np.inf).argmin(axis=1)
    totals = costs[:, np.arange(loss.shape[0]), pick].sum(axis=1)
    if (totals[~never] > limits[~never]).any():
        return notes
    return notes + [
        (name, f"limit on {name!r} does not bind: the lowest-loss option of every layer already totals "
         f"{totals[r]:.10g} <= limit {limits[r]:.10g}; the limit changes nothing")
        for r, name in enumerate(names) if not never[r]
    ]


def _dominated(loss: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """(G, K) mask of options some other allowed option of the same group makes unnecessary."""
    allowed = np.isfinite(loss)
    n_options = loss.shape[1]
    # no_worse[g, i, j]: option i is at least as good as option j in loss and every cost
    no_worse = (loss[:, :, None] <= loss[:, None, :]) & allowed[:, :, None] & allowed[:, None, :]
    for table in costs:
        no_worse &= table[:, :, None] <= table[:, None, :]
    # i and j are identical exactly when each is no worse than the other
    same = no_worse & no_worse.transpose(0, 2, 1)
    index = np.arange(n_options)
    earlier = index[:, None] < index[None, :]
    # i replaces j if strictly better somewhere, or identical and earlier (keeps one of equals)
    replaces = no_worse & (~same | earlier[None]) & (index[:, None] != index[None, :])[None]
    return replaces.any(axis=1)


def prepare(problem: Problem) -> PreparedProblem:
    """Merge ties, raise `InfeasibleError` for unreachable limits, note non-binding ones, prune."""
    groups = _groups(problem)
    names = list(problem.limits)
    limits = np.array([problem.limits[name] for name in names], dtype=np.float64)
    if len(groups) == problem.n_layers:  # no ties: nothing to merge
        loss = problem.loss.copy()
        costs = np.stack([problem.costs[name] for name in names]) if names else np.zeros((0,) + loss.shape)
    else:
        # members of each group in ascending order, groups in order: one segmented sum for all
        members = np.concatenate(groups)
        starts = np.cumsum([0] + [group.size for group in groups[:-1]])
        loss = np.add.reduceat(problem.loss[members], starts, axis=0)
        costs = np.add.reduceat(np.stack([problem.costs[name] for name in names])[:, members], starts, axis=1) \
            if names else np.zeros((0,) + loss.shape)
    allowed = np.isfinite(loss)
    shift = np.where(allowed, loss, np.inf).min(axis=1)
    loss = loss - shift[:, None]  # +inf stays +inf

    group_minima = _masked_min(costs, allowed[None]) if names else np.zeros((0, len(groups)))
    minima = group_minima.sum(axis=1)
    violations = {
        name: (float(limits[r]), float(minima[r])) for r, name in enumerate(names) if limits[r] < minima[r]
    }
    if violations:
        raise InfeasibleError.below_minimum(violations)
    maxima = np.where(allowed[None], costs, -np.inf).max(axis=-1).sum(axis=1) if names else np.zeros(0)
    non_binding = _non_binding(loss, costs, limits, maxima, names)

    finite = np.isfinite(limits)
    names = [name for name, keep in zip(names, finite) if keep]
    limits, costs, group_minima, minima = limits[finite], costs[finite], group_minima[finite], minima[finite]
    alone_minima = {name: (float(limits[r]), float(minima[r])) for r, name in enumerate(names)
                    if maxima[finite][r] > limits[r]}

    slack = limits - minima + FEASIBILITY_RTOL * np.abs(limits)
    too_costly = ((costs - group_minima[:, :, None]) > slack[:, None, None]).any(axis=0)
    loss = np.where(too_costly, np.inf, loss)
    if not np.isfinite(loss).any(axis=1).all():
        # some group has no option that fits every limit even with all other groups at their
        # per-resource minima: a proof that the limits cannot hold together
        raise InfeasibleError.not_together(alone_minima)
    loss = np.where(_dominated(loss, costs), np.inf, loss)

    loss.setflags(write=False)
    costs.setflags(write=False)
    return PreparedProblem(
        loss=loss,
        costs=costs,
        limits=limits,
        resources=tuple(names),
        groups=groups,
        n_layers=problem.n_layers,
        alone_minima=alone_minima,
        non_binding=tuple(non_binding),
        offset=float(shift.sum()),
    )
