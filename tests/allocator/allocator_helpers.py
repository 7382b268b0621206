"""Builders, Hypothesis strategies and independent reference computations for allocator tests.

The references here (totals, losses, brute-force optimum) are written from the documented
formulas with plain loops, not with the allocator's own vectorised code, so a test comparing
the two checks the implementation rather than restating it.
"""
from __future__ import annotations

import itertools
import warnings

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from allocator import LayerInfo, NonBindingLimitWarning, Profile

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
quick = settings(max_examples=30, **SETTINGS)


def tiny_profile(act: bool = True, importance: bool = True, pins: bool = True, seed: int = 0,
                 bits: tuple[int, ...] = (2, 4, 8)) -> Profile:
    """A five-layer ViT-like profile: pinned embed, linear, matmul, linear, pinned head."""
    rng = np.random.default_rng(seed)
    layers = [
        LayerInfo("embed", "conv", 300, 300, fixed_bits=8 if pins else None),
        LayerInfo("blk.qkv", "linear", 900, 9_000),
        LayerInfo("blk.matmul_qk", "matmul", 0, 2_000),
        LayerInfo("blk.fc", "linear", 1_200, 12_000),
        LayerInfo("head", "linear", 100, 100, fixed_bits=8 if pins else None),
    ]
    return Profile(layers, bits, **_tables(rng, layers, len(bits), act, importance))


def _tables(rng, layers, B, act, importance) -> dict:
    decay = 4.0 ** -np.arange(B)
    ws = np.array([rng.uniform(0.5, 2.0) * decay if layer.has_weights else np.zeros(B) for layer in layers])
    out = {"weight_sensitivity": np.round(ws, 9)}
    if act:
        out["act_sensitivity"] = np.round(np.array([rng.uniform(0.5, 2.0) * decay for _ in layers]), 9)
    if importance:
        out["importance"] = np.round(rng.uniform(0.1, 3.0, len(layers)), 6)
    return out


@st.composite
def profiles(draw, max_layers: int = 5, act=None, pins: bool = True, groups: bool = True,
             cost_tables: bool = True) -> Profile:
    """Random small valid profiles (integers for counts so totals are exact)."""
    n = draw(st.integers(1, max_layers))
    bits = tuple(sorted(draw(st.sets(st.sampled_from([2, 3, 4, 5, 6, 8]), min_size=1, max_size=3))))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kinds = [draw(st.sampled_from(["linear", "conv", "matmul"])) for _ in range(n)]
    if all(k == "matmul" for k in kinds):
        kinds[0] = "linear"
    layers = []
    group_of_weighted = "g0" if groups and draw(st.booleans()) else None
    for i, kind in enumerate(kinds):
        params = 0 if kind == "matmul" else int(rng.integers(1, 5000))
        macs = int(rng.integers(0, 100_000))
        fixed = None
        if pins and kind != "matmul" and rng.random() < 0.35:
            fixed = int(draw(st.sampled_from([bits[0], bits[-1], 8])))
        group = group_of_weighted if (kind != "matmul" and group_of_weighted and rng.random() < 0.5) else None
        if group is not None:
            fixed = None  # keep groups unpinned so their pins never conflict
        layers.append(LayerInfo(f"layer{i}.{kind}", kind, params, macs, fixed_bits=fixed, group=group))
    use_act = draw(st.booleans()) if act is None else act
    tables = _tables(rng, layers, len(bits), use_act, draw(st.booleans()))
    extra = {}
    if cost_tables and draw(st.booleans()):
        shape = (n, len(bits)) if draw(st.booleans()) else (n, len(bits) ** 2)
        extra["latency"] = np.round(rng.uniform(0.0, 2.0, shape), 6)
    metadata = {"seed": seed, "note": draw(st.text(max_size=10))}
    return Profile(layers, bits, metadata=metadata, cost_tables=extra, **tables)


# ---- independent references -----------------------------------------------------------------

def reference_totals(profile: Profile, w: dict, a: dict) -> dict:
    """Average weight bits, size (bytes) and BOPs from the documented definitions."""
    wb = 0
    p = 0
    bops = 0
    for layer in profile.layers:
        wb += layer.params * w[layer.name]
        p += layer.params
        if layer.kind == "matmul":
            bops += layer.macs * a[layer.name] * a[layer.name]
        else:
            bops += layer.macs * w[layer.name] * a[layer.name]
    return {"avg_w_bits": wb / p if p else 0.0, "size_bytes": wb / 8, "bops": bops}


def reference_loss(profile: Profile, l: int, w: int, a: int, alpha: float = 0.5) -> float:
    """mixqvit loss of layer l at (w, a), from the formula (importance optional)."""
    bits = list(profile.bits)
    if profile.importance is not None:
        L = len(profile.layers)
        norm = L * profile.importance[l] / sum(profile.importance)
        omega = (1 - alpha) + alpha * norm
    else:
        omega = 1.0
    s = 0.0
    if profile.weight_sensitivity is not None:
        s += profile.weight_sensitivity[l][bits.index(w)]
    if profile.act_sensitivity is not None:
        s += profile.act_sensitivity[l][bits.index(a)]
    return omega * s


def brute_force(profile: Profile, avg_bits: float, alpha: float = 0.5):
    """Optimum of the mixqvit objective over every plan meeting avg_bits (and BOPs of uniform
    W{avg}A{avg} when the profile has activation choices), by enumeration; (objective, w, a)."""
    bits = list(profile.bits)
    per_layer = []
    for layer in profile.layers:
        if layer.fixed_bits is not None:
            per_layer.append([(layer.fixed_bits, layer.fixed_bits)])
        elif layer.kind == "matmul" or profile.act_sensitivity is None:
            per_layer.append([(b, b) for b in bits])
        else:
            per_layer.append([(wb, ab) for wb in bits for ab in bits])
    ref_bops = sum(layer.macs * avg_bits * avg_bits for layer in profile.layers)
    best = None
    for combo in itertools.product(*per_layer):
        w = {layer.name: c[0] for layer, c in zip(profile.layers, combo)}
        a = {layer.name: c[1] for layer, c in zip(profile.layers, combo)}
        groups: dict = {}
        for layer in profile.layers:
            if layer.group is not None:
                groups.setdefault(layer.group, set()).add((w[layer.name], a[layer.name]))
        if any(len(v) > 1 for v in groups.values()):
            continue
        t = reference_totals(profile, w, a)
        if t["avg_w_bits"] * sum(x.params for x in profile.layers) > avg_bits * sum(x.params for x in profile.layers):
            continue
        if profile.act_sensitivity is not None and t["bops"] > ref_bops:
            continue
        obj = 0.0
        for l, layer in enumerate(profile.layers):
            if layer.fixed_bits is not None and layer.fixed_bits not in bits:
                continue
            obj += reference_loss(profile, l, w[layer.name], a[layer.name], alpha)
        if best is None or obj < best[0] - 1e-12:
            best = (obj, w, a)
    return best


def quiet(fn, *args, **kwargs):
    """Call ``fn`` with the non-binding-limit and objective fall-back warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonBindingLimitWarning)
        warnings.filterwarnings("ignore", message=r".*falling back to objective", category=UserWarning)
        return fn(*args, **kwargs)
