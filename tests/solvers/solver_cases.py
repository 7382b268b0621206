"""Which backends the shared suite runs against (every one `available_solvers()` lists), and
shared problem builders."""
from __future__ import annotations

import numpy as np

from solvers import Problem, available_solvers
from solvers.backends import is_exact

BACKENDS = available_solvers()
EXACT_BACKENDS = [name for name in BACKENDS if is_exact(name)]
HEURISTIC_BACKENDS = [name for name in BACKENDS if not is_exact(name)]


def vit_like_problem(loss_scale: float = 1.0, grid: float | None = None) -> Problem:
    """A ViT-like 40 x 36 (w, a) problem with three lumpy limits: the LP gap needs a real search
    (the local-search incumbent is not optimal). ``loss_scale`` and a rounding ``grid`` let a
    test make the losses exactly representable (e.g. so that x + 1e12 is exact)."""
    rng = np.random.default_rng(7)
    bits = np.array([2, 3, 4, 5, 6, 8], dtype=float)
    w, a = (b.ravel() for b in np.meshgrid(bits, bits, indexing="ij"))
    n = 40
    params = rng.choice([0.6e6, 1.8e6, 2.4e6], n)
    macs = params * 197
    loss = loss_scale * (rng.lognormal(0, 1, (n, 1)) * 4.0 ** -w + rng.lognormal(0, 1, (n, 1)) * 4.0 ** -a)
    if grid is not None:
        loss = np.round(loss / grid) * grid
    costs = {"size": params[:, None] * w, "bops": macs[:, None] * w * a,
             "latency": macs[:, None] * (0.2 + np.maximum(w, a) / 8) * rng.uniform(0.9, 1.1, (n, 1))}
    limits = {k: float(v.min(axis=1).sum() + 0.5 * (v.max(axis=1).sum() - v.min(axis=1).sum())) for k, v in costs.items()}
    return Problem(loss=loss, costs=costs, limits=limits)
