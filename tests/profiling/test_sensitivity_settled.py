"""The sensitivity sweep measures each (layer, bits) pair as `quant.quantize` would apply it:
constant quantizer inputs settled (`profiling._settled`). A pair's damage must equal the damage of
the one-layer plan applied by `quant.PlanSwitcher` (which settles from scratch), for a float
baseline and for a quantized one, in ViTs, DeiTs and Swins."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from _profiling_fixtures import BUILDERS, images

from profiling import joint_damage, measure_sensitivity
from quant import PlanSwitcher, find_quantizable_layers, quant_sites
from quant.settle import ConstantInputs

BITS = (2, 3, 4)


def _one_layer_plans(names: list[str], name: str, table: str, baseline: int | None) -> list[SimpleNamespace]:
    """The sweep's pairs of ``name`` as whole plans: that layer's weights (or inputs) at each of
    BITS, the rest of it and every other layer at ``baseline``."""
    plans = []
    for b in BITS:
        w = {n: baseline for n in names}
        a = dict(w)
        if table == "weight":
            w[name] = b
        else:
            a[name] = b
        plans.append(SimpleNamespace(w_bits=w, a_bits=a))
    return plans


def _model_and_images(family: str, seed: int, n: int = 6) -> tuple[torch.nn.Module, torch.Tensor]:
    """A tiny model and images; the Swin at 28x28 pads its 14x14 tokens to 4x4 windows, so its
    padded window tokens are constant inputs (the other tiny Swin has none)."""
    x = images(n, seed=seed + 1)
    if family == "swin":
        return BUILDERS[family](seed, img_size=28), x[..., :28, :28].contiguous()
    return BUILDERS[family](seed), x


def _sweep_and_plans(family: str, seed: int, baseline: int | None):
    model, x = _model_and_images(family, seed)
    switcher = PlanSwitcher(model, x)
    names = [s.name for s in find_quantizable_layers(model)]
    # three batches of two: the pairs settle on the first and reuse their scales on the others
    result = measure_sensitivity(switcher.qmodel, x, bits=BITS, baseline_bits=baseline, verbose=False, batch_size=2)
    baseline_plan = SimpleNamespace(w_bits={n: baseline for n in names}, a_bits={n: baseline for n in names})
    with torch.no_grad():
        reference = switcher.apply(baseline_plan)(x)
    return switcher, names, result, x, reference


def _settled_sites(switcher: PlanSwitcher, x: torch.Tensor) -> set[str]:
    """Layers with an activation quantizer whose inputs are the same for every image."""
    positions = ConstantInputs(switcher.qmodel, x.shape[1:]).positions
    return {n for n, s in quant_sites(switcher.qmodel).items() if any(m in positions for m in s.modules())}


@settings(max_examples=6, deadline=None)
@given(family=st.sampled_from(sorted(BUILDERS)), seed=st.integers(0, 40), baseline=st.sampled_from([None, 8]))
def test_each_pair_equals_its_plan_applied_and_settled(family, seed, baseline):
    switcher, names, result, x, reference = _sweep_and_plans(family, seed, baseline)
    constant = _settled_sites(switcher, x)
    assert constant, f"a {family} has image-independent quantizer inputs"
    # the layers with constant inputs, and (quantized baseline) the first one after them, whose
    # constants the settled baseline shapes
    first = next(i for i, n in enumerate(names) if n in constant)
    checked = [n for n in names if n in constant][:2] + [next(n for n in names[first:] if n not in constant)]
    for name in checked:
        i = names.index(name)
        for table, row in (("weight", result.weight[i]), ("act", result.act[i])):
            if table == "weight" and "matmul" in name:
                continue
            expected = joint_damage(switcher, _one_layer_plans(names, name, table, baseline), x, reference,
                                    cache_mb=0)
            np.testing.assert_allclose(row, expected, rtol=1e-4, atol=1e-9, err_msg=f"{family} {name} {table}")


def test_the_pairs_that_need_a_nudge_are_measured_with_it(monkeypatch):
    """On this tiny ViT (float baseline) the settle pass nudges some activation pairs: exactly
    those entries differ from a sweep without the pass; every other entry is the same."""
    from contextlib import nullcontext

    from profiling._settled import PairSettler

    switcher, names, settled, x, _ = _sweep_and_plans("vit", 0, None)
    nudged = set()
    for i, name in enumerate(names):
        for j, b in enumerate(BITS):
            switcher.apply(SimpleNamespace(w_bits={n: None for n in names},
                                           a_bits={n: (b if n == name else None) for n in names}))
            if switcher.settled.nudged:
                nudged.add((i, j))
    assert nudged, "expected pairs that the settle pass nudges on this model"
    monkeypatch.setattr(PairSettler, "pair", lambda self, site: nullcontext())
    plain = measure_sensitivity(switcher.qmodel, x, bits=BITS, verbose=False)
    assert set(zip(*np.nonzero(settled.act != plain.act))) == nudged
    assert np.array_equal(settled.weight, plain.weight)
