"""`profiling.pair_damage`: each entry is the joint damage of exactly those layers quantized."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _profiling_fixtures import images, tiny_vit

from profiling import joint_damage, pair_damage
from quant import PlanSwitcher, QuantConfig, find_quantizable_layers


@pytest.fixture(scope="module")
def setup():
    model = tiny_vit()
    x = images(6)
    switcher = PlanSwitcher(model, x, config=QuantConfig.preset("v1"))
    names = [s.name for s in find_quantizable_layers(model)]
    with torch.no_grad():
        ref = model(x)
    return switcher, names, x, ref


def test_entries_are_joint_damages_of_those_layers(setup):
    switcher, names, x, ref = setup
    chosen = names[1:4]
    single, pair = pair_damage(switcher, names, x, ref, w_bits=2, a_bits=3, layers=chosen, progress=False)
    idx = [names.index(n) for n in chosen]
    others = [i for i in range(len(names)) if i not in idx]
    assert np.isnan(single[others]).all() and np.isnan(pair[others]).all()
    assert np.array_equal(np.diag(pair)[idx], single[idx]) and np.array_equal(pair, pair.T, equal_nan=True)
    i, j = idx[0], idx[2]
    plan = SimpleNamespace(w_bits={n: (2 if n in (names[i], names[j]) else None) for n in names},
                           a_bits={n: (3 if n in (names[i], names[j]) else None) for n in names})
    (expected,) = joint_damage(switcher, [plan], x, ref)
    assert pair[i, j] == pytest.approx(expected, rel=1e-6)
    assert (single[idx] > 0).all()  # 2-bit weights of a random model hurt
    # quantizing a pair differs from quantizing one of them (the measurement sees both)
    assert pair[i, j] != pytest.approx(single[i], rel=1e-6)


def test_bad_layer_names_are_refused(setup):
    switcher, names, x, ref = setup
    with pytest.raises(ValueError, match="unknown"):
        pair_damage(switcher, names, x, ref, layers=["nope"], progress=False)
    with pytest.raises(ValueError, match="distinct"):
        pair_damage(switcher, names, x, ref, layers=[names[1], names[1]], progress=False)
