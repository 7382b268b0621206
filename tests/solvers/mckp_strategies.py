"""Hypothesis strategies for small random multiple-choice knapsack problems.

Costs are small integers, so whether a plan meets a limit never hinges on rounding and the
brute-force reference and the MIP solvers (which accept ~1e-6 violations) agree on feasibility.
Losses are floats with forbidden options (+inf); ties always share at least one allowed option.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

RESOURCES = ("size", "bops", "latency")


@st.composite
def problems(draw, max_layers: int = 6, max_options: int = 4, min_limits: int = 0, max_limits: int = 3,
             tie_prob: float = 0.3):
    """Dict with loss, costs, limits, tied (the keyword arguments of `Problem`)."""
    n_layers = draw(st.integers(1, max_layers))
    n_options = draw(st.integers(1, max_options))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)

    loss = np.round(rng.uniform(0.0, 10.0, (n_layers, n_options)), draw(st.sampled_from([1, 6, 12])))
    forbidden = rng.random((n_layers, n_options)) < draw(st.sampled_from([0.0, 0.25]))
    loss[forbidden] = np.inf

    tied = []
    if n_layers >= 2 and rng.random() < tie_prob:
        layers = rng.permutation(n_layers)
        size = int(rng.integers(2, n_layers + 1))
        tied.append(sorted(layers[:size].tolist()))
        if n_layers - size >= 2 and rng.random() < 0.5:
            tied.append(sorted(layers[size:size + 2].tolist()))
    for group in tied:  # the group shares option `anchor`
        loss[group, int(rng.integers(n_options))] = rng.uniform(0.0, 10.0)
    for layer in np.flatnonzero(np.isinf(loss).all(axis=1)):  # every layer keeps an option
        loss[layer, int(rng.integers(n_options))] = rng.uniform(0.0, 10.0)

    n_limits = draw(st.integers(min_limits, max_limits))
    n_costs = draw(st.integers(n_limits, min(n_limits + 1, len(RESOURCES))))  # maybe one unlimited cost
    costs = {name: rng.integers(0, 11, (n_layers, n_options)).astype(np.float64) for name in RESOURCES[:n_costs]}
    limits = {}
    for name in RESOURCES[:n_limits]:
        low, high = costs[name].min(axis=1).sum(), costs[name].max(axis=1).sum()
        fraction = draw(st.sampled_from([-0.1, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0]))
        limits[name] = max(0.0, float(np.floor(low + fraction * (high - low))))
    return {"loss": loss, "costs": costs, "limits": limits, "tied": tied}
