"""Costs: parameter counts and MACs per sample match hand computation on known small models."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from profiling import bops, layer_costs, size_bits
from profiling.costs import LayerCost

from _profiling_fixtures import tiny_deit, tiny_swin, tiny_vit


def _by_name(costs):
    return {c.name: c for c in costs}


def test_vit_costs_by_hand():
    # img 32, patch 8 -> 16 patches + cls = 17 tokens; dim 32, 2 heads of 16, mlp 128, 10 classes.
    c = _by_name(layer_costs(tiny_vit(), (1, 32, 32)))
    assert c["patch_embed.proj"] == LayerCost("patch_embed.proj", "conv", 32 * 1 * 8 * 8, 16 * 32 * 64)
    assert c["blocks.0.attn.qkv"] == LayerCost("blocks.0.attn.qkv", "linear", 32 * 96, 17 * 32 * 96)
    assert c["blocks.0.attn.matmul_qk"] == LayerCost("blocks.0.attn.matmul_qk", "matmul", 0, 2 * 17 * 17 * 16)
    assert c["blocks.0.attn.matmul_av"].macs == 2 * 17 * 17 * 16
    assert c["blocks.1.attn.proj"].macs == 17 * 32 * 32
    assert c["blocks.1.mlp.fc1"] == LayerCost("blocks.1.mlp.fc1", "linear", 32 * 128, 17 * 32 * 128)
    assert c["blocks.1.mlp.fc2"].macs == 17 * 128 * 32
    # The head sees the class token only.
    assert c["head"] == LayerCost("head", "linear", 320, 320)
    assert len(c) == 1 + 2 * 6 + 1


def test_deit_has_two_prefix_tokens_and_two_heads():
    c = _by_name(layer_costs(tiny_deit(), (1, 32, 32)))
    assert c["blocks.0.attn.qkv"].macs == 18 * 32 * 96  # cls + dist + 16 patches
    assert c["blocks.0.attn.matmul_qk"].macs == 2 * 18 * 18 * 16
    assert c["head"].macs == c["head_dist"].macs == 320


def test_swin_windows_and_patch_merging_by_hand():
    # patch 2 -> 16x16 tokens, dim 16. Stage 0: 16 windows of 4x4 = 16 tokens, 2 heads of 8.
    # Stage 1: patch merging 4*16 -> 32 on 8x8 tokens; 4 windows of 16 tokens, 4 heads of 8.
    c = _by_name(layer_costs(tiny_swin(), (1, 32, 32)))
    assert c["patch_embed.proj"] == LayerCost("patch_embed.proj", "conv", 16 * 4, 256 * 16 * 4)
    assert c["layers.0.blocks.0.attn.qkv"].macs == 256 * 16 * 48
    assert c["layers.0.blocks.0.attn.matmul_qk"].macs == 16 * 2 * 16 * 16 * 8
    assert c["layers.0.blocks.0.attn.matmul_av"].macs == 16 * 2 * 16 * 16 * 8
    assert c["layers.1.downsample.reduction"] == LayerCost(
        "layers.1.downsample.reduction", "linear", 64 * 32, 64 * 64 * 32)
    assert c["layers.1.blocks.0.attn.matmul_qk"].macs == 4 * 4 * 16 * 16 * 8
    assert c["layers.1.blocks.0.mlp.fc1"].macs == 64 * 32 * 128
    assert c["head.fc"] == LayerCost("head.fc", "linear", 320, 320)


@settings(max_examples=8, deadline=None)
@given(grid=st.integers(1, 4), heads=st.sampled_from([1, 2, 4]), depth=st.integers(1, 2))
def test_vit_costs_follow_token_count(grid, heads, depth):
    """For any image size / head count: linear MACs = tokens x params, attention = N^2 x dim."""
    img = 8 * grid
    model = tiny_vit(img_size=img, num_heads=heads, depth=depth)
    tokens = grid * grid + 1
    costs = layer_costs(model, (1, img, img))
    for c in costs:
        if c.kind == "linear" and c.name != "head":
            assert c.macs == tokens * c.params
        elif c.kind == "matmul":
            assert c.macs == tokens * tokens * 32  # heads x head_dim = embed dim
    assert sum(c.kind == "matmul" for c in costs) == 2 * depth


def test_size_and_bops():
    lin = LayerCost("a", "linear", params=10, macs=100)
    mm = LayerCost("b", "matmul", params=0, macs=50)
    assert size_bits(lin, 4) == 40 and size_bits(mm, 4) == 0
    assert bops(lin, 4, 8) == 3200
    assert bops(mm, 4, 8) == 50 * 64  # both operands are activations


def test_bad_input_shape_is_explained():
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        layer_costs(tiny_vit(), (32, 32))
