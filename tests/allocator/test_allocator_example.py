"""The shipped example profile (synthetic DeiT-Tiny) loads, is labelled synthetic, and solves."""
from __future__ import annotations

import json

from allocator import Profile, solve
from allocator.examples import DEIT_TINY_SYNTHETIC, deit_tiny_synthetic
from allocator_helpers import reference_totals


def test_shipped_file_is_what_the_generator_makes():
    assert Profile.load(DEIT_TINY_SYNTHETIC) == deit_tiny_synthetic()


def test_metadata_says_synthetic():
    meta = json.loads(DEIT_TINY_SYNTHETIC.read_text())["metadata"]
    assert meta["synthetic"] is True and "SYNTHETIC" in meta["note"]


def test_layer_list_is_deit_tiny_shaped():
    p = Profile.load(DEIT_TINY_SYNTHETIC)
    assert len(p.layers) == 2 + 12 * 6
    assert p.layers[0].name == "patch_embed.proj" and p.layers[-1].name == "head"
    assert p.layers[0].fixed_bits == p.layers[-1].fixed_bits == 8
    kinds = [x.kind for x in p.layers[1:7]]
    assert kinds == ["linear", "matmul", "matmul", "linear", "linear", "linear"]
    assert p.total_params == 5_647_872  # DeiT-Tiny without biases, norms and embeddings
    assert abs(p.total_macs / 1e9 - 1.25) < 0.01  # ~1.3 GMACs


def test_readme_command_budget_3_solves_within_budget():
    p = Profile.load(DEIT_TINY_SYNTHETIC)
    plan = solve(p, 3)
    t = reference_totals(p, plan.w_bits, plan.a_bits)
    assert plan.status == "optimal" and t["avg_w_bits"] <= 3.0
    assert t["bops"] <= sum(x.macs * 9 for x in p.layers)
    assert len(set(plan.w_bits.values())) > 2  # genuinely mixed
