"""Layer discovery: names, kinds, roles, forward order, unsupported models."""
import pytest
import torch
from torch import nn

from quant import UnsupportedModelError, find_post_ln_groups, find_quantizable_layers, prepare, quant_sites

from quant_helpers import build_tiny


def test_vit_sites_names_kinds_and_roles():
    sites = find_quantizable_layers(build_tiny("vit"))
    per_block = ["attn.qkv", "attn.matmul_qk", "attn.matmul_av", "attn.proj", "mlp.fc1", "mlp.fc2"]
    expected = ["patch_embed.proj"] + [f"blocks.{i}.{s}" for i in range(2) for s in per_block] + ["head"]
    assert [s.name for s in sites] == expected
    kinds = {s.name: s.kind for s in sites}
    assert kinds["patch_embed.proj"] == "conv" and kinds["blocks.1.attn.matmul_av"] == "matmul"
    assert {s.name for s in sites if s.role != "body"} == {"patch_embed.proj", "head"}
    assert sites[0].role == "first" and sites[-1].role == "last"
    assert sites[2].params == 0 and sites[1].params == 32 * 96


def test_deit_has_both_heads_and_swin_has_reduction():
    deit = [s.name for s in find_quantizable_layers(build_tiny("deit"))]
    assert deit[-2:] == ["head", "head_dist"]
    swin = find_quantizable_layers(build_tiny("swin"))
    names = [s.name for s in swin]
    assert "layers.1.downsample.reduction" in names and names[-1] == "head.fc"
    assert "layers.0.blocks.0.attn.matmul_qk" in names
    assert [s.name for s in swin if s.role == "last"] == ["head.fc"]


def test_names_survive_prepare_and_order_is_execution_order(tiny_model):
    names = [s.name for s in find_quantizable_layers(tiny_model)]
    qmodel = prepare(tiny_model)
    assert [s.name for s in find_quantizable_layers(qmodel)] == names
    sites = quant_sites(qmodel)
    assert list(sites) == names
    calls: list[str] = []
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: calls.append(n)) for n, m in sites.items()]
    qmodel(torch.randn(2, 1, 32, 32))
    for h in hooks:
        h.remove()
    assert list(dict.fromkeys(calls)) == names  # first call of each site, in order


def test_post_ln_groups():
    groups = {g.norm: g.consumers for g in find_post_ln_groups(build_tiny("deit"))}
    assert groups["blocks.0.norm1"] == ("blocks.0.attn.qkv",)
    assert groups["blocks.1.norm2"] == ("blocks.1.mlp.fc1",)
    assert groups["norm"] == ("head", "head_dist")
    swin = {g.norm: g.consumers for g in find_post_ln_groups(build_tiny("swin"))}
    assert swin["layers.1.downsample.norm"] == ("layers.1.downsample.reduction",)
    assert swin["norm"] == ("head.fc",)


def test_swin_blocks_that_pad_windows_are_not_folded():
    from timm.models.swin_transformer import SwinTransformer

    # 28x28 input, patch 2 -> 14x14 tokens, window 4 -> timm zero-pads after norm1
    model = SwinTransformer(img_size=28, patch_size=2, in_chans=1, num_classes=10, window_size=4,
                            embed_dim=16, depths=(1,), num_heads=(1,))
    norms = {g.norm for g in find_post_ln_groups(model)}
    assert "layers.0.blocks.0.norm1" not in norms and "layers.0.blocks.0.norm2" in norms


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)


def test_unsupported_model_class_is_named():
    with pytest.raises(UnsupportedModelError, match="_Toy") as info:
        find_quantizable_layers(_Toy())
    assert info.value.class_name == "_Toy"


def test_unsupported_block_and_attention_are_named():
    from timm.models.vision_transformer import ResPostBlock, VisionTransformer

    post = VisionTransformer(img_size=32, patch_size=8, in_chans=1, embed_dim=32, depth=1, num_heads=2,
                             block_fn=ResPostBlock)
    with pytest.raises(UnsupportedModelError, match=r"blocks\.0.*ResPostBlock"):
        find_quantizable_layers(post)
    pooled = VisionTransformer(img_size=32, patch_size=8, in_chans=1, embed_dim=32, depth=1, num_heads=2,
                               global_pool="map")
    with pytest.raises(UnsupportedModelError, match="attn_pool"):
        find_quantizable_layers(pooled)
    model = build_tiny("vit")
    model.blocks[1].mlp.act = nn.PReLU()  # a parameterised layer the quantizer does not know
    with pytest.raises(UnsupportedModelError, match=r"blocks\.1\.mlp\.act.*PReLU"):
        prepare(model)
