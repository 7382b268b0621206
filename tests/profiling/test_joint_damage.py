"""`profiling.joint_damage` re-runs each plan only from the first unit whose bits differ from
the plan before it; the values must be those of full forward passes, bit for bit."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from _profiling_fixtures import BUILDERS, images

from profiling import joint_damage
from quant import PlanSwitcher, find_quantizable_layers

BITS = [2, 3, 4, 8, None]


@pytest.fixture(scope="module")
def switched():
    out = {}
    x = images(10)
    for family, build in BUILDERS.items():
        model = build()
        with torch.no_grad():
            ref = model(x)
        out[family] = (PlanSwitcher(model, x), [s.name for s in find_quantizable_layers(model)], x, ref)
    return out


def _plans(names: list[str], data) -> list[SimpleNamespace]:
    """Plans around a common base, each changing a few layers (as a solver's k best or a local
    search's moves do), with repeats; the first layer stays quantized, so every plan does damage."""
    base = {n: data.draw(st.sampled_from(BITS[:-1])) for n in names}
    plans = []
    for _ in range(data.draw(st.integers(2, 7))):
        w = dict(base)
        for n in data.draw(st.lists(st.sampled_from(names[1:]), max_size=3)):
            w[n] = data.draw(st.sampled_from(BITS))
        a = {n: (b if b is None else data.draw(st.sampled_from([b, 8]))) for n, b in w.items()}
        plans.append(SimpleNamespace(w_bits=w, a_bits=a))
    return plans + data.draw(st.lists(st.sampled_from(plans), max_size=2))


@settings(max_examples=15, deadline=None)
@given(family=st.sampled_from(sorted(BUILDERS)), cache_mb=st.sampled_from([512.0, 1e-3]),
       batch_size=st.sampled_from([4, 10]), data=st.data())
def test_shared_prefixes_give_the_full_forward_values(switched, family, cache_mb, batch_size, data):
    switcher, names, x, ref = switched[family]
    plans = _plans(names, data)
    full = joint_damage(switcher, plans, x, ref, batch_size=batch_size, cache_mb=0)
    shared = joint_damage(switcher, plans, x, ref, batch_size=batch_size, cache_mb=cache_mb)
    assert shared == full  # exact: the same operations on the same tensors
    assert all(v > 0 for v in full)  # a random model quantized somewhere always moves its logits


def test_repeated_plans_score_alike_and_order_does_not_matter(switched):
    switcher, names, x, ref = switched["swin"]
    a = SimpleNamespace(w_bits={n: 4 for n in names}, a_bits={n: 4 for n in names})
    b = SimpleNamespace(w_bits={**a.w_bits, names[-1]: 2}, a_bits=a.a_bits)  # the suffix differs only
    c = SimpleNamespace(w_bits={**a.w_bits, names[0]: 2}, a_bits=a.a_bits)  # the prefix differs
    forward = joint_damage(switcher, [a, b, c, a], x, ref)
    backward = joint_damage(switcher, [a, c, b, a][::-1], x, ref)
    assert forward[0] == forward[3] and len(set(forward[:3])) == 3
    assert sorted(forward) == sorted(backward)
